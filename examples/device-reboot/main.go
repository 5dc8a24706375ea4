// Command device-reboot is a device that answers the direct method "reboot"
// with {"result":"Reboot started."}, the device half of the classic IoT Hub
// direct-methods sample.
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
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/transport/mqtt"
)

func main() {
	cs := flag.String("cs", os.Getenv("IOTHUB_DEVICE_CONNECTION_STRING"), "device connection string")
	caFile := flag.String("ca-file", "", "PEM CA certificates to trust (for the local hub)")
	ws := flag.Bool("websocket", false, "use MQTT over WebSocket (port 443) instead of MQTT over TLS (8883)")
	flag.Parse()
	if err := run(*cs, *caFile, *ws); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(cs, caFile string, ws bool) error {
	if cs == "" {
		return errors.New("set -cs or IOTHUB_DEVICE_CONNECTION_STRING")
	}
	opts := &device.ClientOptions{
		Transport: mqtt.New(&mqtt.Options{WebSocket: ws}),
		OnConnectionStatus: func(s device.ConnectionStatus) {
			fmt.Println("connection:", s.State)
		},
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		opts.TLSConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	client, err := device.NewClientFromConnectionString(cs, opts)
	if err != nil {
		return err
	}
	err = client.SetMethodHandler("reboot", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
		fmt.Printf("reboot requested (payload %s); pretending to reboot\n", orNull(req.Payload))
		return device.JSONResponse(200, map[string]string{"result": "Reboot started."})
	})
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := client.Connect(ctx); err != nil {
		return err
	}
	fmt.Println("waiting for direct method calls; Ctrl-C to stop")
	<-ctx.Done()
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return client.Close(cctx)
}

func orNull(b []byte) string {
	if len(b) == 0 {
		return "null"
	}
	return string(b)
}
