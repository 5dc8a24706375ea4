package service_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// jobFleet registers n devices tagged site berlin (even) or paris (odd);
// the berlin ones but the last are connected and answer "reboot" with 200
// and the payload they got. It returns the berlin ids, the last offline.
func jobFleet(t *testing.T, hub *iothubtest.Server, c *service.Client, n int) (berlin []string) {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		id := fmt.Sprintf("job%02d", i)
		cs := hub.AddDevice(t, id)
		site := "paris"
		if i%2 == 0 {
			site = "berlin"
			berlin = append(berlin, id)
		}
		_, err := c.UpdateTwin(ctx, id, &service.TwinPatch{Tags: map[string]any{"site": site}}, nil)
		require.NoError(t, err)
		if site == "berlin" && i < n-2 {
			callbackDevice(t, hub, cs, func(method string, payload []byte) (int, []byte) {
				return 200, payload
			})
		}
	}
	return berlin
}

// deviceJobs returns the devices.jobs records of a job, by device id.
func deviceJobs(t *testing.T, c *service.Client, jobID string) map[string]*service.DeviceJob {
	t.Helper()
	out := map[string]*service.DeviceJob{}
	for _, page := range allPages(t, c.NewQueryPager("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '"+jobID+"'", nil)) {
		assert.Equal(t, service.QueryItemTypeDeviceJob, page.ItemType)
		djs, err := page.DeviceJobs()
		require.NoError(t, err)
		for _, dj := range djs {
			require.Equal(t, jobID, dj.JobID)
			out[dj.DeviceID] = dj
		}
	}
	return out
}

func TestScheduleDeviceMethodJob(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c, _ := newClient(t, hub, "", nil)
	berlin := jobFleet(t, hub, c, 8) // job00 job02 job04 online, job06 offline
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	job, err := c.ScheduleDeviceMethod(ctx, "reboot-1", "tags.site = 'berlin'", service.CloudToDeviceMethod{
		MethodName: "reboot", Payload: map[string]int{"delay": 5}, ResponseTimeout: 10 * time.Second,
	}, nil)
	require.NoError(t, err)
	assert.Equal(t, "reboot-1", job.ID)
	assert.Equal(t, service.JobTypeDeviceMethod, job.Type)
	assert.Equal(t, "tags.site = 'berlin'", job.QueryCondition)
	assert.Equal(t, time.Hour, job.MaxExecutionTime, "the default maximum execution time")
	require.NotNil(t, job.Method)
	assert.Equal(t, "reboot", job.Method.MethodName)

	var seen []service.JobStatus
	done, err := c.WaitJob(ctx, "reboot-1", &service.WaitJobOptions{Interval: 20 * time.Millisecond, Progress: func(j *service.Job) {
		seen = append(seen, j.Status)
	}})
	require.NoError(t, err)
	assert.Equal(t, service.JobStatusCompleted, done.Status, "%+v", done)
	assert.Equal(t, done.Status, seen[len(seen)-1], "Progress saw the last read")
	assert.False(t, done.EndTime.IsZero(), "end time")
	assert.Equal(t, service.JobStatistics{DeviceCount: 4, SucceededCount: 3, FailedCount: 1}, done.Statistics)

	djs := deviceJobs(t, c, "reboot-1")
	require.Len(t, djs, len(berlin), "one device job per berlin device")
	for _, id := range berlin {
		dj := djs[id]
		require.NotNil(t, dj, id)
		assert.Equal(t, service.JobTypeDeviceMethod, dj.JobType, id)
		if id == berlin[len(berlin)-1] {
			assert.Equal(t, service.DeviceJobStatusFailed, dj.Status, id)
			if assert.NotNil(t, dj.Error, id) {
				assert.Equal(t, "DeviceNotOnline", dj.Error.Code, id)
			}
			continue
		}
		assert.Equal(t, service.DeviceJobStatusCompleted, dj.Status, id)
		if assert.NotNil(t, dj.MethodResult, id) {
			assert.Equal(t, 200, dj.MethodResult.Status, id)
			assert.JSONEq(t, `{"delay":5}`, string(dj.MethodResult.Payload), id)
		}
		assert.False(t, dj.EndTime.IsZero(), "%s: end time", id)
	}
}

func TestScheduledJobStartsAtItsTime(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c, _ := newClient(t, hub, "", nil)
	jobFleet(t, hub, c, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now().Add(time.Hour)
	job, err := c.ScheduleTwinUpdate(ctx, "later", "tags.site = 'berlin'",
		&service.TwinPatch{Desired: map[string]any{"firmware": "2.0"}}, &service.ScheduleJobOptions{StartTime: start, MaxExecutionTime: 10 * time.Minute})
	require.NoError(t, err)
	assert.Equal(t, service.JobTypeTwinUpdate, job.Type)
	assert.WithinDuration(t, start, job.StartTime, time.Second)
	assert.Equal(t, 10*time.Minute, job.MaxExecutionTime)
	got, err := c.GetJob(ctx, "later")
	require.NoError(t, err)
	assert.Equal(t, service.JobStatusScheduled, got.Status, "an hour before its start")
	tw, err := c.GetTwin(ctx, "job00")
	require.NoError(t, err)
	assert.NotContains(t, tw.Desired.Properties, "firmware", "applied before its start")

	hub.AdvanceJobClock(time.Hour)
	done, err := c.WaitJob(ctx, "later", &service.WaitJobOptions{Interval: 20 * time.Millisecond})
	require.NoError(t, err)
	assert.Equal(t, service.JobStatusCompleted, done.Status)
	assert.Equal(t, 1, done.Statistics.SucceededCount, "%+v", done.Statistics)
	tw, err = c.GetTwin(ctx, "job00")
	require.NoError(t, err)
	assert.JSONEq(t, `"2.0"`, string(tw.Desired.Properties["firmware"]))
	tw, err = c.GetTwin(ctx, "job01")
	require.NoError(t, err)
	assert.NotContains(t, tw.Desired.Properties, "firmware", "a paris device")
}

func TestCancelJob(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c, _ := newClient(t, hub, "", nil)
	jobFleet(t, hub, c, 2)
	ctx := context.Background()
	_, err := c.ScheduleDeviceMethod(ctx, "never", "deviceId IN ['job00']", service.CloudToDeviceMethod{MethodName: "reboot"},
		&service.ScheduleJobOptions{StartTime: time.Now().Add(24 * time.Hour)})
	require.NoError(t, err)
	job, err := c.CancelJob(ctx, "never")
	require.NoError(t, err)
	assert.Equal(t, service.JobStatusCancelled, job.Status)
	hub.AdvanceJobClock(25 * time.Hour)
	job, err = c.GetJob(ctx, "never")
	require.NoError(t, err)
	assert.Equal(t, service.JobStatusCancelled, job.Status, "a cancelled job never starts")
	assert.Empty(t, hub.Calls(), "the cancelled job invoked a method")
}

func TestListJobs(t *testing.T) {
	hub := iothubtest.NewServer(t, &iothubtest.Options{MaxActiveJobs: -1})
	c, _ := newClient(t, hub, "", nil)
	jobFleet(t, hub, c, 2)
	ctx := context.Background()
	later := &service.ScheduleJobOptions{StartTime: time.Now().Add(time.Hour)}
	for i := range 5 {
		_, err := c.ScheduleDeviceMethod(ctx, fmt.Sprintf("m%d", i), "deviceId = 'job00'", service.CloudToDeviceMethod{MethodName: "reboot"}, later)
		require.NoError(t, err)
	}
	_, err := c.ScheduleTwinUpdate(ctx, "t0", "deviceId = 'job00'", &service.TwinPatch{Tags: map[string]any{"x": 1}}, later)
	require.NoError(t, err)

	ids := func(opts *service.ListJobsOptions) []string {
		var out []string
		p := c.NewListJobsPager(opts)
		for p.More() {
			page, err := p.NextPage(ctx)
			require.NoError(t, err)
			for _, j := range page.Jobs {
				out = append(out, j.ID)
			}
			require.Less(t, len(out), 100)
		}
		sort.Strings(out)
		return out
	}
	assert.Equal(t, []string{"m0", "m1", "m2", "m3", "m4", "t0"}, ids(&service.ListJobsOptions{PageSize: 2}), "every job, two per page")
	assert.Equal(t, []string{"t0"}, ids(&service.ListJobsOptions{Type: service.JobTypeTwinUpdate}))
	assert.Equal(t, []string{"m0", "m1", "m2", "m3", "m4"}, ids(&service.ListJobsOptions{Type: service.JobTypeDeviceMethod, Status: service.JobStatusScheduled}))
	assert.Empty(t, ids(&service.ListJobsOptions{Status: service.JobStatusRunning}))
}

func TestJobRefusals(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c, a := newClient(t, hub, "", nil)
	ctx := context.Background()
	m := service.CloudToDeviceMethod{MethodName: "reboot"}

	// Refused before anything is sent.
	before := a.count()
	_, err := c.ScheduleDeviceMethod(ctx, "", "deviceId = 'a'", m, nil)
	assert.ErrorIs(t, err, service.ErrArgumentInvalid, "empty id")
	_, err = c.ScheduleDeviceMethod(ctx, "j", "", m, nil)
	assert.ErrorIs(t, err, service.ErrArgumentInvalid, "empty condition")
	_, err = c.ScheduleDeviceMethod(ctx, "j", "deviceId = 'a'", service.CloudToDeviceMethod{MethodName: "bad name"}, nil)
	assert.ErrorIs(t, err, service.ErrArgumentInvalid, "bad method name")
	_, err = c.ScheduleDeviceMethod(ctx, "j", "deviceId = 'a'", m, &service.ScheduleJobOptions{MaxExecutionTime: 1500 * time.Millisecond})
	assert.ErrorIs(t, err, service.ErrArgumentInvalid, "fractional max execution time")
	_, err = c.ScheduleTwinUpdate(ctx, "j", "deviceId = 'a'", nil, nil)
	assert.ErrorIs(t, err, service.ErrArgumentInvalid, "nil patch")
	assert.Equal(t, before, a.count(), "requests sent for refused arguments")

	// Refused by the hub.
	_, err = c.ScheduleDeviceMethod(ctx, "j", "tags.site = ", m, nil)
	var re *service.ResponseError
	require.ErrorAs(t, err, &re, "a condition the query language refuses")
	assert.ErrorIs(t, err, service.ErrArgumentInvalid)
	_, err = c.GetJob(ctx, "nope")
	assert.ErrorIs(t, err, service.ErrJobNotFound)
	_, err = c.CancelJob(ctx, "nope")
	assert.ErrorIs(t, err, service.ErrJobNotFound)

	// One active job at a time, as on an S1 hub: a scheduled job counts.
	later := &service.ScheduleJobOptions{StartTime: time.Now().Add(time.Hour)}
	_, err = c.ScheduleDeviceMethod(ctx, "first", "deviceId = 'a'", m, later)
	require.NoError(t, err)
	_, err = c.ScheduleDeviceMethod(ctx, "second", "deviceId = 'a'", m, later)
	assert.ErrorIs(t, err, service.ErrThrottled, "a second active job")
	require.ErrorAs(t, err, &re)
	assert.Equal(t, service.ErrorCodeThrottlingMaxActiveJobCountExceeded, re.ErrorCode)
	_, err = c.CancelJob(ctx, "first")
	require.NoError(t, err)
	_, err = c.ScheduleDeviceMethod(ctx, "second", "deviceId = 'a'", m, later)
	assert.NoError(t, err, "a cancelled job is not active")
}

func TestJobJSONRoundTrip(t *testing.T) {
	in := `{"jobId":"j","type":"scheduleDeviceMethod","status":"running","queryCondition":"deviceId = 'a'",
		"createdTime":"2026-12-06T10:00:00.1234567Z","startTime":"2026-12-06T10:00:01Z","endTime":"0001-01-01T00:00:00",
		"maxExecutionTimeInSeconds":60,"cloudToDeviceMethod":{"methodName":"reboot","payload":{"a":1},"responseTimeoutInSeconds":30,"connectTimeoutInSeconds":5},
		"deviceJobStatistics":{"deviceCount":3,"failedCount":1,"succeededCount":1,"runningCount":1,"pendingCount":0}}`
	var j service.Job
	require.NoError(t, json.Unmarshal([]byte(in), &j))
	assert.Equal(t, "j", j.ID)
	assert.True(t, j.EndTime.IsZero(), "IoT Hub's zero time")
	assert.Equal(t, time.Minute, j.MaxExecutionTime)
	require.NotNil(t, j.Method)
	assert.Equal(t, 5*time.Second, j.Method.ConnectTimeout)
	assert.Equal(t, service.JobStatistics{DeviceCount: 3, FailedCount: 1, SucceededCount: 1, RunningCount: 1}, j.Statistics)
	out, err := json.Marshal(j)
	require.NoError(t, err)
	var back service.Job
	require.NoError(t, json.Unmarshal(out, &back))
	assert.Equal(t, j.Statistics, back.Statistics)
	assert.Equal(t, j.CreatedTime, back.CreatedTime)
	assert.JSONEq(t, `{"a":1}`, string(back.Method.Payload.(json.RawMessage)))
}
