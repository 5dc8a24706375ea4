package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"

	"github.com/iothub-go/iothub/internal/bench"
)

// benchConfig is the parsed command line of "iothub bench".
type benchConfig struct {
	bench.Config
	output     output
	jsonFile   string
	cpuProfile string
	fleet      bool // serve the fleet protocol on stdin/stdout (internal)
	invoker    bool // serve one invoker phase on stdin/stdout (internal)
	quiet      bool
	query      bool // the query benchmark (bench.RunQuery) instead
	queryCfg   bench.QueryConfig
	jobs       bool // the jobs benchmark (bench.RunJobs) instead
	jobsCfg    bench.JobsConfig
	c2d        bool // the cloud-to-device benchmark (bench.RunC2D) instead
	c2dCfg     bench.C2DConfig
	c2dDevice  bool // serve one c2d device on stdin/stdout (internal)
	mux        bool // the multiplexed benchmark (bench.RunMux) instead
	muxCfg     bench.MuxConfig
}

type listFlag struct{ p *[]string }

func (l listFlag) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l listFlag) Set(v string) error {
	*l.p = nil
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l.p = append(*l.p, s)
		}
	}
	return nil
}

type intsFlag struct{ p *[]int }

func (f intsFlag) String() string {
	if f.p == nil {
		return ""
	}
	s := make([]string, len(*f.p))
	for i, n := range *f.p {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func (f intsFlag) Set(v string) error {
	*f.p = []int{}
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return errors.New("want a comma-separated list of positive numbers")
		}
		*f.p = append(*f.p, n)
	}
	return nil
}

func parseBenchFlags(args []string, stderr io.Writer) (*benchConfig, error) {
	c := benchConfig{Config: bench.Defaults()}
	fs := flag.NewFlagSet("iothub bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: iothub bench [flags]

Runs a local hub in this process and measures direct method calls through
it, per device transport: round-trip latency (p50/p90/p99, one call at a
time), throughput with many devices and calls in flight, CPU time per
call, and the connect time and memory per device of growing fleets.
Baselines run in the same hub, with the same invoker: minimal raw paho
and go-amqp responders (the device floors), the same responders answering
off the library's delivery goroutine as a client that never goes deaf
must (the handoff floors, paho-handoff and amqp-handoff), and with --node
the official Node device SDK and the official Node service client. The
invoker floors measure this SDK's service client, a bare azcore pipeline
and a bare net/http client against an HTTPS server that answers at once;
the raw responders' rows over mqtt and amqp run their throughput phase
again with the bare azcore invoker (the end-to-end floor, through the same hub). Each
device fleet (and, for the service-client comparison, each invoker) runs
in a child process; latency ratios come from paired runs, calls
alternating between one device of each kind (this SDK, the handoff floor
and the raw floor of a transport share one window), and the CPU ratios
from paired loads, a fleet of each under one load. With --rounds, the
scale fleets of the RSS target (this SDK's and the raw floor's, at their
largest common size) are measured that many times, alternating, and the
target takes the medians. The twin rows time a
device's reported-property updates, one at a time, each awaiting the
hub's answer: this SDK's UpdateReportedProperties against the raw paho
and go-amqp floors and, with --node, the Node SDK's
twin.properties.reported.update. See BENCHMARKS.md.

The targets are ratios to floors and peers measured in the same run, per
device transport (mqtt, amqp): this SDK's device client against its raw
floor (p50 ≤ 1.05×, device CPU per call ≤ 1×, RSS per device ≤ 1.05×)
and, with --node, against the Node device SDK (device CPU per call
≤ 0.5×, RSS per device ≤ 0.5×, connects/s ≥ 5×, from the scale series at
a common fleet size); this SDK's service client against the Node one
(CPU per call ≤ 0.5×, each in its own process, and with --node both
at once with the bare azcore invoker, the floor, as a third process, a
third of --concurrency in flight each); and calls/s ≥ 0.9× the
end-to-end floor's (the raw responder answering the bare azcore invoker
through the same hub, measured in the same run). CPU and
memory targets need the fleets in child processes (not --inproc). A
target that a floor puts out of reach is reported with the best value
that floor leaves.

--query runs only the query benchmark: --query-devices twins in the hub,
tagged through the engine, then POST /devices/query paged through with
this SDK's service client (p50/p90 per page, pages of --query-page-sizes),
next to two floors of the same run: the engine evaluating the query
without HTTP, and a GET /twins/{id} round trip.

--jobs runs only the jobs benchmark: --jobs-devices devices of this SDK
connected over --jobs-transport (a fleet process), one method call on
each, as a job (ScheduleDeviceMethod, then WaitJob) and with
InvokeDeviceMethods at the job's device concurrency and at its default:
wall time, calls/s and CPU per call of each (--rounds: medians).

--c2d runs only the cloud-to-device benchmark: per transport of
--c2d-transports, one device completing --c2d-messages messages sent with
this SDK's service.Client.Send (--c2d-concurrency in flight, at most 40
outstanding): messages/s from the first send to the last completion,
p50/p90 send-to-handler latency, CPU per message of this process (hub and
sender) and of the device's process; with --node the official Node
device too (conformance/bench_c2d_device.js), with Go ÷ Node ratios.

--multiplex runs only the multiplexed benchmark (issue 21): --mux-devices
devices of this SDK on one amqp.Pool in a fleet process (--mux-per-conn
identities per AMQP connection, at most --mux-dial-rate new connections
per second), the hub in this process: connects/s and failures, RSS, Go heap
+ stacks and goroutines per device of the device process and the hub's
memory per device; method round trips to random devices of it against a
--mux-small-device pooled fleet (one call at a time, alternating); every
pooled connection cut at once (a fault proxy in the fleet process), the
time until every device is connected again and the peak dial rate, then
every device called once; the floor: go-amqp alone in the same layout at
--mux-floor-devices devices, with the same round trips to it and to a
small go-amqp fleet (the floor of the round-trip ratios); anchors at --mux-anchor-devices devices with
one connection per device: this SDK over AMQP and MQTT, raw go-amqp, and
with --node the Node SDK over AMQP; the Java and .NET limits printed next
to ours. It needs about 20 GB of memory at 100,000 devices; the fleet
processes run with GOGC=400 and GOMEMLIMIT --mux-memory-limit MiB.

--output text (the default) prints tables on stdout; --output json prints
the result as one JSON document, on one line (the schema of --json FILE,
which is indented). An interrupted run prints what it measured, and exits 1.

`+exitCodesHelp+`
flags:
`)
		fs.PrintDefaults()
	}
	fs.Var(listFlag{&c.Transports}, "transports", "this SDK's device `transports` to measure (comma-separated): mqtt, mqtt-ws, amqp, amqp-ws")
	fs.BoolVar(&c.Floor, "floor", c.Floor, "measure the raw responders (the floors): paho on mqtt and mqtt-ws, go-amqp on amqp, and the handoff floors on mqtt and amqp")
	fs.BoolVar(&c.Node, "node", false, "measure the official Node SDKs too (needs node, npm ci in --node-dir, and 127.0.0.1:443 free for the service client)")
	fs.Var(listFlag{&c.NodeTransports}, "node-transports", "`transports` of the Node device baseline")
	fs.StringVar(&c.NodeDir, "node-dir", "", "folder with bench_device.js, bench_invoke.js and node_modules (default: ./conformance, or the one next to the module)")
	fs.StringVar(&c.NodeBin, "node-bin", c.NodeBin, "the node executable")
	fs.IntVar(&c.Devices, "devices", c.Devices, "devices in the throughput fleet")
	fs.IntVar(&c.Concurrency, "concurrency", c.Concurrency, "method calls in flight in the throughput phase")
	fs.IntVar(&c.PayloadSize, "payload", c.PayloadSize, "request payload size in `bytes` (a JSON object; devices echo it)")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "length of each throughput phase")
	fs.DurationVar(&c.LatencyDuration, "latency-duration", c.LatencyDuration, "length of each one-call-at-a-time phase")
	fs.DurationVar(&c.Warmup, "warmup", c.Warmup, "warm-up before every measured phase")
	fs.Var(intsFlag{&c.Scale}, "scale", "fleet `sizes` connected at once, for the Go rows (empty: no scale series)")
	fs.Var(intsFlag{&c.NodeScale}, "node-scale", "fleet `sizes` for the Node rows")
	fs.Var(listFlag{&c.ScaleImpls}, "scale-rows", "limit the scale series to these `rows` or implementations (e.g. go-sdk/mqtt,paho-raw); default all measured rows")
	fs.IntVar(&c.ConnectConcurrency, "connect-concurrency", c.ConnectConcurrency, "devices of a fleet connecting at once")
	fs.IntVar(&c.Rounds, "rounds", c.Rounds, "repeat the latency and throughput rows this many times, interleaved, and report medians; also the scale fleets of the RSS target")
	fs.BoolVar(&c.NoPairs, "no-pairs", false, "skip the paired comparisons: latency (one device of each kind, calls alternating), load (a fleet of each, device CPU per call under one load) and the service clients invoking at once (with --node)")
	fs.BoolVar(&c.NoFloors, "no-floors", false, "skip the invoker floors (the invokers against an HTTPS server that answers at once), the end-to-end floor and the azcore invoker of the paired service clients")
	fs.IntVar(&c.TwinUpdates, "twin-updates", c.TwinUpdates, "reported-property updates measured per twin row, one at a time")
	fs.IntVar(&c.TwinWarmup, "twin-warmup", c.TwinWarmup, "reported-property updates before the measured ones (negative: none)")
	fs.BoolVar(&c.NoTwins, "no-twins", false, "skip the reported-property update rows")
	fs.BoolVar(&c.TwinsOnly, "twins-only", false, "measure only the reported-property update rows (no method rows, floors, pairs or scale)")
	fs.BoolVar(&c.InProcess, "inproc", false, "run the Go device fleets in this process (memory and CPU then include the hub)")
	c.queryCfg = bench.QueryDefaults()
	fs.BoolVar(&c.query, "query", false, "run only the query benchmark (POST /devices/query over --query-devices twins)")
	fs.IntVar(&c.queryCfg.Devices, "query-devices", c.queryCfg.Devices, "devices in the query benchmark's registry")
	fs.Var(intsFlag{&c.queryCfg.PageSizes}, "query-page-sizes", "page `sizes` of the query benchmark (1 to 1000)")
	fs.IntVar(&c.queryCfg.MaxPages, "query-pages", c.queryCfg.MaxPages, "pages timed per query and page size, the first ones (negative: all)")
	c.jobsCfg = bench.JobsDefaults()
	fs.BoolVar(&c.jobs, "jobs", false, "run only the jobs benchmark (a job against InvokeDeviceMethods over --jobs-devices devices)")
	fs.IntVar(&c.jobsCfg.Devices, "jobs-devices", c.jobsCfg.Devices, "devices in the jobs benchmark's fleet")
	fs.StringVar(&c.jobsCfg.Transport, "jobs-transport", c.jobsCfg.Transport, "the `transport` of the jobs benchmark's devices: mqtt, mqtt-ws, amqp, amqp-ws")
	c.c2dCfg = bench.C2DDefaults()
	fs.BoolVar(&c.c2d, "c2d", false, "run only the cloud-to-device benchmark (send → device → complete, messages/s and latency)")
	fs.IntVar(&c.c2dCfg.Messages, "c2d-messages", c.c2dCfg.Messages, "messages per c2d row (measured)")
	fs.IntVar(&c.c2dCfg.Warmup, "c2d-warmup", c.c2dCfg.Warmup, "messages per c2d row before the measured ones")
	fs.Var(listFlag{&c.c2dCfg.Transports}, "c2d-transports", "the c2d device's `transports` (comma-separated): mqtt, mqtt-ws, amqp, amqp-ws")
	fs.IntVar(&c.c2dCfg.Concurrency, "c2d-concurrency", c.c2dCfg.Concurrency, "c2d sends in flight")
	c.muxCfg = bench.MuxDefaults()
	fs.BoolVar(&c.mux, "multiplex", false, "run only the multiplexed benchmark (many devices over a few AMQP connections with amqp.Pool)")
	fs.IntVar(&c.muxCfg.Devices, "mux-devices", c.muxCfg.Devices, "devices in the pooled fleet")
	fs.IntVar(&c.muxCfg.SmallDevices, "mux-small", c.muxCfg.SmallDevices, "devices in the pooled fleet whose round trips are the baseline")
	fs.IntVar(&c.muxCfg.PerConn, "mux-per-conn", c.muxCfg.PerConn, "identities per pooled connection (0: the pool's default, 995)")
	fs.Float64Var(&c.muxCfg.DialRate, "mux-dial-rate", c.muxCfg.DialRate, "the pool's bound on new connections per second")
	fs.IntVar(&c.muxCfg.ConnectConcurrency, "mux-connect-concurrency", c.muxCfg.ConnectConcurrency, "pooled devices connecting at once")
	fs.IntVar(&c.muxCfg.Calls, "mux-calls", c.muxCfg.Calls, "method round trips to each fleet, alternating")
	fs.BoolVar(&c.muxCfg.NoCut, "mux-no-cut", false, "skip cutting the pooled connections")
	fs.BoolVar(&c.muxCfg.NoVerify, "mux-no-verify", false, "after the recovery, do not call every device once")
	fs.IntVar(&c.muxCfg.MemoryLimitMiB, "mux-memory-limit", 0, "GOMEMLIMIT of the fleet processes, in MiB (0: three quarters of the machine's memory)")
	fs.IntVar(&c.muxCfg.FloorDevices, "mux-floor-devices", c.muxCfg.FloorDevices, "devices of the go-amqp floor fleet (0: --mux-devices; negative: none)")
	fs.IntVar(&c.muxCfg.AnchorDevices, "mux-anchor-devices", c.muxCfg.AnchorDevices, "devices of each one-connection-per-device anchor fleet (0: none)")
	outputFlag(fs, &c.output)
	fs.StringVar(&c.jsonFile, "json", "", "also write the JSON result to this `file`")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (hub and invoker) to `file`")
	fs.StringVar(&c.DeviceCPUProfile, "device-cpuprofile", "", "Go device fleets write CPU profiles to `prefix`.<row>.pprof")
	fs.StringVar(&c.DeviceMemProfile, "device-memprofile", "", "Go device fleets write heap profiles, after each memory sample, to `prefix`.<row>.pprof (scale fleets: <prefix>.scale-<impl>-<transport>-<devices>.pprof), with a text copy (.pprof.txt) and the pages each object size holds per device (.pprof.classes.txt)")
	fs.BoolVar(&c.quiet, "quiet", false, "no progress lines on stderr")
	fs.BoolVar(&c.fleet, "fleet", false, "internal: serve a device fleet on stdin/stdout")
	fs.BoolVar(&c.invoker, "invoker", false, "internal: run one invoker phase from stdin, result on stdout")
	fs.BoolVar(&c.c2dDevice, "c2d-device", false, "internal: serve a c2d device on stdin/stdout")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("iothub: unexpected argument %q", fs.Arg(0))
	}
	if c.fleet || c.invoker || c.c2dDevice {
		return &c, nil
	}
	modes := 0
	for _, m := range []bool{c.query, c.jobs, c.c2d, c.mux} {
		if m {
			modes++
		}
	}
	if modes > 1 {
		return nil, errors.New("iothub: --query, --jobs, --c2d and --multiplex exclude each other")
	}
	if c.mux {
		c.muxCfg.Node, c.muxCfg.NodeBin = c.Node, c.NodeBin
		if c.Node {
			dir, err := nodeDir(c.NodeDir)
			if err != nil {
				return nil, err
			}
			c.muxCfg.NodeDir = dir
		}
		c.muxCfg.InProcess = c.InProcess
		v := c.muxCfg
		v.InProcess = true // the fleet command is found later
		if err := v.Validate(); err != nil {
			return nil, fmt.Errorf("iothub: %w", err)
		}
		return &c, nil
	}
	if c.c2d {
		c.c2dCfg.Rounds, c.c2dCfg.InProcess, c.c2dCfg.Node, c.c2dCfg.NodeBin = c.Rounds, c.InProcess, c.Node, c.NodeBin
		if c.Node {
			dir, err := nodeDir(c.NodeDir)
			if err != nil {
				return nil, err
			}
			c.c2dCfg.NodeDir = dir
		}
		v := c.c2dCfg
		v.InProcess = true // the device command is found later
		if err := v.Validate(); err != nil {
			return nil, fmt.Errorf("iothub: %w", err)
		}
		return &c, nil
	}
	if c.query {
		if err := c.queryCfg.Validate(); err != nil {
			return nil, fmt.Errorf("iothub: %w", err)
		}
		return &c, nil
	}
	if c.jobs {
		c.jobsCfg.Rounds, c.jobsCfg.ConnectConcurrency, c.jobsCfg.PayloadSize = c.Rounds, c.ConnectConcurrency, c.PayloadSize
		c.jobsCfg.InProcess = c.InProcess
		v := c.jobsCfg
		v.InProcess = true // the fleet command is found later
		if err := v.Validate(); err != nil {
			return nil, fmt.Errorf("iothub: %w", err)
		}
		return &c, nil
	}
	if c.Node {
		dir, err := nodeDir(c.NodeDir)
		if err != nil {
			return nil, err
		}
		c.NodeDir = dir
	}
	v := c.Config
	v.InProcess = true // the fleet command is found later
	if err := v.Validate(); err != nil {
		return nil, fmt.Errorf("iothub: %w", err)
	}
	return &c, nil
}

// nodeDir returns the Node folder for --node: given (--node-dir), or the
// repository's conformance folder. Not finding it is an error: a run with
// --node and no Node rows would report every Node target as missing its
// rows, minutes later.
func nodeDir(given string) (string, error) {
	if given != "" {
		return given, nil
	}
	if dir := findNodeDir(); dir != "" {
		return dir, nil
	}
	return "", errors.New("iothub: --node: no conformance folder with bench_device.js here, next to the executable or above the working directory; run from the repository or give --node-dir")
}

// findNodeDir looks for the repository's conformance folder.
func findNodeDir() string {
	cands := []string{"conformance"}
	if exe, err := os.Executable(); err == nil {
		cands = append(cands, filepath.Join(filepath.Dir(exe), "conformance"))
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			cands = append(cands, filepath.Join(d, "conformance"))
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	for _, d := range cands {
		if _, err := os.Stat(filepath.Join(d, "bench_device.js")); err == nil {
			if abs, err := filepath.Abs(d); err == nil {
				return abs
			}
			return d
		}
	}
	return ""
}

// raiseFileLimit lifts RLIMIT_NOFILE so that tens of thousands of sockets
// fit (the hub and a fleet of 10,000 devices in one process hold 20,000).
func raiseFileLimit(want uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Max < want {
		lim.Max = want // allowed for root; otherwise the next line fails
	}
	lim.Cur = max(lim.Cur, min(want, lim.Max))
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		if err2 := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err2 == nil {
			lim.Cur = lim.Max
			_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		}
		return err
	}
	return nil
}

func runBench(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseBenchFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	need := uint64(4096)
	for _, n := range append(append([]int{cfg.Devices}, cfg.Scale...), cfg.NodeScale...) {
		need = max(need, uint64(n)*3+4096)
	}
	if cfg.query || cfg.c2d || cfg.c2dDevice {
		need = 0 // a few connections: nothing to raise
	}
	if cfg.jobs {
		need = max(4096, uint64(cfg.jobsCfg.Devices)*3+4096)
	}
	if cfg.mux {
		need = uint64(cfg.muxCfg.AnchorDevices)*3 + 4096
	}
	if err := raiseFileLimit(need); err != nil && need > 0 && !cfg.quiet && !cfg.fleet && !cfg.invoker {
		var lim syscall.Rlimit
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
		fmt.Fprintf(stderr, "iothub bench: the open-file limit stays at %d (raising it to %d: %v); a process holds one socket per device, and with --inproc two\n", lim.Cur, need, err)
	}
	if cfg.fleet || cfg.invoker || cfg.c2dDevice {
		run := bench.RunFleet
		if cfg.invoker {
			run = bench.RunInvoker
		}
		if cfg.c2dDevice {
			run = bench.RunC2DDevice
		}
		if err := run(os.Stdin, stdout); err != nil {
			fmt.Fprintln(stderr, err)
			return exitFailure
		}
		return exitOK
	}
	if !cfg.InProcess {
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintf(stderr, "iothub bench: cannot find this executable for the fleet processes (use --inproc): %v\n", err)
			return exitFailure
		}
		cfg.FleetCommand = []string{exe, "bench", "--fleet"}
		cfg.InvokerCommand = []string{exe, "bench", "--invoker"}
		cfg.c2dCfg.DeviceCommand = []string{exe, "bench", "--c2d-device"}
	}
	if !cfg.quiet {
		cfg.Progress = stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.query {
		return runQueryBench(ctx, cfg, stdout, stderr)
	}
	if cfg.jobs {
		cfg.jobsCfg.FleetCommand, cfg.jobsCfg.Progress = cfg.FleetCommand, cfg.Progress
		return runJobsBench(ctx, cfg, stdout, stderr)
	}
	if cfg.c2d {
		cfg.c2dCfg.Progress = cfg.Progress
		return runC2DBench(ctx, cfg, stdout, stderr)
	}
	if cfg.mux {
		cfg.muxCfg.FleetCommand, cfg.muxCfg.Progress = cfg.FleetCommand, cfg.Progress
		return runMode(ctx, cfg, stdout, stderr, true, func(ctx context.Context) (modeResult, error) {
			res, err := bench.RunMux(ctx, cfg.muxCfg)
			if res == nil {
				return nil, err
			}
			return res, err
		})
	}
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "iothub bench: %v\n", err)
			return exitFailure
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "iothub bench: %v\n", err)
			return exitFailure
		}
		defer pprof.StopCPUProfile()
	}
	res, err := bench.Run(ctx, cfg.Config)
	if res == nil {
		fmt.Fprintln(stderr, err)
		return exitFailure
	}
	js, jerr := res.MarshalIndent()
	if jerr != nil {
		fmt.Fprintln(stderr, jerr)
		return exitFailure
	}
	if cfg.jsonFile != "" {
		if werr := os.WriteFile(cfg.jsonFile, append(js, '\n'), 0o644); werr != nil {
			fmt.Fprintf(stderr, "iothub bench: %v\n", werr)
			return exitFailure
		}
	}
	if cfg.output == outputJSON {
		if werr := writeJSON(stdout, res); werr != nil {
			fmt.Fprintf(stderr, "iothub bench: %v\n", werr)
			return exitFailure
		}
	} else {
		res.WriteTable(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "iothub bench: interrupted: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// modeResult is the result of a single-purpose bench mode (--query,
// --jobs, --c2d).
type modeResult interface {
	MarshalIndent() ([]byte, error)
	WriteTable(io.Writer)
}

// runQueryBench runs "iothub bench --query".
func runQueryBench(ctx context.Context, cfg *benchConfig, stdout, stderr io.Writer) int {
	if !cfg.quiet {
		cfg.queryCfg.Progress = stderr
	}
	return runMode(ctx, cfg, stdout, stderr, true, func(ctx context.Context) (modeResult, error) {
		res, err := bench.RunQuery(ctx, cfg.queryCfg)
		if res == nil {
			return nil, err
		}
		return res, err
	})
}

// runJobsBench runs "iothub bench --jobs".
func runJobsBench(ctx context.Context, cfg *benchConfig, stdout, stderr io.Writer) int {
	return runMode(ctx, cfg, stdout, stderr, true, func(ctx context.Context) (modeResult, error) {
		res, err := bench.RunJobs(ctx, cfg.jobsCfg)
		if res == nil {
			return nil, err
		}
		return res, err
	})
}

// runC2DBench runs "iothub bench --c2d".
func runC2DBench(ctx context.Context, cfg *benchConfig, stdout, stderr io.Writer) int {
	return runMode(ctx, cfg, stdout, stderr, false, func(ctx context.Context) (modeResult, error) {
		res, err := bench.RunC2D(ctx, cfg.c2dCfg)
		if res == nil {
			return nil, err
		}
		return res, err
	})
}

// runMode runs one single-purpose mode: an optional CPU profile of this
// process (profile), the run, --json FILE, then the result on stdout as
// --output says. A run that failed without a result exits 1; one
// interrupted after a partial result prints it, then exits 1.
func runMode(ctx context.Context, cfg *benchConfig, stdout, stderr io.Writer, profile bool, run func(context.Context) (modeResult, error)) int {
	fail := func(err error) int {
		fmt.Fprintf(stderr, "iothub bench: %v\n", err)
		return exitFailure
	}
	if profile && cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return fail(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fail(err)
		}
		defer pprof.StopCPUProfile()
	}
	res, err := run(ctx)
	if res == nil {
		return fail(err)
	}
	if cfg.jsonFile != "" {
		js, jerr := res.MarshalIndent()
		if jerr == nil {
			jerr = os.WriteFile(cfg.jsonFile, append(js, '\n'), 0o644)
		}
		if jerr != nil {
			return fail(jerr)
		}
	}
	if cfg.output == outputJSON {
		if werr := writeJSON(stdout, res); werr != nil {
			return fail(werr)
		}
	} else {
		res.WriteTable(stdout)
	}
	if err != nil {
		return fail(fmt.Errorf("interrupted: %w", err))
	}
	return exitOK
}
