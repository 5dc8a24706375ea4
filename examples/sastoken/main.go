// Command sastoken shows the auth package end to end: it parses a device
// connection string, mints a SAS token for the device as a client would, and
// reads back what the token grants and until when. (Verifying a token's
// signature is the hub's job: it needs the key.)
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

	// What the token says, as anyone holding it can read it. Only the hub,
	// which knows the key, can check the signature.
	sas, err := auth.ParseSAS(tok.Value)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "parsed:           ", sas)
	fmt.Fprintln(out, "resource:         ", sas.Resource)
	fmt.Fprintln(out, "for this identity:", sas.Resource == conn.Identity().Resource())
	fmt.Fprintln(out, "expires:          ", sas.Expiry.Format(time.RFC3339))
	return nil
}
