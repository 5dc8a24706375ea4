package bench

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTargetBounds checks the floors' arithmetic on a made-up run.
func TestTargetBounds(t *testing.T) {
	row := func(name string, p50, cps, devCPU float64) Row {
		impl, tr, _ := strings.Cut(name, "/")
		return Row{Name: name, Impl: impl, Transport: tr, Status: "ok", Latency: &Latency{P50: p50},
			Throughput: &Throughput{CallsPerSec: cps, DeviceCPUPerCall: devCPU, Latency: &Latency{}}}
	}
	res := &Result{
		Machine: Machine{CPUs: 2},
		Rows: []Row{
			row("go-sdk/mqtt", 400, 5000, 100),
			row("paho-raw/mqtt", 380, 5200, 80),
			row("node-sdk/mqtt", 600, 4000, 200),
		},
		Floors: []FloorRow{
			{Name: FloorGoService, Status: "ok", Latency: &Latency{P50: 240}, LoadLatency: &Latency{}, InvokerCPUPerCall: 120, ServerCPUPerCall: 50},
			{Name: FloorNetHTTP, Status: "ok", Latency: &Latency{P50: 200}, LoadLatency: &Latency{}, InvokerCPUPerCall: 90, ServerCPUPerCall: 50},
		},
		Scale: []ScaleRow{
			{Name: "go-sdk/mqtt", Devices: 1000, Connected: 1000, DeviceRSSPerDevice: 60 << 10},
			{Name: "paho-raw/mqtt", Devices: 1000, Connected: 1000, DeviceRSSPerDevice: 50 << 10},
			{Name: "node-sdk/mqtt", Devices: 1000, Connected: 1000, DeviceRSSPerDevice: 100 << 10},
		},
	}
	got := map[string]Target{}
	for _, tg := range targets(res) {
		got[tg.Name] = tg
	}
	check := func(name string, value, bound float64) {
		t.Helper()
		tg, ok := got[name]
		require.True(t, ok, "no target %q", name)
		assert.Equal(t, value, tg.Value, "%s: value", name)
		assert.Equal(t, bound, tg.Bound, "%s: bound", name)
		assert.Equal(t, bound != 0, tg.BoundDetail != "", "%s: bound detail %q with bound %v", name, tg.BoundDetail, bound)
	}
	// 400/600; the invoker floor alone is 240/600.
	check("latency vs Node device SDK (mqtt)", 0.667, 0.4)
	// 2 CPUs / (120+50+80 µs) = 8000 calls/s; ÷ 4000.
	check("throughput vs Node device SDK (mqtt)", 1.25, 2)
	check("end-to-end throughput (MQTT over TLS)", 5000, 8000)
	// 60/100 KB; paho alone 50/100.
	check("memory per connected device vs Node (mqtt)", 0.6, 0.5)
	// Without a floor there is no bound.
	check("device SDK overhead (MQTT p50 vs raw paho floor)", 1.053, 0)

	var buf bytes.Buffer
	res.Targets = targets(res)
	res.WriteTable(&buf)
	for _, want := range []string{"Invoker floor", "net-http", `floor of "end-to-end throughput (MQTT over TLS)": 8000 at best`} {
		assert.Contains(t, buf.String(), want, "table")
	}
}
