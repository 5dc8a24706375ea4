// Command module-methods shows direct methods on module identities: two
// modules of one device connect separately, each with its own handlers, and
// the back-end invokes them with InvokeModuleMethod.
//
//	go run ./examples/module-methods
//
// It runs against a local hub started in-process. Against a real hub the
// code is the same from "registry" on: the service client's connection
// string comes from the hub's "Shared access policies" page, and the
// modules' connection strings come from ModuleConnectionString as here.
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

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "module-methods:", err)
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

	// The methods each module answers.
	handlers := map[string]map[string]device.MethodHandler{
		"sensor": {
			"getReading": func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
				return device.JSONResponse(200, map[string]float64{"celsius": 21.5})
			},
		},
		"updater": {
			"getVersion": func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
				return device.JSONResponse(200, map[string]string{"version": "1.4.2"})
			},
		},
	}

	// Registry: one device, two modules.
	svc, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(),
		&service.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: hub.HTTPClient()}})
	if err != nil {
		return err
	}
	const deviceID = "gateway-1"
	if _, err := svc.CreateDevice(ctx, &service.Device{DeviceID: deviceID}); err != nil {
		return err
	}
	for _, moduleID := range []string{"sensor", "updater"} {
		m, err := svc.CreateModule(ctx, &service.Module{DeviceID: deviceID, ModuleID: moduleID})
		if err != nil {
			return err
		}
		cs, err := svc.ModuleConnectionString(m, service.KeyKindPrimary)
		if err != nil {
			return err
		}

		// Each module is a device.Client of its own, built from the
		// module's connection string (it carries ModuleId).
		client, err := device.NewClientFromConnectionString(cs, &device.ClientOptions{TLSConfig: hub.TLSConfig()})
		if err != nil {
			return err
		}
		defer client.Close(context.WithoutCancel(ctx))
		for name, h := range handlers[moduleID] {
			if err := client.SetMethodHandler(name, h); err != nil {
				return err
			}
		}
		if err := client.Connect(ctx); err != nil {
			return err
		}
		fmt.Fprintf(out, "module:  %s/%s connected over mqtt\n", deviceID, moduleID)
	}

	// The back-end addresses a module by device id and module id. A method
	// the module has no handler for gets the device client's default
	// answer, 501.
	for _, call := range []struct{ module, method string }{
		{"sensor", "getReading"},
		{"updater", "getVersion"},
		{"sensor", "getVersion"},
	} {
		res, err := svc.InvokeModuleMethod(ctx, deviceID, call.module, service.CloudToDeviceMethod{
			MethodName: call.method, ResponseTimeout: 30 * time.Second})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "service: %s/%s %s -> %d %s\n", deviceID, call.module, call.method, res.Status, res.Payload)
	}
	return nil
}
