package iothubtest_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/iothubtest"
)

// jobREST calls the hub's jobs API with the service policy.
func jobREST(t *testing.T, hub *iothubtest.Server, method, path, body string) (int, map[string]any) {
	t.Helper()
	cs, err := auth.ParseServiceConnectionString(hub.PolicyConnectionString("service"))
	require.NoError(t, err)
	tok, err := auth.SignSAS(cs.HostName, cs.SharedAccessKeyName, cs.SharedAccessKey, time.Now().Add(time.Hour))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "https://"+hub.Addr()+path+"?api-version=2021-04-12", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", tok)
	req.Header.Set("Content-Type", "application/json")
	res, err := hub.HTTPClient().Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, json.Unmarshal(b, &doc), "body %s", b)
	return res.StatusCode, doc
}

func TestAdvanceJobClockRunsAScheduledJob(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	hub.AddDevice(t, "thermostat")
	start := hub.JobClock().Add(time.Hour).UTC().Format(time.RFC3339)
	status, job := jobREST(t, hub, http.MethodPut, "/jobs/v2/nightly", `{"jobId":"nightly","type":"scheduleUpdateTwin",
		"queryCondition":"deviceId = 'thermostat'","updateTwin":{"etag":"*","properties":{"desired":{"mode":"eco"}}},
		"startTime":"`+start+`"}`)
	require.Equal(t, http.StatusOK, status, "PUT %v", job)
	assert.Equal(t, "scheduled", job["status"])

	hub.AdvanceJobClock(time.Hour)
	require.Eventually(t, func() bool {
		_, job = jobREST(t, hub, http.MethodGet, "/jobs/v2/nightly", "")
		return job["status"] == "completed"
	}, 10*time.Second, 5*time.Millisecond, "the job did not run after the clock moved")
	assert.Equal(t, "eco", hub.Twin(t, "thermostat").Desired["mode"])
}
