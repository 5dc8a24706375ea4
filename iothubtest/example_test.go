package iothubtest_test

import (
	"context"
	"fmt"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/iothub-go/iothub"
	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/iothubtest"
	iothubservice "github.com/iothub-go/iothub/service"
)

// rebootHandler stands for the device code under test.
func rebootHandler(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
	return device.JSONResponse(200, map[string]string{"result": "Reboot started."})
}

// Test device code end to end: the device connects to the local hub with
// the connection string AddDevice returns, a back-end invokes it, and
// Calls shows what the hub saw. In a test, use NewServer(t, nil) instead of
// Start: it fails the test on errors and closes the hub at cleanup.
func Example() {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		panic(err)
	}
	defer hub.Close()
	ctx := context.Background()

	dev, err := device.NewClientFromConnectionString(hub.AddDevice(exampleT{}, "dev1"),
		&device.ClientOptions{TLSConfig: hub.TLSConfig()}) // trust the hub's certificate
	if err != nil {
		panic(err)
	}
	defer dev.Close(ctx)
	if err := dev.SetMethodHandler("reboot", rebootHandler); err != nil {
		panic(err)
	}
	if err := dev.Connect(ctx); err != nil {
		panic(err)
	}

	hc := hub.HTTPClient()
	defer hc.CloseIdleConnections()
	svc, err := iothubservice.NewClientFromConnectionString(hub.ServiceConnectionString(),
		&iothubservice.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: hc}})
	if err != nil {
		panic(err)
	}
	res, err := svc.InvokeDeviceMethod(ctx, "dev1", iothubservice.CloudToDeviceMethod{MethodName: "reboot"})
	if err != nil {
		panic(err)
	}
	fmt.Println(res.Status, string(res.Payload))

	call := hub.Calls()[0]
	fmt.Println(call.DeviceID, call.Method, call.Protocol, call.Status)
	// Output:
	// 200 {"result":"Reboot started."}
	// dev1 reboot mqtt 200
}

// Fault injection: the hub drops a device's connection as a network failure
// would, and the device client reconnects and subscribes again by itself.
func ExampleServer_DropConnection() {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		panic(err)
	}
	defer hub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	dev, err := device.NewClientFromConnectionString(hub.AddDevice(exampleT{}, "dev1"), &device.ClientOptions{
		TLSConfig: hub.TLSConfig(),
		Retry:     iothub.RetryOptions{RetryDelay: 10 * time.Millisecond}, // reconnect fast
	})
	if err != nil {
		panic(err)
	}
	defer dev.Close(ctx)
	if err := dev.SetMethodHandler("reboot", rebootHandler); err != nil {
		panic(err)
	}
	if err := dev.Connect(ctx); err != nil {
		panic(err)
	}

	fmt.Println("dropped:", hub.DropConnection("dev1"))
	// WaitOnline returns once the device is connected and subscribed again.
	fmt.Println("back online:", hub.WaitOnline(ctx, "dev1") == nil)
	// Output:
	// dropped: true
	// back online: true
}

// Read and set a twin directly, without a device or a service client: a
// test can give back-end code a twin to work on, or check what device code
// reported.
func ExampleServer_Twin() {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		panic(err)
	}
	defer hub.Close()
	hub.AddDevice(exampleT{}, "dev1")

	// As the back end would: tags and desired properties.
	hub.UpdateTags(exampleT{}, "dev1", map[string]any{"site": "lyon"})
	hub.UpdateDesired(exampleT{}, "dev1", map[string]any{"interval": 30})
	// As the device would: reported properties.
	hub.UpdateReported(exampleT{}, "dev1", map[string]any{"interval": 30, "firmware": "1.4.2"})

	tw := hub.Twin(exampleT{}, "dev1")
	fmt.Println("tags:", tw.Tags["site"])
	fmt.Println("desired:", tw.DesiredVersion, tw.Desired["interval"])
	fmt.Println("reported:", tw.ReportedVersion, tw.Reported["firmware"])
	// Output:
	// tags: lyon
	// desired: 2 30
	// reported: 2 1.4.2
}
