package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/internal/bench"
)

// TestBenchJobs runs "iothub bench --jobs" on a few devices in process and
// prints its table.
func TestBenchJobs(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := []string{"bench", "--jobs", "--inproc", "--jobs-devices", "12", "--connect-concurrency", "4", "--quiet"}
	require.Equal(t, exitOK, run(args, &stdout, &stderr), "exit status; stderr: %s", stderr.String())
	for _, want := range []string{"iothub bench --jobs:", "job ", "InvokeDeviceMethods(c=10)", "InvokeDeviceMethods(c=16)", "calls/s"} {
		assert.Contains(t, stdout.String(), want, "table")
	}
	assert.NotContains(t, stdout.String(), "Round trips", "--jobs ran the method benchmark too")

	stdout.Reset()
	args = []string{"bench", "--jobs", "--inproc", "--jobs-devices", "5", "--jobs-transport", "amqp", "--quiet", "--output", "json"}
	require.Equal(t, exitOK, run(args, &stdout, &stderr), "exit status; stderr: %s", stderr.String())
	var res bench.JobsResult
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &res), "%s", stdout.String())
	assert.Equal(t, "amqp", res.Transport)
	require.Len(t, res.Rows, 3)
	for _, r := range res.Rows {
		assert.Equal(t, 5, r.Succeeded, "%s: %s", r.Name, r.FirstError)
	}
}

// TestBenchJobsFleetProcess runs the devices in a child process, as
// "iothub bench --jobs" does by default, whose CPU is then measured.
func TestBenchJobsFleetProcess(t *testing.T) {
	cfg := bench.JobsConfig{Devices: 20, ConnectConcurrency: 4,
		FleetCommand: []string{"env", benchHelperEnv + "=fleet", os.Args[0], "-test.run=^TestBenchHelperProcess$"}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := bench.RunJobs(ctx, cfg)
	require.NoError(t, err)
	assert.False(t, res.InProcess)
	require.Len(t, res.Rows, 3)
	for _, r := range res.Rows {
		assert.Equal(t, 20, r.Succeeded, "%s: %s", r.Name, r.FirstError)
	}
}

func TestBenchJobsFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--jobs", "--jobs-devices", "-1"},
		{"--jobs", "--jobs-transport", "carrier-pigeon"},
		{"--jobs", "--query"},
	} {
		var stdout, stderr bytes.Buffer
		assert.Equal(t, exitUsage, run(append([]string{"bench"}, args...), &stdout, &stderr), "%v: exit status", args)
	}
	var stdout, stderr bytes.Buffer
	assert.Equal(t, exitOK, run([]string{"bench", "-h"}, &stdout, &stderr), "-h: exit status")
	assert.Contains(t, stderr.String(), "-jobs-devices", "-h")
}
