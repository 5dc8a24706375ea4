package bench

import (
	"fmt"
	"io"
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

// largestScale returns the largest fully connected fleet of name, and the
// largest fleet size common to names a and b (for like-for-like memory).
func (res *Result) scaleAt(name string, n int) *ScaleRow {
	for i := range res.Scale {
		s := &res.Scale[i]
		if s.Name == name && s.Devices == n && s.Connected == n {
			return s
		}
	}
	return nil
}

func (res *Result) largestScale(name string) *ScaleRow {
	var best *ScaleRow
	for i := range res.Scale {
		s := &res.Scale[i]
		if s.Name == name && s.Connected == s.Devices && (best == nil || s.Devices > best.Devices) {
			best = s
		}
	}
	return best
}

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

// latencyBound sets t's bound for a p50 ratio against a denominator of
// den µs: the invoker floor's own p50 over den.
func (res *Result) latencyBound(t *Target, den float64) {
	fl, raw := res.floor(FloorGoService), res.floor(FloorNetHTTP)
	if fl == nil || den <= 0 {
		return
	}
	t.Bound = round(fl.Latency.P50/den, 3)
	t.BoundDetail = fmt.Sprintf("the invoker's own HTTPS round trip to a server that answers at once is %.0f µs p50", fl.Latency.P50)
	if raw != nil {
		t.BoundDetail += fmt.Sprintf(" (bare net/http client: %.0f µs)", raw.Latency.P50)
	}
	t.BoundDetail += fmt.Sprintf(", %s of %.0f µs, with no hub or device work at all", trimFloat(t.Bound), den)
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

// targets checks the goals against the run.
func targets(res *Result) []Target {
	var out []Target
	na := func(name, goal, why string) {
		out = append(out, Target{Name: name, Goal: goal, Status: "n/a", Detail: why})
	}
	sdk, floor := res.row("go-sdk/mqtt"), res.row("paho-raw/mqtt")
	{
		name, goal := "device SDK overhead (MQTT p50 vs raw paho floor)", "go-sdk/mqtt p50 ÷ paho-raw/mqtt p50 ≤ 1.2"
		if p := res.pair("go-sdk/mqtt", "paho-raw/mqtt"); p != nil {
			out = append(out, Target{Name: name, Goal: goal, Value: p.P50Ratio, Status: status(p.P50Ratio <= 1.2),
				Detail: fmt.Sprintf("paired, alternating calls: %.0f µs vs %.0f µs (rows: %s)", p.LatA.P50, p.LatB.P50, rowRatio(sdk, floor))})
		} else if sdk != nil && floor != nil && floor.Latency.P50 > 0 {
			v := round(sdk.Latency.P50/floor.Latency.P50, 3)
			out = append(out, Target{Name: name, Goal: goal, Value: v, Status: status(v <= 1.2),
				Detail: fmt.Sprintf("%.0f µs vs %.0f µs", sdk.Latency.P50, floor.Latency.P50)})
		} else {
			na(name, goal, "needs the go-sdk/mqtt and paho-raw/mqtt rows")
		}
	}
	for _, t := range []string{"mqtt", "amqp"} {
		ours, node := res.row("go-sdk/"+t), res.row("node-sdk/"+t)
		name, goal := "latency vs Node device SDK ("+t+")", "go-sdk/"+t+" p50 ÷ node-sdk/"+t+" p50 ≤ 0.333"
		if p := res.pair("go-sdk/"+t, "node-sdk/"+t); p != nil {
			tg := Target{Name: name, Goal: goal, Value: p.P50Ratio, Status: status(p.P50Ratio <= 1.0/3),
				Detail: fmt.Sprintf("paired, alternating calls: %.0f µs vs %.0f µs (rows: %s)", p.LatA.P50, p.LatB.P50, rowRatio(ours, node))}
			res.latencyBound(&tg, p.LatB.P50)
			out = append(out, tg)
		} else if ours != nil && node != nil && node.Latency.P50 > 0 {
			v := round(ours.Latency.P50/node.Latency.P50, 3)
			tg := Target{Name: name, Goal: goal, Value: v, Status: status(v <= 1.0/3),
				Detail: fmt.Sprintf("%.0f µs vs %.0f µs", ours.Latency.P50, node.Latency.P50)}
			res.latencyBound(&tg, node.Latency.P50)
			out = append(out, tg)
		} else {
			na(name, goal, "needs the go-sdk/"+t+" and node-sdk/"+t+" rows (--node)")
		}
		name, goal = "throughput vs Node device SDK ("+t+")", "go-sdk/"+t+" calls/s ÷ node-sdk/"+t+" calls/s ≥ 3"
		if ours != nil && node != nil && node.Throughput.CallsPerSec > 0 {
			v := round(ours.Throughput.CallsPerSec/node.Throughput.CallsPerSec, 3)
			tg := Target{Name: name, Goal: goal, Value: v, Status: status(v >= 3),
				Detail: fmt.Sprintf("%.0f vs %.0f calls/s", ours.Throughput.CallsPerSec, node.Throughput.CallsPerSec)}
			devCPU, devWhat := 0.0, ""
			if fr := res.row(rawImpl(t) + "/" + t); fr != nil {
				devCPU, devWhat = fr.Throughput.DeviceCPUPerCall, "the "+fr.Impl+" device"
			}
			if b, d := res.throughputBound(devCPU, devWhat); b > 0 {
				tg.Bound = round(b/node.Throughput.CallsPerSec, 3)
				tg.BoundDetail = fmt.Sprintf("at most %.0f calls/s = %s; ÷ %.0f", b, d, node.Throughput.CallsPerSec)
			}
			out = append(out, tg)
		} else {
			na(name, goal, "needs the go-sdk/"+t+" and node-sdk/"+t+" rows (--node)")
		}
		name, goal = "memory per connected device vs Node ("+t+")", "go-sdk/"+t+" RSS/device ÷ node-sdk/"+t+" RSS/device ≤ 0.2"
		if a, b := res.commonScale("go-sdk/"+t, "node-sdk/"+t); a != nil && b.DeviceRSSPerDevice > 0 && !a.InProcess {
			v := round(a.DeviceRSSPerDevice/b.DeviceRSSPerDevice, 3)
			tg := Target{Name: name, Goal: goal, Value: v, Status: status(v <= 0.2),
				Detail: fmt.Sprintf("at %d devices: %.1f KB vs %.1f KB RSS per device", a.Devices, a.DeviceRSSPerDevice/1024, b.DeviceRSSPerDevice/1024)}
			if fl := res.scaleAt(rawImpl(t)+"/"+t, a.Devices); fl != nil && !fl.InProcess {
				tg.Bound = round(fl.DeviceRSSPerDevice/b.DeviceRSSPerDevice, 3)
				tg.BoundDetail = fmt.Sprintf("the raw %s client alone holds %.1f KB RSS per device at %d devices", fl.Impl, fl.DeviceRSSPerDevice/1024, a.Devices)
			}
			out = append(out, tg)
		} else {
			na(name, goal, "needs go-sdk/"+t+" and node-sdk/"+t+" fleets of a common size in child processes")
		}
	}
	{
		name, goal := "end-to-end throughput (MQTT over TLS)", "go-sdk/mqtt ≥ 10000 calls/s"
		if sdk != nil {
			v := sdk.Throughput.CallsPerSec
			tg := Target{Name: name, Goal: goal, Value: v, Status: status(v >= 10000),
				Detail: fmt.Sprintf("%d devices, %d in flight, %d errors; hub, invoker and devices on this machine", sdk.Throughput.Devices, sdk.Throughput.Concurrency, sdk.Throughput.Errors)}
			devCPU, devWhat := 0.0, ""
			if floor != nil {
				devCPU, devWhat = floor.Throughput.DeviceCPUPerCall, "the paho-raw device"
			}
			if b, d := res.throughputBound(devCPU, devWhat); b > 0 {
				tg.Bound, tg.BoundDetail = b, d
			}
			out = append(out, tg)
		} else {
			na(name, goal, "needs the go-sdk/mqtt row")
		}
	}
	{
		name, goal := "devices connected at once in one process", "≥ 10000 go-sdk/mqtt devices"
		if s := res.largestScale("go-sdk/mqtt"); s != nil {
			out = append(out, Target{Name: name, Goal: goal, Value: float64(s.Connected), Status: status(s.Connected >= 10000),
				Detail: fmt.Sprintf("%d connected in %.1f s", s.Connected, s.ConnectSeconds)})
		} else {
			na(name, goal, "needs a go-sdk/mqtt scale series")
		}
		name, goal = "memory per device client", "go-sdk/mqtt RSS/device ≤ 64 KB at the largest fleet"
		if s := res.largestScale("go-sdk/mqtt"); s != nil && !s.InProcess {
			v := round(s.DeviceRSSPerDevice/1024, 1)
			out = append(out, Target{Name: name, Goal: goal, Value: v, Status: status(v <= 64),
				Detail: fmt.Sprintf("KB RSS per device at %d devices; Go heap + stacks %.1f KB", s.Devices, s.DeviceHeapPerDevice/1024)})
		} else {
			na(name, goal, "needs a go-sdk/mqtt scale series in a child process (not --inproc)")
		}
	}
	return out
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
	for _, base := range []string{ImplPahoRaw, ImplAMQPRaw, ImplNodeSDK} {
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
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "A\tB\tA p50\tB p50\tA p90\tB p90\tA p99\tB p99\t"+each+"\tp50 A÷B\tp90 A÷B\t")
	for _, p := range pairs {
		if p.Status != "ok" {
			fmt.Fprintf(tw, "%s\t%s\t%s\t\t\t\t\t\t\t\t\t\n", p.A, p.B, p.Status)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%d\t%s\t%s\t\n", p.A, p.B, p.LatA.P50, p.LatB.P50, p.LatA.P90, p.LatB.P90,
			p.LatA.P99, p.LatB.P99, min(p.LatA.Calls, p.LatB.Calls), trimFloat(p.P50Ratio), trimFloat(p.P90Ratio))
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

	writePairs(w, "Paired latency: one device each, calls alternating A B B A (µs)", "calls each", res.Pairs)

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
