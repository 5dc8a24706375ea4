package httpd

// IoT Hub jobs: PUT and GET /jobs/v2/{id}, POST /jobs/v2/{id}/cancel and
// GET /jobs/v2/query. The engine keeps and runs the jobs (engine/jobs.go);
// this file is their HTTPS face.

import (
	"net/http"

	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/internal/hubauth"
)

// maxJobBody bounds a PUT /jobs/v2/{id} body: a method payload (128 KB)
// or a twin patch (engine.MaxTwinBodySize) plus the other members.
const maxJobBody = maxMethodBody

// itemTypeJobResponse is the x-ms-item-type of GET /jobs/v2/query (.NET's
// QueryResultType.JobResponse).
const itemTypeJobResponse = "jobResponse"

// jobRoute tells GET /jobs/v2/query, the job list, from the job with id
// "query": GET goes to the list, PUT creates a job of that id [inf].
func jobRoute(rt route, method string) route {
	if rt.kind == routeJob && method == http.MethodGet && rt.deviceID == "query" {
		return route{kind: routeJobQuery}
	}
	return rt
}

// jobRights are the permissions a jobs request needs, any one of them.
// No source names them; jobs update twins and call methods, which
// ServiceConnect allows, and they live beside the registry, so the
// registry rights are accepted as for twins [inf].
func jobRights(method string) []hubauth.Rights {
	if method == http.MethodGet {
		return []hubauth.Rights{hubauth.RightsServiceConnect, hubauth.RightsRegistryRead}
	}
	return []hubauth.Rights{hubauth.RightsServiceConnect, hubauth.RightsRegistryWrite}
}

// job serves PUT and GET /jobs/v2/{id} and POST /jobs/v2/{id}/cancel;
// the job id travels in route.deviceID. Each success answers 200 with the
// job (JobResponse); refusals use the registry error shape.
func (h *handler) job(w http.ResponseWriter, r *http.Request, rt route) {
	var (
		job  engine.Job
		herr *engine.Error
	)
	switch {
	case rt.kind == routeJobCancel:
		job, herr = h.e.CancelJob(rt.deviceID)
	case r.Method == http.MethodPut:
		var body []byte
		if body, herr = readBody(w, r, maxJobBody); herr != nil {
			break
		}
		job, herr = h.e.CreateJob(rt.deviceID, trimBody(body))
	default:
		job, herr = h.e.GetJob(rt.deviceID)
	}
	if herr != nil {
		writeError(w, herr)
		return
	}
	writeJSON(w, marshal(job), "")
}

// jobQuery serves GET /jobs/v2/query?jobType=T&jobStatus=S: a JSON array
// of jobs, paged like POST /devices/query (x-ms-max-item-count,
// x-ms-continuation), with x-ms-item-type jobResponse.
func (h *handler) jobQuery(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	jobType, _ := queryValue(q, "jobType")
	jobStatus, _ := queryValue(q, "jobStatus")
	pageSize, herr := parsePageSize(r.Header.Get(headerMaxItemCount))
	if herr != nil {
		writeError(w, herr)
		return
	}
	// The token is bound to the filter, as a query's token is bound to
	// its text.
	key := "jobs\x00" + jobType + "\x00" + jobStatus
	offset, herr := parseContinuation(r.Header.Get(headerContinuation), key)
	if herr != nil {
		writeError(w, herr)
		return
	}
	jobs, herr := h.e.QueryJobs(jobType, jobStatus)
	if herr != nil {
		writeError(w, herr)
		return
	}
	items := make([]any, len(jobs))
	for i, j := range jobs {
		items[i] = j
	}
	if offset > len(items) {
		offset = len(items)
	}
	page, next := pageOf(items[offset:], pageSize)
	w.Header().Set(headerItemType, itemTypeJobResponse)
	if next > 0 && offset+next < len(items) {
		w.Header().Set(headerContinuation, continuationToken(offset+next, key))
	}
	writeJSON(w, page, "")
}
