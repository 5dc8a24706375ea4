package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/iothub-go/iothub/service"
)

// "iothub job": schedule, show, list, wait for and cancel IoT Hub jobs.

const jobUsage = `usage: iothub job <schedule|show|list|wait|cancel> [flags]

Schedules and tracks jobs: a direct method or a twin update that the hub
runs on every device a query condition selects.

  iothub job schedule --id reboot-1 --condition "tags.site = 'berlin'" --method reboot [--payload JSON] [--wait]
  iothub job schedule --id tag-1 --condition "deviceId IN ['a','b']" --twin-patch '{"tags":{"ring":2}}'
  iothub job show --id reboot-1 [--devices]   # the job, and with --devices each device's outcome
  iothub job list [--type scheduleDeviceMethod] [--status running]
  iothub job wait --id reboot-1               # a progress line until the job ends
  iothub job cancel --id reboot-1

--output text (the default) prints a job as one line:

  reboot-1 scheduleDeviceMethod completed: 12 devices, 11 succeeded, 1 failed, 0 running, 0 pending

and each device's outcome (--devices, --wait) as one line:

  fleet-01 completed 200 {"result":"Reboot started."}
  fleet-12 failed DeviceNotOnline

--output json prints the job as the hub's JSON on one line, and each
device's outcome as one line. While waiting, progress lines go to stderr.

"wait" and "schedule --wait" exit 1 unless the job completed and every
device succeeded.

`

// jobFlags are the flags every job subcommand shares.
type jobFlags struct {
	connStr string
	caFile  string
	id      string
	output  output
}

func (f *jobFlags) register(fs *flag.FlagSet, needID bool) {
	fs.StringVar(&f.connStr, "connection-string", "",
		"hub policy connection string with ServiceConnect and RegistryWrite (default $IOTHUB_SERVICE_CONNECTION_STRING)")
	fs.StringVar(&f.caFile, "ca-file", "", "PEM file of CA certificates to trust (e.g. a local hub's --ca-file) instead of the system roots")
	if needID {
		fs.StringVar(&f.id, "id", "", "job id (required)")
	}
	outputFlag(fs, &f.output)
}

func (f *jobFlags) check(fs *flag.FlagSet, needID bool) error {
	fromEnv(&f.connStr, "IOTHUB_SERVICE_CONNECTION_STRING")
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("iothub: unexpected argument %q", fs.Arg(0))
	case f.connStr == "":
		return errors.New("iothub: --connection-string or $IOTHUB_SERVICE_CONNECTION_STRING is required")
	case needID && f.id == "":
		return errors.New("iothub: --id is required")
	}
	return nil
}

// runJob runs "iothub job".
func runJob(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, jobUsage)
		return exitUsage
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, jobUsage)
		return exitOK
	case "schedule", "show", "list", "wait", "cancel":
	default:
		fmt.Fprintf(stderr, "iothub: unknown job command %q\n", sub)
		fmt.Fprint(stderr, jobUsage)
		return exitUsage
	}
	var (
		f                  jobFlags
		condition, method  string
		payload, patch     string
		start              string
		rt, ct, maxExec    time.Duration
		wait, devices      bool
		jobType, jobStatus string
	)
	needID := sub != "list"
	fs := flag.NewFlagSet("iothub job "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), jobUsage+exitCodesHelp+"\nflags of \"iothub job "+sub+"\":\n")
		fs.PrintDefaults()
	}
	f.register(fs, needID)
	switch sub {
	case "schedule":
		fs.StringVar(&condition, "condition", "", "query condition selecting the devices, e.g. \"tags.site = 'berlin'\" (required)")
		fs.StringVar(&method, "method", "", "direct method to invoke on each device")
		fs.StringVar(&payload, "payload", "", "the method's payload, as JSON (default: none, i.e. null)")
		fs.Var(secondsFlag{&rt}, "response-timeout", "how long the hub waits for each device's answer: a `duration` or seconds, 5s to 300s (default 30s)")
		fs.Var(secondsFlag{&ct}, "connect-timeout", "how long the hub waits for an offline device: a `duration` or seconds, 0s to 300s (default 0s)")
		fs.StringVar(&patch, "twin-patch", "", `twin patch to apply instead of a method, as JSON: {"tags":{…},"properties":{"desired":{…}}}`)
		fs.StringVar(&start, "start", "", "start time: RFC 3339 (2026-12-06T10:00:00Z) or a duration from now (+10m); default now")
		fs.Var(secondsFlag{&maxExec}, "max-execution-time", "how long the job may run: a `duration` or seconds (default 1h)")
		fs.BoolVar(&wait, "wait", false, "wait for the job to end, with progress on stderr, then print each device's outcome")
	case "show":
		fs.BoolVar(&devices, "devices", false, "also print each device's outcome (a devices.jobs query)")
	case "wait":
		fs.BoolVar(&devices, "devices", true, "print each device's outcome once the job ends")
	case "list":
		fs.StringVar(&jobType, "type", "", "only jobs of this type: scheduleDeviceMethod or scheduleUpdateTwin")
		fs.StringVar(&jobStatus, "status", "", "only jobs in this state: scheduled, running, completed, failed, cancelled, …")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if err := f.check(fs, needID); err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, closeIdle, err := newServiceClient(f.connStr, f.caFile)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	defer closeIdle()
	p := jobPrinter{w: stdout, out: f.output}
	switch sub {
	case "schedule":
		return scheduleJob(ctx, c, scheduleArgs{id: f.id, condition: condition, method: method, payload: payload, patch: patch,
			start: start, rt: rt, ct: ct, maxExec: maxExec, wait: wait}, p, stderr)
	case "show":
		job, err := c.GetJob(ctx, f.id)
		if err != nil {
			return jobFailed(stderr, err)
		}
		if err := p.job(job); err != nil {
			return jobFailed(stderr, err)
		}
		if devices {
			return printDeviceJobs(ctx, c, f.id, p, stderr)
		}
		return exitOK
	case "wait":
		return waitJob(ctx, c, f.id, devices, p, stderr)
	case "cancel":
		job, err := c.CancelJob(ctx, f.id)
		if err != nil {
			return jobFailed(stderr, err)
		}
		if err := p.job(job); err != nil {
			return jobFailed(stderr, err)
		}
		return exitOK
	default: // list
		pager := c.NewListJobsPager(&service.ListJobsOptions{Type: service.JobType(jobType), Status: service.JobStatus(jobStatus)})
		for pager.More() {
			page, err := pager.NextPage(ctx)
			if err != nil {
				return jobFailed(stderr, err)
			}
			for _, j := range page.Jobs {
				if err := p.job(j); err != nil {
					return jobFailed(stderr, err)
				}
			}
		}
		return exitOK
	}
}

// scheduleArgs are the flags of "iothub job schedule".
type scheduleArgs struct {
	id, condition, method, payload, patch, start string
	rt, ct, maxExec                              time.Duration
	wait                                         bool
}

func scheduleJob(ctx context.Context, c *service.Client, a scheduleArgs, p jobPrinter, stderr io.Writer) int {
	if a.condition == "" {
		fmt.Fprintln(stderr, "iothub: --condition is required (\"deviceId IN ['a','b']\" names devices)")
		return exitUsage
	}
	if (a.method == "") == (a.patch == "") {
		fmt.Fprintln(stderr, "iothub: give exactly one of --method and --twin-patch")
		return exitUsage
	}
	opts := &service.ScheduleJobOptions{MaxExecutionTime: a.maxExec}
	if a.start != "" {
		t, err := parseStart(a.start, time.Now())
		if err != nil {
			fmt.Fprintln(stderr, err)
			return exitUsage
		}
		opts.StartTime = t
	}
	var job *service.Job
	var err error
	if a.method != "" {
		m := service.CloudToDeviceMethod{MethodName: a.method, ResponseTimeout: a.rt, ConnectTimeout: a.ct}
		if a.payload != "" {
			if !json.Valid([]byte(a.payload)) {
				fmt.Fprintln(stderr, "iothub: --payload is not valid JSON (quote strings: --payload '\"text\"')")
				return exitUsage
			}
			m.Payload = json.RawMessage(a.payload)
		}
		job, err = c.ScheduleDeviceMethod(ctx, a.id, a.condition, m, opts)
	} else {
		var patch struct {
			Tags       map[string]any `json:"tags"`
			Properties struct {
				Desired map[string]any `json:"desired"`
			} `json:"properties"`
		}
		if err := json.Unmarshal([]byte(a.patch), &patch); err != nil {
			fmt.Fprintf(stderr, "iothub: --twin-patch is not a twin patch ({\"tags\":{…},\"properties\":{\"desired\":{…}}}): %v\n", err)
			return exitUsage
		}
		job, err = c.ScheduleTwinUpdate(ctx, a.id, a.condition, &service.TwinPatch{Tags: patch.Tags, Desired: patch.Properties.Desired}, opts)
	}
	if err != nil {
		var re *service.ResponseError
		if errors.Is(err, service.ErrArgumentInvalid) && !errors.As(err, &re) {
			fmt.Fprintln(stderr, err)
			return exitUsage
		}
		return jobFailed(stderr, err)
	}
	if !a.wait {
		if err := p.job(job); err != nil {
			return jobFailed(stderr, err)
		}
		return exitOK
	}
	return waitJob(ctx, c, a.id, true, p, stderr)
}

// parseStart reads --start: RFC 3339, or "+duration" from now.
func parseStart(s string, now time.Time) (time.Time, error) {
	if rest, ok := strings.CutPrefix(s, "+"); ok {
		d, err := time.ParseDuration(rest)
		if err != nil || d < 0 {
			return time.Time{}, fmt.Errorf("iothub: --start %q: want +DURATION such as +10m, or an RFC 3339 time", s)
		}
		return now.Add(d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("iothub: --start %q: want an RFC 3339 time such as 2026-12-06T10:00:00Z, or +DURATION", s)
	}
	return t, nil
}

// waitJob waits for the job to end with a progress line on stderr each
// time its statistics change, then prints it (and its devices).
func waitJob(ctx context.Context, c *service.Client, id string, devices bool, p jobPrinter, stderr io.Writer) int {
	last := ""
	job, err := c.WaitJob(ctx, id, &service.WaitJobOptions{Interval: 500 * time.Millisecond, Progress: func(j *service.Job) {
		if line := progressLine(j); line != last {
			last = line
			fmt.Fprintln(stderr, line)
		}
	}})
	if err != nil {
		return jobFailed(stderr, err)
	}
	if err := p.job(job); err != nil {
		return jobFailed(stderr, err)
	}
	if devices {
		if code := printDeviceJobs(ctx, c, id, p, stderr); code != exitOK {
			return code
		}
	}
	if job.Status != service.JobStatusCompleted || job.Statistics.FailedCount > 0 {
		return exitFailure
	}
	return exitOK
}

// progressLine is one line of a job's progress.
func progressLine(j *service.Job) string {
	s := j.Statistics
	return fmt.Sprintf("%s %s: %d of %d devices done (%d succeeded, %d failed), %d running, %d pending",
		j.ID, j.Status, s.SucceededCount+s.FailedCount, s.DeviceCount, s.SucceededCount, s.FailedCount, s.RunningCount, s.PendingCount)
}

// printDeviceJobs prints each device's part in the job, from the
// devices.jobs query.
func printDeviceJobs(ctx context.Context, c *service.Client, id string, p jobPrinter, stderr io.Writer) int {
	q := "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '" + strings.ReplaceAll(id, "'", "\\'") + "'"
	pager := c.NewQueryPager(q, &service.QueryOptions{PageSize: service.MaxQueryPageSize})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return jobFailed(stderr, err)
		}
		if p.out == outputJSON {
			for _, it := range page.Items {
				if err := writeJSON(p.w, it); err != nil {
					return jobFailed(stderr, err)
				}
			}
			continue
		}
		djs, err := page.DeviceJobs()
		if err != nil {
			return jobFailed(stderr, err)
		}
		for _, dj := range djs {
			line := fmt.Sprintf("  %s %s", dj.DeviceID, dj.Status)
			if r := dj.MethodResult; r != nil {
				line += fmt.Sprintf(" %d %s", r.Status, r.Payload)
			}
			if e := dj.Error; e != nil {
				line += " " + e.Code
			}
			if _, err := fmt.Fprintln(p.w, line); err != nil {
				return jobFailed(stderr, err)
			}
		}
	}
	return exitOK
}

// jobPrinter prints jobs as --output says.
type jobPrinter struct {
	w   io.Writer
	out output
}

func (p jobPrinter) job(j *service.Job) error {
	if p.out == outputJSON {
		return writeJSON(p.w, j)
	}
	s := j.Statistics
	line := fmt.Sprintf("%s %s %s: %d devices, %d succeeded, %d failed, %d running, %d pending",
		j.ID, j.Type, j.Status, s.DeviceCount, s.SucceededCount, s.FailedCount, s.RunningCount, s.PendingCount)
	if j.FailureReason != "" {
		line += " (" + j.FailureReason + ")"
	}
	_, err := fmt.Fprintln(p.w, line)
	return err
}

// jobFailed prints a failure of the hub or the network and returns
// exitFailure.
func jobFailed(stderr io.Writer, err error) int {
	fmt.Fprintln(stderr, err)
	var re *service.ResponseError
	if errors.As(err, &re) && re.TrackingID != "" {
		fmt.Fprintf(stderr, "iothub: tracking ID %s\n", re.TrackingID)
	}
	return exitFailure
}
