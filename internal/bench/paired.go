package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Pair is a latency comparison of two device implementations measured in
// the same phase: one device of each, the invoker alternating calls
// between them (A B B A …), so that both see the same machine. On a
// shared machine this is steadier than comparing rows measured one after
// the other. A pair may share its window with other implementations
// (With): the calls then go round all of them and back (A C B B C A …),
// and each is compared with the same B.
type Pair struct {
	A      string   `json:"a"`
	B      string   `json:"b"`
	With   []string `json:"with,omitempty"`
	Status string   `json:"status"`
	Reason string   `json:"reason,omitempty"`
	LatA   *Latency `json:"latency_a,omitempty"`
	LatB   *Latency `json:"latency_b,omitempty"`
	// Rounds are the rounds, each with its own device processes; LatA
	// and LatB pool their calls. P50Ratio and P90Ratio are A ÷ B, the
	// medians of the rounds'.
	Rounds   []PairRound `json:"rounds,omitempty"`
	P50Ratio float64     `json:"p50_ratio"`
	P90Ratio float64     `json:"p90_ratio"`
}

// pairGroups lists the implementations the targets compare, among the
// rows that worked, in groups measured in one window. The last of a group
// is its base, with which each other member is compared. Per transport:
// this SDK and the handoff floor with the raw floor, all three in one
// window, so that the target and the bound the handoff floor sets on it
// come from the same minutes; and this SDK with the Node SDK.
func (r *runner) pairGroups() [][]rowSpec {
	ok := func(impl, t string) bool { return impl != "" && r.res.row(impl+"/"+t) != nil }
	var plan [][]rowSpec
	for _, t := range r.cfg.Transports {
		if !ok(ImplGoSDK, t) {
			continue
		}
		if raw := rawImpl(t); ok(raw, t) {
			g := []rowSpec{{ImplGoSDK, t}}
			if h := handoffImpl(t); ok(h, t) {
				g = append(g, rowSpec{h, t})
			}
			plan = append(plan, append(g, rowSpec{raw, t}))
		}
		if ok(ImplNodeSDK, t) {
			plan = append(plan, []rowSpec{{ImplGoSDK, t}, {ImplNodeSDK, t}})
		}
	}
	return plan
}

func (r *runner) runPairs() {
	groups := r.pairGroups()
	for _, g := range groups {
		if r.ctx.Err() != nil {
			return
		}
		r.res.Pairs = append(r.res.Pairs, r.runPairGroup(g)...)
	}
	if r.cfg.InProcess { // no device CPU of its own to measure
		return
	}
	for _, g := range groups {
		if r.ctx.Err() != nil {
			return
		}
		if b := g[len(g)-1]; b.impl == rawImpl(b.transport) { // the CPU targets compare with the raw floors only
			r.res.PairedLoads = append(r.res.PairedLoads, r.runPairedLoad(g)...)
		}
	}
	if r.cfg.NoFloors { // no azcore invoker for the floor side
		return
	}
	for _, g := range groups {
		if r.ctx.Err() != nil {
			return
		}
		if b := g[len(g)-1]; b.impl == rawImpl(b.transport) && slices.Contains(targetTransports, b.transport) {
			r.res.E2EPairs = append(r.res.E2EPairs, r.runE2EPair(b.transport))
		}
	}
}

// rowNames are the row names of g.
func rowNames(g []rowSpec) []string {
	names := make([]string, len(g))
	for i, rs := range g {
		names[i] = rs.impl + "/" + rs.transport
	}
	return names
}

// others is names without names[i], nil when that leaves none.
func others(names []string, i int) []string {
	if len(names) <= 2 {
		return nil
	}
	return slices.Delete(slices.Clone(names[:len(names)-1]), i, i+1)
}

// PairedLoad compares the device CPU per call of two device
// implementations measured in the same throughput phase: a fleet of each,
// the invoker's calls spread evenly over both at once (their devices
// interleaved, Concurrency calls in flight in all), so that both see the
// same machine at the same time. Rows measured one after the other drift
// with the machine: their CPU per call moves by ±0.1 of itself between
// runs here (BENCHMARKS.md).
type PairedLoad struct {
	A           string   `json:"a"`
	B           string   `json:"b"`
	With        []string `json:"with,omitempty"`
	Status      string   `json:"status"`
	Reason      string   `json:"reason,omitempty"`
	Devices     int      `json:"devices_each"`
	Concurrency int      `json:"concurrency"`
	Seconds     float64  `json:"seconds"`
	CallsA      int      `json:"calls_a"`
	CallsB      int      `json:"calls_b"`
	// CPUPerCallA and CPUPerCallB are µs of each fleet process's CPU per
	// call it answered in the window; Ratio is A ÷ B.
	CPUPerCallA float64 `json:"device_cpu_us_per_call_a"`
	CPUPerCallB float64 `json:"device_cpu_us_per_call_b"`
	Ratio       float64 `json:"cpu_ratio"`
}

// runPairedLoad measures the members of g under one load for Rounds ×
// Duration, and compares each with the last.
func (r *runner) runPairedLoad(g []rowSpec) []PairedLoad {
	names, k := rowNames(g), len(g)
	loads := make([]PairedLoad, k-1)
	for i := range loads {
		loads[i] = PairedLoad{A: names[i], B: names[k-1], With: others(names, i), Status: "ok", Devices: r.cfg.Devices, Concurrency: r.cfg.Concurrency}
	}
	what := strings.Join(names, " vs ")
	fail := func(err error) []PairedLoad {
		for i := range loads {
			loads[i].Status, loads[i].Reason = "failed", err.Error()
		}
		r.logf("paired load %s: %v", what, err)
		return loads
	}
	r.rowSeq++
	fleets, creds, stop, err := r.groupFleets("l", g, r.cfg.Devices)
	defer stop()
	if err != nil {
		return fail(err)
	}
	ids := make([]string, k*r.cfg.Devices) // interleaved, as runGoPhaseHook wants them: fleet i's at indexes i mod k
	for i := range creds {
		for j, c := range creds[i] {
			ids[k*j+i] = c.id
		}
	}
	inv, err := newGoInvoker(r.serviceCS, r.tlsConf, Method, r.payload, r.cfg.Concurrency)
	if err != nil {
		return fail(err)
	}
	defer inv.close()
	dur := r.cfg.Duration * time.Duration(r.cfg.Rounds)
	r.logf("paired load %s: %d devices each, %d in flight in all, %v", what, r.cfg.Devices, r.cfg.Concurrency, dur)
	w := runGoPhaseHook(r.ctx, inv, ids, r.cfg.Concurrency, r.cfg.Warmup, dur, fleets, nil)
	if w.errors > 0 {
		return fail(fmt.Errorf("%d calls failed: %s", w.errors, w.firstErr))
	}
	for i := range fleets {
		if w.fleetCalls[i] == 0 || w.fleetCPUs[i] <= 0 {
			return fail(fmt.Errorf("nothing measured for %s: %d calls, %.3f CPU seconds", names[i], w.fleetCalls[i], w.fleetCPUs[i]))
		}
	}
	base := round(w.fleetCPUs[k-1]*1e6/float64(w.fleetCalls[k-1]), 1)
	for i := range loads {
		pl := &loads[i]
		pl.Seconds = w.seconds
		pl.CallsA, pl.CallsB = w.fleetCalls[i], w.fleetCalls[k-1]
		pl.CPUPerCallA, pl.CPUPerCallB = round(w.fleetCPUs[i]*1e6/float64(pl.CallsA), 1), base
		pl.Ratio = round(pl.CPUPerCallA/pl.CPUPerCallB, 3)
		r.logf("paired load %s vs %s: %.1f vs %.1f µs of device CPU per call", pl.A, pl.B, pl.CPUPerCallA, pl.CPUPerCallB)
	}
	return loads
}

func (res *Result) pairedLoad(a, b string) *PairedLoad {
	return find(res.PairedLoads, func(p PairedLoad) bool { return p.A == a && p.B == b && p.Status == "ok" && p.Ratio > 0 })
}

// find returns the first element of s that ok accepts, or nil.
func find[T any](s []T, ok func(T) bool) *T {
	if i := slices.IndexFunc(s, ok); i >= 0 {
		return &s[i]
	}
	return nil
}

// groupFleets registers n devices for each member of g, named after
// prefix, and starts a fleet of each with every device connected. The
// caller closes the fleets with stop, which is never nil.
func (r *runner) groupFleets(prefix string, g []rowSpec, n int) (fleets []fleet, creds [][]deviceCred, stop func(), err error) {
	stop = func() {
		for _, f := range fleets {
			f.close()
		}
	}
	creds = make([][]deviceCred, len(g))
	for i, rs := range g {
		creds[i], err = r.register(fmt.Sprintf("%s%d%c", prefix, r.rowSeq, 'a'+i), n)
		if err != nil {
			return fleets, creds, stop, err
		}
		f, err := r.startFleet(rs.impl, rs.transport, creds[i], 20*time.Second, profiles{})
		if err != nil {
			return fleets, creds, stop, err
		}
		fleets = append(fleets, f)
		if rep := f.report(); rep.Connected != n {
			return fleets, creds, stop, fmt.Errorf("%d of %d %s devices did not connect: %s", n-rep.Connected, n, rs.impl, rep.FirstError)
		}
	}
	return fleets, creds, stop, nil
}

// runPairGroup measures the members of g, one device each, in Rounds
// rounds of LatencyDuration, the calls going round them and back (A B B A,
// or A C B B C A with three), and compares each with the last. Every round
// has device processes of its own: one process runs a few per cent faster
// or slower than the next of the same code (BENCHMARKS.md), so a ratio
// from one pair of processes says as much about them as about the code.
// The ratios are the medians of the rounds'.
func (r *runner) runPairGroup(g []rowSpec) []Pair {
	names, k := rowNames(g), len(g)
	pairs := make([]Pair, k-1)
	for i := range pairs {
		pairs[i] = Pair{A: names[i], B: names[k-1], With: others(names, i), Status: "ok"}
	}
	what := strings.Join(names, " vs ")
	fail := func(err error) []Pair {
		for i := range pairs {
			pairs[i].Status, pairs[i].Reason = "failed", err.Error()
		}
		r.logf("pair %s: %v", what, err)
		return pairs
	}
	inv, err := newGoInvoker(r.serviceCS, r.tlsConf, Method, r.payload, 1)
	if err != nil {
		return fail(err)
	}
	defer inv.close()
	r.logf("pair %s: alternating calls, %d rounds of %v, each with its own device processes", what, r.cfg.Rounds, r.cfg.LatencyDuration)
	lat := make([][]time.Duration, k)
	errs := make([]int, k)
	firstErr := make([]string, k)
	for range r.cfg.Rounds {
		if r.ctx.Err() != nil {
			return fail(r.ctx.Err())
		}
		rl, err := r.pairRound(g, inv, errs, firstErr)
		if err != nil {
			return fail(err)
		}
		b := summarize(rl[k-1], 0, "")
		for i := range pairs {
			a := summarize(rl[i], 0, "")
			pairs[i].Rounds = append(pairs[i].Rounds, PairRound{P50A: a.P50, P50B: b.P50, P90A: a.P90, P90B: b.P90})
		}
		for i := range lat {
			lat[i] = append(lat[i], rl[i]...)
		}
	}
	base := summarize(lat[k-1], errs[k-1], firstErr[k-1])
	for i := range pairs {
		p := &pairs[i]
		p.LatA, p.LatB = summarize(lat[i], errs[i], firstErr[i]), base
		p.P50Ratio = round(medianRatio(p.Rounds, PairRound.p50), 3)
		p.P90Ratio = round(medianRatio(p.Rounds, PairRound.p90), 3)
	}
	return pairs
}

// pairRound starts a fresh device process with one device for each member
// of g and measures the calls to them for LatencyDuration, after Warmup,
// going round them and back. It returns each member's latencies, and adds
// failed calls to errs and firstErr.
func (r *runner) pairRound(g []rowSpec, inv *goInvoker, errs []int, firstErr []string) ([][]time.Duration, error) {
	k := len(g)
	r.rowSeq++
	_, creds, stop, err := r.groupFleets("p", g, 1)
	defer stop()
	if err != nil {
		return nil, err
	}
	ids := make([]string, k)
	for i := range ids {
		ids[i] = creds[i][0].id
	}
	start := time.Now()
	ws, we := start.Add(r.cfg.Warmup), start.Add(r.cfg.Warmup+r.cfg.LatencyDuration)
	lat := make([][]time.Duration, k)
	order := make([]int, 0, 2*k) // there and back: each member as often first as last
	for i := range k {
		order = append(order, i)
	}
	for i := range k {
		order = append(order, k-1-i)
	}
	for n := 0; r.ctx.Err() == nil; n++ {
		i := order[n%len(order)]
		t0 := time.Now()
		if t0.After(we) {
			break
		}
		ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
		err := inv.call(ctx, ids[i])
		cancel()
		if t0.Before(ws) {
			continue
		}
		if err != nil {
			errs[i]++
			if firstErr[i] == "" {
				firstErr[i] = err.Error()
			}
			continue
		}
		lat[i] = append(lat[i], time.Since(t0))
	}
	return lat, nil
}

// PairRound is one round of a Pair, with device processes of its own:
// the p50 and p90 of A and of B, in µs.
type PairRound struct {
	P50A float64 `json:"p50_a"`
	P50B float64 `json:"p50_b"`
	P90A float64 `json:"p90_a"`
	P90B float64 `json:"p90_b"`
}

// p50 and p90 are a round's A and B, for medianRatio.
func (pr PairRound) p50() (a, b float64) { return pr.P50A, pr.P50B }
func (pr PairRound) p90() (a, b float64) { return pr.P90A, pr.P90B }

// medianRatio is the median over rounds of a ÷ b, as f gives them, among
// the rounds that measured both (a round whose calls all failed has a p50
// of 0); 0 when there are none.
func medianRatio[T any](rounds []T, f func(T) (a, b float64)) float64 {
	var v []float64
	for _, x := range rounds {
		if a, b := f(x); a > 0 && b > 0 {
			v = append(v, a/b)
		}
	}
	return median(v)
}

func (res *Result) pair(a, b string) *Pair {
	return find(res.Pairs, func(p Pair) bool { return p.A == a && p.B == b && p.Status == "ok" && p.P50Ratio > 0 })
}

// E2EPair compares the end-to-end calls/s of this SDK with the floors' in
// one window: this SDK's fleet answering its service client's calls (A),
// and the raw responder's fleet answering a bare azcore pipeline's (B),
// the two taking turns in short slices (A B B A …), each slice with the
// machine to itself. Rows measured one after the other drift with the
// machine: their calls/s moved by up to a third between the rounds of one
// run here (BENCHMARKS.md), far more than the target's margin.
type E2EPair struct {
	A      string `json:"a"`
	B      string `json:"b"`
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// Slices is how many slices each side had, of SliceSeconds each
	// (after a warm-up of their own); Concurrency calls are in flight in
	// each.
	Slices       int     `json:"slices_each"`
	SliceSeconds float64 `json:"slice_seconds"`
	Devices      int     `json:"devices_each"`
	Concurrency  int     `json:"concurrency"`
	CallsA       int     `json:"calls_a"`
	CallsB       int     `json:"calls_b"`
	CallsPerSecA float64 `json:"calls_per_sec_a"`
	CallsPerSecB float64 `json:"calls_per_sec_b"`
	// Ratio is A ÷ B.
	Ratio float64 `json:"ratio"`
}

// e2eSlice is the length of one slice of an E2EPair, and e2eSliceWarmup
// the calls before it that are not counted (the in-flight calls ramping
// up from none).
const (
	e2eSlice       = time.Second
	e2eSliceWarmup = 200 * time.Millisecond
)

// runE2EPair measures an E2EPair over t, for Rounds × Duration each.
func (r *runner) runE2EPair(t string) E2EPair {
	g := []rowSpec{{ImplGoSDK, t}, {rawImpl(t), t}}
	names := rowNames(g)
	slice := min(e2eSlice, r.cfg.Duration)
	n := max(1, int((r.cfg.Duration*time.Duration(r.cfg.Rounds)+slice-1)/slice))
	p := E2EPair{A: names[0], B: names[1], Status: "ok", Slices: n, SliceSeconds: slice.Seconds(), Devices: r.cfg.Devices, Concurrency: r.cfg.Concurrency}
	fail := func(err error) E2EPair {
		p.Status, p.Reason = "failed", err.Error()
		r.logf("end-to-end pair %s vs %s: %v", p.A, p.B, err)
		return p
	}
	r.rowSeq++
	fleets, creds, stop, err := r.groupFleets("e", g, r.cfg.Devices)
	defer stop()
	if err != nil {
		return fail(err)
	}
	sdkInv, err := newGoInvoker(r.serviceCS, r.tlsConf, Method, r.payload, r.cfg.Concurrency)
	if err != nil {
		return fail(err)
	}
	defer sdkInv.close()
	floorInv, closeFloor, err := r.newInvoker(FloorAzcore, r.serviceCS)
	if err != nil {
		return fail(err)
	}
	defer closeFloor()
	invs := []caller{sdkInv, floorInv}
	ids := make([][]string, 2)
	for i := range ids {
		for _, c := range creds[i] {
			ids[i] = append(ids[i], c.id)
		}
	}
	r.logf("end-to-end pair %s vs %s (the %s invoker): %d slices of %v each, taking turns, %d in flight", p.A, p.B, FloorAzcore, n, slice, r.cfg.Concurrency)
	for i := range invs { // both warm, before the first slice
		runGoPhase(r.ctx, invs[i], ids[i], r.cfg.Concurrency, 0, r.cfg.Warmup, fleets[i])
	}
	calls, secs := make([]int, 2), make([]float64, 2)
	order := []int{0, 1, 1, 0}
	for j := range 2 * n {
		if r.ctx.Err() != nil {
			return fail(r.ctx.Err())
		}
		i := order[j%len(order)]
		w := runGoPhase(r.ctx, invs[i], ids[i], r.cfg.Concurrency, min(e2eSliceWarmup, r.cfg.Warmup), slice, fleets[i])
		if w.errors > 0 {
			return fail(fmt.Errorf("%s: %d calls failed: %s", names[i], w.errors, w.firstErr))
		}
		calls[i] += len(w.latencies)
		secs[i] += w.seconds
	}
	if calls[0] == 0 || calls[1] == 0 {
		return fail(fmt.Errorf("nothing measured: %d and %d calls", calls[0], calls[1]))
	}
	p.CallsA, p.CallsB = calls[0], calls[1]
	p.CallsPerSecA, p.CallsPerSecB = round(float64(calls[0])/secs[0], 1), round(float64(calls[1])/secs[1], 1)
	p.Ratio = round(p.CallsPerSecA/p.CallsPerSecB, 3)
	r.logf("end-to-end pair %s vs %s: %.0f vs %.0f calls/s", p.A, p.B, p.CallsPerSecA, p.CallsPerSecB)
	return p
}

func (res *Result) e2ePair(a, b string) *E2EPair {
	return find(res.E2EPairs, func(p E2EPair) bool { return p.A == a && p.B == b && p.Status == "ok" && p.Ratio > 0 })
}
