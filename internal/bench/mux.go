package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/iothub-go/iothub/transport/amqp"
)

// MuxConfig configures RunMux ("iothub bench --multiplex"): many device
// identities over a few AMQP connections (amqp.Pool) in one child process,
// the hub in this one.
type MuxConfig struct {
	// Devices is the pooled fleet; SmallDevices the fleet whose method
	// round trips are the baseline of the large one's.
	Devices      int
	SmallDevices int
	// PerConn is amqp.PoolOptions.DevicesPerConn (0: the pool's 995);
	// DialRate its DialRate (0: the pool's 10 per second).
	PerConn  int
	DialRate float64
	// ConnectConcurrency is how many devices connect at once.
	ConnectConcurrency int
	// Calls is how many method round trips each fleet gets (paired: a call
	// to a random device of one fleet, then of the other).
	Calls int
	// NoCut skips the recovery phase (every pooled connection cut at once).
	NoCut bool
	// NoVerify skips calling every device once after the recovery.
	NoVerify bool
	// MemoryLimitMiB is the fleet processes' GOMEMLIMIT; 0 is three
	// quarters of the machine's memory.
	MemoryLimitMiB int
	// FloorDevices is the size of the go-amqp floor fleet (ImplAMQPRawPool),
	// 0 for Devices; negative skips it.
	FloorDevices int
	// AnchorDevices is the size of the one-connection-per-device anchors:
	// this SDK over AMQP and MQTT, and, with Node, the Node SDK over AMQP.
	// 0 skips them.
	AnchorDevices int
	Node          bool
	NodeDir       string
	NodeBin       string
	// FleetCommand starts a Go fleet process ("iothub bench --fleet");
	// required unless InProcess, which runs the Go fleets in this process
	// (memory figures then include the hub's).
	FleetCommand []string
	InProcess    bool
	// Progress receives one line per step; nil is silent.
	Progress io.Writer
}

// MuxDefaults returns the default configuration: 100,000 devices.
func MuxDefaults() MuxConfig {
	return MuxConfig{Devices: 100000, SmallDevices: 100, DialRate: 20, ConnectConcurrency: 2000, Calls: 2000, AnchorDevices: 1000, NodeBin: "node"}
}

// Validate checks the configuration.
func (c *MuxConfig) Validate() error {
	switch {
	case c.Devices < 1 || c.SmallDevices < 1:
		return errors.New("bench: --mux-devices and --mux-small must be at least 1")
	case c.PerConn < 0 || c.PerConn > amqp.MaxDevicesPerConn:
		return fmt.Errorf("bench: --mux-per-conn must be 0 to %d", amqp.MaxDevicesPerConn)
	case c.DialRate < 0:
		return errors.New("bench: --mux-dial-rate must not be negative")
	case c.ConnectConcurrency < 1 || c.Calls < 1:
		return errors.New("bench: --connect-concurrency and --mux-calls must be at least 1")
	case c.AnchorDevices < 0:
		return errors.New("bench: --mux-anchor-devices must not be negative")
	case c.MemoryLimitMiB < 0:
		return errors.New("bench: --mux-memory-limit must not be negative")
	case len(c.FleetCommand) == 0 && !c.InProcess:
		return errors.New("bench: the multiplexed benchmark needs a fleet command")
	}
	return nil
}

// MuxResult is what RunMux measured.
type MuxResult struct {
	Schema   string     `json:"schema"`
	Started  string     `json:"started"`
	Seconds  float64    `json:"seconds"`
	Machine  Machine    `json:"machine"`
	PerConn  int        `json:"per_conn"`
	DialRate float64    `json:"dial_rate"`
	Rows     []ScaleRow `json:"rows"`
	Calls    *MuxCalls  `json:"calls,omitempty"`
	// FloorCalls are the same calls to the go-amqp floor's fleets: a
	// large one and one of SmallDevices.
	FloorCalls *MuxCalls   `json:"floor_calls,omitempty"`
	Recovery   *MuxRecover `json:"recovery,omitempty"`
	Targets    []Target    `json:"targets"`
	Limits     []string    `json:"limits"`
	Notes      []string    `json:"notes"`
}

// MuxCalls compares method round trips to random devices of the large
// pooled fleet with those to the small one, one call at a time,
// alternating.
type MuxCalls struct {
	Large    *Latency `json:"large"`
	Small    *Latency `json:"small"`
	P50Ratio float64  `json:"p50_ratio"`
	P99Ratio float64  `json:"p99_ratio"`
	// LargeGC is what the large fleet's process spent on collection
	// while the calls ran.
	LargeGC *GCWindow `json:"large_gc,omitempty"`
}

// MuxRecover is the recovery after every pooled connection was cut.
type MuxRecover struct {
	CutConns     int     `json:"cut_conns"`
	Seconds      float64 `json:"seconds"`
	Connected    int     `json:"connected"`
	Dials        int64   `json:"dials"`
	PeakDialRate int64   `json:"peak_dial_rate"`
	DialRate     float64 `json:"dial_rate_bound"`
	Conns        int     `json:"conns"`
	// VerifyCalls are the calls made to every device once afterwards.
	VerifyCalls  int     `json:"verify_calls"`
	VerifyErrors int     `json:"verify_errors"`
	VerifyFirst  string  `json:"verify_first_error,omitempty"`
	VerifySecs   float64 `json:"verify_seconds"`
	// HeapBefore and HeapAfter are the fleet's Go heap + stacks before
	// the cut and after every device was back (after collections): the
	// replaced connections must leave nothing behind.
	HeapBefore int64 `json:"heap_before_bytes"`
	HeapAfter  int64 `json:"heap_after_bytes"`
	// RSSBefore is the fleet's RSS before the cut; PeakRSS the most it
	// held while the devices reconnected.
	RSSBefore int64  `json:"rss_before_bytes"`
	PeakRSS   int64  `json:"peak_rss_bytes"`
	Error     string `json:"error,omitempty"`
	// GCCycles and GCCPUSeconds are the fleet's collections during the
	// recovery and the CPU time they took.
	GCCycles     uint64  `json:"gc_cycles"`
	GCCPUSeconds float64 `json:"gc_cpu_seconds"`
}

// MarshalIndent returns the result as indented JSON.
func (res *MuxResult) MarshalIndent() ([]byte, error) { return json.MarshalIndent(res, "", "  ") }

// RunMux runs the multiplexed benchmark.
func RunMux(ctx context.Context, cfg MuxConfig) (*MuxResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	start := time.Now()
	perConn := cfg.PerConn
	if perConn == 0 {
		perConn = amqp.DefaultDevicesPerConn
	}
	dialRate := cfg.DialRate
	if dialRate == 0 {
		dialRate = amqp.DefaultDialRate
	}
	res := &MuxResult{Schema: "iothub-bench-mux/1", Started: start.UTC().Format(time.RFC3339), PerConn: perConn, DialRate: dialRate,
		Machine: machine(Config{Node: cfg.Node, NodeBin: cfg.NodeBin})}
	res.Limits = []string{
		fmt.Sprintf("this SDK (amqp.Pool): %d identities per connection by default (IoT Hub's limit %d over TLS, %d over WebSocket), any number of connections, at most --mux-dial-rate new connections per second", amqp.DefaultDevicesPerConn, amqp.MaxDevicesPerConn, amqp.MaxDevicesPerWebSocketConn),
		"Java MultiplexingClient: MAX_MULTIPLEX_DEVICE_COUNT_AMQPS 1000, MAX_MULTIPLEX_DEVICE_COUNT_AMQPS_WS 500 devices per connection (one MultiplexingClient per connection); SAS only",
		".NET AmqpConnectionPoolSettings: MaxPoolSize 100 connections by default (\"allows up to 100,000 devices\"), devices placed by hash of the identity, so a connection can pass IoT Hub's 1,000; X.509 devices are not pooled",
		"C SDK: one transport handle shared by device clients, no stated limit; no twins, no modules, no X.509 when multiplexed",
		"Node and Python SDKs: no multiplexing (one connection per device)",
	}
	defer func() {
		res.Seconds = round(time.Since(start).Seconds(), 1)
		res.Machine.LoadAfter = loadAvg()
	}()
	r := &runner{ctx: ctx, res: &Result{}, cfg: Config{
		ConnectConcurrency: 64, Node: cfg.Node, NodeDir: cfg.NodeDir, NodeBin: cfg.NodeBin, FleetCommand: cfg.FleetCommand,
		Progress: cfg.Progress, HubAddrs: []string{"127.0.0.1:0"}, InProcess: cfg.InProcess,
	}}
	// go-amqp preallocates a 5,000-entry pointer array per session, link
	// and receiver, and the collector scans each in full: at 20,000 pooled
	// devices, 70 % of the CPU of connecting them went to marking. The
	// fleet processes (ours and the floor alike) therefore run with
	// GOGC=400, and, since a pooled fleet of 100,000 devices holds some
	// 15 GB and replacing every link after the cut allocates as much
	// again, with a memory limit of three quarters of the machine, so that
	// the collector runs before the machine is out of memory. Memory
	// figures are taken after forced collections and do not depend on it.
	env := []string{"GOGC=400"}
	if cfg.MemoryLimitMiB > 0 {
		env = append(env, fmt.Sprintf("GOMEMLIMIT=%dMiB", cfg.MemoryLimitMiB))
	} else if res.Machine.MemoryBytes > 0 {
		env = append(env, fmt.Sprintf("GOMEMLIMIT=%dMiB", res.Machine.MemoryBytes*3/4>>20))
	}
	res.Notes = append(res.Notes, "the fleet processes run with "+strings.Join(env, " ")+" (go-amqp's preallocated window arrays make marking the main CPU cost of connecting)")
	startFleet := func(spec FleetSpec) (fleet, error) {
		if cfg.InProcess {
			return startLocalFleet(ctx, spec)
		}
		return startProcFleet(ctx, cfg.FleetCommand, env, spec, 30*time.Minute)
	}
	if err := r.startHub(); err != nil {
		return nil, err
	}
	defer r.h.Close()
	if cfg.Node {
		f, err := os.CreateTemp("", "iothub-bench-ca-*.pem")
		if err != nil {
			return nil, err
		}
		_, _ = f.Write([]byte(r.caPEM))
		f.Close()
		r.caFile = f.Name()
		defer os.Remove(r.caFile)
	}
	note := func(format string, args ...any) {
		res.Notes = append(res.Notes, fmt.Sprintf(format, args...))
		r.logf(format, args...)
	}

	large, err := r.register("m", cfg.Devices)
	if err != nil {
		return nil, err
	}
	small, err := r.register("s", cfg.SmallDevices)
	if err != nil {
		return nil, err
	}
	startPool := func(name string, creds []deviceCred, proxy bool) (fleet, ScaleRow) {
		sr := ScaleRow{Name: name, Impl: ImplGoPool, Transport: "amqp", Devices: len(creds)}
		r.settle()
		hubBefore := sampleMem()
		r.logf("multiplex: %s: connecting %d devices", name, len(creds))
		spec := FleetSpec{Impl: ImplGoPool, Transport: "amqp", CAPEM: r.caPEM, ConnStrings: r.connStrings(ImplGoSDK, "amqp", creds), Method: Method,
			ConnectConcurrency: cfg.ConnectConcurrency, ConnectTimeoutMs: int((5 * time.Minute) / time.Millisecond),
			PoolPerConn: cfg.PerConn, PoolDialRate: cfg.DialRate, Proxy: proxy}
		f, err := startFleet(spec)
		if err != nil {
			sr.Failed, sr.FirstError = len(creds), err.Error()
			return nil, sr
		}
		fillScale(&sr, f.report(), hubBefore, sampleMem())
		r.logf("multiplex: %s: %d connected in %.1f s (%d failed), %.1f KB RSS/device, %.1f KB heap+stacks/device",
			name, sr.Connected, sr.ConnectSeconds, sr.Failed, sr.DeviceRSSPerDevice/1024, sr.DeviceHeapPerDevice/1024)
		return f, sr
	}
	lf, lrow := startPool(ImplGoPool+"/amqp", large, !cfg.NoCut)
	res.Rows = append(res.Rows, lrow)
	if lf == nil {
		return res, ctx.Err()
	}
	defer func() {
		if lf != nil {
			_ = lf.close()
		}
	}()
	sf, srow := startPool(ImplGoPool+"/amqp (small fleet)", small, false)
	if sf != nil {
		res.Rows = append(res.Rows, srow)
		res.Calls = r.muxCalls(ctx, lf, ids(large), ids(small), cfg.Calls, "")
		_ = sf.close()
	} else {
		note("multiplex: the small fleet failed: %s", srow.FirstError)
	}
	if !cfg.NoCut && ctx.Err() == nil {
		r.logf("multiplex: cutting every pooled connection")
		m, err := lf.(cutter).cut()
		rec := &MuxRecover{CutConns: m.CutConns, Seconds: round(m.RecoverySeconds, 2), Connected: m.Connected, Dials: m.Dials,
			PeakDialRate: m.PeakDialRate, DialRate: dialRate, Conns: m.Conns, Error: m.FirstError}
		if err != nil {
			rec.Error = err.Error()
		}
		rec.GCCycles, rec.GCCPUSeconds = m.GCCycles, round(m.GCCPUSeconds, 1)
		if m.Before != nil && m.After != nil {
			rec.HeapBefore, rec.HeapAfter = m.Before.Heap+m.Before.Stack, m.After.Heap+m.After.Stack
			rec.RSSBefore, rec.PeakRSS = m.Before.RSS, m.PeakRSS
		}
		res.Recovery = rec
		r.logf("multiplex: %d connections cut, every device back after %.1f s, %d dials, peak %d dials/s; fleet heap+stacks %.0f MB before, %.0f MB after; RSS %.0f MB before, at most %.0f MB while reconnecting",
			rec.CutConns, rec.Seconds, rec.Dials, rec.PeakDialRate, float64(rec.HeapBefore)/1e6, float64(rec.HeapAfter)/1e6, float64(rec.RSSBefore)/1e6, float64(rec.PeakRSS)/1e6)
		if !cfg.NoVerify && rec.Error == "" {
			inv, err := newGoInvoker(r.serviceCS, r.tlsConf, Method, []byte(`{}`), 64)
			if err == nil {
				t0 := time.Now()
				rec.VerifyCalls, rec.VerifyErrors, rec.VerifyFirst = callEach(ctx, inv, ids(large), 64)
				rec.VerifySecs = round(time.Since(t0).Seconds(), 1)
				inv.close()
				r.logf("multiplex: called every device once: %d calls, %d errors, %.1f s", rec.VerifyCalls, rec.VerifyErrors, rec.VerifySecs)
			}
		}
	}
	_ = lf.close()
	lf = nil

	// The floor: go-amqp in the same layout.
	if fn := cfg.FloorDevices; fn >= 0 && ctx.Err() == nil {
		if fn == 0 || fn > len(large) {
			fn = len(large)
		}
		sr := ScaleRow{Name: ImplAMQPRawPool + "/amqp", Impl: ImplAMQPRawPool, Transport: "amqp", Devices: fn}
		r.settle()
		hubBefore := sampleMem()
		r.logf("multiplex: floor: connecting %d go-amqp devices", fn)
		spec := FleetSpec{Impl: ImplAMQPRawPool, Transport: "amqp", CAPEM: r.caPEM, ConnStrings: r.connStrings(ImplGoSDK, "amqp", large[:fn]), Method: Method,
			ConnectConcurrency: cfg.ConnectConcurrency, ConnectTimeoutMs: int((5 * time.Minute) / time.Millisecond), PoolPerConn: cfg.PerConn}
		f, err := startFleet(spec)
		if err != nil {
			sr.Failed, sr.FirstError = fn, err.Error()
		} else {
			fillScale(&sr, f.report(), hubBefore, sampleMem())
		}
		r.logf("multiplex: floor: %d connected, %.1f KB RSS/device, %.1f KB heap+stacks/device", sr.Connected, sr.DeviceRSSPerDevice/1024, sr.DeviceHeapPerDevice/1024)
		res.Rows = append(res.Rows, sr)
		if f != nil {
			// The same calls as to the pooled fleets, to the floor's large
			// fleet and a small one of its own: the floor of the
			// round-trip targets.
			smallSpec := FleetSpec{Impl: ImplAMQPRawPool, Transport: "amqp", CAPEM: r.caPEM, ConnStrings: r.connStrings(ImplGoSDK, "amqp", small), Method: Method,
				ConnectConcurrency: cfg.ConnectConcurrency, ConnectTimeoutMs: int((5 * time.Minute) / time.Millisecond), PoolPerConn: cfg.PerConn}
			if sf, err := startFleet(smallSpec); err != nil {
				note("multiplex: the floor's small fleet failed: %v", err)
			} else {
				res.FloorCalls = r.muxCalls(ctx, f, ids(large[:fn]), ids(small), cfg.Calls, "floor: ")
				_ = sf.close()
			}
			_ = f.close()
		}
	}
	// The anchors: one connection per device.
	if n := cfg.AnchorDevices; n > 0 && ctx.Err() == nil {
		creds, err := r.register("a", n)
		if err != nil {
			return res, err
		}
		r.scaleIDs = creds
		plan := []struct{ impl, tr string }{{ImplGoSDK, "amqp"}, {ImplAMQPRaw, "amqp"}, {ImplGoSDK, "mqtt"}}
		if cfg.Node {
			plan = append(plan, struct{ impl, tr string }{ImplNodeSDK, "amqp"})
		}
		for _, p := range plan {
			if ctx.Err() != nil {
				break
			}
			res.Rows = append(res.Rows, r.scaleOne(p.impl, p.tr, n))
		}
	}
	res.Notes = append(res.Notes, r.res.Notes...)
	res.Targets = muxTargets(res, cfg.Devices)
	return res, ctx.Err()
}

// muxCalls measures paired calls to random devices of a large and a small
// fleet, with what the large fleet's process spent on collection
// meanwhile.
func (r *runner) muxCalls(ctx context.Context, lf fleet, large, small []string, n int, what string) *MuxCalls {
	inv, err := newGoInvoker(r.serviceCS, r.tlsConf, Method, []byte(`{}`), 4)
	if err != nil {
		r.res.Notes = append(r.res.Notes, fmt.Sprintf("multiplex: %sinvoker: %v", what, err))
		return nil
	}
	defer inv.close()
	g0, gerr := lf.gc()
	t0 := time.Now()
	c := pairedCalls(ctx, inv, large, small, n)
	if g1, err := lf.gc(); err == nil && gerr == nil {
		c.LargeGC = gcWindow(g0, g1, time.Since(t0))
	}
	r.logf("multiplex: %sround trips p50 %.0f vs %.0f µs, p99 %.0f vs %.0f µs", what, c.Large.P50, c.Small.P50, c.Large.P99, c.Small.P99)
	if g := c.LargeGC; g != nil {
		r.logf("multiplex: %sthe large fleet's process meanwhile: %d collections, %.1f of %.1f CPU-seconds collecting, in %.1f s", what, g.GCCycles, g.GCCPUSeconds, g.CPUSeconds, g.Seconds)
	}
	return c
}

// cutter is a multiplexed fleet, which cuts its pooled connections on
// request and answers once every device is back.
type cutter interface {
	cut() (fleetMsg, error)
}

// fillScale fills a row from a fleet's "connected" report and the hub's
// memory before and after.
func fillScale(sr *ScaleRow, rep fleetMsg, hubBefore, hubAfter Mem) {
	sr.Connected, sr.Failed, sr.FirstError = rep.Connected, rep.Failed, rep.FirstError
	sr.ConnectSeconds = round(rep.ConnectSeconds, 3)
	if rep.ConnectSeconds > 0 {
		sr.ConnectPerSec = round(float64(rep.Connected)/rep.ConnectSeconds, 1)
	}
	sr.ConnectP50Ms, sr.ConnectP99Ms = rep.ConnectP50Ms, rep.ConnectP99Ms
	if c := float64(rep.Connected); c > 0 && rep.Before != nil && rep.After != nil {
		sr.DeviceRSSPerDevice = round(float64(rep.After.RSS-rep.Before.RSS)/c, 0)
		sr.DeviceHeapPerDevice = round(float64(rep.After.Heap+rep.After.Stack-rep.Before.Heap-rep.Before.Stack)/c, 0)
		sr.DeviceStackPerDevice = round(float64(rep.After.Stack-rep.Before.Stack)/c, 0)
		sr.GoroutinesPerDevice = round(float64(rep.After.Goroutines-rep.Before.Goroutines)/c, 2)
		sr.HubRSSPerDevice = round(float64(hubAfter.RSS-hubBefore.RSS)/c, 0)
		sr.HubHeapPerDevice = round(float64(hubAfter.Heap+hubAfter.Stack-hubBefore.Heap-hubBefore.Stack)/c, 0)
	}
}

func ids(creds []deviceCred) []string {
	out := make([]string, len(creds))
	for i, c := range creds {
		out[i] = c.id
	}
	return out
}

// pairedCalls makes n calls to random devices of each fleet, alternating,
// one at a time.
func pairedCalls(ctx context.Context, inv caller, large, small []string, n int) *MuxCalls {
	var dl, ds []time.Duration
	var el, es int
	var fl, fs string
	one := func(id string, d *[]time.Duration, errs *int, first *string) {
		t0 := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := inv.call(cctx, id)
		cancel()
		if err != nil {
			*errs++
			if *first == "" {
				*first = id + ": " + err.Error()
			}
			return
		}
		*d = append(*d, time.Since(t0))
	}
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		if i%2 == 0 {
			one(large[rand.N(len(large))], &dl, &el, &fl)
			one(small[rand.N(len(small))], &ds, &es, &fs)
		} else {
			one(small[rand.N(len(small))], &ds, &es, &fs)
			one(large[rand.N(len(large))], &dl, &el, &fl)
		}
	}
	c := &MuxCalls{Large: summarize(dl, el, fl), Small: summarize(ds, es, fs)}
	if c.Small.P50 > 0 && c.Small.P99 > 0 {
		c.P50Ratio = round(c.Large.P50/c.Small.P50, 3)
		c.P99Ratio = round(c.Large.P99/c.Small.P99, 3)
	}
	return c
}

// callEach calls every device once, conc at a time.
func callEach(ctx context.Context, inv caller, devices []string, conc int) (calls, errs int, first string) {
	var mu sync.Mutex
	next := make(chan string)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for id := range next {
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				err := inv.call(cctx, id)
				cancel()
				mu.Lock()
				calls++
				if err != nil {
					errs++
					if first == "" {
						first = id + ": " + err.Error()
					}
				}
				mu.Unlock()
			}
		})
	}
	for _, id := range devices {
		if ctx.Err() != nil {
			break
		}
		next <- id
	}
	close(next)
	wg.Wait()
	return calls, errs, first
}

func (res *MuxResult) row(name string) *ScaleRow {
	for i := range res.Rows {
		if res.Rows[i].Name == name && res.Rows[i].Connected > 0 {
			return &res.Rows[i]
		}
	}
	return nil
}

// muxTargets checks issue 21's multiplexed targets against the run.
func muxTargets(res *MuxResult, want int) []Target {
	var out []Target
	na := func(name, goal, why string) {
		out = append(out, Target{Name: name, Goal: goal, Status: "n/a", Detail: why})
	}
	pool, floor := res.row(ImplGoPool+"/amqp"), res.row(ImplAMQPRawPool+"/amqp")
	{
		name, goal := "devices connected at once through the pool", fmt.Sprintf("%d connected, 0 failed", want)
		if pool != nil {
			out = append(out, Target{Name: name, Goal: goal, Value: float64(pool.Connected), Status: status(pool.Connected >= 100000 && pool.Failed == 0 && pool.Connected == want),
				Detail: fmt.Sprintf("%d of %d in %.1f s = %.0f connects/s, %d failed", pool.Connected, pool.Devices, pool.ConnectSeconds, pool.ConnectPerSec, pool.Failed)})
		} else {
			na(name, goal, "the pooled fleet did not connect")
		}
	}
	{
		name, goal := "RSS per pooled device", "≤ 16 KB RSS per device"
		if pool != nil {
			v := round(pool.DeviceRSSPerDevice/1024, 1)
			t := Target{Name: name, Goal: goal, Value: v, Status: status(v <= 16),
				Detail: fmt.Sprintf("at %d devices; Go heap + stacks %.1f KB, %.2f goroutines per device; the hub %.1f KB RSS per device", pool.Connected, pool.DeviceHeapPerDevice/1024, pool.GoroutinesPerDevice, pool.HubRSSPerDevice/1024)}
			if floor != nil {
				t.Bound = round(floor.DeviceRSSPerDevice/1024, 1)
				t.BoundDetail = fmt.Sprintf("go-amqp alone in the same layout (a session per %d devices, two method links and a goroutine per device) holds %.1f KB RSS (%.1f KB heap + stacks) per device at %d devices; ours is %.2f× that",
					res.PerConn, floor.DeviceRSSPerDevice/1024, floor.DeviceHeapPerDevice/1024, floor.Connected, pool.DeviceRSSPerDevice/floor.DeviceRSSPerDevice)
				t.Status = outOfReach(t.Status, t.Bound > 16)
			}
			out = append(out, t)
		} else {
			na(name, goal, "the pooled fleet did not connect")
		}
	}
	if c := res.Calls; c != nil && c.Small.P50 > 0 {
		fc := res.FloorCalls
		if fc != nil && (fc.Small.P50 <= 0 || fc.Large.Errors+fc.Small.Errors > 0) {
			fc = nil // a floor with errors bounds nothing
		}
		for _, q := range []struct {
			name  string
			ratio float64
			a, b  float64
		}{{"p50", c.P50Ratio, c.Large.P50, c.Small.P50}, {"p99", c.P99Ratio, c.Large.P99, c.Small.P99}} {
			t := Target{Name: "method round trip " + q.name + " at scale", Goal: fmt.Sprintf("%s to random devices of the large fleet ÷ the %d-device fleet ≤ 1.5", q.name, res.smallSize()),
				Value: q.ratio, Status: status(q.ratio <= 1.5 && c.Large.Errors == 0 && c.Small.Errors == 0),
				Detail: fmt.Sprintf("%.0f vs %.0f µs, %d + %d calls alternating, %d + %d errors%s", q.a, q.b, c.Large.Calls, c.Small.Calls, c.Large.Errors, c.Small.Errors, c.LargeGC.text())}
			if fc != nil {
				fa, fb := fc.Large.P50, fc.Small.P50
				t.Bound = fc.P50Ratio
				if q.name == "p99" {
					t.Bound, fa, fb = fc.P99Ratio, fc.Large.P99, fc.Small.P99
				}
				t.BoundDetail = fmt.Sprintf("the same calls to go-amqp alone in the same layout (%d devices ÷ %d, the floor's own fleets): %.0f vs %.0f µs = %.3f%s",
					floorSize(res), res.smallSize(), fa, fb, t.Bound, fc.LargeGC.text())
				t.Status = outOfReach(t.Status, t.Bound > 1.5)
			}
			out = append(out, t)
		}
	} else {
		na("method round trip at scale", "p50 and p99 ≤ 1.5× the small fleet", "no calls measured")
	}
	if rc := res.Recovery; rc != nil {
		name, goal := "recovery after every pooled connection is cut", fmt.Sprintf("every device back, peak dial rate ≤ %.0f/s", rc.DialRate)
		ok := rc.Error == "" && float64(rc.PeakDialRate) <= rc.DialRate+1 && rc.VerifyErrors == 0
		out = append(out, Target{Name: name, Goal: goal, Value: rc.Seconds, Status: status(ok),
			Detail: fmt.Sprintf("%d connections cut; %d devices back in %.1f s; %d dials, peak %d per second; then every device called once: %d calls, %d errors %s",
				rc.CutConns, rc.Connected, rc.Seconds, rc.Dials, rc.PeakDialRate, rc.VerifyCalls, rc.VerifyErrors, rc.Error)})
	} else {
		na("recovery after every pooled connection is cut", "every device back under the dial bound", "not measured (--mux-no-cut)")
	}
	return out
}

// outOfReach marks a missed target whose floor, measured in the same
// run, misses the goal too.
func outOfReach(status string, floorMisses bool) string {
	if status == "missed" && floorMisses {
		return "missed; out of reach"
	}
	return status
}

// text describes the collector's work in the window, for a target's detail.
func (g *GCWindow) text() string {
	if g == nil {
		return ""
	}
	return fmt.Sprintf("; the large fleet's process meanwhile ran %d collections, %.1f of its %.1f CPU-seconds in %.1f s collecting", g.GCCycles, g.GCCPUSeconds, g.CPUSeconds, g.Seconds)
}

func floorSize(res *MuxResult) int {
	if f := res.row(ImplAMQPRawPool + "/amqp"); f != nil {
		return f.Connected
	}
	return 0
}

func (res *MuxResult) smallSize() int {
	for _, r := range res.Rows {
		if strings.Contains(r.Name, "small") {
			return r.Devices
		}
	}
	return 0
}

// WriteTable writes the result for people.
func (res *MuxResult) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "iothub bench --multiplex: %s, %d CPUs, %s; %d identities per connection, at most %.0f dials/s\n\n",
		res.Started, res.Machine.CPUs, res.Machine.GoVersion, res.PerConn, res.DialRate)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "row\tdevices\tconnected\tfailed\tconnect s\tconnects/s\tdevice RSS KB/dev\theap+stacks KB/dev\tgoroutines/dev\thub RSS KB/dev\thub heap KB/dev")
	for _, r := range res.Rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.1f\t%.0f\t%.1f\t%.1f\t%.2f\t%.1f\t%.1f\n", r.Name, r.Devices, r.Connected, r.Failed, r.ConnectSeconds, r.ConnectPerSec,
			r.DeviceRSSPerDevice/1024, r.DeviceHeapPerDevice/1024, r.GoroutinesPerDevice, r.HubRSSPerDevice/1024, r.HubHeapPerDevice/1024)
	}
	tw.Flush()
	if c := res.Calls; c != nil {
		fmt.Fprintf(w, "\nMethod round trips, one at a time, alternating: large fleet p50 %.0f µs p99 %.0f µs (%d calls, %d errors); small fleet p50 %.0f µs p99 %.0f µs (%d calls, %d errors); ratios p50 %.3f, p99 %.3f%s\n",
			c.Large.P50, c.Large.P99, c.Large.Calls, c.Large.Errors, c.Small.P50, c.Small.P99, c.Small.Calls, c.Small.Errors, c.P50Ratio, c.P99Ratio, c.LargeGC.text())
	}
	if c := res.FloorCalls; c != nil {
		fmt.Fprintf(w, "The same to the go-amqp floor's fleets: large p50 %.0f µs p99 %.0f µs (%d calls, %d errors); small p50 %.0f µs p99 %.0f µs (%d calls, %d errors); ratios p50 %.3f, p99 %.3f%s\n",
			c.Large.P50, c.Large.P99, c.Large.Calls, c.Large.Errors, c.Small.P50, c.Small.P99, c.Small.Calls, c.Small.Errors, c.P50Ratio, c.P99Ratio, c.LargeGC.text())
	}
	if rc := res.Recovery; rc != nil {
		fmt.Fprintf(w, "Recovery: %d connections cut; every device connected again after %.1f s; %d dials, peak %d dials/s (bound %.0f); every device called once after: %d calls, %d errors in %.1f s %s\n",
			rc.CutConns, rc.Seconds, rc.Dials, rc.PeakDialRate, rc.DialRate, rc.VerifyCalls, rc.VerifyErrors, rc.VerifySecs, rc.Error)
		fmt.Fprintf(w, "  the fleet's RSS: %.0f MB before the cut, at most %.0f MB while reconnecting; heap + stacks %.0f MB before, %.0f MB after; %d collections, %.1f CPU-seconds collecting\n",
			float64(rc.RSSBefore)/1e6, float64(rc.PeakRSS)/1e6, float64(rc.HeapBefore)/1e6, float64(rc.HeapAfter)/1e6, rc.GCCycles, rc.GCCPUSeconds)
	}
	fmt.Fprintln(w, "\nTargets")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, t := range res.Targets {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Status, t.Name, trimFloat(t.Value), t.Goal, t.Detail)
	}
	tw.Flush()
	for _, t := range res.Targets {
		if t.BoundDetail != "" {
			fmt.Fprintf(w, "  floor of %q: %s: %s\n", t.Name, trimFloat(t.Bound), t.BoundDetail)
		}
	}
	fmt.Fprintln(w, "\nDevices per connection elsewhere")
	for _, l := range res.Limits {
		fmt.Fprintf(w, "  %s\n", l)
	}
	for _, n := range res.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}
