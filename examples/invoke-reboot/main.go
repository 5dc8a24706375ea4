// Command invoke-reboot is the back-end of the "reboot" seed: it invokes the
// direct method "reboot" on one device, prints the device's status and
// payload, then reads the device twin until the device reports that it
// rebooted (the reported property iothubDM.reboot.lastReboot, as
// examples/device-reboot and the seed's .NET device report it) and prints
// that time.
//
//	export IOTHUB_SERVICE_CONNECTION_STRING='HostName=…;SharedAccessKeyName=service;SharedAccessKey=…'
//	go run ./examples/invoke-reboot -device myDeviceId
//
// Against a local hub (go run ./cmd/iothub hub --ca-file ca.pem --device dev1,
// then a device answering "reboot", e.g. go run ./examples/device-reboot -cs
// '…' -ca-file ca.pem):
//
//	go run ./examples/invoke-reboot -device dev1 -ca-file ca.pem
//
// It reads the twin every 500 ms for up to -wait (30 s by default); a
// device that never reports lastReboot, such as `iothub device`, is
// reported as such after that (-wait 0 skips the twin). It exits 1 when the
// hub or the network fails (device offline: 404103, no answer in 30 s:
// 504101), printing the hub's error code.
package main

import (
	"bytes"
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
	// Wait bounds the wait for the device to report its reboot in the
	// twin; zero skips the twin.
	Wait time.Duration
}

func main() {
	var cfg config
	flag.StringVar(&cfg.ConnectionString, "connection-string", os.Getenv("IOTHUB_SERVICE_CONNECTION_STRING"),
		"service connection string (default $IOTHUB_SERVICE_CONNECTION_STRING)")
	flag.StringVar(&cfg.DeviceID, "device", os.Getenv("IOTHUB_DEVICE_ID"), "device to reboot (default $IOTHUB_DEVICE_ID)")
	flag.StringVar(&cfg.CAFile, "ca-file", "", "PEM CA certificates to trust instead of the system roots (a local hub's --ca-file)")
	flag.DurationVar(&cfg.Wait, "wait", 30*time.Second, "how long to wait for the device to report iothubDM.reboot.lastReboot in its twin (0: do not read the twin)")
	flag.Parse()
	if cfg.ConnectionString == "" || cfg.DeviceID == "" {
		fmt.Fprintln(os.Stderr, "usage: invoke-reboot -device ID [-connection-string CS] [-ca-file ca.pem] [-wait 30s]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// run invokes "reboot" on cfg.DeviceID, prints the device's answer, and
// then the reboot time the device reports in its twin.
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

	// The last reboot the twin knows of, to tell the next one from it.
	var before json.RawMessage
	if cfg.Wait > 0 {
		twin, err := client.GetTwin(ctx, cfg.DeviceID)
		if err != nil {
			return err // e.g. ErrDeviceNotFound
		}
		before = lastReboot(twin)
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
	if cfg.Wait <= 0 || res.Status != 200 {
		return nil
	}

	// The device answers first and reboots afterwards: read its twin until
	// the reported lastReboot is a new one.
	wctx, cancel := context.WithTimeout(ctx, cfg.Wait)
	defer cancel()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		twin, err := client.GetTwin(wctx, cfg.DeviceID)
		if err == nil {
			if last := lastReboot(twin); last != nil && !bytes.Equal(last, before) {
				fmt.Fprintln(out, "lastReboot:", display(last))
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if wctx.Err() != nil {
			fmt.Fprintf(out, "lastReboot: not reported within %s (the device reports none, or is still rebooting)\n", cfg.Wait)
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-tick.C:
		case <-wctx.Done():
		}
	}
}

// lastReboot returns the JSON of the twin's reported
// iothubDM.reboot.lastReboot, or nil if it has none.
func lastReboot(twin *service.Twin) json.RawMessage {
	var dm struct {
		Reboot struct {
			LastReboot json.RawMessage `json:"lastReboot"`
		} `json:"reboot"`
	}
	raw, ok := twin.Reported.Properties["iothubDM"]
	if !ok || json.Unmarshal(raw, &dm) != nil || string(dm.Reboot.LastReboot) == "null" {
		return nil
	}
	return dm.Reboot.LastReboot
}

// display shows a JSON string as its text and other JSON as it is.
func display(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	return string(v)
}
