package bench

import (
	"fmt"
	"slices"
)

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// medianOf returns the median of f over xs.
func medianOf[T any](xs []T, f func(T) float64) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	return median(v)
}

// medianLatency combines latency summaries: counts add up, every
// percentile is the median of the rounds'.
func medianLatency(ls []*Latency) *Latency {
	if len(ls) == 0 {
		return nil
	}
	if len(ls) == 1 {
		return ls[0]
	}
	out := &Latency{}
	for _, l := range ls {
		out.Calls += l.Calls
		out.Errors += l.Errors
		if out.FirstError == "" {
			out.FirstError = l.FirstError
		}
	}
	out.P50 = medianOf(ls, func(l *Latency) float64 { return l.P50 })
	out.P90 = medianOf(ls, func(l *Latency) float64 { return l.P90 })
	out.P99 = medianOf(ls, func(l *Latency) float64 { return l.P99 })
	out.Mean = medianOf(ls, func(l *Latency) float64 { return l.Mean })
	out.Min = medianOf(ls, func(l *Latency) float64 { return l.Min })
	out.Max = medianOf(ls, func(l *Latency) float64 { return l.Max })
	return out
}

func medianThroughput(ts []*Throughput) *Throughput {
	if len(ts) == 0 {
		return nil
	}
	if len(ts) == 1 {
		return ts[0]
	}
	out := *ts[0]
	out.Calls, out.Errors, out.Seconds = 0, 0, 0
	lats := make([]*Latency, len(ts))
	for i, t := range ts {
		out.Calls += t.Calls
		out.Errors += t.Errors
		out.Seconds += t.Seconds
		lats[i] = t.Latency
		if out.FirstError == "" {
			out.FirstError = t.FirstError
		}
	}
	out.Latency = medianLatency(lats)
	out.CallsPerSec = medianOf(ts, func(t *Throughput) float64 { return t.CallsPerSec })
	out.HubCPUPerCall = medianOf(ts, func(t *Throughput) float64 { return t.HubCPUPerCall })
	out.DeviceCPUPerCall = medianOf(ts, func(t *Throughput) float64 { return t.DeviceCPUPerCall })
	out.InvokerCPUPerCall = medianOf(ts, func(t *Throughput) float64 { return t.InvokerCPUPerCall })
	out.TotalCPUPerCall = medianOf(ts, func(t *Throughput) float64 { return t.TotalCPUPerCall })
	return &out
}

// medianRow combines the rounds of one row. Rounds that failed are left
// out of the medians and counted in Reason.
func medianRow(rounds []Row) Row {
	if len(rounds) == 1 {
		return rounds[0]
	}
	ok, firstBad, reason := splitRounds(rounds, func(r *Row) (string, string) { return r.Status, r.Reason })
	if len(ok) == 0 {
		out := *firstBad
		out.Rounds = rounds
		return out
	}
	out := Row{Name: ok[0].Name, Impl: ok[0].Impl, Transport: ok[0].Transport, Status: "ok", Rounds: rounds, Reason: reason}
	var ls []*Latency
	var ts, fs []*Throughput
	for _, r := range ok {
		ls = append(ls, r.Latency)
		ts = append(ts, r.Throughput)
		if r.FloorEndToEnd != nil {
			fs = append(fs, r.FloorEndToEnd)
		}
	}
	out.Latency, out.Throughput = medianLatency(ls), medianThroughput(ts)
	if len(fs) == len(ok) { // a median of every round or none
		out.FloorEndToEnd = medianThroughput(fs)
	}
	return out
}

// medianInvokers combines the invoker rows of every round, by name, in
// order of first appearance.
func medianInvokers(rows []InvokerRow) []InvokerRow {
	var names []string
	by := map[string][]InvokerRow{}
	for _, r := range rows {
		if _, seen := by[r.Name]; !seen {
			names = append(names, r.Name)
		}
		by[r.Name] = append(by[r.Name], r)
	}
	var out []InvokerRow
	for _, n := range names {
		rs := by[n]
		var ok []InvokerRow
		for _, r := range rs {
			if r.Status == "ok" {
				ok = append(ok, r)
			}
		}
		if len(ok) == 0 {
			out = append(out, rs[0])
			continue
		}
		o := InvokerRow{Name: n, Device: ok[0].Device, Status: "ok", Rounds: len(ok)}
		var ls []*Latency
		var ts []*Throughput
		for _, r := range ok {
			ls = append(ls, r.Latency)
			ts = append(ts, r.Throughput)
		}
		o.Latency, o.Throughput = medianLatency(ls), medianThroughput(ts)
		out = append(out, o)
	}
	return out
}

// splitRounds returns the rounds whose status is "ok", the first round
// that is not (nil if none), and the Reason a combined row gives for the
// failed ones ("" if none).
func splitRounds[R any](rounds []R, status func(*R) (status, reason string)) (ok []R, firstBad *R, reason string) {
	for i := range rounds {
		if st, _ := status(&rounds[i]); st == "ok" {
			ok = append(ok, rounds[i])
		} else if firstBad == nil {
			firstBad = &rounds[i]
		}
	}
	if firstBad != nil {
		st, why := status(firstBad)
		reason = fmt.Sprintf("%d of %d rounds %s: %s", len(rounds)-len(ok), len(rounds), st, why)
	}
	return ok, firstBad, reason
}
