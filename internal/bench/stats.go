package bench

import (
	"bufio"
	"bytes"
	"math"
	"os"
	"runtime/metrics"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// percentile returns the q-quantile (0 < q ≤ 1) of sorted durations, by
// the nearest-rank method; 0 for none.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return round(float64(d)/1e6, 3) }
func us(d time.Duration) float64 { return round(float64(d)/1e3, 1) }

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

// Latency summarizes a set of round trips, in microseconds.
type Latency struct {
	Calls  int     `json:"calls"`
	Errors int     `json:"errors"`
	P50    float64 `json:"p50_us"`
	P90    float64 `json:"p90_us"`
	P99    float64 `json:"p99_us"`
	Mean   float64 `json:"mean_us"`
	Min    float64 `json:"min_us"`
	Max    float64 `json:"max_us"`
	// FirstError is the first failure, if any.
	FirstError string `json:"first_error,omitempty"`
}

func summarize(d []time.Duration, errs int, firstErr string) *Latency {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	l := &Latency{Calls: len(d), Errors: errs, FirstError: firstErr}
	if len(d) == 0 {
		return l
	}
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	l.P50, l.P90, l.P99 = us(percentile(d, 0.5)), us(percentile(d, 0.9)), us(percentile(d, 0.99))
	l.Mean = us(sum / time.Duration(len(d)))
	l.Min, l.Max = us(d[0]), us(d[len(d)-1])
	return l
}

// cpuSeconds returns the user + system CPU time this process has used.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return tv(ru.Utime) + tv(ru.Stime)
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// rss returns this process's resident set size (VmRSS), 0 if unknown.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	return statusKB(b, "VmRSS:")
}

// statusKB reads a "Name:   123 kB" line of /proc/*/status, in bytes.
func statusKB(b []byte, key string) int64 {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n * 1024
			}
		}
	}
	return 0
}

// clockTicks is USER_HZ, the unit of /proc/*/stat times (100 on Linux).
const clockTicks = 100

// procCPUSeconds returns the user + system CPU time of process pid, from
// /proc/pid/stat.
func procCPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: count fields after ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, os.ErrInvalid
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, os.ErrInvalid
	}
	ut, _ := strconv.ParseFloat(f[11], 64) // field 14
	st, _ := strconv.ParseFloat(f[12], 64) // field 15
	return (ut + st) / clockTicks, nil
}

// gcCounters returns how many collections this process has completed and
// the CPU time the collector has used (runtime/metrics), without forcing
// a collection.
func gcCounters() (cycles uint64, cpuSeconds float64) {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/cpu/classes/gc/total:cpu-seconds"}}
	metrics.Read(s)
	if s[0].Value.Kind() == metrics.KindUint64 {
		cycles = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == metrics.KindFloat64 {
		cpuSeconds = s[1].Value.Float64()
	}
	return cycles, cpuSeconds
}

// gcMsg is the answer to "gc": the process's CPU time and its collector's
// counters.
func gcMsg() fleetMsg {
	n, c := gcCounters()
	return fleetMsg{Type: "gc", CPUSeconds: cpuSeconds(), GCCycles: n, GCCPUSeconds: c}
}

// GCWindow is what a fleet process spent on garbage collection while
// something was measured.
type GCWindow struct {
	Seconds float64 `json:"seconds"`
	// CPUSeconds is the process's CPU time in the window, GCCPUSeconds
	// the collector's share of it (runtime/metrics' estimate).
	CPUSeconds   float64 `json:"cpu_seconds"`
	GCCPUSeconds float64 `json:"gc_cpu_seconds"`
	GCCycles     uint64  `json:"gc_cycles"`
}

// gcWindow returns the window between two "gc" answers.
func gcWindow(a, b fleetMsg, d time.Duration) *GCWindow {
	return &GCWindow{Seconds: round(d.Seconds(), 2), CPUSeconds: round(b.CPUSeconds-a.CPUSeconds, 2),
		GCCPUSeconds: round(b.GCCPUSeconds-a.GCCPUSeconds, 2), GCCycles: b.GCCycles - a.GCCycles}
}
