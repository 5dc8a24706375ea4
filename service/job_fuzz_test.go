package service_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/service"
)

// FuzzDecodeJob: a job or device job from the hub never panics the
// decoder, and a decoded job encodes and decodes again to the same
// statistics and times.
func FuzzDecodeJob(f *testing.F) {
	f.Add([]byte(`{"jobId":"j","type":"scheduleDeviceMethod","status":"completed","startTime":"2026-12-06T10:00:00Z","endTime":"0001-01-01T00:00:00","maxExecutionTimeInSeconds":3600,"cloudToDeviceMethod":{"methodName":"reboot","payload":null,"responseTimeoutInSeconds":30},"deviceJobStatistics":{"deviceCount":2,"failedCount":1,"succeededCount":1,"runningCount":0,"pendingCount":0}}`))
	f.Add([]byte(`{"jobId":"t","type":"scheduleUpdateTwin","updateTwin":{"etag":"*","tags":{"a":1}},"status":"scheduled"}`))
	f.Add([]byte(`{"deviceId":"d","jobId":"j","jobType":"scheduleDeviceMethod","status":"failed","error":{"code":"DeviceNotOnline","description":"x"},"outcome":{"deviceMethodResponse":null}}`))
	f.Add([]byte(`{"deviceId":"d","status":"completed","outcome":{"deviceMethodResponse":{"status":200,"payload":{"x":[1,2]}}},"startTimeUtc":"2016-09-29T18:18:52.7418462"}`))
	f.Add([]byte(`{"cloudToDeviceMethod":{"payload":"\u0000"},"maxExecutionTimeInSeconds":-1e300}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var j service.Job
		if json.Unmarshal(b, &j) == nil {
			out, err := json.Marshal(j)
			if err == nil {
				var back service.Job
				require.NoError(t, json.Unmarshal(out, &back), "%s", out)
				require.Equal(t, j.Statistics, back.Statistics)
				require.True(t, j.StartTime.Equal(back.StartTime), "start time %v, back %v", j.StartTime, back.StartTime)
				require.Equal(t, j.ID, back.ID)
			}
		}
		var dj service.DeviceJob
		if json.Unmarshal(b, &dj) == nil && dj.MethodResult != nil {
			require.NotEmpty(t, dj.MethodResult.Payload, "a method result always has a payload")
		}
		_, _ = service.QueryPage{Items: []json.RawMessage{b}}.DeviceJobs()
	})
}
