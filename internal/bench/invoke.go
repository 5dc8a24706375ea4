package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/iothub-go/iothub/service"
)

// goInvoker invokes methods with this SDK's service client.
type goInvoker struct {
	hc *http.Client
	c  *service.Client
	m  service.CloudToDeviceMethod
}

func newGoInvoker(serviceCS string, tlsConf *tls.Config, method string, payload []byte, conc int) (*goInvoker, error) {
	hc := &http.Client{Transport: &http.Transport{
		TLSClientConfig:     tlsConf,
		MaxIdleConns:        conc + 16,
		MaxIdleConnsPerHost: conc + 16,
		IdleConnTimeout:     90 * time.Second,
	}}
	c, err := service.NewClientFromConnectionString(serviceCS, &service.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: hc,
		Retry:     policy.RetryOptions{MaxRetries: -1}, // a failure is a result, not something to hide
	}})
	if err != nil {
		return nil, err
	}
	return &goInvoker{hc: hc, c: c, m: service.CloudToDeviceMethod{
		MethodName: method, Payload: json.RawMessage(payload), ResponseTimeout: 30 * time.Second,
	}}, nil
}

func (g *goInvoker) call(ctx context.Context, deviceID string) error {
	res, err := g.c.InvokeDeviceMethod(ctx, deviceID, g.m)
	if err != nil {
		return err
	}
	if res.Status != 200 {
		return fmt.Errorf("device answered status %d", res.Status)
	}
	return nil
}

func (g *goInvoker) close() { g.hc.CloseIdleConnections() }

// window is what a measured phase observed between its start and end.
type window struct {
	seconds   float64
	latencies []time.Duration
	errors    int
	firstErr  string
	// cpu is this process's CPU seconds in the window; fleetCPU the
	// fleet process's (0 in process), invokerCPU a separate invoker
	// process's.
	cpu, fleetCPU, invokerCPU float64
	// fleetCPUs and fleetCalls are, for each fleet of the phase, its CPU
	// seconds and the calls it answered well in the window (fleetCPU is
	// the first's CPU).
	fleetCPUs  []float64
	fleetCalls []int
	// opened is when an invoker process said its window opened, as this
	// process saw the line arrive (runInvokerPhase).
	opened time.Time
}

// cpuMeter snapshots CPU time at the edges of a window.
type cpuMeter struct {
	f        fleet
	self0    float64
	fleet0   float64
	fleetErr error
}

func (m *cpuMeter) start() {
	m.self0 = cpuSeconds()
	if m.f != nil && m.f.pid() != 0 {
		m.fleet0, m.fleetErr = fleetCPU(m.f)
	}
}

func (m *cpuMeter) stop(w *window) {
	w.cpu = cpuSeconds() - m.self0
	w.fleetCPU = m.fleetSeconds()
}

// fleetSeconds is the fleet process's CPU time since start; 0 without one.
func (m *cpuMeter) fleetSeconds() float64 {
	if m.f == nil || m.f.pid() == 0 || m.fleetErr != nil {
		return 0
	}
	c, err := fleetCPU(m.f)
	if err != nil {
		return 0
	}
	return c - m.fleet0
}

// fleetCPU reads a fleet process's CPU time from /proc, so that the
// fleet spends nothing on answering.
func fleetCPU(f fleet) (float64, error) {
	return procCPUSeconds(f.pid())
}

// runGoPhase runs conc workers that call devices round-robin, one call at
// a time each, for warmup + dur. Calls that end inside the measured
// window [warmup, warmup+dur] are counted.
func runGoPhase(ctx context.Context, inv caller, devices []string, conc int, warmup, dur time.Duration, f fleet) window {
	return runGoPhaseHook(ctx, inv, devices, conc, warmup, dur, []fleet{f}, nil)
}

// runGoPhaseHook is runGoPhase over several fleets, whose devices are
// interleaved (devices[i] belongs to fleets[i % len(fleets)]): the CPU and
// the calls of each are counted apart. fleets has one at least; a nil
// one's CPU is not measured.
// It calls opened, if not nil, when the window opens.
func runGoPhaseHook(ctx context.Context, inv caller, devices []string, conc int, warmup, dur time.Duration, fleets []fleet, opened func()) window {
	var next atomic.Uint64
	start := time.Now()
	ws, we := start.Add(warmup), start.Add(warmup+dur)
	type acc struct {
		lat      []time.Duration
		calls    []int // by fleet
		errs     int
		firstErr string
	}
	accs := make([]acc, conc)
	var wg sync.WaitGroup
	for w := range conc {
		wg.Go(func() {
			a := &accs[w]
			a.calls = make([]int, len(fleets))
			for {
				t0 := time.Now()
				if t0.After(we) || ctx.Err() != nil {
					return
				}
				i := next.Add(1) % uint64(len(devices))
				err := inv.call(ctx, devices[i])
				t1 := time.Now()
				if t1.Before(ws) || t1.After(we) {
					continue
				}
				if err != nil {
					a.errs++
					if a.firstErr == "" {
						a.firstErr = err.Error()
					}
					continue
				}
				a.lat = append(a.lat, t1.Sub(t0))
				a.calls[i%uint64(len(fleets))]++
			}
		})
	}
	meters := make([]cpuMeter, len(fleets))
	for i, f := range fleets {
		meters[i].f = f
	}
	var w window
	sleepUntil(ctx, ws)
	if opened != nil {
		opened()
	}
	for i := range meters {
		meters[i].start()
	}
	sleepUntil(ctx, we)
	meters[0].stop(&w) // this process's CPU, and the first fleet's
	w.fleetCPUs = []float64{w.fleetCPU}
	for _, m := range meters[1:] {
		w.fleetCPUs = append(w.fleetCPUs, m.fleetSeconds())
	}
	wg.Wait()
	w.seconds = dur.Seconds()
	w.fleetCalls = make([]int, len(fleets))
	for _, a := range accs {
		for i, n := range a.calls {
			w.fleetCalls[i] += n
		}
		w.latencies = append(w.latencies, a.lat...)
		w.errors += a.errs
		if w.firstErr == "" {
			w.firstErr = a.firstErr
		}
	}
	return w
}

func sleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
}

// InvokeSpec is the stdin of an invoker process (conformance/bench_invoke.js
// or "iothub bench --invoker"): one JSON line.
type InvokeSpec struct {
	Devices     []string        `json:"devices"`
	Method      string          `json:"method"`
	Payload     json.RawMessage `json:"payload"`
	Concurrency int             `json:"concurrency"`
	WarmupMs    int64           `json:"warmup_ms"`
	DurationMs  int64           `json:"duration_ms"`
	// ServiceCS and CAPEM configure the Go invoker; the Node one reads
	// SERVICE_CS and NODE_EXTRA_CA_CERTS.
	ServiceCS string `json:"service_cs,omitempty"`
	CAPEM     string `json:"ca_pem,omitempty"`
	// StartAtUnixMs, if set, is when the warm-up starts (Unix
	// milliseconds): invokers given the same one measure the same
	// window (InvokerPair).
	StartAtUnixMs int64 `json:"start_at_unix_ms,omitempty"`
	// Invoker is what the Go invoker process calls with: "" this SDK's
	// service client, FloorAzcore a bare azcore pipeline posting the same
	// request (the floor, azcoreInvoker). The Node one ignores it.
	Invoker string `json:"invoker,omitempty"`
}

// RunInvoker serves one phase as an invoker process with this SDK's
// service client, or the floor the spec names: the body of "iothub bench
// --invoker". It prints
// {"type":"window_start"} when the measured window opens and then the
// result, as conformance/bench_invoke.js does.
func RunInvoker(in io.Reader, out io.Writer) error {
	line, err := bufio.NewReaderSize(in, 1<<20).ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return fmt.Errorf("bench: reading the invoke spec: %w", err)
	}
	var spec InvokeSpec
	if err := json.Unmarshal(line, &spec); err != nil {
		return fmt.Errorf("bench: invoke spec: %w", err)
	}
	tlsConf, err := clientTLS(spec.CAPEM)
	if err != nil {
		return err
	}
	conc := max(spec.Concurrency, 1)
	var inv caller
	switch spec.Invoker {
	case "":
		g, err := newGoInvoker(spec.ServiceCS, tlsConf, spec.Method, spec.Payload, conc)
		if err != nil {
			return err
		}
		defer g.close()
		inv = g
	case FloorAzcore:
		if spec.Method != Method {
			return fmt.Errorf("bench: the %s invoker calls %q only, not %q", FloorAzcore, Method, spec.Method)
		}
		a, err := newAzcoreInvoker(spec.ServiceCS, tlsConf, spec.Payload, conc)
		if err != nil {
			return err
		}
		defer a.close()
		inv = a
	default:
		return fmt.Errorf("bench: invoke spec: unknown invoker %q", spec.Invoker)
	}
	if spec.StartAtUnixMs > 0 {
		sleepUntil(context.Background(), time.UnixMilli(spec.StartAtUnixMs))
	}
	enc := json.NewEncoder(out)
	var cpu0 float64
	w := runGoPhaseHook(context.Background(), inv, spec.Devices, conc,
		time.Duration(spec.WarmupMs)*time.Millisecond, time.Duration(spec.DurationMs)*time.Millisecond, []fleet{nil},
		func() {
			cpu0 = cpuSeconds()
			_ = enc.Encode(invokeMsg{Type: "window_start"})
		})
	cpu := cpuSeconds() - cpu0
	res := invokeMsg{Type: "result", Errors: w.errors, FirstError: w.firstErr, Seconds: w.seconds, CPUSeconds: cpu,
		Latencies: make([]float64, len(w.latencies))}
	for i, l := range w.latencies {
		res.Latencies[i] = us(l)
	}
	return enc.Encode(res)
}

type invokeMsg struct {
	Type       string    `json:"type"` // "window_start", "result"
	Errors     int       `json:"errors"`
	FirstError string    `json:"first_error"`
	Seconds    float64   `json:"seconds"`
	Latencies  []float64 `json:"latencies_us"`
	CPUSeconds float64   `json:"cpu_seconds"`
}

// runInvokerPhase runs one phase in an invoker process (argv): the
// official azure-iothub service client (conformance/bench_invoke.js) or
// ours ("iothub bench --invoker"). The process measures its own window
// and says when it starts; its CPU is its own, the hub's is this
// process's and the fleet's is the fleet's.
func runInvokerPhase(ctx context.Context, argv []string, env []string, spec InvokeSpec, f fleet) (window, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return window{}, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return window{}, err
	}
	stderr := &tailBuffer{max: 8 << 10}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return window{}, err
	}
	defer func() { _ = cmd.Wait() }()
	b, _ := json.Marshal(spec)
	_, _ = stdin.Write(append(b, '\n'))
	stdin.Close()
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	m := cpuMeter{f: f}
	var w window
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var msg invokeMsg
		if err := json.Unmarshal(line, &msg); err != nil {
			return window{}, fmt.Errorf("bench: the invoker said %q: %w", line, err)
		}
		switch msg.Type {
		case "window_start":
			w.opened = time.Now()
			m.start()
		case "result":
			m.stop(&w)
			w.seconds = msg.Seconds
			w.errors = msg.Errors
			w.firstErr = msg.FirstError
			w.invokerCPU = msg.CPUSeconds
			w.latencies = make([]time.Duration, len(msg.Latencies))
			for i, l := range msg.Latencies {
				w.latencies[i] = time.Duration(l * 1e3)
			}
			_, _ = io.Copy(io.Discard, stdout)
			return w, nil
		}
	}
	return window{}, errors.New("bench: the invoker ended without a result: " + stderr.String())
}
