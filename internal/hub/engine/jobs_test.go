package engine

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine/query"
)

// answerConn is a device connection that answers every method call at
// once with status and payload, or never when hang is set.
type answerConn struct {
	mu      sync.Mutex
	s       *Session
	status  int
	payload string
	hang    bool
	seq     atomic.Int64
	calls   atomic.Int64
}

func (c *answerConn) NewRequestID() string { return strconv.FormatInt(c.seq.Add(1), 10) }
func (c *answerConn) SendMethod(rid, name string, payload []byte) error {
	c.calls.Add(1)
	c.mu.Lock()
	s, hang := c.s, c.hang
	c.mu.Unlock()
	if !hang && s != nil {
		s.Respond(rid, c.status, []byte(c.payload))
	}
	return nil
}
func (c *answerConn) Close(*Error)     {}
func (c *answerConn) Protocol() string { return "test" }

func newJobEngine(t *testing.T, cfg Config, devices ...string) *Engine {
	t.Helper()
	cfg.HostName = "h.azure-devices.net"
	e, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(e.Close)
	for _, id := range devices {
		_, herr := e.PutDevice(id, Device{}, "")
		require.Nil(t, herr, "put %s", id)
	}
	return e
}

// connectAnswering connects deviceID on an answerConn.
func connectAnswering(t *testing.T, e *Engine, deviceID string, status int, payload string, hang bool) *answerConn {
	t.Helper()
	c := &answerConn{status: status, payload: payload, hang: hang}
	s := e.Connect(auth.Identity{DeviceID: deviceID}, c, time.Time{})
	c.mu.Lock()
	c.s = s
	c.mu.Unlock()
	s.SetSubscribed(true)
	t.Cleanup(s.Disconnect)
	return c
}

func methodJob(id, cond string, start time.Time, maxExec int) string {
	b, _ := json.Marshal(map[string]any{
		"jobId": id, "type": JobTypeDeviceMethod, "queryCondition": cond,
		"cloudToDeviceMethod": map[string]any{"methodName": "reboot", "payload": map[string]any{"delay": 1},
			"responseTimeoutInSeconds": 30, "connectTimeoutInSeconds": 0},
		"startTime": start.UTC().Format(time.RFC3339Nano), "maxExecutionTimeInSeconds": maxExec,
	})
	return string(b)
}

func twinJob(id, cond string, start time.Time) string {
	b, _ := json.Marshal(map[string]any{
		"jobId": id, "type": JobTypeUpdateTwin, "queryCondition": cond,
		"updateTwin": map[string]any{"etag": "*", "tags": map[string]any{"site": "berlin"},
			"properties": map[string]any{"desired": map[string]any{"fw": "2.0"}}},
		"startTime": start.UTC().Format(time.RFC3339Nano),
	})
	return string(b)
}

func mustCreateJob(t *testing.T, e *Engine, id, body string) Job {
	t.Helper()
	j, herr := e.CreateJob(id, []byte(body))
	require.Nil(t, herr, "create job %s", id)
	return j
}

// waitJob waits until job id has status.
func waitJob(t *testing.T, e *Engine, id, status string) Job {
	t.Helper()
	var j Job
	require.Eventually(t, func() bool {
		var herr *Error
		j, herr = e.GetJob(id)
		require.Nil(t, herr)
		return j.Status == status
	}, 10*time.Second, time.Millisecond, "job %s never became %s (last %+v)", id, status, j)
	return j
}

func deviceJobsOf(t *testing.T, e *Engine, jobID string) map[string]DeviceJob {
	t.Helper()
	out := map[string]DeviceJob{}
	for _, d := range e.DeviceJobs() {
		if d.JobID == jobID {
			out[d.DeviceID] = d
		}
	}
	return out
}

func TestJobDeviceMethodOutcomes(t *testing.T) {
	e := newJobEngine(t, Config{}, "ok", "err500", "offline", "other")
	connectAnswering(t, e, "ok", 200, `{"done":true}`, false)
	connectAnswering(t, e, "err500", 500, `"broken"`, false)

	j := mustCreateJob(t, e, "j1", methodJob("j1", "deviceId IN ['ok','err500','offline']", e.JobClock(), 0))
	assert.Equal(t, JobStatusQueued, j.Status, "a job that starts now is answered queued")
	assert.EqualValues(t, defaultMaxExecutionTime, j.MaxExecutionTimeInSeconds, "default maxExecutionTimeInSeconds")
	assert.Equal(t, "reboot", j.CloudToDeviceMethod.MethodName)
	assert.JSONEq(t, `{"delay":1}`, string(j.CloudToDeviceMethod.Payload))

	j = waitJob(t, e, "j1", JobStatusCompleted)
	assert.Equal(t, JobStatistics{DeviceCount: 3, SucceededCount: 2, FailedCount: 1}, j.DeviceJobStatistics)
	assert.NotEmpty(t, j.EndTime)

	djs := deviceJobsOf(t, e, "j1")
	require.Len(t, djs, 3, "device jobs: the three matched devices only")
	ok := djs["ok"]
	assert.Equal(t, DeviceJobCompleted, ok.Status)
	require.NotNil(t, ok.Outcome.DeviceMethodResponse)
	assert.Equal(t, 200, ok.Outcome.DeviceMethodResponse.Status)
	assert.JSONEq(t, `{"done":true}`, string(ok.Outcome.DeviceMethodResponse.Payload))
	assert.NotEmpty(t, ok.StartTimeUTC)
	assert.NotEmpty(t, ok.EndTimeUTC)
	assert.Equal(t, JobTypeDeviceMethod, ok.JobType)

	// A device that answers 500 did run the method: completed [inf].
	bad := djs["err500"]
	assert.Equal(t, DeviceJobCompleted, bad.Status)
	require.NotNil(t, bad.Outcome.DeviceMethodResponse)
	assert.Equal(t, 500, bad.Outcome.DeviceMethodResponse.Status)

	off := djs["offline"]
	assert.Equal(t, DeviceJobFailed, off.Status)
	require.NotNil(t, off.Error)
	assert.Equal(t, "DeviceNotOnline", off.Error.Code)
	assert.Nil(t, off.Outcome.DeviceMethodResponse)
}

func TestJobScheduledUpdateTwinRunsWhenClockAdvances(t *testing.T) {
	e := newJobEngine(t, Config{}, "a", "b")
	_, herr := e.UpdateTwin("a", "", []byte(`{"tags":{"floor":3}}`), "")
	require.Nil(t, herr)

	j := mustCreateJob(t, e, "later", twinJob("later", "tags.floor = 3", e.JobClock().Add(time.Hour)))
	assert.Equal(t, JobStatusScheduled, j.Status)
	assert.Nil(t, j.CloudToDeviceMethod)
	assert.JSONEq(t, `{"etag":"*","tags":{"site":"berlin"},"properties":{"desired":{"fw":"2.0"}}}`, string(j.UpdateTwin))

	// Not yet due: the scheduler leaves it alone.
	e.AdvanceJobClock(30 * time.Minute)
	j, herr = e.GetJob("later")
	require.Nil(t, herr)
	assert.Equal(t, JobStatusScheduled, j.Status)
	assert.Zero(t, j.DeviceJobStatistics.DeviceCount)

	e.AdvanceJobClock(31 * time.Minute)
	j = waitJob(t, e, "later", JobStatusCompleted)
	assert.Equal(t, JobStatistics{DeviceCount: 1, SucceededCount: 1}, j.DeviceJobStatistics)

	tw, herr := e.GetTwin("a", "")
	require.Nil(t, herr)
	assert.Contains(t, string(tw.Tags), `"site":"berlin"`)
	assert.Contains(t, string(tw.Properties), `"fw":"2.0"`)
	tw, herr = e.GetTwin("b", "")
	require.Nil(t, herr)
	assert.NotContains(t, string(tw.Tags), "berlin", "b did not match the condition")

	dj := deviceJobsOf(t, e, "later")["a"]
	assert.Equal(t, DeviceJobCompleted, dj.Status)
	assert.Nil(t, dj.Outcome.DeviceMethodResponse)
	b, err := json.Marshal(dj)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"outcome":{"deviceMethodResponse":null}`, "as in IoT Hub's query-jobs sample")
}

func TestJobMaxExecutionTime(t *testing.T) {
	e := newJobEngine(t, Config{}, "slow")
	c := connectAnswering(t, e, "slow", 200, "", true)
	mustCreateJob(t, e, "j", methodJob("j", "deviceId = 'slow'", e.JobClock(), 60))
	require.Eventually(t, func() bool { return c.calls.Load() == 1 }, 10*time.Second, time.Millisecond)
	j, herr := e.GetJob("j")
	require.Nil(t, herr)
	assert.Equal(t, JobStatusRunning, j.Status)
	assert.Equal(t, JobStatistics{DeviceCount: 1, RunningCount: 1}, j.DeviceJobStatistics)

	e.AdvanceJobClock(59 * time.Second)
	j, herr = e.GetJob("j")
	require.Nil(t, herr)
	assert.Equal(t, JobStatusRunning, j.Status, "before its maxExecutionTime")

	e.AdvanceJobClock(2 * time.Second)
	j = waitJob(t, e, "j", JobStatusCompleted)
	assert.Equal(t, JobStatistics{DeviceCount: 1}, j.DeviceJobStatistics, "the device job was canceled")
	assert.NotEmpty(t, j.StatusMessage)
	assert.Equal(t, DeviceJobCanceled, deviceJobsOf(t, e, "j")["slow"].Status)
}

func TestJobCancel(t *testing.T) {
	e := newJobEngine(t, Config{MaxActiveJobs: -1}, "d1", "d2", "d3")
	for _, id := range []string{"d1", "d2", "d3"} {
		connectAnswering(t, e, id, 200, "", true)
	}
	// A running job: its devices not done end canceled.
	e2 := e
	mustCreateJob(t, e2, "run", methodJob("run", "deviceId IN ['d1','d2','d3']", e.JobClock(), 0))
	require.Eventually(t, func() bool {
		j, _ := e.GetJob("run")
		return j.DeviceJobStatistics.RunningCount == 3
	}, 10*time.Second, time.Millisecond)
	j, herr := e.CancelJob("run")
	require.Nil(t, herr)
	assert.Equal(t, JobStatusCancelled, j.Status)
	require.Eventually(t, func() bool {
		j, _ := e.GetJob("run")
		return j.EndTime != "" && j.DeviceJobStatistics.RunningCount == 0
	}, 10*time.Second, time.Millisecond)
	j, _ = e.GetJob("run")
	assert.Equal(t, JobStatusCancelled, j.Status)
	for id, dj := range deviceJobsOf(t, e, "run") {
		assert.Equal(t, DeviceJobCanceled, dj.Status, id)
	}

	// A scheduled job never starts.
	mustCreateJob(t, e, "sched", methodJob("sched", "deviceId = 'd1'", e.JobClock().Add(time.Hour), 0))
	j, herr = e.CancelJob("sched")
	require.Nil(t, herr)
	assert.Equal(t, JobStatusCancelled, j.Status)
	e.AdvanceJobClock(2 * time.Hour)
	j, _ = e.GetJob("sched")
	assert.Equal(t, JobStatusCancelled, j.Status)
	assert.Zero(t, j.DeviceJobStatistics.DeviceCount)

	_, herr = e.CancelJob("nope")
	require.NotNil(t, herr)
	assert.Equal(t, CodeJobNotFound, herr.Code)
	assert.Equal(t, 404, herr.Status)
}

func TestJobActiveLimit(t *testing.T) {
	e := newJobEngine(t, Config{}, "d1")
	mustCreateJob(t, e, "first", methodJob("first", "deviceId = 'd1'", e.JobClock().Add(time.Hour), 0))
	_, herr := e.CreateJob("second", []byte(methodJob("second", "deviceId = 'd1'", e.JobClock(), 0)))
	require.NotNil(t, herr, "S1 allows one active job")
	assert.Equal(t, CodeThrottlingMaxActiveJobCount, herr.Code)
	assert.Equal(t, 429, herr.Status)
	assert.Equal(t, "ThrottlingMaxActiveJobCountExceeded", herr.Name)

	_, herr = e.CancelJob("first")
	require.Nil(t, herr)
	mustCreateJob(t, e, "second", methodJob("second", "deviceId = 'd1'", e.JobClock(), 0))

	// Finished jobs keep their id.
	waitJob(t, e, "second", JobStatusCompleted)
	_, herr = e.CreateJob("second", []byte(methodJob("second", "deviceId = 'd1'", e.JobClock(), 0)))
	require.NotNil(t, herr)
	assert.Equal(t, CodeJobAlreadyExists, herr.Code)
	assert.Equal(t, 409, herr.Status)

	e3 := newJobEngine(t, Config{MaxActiveJobs: 3}, "d1")
	for i := range 3 {
		id := fmt.Sprintf("j%d", i)
		mustCreateJob(t, e3, id, methodJob(id, "deviceId = 'd1'", e3.JobClock().Add(time.Hour), 0))
	}
	_, herr = e3.CreateJob("j3", []byte(methodJob("j3", "deviceId = 'd1'", e3.JobClock().Add(time.Hour), 0)))
	require.NotNil(t, herr)
	assert.Equal(t, CodeThrottlingMaxActiveJobCount, herr.Code)
}

func TestJobDeviceConcurrency(t *testing.T) {
	devs := []string{"d1", "d2", "d3", "d4", "d5"}
	e := newJobEngine(t, Config{JobDeviceConcurrency: 2}, devs...)
	for _, id := range devs {
		connectAnswering(t, e, id, 200, "", true)
	}
	mustCreateJob(t, e, "j", methodJob("j", "deviceId IN ['d1','d2','d3','d4','d5']", e.JobClock(), 0))
	require.Eventually(t, func() bool {
		j, _ := e.GetJob("j")
		return j.DeviceJobStatistics.RunningCount == 2
	}, 10*time.Second, time.Millisecond)
	j, _ := e.GetJob("j")
	assert.Equal(t, JobStatistics{DeviceCount: 5, RunningCount: 2, PendingCount: 3}, j.DeviceJobStatistics)
	_, herr := e.CancelJob("j")
	require.Nil(t, herr)
}

func TestJobRetention(t *testing.T) {
	e := newJobEngine(t, Config{}, "d1")
	mustCreateJob(t, e, "old", twinJob("old", "deviceId = 'd1'", e.JobClock()))
	waitJob(t, e, "old", JobStatusCompleted)
	require.Len(t, deviceJobsOf(t, e, "old"), 1)
	e.AdvanceJobClock(DefaultJobRetention + time.Second)
	_, herr := e.GetJob("old")
	require.NotNil(t, herr, "30 days after it ended the job is gone")
	assert.Equal(t, CodeJobNotFound, herr.Code)
	assert.Empty(t, deviceJobsOf(t, e, "old"))
}

func TestQueryJobsAndDeviceJobsCollection(t *testing.T) {
	e := newJobEngine(t, Config{MaxActiveJobs: -1}, "d1", "d2")
	mustCreateJob(t, e, "tw", twinJob("tw", "deviceId IN ['d1','d2']", e.JobClock()))
	waitJob(t, e, "tw", JobStatusCompleted)
	mustCreateJob(t, e, "m", methodJob("m", "deviceId = 'd1'", e.JobClock().Add(time.Hour), 0))

	all, herr := e.QueryJobs("", "")
	require.Nil(t, herr)
	require.Len(t, all, 2)
	assert.Equal(t, "tw", all[0].JobID, "creation order")
	got, herr := e.QueryJobs("ScheduleDeviceMethod", "") // .NET's enum name
	require.Nil(t, herr)
	require.Len(t, got, 1)
	assert.Equal(t, "m", got[0].JobID)
	got, herr = e.QueryJobs("", "completed")
	require.Nil(t, herr)
	require.Len(t, got, 1)
	assert.Equal(t, "tw", got[0].JobID)
	_, herr = e.QueryJobs("bogus", "")
	require.NotNil(t, herr)
	assert.Equal(t, CodeArgumentInvalid, herr.Code)

	q, err := query.Parse("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'tw' AND devices.jobs.deviceId = 'd2'")
	require.NoError(t, err)
	rows, err := q.Run(e.QueryTwins(CollectionJobs))
	require.NoError(t, err)
	require.Len(t, rows, 1)
	doc := rows[0].(map[string]any)
	assert.Equal(t, "d2", doc["deviceId"])
	assert.Equal(t, JobTypeUpdateTwin, doc["jobType"])
	assert.Equal(t, DeviceJobCompleted, doc["status"])
	for _, k := range []string{"createdDateTimeUtc", "lastUpdatedDateTimeUtc", "startTimeUtc", "endTimeUtc", "outcome"} {
		assert.Contains(t, doc, k)
	}
}

func TestJobRequestValidation(t *testing.T) {
	now := time.Now()
	good := methodJob("j", "deviceId = 'd1'", now, 0)
	cases := []struct {
		name, id, body string
		code           int
	}{
		{"bad id", "a/b", good, CodeArgumentInvalid},
		{"long id", string(make([]byte, 200)), good, CodeArgumentInvalid},
		{"not json", "j", `{`, CodeArgumentInvalid},
		{"trailing data", "j", good + `{}`, CodeArgumentInvalid},
		{"id mismatch", "other", good, CodeArgumentInvalid},
		{"no type", "j", `{"jobId":"j","queryCondition":"deviceId = 'a'"}`, CodeArgumentNull},
		{"import type", "j", `{"jobId":"j","type":"import","queryCondition":"deviceId = 'a'"}`, CodeArgumentInvalid},
		{"no condition", "j", `{"jobId":"j","type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"m"}}`, CodeArgumentNull},
		{"bad condition", "j", `{"jobId":"j","type":"scheduleDeviceMethod","queryCondition":"deviceId ==","cloudToDeviceMethod":{"methodName":"m"}}`, CodeArgumentInvalid},
		{"no method", "j", `{"jobId":"j","type":"scheduleDeviceMethod","queryCondition":"deviceId = 'a'"}`, CodeArgumentNull},
		{"no method name", "j", `{"jobId":"j","type":"scheduleDeviceMethod","queryCondition":"deviceId = 'a'","cloudToDeviceMethod":{}}`, CodeArgumentNull},
		{"bad method name", "j", `{"jobId":"j","type":"scheduleDeviceMethod","queryCondition":"deviceId = 'a'","cloudToDeviceMethod":{"methodName":"a b"}}`, CodeArgumentInvalid},
		{"response timeout", "j", `{"jobId":"j","type":"scheduleDeviceMethod","queryCondition":"deviceId = 'a'","cloudToDeviceMethod":{"methodName":"m","responseTimeoutInSeconds":4}}`, CodeArgumentInvalid},
		{"connect timeout", "j", `{"jobId":"j","type":"scheduleDeviceMethod","queryCondition":"deviceId = 'a'","cloudToDeviceMethod":{"methodName":"m","connectTimeoutInSeconds":301}}`, CodeArgumentInvalid},
		{"no twin", "j", `{"jobId":"j","type":"scheduleUpdateTwin","queryCondition":"deviceId = 'a'"}`, CodeArgumentNull},
		{"twin etag", "j", `{"jobId":"j","type":"scheduleUpdateTwin","queryCondition":"deviceId = 'a'","updateTwin":{"tags":{"a":1}}}`, CodePreconditionFailed},
		{"twin reported only is fine but bad tags", "j", `{"jobId":"j","type":"scheduleUpdateTwin","queryCondition":"deviceId = 'a'","updateTwin":{"etag":"*","tags":{"$bad":1}}}`, CodeArgumentInvalid},
		{"start time", "j", `{"jobId":"j","type":"scheduleUpdateTwin","queryCondition":"deviceId = 'a'","updateTwin":{"etag":"*"},"startTime":"tomorrow"}`, CodeArgumentInvalid},
		{"negative max", "j", `{"jobId":"j","type":"scheduleUpdateTwin","queryCondition":"deviceId = 'a'","updateTwin":{"etag":"*"},"maxExecutionTimeInSeconds":-1}`, CodeArgumentInvalid},
		{"fractional max", "j", `{"jobId":"j","type":"scheduleUpdateTwin","queryCondition":"deviceId = 'a'","updateTwin":{"etag":"*"},"maxExecutionTimeInSeconds":1.5}`, CodeArgumentInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, herr := ParseJobRequest(tc.id, []byte(tc.body))
			require.NotNil(t, herr)
			assert.Equal(t, tc.code, herr.Code, herr.Message)
		})
	}
	// Accepted shapes: .NET's zone-less start time, a missing jobId in
	// the body, a null payload.
	for _, body := range []string{
		`{"type":"scheduleUpdateTwin","queryCondition":"deviceId = 'a'","updateTwin":{"etag":"*","deviceId":"x"},"startTime":"2026-01-01T00:00:00"}`,
		`{"jobId":"j","type":"scheduleDeviceMethod","queryCondition":"tags.site = 'x'","cloudToDeviceMethod":{"methodName":"m","payload":null}}`,
		"\xef\xbb\xbf " + good,
	} {
		_, herr := ParseJobRequest("j", []byte(body))
		assert.Nil(t, herr, body)
	}
}

func TestJobsStopOnClose(t *testing.T) {
	e, err := New(Config{HostName: "h"})
	require.NoError(t, err)
	_, herr := e.PutDevice("d1", Device{}, "")
	require.Nil(t, herr)
	c := connectAnswering(t, e, "d1", 200, "", true)
	mustCreateJob(t, e, "j", methodJob("j", "deviceId = 'd1'", e.JobClock(), 0))
	require.Eventually(t, func() bool { return c.calls.Load() == 1 }, 10*time.Second, time.Millisecond)
	done := make(chan struct{})
	go func() { e.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		require.FailNow(t, "Close did not return while a job was running")
	}
	_, herr = e.CreateJob("k", []byte(methodJob("k", "deviceId = 'd1'", e.JobClock(), 0)))
	require.NotNil(t, herr)
	assert.Equal(t, CodeServiceUnavailable, herr.Code)
}

func FuzzParseJobRequest(f *testing.F) {
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	f.Add("j1", methodJob("j1", "deviceId IN ['a','b']", now, 60))
	f.Add("j2", twinJob("j2", "tags.site = 'berlin'", now))
	f.Add("j", `{"jobId":"j","type":"scheduleUpdateTwin","queryCondition":"deviceId = 'a'","updateTwin":{"etag":"*","properties":{"desired":{"a":null}}}}`)
	f.Add("x", `{"type":"scheduleDeviceMethod","queryCondition":"properties.reported.v > 2 AND NOT is_defined(tags.x)","cloudToDeviceMethod":{"methodName":"m","payload":[1,2]},"maxExecutionTimeInSeconds":0}`)
	f.Add("", `null`)
	f.Add("j", `{"jobId":7}`)
	f.Fuzz(func(t *testing.T, id, body string) {
		j, herr := ParseJobRequest(id, []byte(body))
		if herr != nil {
			if herr.Status != 400 && herr.Status != 412 {
				t.Fatalf("status %d for a bad request: %v", herr.Status, herr)
			}
			return
		}
		if j.JobID != id || !ValidJobID(id) {
			t.Fatalf("accepted job id %q as %q", id, j.JobID)
		}
		if j.Type != JobTypeDeviceMethod && j.Type != JobTypeUpdateTwin {
			t.Fatalf("accepted type %q", j.Type)
		}
		if (j.Type == JobTypeDeviceMethod) != (j.CloudToDeviceMethod != nil) {
			t.Fatalf("method presence does not match type %q", j.Type)
		}
		if j.MaxExecutionTimeInSeconds <= 0 {
			t.Fatalf("maxExecutionTimeInSeconds %d", j.MaxExecutionTimeInSeconds)
		}
		if _, err := json.Marshal(j); err != nil {
			t.Fatalf("accepted job does not encode: %v", err)
		}
	})
}
