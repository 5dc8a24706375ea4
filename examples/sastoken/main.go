// Command sastoken shows the auth package end to end: it parses a device
// connection string, mints a SAS token for the device as a client would, and
// verifies that token as IoT Hub does.
//
//	go run ./examples/sastoken                     # uses a demo device
//	go run ./examples/sastoken -cs "HostName=…;DeviceId=…;SharedAccessKey=…"
//
// Secrets are never printed: connection strings and tokens show "<redacted>".
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/iothub-go/iothub/auth"
)

func main() {
	cs := flag.String("cs", os.Getenv("IOTHUB_DEVICE_CONNECTION_STRING"),
		"device connection string (default: $IOTHUB_DEVICE_CONNECTION_STRING, else a demo device)")
	flag.Parse()
	if err := run(*cs, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(cs string, out io.Writer) error {
	if cs == "" {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return err
		}
		cs = "HostName=demo-hub.azure-devices.net;DeviceId=demo-device;SharedAccessKey=" +
			base64.StdEncoding.EncodeToString(key)
	}
	conn, err := auth.ParseDeviceConnectionString(cs)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "connection string:", conn)
	fmt.Fprintln(out, "identity:         ", conn.Identity(), "on", conn.HostName)
	if conn.X509 {
		fmt.Fprintln(out, "x509=true: this identity authenticates with a client certificate, not a token")
		return nil
	}

	provider, err := conn.TokenProvider(nil)
	if err != nil {
		return err
	}
	tok, err := provider.Token(context.Background())
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "token:            ", tok)
	if !tok.RenewAt.IsZero() {
		fmt.Fprintln(out, "renew at:         ", tok.RenewAt.UTC().Format(time.RFC3339))
	}

	// The hub's side of the same exchange.
	sas, err := auth.ParseSAS(tok.Value)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "hub sees:         ", sas)
	if conn.SharedAccessKey == "" {
		fmt.Fprintln(out, "(a fixed SharedAccessSignature can only be verified by a hub that knows the key)")
		return nil
	}
	err = sas.Verify(conn.Identity().Resource(), time.Now(), conn.SharedAccessKey, "")
	fmt.Fprintln(out, "hub verification: ", verdict(err))
	err = sas.Verify(auth.DeviceResource(conn.HostName, "some-other-device"), time.Now(), conn.SharedAccessKey, "")
	fmt.Fprintln(out, "as another device:", verdict(err))
	return nil
}

func verdict(err error) string {
	if err != nil {
		return "rejected: " + err.Error()
	}
	return "accepted"
}
