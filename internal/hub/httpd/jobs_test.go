package httpd

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

// newJobHub is newTestHub with an engine configuration for jobs.
func newJobHub(t *testing.T, cfg engine.Config) *testHub {
	t.Helper()
	cfg.HostName = testHost
	e, err := engine.New(cfg)
	require.NoError(t, err, "new engine")
	srv := httptest.NewTLSServer(NewHandler(e))
	t.Cleanup(srv.Close)
	t.Cleanup(e.Close)
	return &testHub{t: t, e: e, srv: srv}
}

// jobCall runs a jobs request with a policy's token.
func (h *testHub) jobCall(policy, method, path, body string, headers map[string]string) response {
	h.t.Helper()
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return h.do(request{method: method, path: path + sep + apiVersion, body: body, auth: h.token(policy), headers: headers})
}

func methodJobBody(id, cond string, start time.Time) string {
	b, _ := json.Marshal(map[string]any{
		"jobId": id, "type": "scheduleDeviceMethod", "queryCondition": cond,
		"cloudToDeviceMethod": map[string]any{"methodName": "reboot", "payload": map[string]any{"in": 1},
			"responseTimeoutInSeconds": 30},
		"startTime": start.UTC().Format(time.RFC3339), "maxExecutionTimeInSeconds": 600,
	})
	return string(b)
}

func twinJobBody(id, cond string, start time.Time) string {
	b, _ := json.Marshal(map[string]any{
		"jobId": id, "type": "scheduleUpdateTwin", "queryCondition": cond,
		"updateTwin": map[string]any{"etag": "*", "tags": map[string]any{"fw": "pending"}},
		"startTime":  start.UTC().Format(time.RFC3339),
	})
	return string(b)
}

// waitJobStatus polls GET /jobs/v2/{id} until the job has status.
func (h *testHub) waitJobStatus(id, status string) engine.Job {
	h.t.Helper()
	var j engine.Job
	require.Eventually(h.t, func() bool {
		res := h.jobCall("service", http.MethodGet, "/jobs/v2/"+id, "", nil)
		if res.status != http.StatusOK {
			return false
		}
		j = decodeJSON[engine.Job](h.t, res)
		return j.Status == status
	}, 10*time.Second, 5*time.Millisecond, "job %s never became %s (last %+v)", id, status, j)
	return j
}

func TestJobsDeviceMethodOverHTTPS(t *testing.T) {
	h := newTestHub(t)
	ok, _ := h.device("ok", echo)
	h.device("fails", func(string, []byte) (int, []byte, bool) { return 500, []byte(`{"why":"no"}`), true })
	h.createDevice("offline")
	h.createDevice("untouched")

	res := h.jobCall("service", http.MethodPut, "/jobs/v2/m1", methodJobBody("m1", "deviceId IN ['ok','fails','offline']", time.Now()), nil)
	wantOK(t, res)
	j := decodeJSON[map[string]any](t, res)
	assert.Equal(t, "m1", j["jobId"])
	assert.Equal(t, "scheduleDeviceMethod", j["type"])
	assert.Equal(t, "queued", j["status"])
	assert.Contains(t, j, "createdTime")
	assert.Contains(t, j, "deviceJobStatistics")

	done := h.waitJobStatus("m1", engine.JobStatusCompleted)
	assert.Equal(t, engine.JobStatistics{DeviceCount: 3, SucceededCount: 2, FailedCount: 1}, done.DeviceJobStatistics)
	call := ok.lastCall(t)
	assert.Equal(t, "reboot", call.name)
	assert.JSONEq(t, `{"in":1}`, string(call.payload))

	// The device jobs, through the query endpoint.
	items := queryItems(t, h.runQuery("service", "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'm1'", nil), "deviceJob")
	require.Len(t, items, 3)
	byID := map[string]map[string]any{}
	for _, it := range items {
		byID[it["deviceId"].(string)] = it
	}
	assert.Equal(t, "completed", byID["ok"]["status"])
	assert.Equal(t, map[string]any{"deviceMethodResponse": map[string]any{"status": float64(200), "payload": map[string]any{"in": float64(1)}}}, byID["ok"]["outcome"])
	assert.Equal(t, "completed", byID["fails"]["status"], "a 500 from the device is the device's answer")
	assert.Equal(t, "failed", byID["offline"]["status"])
	assert.Equal(t, "DeviceNotOnline", byID["offline"]["error"].(map[string]any)["code"])

	items = queryItems(t, h.runQuery("service", "SELECT * FROM devices.jobs WHERE devices.jobs.status = 'failed'", nil), "deviceJob")
	require.Len(t, items, 1)
	assert.Equal(t, "offline", items[0]["deviceId"])
}

func TestJobsScheduleAdvanceCancel(t *testing.T) {
	h := newTestHub(t)
	h.createDevice("d1")
	_, herr := h.e.UpdateTwin("d1", "", []byte(`{"tags":{"site":"berlin"}}`), "")
	require.Nil(t, herr)

	res := h.jobCall("iothubowner", http.MethodPut, "/jobs/v2/later", twinJobBody("later", "tags.site = 'berlin'", time.Now().Add(time.Hour)), nil)
	wantOK(t, res)
	assert.Equal(t, "scheduled", decodeJSON[engine.Job](t, res).Status)

	// S1 allows one active job: a second is throttled.
	res = h.jobCall("iothubowner", http.MethodPut, "/jobs/v2/second", twinJobBody("second", "tags.site = 'berlin'", time.Now()), nil)
	wantRegistryError(t, res, engine.CodeThrottlingMaxActiveJobCount)

	h.e.AdvanceJobClock(time.Hour + time.Second)
	h.waitJobStatus("later", engine.JobStatusCompleted)
	tw, herr := h.e.GetTwin("d1", "")
	require.Nil(t, herr)
	assert.Contains(t, string(tw.Tags), `"fw":"pending"`)

	// The same id again: 409.
	res = h.jobCall("iothubowner", http.MethodPut, "/jobs/v2/later", twinJobBody("later", "tags.site = 'berlin'", time.Now()), nil)
	wantRegistryError(t, res, engine.CodeJobAlreadyExists)

	// Cancel a scheduled job.
	res = h.jobCall("iothubowner", http.MethodPut, "/jobs/v2/c1", twinJobBody("c1", "tags.site = 'berlin'", h.e.JobClock().Add(time.Hour)), nil)
	wantOK(t, res)
	res = h.jobCall("iothubowner", http.MethodPost, "/jobs/v2/c1/cancel", "", nil)
	wantOK(t, res)
	assert.Equal(t, "cancelled", decodeJSON[engine.Job](t, res).Status)

	wantRegistryError(t, h.jobCall("service", http.MethodGet, "/jobs/v2/nope", "", nil), engine.CodeJobNotFound)
	wantRegistryError(t, h.jobCall("service", http.MethodPost, "/jobs/v2/nope/cancel", "", nil), engine.CodeJobNotFound)
}

func TestJobsQueryPages(t *testing.T) {
	h := newJobHub(t, engine.Config{MaxActiveJobs: -1})
	h.createDevice("d1")
	start := time.Now().Add(time.Hour)
	for i := range 5 {
		id := fmt.Sprintf("job%d", i)
		body := twinJobBody(id, "deviceId = 'd1'", start)
		if i%2 == 1 {
			body = methodJobBody(id, "deviceId = 'd1'", start)
		}
		wantOK(t, h.jobCall("service", http.MethodPut, "/jobs/v2/"+id, body, nil))
	}

	var ids []string
	token := ""
	for range 5 {
		hdr := map[string]string{"x-ms-max-item-count": "2", "x-ms-continuation": token}
		res := h.jobCall("service", http.MethodGet, "/jobs/v2/query", "", hdr)
		wantOK(t, res)
		assert.Equal(t, "jobResponse", res.header.Get("x-ms-item-type"))
		for _, j := range decodeJSON[[]engine.Job](t, res) {
			ids = append(ids, j.JobID)
		}
		token = res.header.Get("x-ms-continuation")
		if token == "" {
			break
		}
	}
	assert.Equal(t, []string{"job0", "job1", "job2", "job3", "job4"}, ids)

	// Filters: .NET sends its enum names, Node the wire values.
	res := h.jobCall("service", http.MethodGet, "/jobs/v2/query?jobType=ScheduleDeviceMethod&jobStatus=Scheduled", "", nil)
	got := decodeJSON[[]engine.Job](t, res)
	require.Len(t, got, 2)
	assert.Equal(t, "job1", got[0].JobID)
	res = h.jobCall("service", http.MethodGet, "/jobs/v2/query?jobType=scheduleUpdateTwin", "", nil)
	assert.Len(t, decodeJSON[[]engine.Job](t, res), 3)
	res = h.jobCall("service", http.MethodGet, "/jobs/v2/query?jobStatus=completed", "", nil)
	wantOK(t, res)
	assert.JSONEq(t, `[]`, string(res.body))

	wantRegistryError(t, h.jobCall("service", http.MethodGet, "/jobs/v2/query?jobType=bogus", "", nil), engine.CodeArgumentInvalid)
	wantRegistryError(t, h.jobCall("service", http.MethodGet, "/jobs/v2/query", "", map[string]string{"x-ms-continuation": "garbage"}), engine.CodeArgumentInvalid)
	wantRegistryError(t, h.jobCall("service", http.MethodGet, "/jobs/v2/query", "", map[string]string{"x-ms-max-item-count": "0"}), engine.CodeArgumentInvalid)
}

func TestJobsRequestErrors(t *testing.T) {
	h := newTestHub(t)
	cases := []struct {
		name, body string
		code       int
	}{
		{"not json", `{`, engine.CodeArgumentInvalid},
		{"no condition", `{"jobId":"j","type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"m"}}`, engine.CodeArgumentNull},
		{"bad condition", `{"jobId":"j","type":"scheduleDeviceMethod","queryCondition":"deviceId = ","cloudToDeviceMethod":{"methodName":"m"}}`, engine.CodeArgumentInvalid},
		{"twin without etag", `{"jobId":"j","type":"scheduleUpdateTwin","queryCondition":"deviceId = 'a'","updateTwin":{"tags":{"a":1}}}`, engine.CodePreconditionFailed},
		{"id mismatch", `{"jobId":"other","type":"scheduleUpdateTwin","queryCondition":"deviceId = 'a'","updateTwin":{"etag":"*"}}`, engine.CodeArgumentInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantRegistryError(t, h.in(t).jobCall("service", http.MethodPut, "/jobs/v2/j", tc.body, nil), tc.code)
		})
	}
	big := `{"jobId":"j","type":"scheduleDeviceMethod","queryCondition":"deviceId = 'a'","cloudToDeviceMethod":{"methodName":"m","payload":"` +
		strings.Repeat("x", maxJobBody) + `"}}`
	wantRegistryError(t, h.jobCall("service", http.MethodPut, "/jobs/v2/j", big, nil), engine.CodeMessageTooLarge)
}

func TestJobsRoutesAndRights(t *testing.T) {
	h := newTestHub(t)
	h.createDevice("d1")
	body := twinJobBody("r1", "deviceId = 'd1'", time.Now().Add(time.Hour))

	// Methods: 405 with Allow.
	res := h.jobCall("service", http.MethodDelete, "/jobs/v2/r1", "", nil)
	require.Equal(t, http.StatusMethodNotAllowed, res.status)
	assert.Equal(t, "GET, PUT", res.header.Get("Allow"))
	res = h.jobCall("service", http.MethodGet, "/jobs/v2/r1/cancel", "", nil)
	require.Equal(t, http.StatusMethodNotAllowed, res.status)
	assert.Equal(t, "POST", res.header.Get("Allow"))
	res = h.jobCall("service", http.MethodGet, "/jobs/v2", "", nil)
	assert.Equal(t, http.StatusNotFound, res.status)

	// Rights: the device policy can do nothing; registryRead reads only.
	wantRegistryError(t, h.jobCall("device", http.MethodPut, "/jobs/v2/r1", body, nil), engine.CodeUnauthorized)
	wantRegistryError(t, h.jobCall("registryRead", http.MethodPut, "/jobs/v2/r1", body, nil), engine.CodeUnauthorized)
	wantOK(t, h.jobCall("registryReadWrite", http.MethodPut, "/jobs/v2/r1", body, nil))
	wantOK(t, h.jobCall("registryRead", http.MethodGet, "/jobs/v2/r1", "", nil))
	wantOK(t, h.jobCall("registryRead", http.MethodGet, "/jobs/v2/query", "", nil))
	wantRegistryError(t, h.jobCall("registryRead", http.MethodPost, "/jobs/v2/r1/cancel", "", nil), engine.CodeUnauthorized)
	wantRegistryError(t, h.jobCall("device", http.MethodGet, "/jobs/v2/query", "", nil), engine.CodeUnauthorized)
	res = h.do(request{method: http.MethodGet, path: "/jobs/v2/r1?" + apiVersion})
	wantRegistryError(t, res, engine.CodeUnauthorized)
	res = h.do(request{method: http.MethodGet, path: "/jobs/v2/r1", auth: h.token("service")})
	wantRegistryError(t, res, engine.CodeInvalidProtocolVersion)

	// Literal segments match in any case; PUT /jobs/v2/query names a job.
	wantOK(t, h.jobCall("service", http.MethodGet, "/JOBS/V2/r1", "", nil))
	wantOK(t, h.jobCall("service", http.MethodPost, "/jobs/v2/r1/Cancel", "", nil))
	wantOK(t, h.jobCall("service", http.MethodPut, "/jobs/v2/query", twinJobBody("query", "deviceId = 'd1'", time.Now().Add(time.Hour)), nil))
	res = h.jobCall("service", http.MethodGet, "/jobs/v2/query", "", nil)
	wantOK(t, res)
	assert.Equal(t, "jobResponse", res.header.Get("x-ms-item-type"))
}
