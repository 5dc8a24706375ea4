package bench

import (
	"fmt"
	"sync"
	"time"
)

// InvokerPair compares the CPU per call of two service clients, each in a
// process of its own, invoking the same device fleet at the same time:
// half the calls in flight each, their measured windows opening and
// closing together. Invoker rows measured one after the other do not see
// the same machine: the faster client drives the hub and the devices
// harder, and on two CPUs its own CPU per call then grows with the load
// it makes (BENCHMARKS.md). One InvokerPair per round.
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
	wg.Go(func() { wa, ea = runInvokerPhase(r.ctx, argvA, envA, spec, nil) })
	wg.Go(func() { wb, eb = runInvokerPhase(r.ctx, argvB, envB, spec, nil) })
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
