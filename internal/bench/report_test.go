package bench

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// benchRow is a measured row with the numbers the targets read.
func benchRow(name string, p50, callsPerSec, devCPU float64) Row {
	impl, tr, _ := strings.Cut(name, "/")
	return Row{Name: name, Impl: impl, Transport: tr, Status: "ok", Latency: &Latency{P50: p50},
		Throughput: &Throughput{Devices: 100, Concurrency: 64, CallsPerSec: callsPerSec, DeviceCPUPerCall: devCPU, Latency: &Latency{}}}
}

// scaleRow is a fully connected fleet.
func scaleRow(name string, devices int, rssKB, connectsPerSec float64) ScaleRow {
	impl, tr, _ := strings.Cut(name, "/")
	return ScaleRow{Name: name, Impl: impl, Transport: tr, Devices: devices, Connected: devices,
		DeviceRSSPerDevice: rssKB * 1024, ConnectPerSec: connectsPerSec, ConnectSeconds: float64(devices) / connectsPerSec}
}

func invokerRow(name string, cpu float64) InvokerRow {
	return InvokerRow{Name: name, Device: "go-sdk/mqtt", Status: "ok", Latency: &Latency{},
		Throughput: &Throughput{Concurrency: 64, InvokerCPUPerCall: cpu, Latency: &Latency{}}}
}

// withFloorE2E gives a raw responder's row its end-to-end floor phase.
func withFloorE2E(r Row, callsPerSec float64) Row {
	r.FloorEndToEnd = &Throughput{Devices: 100, Concurrency: 64, CallsPerSec: callsPerSec, HubCPUPerCall: 110, DeviceCPUPerCall: 80, Latency: &Latency{}}
	return r
}

// madeUpRun is a run with every row the targets read, in child processes.
func madeUpRun() *Result {
	return &Result{
		Machine:  Machine{CPUs: 2},
		Settings: Settings{ConnectConcurrency: 64},
		Rows: []Row{
			benchRow("go-sdk/mqtt", 400, 5000, 100),
			withFloorE2E(benchRow("paho-raw/mqtt", 380, 5200, 80), 5500),
			benchRow("paho-handoff/mqtt", 390, 5100, 90),
			benchRow("node-sdk/mqtt", 600, 4000, 300),
			benchRow("go-sdk/amqp", 500, 3000, 150),
			withFloorE2E(benchRow("amqp-raw/amqp", 450, 3500, 160), 3200),
			benchRow("amqp-handoff/amqp", 470, 3400, 170),
			benchRow("node-sdk/amqp", 900, 2000, 250),
		},
		Pairs: []Pair{
			// The targets take the medians of the rounds' ratios, not the
			// ratio of the pooled p50s (430 ÷ 400).
			{A: "go-sdk/mqtt", B: "paho-raw/mqtt", With: []string{"paho-handoff/mqtt"}, Status: "ok", LatA: &Latency{P50: 430}, LatB: &Latency{P50: 400}, P50Ratio: 1.05,
				Rounds: []PairRound{{P50A: 420, P50B: 400}, {P50A: 440, P50B: 400}, {P50A: 400, P50B: 400}}},
			{A: "paho-handoff/mqtt", B: "paho-raw/mqtt", With: []string{"go-sdk/mqtt"}, Status: "ok", LatA: &Latency{P50: 410}, LatB: &Latency{P50: 400}, P50Ratio: 1.025,
				Rounds: []PairRound{{P50A: 410, P50B: 400}, {P50A: 400, P50B: 400}, {P50A: 420, P50B: 400}}},
		},
		Invokers: []InvokerRow{
			invokerRow("go-service", 60),
			invokerRow("node-service", 150),
		},
		Floors: []FloorRow{
			{Name: FloorGoService, Status: "ok", Latency: &Latency{P50: 240}, LoadLatency: &Latency{}, InvokerCPUPerCall: 120, ServerCPUPerCall: 50},
			{Name: FloorNetHTTP, Status: "ok", Latency: &Latency{P50: 200}, LoadLatency: &Latency{}, InvokerCPUPerCall: 90, ServerCPUPerCall: 50},
		},
		Scale: []ScaleRow{
			scaleRow("go-sdk/mqtt", 1000, 60, 2000),
			scaleRow("go-sdk/mqtt", 10000, 55, 1800),
			scaleRow("paho-raw/mqtt", 1000, 50, 2500),
			scaleRow("paho-raw/mqtt", 10000, 50, 2400),
			scaleRow("node-sdk/mqtt", 1000, 150, 300),
			scaleRow("go-sdk/amqp", 1000, 130, 1000),
			scaleRow("amqp-raw/amqp", 1000, 120, 1100),
		},
	}
}

func targetsByName(res *Result) map[string]Target {
	got := map[string]Target{}
	for _, tg := range targets(res) {
		got[tg.Name] = tg
	}
	return got
}

// TestTargets checks every target's value, status and floor bound on a
// made-up run.
func TestTargets(t *testing.T) {
	res := madeUpRun()
	got := targetsByName(res)
	for _, c := range []struct {
		name   string
		value  float64
		status string
		bound  float64
	}{
		// Paired 420/400 µs, not the rows' 400/380; the handoff floor's
		// pair 410/400.
		{"device SDK vs raw floor: p50 (mqtt)", 1.05, "met", 1.025},
		// 100/80 µs; the handoff floor 90/80.
		{"device SDK vs raw floor: CPU per call (mqtt)", 1.25, "missed", 1.125},
		// At the largest common fleet, 10,000: 55/50 KB.
		{"device SDK vs raw floor: RSS per device (mqtt)", 1.1, "missed", 0},
		// No pair: the rows, 500/450 µs; the handoff floor's row 470.
		{"device SDK vs raw floor: p50 (amqp)", 1.111, "missed", 1.044},
		// 150/160 µs; the handoff floor 170/160.
		{"device SDK vs raw floor: CPU per call (amqp)", 0.938, "met", 1.063},
		{"device SDK vs raw floor: RSS per device (amqp)", 1.083, "missed", 0},
		// 100/300 µs; the handoff responder 90/300 (raw paho alone 80/300).
		{"device SDK vs Node: CPU per call (mqtt)", 0.333, "met", 0.3},
		// At 1,000, the largest size Node has: 60/150 KB; paho 50/150.
		{"device SDK vs Node: RSS per device (mqtt)", 0.4, "met", 0.333},
		// 2000/300 connects/s; no bound (paho's 2500/s is in the detail).
		{"device SDK vs Node: connects/s (mqtt)", 6.667, "met", 0},
		// 150/250 µs, and the handoff responder is 170/250 (raw go-amqp
		// alone 160/250): the floor blocks it.
		{"device SDK vs Node: CPU per call (amqp)", 0.6, "missed", 0.68},
		// 60/150 µs; bare net/http 90/150.
		{"service client vs Node: CPU per call", 0.4, "met", 0.6},
		// 5000 of the floors' 5500 calls/s through the same hub.
		{"end-to-end calls/s vs floor bound (mqtt)", 0.909, "met", 0},
		// 3000 of 3200.
		{"end-to-end calls/s vs floor bound (amqp)", 0.938, "met", 0},
	} {
		tg, ok := got[c.name]
		if !assert.True(t, ok, "no target %q", c.name) {
			continue
		}
		assert.Equal(t, c.value, tg.Value, "%s: value", c.name)
		assert.Equal(t, c.status, tg.Status, "%s: status", c.name)
		assert.Equal(t, c.bound, tg.Bound, "%s: bound", c.name)
		assert.Equal(t, c.bound != 0, tg.BoundDetail != "", "%s: bound detail %q with bound %v", c.name, tg.BoundDetail, c.bound)
		assert.NotEmpty(t, tg.Goal, "%s: goal", c.name)
		assert.NotEmpty(t, tg.Detail, "%s: detail", c.name)
	}
	// Node has no AMQP fleets in the scale series.
	for _, name := range []string{"device SDK vs Node: RSS per device (amqp)", "device SDK vs Node: connects/s (amqp)"} {
		assert.Equal(t, "n/a", got[name].Status, "%s: %+v", name, got[name])
		assert.Contains(t, got[name].Detail, "--node-scale", "%s", name)
	}
	e2e := got["end-to-end calls/s vs floor bound (mqtt)"].Detail
	assert.Contains(t, e2e, "5000 of 5500 calls/s", "end-to-end detail")
	// What the CPUs would allow with no hub: 2 CPUs / (120+50+80 µs).
	assert.Contains(t, e2e, "with no hub: at most 8000 calls/s", "end-to-end detail")
	assert.Contains(t, got["device SDK vs Node: connects/s (mqtt)"].Detail, "paho-raw responder: 2500 connects/s", "connects/s detail")
	// The MQTT pairs shared their rounds: the target compares the SDK with
	// the handoff floor directly, round by round: 420/410, 440/400 and
	// 400/420 µs, whose median is 1.024.
	p50 := got["device SDK vs raw floor: p50 (mqtt)"]
	assert.Contains(t, p50.Detail, "median of 3 rounds with device processes of their own (1.05, 1.1, 1)", "p50 detail")
	assert.Contains(t, p50.Detail, "÷ paho-handoff/mqtt in the same rounds: 1.024 (median)", "p50 detail")
	assert.Contains(t, p50.BoundDetail, "paired with paho-raw/mqtt in the same window as go-sdk/mqtt", "p50 bound detail")

	var buf bytes.Buffer
	res.Targets = targets(res)
	res.WriteTable(&buf)
	out := buf.String()
	for _, want := range []string{"Invoker floor", "net-http", "Targets",
		`floor of "device SDK vs Node: CPU per call (amqp)": 0.68 at best: the amqp-handoff/amqp responder (the raw one, answering off the library's delivery goroutine as a client that never goes deaf must) spends 170 µs of device CPU per call, ÷ 250 (the amqp-raw responder alone: 160 µs, 0.64)`,
		`floor of "service client vs Node: CPU per call": 0.6 at best: a bare net/http client`,
		"in the same window", "paho-handoff/mqtt"} {
		assert.Contains(t, out, want, "table")
	}
}

// TestNodeCPUTargetRawBound checks that the device CPU target against
// Node is bounded by the raw responder when the run has no handoff row.
func TestNodeCPUTargetRawBound(t *testing.T) {
	res := madeUpRun()
	res.Rows = slices.DeleteFunc(res.Rows, func(r Row) bool { return strings.Contains(r.Name, "handoff") })
	tg := targetsByName(res)["device SDK vs Node: CPU per call (amqp)"]
	assert.Equal(t, 0.64, tg.Bound, "raw go-amqp alone: 160/250 µs")
	assert.Equal(t, "the amqp-raw responder alone spends 160 µs of device CPU per call, ÷ 250", tg.BoundDetail)
}

// TestServiceTargetAzcoreBound checks that the service client's target is
// bounded by the floor of azcore, the library it is built on, when the run
// measured one, and by a bare net/http client's otherwise.
func TestServiceTargetAzcoreBound(t *testing.T) {
	res := madeUpRun()
	const name = "service client vs Node: CPU per call"
	tg := targetsByName(res)[name]
	assert.Equal(t, 0.6, tg.Bound, "net/http: 90/150 µs")
	assert.Contains(t, tg.BoundDetail, "a bare net/http client posting the same request spends 90 µs", "bound detail")
	res.Floors = append(res.Floors, FloorRow{Name: FloorAzcore, Status: "ok", Latency: &Latency{P50: 220}, LoadLatency: &Latency{}, InvokerCPUPerCall: 105, ServerCPUPerCall: 50})
	tg = targetsByName(res)[name]
	assert.Equal(t, 0.7, tg.Bound, "azcore: 105/150 µs")
	assert.Equal(t, "met", tg.Status, "the value, 60/150, is below the bound: %+v", tg)
	assert.Contains(t, tg.BoundDetail, "a bare azcore pipeline, which this SDK's service client is built on, posting the same request spends 105 µs", "bound detail")
	assert.Contains(t, tg.BoundDetail, "(a bare net/http client there: 90 µs; this SDK's service client: 120 µs)", "bound detail")
}

// TestServiceTargetInvokerPairs checks that the service client's target
// comes from the paired invoker loads when the run has them: the median of
// the rounds' ratios, the rows one after the other in the detail only, and
// the bound against Node's CPU in the pairs. A failed round is left out.
func TestServiceTargetInvokerPairs(t *testing.T) {
	res := madeUpRun() // rows: 60 vs 150 µs, 0.4
	pair := func(a, b float64, callsA, callsB int) InvokerPair {
		return InvokerPair{A: "go-service", B: "node-service", Device: "go-sdk/mqtt", Status: "ok", Concurrency: 32,
			CallsA: callsA, CallsB: callsB, CPUPerCallA: a, CPUPerCallB: b, Ratio: round(a/b, 3)}
	}
	res.InvokerPairs = []InvokerPair{pair(70, 100, 1000, 500), pair(66, 120, 1000, 500), pair(90, 100, 1000, 500),
		{A: "go-service", B: "node-service", Status: "failed", Reason: "made up"}}
	const name = "service client vs Node: CPU per call"
	tg := targetsByName(res)[name]
	assert.Equal(t, 0.7, tg.Value, "median of 0.7, 0.55, 0.9: %+v", tg)
	assert.Equal(t, "missed", tg.Status, "%+v", tg)
	assert.Contains(t, tg.Detail, "median of 3 rounds (0.7, 0.55, 0.9): 75 vs 107 µs", "pooled over the rounds")
	assert.Contains(t, tg.Detail, "one after the other: 60 vs 150 µs of the invoker's own process per call, 64 calls in flight = 0.4", "rows")
	assert.Equal(t, round(90.0/(320.0/3), 3), tg.Bound, "net/http 90 µs ÷ Node's pooled 106.7 µs")
	assert.Contains(t, tg.BoundDetail, "Node's CPU per call from the paired invokers", "the bound says where its parts come from")

	// With the azcore floor in the same windows, the bound is the median
	// of the floor's own ratios to Node, not the floor measured alone.
	withFloor := func(p InvokerPair, f float64, calls int) InvokerPair {
		p.Floor, p.CPUPerCallFloor, p.CallsFloor, p.FloorRatio = FloorAzcore, f, calls, round(f/p.CPUPerCallB, 3)
		return p
	}
	floored := slices.Clone(res.InvokerPairs)
	res.InvokerPairs = []InvokerPair{withFloor(pair(70, 100, 1000, 500), 60, 1000), withFloor(pair(66, 120, 1000, 500), 48, 1000),
		withFloor(pair(90, 100, 1000, 500), 65, 1000), floored[3]}
	tg = targetsByName(res)[name]
	assert.Equal(t, 0.7, tg.Value, "the value is unchanged: %+v", tg)
	assert.Equal(t, 0.6, tg.Bound, "median of 0.6, 0.4, 0.65: %+v", tg)
	assert.Contains(t, tg.BoundDetail, "a bare azcore pipeline, which this SDK's service client is built on, posting the same request as a third invoker process on the same fleet in the same window, median of 3 rounds (0.6, 0.4, 0.65): 58 µs of its process's CPU per call ÷ node-service's 107, over all rounds", "bound detail")
	assert.Contains(t, tg.Detail, "both invokers and the azcore floor at once", "detail")
	// A round without the floor: the bound falls back to the floor measured alone.
	res.InvokerPairs = append(res.InvokerPairs[:2:2], pair(90, 100, 1000, 500))
	tg = targetsByName(res)[name]
	assert.Equal(t, round(90.0/(320.0/3), 3), tg.Bound, "net/http 90 µs ÷ Node's pooled 106.7 µs")

	res.InvokerPairs = floored[3:] // only the failed one: back to the rows
	tg = targetsByName(res)[name]
	assert.Equal(t, 0.4, tg.Value, "%+v", tg)
	assert.Equal(t, 0.6, tg.Bound, "net/http: 90/150 µs")
	assert.Contains(t, tg.Detail, "(the paired invokers failed: made up)", "why the rows are used")
}

// TestTargetsList checks the targets' order and that the retired ones
// (absolute figures, ratios of p50 and calls/s to Node) are gone.
func TestTargetsList(t *testing.T) {
	var names []string
	for _, tg := range targets(&Result{}) {
		names = append(names, tg.Name)
	}
	assert.Equal(t, []string{
		"device SDK vs raw floor: p50 (mqtt)",
		"device SDK vs raw floor: CPU per call (mqtt)",
		"device SDK vs raw floor: RSS per device (mqtt)",
		"device SDK vs raw floor: p50 (amqp)",
		"device SDK vs raw floor: CPU per call (amqp)",
		"device SDK vs raw floor: RSS per device (amqp)",
		"device SDK vs Node: CPU per call (mqtt)",
		"device SDK vs Node: RSS per device (mqtt)",
		"device SDK vs Node: connects/s (mqtt)",
		"device SDK vs Node: CPU per call (amqp)",
		"device SDK vs Node: RSS per device (amqp)",
		"device SDK vs Node: connects/s (amqp)",
		"service client vs Node: CPU per call",
		"end-to-end calls/s vs floor bound (mqtt)",
		"end-to-end calls/s vs floor bound (amqp)",
	}, names)
}

// TestTargetsNotApplicable checks the n/a cases and what each says is
// missing.
func TestTargetsNotApplicable(t *testing.T) {
	t.Run("empty run", func(t *testing.T) {
		for _, tg := range targets(&Result{}) {
			assert.Equal(t, "n/a", tg.Status, "%s", tg.Name)
			assert.Zero(t, tg.Value, "%s", tg.Name)
			assert.Zero(t, tg.Bound, "%s", tg.Name)
			assert.NotEmpty(t, tg.Detail, "%s: no reason", tg.Name)
			assert.NotEmpty(t, tg.Goal, "%s: no goal", tg.Name)
		}
	})

	t.Run("in process", func(t *testing.T) {
		// --inproc: the Go devices and the Go invoker share the hub's
		// process, so their CPU and memory are not their own.
		res := madeUpRun()
		res.Settings.InProcess = true
		res.Invokers[0].Throughput.InvokerCPUPerCall = 0
		for i := range res.Scale {
			res.Scale[i].InProcess = res.Scale[i].Impl != ImplNodeSDK
		}
		got := targetsByName(res)
		for _, name := range []string{
			"device SDK vs raw floor: CPU per call (mqtt)",
			"device SDK vs raw floor: RSS per device (mqtt)",
			"device SDK vs Node: CPU per call (mqtt)",
			"device SDK vs Node: RSS per device (mqtt)",
			"service client vs Node: CPU per call",
			"end-to-end calls/s vs floor bound (mqtt)",
		} {
			assert.Equal(t, "n/a", got[name].Status, "%s: %+v", name, got[name])
			assert.Contains(t, got[name].Detail, "--inproc", "%s", name)
		}
		// Latency and connect rates are still measured.
		assert.Equal(t, "met", got["device SDK vs raw floor: p50 (mqtt)"].Status)
		cps := got["device SDK vs Node: connects/s (mqtt)"]
		assert.Equal(t, 6.667, cps.Value, "connects/s: %+v", cps)
		assert.Contains(t, cps.Detail, "hub's process", "connects/s: %+v", cps)
	})

	t.Run("no Node, no floors", func(t *testing.T) {
		// --floor=false --no-floors, without --node.
		res := madeUpRun()
		res.Rows = []Row{benchRow("go-sdk/mqtt", 400, 5000, 100), benchRow("go-sdk/amqp", 500, 3000, 150)}
		res.Pairs, res.Floors, res.Invokers = nil, nil, []InvokerRow{invokerRow("go-service", 60)}
		res.Scale = []ScaleRow{scaleRow("go-sdk/mqtt", 1000, 60, 2000)}
		for _, tg := range targets(res) {
			assert.Equal(t, "n/a", tg.Status, "%s: %+v", tg.Name, tg)
		}
		got := targetsByName(res)
		assert.Contains(t, got["device SDK vs raw floor: p50 (mqtt)"].Detail, "--floor")
		assert.Contains(t, got["device SDK vs raw floor: CPU per call (amqp)"].Detail, "--floor")
		assert.Contains(t, got["device SDK vs Node: CPU per call (mqtt)"].Detail, "--node")
		assert.Contains(t, got["device SDK vs Node: CPU per call (amqp)"].Detail, "--node")
		assert.Contains(t, got["service client vs Node: CPU per call"].Detail, "node-service")
		assert.Contains(t, got["end-to-end calls/s vs floor bound (mqtt)"].Detail, "--floor")
	})

	t.Run("no invoker floor", func(t *testing.T) {
		// --no-floors: no invoker floor, and no end-to-end floor phase.
		res := madeUpRun()
		res.Floors = nil
		for i := range res.Rows {
			res.Rows[i].FloorEndToEnd = nil
		}
		got := targetsByName(res)
		e2e := got["end-to-end calls/s vs floor bound (mqtt)"]
		assert.Equal(t, "n/a", e2e.Status, "%+v", e2e)
		assert.Contains(t, e2e.Detail, "--no-floors")
		// The service target stands without its bound.
		svc := got["service client vs Node: CPU per call"]
		assert.Equal(t, "met", svc.Status, "%+v", svc)
		assert.Zero(t, svc.Bound, "%+v", svc)
	})

	t.Run("in process without Node", func(t *testing.T) {
		// What is missing first is the Node row, not a child process.
		res := madeUpRun()
		res.Settings.InProcess = true
		res.Rows = res.Rows[:2]
		got := targetsByName(res)
		assert.Contains(t, got["device SDK vs Node: CPU per call (mqtt)"].Detail, "--node")
		assert.Contains(t, got["device SDK vs raw floor: CPU per call (mqtt)"].Detail, "--inproc")
	})

	t.Run("no device CPU", func(t *testing.T) {
		// A throughput window too short for the fleet's CPU clock.
		res := madeUpRun()
		res.Rows[0].Throughput.DeviceCPUPerCall = 0
		got := targetsByName(res)
		for _, name := range []string{"device SDK vs raw floor: CPU per call (mqtt)", "device SDK vs Node: CPU per call (mqtt)"} {
			assert.Equal(t, "n/a", got[name].Status, "%s: %+v", name, got[name])
			assert.Contains(t, got[name].Detail, "no device CPU", "%s", name)
		}
	})

	t.Run("failed rows", func(t *testing.T) {
		res := madeUpRun()
		for i := range res.Rows {
			if res.Rows[i].Impl == ImplNodeSDK {
				res.Rows[i].Status = "failed"
			}
		}
		res.Invokers[1].Status = "skipped"
		got := targetsByName(res)
		for _, name := range []string{"device SDK vs Node: CPU per call (mqtt)", "device SDK vs Node: CPU per call (amqp)", "service client vs Node: CPU per call"} {
			assert.Equal(t, "n/a", got[name].Status, "%s: %+v", name, got[name])
		}
	})
}

// TestTargetsTable checks that n/a targets print a dash for their value.
func TestTargetsTable(t *testing.T) {
	res := &Result{Rows: []Row{benchRow("go-sdk/mqtt", 400, 5000, 100)}}
	res.Targets = targets(res)
	var buf bytes.Buffer
	res.WriteTable(&buf)
	out := buf.String()
	require.Contains(t, out, "Targets")
	assert.Regexp(t, `n/a\s+device SDK vs Node: connects/s \(mqtt\)\s+-\s+go-sdk/mqtt connects/s ÷ node-sdk/mqtt ≥ 5`, out)
}

// TestMedianRowFloorEndToEnd checks that a raw row's end-to-end floor is
// the median of its rounds', and is left out unless every round has one.
func TestMedianRowFloorEndToEnd(t *testing.T) {
	rounds := []Row{
		withFloorE2E(benchRow("paho-raw/mqtt", 380, 5200, 80), 5500),
		withFloorE2E(benchRow("paho-raw/mqtt", 390, 5100, 82), 5300),
		withFloorE2E(benchRow("paho-raw/mqtt", 370, 5300, 78), 5900),
	}
	got := medianRow(rounds)
	require.NotNil(t, got.FloorEndToEnd)
	assert.Equal(t, 5500.0, got.FloorEndToEnd.CallsPerSec)
	rounds[1].FloorEndToEnd = nil
	assert.Nil(t, medianRow(rounds).FloorEndToEnd, "a round without the phase")
}

// TestMedianRatio checks the median of the rounds' ratios, which skips
// the rounds that did not measure both sides.
func TestMedianRatio(t *testing.T) {
	f := PairRound.p50
	assert.Equal(t, 1.1, medianRatio([]PairRound{{P50A: 120, P50B: 100}, {P50A: 110, P50B: 100}, {P50A: 90, P50B: 100}}, f))
	assert.Equal(t, 1.15, medianRatio([]PairRound{{P50A: 120, P50B: 100}, {P50A: 110, P50B: 100}, {P50A: 90, P50B: 0}}, f))
	assert.Equal(t, 1.15, medianRatio([]PairRound{{P50A: 120, P50B: 100}, {P50A: 110, P50B: 100}, {P50A: 0, P50B: 100}}, f), "a round with no calls of A")
	assert.Zero(t, medianRatio([]PairRound{{P50A: 90}}, f))
}

// TestEndToEndTargetPaired checks that the end-to-end target takes the
// pair measured in one window over the rows measured one after the other.
func TestEndToEndTargetPaired(t *testing.T) {
	res := madeUpRun()
	rows := targetsByName(res)["end-to-end calls/s vs floor bound (mqtt)"]
	require.Equal(t, 0.909, rows.Value, "from the rows: 5000 of 5500 calls/s")
	res.E2EPairs = []E2EPair{
		{A: "go-sdk/mqtt", B: "paho-raw/mqtt", Status: "failed", Reason: "boom"},
		{A: "go-sdk/mqtt", B: "paho-raw/mqtt", Status: "ok", Slices: 30, SliceSeconds: 1, Devices: 100, Concurrency: 64,
			CallsA: 132000, CallsB: 150000, CallsPerSecA: 4400, CallsPerSecB: 5000, Ratio: 0.88},
	}
	tg := targetsByName(res)["end-to-end calls/s vs floor bound (mqtt)"]
	assert.Equal(t, 0.88, tg.Value, "from the pair: %+v", tg)
	assert.Equal(t, "missed", tg.Status, "%+v", tg)
	assert.Contains(t, tg.Detail, "taking turns in 30 slices of 1 s each: 4400 of 5000 calls/s", "detail")
	assert.Contains(t, tg.Detail, "(rows one after the other: 5000 of 5500 calls/s)", "detail")
	var buf bytes.Buffer
	res.Targets = targets(res)
	res.WriteTable(&buf)
	assert.Contains(t, buf.String(), "End-to-end pairs", "table")
	assert.Contains(t, buf.String(), "go-sdk/mqtt vs paho-raw/mqtt failed: boom", "table")
	// The pair does not need the raw row's own end-to-end floor phase.
	for i := range res.Rows {
		res.Rows[i].FloorEndToEnd = nil
	}
	tg = targetsByName(res)["end-to-end calls/s vs floor bound (mqtt)"]
	assert.Equal(t, 0.88, tg.Value, "from the pair, no floor phase on the row: %+v", tg)
	assert.NotContains(t, tg.Detail, "rows one after the other", "detail")
	res.E2EPairs = nil
	assert.Equal(t, "n/a", targetsByName(res)["end-to-end calls/s vs floor bound (mqtt)"].Status, "neither the pair nor the floor phase")
}
