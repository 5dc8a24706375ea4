package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

// A small jobs run calls every device once per row, as a job and with
// InvokeDeviceMethods at both concurrencies, and reports every row with
// every device answered. Shape only: no timed assertions.
func TestRunJobs(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const n = 50
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := RunJobs(ctx, JobsConfig{Devices: n, InProcess: true, Rounds: 2, ConnectConcurrency: 8})
	require.NoError(t, err)
	require.Len(t, res.Warmup, 2, "a job and InvokeDeviceMethods")
	for _, w := range res.Warmup {
		assert.Equal(t, n, w.Succeeded, "warm-up %s: %s", w.Name, w.FirstError)
	}
	assert.Equal(t, engine.DefaultJobDeviceConcurrency, res.JobDeviceConcurrency)

	want := []string{JobsRowJob, fmt.Sprintf(jobsRowInvoke, engine.DefaultJobDeviceConcurrency), fmt.Sprintf(jobsRowInvoke, jobsInvokeDefault)}
	require.Len(t, res.Rows, len(want), "rows")
	for i, r := range res.Rows {
		assert.Equal(t, want[i], r.Name, "row %d", i)
		assert.Equal(t, n, r.Devices, "%s: devices", r.Name)
		assert.Equal(t, n, r.Succeeded, "%s: succeeded (%s)", r.Name, r.FirstError)
		assert.Zero(t, r.Failed, "%s: failed (%s)", r.Name, r.FirstError)
		assert.Positive(t, r.Seconds, "%s: wall time", r.Name)
		assert.Positive(t, r.CallsPerSec, "%s: calls/s", r.Name)
		assert.Positive(t, r.HubCPUPerCall, "%s: CPU", r.Name)
		assert.Zero(t, r.DeviceCPUPerCall, "%s: an in-process fleet has no CPU of its own", r.Name)
		assert.Len(t, r.Rounds, 2, "%s: rounds", r.Name)
		for _, rr := range r.Rounds {
			assert.Equal(t, n, rr.Succeeded, "%s: a round: %s", r.Name, rr.FirstError)
		}
	}
	assert.Equal(t, engine.DefaultJobDeviceConcurrency, res.Rows[0].Concurrency)
	assert.Positive(t, res.Rows[0].Polls, "WaitJob read the job")
	assert.Positive(t, res.Rows[0].HubSeconds, "the hub's start and end of the job")
	require.Len(t, res.Ratios, 2, "job ÷ each InvokeDeviceMethods row")
	for _, q := range res.Ratios {
		assert.Equal(t, JobsRowJob, q.A)
		assert.Positive(t, q.SecondsRatio, "%+v", q)
		assert.Positive(t, q.HubCPURatio, "%+v", q)
	}

	var out bytes.Buffer
	res.WriteTable(&out)
	for _, w := range append(want, "iothub bench --jobs:", "calls/s", "fleet CPU µs/call", "job ÷ InvokeDeviceMethods(c=10)", "WaitJob read it") {
		assert.Contains(t, out.String(), w, "table:\n%s", out.String())
	}
	js, err := res.MarshalIndent()
	require.NoError(t, err)
	assert.True(t, json.Valid(js))
}

// An interrupted run returns what it has with the context's error; bad
// configurations are refused.
func TestRunJobsLimits(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := RunJobs(ctx, JobsConfig{Devices: 3, InProcess: true})
	assert.ErrorIs(t, err, context.Canceled)
	assert.NotNil(t, res)

	for _, bad := range []JobsConfig{{Devices: -1, InProcess: true}, {Transport: "pigeon", InProcess: true},
		{Rounds: -1, InProcess: true}, {PayloadSize: 200000, InProcess: true}, {}} {
		assert.Error(t, bad.Validate(), "%+v", bad)
	}
	assert.NoError(t, JobsConfig{InProcess: true}.Validate())
}

func TestMedianJobsRow(t *testing.T) {
	rounds := []JobsRow{
		{Name: JobsRowJob, Devices: 4, Succeeded: 4, Seconds: 1, CallsPerSec: 4, HubCPUPerCall: 30, Polls: 3},
		{Name: JobsRowJob, Devices: 4, Succeeded: 3, Failed: 1, FirstError: "x", Seconds: 3, CallsPerSec: 1, HubCPUPerCall: 10, Polls: 5},
		{Name: JobsRowJob, Devices: 4, Succeeded: 4, Seconds: 2, CallsPerSec: 2, HubCPUPerCall: 20, Polls: 4},
	}
	m := medianJobsRow(rounds)
	assert.Equal(t, 2.0, m.Seconds)
	assert.Equal(t, 2.0, m.CallsPerSec)
	assert.Equal(t, 20.0, m.HubCPUPerCall)
	assert.Equal(t, []int{3, 1, 5}, []int{m.Succeeded, m.Failed, m.Polls}, "the worst round's counts")
	assert.Equal(t, "x", m.FirstError)
	assert.Len(t, m.Rounds, 3)
}
