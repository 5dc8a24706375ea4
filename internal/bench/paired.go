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
	var ids [2]string
	for i, rs := range []rowSpec{a, b} {
		creds, err := r.register(fmt.Sprintf("p%d%c", r.rowSeq, 'a'+i), 1)
		if err != nil {
			return fail(err)
		}
		f, err := r.startFleet(rs.impl, rs.transport, creds, 20*time.Second, "")
		if err != nil {
			return fail(err)
		}
		defer f.close()
		if rep := f.report(); rep.Connected != 1 {
			return fail(fmt.Errorf("%s did not connect: %s", rs.impl, rep.FirstError))
		}
		ids[i] = creds[0].id
	}
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
	i := slices.IndexFunc(res.Pairs, func(p Pair) bool { return p.A == a && p.B == b && p.Status == "ok" && p.P50Ratio > 0 })
	if i < 0 {
		return nil
	}
	return &res.Pairs[i]
}
