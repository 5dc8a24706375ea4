package main

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/internal/bench"
)

// TestBenchC2D runs "iothub bench --c2d" on a few messages with the Go
// device in process and prints its table, then its JSON.
func TestBenchC2D(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := []string{"bench", "--c2d", "--inproc", "--c2d-messages", "50", "--c2d-warmup", "5", "--c2d-transports", "mqtt", "--quiet"}
	require.Equal(t, exitOK, run(args, &stdout, &stderr), "exit status; stderr: %s", stderr.String())
	for _, want := range []string{"iothub bench --c2d:", "go-sdk/mqtt", "msgs/s"} {
		assert.Contains(t, stdout.String(), want, "table")
	}
	assert.NotContains(t, stdout.String(), "Round trips", "--c2d ran the method benchmark too")

	stdout.Reset()
	args = []string{"bench", "--c2d", "--inproc", "--c2d-messages", "20", "--c2d-warmup", "2", "--c2d-transports", "amqp", "--quiet", "--output", "json"}
	require.Equal(t, exitOK, run(args, &stdout, &stderr), "exit status; stderr: %s", stderr.String())
	var res bench.C2DResult
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &res), "%s", stdout.String())
	require.Len(t, res.Rows, 1)
	assert.Equal(t, "ok", res.Rows[0].Status, res.Rows[0].Reason)
	assert.Equal(t, 20, res.Rows[0].Messages)
}

func TestBenchC2DFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--c2d", "--c2d-messages", "-1"},
		{"--c2d", "--c2d-transports", "carrier-pigeon"},
		{"--c2d", "--jobs"},
		{"--c2d", "--query"},
	} {
		var stdout, stderr bytes.Buffer
		assert.Equal(t, exitUsage, run(append([]string{"bench"}, args...), &stdout, &stderr), "%v: exit status", args)
	}
	var stdout, stderr bytes.Buffer
	assert.Equal(t, exitOK, run([]string{"bench", "-h"}, &stdout, &stderr), "-h: exit status")
	assert.Contains(t, stderr.String(), "-c2d-messages", "-h")
}

// TestBenchMultiplex runs "iothub bench --multiplex" small and in process:
// a pooled fleet on several connections, the small fleet, the calls, the
// cut and recovery, the floor and one anchor, then its JSON.
func TestBenchMultiplex(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := []string{"bench", "--multiplex", "--inproc", "--mux-devices", "300", "--mux-small", "20", "--mux-per-conn", "100",
		"--mux-calls", "40", "--mux-floor-devices", "100", "--mux-anchor-devices", "20", "--quiet", "--output", "json"}
	require.Equal(t, exitOK, run(args, &stdout, &stderr), "exit status; stderr: %s", stderr.String())
	var res bench.MuxResult
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &res), "%s", stdout.String())
	require.GreaterOrEqual(t, len(res.Rows), 4, "rows")
	assert.Equal(t, "go-sdk-pool/amqp", res.Rows[0].Name)
	assert.Equal(t, 300, res.Rows[0].Connected, res.Rows[0].FirstError)
	assert.Equal(t, "amqp-raw-pool/amqp", res.Rows[2].Name)
	assert.Equal(t, 100, res.Rows[2].Connected, res.Rows[2].FirstError)
	require.NotNil(t, res.Calls)
	assert.Equal(t, 40, res.Calls.Large.Calls)
	assert.Zero(t, res.Calls.Large.Errors+res.Calls.Small.Errors, res.Calls.Large.FirstError+res.Calls.Small.FirstError)
	require.NotNil(t, res.Recovery)
	assert.Empty(t, res.Recovery.Error)
	assert.Equal(t, 3, res.Recovery.CutConns, "connections cut")
	assert.Equal(t, 300, res.Recovery.Connected)
	assert.Equal(t, 300, res.Recovery.VerifyCalls)
	assert.Zero(t, res.Recovery.VerifyErrors, res.Recovery.VerifyFirst)
	require.Len(t, res.Targets, 5)
	assert.Equal(t, "missed", res.Targets[0].Status, "300 devices are not 100,000")

	stdout.Reset()
	args = []string{"bench", "--multiplex", "--inproc", "--mux-devices", "50", "--mux-small", "5", "--mux-calls", "5", "--mux-no-cut",
		"--mux-floor-devices", "-1", "--mux-anchor-devices", "0", "--quiet"}
	require.Equal(t, exitOK, run(args, &stdout, &stderr), "exit status; stderr: %s", stderr.String())
	for _, want := range []string{"iothub bench --multiplex:", "go-sdk-pool/amqp", "Targets", "Java MultiplexingClient"} {
		assert.Contains(t, stdout.String(), want, "table")
	}
	for _, args := range [][]string{{"--multiplex", "--c2d"}, {"--multiplex", "--mux-per-conn", "1001"}, {"--multiplex", "--mux-devices", "0"}} {
		assert.Equal(t, exitUsage, run(append([]string{"bench"}, args...), &stdout, &stderr), "%v: exit status", args)
	}
}
