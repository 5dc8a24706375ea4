// Command quickstart shows the reboot flow end to end in one program: a hub,
// a device that answers the direct method "reboot" and then reports when it
// rebooted in its twin, and a back-end that invokes "reboot" and reads the
// reported time back from the device twin.
//
//	go run ./examples/quickstart                       # everything in-process, nothing to configure
//	go run ./examples/quickstart --transport mqtt-ws   # the device uses MQTT over WebSocket
//
// With no configuration it starts a local IoT Hub in-process
// (github.com/iothub-go/iothub/iothubtest), registers a device through the
// service client's registry, connects the device and invokes "reboot". The
// device answers, then (off its handler's goroutine, standing for the
// reboot itself) reports iothubDM.reboot.lastReboot, and the back-end reads
// the twin until it shows that property.
//
// To run the same flow against a real Azure IoT Hub, or against the
// standalone local hub (go run ./cmd/iothub hub --ca-file ca.pem --device
// dev1), set both connection strings; the device must already exist:
//
//	export IOTHUB_SERVICE_CONNECTION_STRING='HostName=…;SharedAccessKeyName=service;SharedAccessKey=…'
//	export IOTHUB_DEVICE_CONNECTION_STRING='HostName=…;DeviceId=…;SharedAccessKey=…'
//	go run ./examples/quickstart                  # Azure IoT Hub
//	go run ./examples/quickstart --ca-file ca.pem # iothub hub: trust its CA
//
// --transport picks the device's protocol: mqtt (default), mqtt-ws, amqp,
// amqp-ws or http. All but http carry direct methods and twins; http shows
// why HTTPS cannot: IoT Hub delivers neither direct methods nor twin
// operations to devices over HTTPS, so the device client refuses them at
// once with ErrUnsupported.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
	"github.com/iothub-go/iothub/transport"
	"github.com/iothub-go/iothub/transport/amqp"
	httptransport "github.com/iothub-go/iothub/transport/http"
	"github.com/iothub-go/iothub/transport/mqtt"
)

// config is what the command line and the environment say.
type config struct {
	// Transport is the device transport: mqtt, mqtt-ws, amqp, amqp-ws or http.
	Transport string
	// ServiceConnectionString and DeviceConnectionString select an existing
	// hub and device; both empty means an in-process hub.
	ServiceConnectionString string
	DeviceConnectionString  string
	// CAFile is a PEM file of CA certificates to trust instead of the
	// system roots (the --ca-file of iothub hub).
	CAFile string
}

func main() {
	cfg := config{
		ServiceConnectionString: os.Getenv("IOTHUB_SERVICE_CONNECTION_STRING"),
		DeviceConnectionString:  os.Getenv("IOTHUB_DEVICE_CONNECTION_STRING"),
	}
	flag.StringVar(&cfg.Transport, "transport", "mqtt", "device transport: mqtt, mqtt-ws, amqp, amqp-ws or http")
	flag.StringVar(&cfg.CAFile, "ca-file", "", "PEM CA certificates to trust (for `iothub hub`); default: the system roots")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, out io.Writer) error {
	tr, err := newTransport(cfg.Transport)
	if err != nil {
		return err
	}

	// 1. A hub, a service connection string and a device connection string.
	svcCS, devCS := cfg.ServiceConnectionString, cfg.DeviceConnectionString
	var roots *x509.CertPool // nil: the system roots, right for Azure
	switch {
	case svcCS == "" && devCS == "":
		hub, err := iothubtest.Start(nil)
		if err != nil {
			return err
		}
		defer hub.Close()
		fmt.Fprintf(out, "hub:     started in-process at %s (TLS; MQTT, AMQP, WebSocket and HTTPS on one port)\n", hub.Addr())
		svcCS, roots = hub.ServiceConnectionString(), hub.CertPool()
	case svcCS == "" || devCS == "":
		return errors.New("set both IOTHUB_SERVICE_CONNECTION_STRING and IOTHUB_DEVICE_CONNECTION_STRING, or neither for an in-process hub")
	default:
		if cfg.CAFile != "" {
			if roots, err = loadCA(cfg.CAFile); err != nil {
				return err
			}
		}
	}

	// 2. The service client: invokes methods, reads twins and manages the
	// registry.
	svcOpts := &service.ClientOptions{}
	if roots != nil {
		httpClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
		defer httpClient.CloseIdleConnections()
		svcOpts.Transport = httpClient
	}
	svc, err := service.NewClientFromConnectionString(svcCS, svcOpts)
	if err != nil {
		return err
	}
	if devCS == "" {
		d, err := svc.CreateDevice(ctx, &service.Device{DeviceID: "quickstart-device"})
		if err != nil {
			return err
		}
		if devCS, err = svc.DeviceConnectionString(d, service.KeyKindPrimary); err != nil {
			return err
		}
		fmt.Fprintf(out, "service: registered device %s (the hub generated its keys)\n", d.DeviceID)
	} else {
		fmt.Fprintf(out, "hub:     %s, from IOTHUB_SERVICE_CONNECTION_STRING\n", svc.HostName())
	}
	parsed, err := auth.ParseDeviceConnectionString(devCS)
	if err != nil {
		return err
	}
	id := parsed.Identity()
	if cfg.DeviceConnectionString != "" {
		fmt.Fprintf(out, "device:  %s, from IOTHUB_DEVICE_CONNECTION_STRING\n", id)
	}

	// 3. The device: a "reboot" handler, then Connect, which returns once
	// the hub has confirmed the method subscription. The handler answers at
	// once; the reboot (simulated) follows on its own goroutine and ends
	// with the device reporting when it rebooted, in its twin.
	devOpts := &device.ClientOptions{Transport: tr}
	if roots != nil {
		devOpts.TLSConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	dev, err := device.NewClientFromConnectionString(devCS, devOpts)
	if err != nil {
		return err
	}
	defer dev.Close(context.WithoutCancel(ctx))
	var reboots sync.WaitGroup
	defer reboots.Wait() // before Close (deferred calls run last first)
	err = dev.SetMethodHandler("reboot", func(_ context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
		fmt.Fprintf(out, "device:  %s received %q; answering 200\n", id, req.Name)
		reboots.Go(func() { reportReboot(ctx, dev, id, out) })
		return device.JSONResponse(200, map[string]string{"result": "Reboot started."})
	})
	if err != nil {
		// Over HTTPS: IoT Hub never delivers direct methods there, and it
		// has no device twins for devices either: GetTwin,
		// UpdateReportedProperties and SetDesiredPropertiesHandler fail
		// the same way, with ErrUnsupported, which TwinSupport tells
		// ahead.
		return errors.Join(err, tr.TwinSupport())
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := dev.Connect(cctx); err != nil {
		return fmt.Errorf("device %s: connect over %s: %w", id, tr.Name(), err)
	}
	fmt.Fprintf(out, "device:  %s connected over %s, waiting for methods\n", id, tr.Name())

	// 4. The back-end invokes "reboot" and gets the device's answer. It
	// first notes the last reboot the twin shows, to tell the new one from
	// it (an existing device may have rebooted before).
	before, err := getLastReboot(ctx, svc, id)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "service: invoking \"reboot\" on %s\n", id)
	start := time.Now()
	var res *service.MethodResult
	if id.ModuleID != "" {
		res, err = svc.InvokeModuleMethod(ctx, id.DeviceID, id.ModuleID, service.CloudToDeviceMethod{MethodName: "reboot", ResponseTimeout: 30 * time.Second})
	} else {
		res, err = svc.InvokeDeviceMethod(ctx, id.DeviceID, service.CloudToDeviceMethod{MethodName: "reboot", ResponseTimeout: 30 * time.Second})
	}
	if err != nil {
		return err // e.g. 404103 DeviceNotOnline, 504101 GatewayTimeout: see service.ResponseError
	}
	fmt.Fprintf(out, "service: %s answered %d %s in %s\n", id, res.Status, res.Payload, time.Since(start).Round(time.Millisecond))

	// 5. The back-end reads the device twin until the device has reported
	// its reboot: every 200 ms, for up to 30 s.
	wctx, stopWaiting := context.WithTimeout(ctx, 30*time.Second)
	defer stopWaiting()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		last, err := getLastReboot(wctx, svc, id)
		switch {
		case err == nil && last != "" && last != before:
			fmt.Fprintf(out, "service: twin of %s: reported iothubDM.reboot.lastReboot = %s\n", id, last)
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case wctx.Err() != nil:
			return fmt.Errorf("%s did not report iothubDM.reboot.lastReboot within 30 s", id)
		case err != nil:
			return err
		}
		select {
		case <-tick.C:
		case <-wctx.Done():
		}
	}
}

// reportReboot stands for the reboot: a real device would restart here and,
// once up again, report when it did, as the seed sample does, in the
// reported property iothubDM.reboot.lastReboot (RFC 3339, UTC).
func reportReboot(ctx context.Context, dev *device.Client, id auth.Identity, out io.Writer) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	now := time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00")
	version, err := dev.UpdateReportedProperties(ctx, map[string]any{
		"iothubDM": map[string]any{"reboot": map[string]any{"lastReboot": now}},
	})
	if err != nil {
		fmt.Fprintf(out, "device:  %s could not report its reboot: %v\n", id, err)
		return
	}
	fmt.Fprintf(out, "device:  %s rebooted; reported iothubDM.reboot.lastReboot = %s (reported properties version %d)\n", id, now, version)
}

// getLastReboot reads the identity's twin and returns its reported
// iothubDM.reboot.lastReboot, or "" if there is none.
func getLastReboot(ctx context.Context, svc *service.Client, id auth.Identity) (string, error) {
	var twin *service.Twin
	var err error
	if id.ModuleID != "" {
		twin, err = svc.GetModuleTwin(ctx, id.DeviceID, id.ModuleID)
	} else {
		twin, err = svc.GetTwin(ctx, id.DeviceID)
	}
	if err != nil {
		return "", err
	}
	var dm struct {
		Reboot struct {
			LastReboot json.RawMessage `json:"lastReboot"`
		} `json:"reboot"`
	}
	raw, ok := twin.Reported.Properties["iothubDM"]
	if !ok || json.Unmarshal(raw, &dm) != nil || len(dm.Reboot.LastReboot) == 0 || string(dm.Reboot.LastReboot) == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(dm.Reboot.LastReboot, &s) != nil {
		return string(dm.Reboot.LastReboot), nil // not a string: show its JSON
	}
	return s, nil
}

// newTransport maps a --transport name to a device transport.
func newTransport(name string) (transport.Transport, error) {
	switch name {
	case "mqtt", "":
		return mqtt.New(nil), nil
	case "mqtt-ws":
		return mqtt.New(&mqtt.Options{WebSocket: true}), nil
	case "amqp":
		return amqp.New(nil), nil
	case "amqp-ws":
		return amqp.New(&amqp.Options{WebSocket: true}), nil
	case "http":
		return httptransport.New(nil), nil
	}
	return nil, fmt.Errorf("--transport %q: want mqtt, mqtt-ws, amqp, amqp-ws or http", name)
}

// loadCA reads PEM CA certificates to trust.
func loadCA(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}
