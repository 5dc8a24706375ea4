// Command device-reboot is a device that answers the direct method "reboot"
// with {"result":"Reboot started."}, the device half of the classic IoT Hub
// device-management sample. Like the seed (.NET "get started with device
// management"), it then simulates the reboot and records when it happened in
// its twin: the reported property iothubDM.reboot.lastReboot, an RFC 3339
// UTC time, which a back-end reads from the device twin (see
// examples/invoke-reboot).
//
//	go run ./examples/device-reboot -cs "HostName=…;DeviceId=…;SharedAccessKey=…"
//
// The connection string may also come from $IOTHUB_DEVICE_CONNECTION_STRING.
// Against the local hub (`go run ./cmd/iothub hub --ca-file ca.pem --device
// dev1`), add -ca-file ca.pem. Stop it with Ctrl-C.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/transport/mqtt"
)

// config is what the command line and the environment say.
type config struct {
	// ConnectionString is the device's (or a module's) connection string.
	ConnectionString string
	// CAFile is a PEM file of CA certificates to trust instead of the
	// system roots (a local hub's --ca-file).
	CAFile string
	// WebSocket selects MQTT over WebSocket.
	WebSocket bool
}

func main() {
	var cfg config
	flag.StringVar(&cfg.ConnectionString, "cs", os.Getenv("IOTHUB_DEVICE_CONNECTION_STRING"), "device connection string")
	flag.StringVar(&cfg.CAFile, "ca-file", "", "PEM CA certificates to trust (for the local hub)")
	flag.BoolVar(&cfg.WebSocket, "websocket", false, "use MQTT over WebSocket (port 443) instead of MQTT over TLS (8883)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// run answers "reboot" until ctx ends.
func run(ctx context.Context, cfg config, out io.Writer) error {
	if cfg.ConnectionString == "" {
		return errors.New("set -cs or IOTHUB_DEVICE_CONNECTION_STRING")
	}
	opts := &device.ClientOptions{
		Transport: mqtt.New(&mqtt.Options{WebSocket: cfg.WebSocket}),
		OnConnectionStatus: func(s device.ConnectionStatus) {
			fmt.Fprintln(out, "connection:", s.State)
		},
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s holds no PEM certificate", cfg.CAFile)
		}
		opts.TLSConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	client, err := device.NewClientFromConnectionString(cfg.ConnectionString, opts)
	if err != nil {
		return err
	}
	// The simulated reboots, waited for once the client has closed (Close
	// waits for running handlers, so none starts a reboot after it).
	var reboots sync.WaitGroup
	err = client.SetMethodHandler("reboot", func(_ context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
		fmt.Fprintf(out, "reboot requested (payload %s); pretending to reboot\n", orNull(req.Payload))
		// Answer at once and reboot afterwards, off the handler's
		// goroutine: the caller learns that the reboot started, and the
		// twin tells it when the device is back.
		reboots.Go(func() { reportReboot(ctx, client, out) })
		return device.JSONResponse(200, map[string]string{"result": "Reboot started."})
	})
	if err != nil {
		return err
	}

	if err := client.Connect(ctx); err != nil {
		return err
	}
	fmt.Fprintln(out, "waiting for direct method calls; Ctrl-C to stop")
	<-ctx.Done()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err = client.Close(cctx)
	reboots.Wait() // ctx has ended: a report in flight gives up
	return err
}

// reportReboot stands for the reboot itself: a real device would restart
// here, and once up again report when it did. The time goes to the twin's
// reported properties as {"iothubDM":{"reboot":{"lastReboot":"…"}}}, the
// property the seed sample uses.
func reportReboot(ctx context.Context, client *device.Client, out io.Writer) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	now := time.Now().UTC().Format(rfc3339Millis)
	version, err := client.UpdateReportedProperties(ctx, map[string]any{
		"iothubDM": map[string]any{"reboot": map[string]any{"lastReboot": now}},
	})
	if err != nil {
		fmt.Fprintln(out, "reporting iothubDM.reboot.lastReboot failed:", err)
		return
	}
	fmt.Fprintf(out, "rebooted; reported iothubDM.reboot.lastReboot = %s (reported properties version %d)\n", now, version)
}

// rfc3339Millis is RFC 3339 with milliseconds, as IoT Hub writes its own
// times: two reboots in one second still differ.
const rfc3339Millis = "2006-01-02T15:04:05.000Z07:00"

func orNull(b []byte) string {
	if len(b) == 0 {
		return "null"
	}
	return string(b)
}
