package device_test

import (
	"context"
	"fmt"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// exampleT satisfies iothubtest.TB outside of a test.
type exampleT struct{}

func (exampleT) Helper()                   {}
func (exampleT) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
func (exampleT) Cleanup(func())            {}

// A device answers "reboot"; a back-end invokes it through a local hub.
func ExampleClient_SetMethodHandler() {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		panic(err)
	}
	defer hub.Close()
	ctx := context.Background()

	client, err := device.NewClientFromConnectionString(hub.AddDevice(exampleT{}, "thermostat-1"),
		&device.ClientOptions{TLSConfig: hub.TLSConfig()})
	if err != nil {
		panic(err)
	}
	err = client.SetMethodHandler("reboot", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
		return device.JSONResponse(200, map[string]string{"result": "Reboot started."})
	})
	if err != nil {
		panic(err)
	}
	if err := client.Connect(ctx); err != nil {
		panic(err)
	}
	defer client.Close(ctx)

	backend, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(),
		&service.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: hub.HTTPClient()}})
	if err != nil {
		panic(err)
	}
	res, err := backend.InvokeDeviceMethod(ctx, "thermostat-1", service.CloudToDeviceMethod{
		MethodName: "reboot", ResponseTimeout: 30 * time.Second})
	if err != nil {
		panic(err)
	}
	fmt.Println(res.Status, string(res.Payload))
	// Output: 200 {"result":"Reboot started."}
}

// Telemetry reaches the hub with its properties.
func ExampleClient_SendEvent() {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		panic(err)
	}
	defer hub.Close()
	ctx := context.Background()
	client, err := device.NewClientFromConnectionString(hub.AddDevice(exampleT{}, "thermostat-1"),
		&device.ClientOptions{TLSConfig: hub.TLSConfig()})
	if err != nil {
		panic(err)
	}
	if err := client.Connect(ctx); err != nil {
		panic(err)
	}
	defer client.Close(ctx)

	err = client.SendEvent(ctx, &device.Message{
		Body:        []byte(`{"temperature":21.5}`),
		ContentType: "application/json",
		Properties:  map[string]string{"alert": "false"},
	})
	if err != nil {
		panic(err)
	}
	ev := hub.Events()[0]
	fmt.Println(ev.DeviceID, string(ev.Body), ev.ContentType, ev.Properties["alert"])
	// Output: thermostat-1 {"temperature":21.5} application/json false
}
