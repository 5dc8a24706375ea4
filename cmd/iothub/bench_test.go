package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/internal/bench"
	"github.com/iothub-go/iothub/internal/transports"
)

// tinyBench is a configuration that runs in about a second: it checks
// that every phase produces its numbers, never what they are.
var tinyBench = []string{
	"--transports", "mqtt", "--devices", "2", "--concurrency", "2",
	"--warmup", "50ms", "--latency-duration", "250ms", "--duration", "250ms",
	"--scale", "3", "--connect-concurrency", "2", "--twin-updates", "20", "--twin-warmup", "3", "--quiet",
}

func TestBenchJSON(t *testing.T) {
	var stdout, stderr bytes.Buffer
	jsonFile := filepath.Join(t.TempDir(), "bench.json")
	args := append([]string{"bench", "--inproc", "--output", "json", "--json", jsonFile}, tinyBench...)
	require.Equal(t, exitOK, run(args, &stdout, &stderr), "exit status; stderr: %s", stderr.String())
	// One document, on one line.
	assert.Equal(t, 1, strings.Count(stdout.String(), "\n"), "stdout lines")
	var res bench.Result
	dec := json.NewDecoder(&stdout)
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&res), "stdout is not a bench result")
	checkResult(t, &res, true)
	// The raw JSON carries the documented field names.
	js, err := res.MarshalIndent()
	require.NoError(t, err)
	for _, key := range []string{`"p50_us"`, `"p99_us"`, `"calls_per_sec"`, `"total_cpu_us_per_call"`,
		`"device_rss_bytes_per_device"`, `"device_heap_bytes_per_device"`, `"connect_seconds"`, `"targets"`,
		`"twins"`, `"device_cpu_us_per_update"`, `"twin_ratios"`, `"twin_pairs"`} {
		assert.Contains(t, string(js), key, "JSON lacks %s", key)
	}
	// --json FILE holds the same result, indented.
	file, err := os.ReadFile(jsonFile)
	require.NoError(t, err)
	assert.Equal(t, string(js)+"\n", string(file), "--json file")
}

func checkResult(t *testing.T, res *bench.Result, inproc bool) {
	t.Helper()
	assert.Equal(t, "iothub-bench/1", res.Schema, "header")
	assert.GreaterOrEqual(t, res.Machine.CPUs, 1, "header: %+v", res.Machine)
	assert.NotEmpty(t, res.Machine.GoVersion, "header: %+v", res.Machine)
	assert.Equal(t, 2, res.Settings.Devices, "settings: %+v", res.Settings)
	assert.Equal(t, 2, res.Settings.Concurrency, "settings: %+v", res.Settings)
	assert.Equal(t, inproc, res.Settings.InProcess, "settings: %+v", res.Settings)
	assert.True(t, res.Settings.TLS, "settings: %+v", res.Settings)
	want := map[string]bool{"go-sdk/mqtt": false, "paho-raw/mqtt": false, "paho-handoff/mqtt": false}
	for _, r := range res.Rows {
		if _, ok := want[r.Name]; !assert.True(t, ok, "unexpected row %q", r.Name) {
			continue
		}
		want[r.Name] = true
		if !assert.Equal(t, "ok", r.Status, "%s: %s", r.Name, r.Reason) {
			continue
		}
		// Shape only: on a loaded machine a 250 ms window may even see no
		// call end.
		if l := r.Latency; assert.NotNil(t, l, "%s latency", r.Name) {
			assert.Zero(t, l.Errors, "%s latency: %+v", r.Name, l)
			assert.GreaterOrEqual(t, l.P99, l.P50, "%s latency: %+v", r.Name, l)
		}
		if tp := r.Throughput; assert.NotNil(t, tp, "%s throughput", r.Name) {
			assert.Zero(t, tp.Errors, "%s throughput: %+v", r.Name, tp)
			assert.Equal(t, 2, tp.Devices, "%s throughput: %+v", r.Name, tp)
			assert.Equal(t, 2, tp.Concurrency, "%s throughput: %+v", r.Name, tp)
			assert.NotNil(t, tp.Latency, "%s throughput: %+v", r.Name, tp)
			assert.Positive(t, tp.Seconds, "%s throughput: %+v", r.Name, tp)
		}
	}
	for name, seen := range want {
		assert.True(t, seen, "no row %s", name)
	}
	if assert.Len(t, res.Invokers, 1, "invokers") {
		assert.Equal(t, "go-service", res.Invokers[0].Name, "invokers: %+v", res.Invokers)
		assert.Equal(t, "ok", res.Invokers[0].Status, "invokers: %+v", res.Invokers)
	}
	// This SDK against the raw floor, and the handoff floor against it,
	// all three in one window: both pairs have the same B.
	if assert.Len(t, res.Pairs, 2, "pairs") {
		for i, want := range [][3]string{{"go-sdk/mqtt", "paho-raw/mqtt", "paho-handoff/mqtt"}, {"paho-handoff/mqtt", "paho-raw/mqtt", "go-sdk/mqtt"}} {
			p := res.Pairs[i]
			assert.Equal(t, want[0], p.A, "pairs: %+v", res.Pairs)
			assert.Equal(t, want[1], p.B, "pairs: %+v", res.Pairs)
			assert.Equal(t, []string{want[2]}, p.With, "pairs: %+v", res.Pairs)
			assert.Equal(t, "ok", p.Status, "pairs: %+v", res.Pairs)
			assert.NotNil(t, p.LatA, "pairs: %+v", res.Pairs)
			assert.NotNil(t, p.LatB, "pairs: %+v", res.Pairs)
			// A round each, with device processes of its own; the ratio is
			// the rounds'.
			if assert.Len(t, p.Rounds, res.Settings.Rounds, "pairs: %+v", res.Pairs) && assert.Positive(t, p.Rounds[0].P50B, "pairs: %+v", res.Pairs) {
				assert.InDelta(t, p.Rounds[0].P50A/p.Rounds[0].P50B, p.P50Ratio, 0.001, "pairs: %+v", res.Pairs)
			}
		}
		assert.Equal(t, res.Pairs[0].LatB, res.Pairs[1].LatB, "one window, one raw floor: %+v", res.Pairs)
		if len(res.Pairs[0].Rounds) > 0 && len(res.Pairs[1].Rounds) > 0 {
			assert.Equal(t, res.Pairs[0].Rounds[0].P50B, res.Pairs[1].Rounds[0].P50B, "one window, one raw floor: %+v", res.Pairs)
		}
	}
	// The paired loads: device CPU per call of the SDK and of the handoff
	// floor, each under one load with the raw floor. Fleets in this
	// process have no CPU of their own, so there are none then.
	if inproc {
		assert.Empty(t, res.PairedLoads, "paired loads in process")
	} else if assert.Len(t, res.PairedLoads, 2, "paired loads") {
		for i, want := range [][3]string{{"go-sdk/mqtt", "paho-raw/mqtt", "paho-handoff/mqtt"}, {"paho-handoff/mqtt", "paho-raw/mqtt", "go-sdk/mqtt"}} {
			p := res.PairedLoads[i]
			assert.Equal(t, want[0], p.A, "paired loads: %+v", res.PairedLoads)
			assert.Equal(t, want[1], p.B, "paired loads: %+v", res.PairedLoads)
			assert.Equal(t, []string{want[2]}, p.With, "paired loads: %+v", res.PairedLoads)
			assert.Equal(t, res.PairedLoads[0].CallsB, p.CallsB, "one load, one raw fleet: %+v", res.PairedLoads)
			assert.Equal(t, "ok", p.Status, "paired loads: %+v", res.PairedLoads)
			assert.Positive(t, p.CallsA, "paired loads: %+v", res.PairedLoads)
			assert.Positive(t, p.CallsB, "paired loads: %+v", res.PairedLoads)
			assert.Positive(t, p.CPUPerCallA, "paired loads: %+v", res.PairedLoads)
			assert.Positive(t, p.CPUPerCallB, "paired loads: %+v", res.PairedLoads)
			assert.InDelta(t, p.CPUPerCallA/p.CPUPerCallB, p.Ratio, 0.01, "paired loads: %+v", res.PairedLoads)
		}
	}
	// The end-to-end pair: this SDK at both ends and the floors, taking
	// turns in one window; the target takes its ratio.
	if inproc {
		assert.Empty(t, res.E2EPairs, "end-to-end pairs in process")
	} else if assert.Len(t, res.E2EPairs, 1, "end-to-end pairs") {
		p := res.E2EPairs[0]
		assert.Equal(t, "go-sdk/mqtt", p.A, "end-to-end pair: %+v", p)
		assert.Equal(t, "paho-raw/mqtt", p.B, "end-to-end pair: %+v", p)
		assert.Equal(t, "ok", p.Status, "end-to-end pair: %+v", p)
		assert.Positive(t, p.Slices, "end-to-end pair: %+v", p)
		assert.Positive(t, p.CallsA, "end-to-end pair: %+v", p)
		assert.Positive(t, p.CallsB, "end-to-end pair: %+v", p)
		assert.InDelta(t, p.CallsPerSecA/p.CallsPerSecB, p.Ratio, 0.01, "end-to-end pair: %+v", p)
		i := slices.IndexFunc(res.Targets, func(tg bench.Target) bool { return tg.Name == "end-to-end calls/s vs floor bound (mqtt)" })
		if assert.GreaterOrEqual(t, i, 0, "targets: %+v", res.Targets) {
			assert.Equal(t, p.Ratio, res.Targets[i].Value, "target: %+v", res.Targets[i])
			assert.Contains(t, res.Targets[i].Detail, "taking turns", "target: %+v", res.Targets[i])
		}
	}
	// The invoker floors: the three invokers against the answering server.
	if assert.Len(t, res.Floors, 3, "floors") {
		assert.Equal(t, "go-service", res.Floors[0].Name, "floors: %+v", res.Floors)
		assert.Equal(t, "azcore", res.Floors[1].Name, "floors: %+v", res.Floors)
		assert.Equal(t, "net-http", res.Floors[2].Name, "floors: %+v", res.Floors)
	}
	// The raw responder's row ran its end-to-end floor phase.
	for _, r := range res.Rows {
		if r.Name == "paho-raw/mqtt" && r.Status == "ok" {
			if assert.NotNil(t, r.FloorEndToEnd, "paho-raw/mqtt end-to-end floor") {
				assert.Zero(t, r.FloorEndToEnd.Errors, "end-to-end floor: %+v", r.FloorEndToEnd)
			}
		}
	}
	for _, f := range res.Floors {
		assert.Equal(t, "ok", f.Status, "floor %s: %+v", f.Name, f)
		if assert.NotNil(t, f.Latency, "floor %s: %+v", f.Name, f) {
			assert.Zero(t, f.Latency.Errors, "floor %s: %+v", f.Name, f)
		}
		assert.NotNil(t, f.LoadLatency, "floor %s: %+v", f.Name, f)
	}
	require.Len(t, res.Scale, 2, "scale rows")
	for _, s := range res.Scale {
		assert.Equal(t, 3, s.Devices, "scale %s: %+v", s.Name, s)
		assert.Equal(t, 3, s.Connected, "scale %s: %+v", s.Name, s)
		assert.Zero(t, s.Failed, "scale %s: %+v", s.Name, s)
		assert.Positive(t, s.ConnectSeconds, "scale %s: %+v", s.Name, s)
		assert.Equal(t, inproc, s.InProcess, "scale %s: %+v", s.Name, s)
	}
	checkTwins(t, res, []string{"go-sdk/mqtt", "paho-raw/mqtt"}, inproc)
	assert.NotEmpty(t, res.Targets, "no targets")
	for _, tg := range res.Targets {
		assert.Contains(t, []string{"met", "missed", "n/a"}, tg.Status, "target %q: status", tg.Name)
		assert.NotEmpty(t, tg.Name, "target %+v", tg)
		assert.NotEmpty(t, tg.Goal, "target %+v", tg)
	}
}

// checkTwins checks the reported-property update rows: this SDK's is
// "pending" while its transport carries no twins, and then measured
// like the raw floor's.
func checkTwins(t *testing.T, res *bench.Result, want []string, inproc bool) {
	t.Helper()
	assert.Equal(t, 20, res.Settings.TwinUpdates, "settings: %+v", res.Settings)
	assert.Equal(t, 3, res.Settings.TwinWarmup, "settings: %+v", res.Settings)
	var names []string
	for _, r := range res.Twins {
		names = append(names, r.Name)
	}
	require.Equal(t, want, names, "twin rows")
	_, transport, _ := strings.Cut(want[0], "/")
	tr, err := transports.ByName(transport)
	require.NoError(t, err)
	sdkTwins := tr.TwinSupport() == nil
	for _, r := range res.Twins {
		if r.Impl == bench.ImplGoSDK && !sdkTwins {
			assert.Equal(t, "pending", r.Status, "twin %s: %+v", r.Name, r)
			continue
		}
		if !sdkTwins {
			continue // the hub's side may be missing too
		}
		if !assert.Equal(t, "ok", r.Status, "twin %s: %s", r.Name, r.Reason) {
			continue
		}
		if assert.NotNil(t, r.Latency, "twin %s", r.Name) {
			assert.Equal(t, 20, r.Latency.Calls, "twin %s: %+v", r.Name, r.Latency)
			assert.Zero(t, r.Latency.Errors, "twin %s: %+v", r.Name, r.Latency)
			assert.GreaterOrEqual(t, r.Latency.P99, r.Latency.P50, "twin %s: %+v", r.Name, r.Latency)
			assert.Positive(t, r.Latency.P50, "twin %s: %+v", r.Name, r.Latency)
		}
		assert.Equal(t, inproc, r.InProcess, "twin %s: %+v", r.Name, r)
		assert.Positive(t, r.UpdatesPerSec, "twin %s: %+v", r.Name, r)
		if !inproc {
			// The device's process measured its own CPU.
			assert.Positive(t, r.DeviceCPUPerUpdate, "twin %s: %+v", r.Name, r)
		}
	}
	if sdkTwins && len(want) > 1 {
		if assert.NotEmpty(t, res.TwinRatios, "twin ratios") {
			assert.Equal(t, want[0], res.TwinRatios[0].A, "twin ratios: %+v", res.TwinRatios)
			assert.Positive(t, res.TwinRatios[0].P50Ratio, "twin ratios: %+v", res.TwinRatios)
		}
		// The paired measurement: 20 updates each, alternating.
		if assert.Len(t, res.TwinPairs, 1, "twin pairs") {
			p := res.TwinPairs[0]
			assert.Equal(t, want[0], p.A, "twin pairs: %+v", p)
			assert.Equal(t, want[1], p.B, "twin pairs: %+v", p)
			if assert.Equal(t, "ok", p.Status, "twin pairs: %+v", p) {
				assert.Equal(t, 20, p.LatA.Calls, "twin pairs: %+v", p.LatA)
				assert.Equal(t, 20, p.LatB.Calls, "twin pairs: %+v", p.LatB)
				assert.Positive(t, p.P50Ratio, "twin pairs: %+v", p)
			}
		}
	}
}

func TestBenchTable(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := append(append([]string{"bench", "--inproc", "--floor=false", "--output", "text"}, tinyBench...), "--scale", "")
	require.Equal(t, exitOK, run(args, &stdout, &stderr), "exit status; stderr: %s", stderr.String())
	out := stdout.String()
	for _, want := range []string{"Round trips", "go-sdk/mqtt", "calls/s", "Targets", "device SDK vs raw floor", "Reported-property updates"} {
		assert.Contains(t, out, want, "table")
	}
	assert.NotContains(t, out, "Scale:", "--scale \"\" still printed a scale section")
}

func TestBenchFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--transports", "carrier-pigeon"},
		{"--scale", "10,x"},
		{"--output", "xml"},
		{"--out", "json"}, // renamed --output
		{"--payload", "200000"},
		{"--twins-only", "--no-twins"},
		{"extra"},
	} {
		var stdout, stderr bytes.Buffer
		assert.Equal(t, exitUsage, run(append([]string{"bench"}, args...), &stdout, &stderr), "%v: exit status", args)
	}
	var stdout, stderr bytes.Buffer
	assert.Equal(t, exitOK, run([]string{"bench", "-h"}, &stdout, &stderr), "-h: exit status")
	assert.Contains(t, stderr.String(), "-concurrency", "-h")
}

// --node without a Node folder in reach fails at once, in every mode,
// rather than after a run whose Node rows are all skipped.
func TestBenchNodeWithoutFolder(t *testing.T) {
	t.Chdir(t.TempDir())
	for _, mode := range [][]string{nil, {"--c2d"}, {"--multiplex"}} {
		_, err := parseBenchFlags(append([]string{"--node"}, mode...), io.Discard)
		require.Error(t, err, "%v", mode)
		assert.Contains(t, err.Error(), "--node-dir", "%v", mode)
	}
	c, err := parseBenchFlags([]string{"--node", "--node-dir", "/somewhere"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, "/somewhere", c.NodeDir)
}

// benchHelperEnv makes the test binary serve as a Go fleet or invoker
// process (the roles "iothub bench --fleet" and "--invoker" have outside
// tests).
const benchHelperEnv = "IOTHUB_BENCH_HELPER"

func TestBenchHelperProcess(t *testing.T) {
	var err error
	switch os.Getenv(benchHelperEnv) {
	case "fleet":
		err = bench.RunFleet(os.Stdin, os.Stdout)
	case "invoker":
		err = bench.RunInvoker(os.Stdin, os.Stdout)
	default:
		t.Skip("a child process of TestBenchFleetProcesses")
	}
	require.NoError(t, err)
}

// TestBenchFleetProcesses runs the devices in child processes, as
// "iothub bench" does by default.
func TestBenchFleetProcesses(t *testing.T) {
	cfg := bench.Defaults()
	cfg.Transports = []string{"mqtt"}
	cfg.Devices, cfg.Concurrency, cfg.ConnectConcurrency = 2, 2, 2
	cfg.Warmup, cfg.LatencyDuration, cfg.Duration = 50*time.Millisecond, 250*time.Millisecond, 250*time.Millisecond
	cfg.Scale = []int{3}
	cfg.TwinUpdates, cfg.TwinWarmup = 20, 3
	helper := func(role string) []string {
		return []string{"env", benchHelperEnv + "=" + role, os.Args[0], "-test.run=^TestBenchHelperProcess$"}
	}
	cfg.FleetCommand, cfg.InvokerCommand = helper("fleet"), helper("invoker")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := bench.Run(ctx, cfg)
	require.NoError(t, err)
	checkResult(t, res, false)
	// The invoker ran in a process of its own.
	require.NotEmpty(t, res.Invokers, "invokers")
	g := res.Invokers[0]
	if assert.NotNil(t, g.Throughput, "go-service invoker process: %+v", g) {
		assert.Equal(t, 2, g.Throughput.Devices, "go-service invoker process: %+v", g)
	}
	assert.NotNil(t, g.Latency, "go-service invoker process: %+v", g)
	// The invoker floor's answering server ran in a child process, whose
	// CPU is measured.
	for _, f := range res.Floors {
		if f.CallsPerSec > 0 {
			assert.Positive(t, f.ServerCPUPerCall, "floor %s: no server CPU: %+v", f.Name, f)
		}
	}
	for _, s := range res.Scale {
		// The fleet process reports its own goroutines (the hub's are not
		// in the numbers).
		assert.Positive(t, s.GoroutinesPerDevice, "scale %s: no fleet memory report: %+v", s.Name, s)
	}
}

// TestBenchScaleRounds measures the fleets of the RSS target again with
// --rounds: this SDK's and the raw floor's, in fleet processes, and their
// rows carry the medians.
func TestBenchScaleRounds(t *testing.T) {
	cfg := bench.Defaults()
	cfg.Transports = []string{"mqtt"}
	cfg.Devices, cfg.Concurrency, cfg.ConnectConcurrency = 2, 2, 2
	cfg.Warmup, cfg.LatencyDuration, cfg.Duration = 50*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond
	cfg.Scale, cfg.Rounds = []int{3}, 3
	cfg.NoTwins, cfg.NoPairs, cfg.NoFloors = true, true, true
	cfg.FleetCommand = []string{"env", benchHelperEnv + "=fleet", os.Args[0], "-test.run=^TestBenchHelperProcess$"}
	cfg.DeviceMemProfile = filepath.Join(t.TempDir(), "mem")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := bench.Run(ctx, cfg)
	require.NoError(t, err)
	repeated := 0
	for _, s := range res.Scale {
		if s.Name != "go-sdk/mqtt" && s.Name != "paho-raw/mqtt" {
			assert.Empty(t, s.RSSRounds, "scale %s measured once: %+v", s.Name, s)
			continue
		}
		repeated++
		if assert.Len(t, s.RSSRounds, 3, "scale %s: %+v", s.Name, s) && assert.Len(t, s.HeapRounds, 3, "scale %s: %+v", s.Name, s) {
			rss, heap := slices.Sorted(slices.Values(s.RSSRounds)), slices.Sorted(slices.Values(s.HeapRounds))
			assert.InDelta(t, rss[1], s.DeviceRSSPerDevice, 0.5, "scale %s: the median of its rounds: %+v", s.Name, s)
			assert.InDelta(t, heap[1], s.DeviceHeapPerDevice, 0.5, "scale %s: the median of its rounds: %+v", s.Name, s)
		}
	}
	assert.Equal(t, 2, repeated, "scale rows of the RSS target: %+v", res.Scale)
	// --device-memprofile: each scale fleet wrote its heap profile once
	// connected, and a text copy that ends with the runtime's MemStats.
	for _, row := range []string{"go-sdk-mqtt", "paho-raw-mqtt"} {
		prefix := cfg.DeviceMemProfile + ".scale-" + row + "-3.pprof"
		if fi, err := os.Stat(prefix); assert.NoError(t, err, "heap profile") {
			assert.Positive(t, fi.Size(), "heap profile %s", prefix)
		}
		if text, err := os.ReadFile(prefix + ".txt"); assert.NoError(t, err, "heap profile as text") {
			assert.Contains(t, string(text), "# HeapInuse = ", "heap profile as text %s", prefix)
		}
		if text, err := os.ReadFile(prefix + ".classes.txt"); assert.NoError(t, err, "heap size classes") {
			assert.Regexp(t, `(?m)^ +all +[0-9.]+ +[0-9.]+ +[0-9.]+ *$`, string(text), "heap size classes %s", prefix)
		}
	}
	i := slices.IndexFunc(res.Targets, func(tg bench.Target) bool { return tg.Name == "device SDK vs raw floor: RSS per device (mqtt)" })
	if assert.GreaterOrEqual(t, i, 0, "targets: %+v", res.Targets) {
		assert.Contains(t, res.Targets[i].Detail, "medians of 3 rounds, alternating", "target: %+v", res.Targets[i])
	}
}

// TestBenchAMQPFloor measures the raw go-amqp responder and its handoff
// variant next to the SDK over AMQP, and pairs each with the raw one.
func TestBenchAMQPFloor(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := append([]string{"bench", "--inproc", "--output", "json"}, tinyBench...)
	args = append(args, "--transports", "amqp", "--scale", "", "--no-floors")
	require.Equal(t, exitOK, run(args, &stdout, &stderr), "exit status; stderr: %s", stderr.String())
	var res bench.Result
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &res))
	var names []string
	for _, r := range res.Rows {
		names = append(names, r.Name)
		assert.Equal(t, "ok", r.Status, "%s: %s", r.Name, r.Reason)
		if assert.NotNil(t, r.Throughput, "%s throughput", r.Name) {
			assert.Zero(t, r.Throughput.Errors, "%s throughput: %+v", r.Name, r.Throughput)
		}
	}
	assert.Equal(t, []string{"go-sdk/amqp", "amqp-raw/amqp", "amqp-handoff/amqp"}, names, "rows")
	checkTwins(t, &res, []string{"go-sdk/amqp", "amqp-raw/amqp"}, true)
	if assert.Len(t, res.Pairs, 2, "pairs") {
		for i, a := range []string{"go-sdk/amqp", "amqp-handoff/amqp"} {
			assert.Equal(t, a, res.Pairs[i].A, "pairs: %+v", res.Pairs)
			assert.Equal(t, "amqp-raw/amqp", res.Pairs[i].B, "pairs: %+v", res.Pairs)
			assert.Equal(t, "ok", res.Pairs[i].Status, "pairs: %+v", res.Pairs)
		}
	}
}

// TestBenchTwinsOnly measures the reported-property update rows alone.
func TestBenchTwinsOnly(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := append(append([]string{"bench", "--inproc", "--output", "text"}, tinyBench...), "--twins-only")
	require.Equal(t, exitOK, run(args, &stdout, &stderr), "exit status; stderr: %s", stderr.String())
	out := stdout.String()
	assert.Contains(t, out, "Reported-property updates", "table")
	assert.Contains(t, out, "go-sdk/mqtt", "table")
	for _, absent := range []string{"Round trips", "Invoker floor", "Paired latency", "Scale:", "Targets"} {
		assert.NotContains(t, out, absent, "--twins-only table:\n%s", out)
	}
}
