//go:build conformance

package conformance

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/device"
)

// TestJobsNode: the official Node JobClient schedules, polls, lists and
// cancels jobs on `iothub hub`, and reads the devices' outcomes with a
// devices.jobs query, while a Go device answers the method.
func TestJobsNode(t *testing.T) {
	h := startHub(t, "jd1", "jd2", "jd3")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dc, err := device.NewClientFromConnectionString(h.deviceCS["jd1"], &device.ClientOptions{TLSConfig: hubTLS(t, h)})
	require.NoError(t, err)
	require.NoError(t, dc.SetMethodHandler("reboot", func(_ context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
		return &device.MethodResponse{Status: 200, Payload: req.Payload}, nil
	}))
	require.NoError(t, dc.Connect(ctx))
	defer func() { assert.NoError(t, dc.Close(ctx)) }()

	res, code := nodeJSON(t, "jobs.js", "SERVICE_CS="+h.serviceCS, "CA_FILE="+h.caFile)
	require.Equal(t, 0, code, "jobs.js exit status: %s", mustJSON(res))
	field := func(m any, k string) any { mm, _ := m.(map[string]any); return mm[k] }
	num := func(v any) int { f, _ := v.(float64); return int(f) }

	method := res["method"]
	assert.Equal(t, "node-m1", field(method, "jobId"), "scheduleDeviceMethod: %s", mustJSON(method))
	assert.Equal(t, "scheduleDeviceMethod", field(method, "type"))
	assert.Contains(t, []any{"queued", "enqueued", "scheduled", "running", "completed"}, field(method, "status"))
	assert.Equal(t, 3600, num(field(method, "maxExecutionTimeInSeconds")), "Node's default")

	done := res["methodDone"]
	assert.Equal(t, "completed", field(done, "status"), "the job's end: %s", mustJSON(done))
	stats := field(done, "deviceJobStatistics")
	assert.Equal(t, 2, num(field(stats, "deviceCount")), "%s", mustJSON(stats))
	assert.Equal(t, 1, num(field(stats, "succeededCount")), "%s", mustJSON(stats))
	assert.Equal(t, 1, num(field(stats, "failedCount")), "%s", mustJSON(stats))

	djs, _ := res["deviceJobs"].([]any)
	require.Len(t, djs, 2, "devices.jobs: %s", mustJSON(res["deviceJobs"]))
	sort.Slice(djs, func(i, j int) bool { return field(djs[i], "deviceId").(string) < field(djs[j], "deviceId").(string) })
	assert.Equal(t, "jd1", field(djs[0], "deviceId"))
	assert.Equal(t, "completed", field(djs[0], "status"))
	sameJSON(t, map[string]any{"status": 200, "payload": map[string]any{"n": 1}}, field(field(djs[0], "outcome"), "deviceMethodResponse"), "jd1's answer")
	assert.Equal(t, "jd2", field(djs[1], "deviceId"))
	assert.Equal(t, "failed", field(djs[1], "status"))
	assert.Equal(t, "DeviceNotOnline", field(field(djs[1], "error"), "code"), "jd2: %s", mustJSON(djs[1]))

	assert.Equal(t, 412, num(field(res["noEtag"], "statusCode")), "a twin update job without etag '*': %s", mustJSON(res["noEtag"]))
	assert.Equal(t, "scheduleUpdateTwin", field(res["twin"], "type"))
	assert.Equal(t, "completed", field(res["twinDone"], "status"), "%s", mustJSON(res["twinDone"]))
	sameJSON(t, map[string]any{"ring": 2}, field(res["jd3"], "tags"), "jd3's tags after the job")
	assert.Equal(t, "2.0", field(field(field(res["jd3"], "properties"), "desired"), "fw"), "jd3's desired after the job")

	assert.Equal(t, "scheduled", field(res["later"], "status"), "a job an hour ahead: %s", mustJSON(res["later"]))
	assert.Equal(t, 600, num(field(res["later"], "maxExecutionTimeInSeconds")))
	assert.Equal(t, "cancelled", field(res["cancelled"], "status"))

	listed := res["listed"]
	ids, _ := field(listed, "ids").([]any)
	assert.ElementsMatch(t, []any{"node-m1", "node-later"}, ids, "method jobs listed: %s", mustJSON(listed))
	assert.GreaterOrEqual(t, num(field(listed, "pages")), 2, "pages of one job each")

	assert.Equal(t, 404, num(field(res["missing"], "statusCode")), "getJob of an unknown id: %s", mustJSON(res["missing"]))
	assert.Equal(t, 400, num(field(res["badQuery"], "statusCode")), "a condition the language refuses: %s", mustJSON(res["badQuery"]))
	assert.Contains(t, []int{400, 409}, num(field(res["duplicate"], "statusCode")), "a job id used twice: %s", mustJSON(res["duplicate"]))
}
