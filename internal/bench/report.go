package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

func (res *Result) row(name string) *Row {
	for i := range res.Rows {
		if res.Rows[i].Name == name && res.Rows[i].Status == "ok" {
			return &res.Rows[i]
		}
	}
	return nil
}

func (res *Result) invoker(name string) *InvokerRow {
	for i := range res.Invokers {
		if res.Invokers[i].Name == name && res.Invokers[i].Status == "ok" {
			return &res.Invokers[i]
		}
	}
	return nil
}

// scaleAt returns the fully connected fleet of name with n devices.
func (res *Result) scaleAt(name string, n int) *ScaleRow {
	for i := range res.Scale {
		s := &res.Scale[i]
		if s.Name == name && s.Devices == n && s.Connected == n {
			return s
		}
	}
	return nil
}

// commonScale returns the fleets of a and b at the largest size both
// connected fully (for like-for-like memory and connect rates).
func (res *Result) commonScale(a, b string) (*ScaleRow, *ScaleRow) {
	var ba, bb *ScaleRow
	for i := range res.Scale {
		s := &res.Scale[i]
		if s.Name != a || s.Connected != s.Devices {
			continue
		}
		if o := res.scaleAt(b, s.Devices); o != nil && (ba == nil || s.Devices > ba.Devices) {
			ba, bb = s, o
		}
	}
	return ba, bb
}

// rowRatio is the p50 ratio of two rows measured one after the other.
func rowRatio(a, b *Row) string {
	if a == nil || b == nil || b.Latency.P50 <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f ÷ %.0f µs = %s", a.Latency.P50, b.Latency.P50, trimFloat(round(a.Latency.P50/b.Latency.P50, 3)))
}

// floor returns the invoker floor row name. In process (--inproc) there is
// none to bound with: the invoker's and the server's CPU are then the same
// process's.
func (res *Result) floor(name string) *FloorRow {
	if res.Settings.InProcess {
		return nil
	}
	for i := range res.Floors {
		if res.Floors[i].Name == name && res.Floors[i].Status == "ok" {
			return &res.Floors[i]
		}
	}
	return nil
}

// throughputBound is the most calls/s the CPUs allow when a call costs
// the invoker floor (both HTTPS ends) plus devCPU µs on the device.
func (res *Result) throughputBound(devCPU float64, devWhat string) (float64, string) {
	fl := res.floor(FloorGoService)
	if fl == nil || res.Machine.CPUs <= 0 {
		return 0, ""
	}
	per := fl.InvokerCPUPerCall + fl.ServerCPUPerCall + devCPU
	if per <= 0 {
		return 0, ""
	}
	b := round(float64(res.Machine.CPUs)*1e6/per, 0)
	d := fmt.Sprintf("%d CPUs ÷ (invoker %.0f + an HTTPS server that answers at once %.0f", res.Machine.CPUs, fl.InvokerCPUPerCall, fl.ServerCPUPerCall)
	if devCPU > 0 {
		d += fmt.Sprintf(" + %s %.0f", devWhat, devCPU)
	}
	return b, d + " µs of CPU per call), with no hub work at all"
}

func status(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}

// targetTransports are the device transports the targets cover: each has
// a raw floor (rawImpl) and a Node SDK peer.
var targetTransports = []string{"mqtt", "amqp"}

// The goals, as ratios to floors and peers measured in the same run.
const (
	goalFloorP50      = 1.05 // device SDK p50 ÷ its raw floor's, at most
	goalFloorCPU      = 1.0  // device CPU per call ÷ the raw floor's, at most
	goalFloorRSS      = 1.05 // RSS per device ÷ the raw floor's, at most
	goalNodeCPU       = 0.5  // device CPU per call ÷ the Node SDK's, at most
	goalNodeRSS       = 0.5  // RSS per device ÷ the Node SDK's, at most
	goalNodeConnects  = 5.0  // connects/s ÷ the Node SDK's, at least
	goalServiceCPU    = 0.5  // service client CPU per call ÷ the Node one's, at most
	goalFloorBoundTPS = 0.9  // calls/s ÷ the floors' throughput bound, at least
)

// ratioTarget is a target valued a ÷ b (rounded as printed), met when
// the value is at most limit or, with atLeast, at least limit.
func ratioTarget(name, goal string, a, b, limit float64, atLeast bool, detail string) Target {
	return valueTarget(name, goal, a/b, limit, atLeast, detail)
}

// valueTarget is a target whose value v, a ratio, must stay within limit
// (at least limit if atLeast).
func valueTarget(name, goal string, v, limit float64, atLeast bool, detail string) Target {
	v = round(v, 3)
	ok := v <= limit
	if atLeast {
		ok = v >= limit
	}
	return Target{Name: name, Goal: goal, Value: v, Status: status(ok), Detail: detail}
}

func naTarget(name, goal, why string) Target {
	return Target{Name: name, Goal: goal, Status: "n/a", Detail: why}
}

// deviceCPU is a row's device-process CPU per call under load, 0 when
// the row is missing or its devices ran in this process (--inproc: their
// CPU is the hub's too).
func (res *Result) deviceCPU(r *Row) float64 {
	if r == nil || r.Throughput == nil || (res.Settings.InProcess && r.Impl != ImplNodeSDK) {
		return 0
	}
	return r.Throughput.DeviceCPUPerCall
}

// targets checks the goals against the run. Every goal is a ratio
// to a floor or a peer measured in the same run; a target whose value a
// floor puts out of reach carries that floor's best value as its Bound.
func targets(res *Result) []Target {
	var out []Target
	for _, t := range targetTransports {
		out = append(out, res.floorTargets(t)...)
	}
	for _, t := range targetTransports {
		out = append(out, res.nodeDeviceTargets(t)...)
	}
	out = append(out, res.serviceTarget())
	for _, t := range targetTransports {
		out = append(out, res.endToEndTarget(t))
	}
	// The multiplexed targets (issue 21, the --multiplex mode: devices
	// connected at once through the pool, RSS per device, p50/p99 against
	// a 100-device fleet, recovery time and peak dial rate) are appended
	// here, from that mode's own rows.
	return out
}

// floorTargets compares this SDK's device client over t with the raw
// responder on the same transport (rawImpl): p50, device CPU per call
// and RSS per device.
func (res *Result) floorTargets(t string) []Target {
	raw := rawImpl(t)
	sdkName, rawName := ImplGoSDK+"/"+t, raw+"/"+t
	sdk, fl := res.row(sdkName), res.row(rawName)
	var out []Target

	name, goal := "device SDK vs raw floor: p50 ("+t+")", fmt.Sprintf("%s p50 ÷ %s p50 ≤ %s", sdkName, rawName, trimFloat(goalFloorP50))
	hoName := handoffImpl(t) + "/" + t
	ho := res.row(hoName)
	switch p := res.pair(sdkName, rawName); {
	case p != nil:
		tg := valueTarget(name, goal, p.P50Ratio, goalFloorP50, false,
			fmt.Sprintf("paired, alternating calls, %s: %.0f µs vs %.0f µs over all rounds (rows: %s)", roundsText(p.Rounds), p.LatA.P50, p.LatB.P50, rowRatio(sdk, fl)))
		if hp := res.pair(hoName, rawName); hp != nil {
			tg.Bound = hp.P50Ratio
			tg.BoundDetail = fmt.Sprintf("%s, paired with %s%s, %s: %.0f vs %.0f µs over all rounds", handoffWhat(hoName), rawName, sameWindow(hp.With, sdkName), roundsText(hp.Rounds), hp.LatA.P50, hp.LatB.P50)
			if slices.Contains(hp.With, sdkName) && len(hp.Rounds) == len(p.Rounds) {
				sdkHo := make([]PairRound, len(p.Rounds)) // A: this SDK, B: the handoff floor
				for i := range p.Rounds {
					sdkHo[i] = PairRound{P50A: p.Rounds[i].P50A, P50B: hp.Rounds[i].P50A}
				}
				v := medianRatio(sdkHo, PairRound.p50)
				tg.Detail += fmt.Sprintf("; ÷ %s in the same rounds: %s (median)", hoName, trimFloat(round(v, 3)))
			}
		}
		out = append(out, tg)
	case sdk != nil && fl != nil && sdk.Latency != nil && fl.Latency != nil && fl.Latency.P50 > 0:
		tg := ratioTarget(name, goal, sdk.Latency.P50, fl.Latency.P50, goalFloorP50, false,
			fmt.Sprintf("rows one after the other: %.0f µs vs %.0f µs", sdk.Latency.P50, fl.Latency.P50))
		if ho != nil && ho.Latency != nil {
			tg.Bound = round(ho.Latency.P50/fl.Latency.P50, 3)
			tg.BoundDetail = fmt.Sprintf("%s, rows one after the other: %.0f vs %.0f µs", handoffWhat(hoName), ho.Latency.P50, fl.Latency.P50)
		}
		out = append(out, tg)
	default:
		out = append(out, naTarget(name, goal, "needs the "+sdkName+" and "+rawName+" rows (--floor)"))
	}

	name, goal = "device SDK vs raw floor: CPU per call ("+t+")", fmt.Sprintf("%s device CPU/call ÷ %s ≤ %s", sdkName, rawName, trimFloat(goalFloorCPU))
	switch a, b, pl := res.deviceCPU(sdk), res.deviceCPU(fl), res.pairedLoad(sdkName, rawName); {
	case pl != nil:
		detail := fmt.Sprintf("paired load, %s at once: %.0f vs %.0f µs of the device process per call", fleetsWord(pl.With), pl.CPUPerCallA, pl.CPUPerCallB)
		if a > 0 && b > 0 {
			detail += fmt.Sprintf(" (rows: %.0f ÷ %.0f µs = %s)", a, b, trimFloat(round(a/b, 3)))
		}
		tg := ratioTarget(name, goal, pl.CPUPerCallA, pl.CPUPerCallB, goalFloorCPU, false, detail)
		if hl := res.pairedLoad(hoName, rawName); hl != nil {
			tg.Bound = hl.Ratio
			tg.BoundDetail = fmt.Sprintf("%s, paired load with %s%s: %.0f vs %.0f µs of device CPU per call", handoffWhat(hoName), rawName, sameWindow(hl.With, sdkName), hl.CPUPerCallA, hl.CPUPerCallB)
		}
		out = append(out, tg)
	case a > 0 && b > 0:
		tg := ratioTarget(name, goal, a, b, goalFloorCPU, false,
			fmt.Sprintf("%.0f vs %.0f µs of the device process per call, %d calls in flight", a, b, sdk.Throughput.Concurrency))
		if h := res.deviceCPU(ho); h > 0 {
			tg.Bound = round(h/b, 3)
			tg.BoundDetail = fmt.Sprintf("%s: %.0f µs of device CPU per call, ÷ %.0f", handoffWhat(hoName), h, b)
		}
		out = append(out, tg)
	case sdk == nil || fl == nil:
		out = append(out, naTarget(name, goal, "needs the "+sdkName+" and "+rawName+" rows (--floor)"))
	case res.Settings.InProcess:
		out = append(out, naTarget(name, goal, "device CPU is measured only for fleets in child processes (not --inproc)"))
	default:
		out = append(out, naTarget(name, goal, "no device CPU measured in the throughput phase (too short?)"))
	}

	name, goal = "device SDK vs raw floor: RSS per device ("+t+")", fmt.Sprintf("%s RSS/device ÷ %s ≤ %s", sdkName, rawName, trimFloat(goalFloorRSS))
	if a, b := res.commonScale(sdkName, rawName); a != nil && !a.InProcess && !b.InProcess && b.DeviceRSSPerDevice > 0 {
		out = append(out, ratioTarget(name, goal, a.DeviceRSSPerDevice, b.DeviceRSSPerDevice, goalFloorRSS, false,
			fmt.Sprintf("at %d devices: %.1f KB vs %.1f KB RSS per device (Go heap + stacks %.1f vs %.1f KB)%s", a.Devices,
				a.DeviceRSSPerDevice/1024, b.DeviceRSSPerDevice/1024, a.DeviceHeapPerDevice/1024, b.DeviceHeapPerDevice/1024, scaleRounds(a, b))))
	} else {
		out = append(out, naTarget(name, goal, "needs "+sdkName+" and "+rawName+" scale series of a common size in child processes (--scale, not --inproc)"))
	}
	return out
}

// fleetsWord names the fleets of a paired load: "both fleets", or "the
// three fleets" with one more (With).
func fleetsWord(with []string) string {
	switch len(with) {
	case 0:
		return "both fleets"
	case 1:
		return "the three fleets"
	}
	return fmt.Sprintf("the %d fleets", len(with)+2)
}

// scaleRounds describes the rounds behind two scale rows' medians, ""
// when they were measured once.
func scaleRounds(a, b *ScaleRow) string {
	if len(a.RSSRounds) < 2 || len(b.RSSRounds) < 2 {
		return ""
	}
	kb := func(v []float64) string {
		s := make([]string, len(v))
		for i, x := range v {
			s[i] = fmt.Sprintf("%.1f", x/1024)
		}
		return strings.Join(s, ", ")
	}
	return fmt.Sprintf("; medians of %d rounds, alternating: RSS %s and %s KB", len(a.RSSRounds), kb(a.RSSRounds), kb(b.RSSRounds))
}

// sameWindow says that a floor's pair or paired load shared its window
// with the row named name, "" if it did not.
func sameWindow(with []string, name string) string {
	if slices.Contains(with, name) {
		return " in the same window as " + name
	}
	return ""
}

// roundsText says how many rounds a pair's ratio is the median of, and
// lists each round's p50 ratio.
func roundsText(rounds []PairRound) string {
	rs := make([]string, len(rounds))
	for i := range rounds {
		rs[i] = "n/a"
		if v := medianRatio(rounds[i:i+1], PairRound.p50); v > 0 {
			rs[i] = trimFloat(round(v, 3))
		}
	}
	return fmt.Sprintf("median of %d rounds with device processes of their own (%s)", len(rounds), strings.Join(rs, ", "))
}

// handoffWhat names the handoff floor row name for a bound's detail.
func handoffWhat(name string) string {
	return "the " + name + " responder (the raw one, answering off the library's delivery goroutine as a client that never goes deaf must)"
}

// nodeDeviceTargets compares this SDK's device client over t with the
// official Node device SDK: device CPU per call, RSS per device and
// connects/s. The CPU and memory targets carry, as their Bound, the same
// ratio for a floor, when the run measured it: for CPU, the handoff
// responder (what a client that never goes deaf pays at least, as for the
// CPU target against the raw floor), else the raw one; for memory, the raw
// responder (the handoff one is not measured at scale).
func (res *Result) nodeDeviceTargets(t string) []Target {
	sdkName, nodeName := ImplGoSDK+"/"+t, ImplNodeSDK+"/"+t
	rawName := rawImpl(t) + "/" + t
	sdk, node, fl := res.row(sdkName), res.row(nodeName), res.row(rawName)
	ho := res.row(handoffImpl(t) + "/" + t)
	var out []Target

	name, goal := "device SDK vs Node: CPU per call ("+t+")", fmt.Sprintf("%s device CPU/call ÷ %s ≤ %s", sdkName, nodeName, trimFloat(goalNodeCPU))
	switch a, b := res.deviceCPU(sdk), res.deviceCPU(node); {
	case a > 0 && b > 0:
		tg := ratioTarget(name, goal, a, b, goalNodeCPU, false,
			fmt.Sprintf("%.0f vs %.0f µs of the device process per call, %d calls in flight", a, b, sdk.Throughput.Concurrency))
		f, h := res.deviceCPU(fl), res.deviceCPU(ho)
		switch {
		case h > 0:
			tg.Bound = round(h/b, 3)
			tg.BoundDetail = fmt.Sprintf("%s spends %.0f µs of device CPU per call, ÷ %.0f", handoffWhat(ho.Name), h, b)
			if f > 0 {
				tg.BoundDetail += fmt.Sprintf(" (the %s responder alone: %.0f µs, %s)", fl.Impl, f, trimFloat(round(f/b, 3)))
			}
		case f > 0:
			tg.Bound = round(f/b, 3)
			tg.BoundDetail = fmt.Sprintf("the %s responder alone spends %.0f µs of device CPU per call, ÷ %.0f", fl.Impl, f, b)
		}
		out = append(out, tg)
	case sdk == nil || node == nil:
		out = append(out, naTarget(name, goal, "needs the "+sdkName+" and "+nodeName+" rows (--node)"))
	case res.Settings.InProcess:
		out = append(out, naTarget(name, goal, "device CPU is measured only for fleets in child processes (not --inproc)"))
	default:
		out = append(out, naTarget(name, goal, "no device CPU measured in the throughput phase (too short?)"))
	}

	name, goal = "device SDK vs Node: RSS per device ("+t+")", fmt.Sprintf("%s RSS/device ÷ %s ≤ %s", sdkName, nodeName, trimFloat(goalNodeRSS))
	if a, b := res.commonScale(sdkName, nodeName); a != nil && !a.InProcess && b.DeviceRSSPerDevice > 0 {
		tg := ratioTarget(name, goal, a.DeviceRSSPerDevice, b.DeviceRSSPerDevice, goalNodeRSS, false,
			fmt.Sprintf("at %d devices: %.1f KB vs %.1f KB RSS per device", a.Devices, a.DeviceRSSPerDevice/1024, b.DeviceRSSPerDevice/1024))
		if f := res.scaleAt(rawName, a.Devices); f != nil && !f.InProcess {
			tg.Bound = round(f.DeviceRSSPerDevice/b.DeviceRSSPerDevice, 3)
			tg.BoundDetail = fmt.Sprintf("the %s responder alone holds %.1f KB RSS per device at %d devices", f.Impl, f.DeviceRSSPerDevice/1024, a.Devices)
		}
		out = append(out, tg)
	} else {
		out = append(out, naTarget(name, goal, "needs "+sdkName+" and "+nodeName+" scale series of a common size in child processes (--node, --scale, --node-scale, not --inproc)"))
	}

	name, goal = "device SDK vs Node: connects/s ("+t+")", fmt.Sprintf("%s connects/s ÷ %s ≥ %s", sdkName, nodeName, trimFloat(goalNodeConnects))
	if a, b := res.commonScale(sdkName, nodeName); a != nil && a.ConnectPerSec > 0 && b.ConnectPerSec > 0 {
		d := fmt.Sprintf("%d devices, %d connecting at a time: %.0f vs %.0f connects/s (%.2f s vs %.2f s)",
			a.Devices, res.Settings.ConnectConcurrency, a.ConnectPerSec, b.ConnectPerSec, a.ConnectSeconds, b.ConnectSeconds)
		if a.InProcess {
			d += "; Go devices in the hub's process"
		}
		// The raw responder's rate is context, not a bound: a connect is
		// wall time, mostly the hub's TLS and authentication, and the
		// responder does not connect faster than the SDK by construction.
		if f := res.scaleAt(rawName, a.Devices); f != nil && f.ConnectPerSec > 0 {
			d += fmt.Sprintf("; the %s responder: %.0f connects/s", f.Impl, f.ConnectPerSec)
		}
		out = append(out, ratioTarget(name, goal, a.ConnectPerSec, b.ConnectPerSec, goalNodeConnects, true, d))
	} else {
		out = append(out, naTarget(name, goal, "needs "+sdkName+" and "+nodeName+" scale series of a common size (--node, --scale, --node-scale)"))
	}
	return out
}

// serviceTarget compares the CPU per call of this SDK's service client
// with the official Node one's, each in an invoker process of its own on
// the same go-sdk/mqtt fleet: from the paired invoker loads (both at
// once, InvokerPair) when the run has them, else from the invoker rows
// measured one after the other. Its Bound is a bare azcore pipeline's ÷
// Node's: from the third invoker of the paired loads when they had one,
// else from the invoker floor (or a bare net/http client's there).
func (res *Result) serviceTarget() Target {
	name, goal := "service client vs Node: CPU per call", fmt.Sprintf("go-service invoker CPU/call ÷ node-service ≤ %s", trimFloat(goalServiceCPU))
	g, n := res.invoker("go-service"), res.invoker("node-service")
	cpu := func(ir *InvokerRow) float64 {
		if ir == nil || ir.Throughput == nil {
			return 0
		}
		return ir.Throughput.InvokerCPUPerCall
	}
	a, b := cpu(g), cpu(n)
	rowsText := ""
	if a > 0 && b > 0 {
		rowsText = fmt.Sprintf("%.0f vs %.0f µs of the invoker's own process per call, %d calls in flight", a, b, g.Throughput.Concurrency)
	}
	ps := res.invokerPairs("go-service", "node-service")
	if len(ps) == 0 && rowsText != "" {
		for _, p := range res.InvokerPairs {
			if p.Status != "ok" { // say why the rows are used
				rowsText += fmt.Sprintf(" (the paired invokers %s: %s)", p.Status, p.Reason)
				break
			}
		}
	}
	if len(ps) > 0 {
		ratios := make([]string, len(ps))
		vs := make([]float64, len(ps))
		var cpuA, cpuB float64
		var callsA, callsB int
		for i, p := range ps {
			vs[i], ratios[i] = p.Ratio, trimFloat(p.Ratio)
			cpuA += p.CPUPerCallA * float64(p.CallsA)
			cpuB += p.CPUPerCallB * float64(p.CallsB)
			callsA += p.CallsA
			callsB += p.CallsB
		}
		pa, pb := cpuA/float64(callsA), cpuB/float64(callsB)
		both := "both invokers"
		if !slices.ContainsFunc(ps, func(p InvokerPair) bool { return p.Floor == "" }) {
			both = "both invokers and the " + ps[0].Floor + " floor"
		}
		detail := fmt.Sprintf("paired load, %s at once on the %s fleet, %d calls in flight each, median of %d rounds (%s): %.0f vs %.0f µs of the invoker's own process per call over all rounds",
			both, ps[0].Device, ps[0].Concurrency, len(ps), strings.Join(ratios, ", "), pa, pb)
		if rowsText != "" {
			detail += fmt.Sprintf(" (one after the other: %s = %s)", rowsText, trimFloat(round(a/b, 3)))
		}
		tg := valueTarget(name, goal, median(vs), goalServiceCPU, false, detail)
		if pairedServiceBound(&tg, ps) {
			return tg
		}
		res.serviceBound(&tg, pb)
		if tg.BoundDetail != "" {
			tg.BoundDetail += "; Node's CPU per call from the paired invokers, the floor's measured alone"
		}
		return tg
	}
	switch {
	case a > 0 && b > 0:
		tg := ratioTarget(name, goal, a, b, goalServiceCPU, false, rowsText)
		res.serviceBound(&tg, b)
		return tg
	case g == nil || n == nil:
		return naTarget(name, goal, "needs the go-service and node-service invoker rows (--node, with 127.0.0.1:443 free)")
	case res.Settings.InProcess:
		return naTarget(name, goal, "the go-service invoker ran in the hub's process (--inproc), so its CPU per call is not its own")
	default:
		return naTarget(name, goal, "no invoker CPU measured (an invoker in the hub's process, or a throughput phase too short)")
	}
}

// pairedServiceBound sets the bound of the service client target from the
// floor invoker of the paired loads ps, when every round had one: a bare
// azcore pipeline invoking the same fleet in the same window. It reports
// whether it did.
func pairedServiceBound(tg *Target, ps []InvokerPair) bool {
	vs := make([]float64, len(ps))
	ratios := make([]string, len(ps))
	var cpuF, cpuB float64
	var callsF, callsB int
	for i, p := range ps {
		if p.Floor == "" || p.FloorRatio <= 0 || p.CallsFloor <= 0 || p.CallsB <= 0 {
			return false
		}
		vs[i], ratios[i] = p.FloorRatio, trimFloat(p.FloorRatio)
		cpuF += p.CPUPerCallFloor * float64(p.CallsFloor)
		cpuB += p.CPUPerCallB * float64(p.CallsB)
		callsF += p.CallsFloor
		callsB += p.CallsB
	}
	tg.Bound = round(median(vs), 3)
	tg.BoundDetail = fmt.Sprintf("a bare %s pipeline, which this SDK's service client is built on, posting the same request as a third invoker process on the same fleet in the same window, median of %d rounds (%s): %.0f µs of its process's CPU per call ÷ %s's %.0f, over all rounds",
		ps[0].Floor, len(ps), strings.Join(ratios, ", "), cpuF/float64(callsF), ps[0].B, cpuB/float64(callsB))
	return true
}

// serviceBound sets the bound of the service client target, whose Node
// invoker spent node µs per call: the floor of the library this SDK's
// service client is built on, azcore (a decision of the project's), when
// the run measured it; else a bare net/http client's, below any of them.
func (res *Result) serviceBound(tg *Target, node float64) {
	nh, az, gs := res.floor(FloorNetHTTP), res.floor(FloorAzcore), res.floor(FloorGoService)
	switch {
	case az != nil && az.InvokerCPUPerCall > 0:
		tg.Bound = round(az.InvokerCPUPerCall/node, 3)
		tg.BoundDetail = fmt.Sprintf("a bare azcore pipeline, which this SDK's service client is built on, posting the same request spends %.0f µs of its process's CPU per call against an HTTPS server that answers at once, ÷ %.0f", az.InvokerCPUPerCall, node)
		if nh != nil {
			tg.BoundDetail += fmt.Sprintf(" (a bare net/http client there: %.0f µs", nh.InvokerCPUPerCall)
			if gs != nil {
				tg.BoundDetail += fmt.Sprintf("; this SDK's service client: %.0f µs", gs.InvokerCPUPerCall)
			}
			tg.BoundDetail += ")"
		} else if gs != nil {
			tg.BoundDetail += fmt.Sprintf(" (this SDK's service client there: %.0f µs)", gs.InvokerCPUPerCall)
		}
	case nh != nil && nh.InvokerCPUPerCall > 0:
		tg.Bound = round(nh.InvokerCPUPerCall/node, 3)
		tg.BoundDetail = fmt.Sprintf("a bare net/http client posting the same request spends %.0f µs of its process's CPU per call against an HTTPS server that answers at once, ÷ %.0f", nh.InvokerCPUPerCall, node)
		if gs != nil {
			tg.BoundDetail += fmt.Sprintf(" (this SDK's service client there: %.0f µs)", gs.InvokerCPUPerCall)
		}
	}
}

// endToEndTarget compares this SDK's calls/s over t (this SDK's service
// client, the hub, this SDK's device client) with the floors' through the
// same hub in the same run: the raw responder answering a bare net/http
// invoker (Row.FloorEndToEnd). The hub's work is in both; what the CPUs
// would allow with no hub at all (throughputBound) is in the detail.
func (res *Result) endToEndTarget(t string) Target {
	sdkName, rawName := ImplGoSDK+"/"+t, rawImpl(t)+"/"+t
	name, goal := "end-to-end calls/s vs floor bound ("+t+")", fmt.Sprintf("%s calls/s ÷ floor bound ≥ %s", sdkName, trimFloat(goalFloorBoundTPS))
	sdk, fl := res.row(sdkName), res.row(rawName)
	switch {
	case sdk == nil || sdk.Throughput == nil:
		return naTarget(name, goal, "needs the "+sdkName+" row")
	case res.Settings.InProcess:
		return naTarget(name, goal, "the floor bound needs the devices in child processes (not --inproc)")
	case fl == nil:
		return naTarget(name, goal, "needs the "+rawName+" row (--floor), whose devices answer the floor bound's calls")
	}
	tp, ft := sdk.Throughput, fl.FloorEndToEnd
	hasFT := ft != nil && ft.CallsPerSec > 0
	if ep := res.e2ePair(sdkName, rawName); ep != nil {
		d := fmt.Sprintf("in one window, the two taking turns in %d slices of %s s each: %.0f of %.0f calls/s, the floors through the same hub (the %s device answering a bare %s pipeline's calls); %d devices each, %d in flight",
			ep.Slices, trimFloat(ep.SliceSeconds), ep.CallsPerSecA, ep.CallsPerSecB, fl.Impl, FloorAzcore, ep.Devices, ep.Concurrency)
		if hasFT {
			d += fmt.Sprintf(" (rows one after the other: %.0f of %.0f calls/s)", tp.CallsPerSec, ft.CallsPerSec)
		}
		return valueTarget(name, goal, ep.Ratio, goalFloorBoundTPS, true, d)
	}
	if !hasFT {
		return naTarget(name, goal, "needs the end-to-end floor phase of the "+rawName+" row (not --no-floors)")
	}
	d := fmt.Sprintf("%.0f of %.0f calls/s, the floors through the same hub (the %s device answering a bare %s pipeline's calls; CPU per call: hub and invoker %.0f, device %.0f µs, vs %.0f and %.0f here); %d devices, %d in flight, %d errors",
		tp.CallsPerSec, ft.CallsPerSec, fl.Impl, FloorAzcore, ft.HubCPUPerCall, ft.DeviceCPUPerCall, tp.HubCPUPerCall, tp.DeviceCPUPerCall, tp.Devices, tp.Concurrency, tp.Errors)
	if b, bd := res.throughputBound(fl.Throughput.DeviceCPUPerCall, "the "+fl.Impl+" device"); b > 0 {
		d += fmt.Sprintf("; with no hub: at most %.0f calls/s = %s", b, bd)
	}
	return ratioTarget(name, goal, tp.CallsPerSec, ft.CallsPerSec, goalFloorBoundTPS, true, d)
}

// comparisons lists the ratios that explain the targets: what each side
// costs on its own.
func comparisons(res *Result) []Comparison {
	var out []Comparison
	add := func(name string, a, b float64, detail string) {
		if a > 0 && b > 0 {
			out = append(out, Comparison{Name: name, Value: round(a/b, 3), Detail: detail})
		}
	}
	for _, base := range []string{ImplPahoRaw, ImplAMQPRaw, ImplPahoHandoff, ImplAMQPHandoff, ImplNodeSDK} {
		for _, t := range []string{"mqtt", "mqtt-ws", "amqp", "amqp-ws"} {
			ours, other := res.row("go-sdk/"+t), res.row(base+"/"+t)
			if ours == nil || other == nil {
				continue
			}
			add("device CPU per call: go-sdk/"+t+" ÷ "+base+"/"+t, ours.Throughput.DeviceCPUPerCall, other.Throughput.DeviceCPUPerCall,
				fmt.Sprintf("%.0f vs %.0f µs of the device process per call, under load", ours.Throughput.DeviceCPUPerCall, other.Throughput.DeviceCPUPerCall))
			add("p99 one call at a time: go-sdk/"+t+" ÷ "+base+"/"+t, ours.Latency.P99, other.Latency.P99,
				fmt.Sprintf("%.0f vs %.0f µs", ours.Latency.P99, other.Latency.P99))
			if a, b := res.commonScale("go-sdk/"+t, base+"/"+t); a != nil && !a.InProcess {
				add(fmt.Sprintf("RSS per device at %d: go-sdk/%s ÷ %s/%s", a.Devices, t, base, t), a.DeviceRSSPerDevice, b.DeviceRSSPerDevice,
					fmt.Sprintf("%.1f vs %.1f KB", a.DeviceRSSPerDevice/1024, b.DeviceRSSPerDevice/1024))
			}
		}
	}
	g, n := res.invoker("go-service"), res.invoker("node-service")
	if g != nil && n != nil {
		add("invoker p50: go-service ÷ node-service", g.Latency.P50, n.Latency.P50, fmt.Sprintf("%.0f vs %.0f µs", g.Latency.P50, n.Latency.P50))
		add("invoker calls/s: go-service ÷ node-service", g.Throughput.CallsPerSec, n.Throughput.CallsPerSec,
			fmt.Sprintf("%.0f vs %.0f calls/s", g.Throughput.CallsPerSec, n.Throughput.CallsPerSec))
		add("invoker CPU per call: go-service ÷ node-service", g.Throughput.InvokerCPUPerCall, n.Throughput.InvokerCPUPerCall,
			fmt.Sprintf("%.0f vs %.0f µs of the invoker's own process per call, under load", g.Throughput.InvokerCPUPerCall, n.Throughput.InvokerCPUPerCall))
	}
	return out
}

// WriteTable writes the readable report.
func (res *Result) WriteTable(w io.Writer) {
	m := res.Machine
	fmt.Fprintf(w, "iothub bench: %d CPUs (%s), %.1f GB, Linux %s, %s", m.CPUs, m.CPUModel, float64(m.MemoryBytes)/(1<<30), m.Kernel, m.GoVersion)
	if m.NodeVersion != "" {
		fmt.Fprintf(w, ", node %s", m.NodeVersion)
	}
	fmt.Fprintf(w, "; load %.2f before, %.2f after; %.0f s\n", m.LoadBefore, m.LoadAfter, res.Seconds)
	s := res.Settings
	where := "devices in child processes"
	if s.InProcess {
		where = "Go devices in this process"
	}
	if len(res.Rows) == 0 && len(res.Floors) == 0 {
		// Twin rows only: no invoker, no method payload.
		fmt.Fprintf(w, "TLS everywhere; hub in this process, %s\n\n", where)
	} else {
		fmt.Fprintf(w, "TLS everywhere; hub and invoker in this process, %s; payload %d B; warm-up %.1f s\n\n", where, s.PayloadBytes, s.WarmupSeconds)
	}

	res.writeRows(w)
	res.writeTwins(w)
	res.writeRest(w)
}

// writeRows writes the method round trips.
func (res *Result) writeRows(w io.Writer) {
	if len(res.Rows) == 0 {
		return
	}
	s := res.Settings
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "Round trips: latency one call at a time (%.0f s), throughput with %d devices and %d calls in flight (%.0f s)\n", s.LatencySeconds, s.Devices, s.Concurrency, s.DurationSeconds)
	fmt.Fprintln(tw, "row\tp50 µs\tp90 µs\tp99 µs\tcalls\t|\tcalls/s\tp50 µs\tp99 µs\terrors\thub+inv CPU µs/call\tdevice CPU µs/call\ttotal CPU µs/call\t")
	for _, r := range res.Rows {
		if r.Status != "ok" {
			fmt.Fprintf(tw, "%s\t%s\t\t\t\t\t\t\t\t\t\t\t\t\n", r.Name, r.Status)
			continue
		}
		l, t := r.Latency, r.Throughput
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t%d\t|\t%.0f\t%.0f\t%.0f\t%d\t%.0f\t%s\t%.0f\t\n", r.Name, l.P50, l.P90, l.P99, l.Calls,
			t.CallsPerSec, t.Latency.P50, t.Latency.P99, t.Errors, t.HubCPUPerCall, dash(t.DeviceCPUPerCall, s.InProcess && r.Impl != ImplNodeSDK), t.TotalCPUPerCall)
	}
	tw.Flush()
	for _, r := range res.Rows {
		if r.Status != "ok" {
			fmt.Fprintf(w, "  %s %s: %s\n", r.Name, r.Status, r.Reason)
		}
	}
	for _, r := range res.Rows {
		if t := r.FloorEndToEnd; r.Status == "ok" && t != nil {
			fmt.Fprintf(w, "  end-to-end floor: %s answering a bare %s pipeline's calls through the hub: %.0f calls/s, p50 %.0f µs, p99 %.0f µs; hub+inv CPU %.0f, device CPU %.0f µs/call\n",
				r.Name, FloorAzcore, t.CallsPerSec, t.Latency.P50, t.Latency.P99, t.HubCPUPerCall, t.DeviceCPUPerCall)
		}
	}
}

// writeTwins writes the reported-property update rows and their ratios.
func (res *Result) writeTwins(w io.Writer) {
	if len(res.Twins) == 0 {
		return
	}
	s := res.Settings
	fmt.Fprintf(w, "\nReported-property updates: one device, one update at a time, each awaiting the hub's answer (%d updates after %d warm-up)\n", s.TwinUpdates, s.TwinWarmup)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "row\tupdates\tp50 µs\tp90 µs\tp99 µs\tupdates/s\terrors\thub CPU µs/update\tdevice CPU µs/update\ttotal CPU µs/update\t")
	for _, r := range res.Twins {
		if r.Status != "ok" {
			fmt.Fprintf(tw, "%s\t%s\t\t\t\t\t\t\t\t\t\n", r.Name, r.Status)
			continue
		}
		l := r.Latency
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.0f\t%.0f\t%d\t%.0f\t%s\t%.0f\t\n", r.Name, l.Calls, l.P50, l.P90, l.P99, r.UpdatesPerSec, l.Errors,
			r.HubCPUPerUpdate, dash(r.DeviceCPUPerUpdate, r.InProcess), r.TotalCPUPerUpdate)
	}
	tw.Flush()
	for _, r := range res.Twins {
		if r.Status != "ok" || r.Reason != "" {
			fmt.Fprintf(w, "  %s %s: %s\n", r.Name, r.Status, r.Reason)
		}
	}
	for _, q := range res.TwinRatios {
		fmt.Fprintf(w, "  %s ÷ %s: p50 %s, p99 %s", q.A, q.B, ratioText(q.P50Ratio), ratioText(q.P99Ratio))
		if q.DeviceCPURatio > 0 || q.TotalCPURatio > 0 {
			fmt.Fprintf(w, ", device CPU per update %s, total CPU per update %s", ratioText(q.DeviceCPURatio), ratioText(q.TotalCPURatio))
		}
		fmt.Fprintln(w)
	}
	writePairs(w, "Paired reported-property updates: one device each, updates alternating A B B A (µs)", "updates each", res.TwinPairs)
}

// writePairs writes paired latency comparisons under title; each is
// the count column's name ("calls each").
func writePairs(w io.Writer, title, each string, pairs []Pair) {
	if len(pairs) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%s\n", title)
	if n := len(pairs[0].Rounds); n > 1 {
		fmt.Fprintf(w, "(%d rounds, each with device processes of its own: the p50s and p90s are of all their calls, the ratios the medians of the rounds')\n", n)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "A\tB\tA p50\tB p50\tA p90\tB p90\tA p99\tB p99\t"+each+"\tp50 A÷B\tp90 A÷B\t"+withHeader(slices.IndexFunc(pairs, func(p Pair) bool { return len(p.With) > 0 }) >= 0))
	for _, p := range pairs {
		if p.Status != "ok" {
			fmt.Fprintf(tw, "%s\t%s\t%s\t\t\t\t\t\t\t\t\t%s\n", p.A, p.B, p.Status, withCell(p.With))
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%d\t%s\t%s\t%s\n", p.A, p.B, p.LatA.P50, p.LatB.P50, p.LatA.P90, p.LatB.P90,
			p.LatA.P99, p.LatB.P99, min(p.LatA.Calls, p.LatB.Calls), trimFloat(p.P50Ratio), trimFloat(p.P90Ratio), withCell(p.With))
	}
	tw.Flush()
	for _, p := range pairs {
		if p.Status != "ok" {
			fmt.Fprintf(w, "  %s vs %s %s: %s\n", p.A, p.B, p.Status, p.Reason)
		}
	}
}

// withHeader is the heading of the column that names the implementations
// measured in the same window as a pair (With), if any pair has some.
func withHeader(some bool) string {
	if !some {
		return ""
	}
	return "in the same window\t"
}

// withCell is a With column's cell.
func withCell(with []string) string {
	if len(with) == 0 {
		return ""
	}
	return strings.Join(with, ", ") + "\t"
}

// writePairedLoads writes the device CPU comparisons under one load.
func writePairedLoads(w io.Writer, loads []PairedLoad) {
	if len(loads) == 0 {
		return
	}
	fmt.Fprintf(w, "\nPaired load: a fleet of each, calls spread evenly over all of them at once (device CPU µs per call)\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "A\tB\tdevices each\tin flight\tA calls\tB calls\tA CPU\tB CPU\tA÷B\t"+withHeader(slices.IndexFunc(loads, func(p PairedLoad) bool { return len(p.With) > 0 }) >= 0))
	for _, p := range loads {
		if p.Status != "ok" {
			fmt.Fprintf(tw, "%s\t%s\t%s\t\t\t\t\t\t\t%s\n", p.A, p.B, p.Status, withCell(p.With))
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%.1f\t%.1f\t%s\t%s\n", p.A, p.B, p.Devices, p.Concurrency, p.CallsA, p.CallsB,
			p.CPUPerCallA, p.CPUPerCallB, trimFloat(p.Ratio), withCell(p.With))
	}
	tw.Flush()
	for _, p := range loads {
		if p.Status != "ok" {
			fmt.Fprintf(w, "  %s vs %s %s: %s\n", p.A, p.B, p.Status, p.Reason)
		}
	}
}

// writeInvokerPairs writes the service clients' CPU compared under one
// load.
func writeInvokerPairs(w io.Writer, pairs []InvokerPair) {
	if len(pairs) == 0 {
		return
	}
	fmt.Fprintf(w, "\nPaired invokers: the service clients (and the floor F, a bare azcore pipeline) at once on the same fleet, sharing the calls in flight (invoker CPU µs per call)\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "A\tB\tF\tfleet\tin flight each\tA calls\tB calls\tF calls\tA CPU\tB CPU\tF CPU\tA÷B\tF÷B\t")
	for _, p := range pairs {
		if p.Status != "ok" {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\t\t\t\t\t\t\t\t\n", p.A, p.B, dashIfEmpty(p.Floor), p.Device, p.Status)
			continue
		}
		fc, fcpu, fr := "-", "-", "-"
		if p.Floor != "" {
			fc, fcpu, fr = fmt.Sprint(p.CallsFloor), fmt.Sprintf("%.1f", p.CPUPerCallFloor), trimFloat(p.FloorRatio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%.1f\t%.1f\t%s\t%s\t%s\t\n", p.A, p.B, dashIfEmpty(p.Floor), p.Device, p.Concurrency, p.CallsA, p.CallsB, fc,
			p.CPUPerCallA, p.CPUPerCallB, fcpu, trimFloat(p.Ratio), fr)
	}
	tw.Flush()
	for _, p := range pairs {
		if p.Status != "ok" {
			fmt.Fprintf(w, "  %s vs %s %s: %s\n", p.A, p.B, p.Status, p.Reason)
		}
	}
}

// writeE2EPairs writes the end-to-end calls/s compared in one window.
func writeE2EPairs(w io.Writer, pairs []E2EPair) {
	if len(pairs) == 0 {
		return
	}
	fmt.Fprintf(w, "\nEnd-to-end pairs: this SDK at both ends, and the floors (the raw device, a bare %s invoker), taking turns in one window (calls/s)\n", FloorAzcore)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "A\tB\tdevices each\tin flight\tslices each\tA calls\tB calls\tA calls/s\tB calls/s\tA÷B\t")
	for _, p := range pairs {
		if p.Status != "ok" {
			fmt.Fprintf(tw, "%s\t%s\t%s\t\t\t\t\t\t\t\t\n", p.A, p.B, p.Status)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d × %ss\t%d\t%d\t%.0f\t%.0f\t%s\t\n", p.A, p.B, p.Devices, p.Concurrency, p.Slices, trimFloat(p.SliceSeconds),
			p.CallsA, p.CallsB, p.CallsPerSecA, p.CallsPerSecB, trimFloat(p.Ratio))
	}
	tw.Flush()
	for _, p := range pairs {
		if p.Status != "ok" {
			fmt.Fprintf(w, "  %s vs %s %s: %s\n", p.A, p.B, p.Status, p.Reason)
		}
	}
}

func ratioText(v float64) string {
	if v <= 0 {
		return "n/a"
	}
	return trimFloat(v)
}

// writeRest writes the invokers, floors, pairs, scale series, targets and
// comparisons.
func (res *Result) writeRest(w io.Writer) {
	s := res.Settings
	var tw *tabwriter.Writer

	if len(res.Invokers) > 0 {
		fmt.Fprintf(w, "\nService clients invoking the same Go device fleet (go-sdk/mqtt)\n")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "invoker\tp50 µs\tp90 µs\tp99 µs\t|\tcalls/s\tp50 µs\tp99 µs\terrors\tinvoker CPU µs/call\thub CPU µs/call\t")
		for _, ir := range res.Invokers {
			if ir.Status != "ok" {
				fmt.Fprintf(tw, "%s\t%s\t\t\t\t\t\t\t\t\t\n", ir.Name, ir.Status)
				continue
			}
			l, t := ir.Latency, ir.Throughput
			cpu := "(in hub)"
			if t.InvokerCPUPerCall > 0 {
				cpu = fmt.Sprintf("%.0f", t.InvokerCPUPerCall)
			}
			fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t|\t%.0f\t%.0f\t%.0f\t%d\t%s\t%.0f\t\n", ir.Name, l.P50, l.P90, l.P99, t.CallsPerSec, t.Latency.P50, t.Latency.P99, t.Errors, cpu, t.HubCPUPerCall)
		}
		tw.Flush()
		for _, ir := range res.Invokers {
			if ir.Status != "ok" {
				fmt.Fprintf(w, "  %s %s: %s\n", ir.Name, ir.Status, ir.Reason)
			}
		}
	}

	writeInvokerPairs(w, res.InvokerPairs)

	if len(res.Floors) > 0 {
		fmt.Fprintf(w, "\nInvoker floor: the same invoker against an HTTPS server that answers at once (no hub, no device)\n")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "invoker\tp50 µs\tp90 µs\tp99 µs\t|\tcalls/s\tp50 µs\tp99 µs\tinvoker CPU µs/call\tserver CPU µs/call\t")
		for _, f := range res.Floors {
			if f.Status != "ok" {
				fmt.Fprintf(tw, "%s\t%s\t\t\t\t\t\t\t\t\t\n", f.Name, f.Status)
				continue
			}
			fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t|\t%.0f\t%.0f\t%.0f\t%.0f\t%s\t\n", f.Name, f.Latency.P50, f.Latency.P90, f.Latency.P99,
				f.CallsPerSec, f.LoadLatency.P50, f.LoadLatency.P99, f.InvokerCPUPerCall, dash(f.ServerCPUPerCall, s.InProcess))
		}
		tw.Flush()
		for _, f := range res.Floors {
			if f.Status != "ok" {
				fmt.Fprintf(w, "  %s %s: %s\n", f.Name, f.Status, f.Reason)
			}
		}
	}

	writePairs(w, "Paired latency: one device each, calls alternating A B B A, or A C B B C A with a third in the window (µs)", "calls each", res.Pairs)
	writePairedLoads(w, res.PairedLoads)
	writeE2EPairs(w, res.E2EPairs)

	if len(res.Scale) > 0 {
		fmt.Fprintf(w, "\nScale: devices connected at once (%d connecting at a time); memory per device\n", s.ConnectConcurrency)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "row\tdevices\tconnected\tconnect s\tconnects/s\tconnect p50 ms\tp99 ms\t|\tdevice RSS KB\theap+stack KB\tgoroutines\t|\thub RSS KB\thub heap+stack KB\t")
		for _, r := range res.Scale {
			hub, hubHeap := fmt.Sprintf("%.1f", r.HubRSSPerDevice/1024), fmt.Sprintf("%.1f", r.HubHeapPerDevice/1024)
			if r.InProcess {
				hub, hubHeap = "(incl.)", "(incl.)"
			}
			g := "-"
			if r.Impl != ImplNodeSDK {
				g = fmt.Sprintf("%.1f", r.GoroutinesPerDevice)
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t%.0f\t%.1f\t%.1f\t|\t%.1f\t%.1f\t%s\t|\t%s\t%s\t\n", r.Name, r.Devices, r.Connected, r.ConnectSeconds, r.ConnectPerSec,
				r.ConnectP50Ms, r.ConnectP99Ms, r.DeviceRSSPerDevice/1024, r.DeviceHeapPerDevice/1024, g, hub, hubHeap)
		}
		tw.Flush()
		for _, r := range res.Scale {
			if r.Failed > 0 {
				fmt.Fprintf(w, "  %s at %d: %d failed: %s\n", r.Name, r.Devices, r.Failed, r.FirstError)
			}
		}
	}

	if len(res.Targets) > 0 {
		fmt.Fprintf(w, "\nTargets\n")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, t := range res.Targets {
			v := "-"
			if t.Status != "n/a" {
				v = trimFloat(t.Value)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Status, t.Name, v, t.Goal, t.Detail)
		}
		tw.Flush()
	}
	for _, t := range res.Targets {
		if t.BoundDetail != "" {
			fmt.Fprintf(w, "  floor of %q: %s at best: %s\n", t.Name, trimFloat(t.Bound), t.BoundDetail)
		}
	}
	if len(res.Comparisons) > 0 {
		fmt.Fprintf(w, "\nComparisons\n")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, c := range res.Comparisons {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", trimFloat(c.Value), c.Name, c.Detail)
		}
		tw.Flush()
	}
	for _, n := range res.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

func dash(v float64, inproc bool) string {
	if inproc {
		return "(in hub)"
	}
	return fmt.Sprintf("%.0f", v)
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.3f", v)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// dashIfEmpty is s, or "-" for an empty s.
func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
