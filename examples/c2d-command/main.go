// Command c2d-command sends a firmware-update command to a device that is
// offline, as a cloud-to-device message: unlike a direct method, the
// message waits in the hub for the device. The device connects later,
// receives the command and completes it, and the back end sees positive
// feedback for the message.
//
//	go run ./examples/c2d-command                      # an in-process hub, the device over MQTT
//	go run ./examples/c2d-command -transport amqp      # or mqtt-ws, amqp-ws, http
//
// Against your own hub (a local `iothub hub` or Azure), give both
// connection strings; the device must exist:
//
//	export IOTHUB_SERVICE_CONNECTION_STRING='HostName=…;SharedAccessKeyName=iothubowner;SharedAccessKey=…'
//	export IOTHUB_DEVICE_CONNECTION_STRING='HostName=…;DeviceId=…;SharedAccessKey=…'
//	go run ./examples/c2d-command [-ca-file ca.pem]
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

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
	"github.com/iothub-go/iothub/transport"
	"github.com/iothub-go/iothub/transport/amqp"
	devhttp "github.com/iothub-go/iothub/transport/http"
	"github.com/iothub-go/iothub/transport/mqtt"
)

// config is what the command line and the environment say.
type config struct {
	// Transport is the device's protocol: mqtt, mqtt-ws, amqp, amqp-ws or http.
	Transport string
	// ServiceConnectionString and DeviceConnectionString select an
	// existing hub and device; both "" means an in-process hub.
	ServiceConnectionString string
	DeviceConnectionString  string
	// CAFile is a PEM file of CA certificates to trust (a local hub's
	// --ca-file); "" means the system roots.
	CAFile string
}

func main() {
	cfg := config{
		ServiceConnectionString: os.Getenv("IOTHUB_SERVICE_CONNECTION_STRING"),
		DeviceConnectionString:  os.Getenv("IOTHUB_DEVICE_CONNECTION_STRING"),
	}
	flag.StringVar(&cfg.Transport, "transport", "mqtt", "the device's protocol: mqtt, mqtt-ws, amqp, amqp-ws or http")
	flag.StringVar(&cfg.CAFile, "ca-file", "", "PEM CA certificates to trust (for `iothub hub`)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "c2d-command:", err)
		os.Exit(1)
	}
}

func deviceTransport(name string) (transport.Transport, error) {
	switch name {
	case "mqtt":
		return mqtt.New(nil), nil
	case "mqtt-ws":
		return mqtt.New(&mqtt.Options{WebSocket: true}), nil
	case "amqp":
		return amqp.New(nil), nil
	case "amqp-ws":
		return amqp.New(&amqp.Options{WebSocket: true}), nil
	case "http":
		return devhttp.New(nil), nil
	}
	return nil, fmt.Errorf("-transport %q: want mqtt, mqtt-ws, amqp, amqp-ws or http", name)
}

func run(ctx context.Context, cfg config, out io.Writer) error {
	tr, err := deviceTransport(cfg.Transport)
	if err != nil {
		return err
	}
	svcCS, devCS := cfg.ServiceConnectionString, cfg.DeviceConnectionString
	svcOpts := &service.ClientOptions{}
	var tlsConf *tls.Config
	switch {
	case svcCS == "" && devCS == "":
		hub, err := iothubtest.Start(nil)
		if err != nil {
			return err
		}
		defer hub.Close()
		fmt.Fprintf(out, "hub:     started in-process at %s\n", hub.Addr())
		svcCS = hub.ServiceConnectionString()
		hc := hub.HTTPClient()
		defer hc.CloseIdleConnections()
		svcOpts.ClientOptions = azcore.ClientOptions{Transport: hc}
		tlsConf = hub.TLSConfig()
	case svcCS == "" || devCS == "":
		return errors.New("give both IOTHUB_SERVICE_CONNECTION_STRING and IOTHUB_DEVICE_CONNECTION_STRING, or neither")
	default:
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return err
			}
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(pem) {
				return fmt.Errorf("%s holds no PEM certificate", cfg.CAFile)
			}
			tlsConf.RootCAs = roots
		}
		svcOpts.Transport = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}}
	}
	svc, err := service.NewClientFromConnectionString(svcCS, svcOpts)
	if err != nil {
		return err
	}
	defer svc.Close(context.WithoutCancel(ctx))
	if devCS == "" { // in-process: register the device
		d, err := svc.CreateDevice(ctx, &service.Device{DeviceID: "thermostat-7"})
		if err != nil {
			return err
		}
		if devCS, err = svc.DeviceConnectionString(d, service.KeyKindPrimary); err != nil {
			return err
		}
	}
	dcs, err := auth.ParseDeviceConnectionString(devCS)
	if err != nil {
		return err
	}
	deviceID := dcs.Identity().DeviceID

	// The back end: listen for feedback, then queue the command. The
	// device is offline; the hub keeps the message for it (an hour here).
	feedback, err := svc.NewFeedbackReceiver(ctx)
	if err != nil {
		return err
	}
	defer feedback.Close(context.WithoutCancel(ctx))
	msgID := fmt.Sprintf("fw-update-%d", time.Now().UnixNano())
	err = svc.Send(ctx, deviceID, &service.C2DMessage{
		MessageID:   msgID,
		Body:        []byte(`{"command":"firmwareUpdate","version":"2.1.0"}`),
		ContentType: "application/json",
		Properties:  map[string]string{"kind": "firmware"},
		TTL:         time.Hour,
		Ack:         service.AckFull, // feedback when it is completed, and when it is not
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "service: queued a firmware update for %s, which is offline (message %s, feedback: full)\n", deviceID, msgID)

	// The device comes online later and handles its commands.
	dev, err := device.NewClientFromConnectionString(devCS, &device.ClientOptions{
		Transport: tr, TLSConfig: tlsConf, MessagePollInterval: 200 * time.Millisecond,
	})
	if err != nil {
		return err
	}
	defer dev.Close(context.WithoutCancel(ctx))
	err = dev.SetMessageHandler(func(_ context.Context, m *device.CloudMessage) device.Disposition {
		if m.Properties["kind"] != "firmware" {
			return device.Reject // not a command this device knows
		}
		fmt.Fprintf(out, "device:  received %s: %s; applying it and completing the message\n", m.MessageID, m.Body)
		return device.Complete
	})
	if err != nil {
		return err
	}
	if err := dev.Connect(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "device:  connected over %s\n", tr.Name())

	// The back end waits for the feedback on its message.
	for {
		batch, err := feedback.Receive(ctx)
		if err != nil {
			return err
		}
		found := false
		for _, r := range batch.Records {
			if r.OriginalMessageID == msgID {
				fmt.Fprintf(out, "service: feedback for %s from %s: %s\n", r.OriginalMessageID, r.DeviceID, r.Status)
				found = true
			}
		}
		if err := batch.Complete(ctx); err != nil {
			return err
		}
		if found {
			return nil
		}
	}
}
