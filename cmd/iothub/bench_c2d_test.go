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
