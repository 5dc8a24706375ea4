package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// A small c2d run delivers every message to the Go device on each
// transport and reports its numbers. Shape only: no timed assertions.
func TestRunC2D(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := RunC2D(ctx, C2DConfig{Messages: 50, Warmup: 5, Transports: []string{"mqtt", "amqp"}, InProcess: true, Rounds: 2})
	require.NoError(t, err)
	require.Len(t, res.Rows, 2)
	for _, r := range res.Rows {
		require.Equal(t, "ok", r.Status, "%s: %s", r.Name, r.Reason)
		assert.Equal(t, 100, r.Messages, "%s: two rounds of 50", r.Name)
		assert.Positive(t, r.MsgsPerSec, r.Name)
		assert.Positive(t, r.Latency.P50, r.Name)
		assert.Positive(t, r.HubCPUPerMsg, r.Name)
		assert.Zero(t, r.DeviceCPUPerMsg, "%s: an in-process device has no CPU of its own", r.Name)
		assert.Len(t, r.Rounds, 2, r.Name)
	}
	assert.Empty(t, res.Ratios, "no Node rows")

	var out bytes.Buffer
	res.WriteTable(&out)
	for _, w := range []string{"iothub bench --c2d:", "go-sdk/mqtt", "go-sdk/amqp", "msgs/s", "device CPU µs/msg"} {
		assert.Contains(t, out.String(), w, "table:\n%s", out.String())
	}
	js, err := res.MarshalIndent()
	require.NoError(t, err)
	assert.True(t, json.Valid(js))
}

// An interrupted run returns what it has with the context's error; bad
// configurations are refused.
func TestRunC2DLimits(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := RunC2D(ctx, C2DConfig{Messages: 3, InProcess: true})
	assert.ErrorIs(t, err, context.Canceled)
	assert.NotNil(t, res)

	for _, bad := range []C2DConfig{{Messages: -1, InProcess: true}, {Window: 51, InProcess: true},
		{Transports: []string{"pigeon"}, InProcess: true}, {Rounds: -1, InProcess: true}, {}} {
		assert.Error(t, bad.Validate(), "%+v", bad)
	}
	assert.NoError(t, C2DConfig{InProcess: true}.Validate())
}

func TestC2DRatios(t *testing.T) {
	rows := []C2DRow{
		{Name: "go-sdk/mqtt", Impl: ImplGoSDK, Transport: "mqtt", Status: "ok", MsgsPerSec: 200, DeviceCPUPerMsg: 10, TotalCPUPerMsg: 40,
			Latency: &Latency{P50: 100, P90: 200}},
		{Name: "node-sdk/mqtt", Impl: ImplNodeSDK, Transport: "mqtt", Status: "ok", MsgsPerSec: 100, DeviceCPUPerMsg: 40, TotalCPUPerMsg: 80,
			Latency: &Latency{P50: 400, P90: 400}},
		{Name: "go-sdk/amqp", Impl: ImplGoSDK, Transport: "amqp", Status: "ok", MsgsPerSec: 1, Latency: &Latency{P50: 1}},
		{Name: "node-sdk/amqp", Impl: ImplNodeSDK, Transport: "amqp", Status: "failed"},
	}
	q := c2dRatios(rows)
	require.Len(t, q, 1)
	assert.Equal(t, C2DRatio{A: "go-sdk/mqtt", B: "node-sdk/mqtt", MsgsPerSec: 2, P50Ratio: 0.25, P90Ratio: 0.5, DeviceCPURatio: 0.25, TotalCPURatio: 0.5}, q[0])
}
