package bench

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// InvokerPair compares the CPU per call of two service clients, each in a
// process of its own, invoking the same device fleet at the same time:
// half the calls in flight each, told to start at the same instant; a
// round whose windows opened more than invokerPairSkew apart fails.
// Invoker rows measured one after the other do not see the same machine
// (BENCHMARKS.md). One InvokerPair per round.
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
}

// invokerPairLead is how long before their common start both invoker
// processes are launched: time for Node to load its modules.
const invokerPairLead = 5 * time.Second

// invokerPairSkew is how far apart the two windows may open (as this
// process sees their window_start lines arrive) for the round to count:
// a process that was not ready at the common start begins late.
const invokerPairSkew = 250 * time.Millisecond

// invokerPair runs invoker processes a and b (argv and environment each)
// on the devices ids at once, Concurrency ÷ 2 calls in flight each, with
// the same warm-up and window.
func (r *runner) invokerPair(nameA, nameB, device string, argvA, envA, argvB, envB []string, ids []string) InvokerPair {
	p := InvokerPair{A: nameA, B: nameB, Device: device, Status: "ok", Concurrency: max(r.cfg.Concurrency/2, 1)}
	spec := InvokeSpec{Devices: ids, Method: Method, Payload: r.payload, Concurrency: p.Concurrency,
		WarmupMs: r.cfg.Warmup.Milliseconds(), DurationMs: r.cfg.Duration.Milliseconds(),
		ServiceCS: r.serviceCS, CAPEM: r.caPEM, StartAtUnixMs: time.Now().Add(invokerPairLead).UnixMilli()}
	r.logf("paired invokers %s vs %s on %s: %d in flight each, %v", nameA, nameB, device, p.Concurrency, r.cfg.Duration)
	var wa, wb window
	var ea, eb error
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(r.ctx) // one failing ends the other
	defer cancel()
	wg.Go(func() {
		if wa, ea = runInvokerPhase(ctx, argvA, envA, spec, nil); ea != nil {
			cancel()
		}
	})
	wg.Go(func() {
		if wb, eb = runInvokerPhase(ctx, argvB, envB, spec, nil); eb != nil {
			cancel()
		}
	})
	wg.Wait()
	fail := func(format string, args ...any) InvokerPair {
		p.Status, p.Reason = "failed", fmt.Sprintf(format, args...)
		r.logf("paired invokers %s vs %s: %s", nameA, nameB, p.Reason)
		return p
	}
	switch {
	case ea != nil:
		return fail("%s: %v", nameA, ea)
	case eb != nil:
		return fail("%s: %v", nameB, eb)
	case wa.errors > 0:
		return fail("%s: %d calls failed: %s", nameA, wa.errors, wa.firstErr)
	case wb.errors > 0:
		return fail("%s: %d calls failed: %s", nameB, wb.errors, wb.firstErr)
	case len(wa.latencies) == 0 || wa.invokerCPU <= 0 || len(wb.latencies) == 0 || wb.invokerCPU <= 0:
		return fail("nothing measured: %d and %d calls, %.3f and %.3f CPU seconds", len(wa.latencies), len(wb.latencies), wa.invokerCPU, wb.invokerCPU)
	case wa.opened.Sub(wb.opened).Abs() > invokerPairSkew:
		return fail("the windows did not open together: %s's %v after %s's", nameA, wa.opened.Sub(wb.opened).Round(time.Millisecond), nameB)
	}
	p.Seconds = wa.seconds
	p.CallsA, p.CallsB = len(wa.latencies), len(wb.latencies)
	p.CPUPerCallA = round(wa.invokerCPU*1e6/float64(p.CallsA), 1)
	p.CPUPerCallB = round(wb.invokerCPU*1e6/float64(p.CallsB), 1)
	p.Ratio = round(p.CPUPerCallA/p.CPUPerCallB, 3)
	r.logf("paired invokers %s vs %s: %.1f vs %.1f µs of invoker CPU per call (%d and %d calls)", nameA, nameB, p.CPUPerCallA, p.CPUPerCallB, p.CallsA, p.CallsB)
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
