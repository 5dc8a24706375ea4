package bench

// The jobs benchmark ("iothub bench --jobs"): one direct method on every
// device of a connected fleet, once as a job the hub runs
// (service.Client.ScheduleDeviceMethod over a tag condition, then
// WaitJob) and once invoked by the service client itself
// (service.Client.InvokeDeviceMethods over the same ids), at the job's
// device concurrency and at InvokeDeviceMethods' default. The hub and the
// service client run in this process; the devices (this SDK's
// device.Client) in a fleet process of their own.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/service"
)

// JobsConfig configures RunJobs. Zero fields take JobsDefaults' values.
type JobsConfig struct {
	// Devices is the fleet size: every device is called once per row.
	Devices int
	// Transport is the devices' transport (this SDK's device.Client).
	Transport string
	// Rounds repeats the three rows (job, InvokeDeviceMethods at the
	// job's concurrency, at its default), each round starting with the
	// next one, and reports the median of each number.
	Rounds int
	// ConnectConcurrency is how many devices connect at once.
	ConnectConcurrency int
	// PayloadSize is the request payload in bytes (a JSON object the
	// devices echo).
	PayloadSize int
	// PollInterval is WaitJob's interval between two reads of the job.
	PollInterval time.Duration
	// InProcess runs the fleet in this process (its CPU is then counted
	// with the hub's); otherwise FleetCommand starts it.
	InProcess    bool
	FleetCommand []string
	// Progress receives progress lines; nil: none.
	Progress io.Writer
}

// JobsDefaults returns the default jobs benchmark: 10,000 devices over
// MQTT, one round, WaitJob polling every 20 ms.
func JobsDefaults() JobsConfig {
	return JobsConfig{Devices: 10000, Transport: "mqtt", Rounds: 1, ConnectConcurrency: 64, PayloadSize: 100,
		PollInterval: 20 * time.Millisecond}
}

func (c *JobsConfig) fill() {
	d := JobsDefaults()
	if c.Devices == 0 {
		c.Devices = d.Devices
	}
	if c.Transport == "" {
		c.Transport = d.Transport
	}
	if c.Rounds == 0 {
		c.Rounds = d.Rounds
	}
	if c.ConnectConcurrency == 0 {
		c.ConnectConcurrency = d.ConnectConcurrency
	}
	if c.PayloadSize == 0 {
		c.PayloadSize = d.PayloadSize
	}
	if c.PollInterval == 0 {
		c.PollInterval = d.PollInterval
	}
}

// Validate reports a configuration RunJobs refuses (after defaults).
func (c JobsConfig) Validate() error {
	c.fill()
	if c.Devices < 1 {
		return errors.New("bench: the jobs benchmark needs at least one device")
	}
	if c.Rounds < 1 || c.ConnectConcurrency < 1 || c.PollInterval < 0 {
		return errors.New("bench: the jobs benchmark's rounds, connect concurrency and poll interval must be positive")
	}
	if c.PayloadSize < 0 || c.PayloadSize > 120*1024 {
		return errors.New("bench: the payload must stay under IoT Hub's 128 KB")
	}
	if _, err := sdkTransport(c.Transport); err != nil {
		return err
	}
	if !c.InProcess && len(c.FleetCommand) == 0 {
		return errors.New("bench: FleetCommand is required unless InProcess")
	}
	return nil
}

// The jobs benchmark's rows.
const (
	JobsRowJob = "job"
	// InvokeDeviceMethods rows are named "InvokeDeviceMethods(c=N)".
	jobsRowInvoke = "InvokeDeviceMethods(c=%d)"
	// jobsInvokeDefault is InvokeDeviceMethods' default MaxConcurrency.
	jobsInvokeDefault = 16
	// jobsTag tags the fleet's twins; the job selects them with it.
	jobsTag       = "jobs"
	jobsCondition = "tags.bench = '" + jobsTag + "'"
)

// JobsResult is the outcome of RunJobs.
type JobsResult struct {
	Schema  string  `json:"schema"`
	Started string  `json:"started"`
	Seconds float64 `json:"seconds"`
	Machine Machine `json:"machine"`
	// Devices, Transport, PayloadBytes and Rounds echo the configuration.
	Devices      int    `json:"devices"`
	Transport    string `json:"transport"`
	PayloadBytes int    `json:"payload_bytes"`
	Rounds       int    `json:"rounds"`
	InProcess    bool   `json:"in_process"`
	// JobDeviceConcurrency is how many devices of a job the hub calls at
	// once (engine.DefaultJobDeviceConcurrency).
	JobDeviceConcurrency int `json:"job_device_concurrency"`
	// PollMs is WaitJob's interval.
	PollMs float64 `json:"poll_ms"`
	// SeedSeconds is the time to register and tag the devices through the
	// engine; ConnectSeconds the fleet's connect time.
	SeedSeconds    float64 `json:"seed_seconds"`
	ConnectSeconds float64 `json:"connect_seconds"`
	// Warmup is the unmeasured passes over every device that precede the
	// rows: one job (the hub's first walk of the twins is in it), one
	// InvokeDeviceMethods.
	Warmup []JobsRow   `json:"warmup,omitempty"`
	Rows   []JobsRow   `json:"rows"`
	Ratios []JobsRatio `json:"ratios"`
	Notes  []string    `json:"notes"`
}

// JobsRow is one way of calling the method on every device.
type JobsRow struct {
	Name string `json:"name"`
	// Concurrency is the calls in flight: the job's device concurrency,
	// or InvokeDeviceMethods' MaxConcurrency.
	Concurrency int `json:"concurrency"`
	Devices     int `json:"devices"`
	// Succeeded counts the devices that answered status 200; Failed the
	// others (FirstError says why).
	Succeeded  int    `json:"succeeded"`
	Failed     int    `json:"failed"`
	FirstError string `json:"first_error,omitempty"`
	// Seconds is the wall time: for the job from before
	// ScheduleDeviceMethod to WaitJob's return, for InvokeDeviceMethods
	// its call. CallsPerSec is Succeeded over it.
	Seconds     float64 `json:"seconds"`
	CallsPerSec float64 `json:"calls_per_sec"`
	// CPU per successful call, in microseconds: this process (the hub and
	// the service client; the fleet too when in process), the fleet's
	// process, and their sum.
	HubCPUPerCall    float64 `json:"hub_cpu_us_per_call"`
	DeviceCPUPerCall float64 `json:"device_cpu_us_per_call"`
	TotalCPUPerCall  float64 `json:"total_cpu_us_per_call"`
	// HubSeconds is the job's own run time as the hub reports it (start
	// to end); Polls the reads of the job WaitJob made (job row only).
	HubSeconds float64 `json:"hub_seconds,omitempty"`
	Polls      int     `json:"polls,omitempty"`
	// Rounds holds each round's numbers when there were several; the
	// row's own numbers are then their medians.
	Rounds []JobsRow `json:"rounds,omitempty"`
}

// JobsRatio compares the job with one InvokeDeviceMethods row: A ÷ B for
// each number (0 when one side lacks it).
type JobsRatio struct {
	A              string  `json:"a"`
	B              string  `json:"b"`
	SecondsRatio   float64 `json:"seconds_ratio"`
	CallsRatio     float64 `json:"calls_per_sec_ratio"`
	HubCPURatio    float64 `json:"hub_cpu_ratio"`
	DeviceCPURatio float64 `json:"device_cpu_ratio"`
	TotalCPURatio  float64 `json:"total_cpu_ratio"`
}

// RunJobs runs the jobs benchmark. On interruption it returns what it
// measured with ctx's error; it fails without a result only when the hub,
// the devices or the fleet cannot be set up.
func RunJobs(ctx context.Context, cfg JobsConfig) (*JobsResult, error) {
	cfg.fill()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	start := time.Now()
	res := &JobsResult{Schema: "iothub-bench-jobs/1", Started: start.UTC().Format(time.RFC3339), Machine: machine(Config{}),
		Devices: cfg.Devices, Transport: cfg.Transport, PayloadBytes: cfg.PayloadSize, Rounds: cfg.Rounds,
		InProcess: cfg.InProcess, JobDeviceConcurrency: engine.DefaultJobDeviceConcurrency,
		PollMs: float64(cfg.PollInterval) / float64(time.Millisecond)}
	defer func() {
		res.Seconds = round(time.Since(start).Seconds(), 1)
		res.Machine.LoadAfter = loadAvg()
	}()
	r := &runner{ctx: ctx, res: &Result{}, cfg: Config{Transports: []string{cfg.Transport}, ConnectConcurrency: cfg.ConnectConcurrency,
		InProcess: cfg.InProcess, FleetCommand: cfg.FleetCommand, Progress: cfg.Progress}}
	r.payload = payloadJSON(cfg.PayloadSize)
	// The hub as every bench mode starts it: engine.Config's defaults, so
	// one active job at a time and JobDeviceConcurrency devices at once.
	if err := r.startHub(); err != nil {
		return nil, err
	}
	defer r.h.Close()

	r.logf("jobs: registering and tagging %d devices", cfg.Devices)
	t0 := time.Now()
	creds, err := r.register("j", cfg.Devices)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(creds))
	tags := []byte(`{"tags":{"bench":"` + jobsTag + `"}}`)
	for i, c := range creds {
		if i%1000 == 0 && ctx.Err() != nil {
			return res, ctx.Err()
		}
		ids[i] = c.id
		if _, herr := r.h.Engine.UpdateTwin(c.id, "", tags, ""); herr != nil {
			return nil, herr
		}
	}
	res.SeedSeconds = round(time.Since(t0).Seconds(), 2)

	r.logf("jobs: connecting %d devices (%s/%s)", len(creds), ImplGoSDK, cfg.Transport)
	f, err := r.startFleet(ImplGoSDK, cfg.Transport, creds, 2*time.Minute, profiles{"jobs", true})
	if err != nil {
		return nil, err
	}
	defer f.close()
	rep := f.report()
	res.ConnectSeconds = round(rep.ConnectSeconds, 2)
	if rep.Connected < len(creds) {
		return nil, fmt.Errorf("bench: %d of %d devices did not connect: %s", len(creds)-rep.Connected, len(creds), rep.FirstError)
	}
	r.logf("jobs: %d devices connected in %.1f s", rep.Connected, rep.ConnectSeconds)

	inv, err := newGoInvoker(r.serviceCS, r.tlsConf, Method, r.payload, jobsInvokeDefault)
	if err != nil {
		return nil, err
	}
	defer inv.close()

	// Warm-up: every device answers a job and a call before anything is
	// measured.
	r.logf("jobs: warm-up, a job and InvokeDeviceMethods over every device")
	for _, w := range []JobsRow{r.jobRow(inv, "bench-jobs-warmup", len(ids), cfg.PollInterval, f), r.invokeRow(inv, ids, jobsInvokeDefault, f)} {
		res.Warmup = append(res.Warmup, w)
		if w.Succeeded == 0 {
			return res, fmt.Errorf("bench: no device answered the warm-up %s: %s", w.Name, w.FirstError)
		}
	}

	rounds := map[string][]JobsRow{}
	order := []string{JobsRowJob, fmt.Sprintf(jobsRowInvoke, engine.DefaultJobDeviceConcurrency), fmt.Sprintf(jobsRowInvoke, jobsInvokeDefault)}
	for k := range cfg.Rounds {
		// Each round starts with the next row, so that none is always
		// measured first.
		for j := range order {
			name := order[(k+j)%len(order)]
			if ctx.Err() != nil {
				break
			}
			var row JobsRow
			if name == JobsRowJob {
				r.logf("jobs: round %d: a job over %d devices", k+1, len(ids))
				row = r.jobRow(inv, fmt.Sprintf("bench-jobs-%d", k), len(ids), cfg.PollInterval, f)
			} else {
				conc := engine.DefaultJobDeviceConcurrency
				if name != order[1] {
					conc = jobsInvokeDefault
				}
				r.logf("jobs: round %d: InvokeDeviceMethods over %d devices, %d at a time", k+1, len(ids), conc)
				row = r.invokeRow(inv, ids, conc, f)
			}
			r.logf("jobs: %s: %d/%d succeeded in %.2f s, %.0f calls/s", row.Name, row.Succeeded, row.Devices, row.Seconds, row.CallsPerSec)
			rounds[name] = append(rounds[name], row)
		}
	}
	for _, name := range order {
		if rr := rounds[name]; len(rr) > 0 {
			res.Rows = append(res.Rows, medianJobsRow(rr))
		}
	}
	res.Ratios = jobsRatios(res.Rows)
	res.Notes = append(res.Notes,
		fmt.Sprintf("the job: one PUT /jobs/v2/{id} (ScheduleDeviceMethod, condition %q), then the hub calls each device through its engine, %d devices at a time (engine.DefaultJobDeviceConcurrency), with no HTTP per call; WaitJob reads the job every %v, and those reads are in the job's time and CPU", jobsCondition, engine.DefaultJobDeviceConcurrency, cfg.PollInterval),
		"InvokeDeviceMethods: one POST /twins/{id}/methods over HTTPS per device, from this process, MaxConcurrency calls in flight",
		"the local hub does not throttle job-driven calls (engine.Config.JobDeviceRate 0); IoT Hub does (10 calls/s on S1), so a job over 10,000 devices there takes at least 1,000 s",
	)
	return res, ctx.Err()
}

// bound is how long one row may take: generous, the calls are answered at
// once by devices that are all connected.
func jobsBound(devices int) time.Duration {
	return 2*time.Minute + time.Duration(devices)*20*time.Millisecond
}

// invokeRow calls the method on every device with InvokeDeviceMethods,
// conc at a time.
func (r *runner) invokeRow(inv *goInvoker, ids []string, conc int, f fleet) JobsRow {
	row := JobsRow{Name: fmt.Sprintf(jobsRowInvoke, conc), Concurrency: conc, Devices: len(ids)}
	ctx, cancel := context.WithTimeout(r.ctx, jobsBound(len(ids)))
	defer cancel()
	runtime.GC()
	m := cpuMeter{f: f}
	var w window
	t0 := time.Now()
	m.start()
	out := inv.c.InvokeDeviceMethods(ctx, ids, inv.m, &service.InvokeManyOptions{MaxConcurrency: conc})
	w.seconds = time.Since(t0).Seconds()
	m.stop(&w)
	for _, o := range out {
		var err error
		switch {
		case o.Err != nil:
			err = o.Err
		case o.Result.Status != 200:
			err = fmt.Errorf("device answered status %d", o.Result.Status)
		}
		if err == nil {
			row.Succeeded++
			continue
		}
		row.Failed++
		if row.FirstError == "" {
			row.FirstError = o.DeviceID + ": " + err.Error()
		}
	}
	fillJobsRow(&row, w)
	return row
}

// jobRow runs one job over the fleet (every tagged device) and waits for
// it to end.
func (r *runner) jobRow(inv *goInvoker, id string, devices int, poll time.Duration, f fleet) JobsRow {
	row := JobsRow{Name: JobsRowJob, Concurrency: engine.DefaultJobDeviceConcurrency, Devices: devices}
	fail := func(err error) JobsRow {
		row.Failed, row.FirstError = devices, err.Error()
		return row
	}
	bound := jobsBound(devices)
	ctx, cancel := context.WithTimeout(r.ctx, bound)
	defer cancel()
	runtime.GC()
	m := cpuMeter{f: f}
	var w window
	t0 := time.Now()
	m.start()
	_, err := inv.c.ScheduleDeviceMethod(ctx, id, jobsCondition, inv.m,
		&service.ScheduleJobOptions{MaxExecutionTime: bound.Truncate(time.Second)})
	if err != nil {
		return fail(fmt.Errorf("scheduling the job: %w", err))
	}
	job, err := inv.c.WaitJob(ctx, id, &service.WaitJobOptions{Interval: poll, Progress: func(*service.Job) { row.Polls++ }})
	w.seconds = time.Since(t0).Seconds()
	m.stop(&w)
	if err != nil {
		// Stop the job so that the next one may start (one active job).
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, _ = inv.c.CancelJob(cctx, id)
		_, _ = inv.c.WaitJob(cctx, id, &service.WaitJobOptions{Interval: 100 * time.Millisecond})
		ccancel()
		return fail(fmt.Errorf("waiting for the job: %w", err))
	}
	if job.Status != service.JobStatusCompleted {
		row.FirstError = fmt.Sprintf("the job ended %s: %s %s", job.Status, job.FailureReason, job.StatusMessage)
	}
	if !job.StartTime.IsZero() && !job.EndTime.IsZero() {
		row.HubSeconds = round(job.EndTime.Sub(job.StartTime).Seconds(), 3)
	}
	// Each device's outcome, from the engine (not measured): a completed
	// device job whose device answered 200 succeeded.
	seen := 0
	for _, dj := range r.h.Engine.DeviceJobs() {
		if dj.JobID != id {
			continue
		}
		seen++
		var err error
		switch {
		case dj.Error != nil:
			err = fmt.Errorf("%s: %s", dj.Error.Code, dj.Error.Description)
		case dj.Status != engine.DeviceJobCompleted:
			err = fmt.Errorf("device job %s", dj.Status)
		case dj.Outcome.DeviceMethodResponse == nil || dj.Outcome.DeviceMethodResponse.Status != 200:
			b, _ := json.Marshal(dj.Outcome.DeviceMethodResponse)
			err = fmt.Errorf("device answered %s", b)
		}
		if err == nil {
			row.Succeeded++
			continue
		}
		row.Failed++
		if row.FirstError == "" {
			row.FirstError = dj.DeviceID + ": " + err.Error()
		}
	}
	if seen != devices {
		row.Failed += max(devices-seen, 0)
		if row.FirstError == "" {
			row.FirstError = fmt.Sprintf("the job selected %d devices, not %d", seen, devices)
		}
	}
	fillJobsRow(&row, w)
	return row
}

// fillJobsRow sets row's rates from a measured window.
func fillJobsRow(row *JobsRow, w window) {
	row.Seconds = round(w.seconds, 3)
	n := float64(row.Succeeded)
	if w.seconds > 0 {
		row.CallsPerSec = round(n/w.seconds, 1)
	}
	if n > 0 {
		row.HubCPUPerCall = round(w.cpu*1e6/n, 1)
		row.DeviceCPUPerCall = round(w.fleetCPU*1e6/n, 1)
		row.TotalCPUPerCall = round((w.cpu+w.fleetCPU)*1e6/n, 1)
	}
}

// medianJobsRow combines the rounds of one row: the median of each
// number; the counts of the worst round.
func medianJobsRow(rounds []JobsRow) JobsRow {
	if len(rounds) == 1 {
		return rounds[0]
	}
	out := rounds[0]
	out.Rounds = rounds
	for _, r := range rounds {
		if r.Failed > out.Failed {
			out.Succeeded, out.Failed, out.FirstError = r.Succeeded, r.Failed, r.FirstError
		}
		out.Polls = max(out.Polls, r.Polls)
	}
	out.Seconds = medianOf(rounds, func(r JobsRow) float64 { return r.Seconds })
	out.CallsPerSec = medianOf(rounds, func(r JobsRow) float64 { return r.CallsPerSec })
	out.HubCPUPerCall = medianOf(rounds, func(r JobsRow) float64 { return r.HubCPUPerCall })
	out.DeviceCPUPerCall = medianOf(rounds, func(r JobsRow) float64 { return r.DeviceCPUPerCall })
	out.TotalCPUPerCall = medianOf(rounds, func(r JobsRow) float64 { return r.TotalCPUPerCall })
	out.HubSeconds = medianOf(rounds, func(r JobsRow) float64 { return r.HubSeconds })
	return out
}

// jobsRatios compares the job with each InvokeDeviceMethods row.
func jobsRatios(rows []JobsRow) []JobsRatio {
	ratio := func(a, b float64) float64 {
		if a <= 0 || b <= 0 {
			return 0
		}
		return round(a/b, 3)
	}
	var job *JobsRow
	for i := range rows {
		if rows[i].Name == JobsRowJob {
			job = &rows[i]
		}
	}
	if job == nil || job.Succeeded == 0 {
		return nil
	}
	var out []JobsRatio
	for _, b := range rows {
		if b.Name == JobsRowJob || b.Succeeded == 0 {
			continue
		}
		out = append(out, JobsRatio{A: job.Name, B: b.Name, SecondsRatio: ratio(job.Seconds, b.Seconds),
			CallsRatio: ratio(job.CallsPerSec, b.CallsPerSec), HubCPURatio: ratio(job.HubCPUPerCall, b.HubCPUPerCall),
			DeviceCPURatio: ratio(job.DeviceCPUPerCall, b.DeviceCPUPerCall), TotalCPURatio: ratio(job.TotalCPUPerCall, b.TotalCPUPerCall)})
	}
	return out
}

// MarshalIndent is json.MarshalIndent of the result.
func (res *JobsResult) MarshalIndent() ([]byte, error) { return json.MarshalIndent(res, "", "  ") }

// WriteTable writes the result as tables for people.
func (res *JobsResult) WriteTable(w io.Writer) {
	m := res.Machine
	fmt.Fprintf(w, "iothub bench --jobs: %d CPUs (%s), %.1f GB, Linux %s, %s; load %.2f before, %.2f after; %.0f s\n",
		m.CPUs, m.CPUModel, float64(m.MemoryBytes)/(1<<30), m.Kernel, m.GoVersion, m.LoadBefore, m.LoadAfter, res.Seconds)
	where := "in a child process"
	if res.InProcess {
		where = "in this process (its CPU is in the hub's column)"
	}
	fmt.Fprintf(w, "%d devices (%s/%s, %s) connected in %.1f s; payload %d B; a job calls %d devices at a time; WaitJob polls every %g ms; ",
		res.Devices, ImplGoSDK, res.Transport, where, res.ConnectSeconds, res.PayloadBytes, res.JobDeviceConcurrency, res.PollMs)
	if res.Rounds > 1 {
		fmt.Fprintf(w, "median of %d rounds\n\n", res.Rounds)
	} else {
		fmt.Fprintf(w, "one round\n\n")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "row\tin flight\tdevices\tsucceeded\twall s\tcalls/s\thub+client CPU µs/call\tfleet CPU µs/call\ttotal CPU µs/call\t")
	for _, r := range res.Rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.2f\t%.0f\t%.0f\t%.0f\t%.0f\t\n", r.Name, r.Concurrency, r.Devices, r.Succeeded, r.Seconds,
			r.CallsPerSec, r.HubCPUPerCall, r.DeviceCPUPerCall, r.TotalCPUPerCall)
	}
	tw.Flush()
	for _, r := range res.Rows {
		if r.Name == JobsRowJob && r.HubSeconds > 0 {
			fmt.Fprintf(w, "the job ran %.2f s by the hub's clock (start to end); WaitJob read it %d times\n", r.HubSeconds, r.Polls)
		}
		if r.FirstError != "" {
			fmt.Fprintf(w, "%s: %d failed, first: %s\n", r.Name, r.Failed, r.FirstError)
		}
	}
	if len(res.Ratios) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ratio\twall time\tcalls/s\thub+client CPU/call\tfleet CPU/call\ttotal CPU/call\t")
		for _, q := range res.Ratios {
			fmt.Fprintf(tw, "%s ÷ %s\t%s\t%s\t%s\t%s\t%s\t\n", q.A, q.B, ratioText(q.SecondsRatio), ratioText(q.CallsRatio),
				ratioText(q.HubCPURatio), ratioText(q.DeviceCPURatio), ratioText(q.TotalCPURatio))
		}
		tw.Flush()
	}
	for _, n := range res.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}
