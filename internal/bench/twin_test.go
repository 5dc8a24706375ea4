package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseTwinResTopic(t *testing.T) {
	for _, c := range []struct {
		topic   string
		status  int
		rid     string
		version int64
	}{
		{"$iothub/twin/res/204/?$rid=4&$version=2", 204, "4", 2},
		{"$iothub/twin/res/200/?$rid=abc", 200, "abc", 0},
		{"$iothub/twin/res/400/?$version=7&$rid=x-1", 400, "x-1", 7},
	} {
		status, rid, version, err := parseTwinResTopic(c.topic)
		if assert.NoError(t, err, c.topic) {
			assert.Equal(t, c.status, status, "%s: status", c.topic)
			assert.Equal(t, c.rid, rid, "%s: rid", c.topic)
			assert.Equal(t, c.version, version, "%s: version", c.topic)
		}
	}
	for _, bad := range []string{
		"$iothub/methods/res/200/?$rid=1",
		"$iothub/twin/res/204",
		"$iothub/twin/res/ok/?$rid=1",
		"$iothub/twin/res/204/?$version=2",
		"$iothub/twin/res/204/?$rid=1&$version=x",
	} {
		_, _, _, err := parseTwinResTopic(bad)
		assert.Error(t, err, bad)
	}
}

func TestTwinPatch(t *testing.T) {
	b, err := json.Marshal(twinPatch(7))
	require.NoError(t, err)
	var p struct {
		LastReboot time.Time `json:"lastReboot"`
		N          int       `json:"n"`
	}
	require.NoError(t, json.Unmarshal(b, &p), "%s", b)
	assert.Equal(t, 7, p.N, "%s", b)
	assert.WithinDuration(t, time.Now(), p.LastReboot, time.Minute, "%s", b)
}

// TestRunTwinPhase drives the phase with a fake device: warm-up, the
// measured updates, the error guard.
func TestRunTwinPhase(t *testing.T) {
	var ns []int
	upd := func(ctx context.Context, patch map[string]any) error {
		_, ok := ctx.Deadline()
		require.True(t, ok, "an update without a deadline")
		ns = append(ns, patch["n"].(int))
		return nil
	}
	opened := 0
	res := runTwinPhase(context.Background(), upd, TwinSpec{Warmup: 3, Updates: 10}, func() {
		opened++
		assert.Len(t, ns, 3, "the window opened before the warm-up ended")
	})
	assert.Equal(t, 1, opened, "opened")
	assert.Equal(t, "twin_result", res.Type)
	assert.Equal(t, 10, res.Updates)
	assert.Len(t, res.Latencies, 10)
	assert.Zero(t, res.Errors)
	assert.Positive(t, res.Seconds)
	assert.GreaterOrEqual(t, res.CPUSeconds, 0.0)
	assert.Equal(t, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, ns, "patch counters")

	// Measured failures are counted, and too many end the loop.
	calls := 0
	res = runTwinPhase(context.Background(), func(context.Context, map[string]any) error {
		calls++
		if calls > 2 && calls%2 == 0 {
			return errors.New("refused")
		}
		return nil
	}, TwinSpec{Warmup: 2, Updates: 100, MaxErrors: 3}, func() {})
	assert.Equal(t, 3, res.Errors, "errors")
	assert.Equal(t, "refused", res.FirstError)
	// Warm-up: calls 1, 2; measured: 3 ok, 4 failed, 5 ok, 6 failed, 7 ok, 8 failed.
	assert.Equal(t, 3, res.Updates, "updates that succeeded before the third failure")
	assert.Equal(t, 8, calls, "calls")

	// A failed warm-up ends the phase without opening the window.
	res = runTwinPhase(context.Background(), func(context.Context, map[string]any) error {
		return errors.New("no twins here")
	}, TwinSpec{Warmup: 2, Updates: 10}, func() { t.Error("the window opened after a failed warm-up") })
	assert.Equal(t, 1, res.Errors)
	assert.Contains(t, res.FirstError, "no twins here")
	assert.Zero(t, res.Updates)
}

// TestTwinWindow converts a fleet's twin_result into the parent's window
// and the row's numbers.
func TestTwinWindow(t *testing.T) {
	var m fleetMsg
	require.NoError(t, json.Unmarshal([]byte(`{"type":"twin_result","updates":4,"errors":1,"first_error":"x",
		"seconds":0.002,"cpu_seconds":0.0004,"latencies_us":[400,500.5,600,700]}`), &m))
	w := twinWindow(m)
	w.cpu = 0.0008 // the hub's, measured by the parent
	assert.Equal(t, []time.Duration{400 * time.Microsecond, 500500 * time.Nanosecond, 600 * time.Microsecond, 700 * time.Microsecond}, w.latencies)
	var row TwinRow
	fillTwinRow(&row, w)
	assert.Equal(t, 4, row.Latency.Calls)
	assert.Equal(t, 1, row.Latency.Errors)
	assert.Equal(t, "x", row.Latency.FirstError)
	assert.Equal(t, 500.5, row.Latency.P50)
	assert.Equal(t, 700.0, row.Latency.P99)
	assert.Equal(t, 2000.0, row.UpdatesPerSec)
	assert.Equal(t, 200.0, row.HubCPUPerUpdate)
	assert.Equal(t, 100.0, row.DeviceCPUPerUpdate)
	assert.Equal(t, 300.0, row.TotalCPUPerUpdate)
}

func TestMedianTwinRow(t *testing.T) {
	row := func(p50, dev float64) TwinRow {
		return TwinRow{Name: "go-sdk/mqtt", Impl: ImplGoSDK, Transport: "mqtt", Status: "ok", Seconds: 1,
			Latency: &Latency{Calls: 10, P50: p50, P99: 2 * p50}, DeviceCPUPerUpdate: dev, TotalCPUPerUpdate: 3 * dev}
	}
	m := medianTwinRow([]TwinRow{row(300, 10), {Name: "go-sdk/mqtt", Status: "failed", Reason: "boom"}, row(100, 30), row(200, 20)})
	assert.Equal(t, "ok", m.Status)
	assert.Equal(t, 200.0, m.Latency.P50)
	assert.Equal(t, 400.0, m.Latency.P99)
	assert.Equal(t, 30, m.Latency.Calls)
	assert.Equal(t, 20.0, m.DeviceCPUPerUpdate)
	assert.Equal(t, 60.0, m.TotalCPUPerUpdate)
	assert.Equal(t, 3.0, m.Seconds)
	assert.Len(t, m.Rounds, 4)
	assert.Contains(t, m.Reason, "1 of 4 rounds failed: boom")

	bad := medianTwinRow([]TwinRow{{Name: "x", Status: "pending", Reason: "later"}, {Name: "x", Status: "pending", Reason: "later"}})
	assert.Equal(t, "pending", bad.Status)
	assert.Len(t, bad.Rounds, 2)
}

func TestTwinRatios(t *testing.T) {
	row := func(name string, p50, p99, dev, total float64) TwinRow {
		impl, tr, _ := strings.Cut(name, "/")
		return TwinRow{Name: name, Impl: impl, Transport: tr, Status: "ok",
			Latency: &Latency{P50: p50, P99: p99}, DeviceCPUPerUpdate: dev, TotalCPUPerUpdate: total}
	}
	rows := []TwinRow{
		row("go-sdk/mqtt", 400, 800, 50, 150),
		row("paho-raw/mqtt", 380, 900, 40, 140),
		row("node-sdk/mqtt", 800, 3200, 200, 300),
		row("go-sdk/amqp", 500, 1000, 80, 200),
		{Name: "node-sdk/amqp", Impl: ImplNodeSDK, Transport: "amqp", Status: "failed"},
		row("node-sdk/mqtt-ws", 900, 1000, 100, 100), // no go-sdk row to compare
	}
	got := twinRatios(rows)
	want := []TwinRatio{
		{A: "go-sdk/mqtt", B: "paho-raw/mqtt", P50Ratio: 1.053, P99Ratio: 0.889, DeviceCPURatio: 1.25, TotalCPURatio: 1.071},
		{A: "go-sdk/mqtt", B: "node-sdk/mqtt", P50Ratio: 0.5, P99Ratio: 0.25, DeviceCPURatio: 0.25, TotalCPURatio: 0.5},
	}
	assert.Equal(t, want, got)

	// A Go device in the hub's process has no CPU of its own to compare.
	rows[0].InProcess = true
	got = twinRatios(rows)
	require.Len(t, got, 2)
	assert.Zero(t, got[1].DeviceCPURatio, "in process: %+v", got[1])
	assert.Equal(t, 0.5, got[1].P50Ratio, "in process: %+v", got[1])
}

func TestTwinTable(t *testing.T) {
	res := &Result{
		Settings: Settings{TwinUpdates: 300, TwinWarmup: 30},
		Twins: []TwinRow{
			{Name: "go-sdk/mqtt", Impl: ImplGoSDK, Transport: "mqtt", Status: "ok", Latency: &Latency{Calls: 300, P50: 410, P90: 500, P99: 900},
				UpdatesPerSec: 2300, HubCPUPerUpdate: 90, DeviceCPUPerUpdate: 60, TotalCPUPerUpdate: 150},
			{Name: "node-sdk/mqtt", Impl: ImplNodeSDK, Transport: "mqtt", Status: "ok", Latency: &Latency{Calls: 300, P50: 820, P90: 1000, P99: 2400},
				UpdatesPerSec: 1200, HubCPUPerUpdate: 95, DeviceCPUPerUpdate: 240, TotalCPUPerUpdate: 335},
			{Name: "go-sdk/amqp", Impl: ImplGoSDK, Transport: "amqp", Status: "pending", Reason: "not yet"},
		},
	}
	res.TwinRatios = twinRatios(res.Twins)
	var buf bytes.Buffer
	res.WriteTable(&buf)
	out := buf.String()
	for _, want := range []string{
		"Reported-property updates", "300 updates after 30 warm-up",
		"go-sdk/amqp pending: not yet",
		"go-sdk/mqtt ÷ node-sdk/mqtt: p50 0.5, p99 0.375, device CPU per update 0.25, total CPU per update 0.448",
	} {
		assert.Contains(t, out, want, "table:\n%s", out)
	}
	// Nothing else was measured: no empty sections.
	for _, absent := range []string{"Round trips", "Targets"} {
		assert.NotContains(t, out, absent, "table:\n%s", out)
	}
}

// TestRunFleetTwinLine speaks the fleet protocol's "twin" line to
// RunFleet; the fleet has no device, so the phase answers at once with
// its error.
func TestRunFleetTwinLine(t *testing.T) {
	pr, pw := io.Pipe()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- RunFleet(pr, &out) }()
	_, err := io.WriteString(pw, `{"impl":"no-such-impl","transport":"mqtt","ca_pem":""}`+"\n"+`twin {"warmup":1,"updates":2}`+"\ntwin {bad\ntwin-step\nclose\n")
	require.NoError(t, err)
	require.NoError(t, <-done)
	pw.Close()
	var types []string
	var results, steps []fleetMsg
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var m fleetMsg
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), "%s", sc.Bytes())
		types = append(types, m.Type)
		switch m.Type {
		case "twin_result":
			results = append(results, m)
		case "twin_step":
			steps = append(steps, m)
		}
	}
	assert.Equal(t, []string{"connected", "twin_result", "twin_result", "twin_step", "closed"}, types)
	if assert.Len(t, steps, 1) {
		assert.Equal(t, 1, steps[0].Errors, "%+v", steps[0])
		assert.Contains(t, steps[0].FirstError, "no connected device")
	}
	require.Len(t, results, 2)
	assert.Contains(t, results[0].FirstError, "no connected device")
	assert.Contains(t, results[1].FirstError, "twin spec")
	for _, r := range results {
		assert.Equal(t, 1, r.Errors)
		assert.Zero(t, r.Updates)
	}
}

// TestTwinStep: the paired measurement's steps reuse the phase's updater
// and time each update.
func TestTwinStep(t *testing.T) {
	calls := 0
	f := &goFleet{}
	f.twinUpd = func(ctx context.Context, patch map[string]any) error {
		calls++
		_, ok := ctx.Deadline()
		assert.True(t, ok, "an update without a deadline")
		if patch["n"].(int) == 1_000_000_002 {
			return errors.New("refused")
		}
		return nil
	}
	d, err := f.twinStep(context.Background())
	require.NoError(t, err)
	assert.Positive(t, d)
	_, err = f.twinStep(context.Background())
	assert.EqualError(t, err, "refused")
	assert.Equal(t, 2, calls)

	var buf bytes.Buffer
	require.NoError(t, serveTwinStep(f, json.NewEncoder(&buf)))
	var m fleetMsg
	require.NoError(t, json.Unmarshal(buf.Bytes(), &m))
	assert.Equal(t, "twin_step", m.Type)
	assert.Equal(t, 1, m.Updates)
	assert.Len(t, m.Latencies, 1)
}
