package bench

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The multiplexed targets read the rows, calls and recovery of a run.
func TestMuxTargets(t *testing.T) {
	res := &MuxResult{PerConn: 995, DialRate: 20, Rows: []ScaleRow{
		{Name: "go-sdk-pool/amqp", Devices: 100000, Connected: 100000, ConnectSeconds: 50, ConnectPerSec: 2000, DeviceRSSPerDevice: 150 * 1024, DeviceHeapPerDevice: 140 * 1024},
		{Name: "go-sdk-pool/amqp (small fleet)", Devices: 100, Connected: 100},
		{Name: "amqp-raw-pool/amqp", Devices: 100000, Connected: 100000, DeviceRSSPerDevice: 140 * 1024, DeviceHeapPerDevice: 135 * 1024},
	},
		Calls:    &MuxCalls{Large: &Latency{Calls: 10, P50: 800, P99: 2000}, Small: &Latency{Calls: 10, P50: 700, P99: 1000}, P50Ratio: 1.143, P99Ratio: 2},
		Recovery: &MuxRecover{CutConns: 101, Seconds: 30, Connected: 100000, Dials: 101, PeakDialRate: 20, DialRate: 20, VerifyCalls: 100000},
	}
	ts := muxTargets(res, 100000)
	require.Len(t, ts, 5)
	assert.Equal(t, "met", ts[0].Status, ts[0].Detail)
	assert.InDelta(t, 100000, ts[0].Value, 0)
	assert.Equal(t, "missed; out of reach", ts[1].Status, "the floor misses 16 KB too")
	assert.InDelta(t, 150, ts[1].Value, 0)
	assert.InDelta(t, 140, ts[1].Bound, 0, "the go-amqp floor bounds the RSS target")
	assert.Contains(t, ts[1].BoundDetail, "1.07×")
	assert.Equal(t, "met", ts[2].Status, "p50 1.143")
	assert.Equal(t, "missed", ts[3].Status, "p99 2")
	assert.Equal(t, "met", ts[4].Status, ts[4].Detail)

	// The floor's own round trips bound the ratios.
	res.FloorCalls = &MuxCalls{Large: &Latency{Calls: 10, P50: 700, P99: 1900}, Small: &Latency{Calls: 10, P50: 600, P99: 1000}, P50Ratio: 1.167, P99Ratio: 1.9}
	ts = muxTargets(res, 100000)
	assert.Equal(t, "met", ts[2].Status)
	assert.InDelta(t, 1.167, ts[2].Bound, 0)
	assert.Equal(t, "missed; out of reach", ts[3].Status, "the floor's p99 ratio misses 1.5 too")
	assert.Contains(t, ts[3].BoundDetail, "1900 vs 1000 µs")
	res.FloorCalls.P99Ratio = 1.2
	assert.Equal(t, "missed", muxTargets(res, 100000)[3].Status, "a floor within the goal leaves the miss ours")
	res.FloorCalls.Large.Errors = 1
	assert.Zero(t, muxTargets(res, 100000)[3].Bound, "a floor with errors bounds nothing")
	res.FloorCalls = nil

	res.Recovery.PeakDialRate = 40
	assert.Equal(t, "missed", muxTargets(res, 100000)[4].Status, "a dial rate over the bound")
	res.Recovery.PeakDialRate, res.Recovery.VerifyErrors = 20, 1
	assert.Equal(t, "missed", muxTargets(res, 100000)[4].Status, "a device that did not answer after the recovery")
	res.Rows[0].Failed = 1
	assert.Equal(t, "missed", muxTargets(res, 100000)[0].Status, "a failure")

	res.Calls, res.Recovery, res.Rows = nil, nil, nil
	for _, tg := range muxTargets(res, 100000) {
		assert.Equal(t, "n/a", tg.Status, tg.Name)
	}
	var b bytes.Buffer
	res.WriteTable(&b)
	assert.Contains(t, b.String(), "Targets")
}
