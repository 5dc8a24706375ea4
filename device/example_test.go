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

// newBackend returns a service client of the local hub, to invoke methods
// as a back-end would.
func newBackend(hub *iothubtest.Server) *service.Client {
	backend, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(),
		&service.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: hub.HTTPClient()}})
	if err != nil {
		panic(err)
	}
	return backend
}

// A device connects with its connection string. Against Azure the options
// may be nil; the local hub needs its certificate trusted.
func ExampleNewClientFromConnectionString() {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		panic(err)
	}
	defer hub.Close()
	ctx := context.Background()

	connStr := hub.AddDevice(exampleT{}, "thermostat-1") // HostName=…;DeviceId=thermostat-1;SharedAccessKey=…
	client, err := device.NewClientFromConnectionString(connStr, &device.ClientOptions{TLSConfig: hub.TLSConfig()})
	if err != nil {
		panic(err)
	}
	if err := client.Connect(ctx); err != nil {
		panic(err)
	}
	defer client.Close(ctx)
	fmt.Println(client.ConnectionState())
	// Output: connected
}

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

	res, err := newBackend(hub).InvokeDeviceMethod(ctx, "thermostat-1", service.CloudToDeviceMethod{
		MethodName: "reboot", ResponseTimeout: 30 * time.Second})
	if err != nil {
		panic(err)
	}
	fmt.Println(res.Status, string(res.Payload))
	// Output: 200 {"result":"Reboot started."}
}

// A handler refuses a call and tells the caller why with a MethodError. A
// plain error would reach the caller only as 500 {"error":"the method
// handler failed"}.
func ExampleMethodError() {
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
		return nil, &device.MethodError{Status: 409, Message: "a firmware update is running"}
	})
	if err != nil {
		panic(err)
	}
	if err := client.Connect(ctx); err != nil {
		panic(err)
	}
	defer client.Close(ctx)

	res, err := newBackend(hub).InvokeDeviceMethod(ctx, "thermostat-1", service.CloudToDeviceMethod{
		MethodName: "reboot", ResponseTimeout: 30 * time.Second})
	if err != nil {
		panic(err)
	}
	fmt.Println(res.Status, string(res.Payload))
	// Output: 409 {"error":"a firmware update is running"}
}

// WrapHandler puts code around every method call, here a log line; a span
// or a metric goes in the same place. The unregistered method is answered
// by the built-in 501 handler, which is wrapped too.
func ExampleClientOptions_wrapHandler() {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		panic(err)
	}
	defer hub.Close()
	ctx := context.Background()

	logCalls := func(next device.MethodHandler) device.MethodHandler {
		return func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
			resp, err := next(ctx, req)
			switch {
			case err != nil:
				fmt.Printf("device: %s failed: %v\n", req.Name, err)
			case resp != nil:
				fmt.Printf("device: %s answered %d\n", req.Name, resp.Status)
			}
			return resp, err
		}
	}
	client, err := device.NewClientFromConnectionString(hub.AddDevice(exampleT{}, "thermostat-1"),
		&device.ClientOptions{TLSConfig: hub.TLSConfig(), WrapHandler: logCalls})
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

	backend := newBackend(hub)
	for _, method := range []string{"reboot", "selfDestruct"} {
		res, err := backend.InvokeDeviceMethod(ctx, "thermostat-1", service.CloudToDeviceMethod{
			MethodName: method, ResponseTimeout: 30 * time.Second})
		if err != nil {
			panic(err)
		}
		fmt.Println("back-end:", method, res.Status)
	}
	// Output:
	// device: reboot answered 200
	// back-end: reboot 200
	// device: selfDestruct answered 501
	// back-end: selfDestruct 501
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

// The seed's reboot flow, whole: the device reports when it rebooted, and
// the back-end reads it from the twin.
func ExampleClient_UpdateReportedProperties() {
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

	version, err := client.UpdateReportedProperties(ctx, map[string]any{
		"iothubDM": map[string]any{"reboot": map[string]any{"lastReboot": "2026-12-05T10:00:00Z"}},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("reported version:", version)

	twin, err := newBackend(hub).GetTwin(ctx, "thermostat-1")
	if err != nil {
		panic(err)
	}
	fmt.Println("the back-end reads:", string(twin.Reported.Properties["iothubDM"]))
	// Output:
	// reported version: 2
	// the back-end reads: {"reboot":{"lastReboot":"2026-12-05T10:00:00Z"}}
}

// A device follows its desired properties: the handler first gets the
// whole desired section, then each change the back-end makes.
func ExampleClient_SetDesiredPropertiesHandler() {
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
	got := make(chan device.TwinProperties, 10)
	err = client.SetDesiredPropertiesHandler(func(ctx context.Context, patch device.TwinProperties) {
		got <- patch
	})
	if err != nil {
		panic(err)
	}
	if err := client.Connect(ctx); err != nil {
		panic(err)
	}
	defer client.Close(ctx)

	first := <-got
	fmt.Println("version", first.Version, "properties:", len(first.Properties))
	hub.UpdateDesired(exampleT{}, "thermostat-1", map[string]any{"targetTemperature": 21.5})
	change := <-got
	fmt.Println("version", change.Version, "targetTemperature:", string(change.Properties["targetTemperature"]))
	// Output:
	// version 1 properties: 0
	// version 2 targetTemperature: 21.5
}

// GetTwin reads both sections with their versions.
func ExampleClient_GetTwin() {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		panic(err)
	}
	defer hub.Close()
	ctx := context.Background()

	connStr := hub.AddDevice(exampleT{}, "thermostat-1")
	hub.UpdateDesired(exampleT{}, "thermostat-1", map[string]any{"interval": 30}) // as a back-end would
	client, err := device.NewClientFromConnectionString(connStr, &device.ClientOptions{TLSConfig: hub.TLSConfig()})
	if err != nil {
		panic(err)
	}
	if err := client.Connect(ctx); err != nil {
		panic(err)
	}
	defer client.Close(ctx)

	twin, err := client.GetTwin(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("desired:", twin.Desired.Version, string(twin.Desired.Properties["interval"]))
	fmt.Println("reported:", twin.Reported.Version, len(twin.Reported.Properties))
	// Output:
	// desired: 2 30
	// reported: 1 0
}
