// Command quickstart shows a direct method end to end in one program: a hub,
// a device that answers "reboot", and a back-end that invokes it.
//
//	go run ./examples/quickstart                       # everything in-process, nothing to configure
//	go run ./examples/quickstart --transport mqtt-ws   # the device uses MQTT over WebSocket
//
// With no configuration it starts a local IoT Hub in-process
// (github.com/iothub-go/iothub/iothubtest), registers a device through the
// service client's registry, connects the device and invokes "reboot".
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
// amqp-ws or http (which shows why HTTPS cannot receive direct methods).
// amqp and amqp-ws need a hub that serves AMQP: Azure IoT Hub, or the local
// hub once its AMQP endpoint lands.
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
		fmt.Fprintf(out, "hub:     started in-process at %s (TLS; MQTT, WebSocket and HTTPS on one port)\n", hub.Addr())
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

	// 2. The service client: invokes methods and manages the registry.
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
	// the hub has confirmed the method subscription.
	devOpts := &device.ClientOptions{Transport: tr}
	if roots != nil {
		devOpts.TLSConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	dev, err := device.NewClientFromConnectionString(devCS, devOpts)
	if err != nil {
		return err
	}
	defer dev.Close(context.WithoutCancel(ctx))
	err = dev.SetMethodHandler("reboot", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
		fmt.Fprintf(out, "device:  %s received %q; answering 200\n", id, req.Name)
		return device.JSONResponse(200, map[string]string{"result": "Reboot started."})
	})
	if err != nil {
		return err // over HTTPS: IoT Hub never delivers direct methods there
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := dev.Connect(cctx); err != nil {
		return fmt.Errorf("device %s: connect over %s: %w", id, tr.Name(), err)
	}
	fmt.Fprintf(out, "device:  %s connected over %s, waiting for methods\n", id, tr.Name())

	// 4. The back-end invokes "reboot" and gets the device's answer.
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
	return nil
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
