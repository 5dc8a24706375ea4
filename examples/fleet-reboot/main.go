// Command fleet-reboot invokes "reboot" on many devices at once with
// service.Client.InvokeDeviceMethods, a few calls at a time, and reports each
// device's outcome: one failing device does not stop the others.
//
//	go run ./examples/fleet-reboot                  # 10 simulated devices on an in-process hub, one offline
//	go run ./examples/fleet-reboot -n 100 -concurrency 16
//
// Against your own hub, name the devices; nothing is registered or simulated:
//
//	export IOTHUB_SERVICE_CONNECTION_STRING='HostName=…;SharedAccessKeyName=service;SharedAccessKey=…'
//	go run ./examples/fleet-reboot -devices dev1,dev2,dev3 [-ca-file ca.pem]
//
// Mind IoT Hub's throttle for direct methods (about 40 small calls per
// second per S1 unit): -concurrency bounds the calls in flight.
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
	"strings"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// config is what the command line and the environment say.
type config struct {
	// N is how many devices to simulate on the in-process hub.
	N int
	// Concurrency bounds the invocations in flight.
	Concurrency int
	// ServiceConnectionString selects an existing hub; "" means simulate.
	ServiceConnectionString string
	// Devices are the device ids to reboot on an existing hub.
	Devices []string
	// CAFile is a PEM file of CA certificates to trust (a local hub's
	// --ca-file); "" means the system roots.
	CAFile string
}

func main() {
	cfg := config{ServiceConnectionString: os.Getenv("IOTHUB_SERVICE_CONNECTION_STRING")}
	var devices string
	flag.IntVar(&cfg.N, "n", 10, "number of simulated devices (in-process hub only)")
	flag.IntVar(&cfg.Concurrency, "concurrency", 4, "invocations in flight at once")
	flag.StringVar(&devices, "devices", "", "comma-separated device ids to reboot on the hub of $IOTHUB_SERVICE_CONNECTION_STRING")
	flag.StringVar(&cfg.CAFile, "ca-file", "", "PEM CA certificates to trust (for `iothub hub`)")
	flag.Parse()
	if devices != "" {
		cfg.Devices = strings.Split(devices, ",")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fleet-reboot:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, out io.Writer) error {
	var svc *service.Client
	ids := cfg.Devices
	if cfg.ServiceConnectionString == "" {
		if len(ids) > 0 {
			return errors.New("-devices needs IOTHUB_SERVICE_CONNECTION_STRING")
		}
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
		for i := 1; i <= cfg.N; i++ {
			ids = append(ids, deviceName(i))
		}
	} else {
		if len(ids) == 0 {
			return errors.New("name the devices to reboot with -devices id1,id2,…")
		}
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

	// One call per device, at most cfg.Concurrency at a time. Each result
	// holds the device's answer or the error for that device.
	fmt.Fprintf(out, "service: invoking \"reboot\" on %d devices, %d at a time\n", len(ids), cfg.Concurrency)
	start := time.Now()
	results := svc.InvokeDeviceMethods(ctx, ids, service.CloudToDeviceMethod{
		MethodName:      "reboot",
		Payload:         map[string]int{"delaySeconds": 5},
		ResponseTimeout: 30 * time.Second,
	}, &service.InvokeManyOptions{MaxConcurrency: cfg.Concurrency})
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
	fmt.Fprintf(out, "summary: %d of %d rebooting, %d failed, in %s\n", ok, len(ids), len(ids)-ok, time.Since(start).Round(time.Millisecond))
	return nil
}

func deviceName(i int) string { return fmt.Sprintf("fleet-%02d", i) }

// simulateFleet registers n devices and connects all but the last, each
// answering "reboot" after a short pause. stop closes them.
func simulateFleet(ctx context.Context, hub *iothubtest.Server, svc *service.Client, n int, out io.Writer) (stop func(), err error) {
	var clients []*device.Client
	stop = func() {
		for _, c := range clients {
			c.Close(context.WithoutCancel(ctx))
		}
	}
	for i := 1; i <= n; i++ {
		d, err := svc.CreateDevice(ctx, &service.Device{DeviceID: deviceName(i)})
		if err != nil {
			return stop, err
		}
		if i == n && n > 1 {
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
	fmt.Fprintf(out, "devices: %d registered, %d connected over mqtt", n, len(clients))
	if len(clients) < n {
		fmt.Fprintf(out, " (%s stays offline)", deviceName(n))
	}
	fmt.Fprintln(out)
	return stop, nil
}
