package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/iothubtest"
)

// jobCmd runs "iothub job" with args and returns its exit code, stdout
// and stderr.
func jobCmd(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(append([]string{"job"}, args...), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestJobCommand(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	invokeEchoDevice(t, hub, hub.AddDevice(t, "dev1"), 200)
	hub.AddDevice(t, "sleepy")
	hub.AddDevice(t, "other")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, hub.CACertPEM(), 0o600))
	base := []string{"--connection-string", hub.ServiceConnectionString(), "--ca-file", caFile}
	with := func(sub string, args ...string) []string { return append(append([]string{sub}, base...), args...) }

	// A method job on two devices, one offline, waited for.
	code, out, errOut := jobCmd(with("schedule", "--id", "j1", "--condition", "deviceId IN ['dev1', 'sleepy']",
		"--method", "reboot", "--payload", `{"n":1}`, "--wait")...)
	require.Equal(t, exitFailure, code, "a device failed: exit 1; stdout %s stderr %s", out, errOut)
	assert.Contains(t, errOut, "j1 completed: 2 of 2 devices done (1 succeeded, 1 failed)", "the last progress line")
	assert.Contains(t, out, "j1 scheduleDeviceMethod completed: 2 devices, 1 succeeded, 1 failed, 0 running, 0 pending\n")
	assert.Contains(t, out, "  dev1 completed 200 {\"n\":1}\n")
	assert.Contains(t, out, "  sleepy failed DeviceNotOnline\n")

	// A twin update an hour ahead: scheduled until the clock moves.
	code, out, errOut = jobCmd(with("schedule", "--id", "t1", "--condition", "deviceId = 'other'",
		"--twin-patch", `{"tags":{"ring":2}}`, "--start", "+1h", "--output", "json")...)
	require.Equal(t, exitOK, code, errOut)
	var job map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &job), out)
	assert.Equal(t, "t1", job["jobId"])
	assert.Equal(t, "scheduled", job["status"])

	code, out, errOut = jobCmd(with("list", "--status", "scheduled")...)
	require.Equal(t, exitOK, code, errOut)
	assert.Equal(t, "t1 scheduleUpdateTwin scheduled: 0 devices, 0 succeeded, 0 failed, 0 running, 0 pending\n", out)

	hub.AdvanceJobClock(time.Hour)
	code, out, errOut = jobCmd(with("wait", "--id", "t1")...)
	require.Equal(t, exitOK, code, "stdout %s stderr %s", out, errOut)
	assert.Contains(t, out, "t1 scheduleUpdateTwin completed: 1 devices, 1 succeeded")
	assert.Contains(t, out, "  other completed\n")

	code, out, errOut = jobCmd(with("show", "--id", "j1", "--devices", "--output", "json")...)
	require.Equal(t, exitOK, code, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3, "the job and its two devices: %s", out)
	for _, l := range lines {
		assert.True(t, json.Valid([]byte(l)), l)
	}

	// Cancel a job that has not started.
	code, _, errOut = jobCmd(with("schedule", "--id", "c1", "--condition", "deviceId = 'dev1'", "--method", "m", "--start", "+24h")...)
	require.Equal(t, exitOK, code, errOut)
	code, out, errOut = jobCmd(with("cancel", "--id", "c1")...)
	require.Equal(t, exitOK, code, errOut)
	assert.Contains(t, out, "c1 scheduleDeviceMethod cancelled")

	// Refusals.
	for _, tc := range []struct {
		args []string
		code int
		has  string
	}{
		{with("schedule", "--id", "x", "--method", "m"), exitUsage, "--condition is required"},
		{with("schedule", "--id", "x", "--condition", "deviceId = 'a'"), exitUsage, "exactly one of --method and --twin-patch"},
		{with("schedule", "--id", "x", "--condition", "deviceId = 'a'", "--method", "m", "--start", "tomorrow"), exitUsage, "--start"},
		{with("schedule", "--id", "x", "--condition", "deviceId =", "--method", "m"), exitFailure, "400004"},
		{with("show", "--id", "nope"), exitFailure, "JobNotFound"},
		{with("show"), exitUsage, "--id is required"},
		{[]string{"frobnicate"}, exitUsage, "unknown job command"},
		{nil, exitUsage, "usage: iothub job"},
	} {
		code, _, errOut := jobCmd(tc.args...)
		assert.Equal(t, tc.code, code, "%v: %s", tc.args, errOut)
		assert.Contains(t, errOut, tc.has, "%v", tc.args)
		assert.NotContains(t, errOut, "SharedAccessKey=", "%v: the key leaked", tc.args)
	}
}

func TestParseStart(t *testing.T) {
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	got, err := parseStart("+90m", now)
	require.NoError(t, err)
	assert.Equal(t, now.Add(90*time.Minute), got)
	got, err = parseStart("2026-12-07T08:00:00Z", now)
	require.NoError(t, err)
	assert.Equal(t, time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC), got)
	for _, bad := range []string{"+", "+-1h", "soon", "2026-12-07"} {
		_, err := parseStart(bad, now)
		assert.Error(t, err, bad)
	}
}
