package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// InvokerPair compares the CPU per call of two service clients, each in a
// process of its own, invoking the same device fleet at the same time,
// told to start at the same instant; a round whose windows opened more
// than invokerPairSkew apart fails. With a Floor, a third process invokes
// the same fleet in the same window with a bare azcore pipeline, the floor
// of a client built on azcore, and the calls in flight are shared three
// ways. Invoker rows measured one after the other do not see the same
// machine (BENCHMARKS.md). One InvokerPair per round.
type InvokerPair struct {
	A      string `json:"a"`
	B      string `json:"b"`
	Device string `json:"device"` // the fleet's row
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// Concurrency is the calls each invoker keeps in flight.
	Concurrency int     `json:"concurrency_each"`
	Seconds     float64 `json:"seconds"`
	CallsA      int     `json:"calls_a"`
	CallsB      int     `json:"calls_b"`
	// CPUPerCallA and CPUPerCallB are µs of each invoker process's CPU
	// per call it completed in the window; Ratio is A ÷ B.
	CPUPerCallA float64 `json:"invoker_cpu_us_per_call_a"`
	CPUPerCallB float64 `json:"invoker_cpu_us_per_call_b"`
	Ratio       float64 `json:"cpu_ratio"`
	// Floor names the third invoker ("" without one), with its calls, its
	// CPU per call and FloorRatio, Floor ÷ B.
	Floor           string  `json:"floor,omitempty"`
	CallsFloor      int     `json:"calls_floor,omitempty"`
	CPUPerCallFloor float64 `json:"invoker_cpu_us_per_call_floor,omitempty"`
	FloorRatio      float64 `json:"cpu_ratio_floor,omitempty"`
}

// invokerPairLead is how long before their common start the invoker
// processes are launched: time for Node to load its modules.
const invokerPairLead = 5 * time.Second

// invokerPairSkew is how far apart the windows may open (as this process
// sees their window_start lines arrive) for the round to count: a process
// that was not ready at the common start begins late.
const invokerPairSkew = 250 * time.Millisecond

// invokerProc is one invoker process of an InvokerPair.
type invokerProc struct {
	name      string
	argv, env []string
	invoker   string // InvokeSpec.Invoker
}

// invokerPair runs the invoker processes a, b and, if floor is not nil,
// floor on the devices ids at once, sharing Concurrency calls in flight,
// with the same warm-up and window.
func (r *runner) invokerPair(device string, a, b invokerProc, floor *invokerProc, ids []string) InvokerPair {
	procs := []invokerProc{a, b}
	if floor != nil {
		procs = append(procs, *floor)
	}
	p := InvokerPair{A: a.name, B: b.name, Device: device, Status: "ok", Concurrency: max(r.cfg.Concurrency/len(procs), 1)}
	if floor != nil {
		p.Floor = floor.name
	}
	spec := InvokeSpec{Devices: ids, Method: Method, Payload: r.payload, Concurrency: p.Concurrency,
		WarmupMs: r.cfg.Warmup.Milliseconds(), DurationMs: r.cfg.Duration.Milliseconds(),
		ServiceCS: r.serviceCS, CAPEM: r.caPEM, StartAtUnixMs: time.Now().Add(invokerPairLead).UnixMilli()}
	what := a.name + " vs " + b.name
	if floor != nil {
		what += " (and the floor " + floor.name + ")"
	}
	r.logf("paired invokers %s on %s: %d in flight each, %v", what, device, p.Concurrency, r.cfg.Duration)
	ws := make([]window, len(procs))
	errs := make([]error, len(procs))
	var wg sync.WaitGroup
	var firstFailed atomic.Int32             // 1 + the index of the process that failed first, which ended the others
	ctx, cancel := context.WithCancel(r.ctx) // one failing ends the others
	defer cancel()
	for i, pr := range procs {
		s := spec
		s.Invoker = pr.invoker
		wg.Go(func() {
			if ws[i], errs[i] = runInvokerPhase(ctx, pr.argv, pr.env, s, nil); errs[i] != nil {
				firstFailed.CompareAndSwap(0, int32(i+1))
				cancel()
			}
		})
	}
	wg.Wait()
	fail := func(format string, args ...any) InvokerPair {
		p.Status, p.Reason = "failed", fmt.Sprintf(format, args...)
		r.logf("paired invokers %s: %s", what, p.Reason)
		return p
	}
	if i := firstFailed.Load(); i > 0 { // the others' errors came from being ended
		return fail("%s: %v", procs[i-1].name, errs[i-1])
	}
	first, last := 0, 0 // the processes whose windows opened first and last
	for i, pr := range procs {
		w := ws[i]
		switch {
		case w.errors > 0:
			return fail("%s: %d calls failed: %s", pr.name, w.errors, w.firstErr)
		case len(w.latencies) == 0 || w.invokerCPU <= 0:
			return fail("nothing measured: %s made %d calls in %.3f CPU seconds", pr.name, len(w.latencies), w.invokerCPU)
		}
		if w.opened.Before(ws[first].opened) {
			first = i
		}
		if w.opened.After(ws[last].opened) {
			last = i
		}
	}
	if d := ws[last].opened.Sub(ws[first].opened); d > invokerPairSkew {
		return fail("the windows did not open together: %s's %v after %s's", procs[last].name, d.Round(time.Millisecond), procs[first].name)
	}
	perCall := func(w window) (int, float64) {
		return len(w.latencies), round(w.invokerCPU*1e6/float64(len(w.latencies)), 1)
	}
	p.Seconds = ws[0].seconds
	p.CallsA, p.CPUPerCallA = perCall(ws[0])
	p.CallsB, p.CPUPerCallB = perCall(ws[1])
	p.Ratio = round(p.CPUPerCallA/p.CPUPerCallB, 3)
	r.logf("paired invokers %s vs %s: %.1f vs %.1f µs of invoker CPU per call (%d and %d calls)", a.name, b.name, p.CPUPerCallA, p.CPUPerCallB, p.CallsA, p.CallsB)
	if floor != nil {
		p.CallsFloor, p.CPUPerCallFloor = perCall(ws[2])
		p.FloorRatio = round(p.CPUPerCallFloor/p.CPUPerCallB, 3)
		r.logf("paired invokers: the floor %s: %.1f µs of invoker CPU per call (%d calls), ÷ %s %s", floor.name, p.CPUPerCallFloor, p.CallsFloor, b.name, trimFloat(p.FloorRatio))
	}
	return p
}

// invokerPairs returns the ok rounds of the a ÷ b invoker pair.
func (res *Result) invokerPairs(a, b string) []InvokerPair {
	var out []InvokerPair
	for _, p := range res.InvokerPairs {
		if p.A == a && p.B == b && p.Status == "ok" && p.Ratio > 0 {
			out = append(out, p)
		}
	}
	return out
}
