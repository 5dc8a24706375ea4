package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/iothub-go/iothub/internal/bench"
)

// tinyBench is a configuration that runs in about a second: it checks
// that every phase produces its numbers, never what they are.
var tinyBench = []string{
	"--transports", "mqtt", "--devices", "2", "--concurrency", "2",
	"--warmup", "50ms", "--latency-duration", "250ms", "--duration", "250ms",
	"--scale", "3", "--connect-concurrency", "2", "--quiet",
}

func TestBenchJSON(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := append([]string{"bench", "--inproc", "--out", "json"}, tinyBench...)
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d\nstderr: %s", code, stderr.String())
	}
	var res bench.Result
	dec := json.NewDecoder(&stdout)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&res); err != nil {
		t.Fatalf("stdout is not a bench result: %v", err)
	}
	checkResult(t, &res, true)
	// The raw JSON carries the documented field names.
	js, _ := res.MarshalIndent()
	for _, key := range []string{`"p50_us"`, `"p99_us"`, `"calls_per_sec"`, `"total_cpu_us_per_call"`,
		`"device_rss_bytes_per_device"`, `"device_heap_bytes_per_device"`, `"connect_seconds"`, `"targets"`} {
		if !bytes.Contains(js, []byte(key)) {
			t.Errorf("JSON lacks %s", key)
		}
	}
}

func checkResult(t *testing.T, res *bench.Result, inproc bool) {
	t.Helper()
	if res.Schema != "iothub-bench/1" || res.Machine.CPUs < 1 || res.Machine.GoVersion == "" {
		t.Errorf("header: %+v %+v", res.Schema, res.Machine)
	}
	if res.Settings.Devices != 2 || res.Settings.Concurrency != 2 || res.Settings.InProcess != inproc || !res.Settings.TLS {
		t.Errorf("settings: %+v", res.Settings)
	}
	want := map[string]bool{"go-sdk/mqtt": false, "paho-raw/mqtt": false}
	for _, r := range res.Rows {
		if _, ok := want[r.Name]; !ok {
			t.Errorf("unexpected row %q", r.Name)
			continue
		}
		want[r.Name] = true
		if r.Status != "ok" {
			t.Errorf("%s: %s: %s", r.Name, r.Status, r.Reason)
			continue
		}
		// Shape only: on a loaded machine a 250 ms window may even see no
		// call end.
		if l := r.Latency; l == nil || l.Errors != 0 || l.P99 < l.P50 {
			t.Errorf("%s latency: %+v", r.Name, l)
		}
		if tp := r.Throughput; tp == nil || tp.Errors != 0 || tp.Devices != 2 || tp.Concurrency != 2 || tp.Latency == nil || tp.Seconds <= 0 {
			t.Errorf("%s throughput: %+v", r.Name, tp)
		}
	}
	for name, seen := range want {
		if !seen {
			t.Errorf("no row %s", name)
		}
	}
	if len(res.Invokers) != 1 || res.Invokers[0].Name != "go-service" || res.Invokers[0].Status != "ok" {
		t.Errorf("invokers: %+v", res.Invokers)
	}
	if len(res.Pairs) != 1 || res.Pairs[0].A != "go-sdk/mqtt" || res.Pairs[0].B != "paho-raw/mqtt" ||
		res.Pairs[0].Status != "ok" || res.Pairs[0].LatA == nil || res.Pairs[0].LatB == nil {
		t.Errorf("pairs: %+v", res.Pairs)
	}
	// The invoker floor: both invokers against the answering server.
	if len(res.Floors) != 2 || res.Floors[0].Name != "go-service" || res.Floors[1].Name != "net-http" {
		t.Errorf("floors: %+v", res.Floors)
	}
	for _, f := range res.Floors {
		if f.Status != "ok" || f.Latency == nil || f.Latency.Errors != 0 || f.LoadLatency == nil {
			t.Errorf("floor %s: %+v", f.Name, f)
		}
	}
	if len(res.Scale) != 2 {
		t.Fatalf("scale rows: %+v", res.Scale)
	}
	for _, s := range res.Scale {
		if s.Devices != 3 || s.Connected != 3 || s.Failed != 0 || s.ConnectSeconds <= 0 || s.InProcess != inproc {
			t.Errorf("scale %s: %+v", s.Name, s)
		}
	}
	if len(res.Targets) == 0 {
		t.Error("no targets")
	}
	for _, tg := range res.Targets {
		switch tg.Status {
		case "met", "missed", "n/a":
		default:
			t.Errorf("target %q: status %q", tg.Name, tg.Status)
		}
		if tg.Name == "" || tg.Goal == "" {
			t.Errorf("target %+v", tg)
		}
	}
}

func TestBenchTable(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := append(append([]string{"bench", "--inproc", "--floor=false"}, tinyBench...), "--scale", "")
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d\nstderr: %s", code, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"Round trips", "go-sdk/mqtt", "calls/s", "Targets", "device SDK overhead"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "Scale:") {
		t.Errorf("--scale \"\" still printed a scale section:\n%s", out)
	}
}

func TestBenchFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--transports", "carrier-pigeon"},
		{"--scale", "10,x"},
		{"--out", "xml"},
		{"--payload", "200000"},
		{"extra"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(append([]string{"bench"}, args...), &stdout, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"bench", "-h"}, &stdout, &stderr); code != 0 || !strings.Contains(stderr.String(), "-concurrency") {
		t.Errorf("-h: exit %d\n%s", code, stderr.String())
	}
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
	if err != nil {
		t.Fatal(err)
	}
}

// TestBenchFleetProcesses runs the devices in child processes, as
// "iothub bench" does by default.
func TestBenchFleetProcesses(t *testing.T) {
	cfg := bench.Defaults()
	cfg.Transports = []string{"mqtt"}
	cfg.Devices, cfg.Concurrency, cfg.ConnectConcurrency = 2, 2, 2
	cfg.Warmup, cfg.LatencyDuration, cfg.Duration = 50*time.Millisecond, 250*time.Millisecond, 250*time.Millisecond
	cfg.Scale = []int{3}
	helper := func(role string) []string {
		return []string{"env", benchHelperEnv + "=" + role, os.Args[0], "-test.run=^TestBenchHelperProcess$"}
	}
	cfg.FleetCommand, cfg.InvokerCommand = helper("fleet"), helper("invoker")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := bench.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, false)
	// The invoker ran in a process of its own.
	if g := res.Invokers[0]; g.Throughput == nil || g.Latency == nil || g.Throughput.Devices != 2 {
		t.Errorf("go-service invoker process: %+v", g)
	}
	// The invoker floor's answering server ran in a child process, whose
	// CPU is measured.
	for _, f := range res.Floors {
		if f.CallsPerSec > 0 && f.ServerCPUPerCall <= 0 {
			t.Errorf("floor %s: no server CPU: %+v", f.Name, f)
		}
	}
	for _, s := range res.Scale {
		// The fleet process reports its own goroutines (the hub's are not
		// in the numbers).
		if s.GoroutinesPerDevice <= 0 {
			t.Errorf("scale %s: no fleet memory report: %+v", s.Name, s)
		}
	}
}

// TestBenchAMQPFloor measures the raw go-amqp responder next to the SDK
// over AMQP, and pairs them.
func TestBenchAMQPFloor(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := append([]string{"bench", "--inproc", "--out", "json"}, tinyBench...)
	args = append(args, "--transports", "amqp", "--scale", "", "--no-floors")
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d\nstderr: %s", code, stderr.String())
	}
	var res bench.Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range res.Rows {
		names = append(names, r.Name)
		if r.Status != "ok" || r.Throughput == nil || r.Throughput.Errors != 0 {
			t.Errorf("%s: %s %s %+v", r.Name, r.Status, r.Reason, r.Throughput)
		}
	}
	if strings.Join(names, ",") != "go-sdk/amqp,amqp-raw/amqp" {
		t.Errorf("rows %v", names)
	}
	if len(res.Pairs) != 1 || res.Pairs[0].B != "amqp-raw/amqp" || res.Pairs[0].Status != "ok" {
		t.Errorf("pairs: %+v", res.Pairs)
	}
}
