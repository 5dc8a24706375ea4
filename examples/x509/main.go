// Command x509 connects a device that authenticates with a self-signed X.509
// certificate instead of a SAS key.
//
//	go run ./examples/x509
//
// It makes a certificate (ECDSA P-256, CN = the device id), registers the
// device with the certificate's thumbprint as a "selfSigned" identity, connects
// it with the certificate over MQTT and invokes "reboot". Then it shows that
// another certificate is refused. The hub runs in-process; against Azure the
// steps are the same (or register the thumbprint in the portal, and load the
// certificate with auth.LoadX509Credential).
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/iothub-go/iothub"
	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "x509:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer) error {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		return err
	}
	defer hub.Close()
	fmt.Fprintf(out, "hub:     started in-process at %s\n", hub.Addr())
	svc, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(),
		&service.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: hub.HTTPClient()}})
	if err != nil {
		return err
	}

	// 1. A self-signed certificate and its thumbprint.
	const deviceID = "x509-device"
	cred, err := selfSigned(deviceID)
	if err != nil {
		return err
	}
	thumb := auth.ComputeThumbprints(cred.Leaf().Raw)
	fmt.Fprintf(out, "cert:    self-signed CN=%s, SHA-256 thumbprint %s…\n", deviceID, thumb.SHA256[:16])

	// 2. Register the device by thumbprint. Its connection string says
	// x509=true: the certificate is the credential.
	d, err := svc.CreateDevice(ctx, &service.Device{
		DeviceID: deviceID,
		Authentication: service.Authentication{
			Type:           service.AuthenticationTypeSelfSigned,
			X509Thumbprint: service.X509Thumbprint{PrimaryThumbprint: thumb.SHA256},
		},
	})
	if err != nil {
		return err
	}
	cs, err := svc.DeviceConnectionString(d, service.KeyKindPrimary)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "service: registered %s as %s\n", d.DeviceID, d.Authentication.Type)

	// 3. Connect with the certificate (ClientOptions.X509) and answer "reboot".
	client, err := device.NewClientFromConnectionString(cs, &device.ClientOptions{
		X509:      cred,
		TLSConfig: hub.TLSConfig(), // trusts the local hub; nil for Azure
	})
	if err != nil {
		return err
	}
	defer client.Close(context.WithoutCancel(ctx))
	err = client.SetMethodHandler("reboot", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
		return device.JSONResponse(200, map[string]string{"result": "Reboot started."})
	})
	if err != nil {
		return err
	}
	if err := client.Connect(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "device:  %s connected over mqtt with its certificate\n", deviceID)

	res, err := svc.InvokeDeviceMethod(ctx, deviceID, service.CloudToDeviceMethod{MethodName: "reboot", ResponseTimeout: 30 * time.Second})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "service: reboot -> %d %s\n", res.Status, res.Payload)

	// 4. Another certificate for the same device id is refused: the
	// thumbprint does not match. Connect gives up after three attempts.
	other, err := selfSigned(deviceID)
	if err != nil {
		return err
	}
	impostor, err := device.NewClientFromConnectionString(cs, &device.ClientOptions{
		X509:      other,
		TLSConfig: hub.TLSConfig(),
		Retry:     iothub.RetryOptions{RetryDelay: 50 * time.Millisecond},
	})
	if err != nil {
		return err
	}
	defer impostor.Close(context.WithoutCancel(ctx))
	err = impostor.Connect(ctx)
	if !errors.Is(err, device.ErrNotAuthorized) {
		return fmt.Errorf("a certificate with another thumbprint: got %v, want device.ErrNotAuthorized", err)
	}
	fmt.Fprintln(out, "device:  another certificate for the same id is refused (device.ErrNotAuthorized)")
	return nil
}

// selfSigned makes a self-signed client certificate with CN = id, valid
// for a day.
func selfSigned(id string) (*auth.X509Credential, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: id},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return auth.NewX509Credential(tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key})
}
