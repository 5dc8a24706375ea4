package engine

// IoT Hub jobs (PUT /jobs/v2/{id}): a store of scheduleDeviceMethod and
// scheduleUpdateTwin jobs and the scheduler that runs them over the
// devices their queryCondition selects. The shapes follow the official
// service SDKs (.NET JobRequest, JobResponse, DeviceJob, JobStatus,
// DeviceJobStatus; the Node SDK's generated models), the limits IoT Hub's
// quotas guide; "[inf]" marks our own inferences where no source says.
//
// The jobs live in the engine package, not in a package of their own:
// they read twins, invoke methods and write twins through the engine's
// own calls, and stop with Engine.Close. They keep their own lock
// (jobStore.mu) and never call into the engine while holding it.
//
// Time: job times (createdTime, startTime, the maxExecutionTime deadline,
// the 30-day history) run on the job clock, Config.Now plus an offset
// that AdvanceJobClock moves forward, so a test can schedule a job an hour
// ahead and run it at once. Method calls and their timeouts still use real
// time.

import (
	"bytes"
	"context"
	"encoding/json"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine/query"
	"github.com/iothub-go/iothub/internal/hub/store"
)

// Job types (JobResponse.type, DeviceJob.jobType).
const (
	JobTypeDeviceMethod = "scheduleDeviceMethod"
	JobTypeUpdateTwin   = "scheduleUpdateTwin"
)

// Job statuses (JobResponse.status). IoT Hub spells the job status
// "cancelled" and the device job status "canceled".
const (
	JobStatusQueued    = "queued"
	JobStatusScheduled = "scheduled"
	JobStatusRunning   = "running"
	JobStatusCompleted = "completed"
	JobStatusFailed    = "failed"
	JobStatusCancelled = "cancelled"
)

// Device job statuses (DeviceJob.status).
const (
	DeviceJobPending   = "pending"
	DeviceJobRunning   = "running"
	DeviceJobCompleted = "completed"
	DeviceJobFailed    = "failed"
	DeviceJobCanceled  = "canceled"
)

// Job error codes.
const (
	// CodeJobNotFound answers GET or cancel of an unknown job id. The .NET
	// SDK maps any 404 there to JobNotFoundException; its ErrorCode enum
	// has JobNotFound = 404002 (marked as not returned) [inf].
	CodeJobNotFound = 404002
	// CodeJobAlreadyExists answers a PUT of a job id in use. A third-party
	// client reports 409 "JobAlreadyExists"; IoT Hub's number for it is
	// unknown [inf].
	CodeJobAlreadyExists = 409000
	// CodeThrottlingMaxActiveJobCount answers a PUT when the hub already
	// has its maximum of active jobs (429004
	// ThrottlingMaxActiveJobCountExceeded; Azure/azure-iot-sdk-csharp#361).
	CodeThrottlingMaxActiveJobCount = 429004
)

// Job defaults and limits.
const (
	// DefaultMaxActiveJobs is IoT Hub's concurrent job limit on Free and
	// S1 hubs ("Maximum concurrent jobs is 1 (for Free and S1), 5 (for
	// S2), and 10 (for S3)", IoT Hub quotas).
	DefaultMaxActiveJobs = 1
	// DefaultJobRetention is how long IoT Hub keeps a job's history ("Job
	// history is retained up to 30 days", IoT Hub quotas).
	DefaultJobRetention = 30 * 24 * time.Hour
	// DefaultJobDeviceConcurrency is how many devices of one job the local
	// hub works on at once [inf].
	DefaultJobDeviceConcurrency = 10
	// defaultMaxExecutionTime is used when a request has no (or a zero)
	// maxExecutionTimeInSeconds: the Node service SDK's default [inf].
	defaultMaxExecutionTime = 3600
	// maxJobIDLength bounds a job id [inf: no documented limit; the
	// device id limit].
	maxJobIDLength = 128
)

// JobMethod is a job's cloudToDeviceMethod.
type JobMethod struct {
	MethodName               string          `json:"methodName"`
	Payload                  json.RawMessage `json:"payload,omitempty"`
	ResponseTimeoutInSeconds int             `json:"responseTimeoutInSeconds"`
	ConnectTimeoutInSeconds  int             `json:"connectTimeoutInSeconds"`
}

// JobStatistics are a job's deviceJobStatistics. Canceled device jobs
// count only in DeviceCount.
type JobStatistics struct {
	DeviceCount    int `json:"deviceCount"`
	FailedCount    int `json:"failedCount"`
	SucceededCount int `json:"succeededCount"`
	RunningCount   int `json:"runningCount"`
	PendingCount   int `json:"pendingCount"`
}

// Job is a job as the service API returns it (JobResponse).
type Job struct {
	JobID                     string          `json:"jobId"`
	QueryCondition            string          `json:"queryCondition,omitempty"`
	CreatedTime               string          `json:"createdTime,omitempty"`
	StartTime                 string          `json:"startTime,omitempty"`
	EndTime                   string          `json:"endTime,omitempty"`
	MaxExecutionTimeInSeconds int64           `json:"maxExecutionTimeInSeconds"`
	Type                      string          `json:"type"`
	CloudToDeviceMethod       *JobMethod      `json:"cloudToDeviceMethod,omitempty"`
	UpdateTwin                json.RawMessage `json:"updateTwin,omitempty"`
	Status                    string          `json:"status"`
	FailureReason             string          `json:"failureReason,omitempty"`
	StatusMessage             string          `json:"statusMessage,omitempty"`
	DeviceJobStatistics       JobStatistics   `json:"deviceJobStatistics"`
}

// DeviceJob is one device's part of a job, a document of the query
// collection devices.jobs.
type DeviceJob struct {
	DeviceID               string           `json:"deviceId"`
	JobID                  string           `json:"jobId"`
	JobType                string           `json:"jobType"`
	Status                 string           `json:"status"`
	StartTimeUTC           string           `json:"startTimeUtc,omitempty"`
	EndTimeUTC             string           `json:"endTimeUtc,omitempty"`
	CreatedDateTimeUTC     string           `json:"createdDateTimeUtc"`
	LastUpdatedDateTimeUTC string           `json:"lastUpdatedDateTimeUtc"`
	Outcome                DeviceJobOutcome `json:"outcome"`
	Error                  *DeviceJobError  `json:"error,omitempty"`
}

// DeviceJobOutcome is a device job's outcome: the device's answer to a
// scheduleDeviceMethod job, null otherwise.
type DeviceJobOutcome struct {
	DeviceMethodResponse *DeviceMethodResponse `json:"deviceMethodResponse"`
}

// DeviceMethodResponse is a device's answer in a device job.
type DeviceMethodResponse struct {
	Status  int             `json:"status"`
	Payload json.RawMessage `json:"payload"`
}

// DeviceJobError is why a device job failed: the hub error's name and
// message.
type DeviceJobError struct {
	Code        string `json:"code"`
	Description string `json:"description"`
}

// jobStore is the engine's jobs and scheduler state.
type jobStore struct {
	maxActive   int           // <=0: unlimited
	concurrency int           // devices worked on at once per job
	rate        float64       // device operations per second per job; 0: unlimited
	retention   time.Duration // <0: forever

	ctx  context.Context // cancelled by Engine.Close
	stop context.CancelFunc
	wg   sync.WaitGroup // the scheduler loop and the job runners

	mu      sync.Mutex
	jobs    map[string]*jobRec
	wake    chan struct{} // nudges the scheduler loop (capacity 1)
	looping bool
	closed  bool
}

// jobRec is one job. Its fields after the request's are guarded by
// jobStore.mu.
type jobRec struct {
	req     Job    // the static fields of the answer
	body    []byte // the request, kept for the store (persist.go); nil without one
	cond    *query.Query
	method  *MethodCall // scheduleDeviceMethod
	patch   []byte      // scheduleUpdateTwin: the twin patch to apply
	created time.Time
	start   time.Time
	maxExec time.Duration

	status  string
	started time.Time
	ended   time.Time
	cancel  context.CancelFunc // while running
	stopped string             // why it was stopped early: "cancelled" or "expired"
	devices []*deviceJobRec
}

type deviceJobRec struct {
	id      string
	status  string
	created time.Time
	start   time.Time
	end     time.Time
	updated time.Time
	answer  *DeviceMethodResponse
	err     *DeviceJobError
}

func (j *jobRec) terminal() bool {
	switch j.status {
	case JobStatusCompleted, JobStatusFailed, JobStatusCancelled:
		return true
	}
	return false
}

// initJobs sets up the job store from cfg (called by New).
func (e *Engine) initJobs(cfg Config) {
	s := &e.jobs
	s.maxActive = cfg.MaxActiveJobs
	if s.maxActive == 0 {
		s.maxActive = DefaultMaxActiveJobs
	}
	s.concurrency = cfg.JobDeviceConcurrency
	if s.concurrency <= 0 {
		s.concurrency = DefaultJobDeviceConcurrency
	}
	s.rate = cfg.JobDeviceRate
	if s.rate < 0 {
		s.rate = 0
	}
	s.retention = cfg.JobRetention
	if s.retention == 0 {
		s.retention = DefaultJobRetention
	}
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.jobs = map[string]*jobRec{}
	s.wake = make(chan struct{}, 1)
}

// closeJobs cancels every running job and stops the scheduler; waitJobs
// waits for their goroutines (Engine.Close).
func (e *Engine) closeJobs() {
	e.jobs.mu.Lock()
	e.jobs.closed = true
	e.jobs.mu.Unlock()
	e.jobs.stop()
}

func (e *Engine) waitJobs() { e.jobs.wg.Wait() }

// JobClock returns the time on the job clock: Config.Now plus every
// AdvanceJobClock so far.
func (e *Engine) JobClock() time.Time {
	e.jobs.mu.Lock()
	defer e.jobs.mu.Unlock()
	return e.jobNowLocked()
}

func (e *Engine) jobNowLocked() time.Time { return e.hubNow() }

// AdvanceJobClock moves the job clock forward by d (negative d is
// ignored) and lets the scheduler act at once on what became due: jobs
// whose startTime has come start, running jobs whose maxExecutionTime has
// passed stop. Method calls already under way keep their real-time
// timeouts. The same clock runs cloud-to-device expiry, locks and
// feedback batching (c2d.go): advancing it expires them at once.
func (e *Engine) AdvanceJobClock(d time.Duration) {
	if d <= 0 {
		return
	}
	e.jobs.mu.Lock()
	e.clockOffset.Add(int64(d))
	t := e.saveClock()
	e.jobs.mu.Unlock()
	e.wakeJobs()
	e.wakeC2D()
	if err := t.Wait(); err != nil {
		e.log.Error("storing the hub clock", "err", err)
	}
}

func (e *Engine) wakeJobs() {
	select {
	case e.jobs.wake <- struct{}{}:
	default:
	}
}

// jobRequest is the body of PUT /jobs/v2/{id}.
type jobRequest struct {
	JobID                     *string           `json:"jobId"`
	Type                      *string           `json:"type"`
	CloudToDeviceMethod       *jobMethodRequest `json:"cloudToDeviceMethod"`
	UpdateTwin                json.RawMessage   `json:"updateTwin"`
	QueryCondition            *string           `json:"queryCondition"`
	StartTime                 *string           `json:"startTime"`
	MaxExecutionTimeInSeconds *json.Number      `json:"maxExecutionTimeInSeconds"`
}

type jobMethodRequest struct {
	MethodName               *string         `json:"methodName"`
	Payload                  json.RawMessage `json:"payload"`
	ResponseTimeoutInSeconds *json.Number    `json:"responseTimeoutInSeconds"`
	ConnectTimeoutInSeconds  *json.Number    `json:"connectTimeoutInSeconds"`
}

// ValidJobID reports whether id is acceptable as a job id: 1 to 128
// characters of the device id alphabet (letters, digits and
// -.+%_#*?!(),:=@$') [inf: IoT Hub documents no rule for job ids].
func ValidJobID(id string) bool {
	if id == "" || len(id) > maxJobIDLength {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-.+%_#*?!(),:=@$'", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// ParseJobRequest decodes and validates the body of PUT /jobs/v2/{id}
// for job id (the path's). It returns the job as it will be answered,
// before the hub sets its times and status. Refusals: 400004
// ArgumentInvalid, 400005 ArgumentNull for a missing required member,
// 412001 PreconditionFailed for an updateTwin whose etag is not "*".
func ParseJobRequest(id string, body []byte) (Job, *Error) {
	j, _, herr := parseJobRequest(id, body)
	return j, herr
}

// parsedJob is a validated request.
type parsedJob struct {
	cond       *query.Query
	method     *MethodCall
	patch      []byte
	start      time.Time // zero: now
	maxExec    time.Duration
	startGiven bool
}

func invalid(format string, args ...any) *Error {
	return NewError(CodeArgumentInvalid, format, args...)
}

func parseJobRequest(id string, body []byte) (Job, parsedJob, *Error) {
	var p parsedJob
	if !ValidJobID(id) {
		return Job{}, p, invalid("The job id is not valid: it must be 1 to %d characters of letters, digits and -.+%%_#*?!(),:=@$'.", maxJobIDLength)
	}
	body = bytes.TrimSpace(bytes.TrimPrefix(bytes.TrimSpace(body), []byte("\xef\xbb\xbf")))
	var req jobRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&req); err != nil {
		return Job{}, p, invalid("The request body is not a valid job request.")
	}
	if dec.More() {
		return Job{}, p, invalid("The request body is not a valid job request: it has data after the JSON object.")
	}
	if req.JobID != nil && *req.JobID != "" && *req.JobID != id {
		return Job{}, p, invalid("The jobId in the body does not match the job id in the URI.")
	}
	j := Job{JobID: id}
	if req.Type == nil || *req.Type == "" {
		return Job{}, p, NewError(CodeArgumentNull, "The job type is required.")
	}
	j.Type = *req.Type
	switch j.Type {
	case JobTypeDeviceMethod, JobTypeUpdateTwin:
	default:
		return Job{}, p, invalid("The job type %q is not supported: use scheduleDeviceMethod or scheduleUpdateTwin.", truncateText(j.Type, 64))
	}
	if req.QueryCondition == nil || strings.TrimSpace(*req.QueryCondition) == "" {
		return Job{}, p, NewError(CodeArgumentNull, "The queryCondition is required.")
	}
	j.QueryCondition = *req.QueryCondition
	q, err := query.Parse("SELECT * FROM devices WHERE " + j.QueryCondition)
	if err != nil {
		return Job{}, p, invalid("The queryCondition is not valid: %s", strings.TrimPrefix(err.Error(), "iothub: "))
	}
	p.cond = q
	switch j.Type {
	case JobTypeDeviceMethod:
		m, call, herr := parseJobMethod(req.CloudToDeviceMethod)
		if herr != nil {
			return Job{}, p, herr
		}
		j.CloudToDeviceMethod, p.method = m, call
	case JobTypeUpdateTwin:
		raw, patch, herr := parseJobTwin(req.UpdateTwin)
		if herr != nil {
			return Job{}, p, herr
		}
		j.UpdateTwin, p.patch = raw, patch
	}
	if req.StartTime != nil && *req.StartTime != "" {
		t, ok := parseJobTime(*req.StartTime)
		if !ok {
			return Job{}, p, invalid("The startTime is not an ISO 8601 date and time.")
		}
		p.start, p.startGiven = t, true
	}
	secs := int64(defaultMaxExecutionTime)
	if req.MaxExecutionTimeInSeconds != nil {
		n, err := req.MaxExecutionTimeInSeconds.Int64()
		if err != nil || n < 0 || n > 1<<31 {
			return Job{}, p, invalid("maxExecutionTimeInSeconds must be a non-negative integer.")
		}
		if n > 0 {
			secs = n
		}
	}
	j.MaxExecutionTimeInSeconds = secs
	p.maxExec = time.Duration(secs) * time.Second
	return j, p, nil
}

// parseJobMethod validates a job's cloudToDeviceMethod with the rules of
// POST /twins/{id}/methods (method name, 5–300 s response timeout,
// 0–300 s connect timeout, 128 KB payload).
func parseJobMethod(m *jobMethodRequest) (*JobMethod, *MethodCall, *Error) {
	if m == nil {
		return nil, nil, NewError(CodeArgumentNull, "The cloudToDeviceMethod is required for a scheduleDeviceMethod job.")
	}
	if m.MethodName == nil || *m.MethodName == "" {
		return nil, nil, NewError(CodeArgumentNull, "The cloudToDeviceMethod.methodName is required.")
	}
	if !ValidMethodName(*m.MethodName) {
		return nil, nil, invalid("The method name is not valid.")
	}
	seconds := func(n *json.Number, def, lo, hi int64, name string) (int64, *Error) {
		if n == nil {
			return def, nil
		}
		v, err := n.Int64()
		if err != nil || v < lo || v > hi {
			return 0, invalid("%s must be within [%d; %d].", name, lo, hi)
		}
		return v, nil
	}
	rt, herr := seconds(m.ResponseTimeoutInSeconds, 30, 5, 300, "responseTimeoutInSeconds")
	if herr != nil {
		return nil, nil, herr
	}
	ct, herr := seconds(m.ConnectTimeoutInSeconds, 0, 0, 300, "connectTimeoutInSeconds")
	if herr != nil {
		return nil, nil, herr
	}
	var payload []byte
	if len(m.Payload) > 0 {
		if len(m.Payload) > MaxPayload {
			return nil, nil, invalid("The method payload is larger than %d bytes.", MaxPayload)
		}
		payload = append([]byte(nil), m.Payload...)
	}
	jm := &JobMethod{MethodName: *m.MethodName, Payload: payload,
		ResponseTimeoutInSeconds: int(rt), ConnectTimeoutInSeconds: int(ct)}
	call := &MethodCall{Name: *m.MethodName, Payload: payload,
		ResponseTimeout: time.Duration(rt) * time.Second, ConnectTimeout: time.Duration(ct) * time.Second}
	return jm, call, nil
}

// parseJobTwin validates a job's updateTwin: an object whose etag is "*"
// (IoT Hub refuses others with 412, Azure/azure-iot-sdk-csharp#1680),
// with tags and desired properties as PATCH /twins/{id} takes them. It
// returns the member as given and the patch to apply to each device
// (without the identity and etag members, which name no single device).
func parseJobTwin(raw json.RawMessage) (json.RawMessage, []byte, *Error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil, NewError(CodeArgumentNull, "The updateTwin is required for a scheduleUpdateTwin job.")
	}
	v, err := decodeTwinJSON(raw)
	if err != nil {
		return nil, nil, invalid("Invalid updateTwin: %s", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, nil, invalid("Invalid updateTwin: it must be a JSON object.")
	}
	if etag, _ := m["etag"].(string); etag != "*" {
		return nil, nil, NewError(CodePreconditionFailed, "The etag in the request does not match the etag of the existing resource: a job's updateTwin must have etag \"*\".")
	}
	for _, k := range []string{"deviceId", "moduleId", "etag"} {
		delete(m, k)
	}
	patch := marshalSorted(m)
	if _, herr := parseTwinRequest(patch, "", "", true); herr != nil {
		return nil, nil, herr
	}
	return append(json.RawMessage(nil), raw...), patch, nil
}

// parseJobTime reads an ISO 8601 time; one without a zone is UTC (.NET
// writes DateTime values of unspecified kind that way).
func parseJobTime(s string) (time.Time, bool) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// CreateJob creates job id from the body of PUT /jobs/v2/{id} and answers
// it: "queued" when its startTime has come (it starts at once),
// "scheduled" when it lies ahead. Refusals: those of ParseJobRequest,
// 409 JobAlreadyExists for an id in use (finished jobs included, until
// their history expires), 429004 ThrottlingMaxActiveJobCountExceeded when
// Config.MaxActiveJobs jobs are queued, scheduled or running.
func (e *Engine) CreateJob(id string, body []byte) (_ Job, herr *Error) {
	j, p, herr := parseJobRequest(id, body)
	if herr != nil {
		return Job{}, herr
	}
	s := &e.jobs
	var saved *pendingSave
	defer waitStore(&saved, &herr)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Job{}, NewError(CodeServiceUnavailable, "The hub is shutting down")
	}
	now := e.jobNowLocked()
	e.pruneJobsLocked(now)
	if _, ok := s.jobs[id]; ok {
		return Job{}, NewError(CodeJobAlreadyExists, "A job with id %s already exists.", id)
	}
	if s.maxActive > 0 {
		active := 0
		for _, r := range s.jobs {
			if !r.terminal() {
				active++
			}
		}
		if active >= s.maxActive {
			return Job{}, NewError(CodeThrottlingMaxActiveJobCount,
				"The maximum number of active jobs (%d) is reached; retry when a job has finished.", s.maxActive)
		}
	}
	start := p.start
	if !p.startGiven || start.Before(now) {
		start = now
	}
	r := &jobRec{req: j, cond: p.cond, method: p.method, patch: p.patch,
		created: now, start: start, maxExec: p.maxExec, status: JobStatusQueued}
	if start.After(now) {
		r.status = JobStatusScheduled
	}
	if e.store != nil {
		r.body = append([]byte(nil), body...)
		saved = e.saveJobLocked(r)
	}
	s.jobs[id] = r
	if !s.looping {
		s.looping = true
		s.wg.Add(1)
		go e.jobLoop()
	}
	e.wakeJobs()
	return e.jobLocked(r), nil
}

// GetJob returns job id (404002 JobNotFound when unknown).
func (e *Engine) GetJob(id string) (Job, *Error) {
	e.jobs.mu.Lock()
	defer e.jobs.mu.Unlock()
	e.pruneJobsLocked(e.jobNowLocked())
	r, ok := e.jobs.jobs[id]
	if !ok {
		return Job{}, NewError(CodeJobNotFound, "The job %s does not exist.", id)
	}
	return e.jobLocked(r), nil
}

// CancelJob cancels job id: a scheduled or queued job never starts, a
// running one stops, and its devices not done yet end "canceled". The
// answer is the job with status "cancelled"; a job that had already
// finished is answered as it is [inf]. 404002 JobNotFound when unknown.
func (e *Engine) CancelJob(id string) (_ Job, herr *Error) {
	var saved *pendingSave
	defer waitStore(&saved, &herr)
	e.jobs.mu.Lock()
	defer e.jobs.mu.Unlock()
	now := e.jobNowLocked()
	e.pruneJobsLocked(now)
	r, ok := e.jobs.jobs[id]
	if !ok {
		return Job{}, NewError(CodeJobNotFound, "The job %s does not exist.", id)
	}
	switch r.status {
	case JobStatusQueued, JobStatusScheduled:
		r.status, r.ended = JobStatusCancelled, now
	case JobStatusRunning:
		// The runner settles the device jobs; the answer already says
		// cancelled, as IoT Hub's does [inf].
		r.stopped = JobStatusCancelled
		r.status = JobStatusCancelled
		r.cancel()
	}
	saved = e.saveJobLocked(r)
	e.wakeJobs()
	return e.jobLocked(r), nil
}

// QueryJobs returns the jobs of GET /jobs/v2/query in creation order,
// those of jobType and in jobStatus when they are not "". Both match
// case-insensitively: the .NET SDK sends its enum names
// ("ScheduleDeviceMethod", "Completed"). An unknown type or status is
// 400004 ArgumentInvalid [inf].
func (e *Engine) QueryJobs(jobType, jobStatus string) ([]Job, *Error) {
	if jobType != "" && !oneOfFold(jobType, JobTypeDeviceMethod, JobTypeUpdateTwin, "unknown", "export", "import") {
		return nil, invalid("The jobType %q is not valid.", truncateText(jobType, 64))
	}
	if jobStatus != "" && !oneOfFold(jobStatus, "unknown", "enqueued", JobStatusQueued, JobStatusScheduled,
		JobStatusRunning, JobStatusCompleted, JobStatusFailed, JobStatusCancelled) {
		return nil, invalid("The jobStatus %q is not valid.", truncateText(jobStatus, 64))
	}
	e.jobs.mu.Lock()
	defer e.jobs.mu.Unlock()
	e.pruneJobsLocked(e.jobNowLocked())
	recs := make([]*jobRec, 0, len(e.jobs.jobs))
	for _, r := range e.jobs.jobs {
		if jobType != "" && !strings.EqualFold(r.req.Type, jobType) {
			continue
		}
		if jobStatus != "" && !strings.EqualFold(r.status, jobStatus) {
			continue
		}
		recs = append(recs, r)
	}
	sort.Slice(recs, func(a, b int) bool {
		if !recs[a].created.Equal(recs[b].created) {
			return recs[a].created.Before(recs[b].created)
		}
		return recs[a].req.JobID < recs[b].req.JobID
	})
	out := make([]Job, len(recs))
	for i, r := range recs {
		out[i] = e.jobLocked(r)
	}
	return out, nil
}

func oneOfFold(s string, list ...string) bool {
	for _, v := range list {
		if strings.EqualFold(s, v) {
			return true
		}
	}
	return false
}

// DeviceJobs returns every device job (the devices.jobs collection), by
// job creation time, then device id.
func (e *Engine) DeviceJobs() []DeviceJob {
	e.jobs.mu.Lock()
	defer e.jobs.mu.Unlock()
	e.pruneJobsLocked(e.jobNowLocked())
	recs := make([]*jobRec, 0, len(e.jobs.jobs))
	for _, r := range e.jobs.jobs {
		recs = append(recs, r)
	}
	sort.Slice(recs, func(a, b int) bool {
		if !recs[a].created.Equal(recs[b].created) {
			return recs[a].created.Before(recs[b].created)
		}
		return recs[a].req.JobID < recs[b].req.JobID
	})
	var out []DeviceJob
	for _, r := range recs {
		for _, d := range r.devices {
			out = append(out, deviceJobLocked(r, d))
		}
	}
	return out
}

// jobLocked renders r as the service answers it.
func (e *Engine) jobLocked(r *jobRec) Job {
	j := r.req
	j.Status = r.status
	j.CreatedTime = formatTime(r.created)
	j.StartTime = formatTime(r.start)
	if !r.ended.IsZero() {
		j.EndTime = formatTime(r.ended)
	}
	if r.stopped == "expired" {
		j.StatusMessage = "The job ran out of its maxExecutionTimeInSeconds."
	}
	st := JobStatistics{DeviceCount: len(r.devices)}
	for _, d := range r.devices {
		switch d.status {
		case DeviceJobPending:
			st.PendingCount++
		case DeviceJobRunning:
			st.RunningCount++
		case DeviceJobCompleted:
			st.SucceededCount++
		case DeviceJobFailed:
			st.FailedCount++
		}
	}
	j.DeviceJobStatistics = st
	return j
}

func deviceJobLocked(r *jobRec, d *deviceJobRec) DeviceJob {
	dj := DeviceJob{DeviceID: d.id, JobID: r.req.JobID, JobType: r.req.Type, Status: d.status,
		CreatedDateTimeUTC: formatTime(d.created), LastUpdatedDateTimeUTC: formatTime(d.updated), Error: d.err}
	if !d.start.IsZero() {
		dj.StartTimeUTC = formatTime(d.start)
	}
	if !d.end.IsZero() {
		dj.EndTimeUTC = formatTime(d.end)
	}
	if d.answer != nil {
		a := *d.answer
		dj.Outcome.DeviceMethodResponse = &a
	}
	return dj
}

// pruneJobsLocked forgets finished jobs older than the retention.
func (e *Engine) pruneJobsLocked(now time.Time) {
	if e.jobs.retention < 0 {
		return
	}
	for id, r := range e.jobs.jobs {
		if r.terminal() && !r.ended.IsZero() && !now.Before(r.ended.Add(e.jobs.retention)) && r.cancel == nil {
			delete(e.jobs.jobs, id)
			if e.store != nil {
				e.store.Delete(store.Jobs, id)
			}
		}
	}
}

// jobLoop is the scheduler: it starts due jobs and stops expired ones,
// sleeping until the next due time on the job clock or a wake-up.
func (e *Engine) jobLoop() {
	s := &e.jobs
	defer s.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := e.jobTick()
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
		select {
		case <-s.ctx.Done():
			return
		case <-s.wake:
		case <-timer.C:
		}
	}
}

// jobTick acts on every job that is due and returns how long to sleep
// (real time) until the next one is.
func (e *Engine) jobTick() time.Duration {
	s := &e.jobs
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return time.Hour
	}
	now := e.jobNowLocked()
	e.pruneJobsLocked(now)
	next := time.Hour
	due := func(t time.Time) {
		if d := t.Sub(now); d < next {
			next = d
		}
	}
	for _, r := range s.jobs {
		switch r.status {
		case JobStatusQueued, JobStatusScheduled:
			if r.start.After(now) {
				due(r.start)
				continue
			}
			e.startJobLocked(r, now)
			if r.maxExec > 0 {
				due(r.started.Add(r.maxExec))
			}
		case JobStatusRunning:
			if r.maxExec <= 0 || r.stopped != "" {
				continue
			}
			deadline := r.started.Add(r.maxExec)
			if now.Before(deadline) {
				due(deadline)
				continue
			}
			r.stopped = "expired"
			r.cancel()
		default:
			if s.retention >= 0 && !r.ended.IsZero() {
				due(r.ended.Add(s.retention))
			}
		}
	}
	if next < time.Millisecond {
		next = time.Millisecond
	}
	return next
}

// startJobLocked marks r running and starts its runner.
func (e *Engine) startJobLocked(r *jobRec, now time.Time) {
	ctx, cancel := context.WithCancel(e.jobs.ctx)
	r.status, r.started, r.cancel = JobStatusRunning, now, cancel
	r.start = now
	e.saveJobLocked(r)
	e.jobs.wg.Add(1)
	go e.runJob(ctx, r)
}

// runJob selects the job's devices and works on them, at most
// Config.JobDeviceConcurrency at once (and Config.JobDeviceRate per
// second when set), until all are done or the job is cancelled, expires
// or the engine closes.
func (e *Engine) runJob(ctx context.Context, r *jobRec) {
	defer e.jobs.wg.Done()
	// The devices are those whose twin matches when the job starts.
	var ids []string
	for doc := range e.QueryDocs(CollectionDevices) { // shared, read-only documents
		if ok, _ := r.cond.Match(doc); ok {
			if id, ok := doc["deviceId"].(string); ok {
				ids = append(ids, id)
			}
		}
	}
	e.jobs.mu.Lock()
	now := e.jobNowLocked()
	devs := make([]*deviceJobRec, len(ids))
	for i, id := range ids {
		devs[i] = &deviceJobRec{id: id, status: DeviceJobPending, created: now, updated: now}
	}
	if ctx.Err() == nil {
		r.devices = devs
		e.saveJobLocked(r) // not waited for: nothing acknowledges it
	}
	e.jobs.mu.Unlock()

	if ctx.Err() == nil {
		var tick <-chan time.Time
		if e.jobs.rate > 0 {
			// Real IoT Hub throttles jobs' device operations (10/s on S1);
			// the local hub does only when Config.JobDeviceRate asks.
			t := time.NewTicker(time.Duration(float64(time.Second) / e.jobs.rate))
			defer t.Stop()
			tick = t.C
		}
		work := make(chan *deviceJobRec)
		var wg sync.WaitGroup
		n := min(e.jobs.concurrency, len(devs))
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for d := range work {
					e.runDeviceJob(ctx, r, d)
				}
			}()
		}
	feed:
		for i, d := range devs {
			if tick != nil && i > 0 {
				select {
				case <-tick:
				case <-ctx.Done():
					break feed
				}
			}
			select {
			case work <- d:
			case <-ctx.Done():
				break feed
			}
		}
		close(work)
		wg.Wait()
	}

	e.jobs.mu.Lock()
	now = e.jobNowLocked()
	for _, d := range r.devices {
		if d.status == DeviceJobPending || d.status == DeviceJobRunning {
			d.status, d.end, d.updated = DeviceJobCanceled, now, now
		}
	}
	if r.stopped == JobStatusCancelled {
		r.status = JobStatusCancelled
	} else {
		// Done, or out of time: IoT Hub calls both completed [inf].
		r.status = JobStatusCompleted
	}
	r.ended = now
	r.cancel()
	r.cancel = nil
	var saved *pendingSave
	if !e.jobs.closed {
		// A job stopped by Close stays running on disk: the next start
		// says it failed (persist.go).
		saved = e.saveJobLocked(r)
	}
	e.jobs.mu.Unlock()
	if err := saved.Wait(); err != nil {
		e.log.Error("storing a job", "job", r.req.JobID, "err", err)
	}
	e.wakeJobs()
}

// runDeviceJob runs the job on one device and records the outcome: a
// device's answer, whatever its status, completes the device job; a hub
// error (DeviceNotOnline, GatewayTimeout, DeviceNotFound, a refused twin
// write) fails it; a job stopped meanwhile cancels it [inf].
func (e *Engine) runDeviceJob(ctx context.Context, r *jobRec, d *deviceJobRec) {
	e.jobs.mu.Lock()
	if ctx.Err() != nil {
		e.jobs.mu.Unlock()
		return
	}
	now := e.jobNowLocked()
	d.status, d.start, d.updated = DeviceJobRunning, now, now
	e.jobs.mu.Unlock()

	var (
		answer *DeviceMethodResponse
		herr   *Error
	)
	if r.method != nil {
		var res MethodResult
		res, herr = e.Invoke(ctx, auth.Identity{DeviceID: d.id}, *r.method)
		if herr == nil {
			payload := json.RawMessage("null")
			if len(bytes.TrimSpace(res.Payload)) > 0 && json.Valid(res.Payload) {
				payload = append(json.RawMessage(nil), res.Payload...)
			}
			answer = &DeviceMethodResponse{Status: res.Status, Payload: payload}
		}
	} else {
		_, herr = e.UpdateTwin(d.id, "", r.patch, "")
	}

	e.jobs.mu.Lock()
	defer e.jobs.mu.Unlock()
	now = e.jobNowLocked()
	d.end, d.updated = now, now
	switch {
	case herr == nil:
		d.status, d.answer = DeviceJobCompleted, answer
	case ctx.Err() != nil:
		d.status = DeviceJobCanceled
	default:
		name := herr.Name
		if name == "" {
			name = CodeName(herr.Code)
		}
		d.status, d.err = DeviceJobFailed, &DeviceJobError{Code: name, Description: herr.Message}
	}
}
