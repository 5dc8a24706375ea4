package service

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// Jobs: a direct method or a twin update that the hub runs, at a start
// time, on every device a query condition selects, and tracks device by
// device (the jobs API, /jobs/v2).

// JobType is the kind of a job.
type JobType string

// The job types of the jobs API.
const (
	// JobTypeDeviceMethod invokes a direct method on each device.
	JobTypeDeviceMethod JobType = "scheduleDeviceMethod"
	// JobTypeTwinUpdate applies a twin patch (tags and desired properties)
	// to each device.
	JobTypeTwinUpdate JobType = "scheduleUpdateTwin"
)

// JobStatus is the state of a job.
type JobStatus string

// The job states IoT Hub reports. A job ends completed, failed or
// cancelled.
const (
	JobStatusUnknown   JobStatus = "unknown"
	JobStatusEnqueued  JobStatus = "enqueued"
	JobStatusQueued    JobStatus = "queued"
	JobStatusScheduled JobStatus = "scheduled"
	JobStatusRunning   JobStatus = "running"
	JobStatusCompleted JobStatus = "completed"
	JobStatusFailed    JobStatus = "failed"
	JobStatusCancelled JobStatus = "cancelled"
)

// Done reports whether a job in state s has ended: completed, failed or
// cancelled.
func (s JobStatus) Done() bool {
	return s == JobStatusCompleted || s == JobStatusFailed || s == JobStatusCancelled
}

// Job is a job as the hub reports it.
type Job struct {
	// ID is the job's id, chosen by the caller.
	ID   string
	Type JobType
	// Status is where the job is; Status.Done says whether it has ended.
	Status JobStatus
	// QueryCondition selects the job's devices (a WHERE condition over
	// device twins, such as "tags.site = 'berlin'").
	QueryCondition string
	// CreatedTime, StartTime and EndTime are the hub's times; EndTime is
	// zero until the job ends.
	CreatedTime time.Time
	StartTime   time.Time
	EndTime     time.Time
	// MaxExecutionTime is how long the job may run.
	MaxExecutionTime time.Duration
	// Method is the method a JobTypeDeviceMethod job invokes. The hub
	// echoes it back; its Payload is then a json.RawMessage.
	Method *CloudToDeviceMethod
	// TwinUpdate is the patch a JobTypeTwinUpdate job applies, as the hub
	// echoes it back (tags and desired properties as JSON).
	TwinUpdate json.RawMessage
	// FailureReason and StatusMessage explain a failed job.
	FailureReason string
	StatusMessage string
	// Statistics counts the job's devices by outcome.
	Statistics JobStatistics
}

// JobStatistics counts a job's devices (the hub's deviceJobStatistics).
type JobStatistics struct {
	DeviceCount    int `json:"deviceCount"`
	SucceededCount int `json:"succeededCount"`
	FailedCount    int `json:"failedCount"`
	RunningCount   int `json:"runningCount"`
	PendingCount   int `json:"pendingCount"`
}

// ScheduleJobOptions are the optional parameters of ScheduleDeviceMethod
// and ScheduleTwinUpdate. A nil *ScheduleJobOptions gives the defaults.
type ScheduleJobOptions struct {
	// StartTime is when the hub starts the job. The zero value starts it
	// now.
	StartTime time.Time
	// MaxExecutionTime bounds how long the job runs; devices not reached
	// by then are not. It must be a whole number of seconds. Zero means one
	// hour.
	MaxExecutionTime time.Duration
}

// defaultMaxExecutionTime is ScheduleJobOptions.MaxExecutionTime's
// default: the official SDKs make the caller choose, and their samples
// choose an hour.
const defaultMaxExecutionTime = time.Hour

// maxJobBody bounds the body of a job answer: the job echoes its method
// payload (up to 128 KB) or its twin patch (up to 40 KB) and a little
// more.
const maxJobBody = 1 << 20

// maxJobsBody bounds a page of jobs.
const maxJobsBody = 32 << 20

// ScheduleDeviceMethod schedules a job that invokes m on every device the
// condition selects (a WHERE condition over device twins, such as
// "tags.site = 'berlin'" or "deviceId IN ['a', 'b']"), and returns the job
// as the hub accepted it. Follow it with GetJob or WaitJob, and read each
// device's outcome with the query "SELECT * FROM devices.jobs WHERE
// devices.jobs.jobId = '<id>'" (QueryPage.DeviceJobs). An invalid argument
// fails with ErrArgumentInvalid before anything is sent; a condition the
// hub's query language refuses fails the same way from the hub. A job
// while the hub already has as many active (scheduled or running) jobs as
// its tier allows fails with ErrThrottled, code
// ErrorCodeThrottlingMaxActiveJobCountExceeded: one on Free and S1 hubs.
// It is not retried. Needs ServiceConnect and RegistryWrite.
func (c *Client) ScheduleDeviceMethod(ctx context.Context, jobID, condition string, m CloudToDeviceMethod, opts *ScheduleJobOptions) (job *Job, err error) {
	ctx, end := c.startSpan(ctx, "Client.ScheduleDeviceMethod")
	defer func() { end(err) }()
	body, _, err := m.encode()
	if err != nil {
		return nil, err
	}
	return c.scheduleJob(ctx, jobID, condition, JobTypeDeviceMethod, "cloudToDeviceMethod", body, opts)
}

// ScheduleTwinUpdate schedules a job that applies patch (tags and desired
// properties, merged as UpdateTwin merges them, whatever each twin's
// etag) to every device the condition selects, and returns the job as the
// hub accepted it. Errors and rights are as for ScheduleDeviceMethod.
func (c *Client) ScheduleTwinUpdate(ctx context.Context, jobID, condition string, patch *TwinPatch, opts *ScheduleJobOptions) (job *Job, err error) {
	ctx, end := c.startSpan(ctx, "Client.ScheduleTwinUpdate")
	defer func() { end(err) }()
	if patch == nil {
		return nil, argErr("ScheduleTwinUpdate: the patch is nil")
	}
	body, err := patch.encode("ScheduleTwinUpdate")
	if err != nil {
		return nil, err
	}
	// The official SDKs send the patch as a twin with etag "*": apply it
	// whatever the twin's version.
	body = append([]byte(`{"etag":"*",`), bytes.TrimPrefix(body, []byte("{"))...)
	if len(body) == len(`{"etag":"*",}`) {
		body = []byte(`{"etag":"*"}`)
	}
	return c.scheduleJob(ctx, jobID, condition, JobTypeTwinUpdate, "updateTwin", body, opts)
}

// scheduleJob sends PUT /jobs/v2/{id}: the job request with its action
// (already encoded) under actionKey.
func (c *Client) scheduleJob(ctx context.Context, jobID, condition string, typ JobType, actionKey string, action []byte, opts *ScheduleJobOptions) (*Job, error) {
	if err := checkJobID(jobID); err != nil {
		return nil, err
	}
	if condition == "" {
		return nil, argErr("the job's query condition is empty: want a condition such as \"tags.site = 'berlin'\" or \"deviceId IN ['a']\"")
	}
	var o ScheduleJobOptions
	if opts != nil {
		o = *opts
	}
	maxExec := o.MaxExecutionTime
	if maxExec == 0 {
		maxExec = defaultMaxExecutionTime
	}
	if maxExec < time.Second || maxExec%time.Second != 0 {
		return nil, argErr(fmt.Sprintf("MaxExecutionTime %v is invalid: want a positive whole number of seconds (0 means 1h)", o.MaxExecutionTime))
	}
	start := o.StartTime
	if start.IsZero() {
		start = time.Now()
	}
	req := map[string]any{
		"jobId":                     jobID,
		"type":                      typ,
		actionKey:                   json.RawMessage(action),
		"queryCondition":            condition,
		"startTime":                 start.UTC().Format(time.RFC3339Nano),
		"maxExecutionTimeInSeconds": int64(maxExec / time.Second),
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("iothub: encoding the job: %w", err)
	}
	// A retried PUT whose first attempt created the job would fail as a
	// duplicate: retry only what provably was not sent, as other writes.
	rctx := withBodyLimit(policy.WithRetryOptions(ctx, c.writeRetry), maxJobBody)
	r, err := c.newRequest(rctx, http.MethodPut, jobPath(jobID), "")
	if err != nil {
		return nil, err
	}
	if err := r.SetBody(memBody{bytes.NewReader(body)}, "application/json; charset=utf-8"); err != nil {
		return nil, fmt.Errorf("iothub: building request: %w", err)
	}
	resp, err := c.do(ctx, r, http.StatusOK, http.StatusCreated)
	if err != nil {
		return nil, wrapTransport(err)
	}
	var job Job
	if err := decodeBody(resp, &job); err != nil {
		return nil, err
	}
	return &job, nil
}

// GetJob returns a job's current state. An unknown id fails with
// ErrJobNotFound (IoT Hub may also answer it with a job whose Status is
// JobStatusUnknown). Needs ServiceConnect or RegistryRead.
func (c *Client) GetJob(ctx context.Context, jobID string) (job *Job, err error) {
	ctx, end := c.startSpan(ctx, "Client.GetJob")
	defer func() { end(err) }()
	if err = checkJobID(jobID); err != nil {
		return nil, err
	}
	var out Job
	if err = c.get(withBodyLimit(ctx, maxJobBody), jobPath(jobID), "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CancelJob cancels a scheduled or running job and returns its state:
// the devices it has not reached are not reached. Cancelling a job that
// has ended changes nothing. An unknown id fails with ErrJobNotFound.
// Needs ServiceConnect and RegistryWrite.
func (c *Client) CancelJob(ctx context.Context, jobID string) (job *Job, err error) {
	ctx, end := c.startSpan(ctx, "Client.CancelJob")
	defer func() { end(err) }()
	if err = checkJobID(jobID); err != nil {
		return nil, err
	}
	r, err := c.newRequest(withBodyLimit(ctx, maxJobBody), http.MethodPost, jobPath(jobID)+"/cancel", "")
	if err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, r, http.StatusOK)
	if err != nil {
		return nil, wrapTransport(err)
	}
	var out Job
	if err = decodeBody(resp, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// WaitJobOptions are the optional parameters of WaitJob. A nil
// *WaitJobOptions gives the defaults.
type WaitJobOptions struct {
	// Interval is the time between two reads of the job. Zero means 1 s.
	Interval time.Duration
	// Progress, when set, is called with the job after every read,
	// including the last, on WaitJob's goroutine.
	Progress func(*Job)
}

// WaitJob reads the job every opts.Interval until it ends (completed,
// failed or cancelled) and returns it. It returns early with ctx.Err()
// when ctx ends, with the error of a read that fails, and with an error
// matching ErrJobNotFound when the hub reports the job's status as
// unknown.
func (c *Client) WaitJob(ctx context.Context, jobID string, opts *WaitJobOptions) (*Job, error) {
	interval := time.Second
	var progress func(*Job)
	if opts != nil {
		if opts.Interval > 0 {
			interval = opts.Interval
		}
		progress = opts.Progress
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
		job, err := c.GetJob(ctx, jobID)
		if err != nil {
			return nil, err
		}
		if progress != nil {
			progress(job)
		}
		if job.Status.Done() {
			return job, nil
		}
		if job.Status == JobStatusUnknown {
			return nil, fmt.Errorf("%w: the hub reports job %q as unknown", ErrJobNotFound, clipID(jobID))
		}
		t.Reset(interval)
	}
}

// ListJobsOptions are the optional parameters of NewListJobsPager. A nil
// *ListJobsOptions gives the defaults.
type ListJobsOptions struct {
	// Type, when set, lists only the jobs of that type.
	Type JobType
	// Status, when set, lists only the jobs in that state.
	Status JobStatus
	// PageSize and ContinuationToken are as in QueryOptions.
	PageSize          int
	ContinuationToken string
}

// JobsPage is one page of jobs.
type JobsPage struct {
	Jobs []*Job
	// ContinuationToken names the next page; "" on the last page.
	ContinuationToken string
}

// NewListJobsPager returns a pager over the hub's jobs, optionally only
// those of one type or in one state (GET /jobs/v2/query). Needs
// ServiceConnect or RegistryRead.
func (c *Client) NewListJobsPager(opts *ListJobsOptions) *runtime.Pager[JobsPage] {
	var o ListJobsOptions
	if opts != nil {
		o = *opts
	}
	return runtime.NewPager(runtime.PagingHandler[JobsPage]{
		More: func(p JobsPage) bool { return p.ContinuationToken != "" },
		Fetcher: func(ctx context.Context, prev *JobsPage) (JobsPage, error) {
			token := o.ContinuationToken
			if prev != nil {
				token = prev.ContinuationToken
			}
			return c.jobsPage(ctx, o, token)
		},
	})
}

// jobsPage fetches one page of jobs.
func (c *Client) jobsPage(ctx context.Context, o ListJobsOptions, token string) (page JobsPage, err error) {
	ctx, end := c.startSpan(ctx, "Client.ListJobs")
	defer func() { end(err) }()
	if o.PageSize < 0 || o.PageSize > MaxQueryPageSize {
		return JobsPage{}, argErr(fmt.Sprintf("ListJobs: page size %d is out of range: want 1 to %d, or 0 for the hub's default", o.PageSize, MaxQueryPageSize))
	}
	q := url.Values{}
	if o.Type != "" {
		q.Set("jobType", string(o.Type))
	}
	if o.Status != "" {
		q.Set("jobStatus", string(o.Status))
	}
	r, err := c.newRequest(withBodyLimit(ctx, maxJobsBody), http.MethodGet, "/jobs/v2/query", q.Encode())
	if err != nil {
		return JobsPage{}, err
	}
	if o.PageSize > 0 {
		r.Raw().Header.Set("x-ms-max-item-count", strconv.Itoa(o.PageSize))
	}
	if token != "" {
		r.Raw().Header.Set("x-ms-continuation", token)
	}
	resp, err := c.do(ctx, r, http.StatusOK)
	if err != nil {
		return JobsPage{}, wrapTransport(err)
	}
	var jobs []*Job
	if err = decodeBody(resp, &jobs); err != nil {
		return JobsPage{}, err
	}
	if jobs == nil {
		jobs = []*Job{}
	}
	return JobsPage{Jobs: jobs, ContinuationToken: resp.Header.Get("x-ms-continuation")}, nil
}

// DeviceJobStatus is the state of one device's part in a job.
type DeviceJobStatus string

// The device job states IoT Hub reports.
const (
	DeviceJobStatusPending   DeviceJobStatus = "pending"
	DeviceJobStatusScheduled DeviceJobStatus = "scheduled"
	DeviceJobStatusRunning   DeviceJobStatus = "running"
	DeviceJobStatusCompleted DeviceJobStatus = "completed"
	DeviceJobStatusFailed    DeviceJobStatus = "failed"
	DeviceJobStatusCanceled  DeviceJobStatus = "canceled"
)

// DeviceJob is one device's part in a job, an item of the query "SELECT *
// FROM devices.jobs".
type DeviceJob struct {
	DeviceID string
	JobID    string
	JobType  JobType
	Status   DeviceJobStatus
	// StartTime and EndTime bound the device's part; CreatedTime and
	// LastUpdatedTime are the record's.
	StartTime       time.Time
	EndTime         time.Time
	CreatedTime     time.Time
	LastUpdatedTime time.Time
	// MethodResult is the device's answer to a method job's call, nil when
	// there was none.
	MethodResult *MethodResult
	// Error says why the device's part failed (ErrorCode such as
	// "DeviceNotOnline"), nil when it did not.
	Error *DeviceJobError
}

// DeviceJobError is why a device's part in a job failed.
type DeviceJobError struct {
	Code        string `json:"code"`
	Description string `json:"description"`
}

// DeviceJobs decodes the page's items as device jobs (the items of
// "SELECT * FROM devices.jobs", QueryItemTypeDeviceJob). An item that is
// not a JSON object fails with an error matching ErrMalformedResponse.
func (p QueryPage) DeviceJobs() ([]*DeviceJob, error) {
	out := make([]*DeviceJob, 0, len(p.Items))
	for i, raw := range p.Items {
		var dj DeviceJob
		if err := json.Unmarshal(raw, &dj); err != nil {
			return nil, fmt.Errorf("%w: query item %d is not a device job: %w", ErrMalformedResponse, i, err)
		}
		out = append(out, &dj)
	}
	return out, nil
}

// jobPath is the path of a job.
func jobPath(id string) string { return "/jobs/v2/" + pathSegment(id) }

// checkJobID checks a job id before it is sent: IoT Hub's ids are up to
// 128 characters, and the client refuses what cannot be one.
func checkJobID(id string) error {
	if id == "" {
		return argErr("the job id is empty")
	}
	if len(id) > maxJobIDLength {
		return argErr(fmt.Sprintf("the job id is %d bytes long: the most is %d", len(id), maxJobIDLength))
	}
	return nil
}

// maxJobIDLength is the longest job id the client sends. [inf: checked
// again by the hub]
const maxJobIDLength = 128
