// Package bench measures direct method calls end to end through the local
// hub: round-trip latency, throughput and CPU per call, and the memory and
// connect time of many connected devices, for this SDK's device client on
// every transport and, in the same run, for the baselines it is compared
// with (minimal responders written directly on paho and on go-amqp, the
// invoker against an HTTPS server that answers at once, the official Node
// device SDK, the official Node service client). It also times a device's
// reported-property updates, one at a time, each awaiting the hub's
// answer (TwinRow), for the same implementations. It is the engine of
// "iothub bench".
//
// The hub and the invoker run in this process; each device population (a
// "fleet") runs in a child process of its own (an "iothub bench --fleet"
// for Go, conformance/bench_device.js for Node), so that CPU and memory
// are measured per side and the same way for every implementation.
package bench

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

// Method is the method name every fleet answers.
const Method = "bench"

// Config is what to measure. Zero fields take the defaults of Defaults.
type Config struct {
	// Transports are this SDK's device transports to measure: mqtt,
	// mqtt-ws, amqp, amqp-ws.
	Transports []string
	// Floor adds the raw responders for the transports among Transports
	// that have one: paho (ImplPahoRaw) for mqtt and mqtt-ws, go-amqp
	// (ImplAMQPRaw) for amqp.
	Floor bool
	// Node adds the official Node SDK baselines: devices over
	// NodeTransports, and the azure-iothub service client as invoker
	// (which needs the hub on 127.0.0.1:443).
	Node           bool
	NodeTransports []string
	// NodeDir holds bench_device.js, bench_invoke.js and node_modules
	// (the repository's conformance folder); NodeBin is node.
	NodeDir string
	NodeBin string
	// Devices is the fleet size of the throughput phase; Concurrency the
	// calls in flight; PayloadSize the bytes of the request payload (a
	// JSON object), which the devices echo.
	Devices     int
	Concurrency int
	PayloadSize int
	// Warmup precedes every measured phase; LatencyDuration is the
	// one-call-at-a-time phase, Duration the throughput phase.
	Warmup          time.Duration
	LatencyDuration time.Duration
	Duration        time.Duration
	// Scale lists fleet sizes connected at once for the Go fleets,
	// NodeScale for the Node fleets; ScaleImpls limits which rows get a
	// scale series (nil: every measured row).
	Scale      []int
	NodeScale  []int
	ScaleImpls []string
	// ConnectConcurrency is how many devices of a fleet connect at once.
	ConnectConcurrency int
	// Rounds repeats the latency and throughput rows (interleaved) and
	// reports the median of each number, which steadies a shared machine.
	// The paired latency comparisons run Rounds rounds of
	// LatencyDuration, each with device processes of its own.
	Rounds int
	// NoPairs skips the paired comparisons: latency (see Pair), of method
	// calls and of twin updates; device CPU under one load (PairedLoad);
	// and the service clients under one load (InvokerPair), so that the
	// service client target reads the invoker rows.
	NoPairs bool
	// NoFloors skips the invoker floor (see FloorRow).
	NoFloors bool
	// TwinUpdates is how many reported-property updates each twin row
	// measures (see TwinRow), after TwinWarmup ones (negative: none).
	// The Node SDK's cost per update keeps falling for the first ~10,000
	// updates of a process (its JIT), hence the long default warm-up.
	// NoTwins skips the twin rows; TwinsOnly measures nothing else.
	TwinUpdates int
	TwinWarmup  int
	NoTwins     bool
	TwinsOnly   bool
	// InProcess runs Go fleets in this process instead of child processes
	// (memory and CPU then include the hub's).
	InProcess bool
	// FleetCommand starts a Go fleet process (e.g. {"/path/iothub",
	// "bench", "--fleet"}); required unless InProcess.
	FleetCommand []string
	// InvokerCommand starts a process that invokes with this SDK's service
	// client (e.g. {"/path/iothub", "bench", "--invoker"}), to compare it
	// with the Node one, each in its own process. Optional.
	InvokerCommand []string
	// DeviceCPUProfile, if set, makes every Go fleet process write a CPU
	// profile to DeviceCPUProfile + "." + row + ".pprof".
	DeviceCPUProfile string
	// DeviceMemProfile, if set, makes every Go fleet process write a heap
	// profile to DeviceMemProfile + "." + row + ".pprof" each time its
	// memory is sampled (after forced collections), so the file holds the
	// last sample: for a scale fleet, all its devices connected. Next to
	// it, a text copy (".txt") and the pages each object size holds
	// (".classes.txt", from a heap dump).
	DeviceMemProfile string
	// HubAddrs are the hub's listen addresses. Default "127.0.0.1:0", plus
	// "127.0.0.1:443" when Node is set.
	HubAddrs []string
	// Progress receives one line per step; nil is silent.
	Progress io.Writer
}

// Defaults returns the default configuration.
func Defaults() Config {
	return Config{
		Transports:         []string{"mqtt", "mqtt-ws", "amqp", "amqp-ws"},
		Floor:              true,
		NodeTransports:     []string{"mqtt", "amqp"},
		NodeBin:            "node",
		Devices:            100,
		Concurrency:        64,
		PayloadSize:        100,
		Warmup:             time.Second,
		LatencyDuration:    5 * time.Second,
		Duration:           10 * time.Second,
		Scale:              []int{100, 1000, 10000},
		NodeScale:          []int{100, 1000},
		ConnectConcurrency: 64,
		Rounds:             1,
		TwinUpdates:        1000,
		TwinWarmup:         10000,
	}
}

// Result is the machine-readable outcome of a run.
type Result struct {
	Schema   string       `json:"schema"`
	Started  time.Time    `json:"started"`
	Seconds  float64      `json:"seconds"`
	Machine  Machine      `json:"machine"`
	Settings Settings     `json:"settings"`
	Rows     []Row        `json:"rows"`
	Invokers []InvokerRow `json:"invokers"`
	// InvokerPairs compare the service clients' CPU per call invoking
	// at once (see InvokerPair), one per round.
	InvokerPairs []InvokerPair `json:"invoker_pairs"`
	Floors       []FloorRow    `json:"floors"`
	Pairs        []Pair        `json:"pairs"`
	// PairedLoads compare device CPU per call under one load (see
	// PairedLoad): this SDK and the handoff floors against the raw floors.
	PairedLoads []PairedLoad `json:"paired_loads"`
	// E2EPairs compare this SDK's end-to-end calls/s with the floors' in
	// one window (see E2EPair).
	E2EPairs []E2EPair  `json:"e2e_pairs"`
	Scale    []ScaleRow `json:"scale"`
	// Twins are the reported-property update rows; TwinRatios compare
	// this SDK's with the floors' and the Node SDK's; TwinPairs compare
	// their latency with updates alternating between two devices.
	Twins      []TwinRow   `json:"twins"`
	TwinRatios []TwinRatio `json:"twin_ratios"`
	TwinPairs  []Pair      `json:"twin_pairs"`
	Targets    []Target    `json:"targets"`
	// Comparisons are further ratios between rows of this run (no goal).
	Comparisons []Comparison `json:"comparisons"`
	Notes       []string     `json:"notes"`
}

// Comparison is a ratio between two measurements of the same run.
type Comparison struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Detail string  `json:"detail"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs        int     `json:"cpus"`
	CPUModel    string  `json:"cpu_model"`
	MemoryBytes int64   `json:"memory_bytes"`
	Kernel      string  `json:"kernel"`
	GoVersion   string  `json:"go_version"`
	NodeVersion string  `json:"node_version,omitempty"`
	LoadBefore  float64 `json:"loadavg1_before"`
	LoadAfter   float64 `json:"loadavg1_after"`
}

// Settings echoes the configuration that shaped the numbers.
type Settings struct {
	Transports         []string `json:"transports"`
	Devices            int      `json:"devices"`
	Concurrency        int      `json:"concurrency"`
	PayloadBytes       int      `json:"payload_bytes"`
	WarmupSeconds      float64  `json:"warmup_seconds"`
	LatencySeconds     float64  `json:"latency_seconds"`
	DurationSeconds    float64  `json:"duration_seconds"`
	Scale              []int    `json:"scale"`
	NodeScale          []int    `json:"node_scale,omitempty"`
	ConnectConcurrency int      `json:"connect_concurrency"`
	Rounds             int      `json:"rounds"`
	TwinUpdates        int      `json:"twin_updates,omitempty"`
	TwinWarmup         int      `json:"twin_warmup,omitempty"`
	InProcess          bool     `json:"in_process"`
	TLS                bool     `json:"tls"`
}

// Row is one device implementation on one transport.
type Row struct {
	Name      string `json:"name"` // impl/transport
	Impl      string `json:"impl"`
	Transport string `json:"transport"`
	// Status is "ok", "pending" (the transport's hub side is not there
	// yet), "skipped" or "failed"; Reason says why when not ok.
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// Latency is one call at a time on one device.
	Latency *Latency `json:"latency,omitempty"`
	// Throughput is many devices, many calls in flight.
	Throughput *Throughput `json:"throughput,omitempty"`
	// FloorEndToEnd is, on a raw responder's row, the same throughput
	// phase with a bare net/http invoker in place of this SDK's service
	// client: the floors end to end, through the same hub. It is what the
	// end-to-end target divides by.
	FloorEndToEnd *Throughput `json:"floor_end_to_end,omitempty"`
	// Rounds holds each round's numbers when there were several; the
	// row's own numbers are then their medians.
	Rounds []Row `json:"rounds,omitempty"`
}

// Throughput is the outcome of a many-calls-in-flight phase.
type Throughput struct {
	Devices     int     `json:"devices"`
	Concurrency int     `json:"concurrency"`
	Seconds     float64 `json:"seconds"`
	Calls       int     `json:"calls"`
	Errors      int     `json:"errors"`
	FirstError  string  `json:"first_error,omitempty"`
	CallsPerSec float64 `json:"calls_per_sec"`
	// Latency is the round trip under that load.
	Latency *Latency `json:"latency"`
	// CPU per successful call, in microseconds: this process (hub and,
	// for the Go invoker, the invoker), the device fleet's process, a
	// separate invoker process (Node service client), and their sum.
	HubCPUPerCall     float64 `json:"hub_cpu_us_per_call"`
	DeviceCPUPerCall  float64 `json:"device_cpu_us_per_call"`
	InvokerCPUPerCall float64 `json:"invoker_cpu_us_per_call,omitempty"`
	TotalCPUPerCall   float64 `json:"total_cpu_us_per_call"`
}

// InvokerRow is one service client invoking the same Go device fleet.
type InvokerRow struct {
	Name       string      `json:"name"`   // go-service, node-service
	Device     string      `json:"device"` // the row whose fleet answered
	Status     string      `json:"status"`
	Reason     string      `json:"reason,omitempty"`
	Latency    *Latency    `json:"latency,omitempty"`
	Throughput *Throughput `json:"throughput,omitempty"`
	Rounds     int         `json:"rounds,omitempty"`
}

// ScaleRow is one fleet size connected at once.
type ScaleRow struct {
	Name       string `json:"name"`
	Impl       string `json:"impl"`
	Transport  string `json:"transport"`
	Devices    int    `json:"devices"`
	Connected  int    `json:"connected"`
	Failed     int    `json:"failed"`
	FirstError string `json:"first_error,omitempty"`
	// ConnectSeconds is the wall time to connect the whole fleet
	// (ConnectConcurrency at a time); ConnectP50Ms/P99Ms are single
	// connects (dial, TLS, authentication, method subscription).
	ConnectSeconds float64 `json:"connect_seconds"`
	ConnectPerSec  float64 `json:"connects_per_sec"`
	ConnectP50Ms   float64 `json:"connect_p50_ms"`
	ConnectP99Ms   float64 `json:"connect_p99_ms"`
	// Memory per connected device in the fleet's process: RSS, and Go
	// heap + goroutine stacks (Node: V8 heap used + external).
	DeviceRSSPerDevice  float64 `json:"device_rss_bytes_per_device"`
	DeviceHeapPerDevice float64 `json:"device_heap_bytes_per_device"`
	// RSSRounds and HeapRounds are the rounds of a fleet measured again
	// (the RSS target's, with --rounds), the first the row's own; the
	// row's DeviceRSSPerDevice and DeviceHeapPerDevice are then their
	// medians.
	RSSRounds  []float64 `json:"device_rss_rounds,omitempty"`
	HeapRounds []float64 `json:"device_heap_rounds,omitempty"`
	// DeviceStackPerDevice is the goroutine-stack part of
	// DeviceHeapPerDevice (Go only).
	DeviceStackPerDevice float64 `json:"device_stack_bytes_per_device,omitempty"`
	GoroutinesPerDevice  float64 `json:"device_goroutines_per_device,omitempty"`
	// Hub-side memory per connection (this process), 0 in process.
	HubRSSPerDevice  float64 `json:"hub_rss_bytes_per_device"`
	HubHeapPerDevice float64 `json:"hub_heap_bytes_per_device"`
	InProcess        bool    `json:"in_process"`
}

// Target is one goal of the issue, checked against this run.
type Target struct {
	Name   string  `json:"name"`
	Goal   string  `json:"goal"`
	Value  float64 `json:"value"`
	Status string  `json:"status"` // met, missed, n/a
	Detail string  `json:"detail"`
	// Bound, when set, is the best value this run's floors leave
	// reachable: what the target would read if the hub and the SDK cost
	// nothing beyond the invoker floor (FloorRow) and, for device costs,
	// the raw paho floor. BoundDetail says how it was computed; a Bound
	// that misses the goal means no hub or device SDK could meet the
	// target with these dependencies on this machine.
	Bound       float64 `json:"bound,omitempty"`
	BoundDetail string  `json:"bound_detail,omitempty"`
}

func (c *Config) fill() {
	d := Defaults()
	if len(c.Transports) == 0 {
		c.Transports = d.Transports
	}
	if len(c.NodeTransports) == 0 {
		c.NodeTransports = d.NodeTransports
	}
	if c.NodeBin == "" {
		c.NodeBin = d.NodeBin
	}
	setInt := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	setInt(&c.Devices, d.Devices)
	setInt(&c.Concurrency, d.Concurrency)
	setInt(&c.PayloadSize, d.PayloadSize)
	setInt(&c.ConnectConcurrency, d.ConnectConcurrency)
	setInt(&c.Rounds, d.Rounds)
	setInt(&c.TwinUpdates, d.TwinUpdates)
	if c.TwinWarmup == 0 {
		c.TwinWarmup = d.TwinWarmup
	}
	setDur := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	setDur(&c.Warmup, d.Warmup)
	setDur(&c.LatencyDuration, d.LatencyDuration)
	setDur(&c.Duration, d.Duration)
	if c.Scale == nil {
		c.Scale = d.Scale
	}
	if c.NodeScale == nil {
		c.NodeScale = d.NodeScale
	}
}

// Validate checks a configuration (after defaults).
func (c *Config) Validate() error {
	c.fill()
	for _, t := range append(slices.Clone(c.Transports), c.NodeTransports...) {
		if _, err := sdkTransport(t); err != nil {
			return err
		}
	}
	if !c.InProcess && len(c.FleetCommand) == 0 {
		return errors.New("bench: FleetCommand is required unless InProcess")
	}
	if c.TwinsOnly && c.NoTwins {
		return errors.New("bench: TwinsOnly and NoTwins exclude each other")
	}
	if c.PayloadSize > 120*1024 {
		return errors.New("bench: the payload must stay under IoT Hub's 128 KB")
	}
	return nil
}

// runner is the state of one run.
type runner struct {
	cfg       Config
	ctx       context.Context
	res       *Result
	h         *hub.Hub
	port      string // the hub's random port: every protocol
	has443    bool
	tlsConf   *tls.Config
	caPEM     string
	caFile    string
	serviceCS string
	payload   []byte
	rowSeq    int
	scaleIDs  []deviceCred
}

type deviceCred struct{ id, key string }

func (r *runner) logf(format string, args ...any) {
	if r.cfg.Progress != nil {
		fmt.Fprintf(r.cfg.Progress, "bench: "+format+"\n", args...)
	}
}

// Run measures what cfg asks for and returns the result. Failures of one
// row are recorded in the row; Run fails only when the hub cannot start.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, ctx: ctx, res: &Result{Schema: "iothub-bench/1", Started: time.Now().UTC()}}
	r.res.Machine = machine(cfg)
	r.res.Settings = Settings{
		Transports: cfg.Transports, Devices: cfg.Devices, Concurrency: cfg.Concurrency, PayloadBytes: 0,
		WarmupSeconds: cfg.Warmup.Seconds(), LatencySeconds: cfg.LatencyDuration.Seconds(), DurationSeconds: cfg.Duration.Seconds(),
		Scale: cfg.Scale, ConnectConcurrency: cfg.ConnectConcurrency, Rounds: cfg.Rounds, InProcess: cfg.InProcess, TLS: true,
	}
	if cfg.Node {
		r.res.Settings.NodeScale = cfg.NodeScale
	}
	if !cfg.NoTwins {
		r.res.Settings.TwinUpdates, r.res.Settings.TwinWarmup = cfg.TwinUpdates, max(cfg.TwinWarmup, 0)
	}
	r.payload = payloadJSON(cfg.PayloadSize)
	r.res.Settings.PayloadBytes = len(r.payload)
	if err := r.startHub(); err != nil {
		return nil, err
	}
	defer r.h.Close()
	if r.caFile != "" {
		defer os.Remove(r.caFile)
	}
	plan := r.rowPlan()
	rounds := make([][]Row, len(plan))
	twinRounds := make([][]TwinRow, len(plan))
	for round := range cfg.Rounds {
		if cfg.Rounds > 1 {
			r.logf("round %d of %d", round+1, cfg.Rounds)
		}
		for i, rs := range plan {
			if ctx.Err() != nil || cfg.TwinsOnly {
				break
			}
			rounds[i] = append(rounds[i], r.runRow(rs))
		}
		if ctx.Err() == nil && !cfg.TwinsOnly {
			r.runFloors()
		}
		// The twin rows, interleaved like the method rows.
		for i, rs := range plan {
			if ctx.Err() != nil || cfg.NoTwins {
				break
			}
			if rs.impl == handoffImpl(rs.transport) {
				continue // the handoff floors answer methods only
			}
			twinRounds[i] = append(twinRounds[i], r.runTwinRow(rs))
		}
	}
	r.res.Floors = medianFloors(r.res.Floors)
	for _, rr := range rounds {
		if len(rr) > 0 {
			r.res.Rows = append(r.res.Rows, medianRow(rr))
		}
	}
	for _, tr := range twinRounds {
		if len(tr) > 0 {
			r.res.Twins = append(r.res.Twins, medianTwinRow(tr))
		}
	}
	r.res.TwinRatios = twinRatios(r.res.Twins)
	if !cfg.NoPairs && !cfg.NoTwins {
		r.runTwinPairs()
	}
	r.res.Invokers = medianInvokers(r.res.Invokers)
	if !cfg.NoPairs && !cfg.TwinsOnly {
		r.runPairs()
	}
	if !cfg.TwinsOnly {
		r.runScale()
		r.res.Targets = targets(r.res)
	}
	r.res.Comparisons = comparisons(r.res)
	r.res.Machine.LoadAfter = loadAvg()
	r.res.Seconds = round(time.Since(r.res.Started).Seconds(), 1)
	return r.res, ctx.Err()
}

type rowSpec struct{ impl, transport string }

// rowPlan interleaves the rows so that what is compared is measured close
// in time: each SDK transport, then its baselines.
func (r *runner) rowPlan() []rowSpec {
	var plan []rowSpec
	for _, t := range r.cfg.Transports {
		plan = append(plan, rowSpec{ImplGoSDK, t})
		if raw := rawImpl(t); r.cfg.Floor && raw != "" {
			plan = append(plan, rowSpec{raw, t})
			if slices.Contains(targetTransports, t) {
				plan = append(plan, rowSpec{handoffImpl(t), t})
			}
		}
		if r.cfg.Node && slices.Contains(r.cfg.NodeTransports, t) {
			plan = append(plan, rowSpec{ImplNodeSDK, t})
		}
	}
	if r.cfg.Node {
		for _, t := range r.cfg.NodeTransports {
			if !slices.Contains(r.cfg.Transports, t) {
				plan = append(plan, rowSpec{ImplNodeSDK, t})
			}
		}
	}
	return plan
}

func (r *runner) startHub() error {
	addrs := r.cfg.HubAddrs
	if len(addrs) == 0 {
		addrs = []string{"127.0.0.1:0"}
		if r.cfg.Node {
			addrs = append(addrs, "127.0.0.1:443")
		}
	}
	h, err := hub.Start(hub.Options{Addrs: addrs})
	if err != nil && r.cfg.Node && len(r.cfg.HubAddrs) == 0 {
		r.res.Notes = append(r.res.Notes, fmt.Sprintf("127.0.0.1:443 unavailable (%v): the Node service client baseline is skipped", err))
		addrs = addrs[:1]
		h, err = hub.Start(hub.Options{Addrs: addrs})
	}
	if err != nil {
		return err
	}
	r.h = h
	for _, a := range h.Addrs() {
		if _, p, _ := net.SplitHostPort(a.String()); p == "443" {
			r.has443 = true
		}
	}
	_, r.port, _ = net.SplitHostPort(h.Addrs()[0].String())
	r.caPEM = string(h.CA.CertPEM())
	r.tlsConf = &tls.Config{RootCAs: h.CA.Pool(), MinVersion: tls.VersionTLS12}
	owner, _ := h.Engine.Policy("iothubowner")
	r.serviceCS = auth.ConnectionString{HostName: h.Engine.HostName(), SharedAccessKeyName: owner.Name,
		SharedAccessKey: owner.PrimaryKey, GatewayHostName: "127.0.0.1:" + r.port}.Reveal()
	if r.cfg.Node {
		f, err := os.CreateTemp("", "iothub-bench-ca-*.pem")
		if err != nil {
			return err
		}
		_, _ = f.Write(h.CA.CertPEM())
		f.Close()
		r.caFile = f.Name()
	}
	r.logf("hub listening on %v", h.Addrs())
	return nil
}

// register adds devices and returns their credentials.
func (r *runner) register(prefix string, n int) ([]deviceCred, error) {
	out := make([]deviceCred, n)
	for i := range out {
		id := fmt.Sprintf("%s-%05d", prefix, i)
		d, herr := r.h.Engine.PutDevice(id, engine.Device{}, "")
		if herr != nil {
			return nil, herr
		}
		out[i] = deviceCred{id: id, key: *d.Authentication.SymmetricKey.PrimaryKey}
	}
	return out, nil
}

// connStrings returns connection strings for impl: Go dials 127.0.0.1
// directly; Node needs "localhost" (its certificate check) and, over
// WebSocket, port 443.
func (r *runner) connStrings(impl, tr string, creds []deviceCred) []string {
	gw := "127.0.0.1:" + r.port
	if impl == ImplNodeSDK {
		gw = "localhost:" + r.port
		if strings.HasSuffix(tr, "-ws") {
			gw = ""
		}
	}
	out := make([]string, len(creds))
	for i, c := range creds {
		out[i] = auth.ConnectionString{HostName: r.h.Engine.HostName(), DeviceID: c.id, SharedAccessKey: c.key, GatewayHostName: gw}.Reveal()
	}
	return out
}

func (r *runner) nodeScript(name string) string { return filepath.Join(r.cfg.NodeDir, name) }

// profiles names the profiles a fleet in a child process writes, when
// the run asks for them (--device-cpuprofile, --device-memprofile): none
// without a tag; a heap profile; and a CPU profile only if cpu.
type profiles struct {
	tag string
	cpu bool
}

// startFleet starts a fleet for impl over tr with the given devices.
func (r *runner) startFleet(impl, tr string, creds []deviceCred, connectTimeout time.Duration, prof profiles) (fleet, error) {
	spec := FleetSpec{
		Impl: impl, Transport: tr, CAPEM: r.caPEM, ConnStrings: r.connStrings(impl, tr, creds), Method: Method,
		ConnectConcurrency: r.cfg.ConnectConcurrency, ConnectTimeoutMs: int(connectTimeout / time.Millisecond),
	}
	// Generous: a fleet connects ConnectConcurrency devices at a time.
	wait := connectTimeout*time.Duration(1+len(creds)/max(r.cfg.ConnectConcurrency, 1)) + time.Minute
	switch {
	case impl == ImplNodeSDK:
		if tr == "mqtt-ws" || tr == "amqp-ws" {
			if !r.has443 {
				return nil, errors.New("the Node SDK dials WebSocket on port 443 only, and 127.0.0.1:443 is not the hub's")
			}
		}
		env := []string{"NODE_EXTRA_CA_CERTS=" + r.caFile}
		return startProcFleet(r.ctx, []string{r.cfg.NodeBin, "--expose-gc", r.nodeScript("bench_device.js")}, env, spec, wait)
	case r.cfg.InProcess:
		return startLocalFleet(r.ctx, spec)
	default:
		if r.cfg.DeviceCPUProfile != "" && prof.tag != "" && prof.cpu {
			spec.CPUProfile = r.cfg.DeviceCPUProfile + "." + prof.tag + ".pprof"
		}
		if r.cfg.DeviceMemProfile != "" && prof.tag != "" {
			spec.MemProfile = r.cfg.DeviceMemProfile + "." + prof.tag + ".pprof"
		}
		return startProcFleet(r.ctx, r.cfg.FleetCommand, nil, spec, wait)
	}
}

// runRow measures one implementation on one transport.
func (r *runner) runRow(rs rowSpec) Row {
	row := Row{Name: rs.impl + "/" + rs.transport, Impl: rs.impl, Transport: rs.transport, Status: "ok"}
	r.rowSeq++
	fail := func(err error) Row {
		row.Status = "failed"
		if strings.HasPrefix(rs.transport, "amqp") {
			row.Status = "pending"
			err = fmt.Errorf("no device round trip over %s yet: %w", rs.transport, err)
		}
		row.Reason = err.Error()
		r.logf("%s: %s: %s", row.Name, row.Status, row.Reason)
		return row
	}
	if rs.impl == ImplNodeSDK && r.cfg.NodeDir == "" {
		row.Status, row.Reason = "skipped", "no Node folder (--node-dir)"
		return row
	}
	creds, err := r.register(fmt.Sprintf("r%d", r.rowSeq), r.cfg.Devices)
	if err != nil {
		return fail(err)
	}
	ids := make([]string, len(creds))
	for i, c := range creds {
		ids[i] = c.id
	}
	r.logf("%s: connecting %d devices", row.Name, len(creds))
	f, err := r.startFleet(rs.impl, rs.transport, creds, 20*time.Second, profiles{strings.ReplaceAll(row.Name, "/", "-"), true})
	if err != nil {
		return fail(err)
	}
	defer f.close()
	rep := f.report()
	if rep.Connected < len(creds) {
		return fail(fmt.Errorf("%d of %d devices did not connect: %s", rep.Failed, len(creds), rep.FirstError))
	}
	inv, err := newGoInvoker(r.serviceCS, r.tlsConf, Method, r.payload, r.cfg.Concurrency)
	if err != nil {
		return fail(err)
	}
	defer inv.close()
	// One round trip must work before anything is measured.
	cctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
	err = inv.call(cctx, ids[0])
	cancel()
	if err != nil {
		return fail(fmt.Errorf("first call: %w", err))
	}
	r.logf("%s: latency, one call at a time, %v", row.Name, r.cfg.LatencyDuration)
	w := runGoPhase(r.ctx, inv, ids[:1], 1, r.cfg.Warmup, r.cfg.LatencyDuration, nil)
	row.Latency = summarize(w.latencies, w.errors, w.firstErr)
	r.logf("%s: throughput, %d devices, %d in flight, %v", row.Name, len(ids), r.cfg.Concurrency, r.cfg.Duration)
	w = runGoPhase(r.ctx, inv, ids, r.cfg.Concurrency, r.cfg.Warmup, r.cfg.Duration, f)
	row.Throughput = throughput(w, len(ids), r.cfg.Concurrency)
	r.logf("%s: p50 %.0f µs, %.0f calls/s", row.Name, row.Latency.P50, row.Throughput.CallsPerSec)
	// Only the transports with an end-to-end target need the phase.
	if rs.impl == rawImpl(rs.transport) && !r.cfg.NoFloors && slices.Contains(targetTransports, rs.transport) {
		row.FloorEndToEnd = r.floorEndToEnd(row.Name, ids, f)
	}
	if rs.impl == ImplGoSDK && rs.transport == "mqtt" {
		r.runInvokers(row, ids, f)
	}
	return row
}

// floorEndToEnd runs the throughput phase again with the floor azcore
// sets for an invoker (the library this SDK's service client is built on):
// with a raw responder's fleet, the floors at both ends of the same hub.
// It returns nil (and logs why) when it cannot.
func (r *runner) floorEndToEnd(name string, ids []string, f fleet) *Throughput {
	inv, closeInv, err := r.newInvoker(FloorAzcore, r.serviceCS)
	if err != nil {
		r.logf("%s: no end-to-end floor: %v", name, err)
		return nil
	}
	defer closeInv()
	r.logf("%s: end-to-end floor, the %s invoker, %d in flight, %v", name, FloorAzcore, r.cfg.Concurrency, r.cfg.Duration)
	w := runGoPhase(r.ctx, inv, ids, r.cfg.Concurrency, r.cfg.Warmup, r.cfg.Duration, f)
	t := throughput(w, len(ids), r.cfg.Concurrency)
	if t.Errors > 0 || t.Calls == 0 {
		r.logf("%s: no end-to-end floor: %d calls, %d errors: %s", name, t.Calls, t.Errors, t.FirstError)
		return nil
	}
	r.logf("%s: end-to-end floor %.0f calls/s", name, t.CallsPerSec)
	return t
}

func throughput(w window, devices, conc int) *Throughput {
	t := &Throughput{Devices: devices, Concurrency: conc, Seconds: w.seconds, Calls: len(w.latencies),
		Errors: w.errors, FirstError: w.firstErr}
	t.Latency = summarize(w.latencies, w.errors, w.firstErr)
	if w.seconds > 0 {
		t.CallsPerSec = round(float64(t.Calls)/w.seconds, 1)
	}
	if t.Calls > 0 {
		n := float64(t.Calls)
		t.HubCPUPerCall = round(w.cpu*1e6/n, 1)
		t.DeviceCPUPerCall = round(w.fleetCPU*1e6/n, 1)
		t.InvokerCPUPerCall = round(w.invokerCPU*1e6/n, 1)
		t.TotalCPUPerCall = round((w.cpu+w.fleetCPU+w.invokerCPU)*1e6/n, 1)
	}
	return t
}

// runInvokers compares the service clients on the go-sdk/mqtt fleet, each
// in a process of its own so that its CPU is measured alone: ours
// ("iothub bench --invoker") and, with Node, the official one. Without an
// InvokerCommand ours is the row's in-process invoker.
func (r *runner) runInvokers(row Row, ids []string, f fleet) {
	goRow := InvokerRow{Name: "go-service", Device: row.Name, Status: "ok"}
	if len(r.cfg.InvokerCommand) == 0 {
		goRow.Latency, goRow.Throughput = row.Latency, row.Throughput
	} else {
		goRow = r.invokerRow(goRow, r.cfg.InvokerCommand, nil, ids, f)
	}
	r.res.Invokers = append(r.res.Invokers, goRow)
	if !r.cfg.Node {
		return
	}
	ir := InvokerRow{Name: "node-service", Device: row.Name, Status: "ok"}
	if !r.has443 {
		ir.Status, ir.Reason = "skipped", "the Node service client calls https://<HostName>:443 only, and 127.0.0.1:443 is not the hub's"
		r.res.Invokers = append(r.res.Invokers, ir)
		return
	}
	owner, _ := r.h.Engine.Policy("iothubowner")
	env := []string{
		"NODE_EXTRA_CA_CERTS=" + r.caFile,
		"SERVICE_CS=" + auth.ConnectionString{HostName: r.h.Engine.HostName(), SharedAccessKeyName: owner.Name, SharedAccessKey: owner.PrimaryKey}.Reveal(),
	}
	nodeArgv := []string{r.cfg.NodeBin, r.nodeScript("bench_invoke.js")}
	ir = r.invokerRow(ir, nodeArgv, env, ids, f)
	r.res.Invokers = append(r.res.Invokers, ir)
	// The pair needs ours in a process of its own too.
	if ir.Status == "ok" && goRow.Status == "ok" && len(r.cfg.InvokerCommand) > 0 && !r.cfg.NoPairs {
		var floor *invokerProc // the floor of a client built on azcore, in the same window
		if !r.cfg.NoFloors {
			floor = &invokerProc{name: FloorAzcore, argv: r.cfg.InvokerCommand, invoker: FloorAzcore}
		}
		r.res.InvokerPairs = append(r.res.InvokerPairs, r.invokerPair(row.Name,
			invokerProc{name: goRow.Name, argv: r.cfg.InvokerCommand}, invokerProc{name: ir.Name, argv: nodeArgv, env: env}, floor, ids))
	}
}

// invokerRow measures one invoker process: one call at a time on the first
// device, then Concurrency calls in flight over all of them.
func (r *runner) invokerRow(ir InvokerRow, argv, env []string, ids []string, f fleet) InvokerRow {
	spec := InvokeSpec{Devices: ids[:1], Method: Method, Payload: r.payload, Concurrency: 1,
		WarmupMs: r.cfg.Warmup.Milliseconds(), DurationMs: r.cfg.LatencyDuration.Milliseconds(),
		ServiceCS: r.serviceCS, CAPEM: r.caPEM}
	r.logf("%s: latency on %s", ir.Name, ir.Device)
	w, err := runInvokerPhase(r.ctx, argv, env, spec, nil)
	if err != nil {
		ir.Status, ir.Reason = "failed", err.Error()
		return ir
	}
	ir.Latency = summarize(w.latencies, w.errors, w.firstErr)
	spec.Devices, spec.Concurrency, spec.DurationMs = ids, r.cfg.Concurrency, r.cfg.Duration.Milliseconds()
	r.logf("%s: throughput on %s", ir.Name, ir.Device)
	w, err = runInvokerPhase(r.ctx, argv, env, spec, f)
	if err != nil {
		ir.Status, ir.Reason = "failed", err.Error()
		return ir
	}
	ir.Throughput = throughput(w, len(ids), r.cfg.Concurrency)
	return ir
}

// runScale connects growing fleets and measures memory and connect time.
func (r *runner) runScale() {
	type series struct {
		impl, transport string
		sizes           []int
	}
	var plan []series
	for _, row := range r.res.Rows {
		if row.Status != "ok" || row.Impl == handoffImpl(row.Transport) { // the handoff floors bound CPU and latency only
			continue
		}
		if len(r.cfg.ScaleImpls) > 0 && !slices.Contains(r.cfg.ScaleImpls, row.Impl) && !slices.Contains(r.cfg.ScaleImpls, row.Name) {
			continue
		}
		sizes := r.cfg.Scale
		if row.Impl == ImplNodeSDK {
			sizes = r.cfg.NodeScale
		}
		if len(sizes) > 0 {
			plan = append(plan, series{row.Impl, row.Transport, sizes})
		}
	}
	for k, s := range plan {
		// Fresh identities per series: the hub keeps the sessions of
		// clean=false clients after they disconnect, and a fleet that
		// took over sessions left by an earlier one would look cheaper.
		creds, err := r.register(fmt.Sprintf("s%d", k), slices.Max(s.sizes))
		if err != nil {
			r.res.Notes = append(r.res.Notes, "scale: "+err.Error())
			return
		}
		r.scaleIDs = creds
		for _, n := range s.sizes {
			if r.ctx.Err() != nil {
				return
			}
			r.res.Scale = append(r.res.Scale, r.scaleOne(s.impl, s.transport, n))
		}
	}
	r.repeatScale()
}

// repeatScale measures the fleets of the RSS-per-device target again,
// with --rounds: per target transport, this SDK's and the raw floor's at
// their largest common size, alternating, Rounds times in all, each time
// with fresh identities. Their rows then carry the median of the rounds.
// One fleet's RSS moves by a few percent from one connect to the next (how
// the collector's cycles fell while it connected), which is as much as
// the target's margin.
func (r *runner) repeatScale() {
	if r.cfg.Rounds < 2 || r.cfg.InProcess {
		return
	}
	for _, t := range targetTransports {
		a, b := r.res.commonScale(ImplGoSDK+"/"+t, rawImpl(t)+"/"+t)
		if a == nil {
			continue
		}
		rows := []*ScaleRow{a, b}
		for _, sr := range rows {
			sr.RSSRounds, sr.HeapRounds = []float64{sr.DeviceRSSPerDevice}, []float64{sr.DeviceHeapPerDevice}
		}
		for k := 1; k < r.cfg.Rounds; k++ {
			for i, sr := range rows {
				if r.ctx.Err() != nil {
					return
				}
				creds, err := r.register(fmt.Sprintf("s%s%d%c", t, k, 'a'+i), sr.Devices)
				if err != nil {
					r.res.Notes = append(r.res.Notes, "scale: "+err.Error())
					return
				}
				r.scaleIDs = creds
				again := r.scaleOne(sr.Impl, sr.Transport, sr.Devices)
				if again.Connected != again.Devices {
					r.res.Notes = append(r.res.Notes, fmt.Sprintf("scale: %s at %d, round %d: %d of %d connected (%s); the rows keep the rounds before it",
						sr.Name, sr.Devices, k+1, again.Connected, again.Devices, again.FirstError))
					return
				}
				sr.RSSRounds = append(sr.RSSRounds, again.DeviceRSSPerDevice)
				sr.HeapRounds = append(sr.HeapRounds, again.DeviceHeapPerDevice)
				sr.DeviceRSSPerDevice = round(median(sr.RSSRounds), 0)
				sr.DeviceHeapPerDevice = round(median(sr.HeapRounds), 0)
			}
		}
	}
}

func (r *runner) scaleOne(impl, tr string, n int) ScaleRow {
	sr := ScaleRow{Name: impl + "/" + tr, Impl: impl, Transport: tr, Devices: n, InProcess: r.cfg.InProcess && impl != ImplNodeSDK}
	r.settle()
	hubBefore := sampleMem()
	r.logf("scale: %s: connecting %d devices", sr.Name, n)
	// A heap profile but no CPU profile: profiling does not slow the
	// connects.
	f, err := r.startFleet(impl, tr, r.scaleIDs[:n], 2*time.Minute, profiles{tag: fmt.Sprintf("scale-%s-%s-%d", impl, tr, n)})
	if err != nil {
		sr.Failed, sr.FirstError = n, err.Error()
		return sr
	}
	rep := f.report()
	hubAfter := sampleMem()
	_ = f.close()
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
		if !sr.InProcess {
			sr.HubRSSPerDevice = round(float64(hubAfter.RSS-hubBefore.RSS)/c, 0)
			sr.HubHeapPerDevice = round(float64(hubAfter.Heap+hubAfter.Stack-hubBefore.Heap-hubBefore.Stack)/c, 0)
		}
	}
	r.logf("scale: %s: %d connected in %.1f s, %.0f B RSS/device, %.0f B heap/device",
		sr.Name, sr.Connected, sr.ConnectSeconds, sr.DeviceRSSPerDevice, sr.DeviceHeapPerDevice)
	return sr
}

// settle waits for the hub to let go of the connections of the previous
// fleet (their goroutines end), so that memory deltas start from rest.
func (r *runner) settle() {
	deadline := time.Now().Add(30 * time.Second)
	prev := -1
	for time.Now().Before(deadline) {
		n := runtime.NumGoroutine()
		if n == prev {
			return
		}
		prev = n
		time.Sleep(300 * time.Millisecond)
	}
}

// payloadJSON returns a JSON object of about size bytes.
func payloadJSON(size int) []byte {
	const frame = `{"data":""}`
	return []byte(`{"data":"` + strings.Repeat("x", max(size-len(frame), 0)) + `"}`)
}

func machine(cfg Config) Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), LoadBefore: loadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		m.MemoryBytes = statusKB(b, "MemTotal:")
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if cfg.Node {
		if out, err := exec.Command(cfg.NodeBin, "--version").Output(); err == nil {
			m.NodeVersion = strings.TrimSpace(string(out))
		}
	}
	return m
}

func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// MarshalIndent is json.MarshalIndent of the result.
func (res *Result) MarshalIndent() ([]byte, error) { return json.MarshalIndent(res, "", "  ") }
