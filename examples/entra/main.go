// Command entra authenticates the service client with Microsoft Entra ID
// (an azcore.TokenCredential) instead of a shared access policy key, then
// registers a device and invokes "reboot" on it.
//
//	go run ./examples/entra
//
// Here the hub runs in-process and its Credential stands in for Entra ID.
// Against Azure, take a credential from github.com/Azure/azure-sdk-for-go/sdk/azidentity
// and give its identity an IoT Hub data role ("IoT Hub Data Contributor"):
//
//	cred, err := azidentity.NewDefaultAzureCredential(nil)
//	svc, err := service.NewClient("myhub.azure-devices.net", cred, nil)
//
// The client asks the credential for tokens of scope service.EntraScope
// (https://iothubs.azure.net/.default) and renews them itself.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "entra:", err)
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

	// The service client: a host name and a credential; no key anywhere.
	// Endpoint and Transport point it at the local hub (leave both unset
	// for Azure); tokens still name the hub's host name.
	cred := &loggingCredential{cred: hub.Credential(), out: out}
	svc, err := service.NewClient(hub.HostName(), cred, &service.ClientOptions{
		Endpoint:      "https://" + hub.Addr(),
		ClientOptions: azcore.ClientOptions{Transport: hub.HTTPClient()},
	})
	if err != nil {
		return err
	}

	// Registry writes and method calls both go through the credential.
	d, err := svc.CreateDevice(ctx, &service.Device{DeviceID: "entra-device"})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "service: registered %s with an Entra token\n", d.DeviceID)
	cs, err := svc.DeviceConnectionString(d, service.KeyKindPrimary)
	if err != nil {
		return err
	}

	// The device still uses its own SAS key: Entra ID is for back-ends.
	// The local hub listens on a random port, which the device learns from
	// GatewayHostName.
	client, err := device.NewClientFromConnectionString(cs+";GatewayHostName="+hub.Addr(),
		&device.ClientOptions{TLSConfig: hub.TLSConfig()})
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
	fmt.Fprintf(out, "device:  %s connected over mqtt\n", d.DeviceID)

	res, err := svc.InvokeDeviceMethod(ctx, d.DeviceID, service.CloudToDeviceMethod{MethodName: "reboot", ResponseTimeout: 30 * time.Second})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "service: reboot -> %d %s\n", res.Status, res.Payload)
	return nil
}

// loggingCredential wraps a credential and prints the scopes of each token
// request (never the token). azcore caches tokens, so there is one request
// until the token nears its expiry.
type loggingCredential struct {
	cred azcore.TokenCredential
	out  io.Writer
}

func (c *loggingCredential) GetToken(ctx context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	fmt.Fprintf(c.out, "entra:   token requested for %v\n", opts.Scopes)
	return c.cred.GetToken(ctx, opts)
}
