// Command invoke-reboot is the back-end of the "reboot" seed: it invokes the
// direct method "reboot" on one device and prints the device's status and
// payload.
//
//	export IOTHUB_SERVICE_CONNECTION_STRING='HostName=…;SharedAccessKeyName=service;SharedAccessKey=…'
//	go run ./examples/invoke-reboot -device myDeviceId
//
// Against a local hub (go run ./cmd/iothub hub --ca-file ca.pem --device dev1,
// then a device answering "reboot", e.g. go run ./cmd/iothub device):
//
//	go run ./examples/invoke-reboot -device dev1 -ca-file ca.pem
//
// It exits 1 when the hub or the network fails (device offline: 404103,
// no answer in 30 s: 504101), printing the hub's error code.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/iothub-go/iothub/service"
)

func main() {
	cs := flag.String("connection-string", os.Getenv("IOTHUB_SERVICE_CONNECTION_STRING"),
		"service connection string (default $IOTHUB_SERVICE_CONNECTION_STRING)")
	deviceID := flag.String("device", os.Getenv("IOTHUB_DEVICE_ID"), "device to reboot (default $IOTHUB_DEVICE_ID)")
	caFile := flag.String("ca-file", "", "PEM CA certificates to trust instead of the system roots (a local hub's --ca-file)")
	flag.Parse()
	if *cs == "" || *deviceID == "" {
		fmt.Fprintln(os.Stderr, "usage: invoke-reboot -device ID [-connection-string CS] [-ca-file ca.pem]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *cs, *deviceID, *caFile); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, connStr, deviceID, caFile string) error {
	opts := &service.ClientOptions{}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return err
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s holds no PEM certificate", caFile)
		}
		opts.Transport = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	}
	client, err := service.NewClientFromConnectionString(connStr, opts)
	if err != nil {
		return err // never shows the key
	}

	res, err := client.InvokeDeviceMethod(ctx, deviceID, service.CloudToDeviceMethod{
		MethodName:      "reboot",
		ResponseTimeout: 30 * time.Second,
	})
	switch {
	case errors.Is(err, service.ErrDeviceNotOnline):
		return fmt.Errorf("%s is not connected (or has no method handler): %w", deviceID, err)
	case errors.Is(err, service.ErrGatewayTimeout):
		return fmt.Errorf("%s did not answer within 30 s: %w", deviceID, err)
	case err != nil:
		return err
	}
	fmt.Println("status: ", res.Status)
	fmt.Println("payload:", string(res.Payload))
	return nil
}
