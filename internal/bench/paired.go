package bench

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// Pair is a latency comparison of two device implementations measured in
// the same phase: one device of each, the invoker alternating calls
// between them (A B B A …), so that both see the same machine. On a
// shared machine this is steadier than comparing rows measured one after
// the other.
type Pair struct {
	A      string   `json:"a"`
	B      string   `json:"b"`
	Status string   `json:"status"`
	Reason string   `json:"reason,omitempty"`
	LatA   *Latency `json:"latency_a,omitempty"`
	LatB   *Latency `json:"latency_b,omitempty"`
	// P50Ratio and P90Ratio are A ÷ B.
	P50Ratio float64 `json:"p50_ratio"`
	P90Ratio float64 `json:"p90_ratio"`
}

// pairPlan lists the pairs the targets need, among the rows that worked.
func (r *runner) pairPlan() [][2]rowSpec {
	ok := func(name string) bool { return r.res.row(name) != nil }
	var plan [][2]rowSpec
	for _, t := range r.cfg.Transports {
		if !ok(ImplGoSDK + "/" + t) {
			continue
		}
		for _, base := range []string{rawImpl(t), ImplNodeSDK} {
			if ok(base + "/" + t) {
				plan = append(plan, [2]rowSpec{{ImplGoSDK, t}, {base, t}})
			}
		}
		// The handoff floor against the raw one: what a conforming client
		// pays at least (the bound of the p50 target).
		if h, raw := handoffImpl(t), rawImpl(t); h != "" && ok(h+"/"+t) && ok(raw+"/"+t) {
			plan = append(plan, [2]rowSpec{{h, t}, {raw, t}})
		}
	}
	return plan
}

func (r *runner) runPairs() {
	for _, p := range r.pairPlan() {
		if r.ctx.Err() != nil {
			return
		}
		r.res.Pairs = append(r.res.Pairs, r.runPair(p[0], p[1]))
	}
	if r.cfg.InProcess { // no device CPU of its own to measure
		return
	}
	for _, p := range r.pairPlan() {
		if r.ctx.Err() != nil {
			return
		}
		if p[1].impl == rawImpl(p[1].transport) { // the CPU targets compare with the raw floors only
			r.res.PairedLoads = append(r.res.PairedLoads, r.runPairedLoad(p[0], p[1]))
		}
	}
}

// PairedLoad compares the device CPU per call of two device
// implementations measured in the same throughput phase: a fleet of each,
// the invoker's calls spread evenly over both at once (their devices
// interleaved, Concurrency calls in flight in all), so that both see the
// same machine at the same time. Rows measured one after the other drift
// with the machine: their CPU per call moves by ±0.1 of itself between
// runs here (BENCHMARKS.md).
type PairedLoad struct {
	A           string  `json:"a"`
	B           string  `json:"b"`
	Status      string  `json:"status"`
	Reason      string  `json:"reason,omitempty"`
	Devices     int     `json:"devices_each"`
	Concurrency int     `json:"concurrency"`
	Seconds     float64 `json:"seconds"`
	CallsA      int     `json:"calls_a"`
	CallsB      int     `json:"calls_b"`
	// CPUPerCallA and CPUPerCallB are µs of each fleet process's CPU per
	// call it answered in the window; Ratio is A ÷ B.
	CPUPerCallA float64 `json:"device_cpu_us_per_call_a"`
	CPUPerCallB float64 `json:"device_cpu_us_per_call_b"`
	Ratio       float64 `json:"cpu_ratio"`
}

// runPairedLoad measures a and b under one load for Rounds × Duration.
func (r *runner) runPairedLoad(a, b rowSpec) PairedLoad {
	pl := PairedLoad{A: a.impl + "/" + a.transport, B: b.impl + "/" + b.transport, Status: "ok",
		Devices: r.cfg.Devices, Concurrency: r.cfg.Concurrency}
	fail := func(err error) PairedLoad {
		pl.Status, pl.Reason = "failed", err.Error()
		r.logf("paired load %s vs %s: %v", pl.A, pl.B, err)
		return pl
	}
	r.rowSeq++
	fleets, creds, stop, err := r.pairFleets("l", a, b, r.cfg.Devices)
	defer stop()
	if err != nil {
		return fail(err)
	}
	ids := make([]string, 2*r.cfg.Devices) // interleaved, as runGoPhaseHook wants them: a's at even indexes
	for i := range creds {
		for j, c := range creds[i] {
			ids[2*j+i] = c.id
		}
	}
	inv, err := newGoInvoker(r.serviceCS, r.tlsConf, Method, r.payload, r.cfg.Concurrency)
	if err != nil {
		return fail(err)
	}
	defer inv.close()
	dur := r.cfg.Duration * time.Duration(r.cfg.Rounds)
	r.logf("paired load %s vs %s: %d devices each, %d in flight in all, %v", pl.A, pl.B, r.cfg.Devices, r.cfg.Concurrency, dur)
	w := runGoPhaseHook(r.ctx, inv, ids, r.cfg.Concurrency, r.cfg.Warmup, dur, fleets[:], nil)
	pl.Seconds = w.seconds
	pl.CallsA, pl.CallsB = w.fleetCalls[0], w.fleetCalls[1]
	switch {
	case w.errors > 0:
		return fail(fmt.Errorf("%d calls failed: %s", w.errors, w.firstErr))
	case pl.CallsA == 0 || pl.CallsB == 0 || w.fleetCPUs[0] <= 0 || w.fleetCPUs[1] <= 0:
		return fail(fmt.Errorf("nothing measured: %d and %d calls, %.3f and %.3f CPU seconds",
			pl.CallsA, pl.CallsB, w.fleetCPUs[0], w.fleetCPUs[1]))
	}
	pl.CPUPerCallA = round(w.fleetCPUs[0]*1e6/float64(pl.CallsA), 1)
	pl.CPUPerCallB = round(w.fleetCPUs[1]*1e6/float64(pl.CallsB), 1)
	pl.Ratio = round(pl.CPUPerCallA/pl.CPUPerCallB, 3)
	r.logf("paired load %s vs %s: %.1f vs %.1f µs of device CPU per call", pl.A, pl.B, pl.CPUPerCallA, pl.CPUPerCallB)
	return pl
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

// pairFleets registers n devices for each of a and b, named after prefix,
// and starts a fleet of each with every device connected. The caller
// closes the fleets with stop, which is never nil.
func (r *runner) pairFleets(prefix string, a, b rowSpec, n int) (fleets [2]fleet, creds [2][]deviceCred, stop func(), err error) {
	var started []fleet
	stop = func() {
		for _, f := range started {
			f.close()
		}
	}
	for i, rs := range []rowSpec{a, b} {
		creds[i], err = r.register(fmt.Sprintf("%s%d%c", prefix, r.rowSeq, 'a'+i), n)
		if err != nil {
			return fleets, creds, stop, err
		}
		f, err := r.startFleet(rs.impl, rs.transport, creds[i], 20*time.Second, "")
		if err != nil {
			return fleets, creds, stop, err
		}
		started = append(started, f)
		if rep := f.report(); rep.Connected != n {
			return fleets, creds, stop, fmt.Errorf("%d of %d %s devices did not connect: %s", n-rep.Connected, n, rs.impl, rep.FirstError)
		}
		fleets[i] = f
	}
	return fleets, creds, stop, nil
}

// runPair measures a and b alternately for Rounds × LatencyDuration.
func (r *runner) runPair(a, b rowSpec) Pair {
	p := Pair{A: a.impl + "/" + a.transport, B: b.impl + "/" + b.transport, Status: "ok"}
	fail := func(err error) Pair {
		p.Status, p.Reason = "failed", err.Error()
		r.logf("pair %s vs %s: %v", p.A, p.B, err)
		return p
	}
	r.rowSeq++
	_, creds, stop, err := r.pairFleets("p", a, b, 1)
	defer stop()
	if err != nil {
		return fail(err)
	}
	ids := [2]string{creds[0][0].id, creds[1][0].id}
	inv, err := newGoInvoker(r.serviceCS, r.tlsConf, Method, r.payload, 1)
	if err != nil {
		return fail(err)
	}
	defer inv.close()
	dur := r.cfg.LatencyDuration * time.Duration(r.cfg.Rounds)
	r.logf("pair %s vs %s: alternating calls, %v", p.A, p.B, dur)
	start := time.Now()
	ws, we := start.Add(r.cfg.Warmup), start.Add(r.cfg.Warmup+dur)
	var lat [2][]time.Duration
	var errs [2]int
	var firstErr [2]string
	order := []int{0, 1, 1, 0}
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
	p.LatA = summarize(lat[0], errs[0], firstErr[0])
	p.LatB = summarize(lat[1], errs[1], firstErr[1])
	if p.LatB.P50 > 0 && p.LatB.P90 > 0 {
		p.P50Ratio = round(p.LatA.P50/p.LatB.P50, 3)
		p.P90Ratio = round(p.LatA.P90/p.LatB.P90, 3)
	}
	return p
}

func (res *Result) pair(a, b string) *Pair {
	return find(res.Pairs, func(p Pair) bool { return p.A == a && p.B == b && p.Status == "ok" && p.P50Ratio > 0 })
}
