// Command fleet-reboot reboots every device whose twin tag "site" is
// "berlin", in one of two ways:
//
//   - -mode job (the default): one IoT Hub job. The hub invokes "reboot" on
//     every device the condition selects and tracks each one; the command
//     shows the job's progress, then each device's outcome (the
//     devices.jobs query).
//   - -mode invoke: the back end does it itself with
//     service.Client.InvokeDeviceMethodsWhere, which reads the device ids
//     from a query and calls them at most -rate calls per second, honouring
//     the hub's 429 Retry-After.
//
// One failing device does not stop the others.
//
//	go run ./examples/fleet-reboot                  # 10 simulated devices on an in-process hub, 5 in berlin, one offline
//	go run ./examples/fleet-reboot -mode invoke -rate 20 -n 100
//
// Against your own hub, nothing is registered or simulated; the condition
// selects the devices:
//
//	export IOTHUB_SERVICE_CONNECTION_STRING='HostName=…;SharedAccessKeyName=iothubowner;SharedAccessKey=…'
//	go run ./examples/fleet-reboot [-condition "tags.site = 'berlin'"] [-ca-file ca.pem]
//
// Mind IoT Hub's throttles: jobs run methods at 10 calls per second on an
// S1 hub; direct calls are limited to about 40 small calls per second per
// S1 unit, hence -rate.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// config is what the command line and the environment say.
type config struct {
	// Mode is "job" (an IoT Hub job) or "invoke" (InvokeDeviceMethodsWhere).
	Mode string
	// Condition selects the devices: a WHERE condition over device twins.
	Condition string
	// N is how many devices to simulate on the in-process hub.
	N int
	// Rate bounds the calls started per second in invoke mode.
	Rate float64
	// ServiceConnectionString selects an existing hub; "" means simulate.
	ServiceConnectionString string
	// CAFile is a PEM file of CA certificates to trust (a local hub's
	// --ca-file); "" means the system roots.
	CAFile string
	// Poll is how often job mode reads the job's progress.
	Poll time.Duration
}

func main() {
	cfg := config{ServiceConnectionString: os.Getenv("IOTHUB_SERVICE_CONNECTION_STRING")}
	flag.StringVar(&cfg.Mode, "mode", "job", "job: one IoT Hub job; invoke: InvokeDeviceMethodsWhere with a rate limit")
	flag.StringVar(&cfg.Condition, "condition", "tags.site = 'berlin'", "query condition selecting the devices to reboot")
	flag.IntVar(&cfg.N, "n", 10, "number of simulated devices (in-process hub only)")
	flag.Float64Var(&cfg.Rate, "rate", 20, "invoke mode: calls started per second at most")
	flag.StringVar(&cfg.CAFile, "ca-file", "", "PEM CA certificates to trust (for `iothub hub`)")
	flag.DurationVar(&cfg.Poll, "poll", time.Second, "job mode: how often to read the job's progress")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fleet-reboot:", err)
		os.Exit(1)
	}
}

// reboot is the call every selected device gets.
var reboot = service.CloudToDeviceMethod{
	MethodName:      "reboot",
	Payload:         map[string]int{"delaySeconds": 5},
	ResponseTimeout: 30 * time.Second,
}

func run(ctx context.Context, cfg config, out io.Writer) error {
	if cfg.Mode != "job" && cfg.Mode != "invoke" {
		return fmt.Errorf("-mode %q: want job or invoke", cfg.Mode)
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	var svc *service.Client
	if cfg.ServiceConnectionString == "" {
		hub, err := iothubtest.Start(nil)
		if err != nil {
			return err
		}
		defer hub.Close()
		fmt.Fprintf(out, "hub:     started in-process at %s\n", hub.Addr())
		svc, err = service.NewClientFromConnectionString(hub.ServiceConnectionString(),
			&service.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: hub.HTTPClient()}})
		if err != nil {
			return err
		}
		stop, err := simulateFleet(ctx, hub, svc, cfg.N, out)
		defer stop()
		if err != nil {
			return err
		}
	} else {
		opts := &service.ClientOptions{}
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return err
			}
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(pem) {
				return fmt.Errorf("%s holds no PEM certificate", cfg.CAFile)
			}
			opts.Transport = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
		}
		var err error
		if svc, err = service.NewClientFromConnectionString(cfg.ServiceConnectionString, opts); err != nil {
			return err
		}
		fmt.Fprintf(out, "hub:     %s, from IOTHUB_SERVICE_CONNECTION_STRING\n", svc.HostName())
	}
	start := time.Now()
	if cfg.Mode == "job" {
		return rebootWithJob(ctx, svc, cfg, out, start)
	}
	return rebootWithCalls(ctx, svc, cfg, out, start)
}

// rebootWithJob schedules one job, shows its progress and then each
// device's outcome.
func rebootWithJob(ctx context.Context, svc *service.Client, cfg config, out io.Writer, start time.Time) error {
	id := fmt.Sprintf("fleet-reboot-%d", start.UnixNano())
	job, err := svc.ScheduleDeviceMethod(ctx, id, cfg.Condition, reboot, &service.ScheduleJobOptions{MaxExecutionTime: 10 * time.Minute})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "job:     %s scheduled: \"reboot\" on every device where %s\n", job.ID, cfg.Condition)
	last := ""
	job, err = svc.WaitJob(ctx, job.ID, &service.WaitJobOptions{Interval: cfg.Poll, Progress: func(j *service.Job) {
		s := j.Statistics
		line := fmt.Sprintf("progress: %s, %d of %d devices done (%d failed)", j.Status, s.SucceededCount+s.FailedCount, s.DeviceCount, s.FailedCount)
		if line != last { // print only what changed
			fmt.Fprintln(out, line)
			last = line
		}
	}})
	if err != nil {
		return err
	}
	// Each device's outcome is a device job, read with a query.
	pager := svc.NewQueryPager("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '"+job.ID+"'", nil)
	var results []*service.DeviceJob
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return err
		}
		djs, err := page.DeviceJobs()
		if err != nil {
			return err
		}
		results = append(results, djs...)
	}
	sort.Slice(results, func(i, j int) bool { return results[i].DeviceID < results[j].DeviceID })
	ok := 0
	for _, dj := range results {
		switch {
		case dj.Error != nil: // the hub's verdict for that device
			fmt.Fprintf(out, "  %-10s failed: %s\n", dj.DeviceID, dj.Error.Code)
		case dj.MethodResult != nil: // the device's answer, whatever its status
			fmt.Fprintf(out, "  %-10s %d %s\n", dj.DeviceID, dj.MethodResult.Status, dj.MethodResult.Payload)
			if dj.MethodResult.Status == 200 {
				ok++
			}
		default:
			fmt.Fprintf(out, "  %-10s %s\n", dj.DeviceID, dj.Status)
		}
	}
	fmt.Fprintf(out, "summary: job %s; %d of %d rebooting, %d failed, in %s\n", job.Status, ok, len(results), len(results)-ok, time.Since(start).Round(time.Millisecond))
	return nil
}

// rebootWithCalls invokes the method from the back end, device by device,
// on the devices a query selects, at most cfg.Rate calls per second.
func rebootWithCalls(ctx context.Context, svc *service.Client, cfg config, out io.Writer, start time.Time) error {
	fmt.Fprintf(out, "service: invoking \"reboot\" on every device where %s, at most %g calls/s\n", cfg.Condition, cfg.Rate)
	results, err := svc.InvokeDeviceMethodsWhere(ctx, cfg.Condition, reboot, &service.InvokeManyOptions{RateLimit: cfg.Rate})
	if err != nil {
		return err
	}
	sort.Slice(results, func(i, j int) bool { return results[i].DeviceID < results[j].DeviceID })
	ok := 0
	for _, r := range results {
		var re *service.ResponseError
		switch {
		case errors.As(r.Err, &re): // the hub's verdict: offline, unknown, timed out, throttled…
			fmt.Fprintf(out, "  %-10s failed: %d %s\n", r.DeviceID, re.Code, re.ErrorCode)
		case r.Err != nil: // the network, or ctx
			fmt.Fprintf(out, "  %-10s failed: %v\n", r.DeviceID, r.Err)
		default: // the device's answer, whatever its status
			fmt.Fprintf(out, "  %-10s %d %s\n", r.DeviceID, r.Result.Status, r.Result.Payload)
			if r.Result.Status == 200 {
				ok++
			}
		}
	}
	fmt.Fprintf(out, "summary: %d of %d rebooting, %d failed, in %s\n", ok, len(results), len(results)-ok, time.Since(start).Round(time.Millisecond))
	return nil
}

func deviceName(i int) string { return fmt.Sprintf("fleet-%02d", i) }

// site is where simulated device i stands: odd devices in berlin.
func site(i int) string {
	if i%2 == 1 {
		return "berlin"
	}
	return "munich"
}

// simulateFleet registers n devices, tags each with its site, and
// connects all but the last berlin device, each answering "reboot" after
// a short pause. stop closes them.
func simulateFleet(ctx context.Context, hub *iothubtest.Server, svc *service.Client, n int, out io.Writer) (stop func(), err error) {
	var clients []*device.Client
	stop = func() {
		for _, c := range clients {
			c.Close(context.WithoutCancel(ctx))
		}
	}
	lastBerlin := n
	for site(lastBerlin) != "berlin" {
		lastBerlin--
	}
	berlin := 0
	for i := 1; i <= n; i++ {
		d, err := svc.CreateDevice(ctx, &service.Device{DeviceID: deviceName(i)})
		if err != nil {
			return stop, err
		}
		if _, err := svc.UpdateTwin(ctx, d.DeviceID, &service.TwinPatch{Tags: map[string]any{"site": site(i)}}, nil); err != nil {
			return stop, err
		}
		if site(i) == "berlin" {
			berlin++
		}
		if i == lastBerlin && n > 1 {
			continue // registered, never connected: the hub answers 404103
		}
		cs, err := svc.DeviceConnectionString(d, service.KeyKindPrimary)
		if err != nil {
			return stop, err
		}
		c, err := device.NewClientFromConnectionString(cs, &device.ClientOptions{TLSConfig: hub.TLSConfig()})
		if err != nil {
			return stop, err
		}
		clients = append(clients, c)
		err = c.SetMethodHandler("reboot", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
			select { // pretend to prepare the reboot
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return device.JSONResponse(200, map[string]string{"result": "Reboot started."})
		})
		if err != nil {
			return stop, err
		}
		if err := c.Connect(ctx); err != nil {
			return stop, err
		}
	}
	fmt.Fprintf(out, "devices: %d registered, %d in berlin, %d connected over mqtt", n, berlin, len(clients))
	if len(clients) < n {
		fmt.Fprintf(out, " (%s stays offline)", deviceName(lastBerlin))
	}
	fmt.Fprintln(out)
	return stop, nil
}
