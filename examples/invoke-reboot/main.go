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
	"io"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/iothub-go/iothub/service"
)

// config is what the command line and the environment say.
type config struct {
	// ConnectionString is a hub policy connection string with ServiceConnect.
	ConnectionString string
	// DeviceID is the device to reboot.
	DeviceID string
	// CAFile is a PEM file of CA certificates to trust instead of the
	// system roots (a local hub's --ca-file).
	CAFile string
}

func main() {
	var cfg config
	flag.StringVar(&cfg.ConnectionString, "connection-string", os.Getenv("IOTHUB_SERVICE_CONNECTION_STRING"),
		"service connection string (default $IOTHUB_SERVICE_CONNECTION_STRING)")
	flag.StringVar(&cfg.DeviceID, "device", os.Getenv("IOTHUB_DEVICE_ID"), "device to reboot (default $IOTHUB_DEVICE_ID)")
	flag.StringVar(&cfg.CAFile, "ca-file", "", "PEM CA certificates to trust instead of the system roots (a local hub's --ca-file)")
	flag.Parse()
	if cfg.ConnectionString == "" || cfg.DeviceID == "" {
		fmt.Fprintln(os.Stderr, "usage: invoke-reboot -device ID [-connection-string CS] [-ca-file ca.pem]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// run invokes "reboot" on cfg.DeviceID and prints the device's answer.
func run(ctx context.Context, cfg config, out io.Writer) error {
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
	client, err := service.NewClientFromConnectionString(cfg.ConnectionString, opts)
	if err != nil {
		return err // never shows the key
	}

	res, err := client.InvokeDeviceMethod(ctx, cfg.DeviceID, service.CloudToDeviceMethod{
		MethodName:      "reboot",
		ResponseTimeout: 30 * time.Second,
	})
	switch {
	case errors.Is(err, service.ErrDeviceNotOnline):
		return fmt.Errorf("%s is not connected (or has no method handler): %w", cfg.DeviceID, err)
	case errors.Is(err, service.ErrGatewayTimeout):
		return fmt.Errorf("%s did not answer within 30 s: %w", cfg.DeviceID, err)
	case err != nil:
		return err
	}
	fmt.Fprintln(out, "status: ", res.Status)
	fmt.Fprintln(out, "payload:", string(res.Payload))
	return nil
}
