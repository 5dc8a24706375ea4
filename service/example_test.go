package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// Invoke a direct method on a device and read its answer. Here the hub is
// a local one and the device a few lines of MQTT; against Azure, only the
// connection string changes (and no Transport is needed).
func ExampleClient_InvokeDeviceMethod() {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	stop := startEchoDevice(hub, hub.AddDevice(exampleT{}, "thermostat-1"))
	defer stop()

	hc := hub.HTTPClient() // trusts the local hub's certificate
	defer hc.CloseIdleConnections()
	opts := &service.ClientOptions{}
	opts.Transport = hc
	c, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(), opts)
	if err != nil {
		log.Fatal(err)
	}

	res, err := c.InvokeDeviceMethod(context.Background(), "thermostat-1", service.CloudToDeviceMethod{
		MethodName:      "reboot",
		Payload:         map[string]int{"delaySeconds": 5},
		ResponseTimeout: 30 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Status, string(res.Payload))
	// Output: 200 {"delaySeconds":5}
}

// A device that is not connected: the hub answers 404103 DeviceNotOnline,
// which errors.Is and errors.As make easy to handle.
func ExampleClient_InvokeDeviceMethod_deviceNotOnline() {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	hub.AddDevice(exampleT{}, "sleepy-1") // registered, never connected

	hc := hub.HTTPClient()
	defer hc.CloseIdleConnections()
	opts := &service.ClientOptions{}
	opts.Transport = hc
	c, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(), opts)
	if err != nil {
		log.Fatal(err)
	}

	_, err = c.InvokeDeviceMethod(context.Background(), "sleepy-1", service.CloudToDeviceMethod{MethodName: "reboot"})
	fmt.Println("not online:", errors.Is(err, service.ErrDeviceNotOnline))
	var re *service.ResponseError
	if errors.As(err, &re) {
		fmt.Println(re.StatusCode, re.Code, re.ErrorCode)
	}
	// Output:
	// not online: true
	// 404 404103 DeviceNotOnline
}

// Invoke one method on a fleet, a few devices at a time.
func ExampleClient_InvokeDeviceMethods() {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	stop := startEchoDevice(hub, hub.AddDevice(exampleT{}, "pump-1"))
	defer stop()
	hub.AddDevice(exampleT{}, "pump-2") // offline

	hc := hub.HTTPClient()
	defer hc.CloseIdleConnections()
	opts := &service.ClientOptions{}
	opts.Transport = hc
	c, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(), opts)
	if err != nil {
		log.Fatal(err)
	}

	results := c.InvokeDeviceMethods(context.Background(), []string{"pump-1", "pump-2", "pump-3"},
		service.CloudToDeviceMethod{MethodName: "stop", Payload: "now"}, &service.InvokeManyOptions{MaxConcurrency: 8})
	for _, r := range results {
		var re *service.ResponseError
		switch {
		case errors.As(r.Err, &re):
			fmt.Println(r.DeviceID, "failed:", re.ErrorCode)
		case r.Err != nil:
			fmt.Println(r.DeviceID, "failed:", r.Err)
		default:
			fmt.Println(r.DeviceID, r.Result.Status, string(r.Result.Payload))
		}
	}
	// Output:
	// pump-1 200 "now"
	// pump-2 failed: DeviceNotOnline
	// pump-3 failed: DeviceNotFound
}

// Register a device with generated keys and get its connection string.
func ExampleClient_CreateDevice() {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	hc := hub.HTTPClient()
	defer hc.CloseIdleConnections()
	opts := &service.ClientOptions{}
	opts.Transport = hc
	c, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(), opts)
	if err != nil {
		log.Fatal(err)
	}

	d, err := c.CreateDevice(context.Background(), &service.Device{DeviceID: "sensor-7"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(d.DeviceID, d.Authentication.Type, d.Status)

	cs, err := c.DeviceConnectionString(d, service.KeyKindPrimary)
	if err != nil {
		log.Fatal(err)
	}
	parsed, err := auth.ParseDeviceConnectionString(cs) // cs holds the key: do not log it
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(parsed.HostName, parsed.DeviceID, parsed.SharedAccessKey == d.Authentication.SymmetricKey.PrimaryKey)
	// Output:
	// sensor-7 sas enabled
	// localhost sensor-7 true
}

// Connect to a hub with a shared access policy's connection string. Against
// Azure the connection string is all it takes; a local hub also needs its
// HTTP client, which trusts the hub's certificate.
func ExampleNewClientFromConnectionString() {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	hc := hub.HTTPClient()
	defer hc.CloseIdleConnections()

	opts := &service.ClientOptions{}
	opts.Transport = hc
	c, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(), opts)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(c.HostName())
	// Output: localhost
}

// Change a device with the etag it was read with: an update made in
// between makes the call fail, unless IfMatch "*" says any version will do.
func ExampleClient_UpdateDevice() {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	hc := hub.HTTPClient()
	defer hc.CloseIdleConnections()
	opts := &service.ClientOptions{}
	opts.Transport = hc
	c, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(), opts)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	d, err := c.CreateDevice(ctx, &service.Device{DeviceID: "pump-7"})
	if err != nil {
		log.Fatal(err)
	}

	d.Status = service.DeviceStatusDisabled
	d.StatusReason = "maintenance"
	updated, err := c.UpdateDevice(ctx, d, nil) // If-Match: d.ETag
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(updated.Status, updated.ETag != d.ETag)

	d.Status = service.DeviceStatusEnabled // d.ETag is now stale
	_, err = c.UpdateDevice(ctx, d, nil)
	fmt.Println("stale:", errors.Is(err, service.ErrPreconditionFailed))
	forced, err := c.UpdateDevice(ctx, d, &service.UpdateOptions{IfMatch: "*"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(forced.Status)
	// Output:
	// disabled true
	// stale: true
	// enabled
}

// Delete a device whatever its version (nil options), or only if it has
// not changed since it was read (IfMatch).
func ExampleClient_DeleteDevice() {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	hub.AddDevice(exampleT{}, "old-1")
	hub.AddDevice(exampleT{}, "old-2")
	hc := hub.HTTPClient()
	defer hc.CloseIdleConnections()
	opts := &service.ClientOptions{}
	opts.Transport = hc
	c, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(), opts)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	if err := c.DeleteDevice(ctx, "old-1", nil); err != nil {
		log.Fatal(err)
	}
	d, err := c.GetDevice(ctx, "old-2")
	if err != nil {
		log.Fatal(err)
	}
	if err := c.DeleteDevice(ctx, d.DeviceID, &service.DeleteOptions{IfMatch: d.ETag}); err != nil {
		log.Fatal(err)
	}
	_, err = c.GetDevice(ctx, "old-2")
	fmt.Println("gone:", errors.Is(err, service.ErrDeviceNotFound))
	// Output: gone: true
}

// Give a device a module identity, with generated keys, and list the
// device's modules.
func ExampleClient_CreateModule() {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	hub.AddDevice(exampleT{}, "gateway-1")
	hc := hub.HTTPClient()
	defer hc.CloseIdleConnections()
	opts := &service.ClientOptions{}
	opts.Transport = hc
	c, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(), opts)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	for _, id := range []string{"modbus", "opcua"} {
		if _, err := c.CreateModule(ctx, &service.Module{DeviceID: "gateway-1", ModuleID: id}); err != nil {
			log.Fatal(err)
		}
	}
	mods, err := c.ListModules(ctx, "gateway-1")
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range mods {
		fmt.Println(m.DeviceID, m.ModuleID, m.Authentication.Type)
	}
	// Output:
	// gateway-1 modbus sas
	// gateway-1 opcua sas
}

// List the registry's devices, a page at a time (however many there are).
func ExampleClient_NewListDevicesPager() {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	hub.AddDevice(exampleT{}, "sensor-1")
	hub.AddDevice(exampleT{}, "sensor-2")
	hc := hub.HTTPClient()
	defer hc.CloseIdleConnections()
	opts := &service.ClientOptions{}
	opts.Transport = hc
	c, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(), opts)
	if err != nil {
		log.Fatal(err)
	}

	pager := c.NewListDevicesPager(&service.ListDevicesOptions{PageSize: 1000})
	for pager.More() {
		page, err := pager.NextPage(context.Background())
		if err != nil {
			log.Fatal(err)
		}
		for _, d := range page.Devices {
			fmt.Println(d.DeviceID, d.Status, d.ConnectionState)
		}
	}
	// Output:
	// sensor-1 enabled Disconnected
	// sensor-2 enabled Disconnected
}

// Authenticate with Microsoft Entra ID. iothubtest's Credential stands in
// for an azidentity credential; Endpoint points the client at the local
// hub while the identity stays "localhost".
func ExampleNewClient() {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	hub.AddDevice(exampleT{}, "dev-1")
	hc := hub.HTTPClient()
	defer hc.CloseIdleConnections()

	opts := &service.ClientOptions{Endpoint: "https://" + hub.Addr()}
	opts.Transport = hc
	c, err := service.NewClient("localhost", hub.Credential(), opts)
	if err != nil {
		log.Fatal(err)
	}
	d, err := c.GetDevice(context.Background(), "dev-1")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(d.DeviceID, d.ConnectionState)
	// Output: dev-1 Disconnected
}

// Read what a device reported in its twin. Here iothubtest stands in for
// the device: hub.UpdateReported changes the reported properties as the
// device's UpdateReportedProperties would.
func ExampleClient_GetTwin() {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	hub.AddDevice(exampleT{}, "thermostat-1")
	hub.UpdateReported(exampleT{}, "thermostat-1", map[string]any{"temperature": 21.5, "firmware": "1.4.2"})
	hc := hub.HTTPClient()
	defer hc.CloseIdleConnections()
	opts := &service.ClientOptions{}
	opts.Transport = hc
	c, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(), opts)
	if err != nil {
		log.Fatal(err)
	}

	tw, err := c.GetTwin(context.Background(), "thermostat-1")
	if err != nil {
		log.Fatal(err)
	}
	var temperature float64
	if err := json.Unmarshal(tw.Reported.Properties["temperature"], &temperature); err != nil {
		log.Fatal(err)
	}
	fmt.Println(tw.DeviceID, "reported version", tw.Reported.Version)
	fmt.Println("temperature:", temperature)
	// Output:
	// thermostat-1 reported version 2
	// temperature: 21.5
}

// Set desired properties and tags with a patch. A nil value deletes a
// property; IfMatch makes the patch conditional on the twin's version.
func ExampleClient_UpdateTwin() {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	hub.AddDevice(exampleT{}, "thermostat-1")
	hc := hub.HTTPClient()
	defer hc.CloseIdleConnections()
	opts := &service.ClientOptions{}
	opts.Transport = hc
	c, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(), opts)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	tw, err := c.UpdateTwin(ctx, "thermostat-1", &service.TwinPatch{
		Tags:    map[string]any{"building": "B12"},
		Desired: map[string]any{"targetTemperature": 20, "mode": "eco"},
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("desired version", tw.Desired.Version, string(tw.Desired.Properties["targetTemperature"]))

	// Only if nobody changed the twin since it was read.
	read := tw
	tw, err = c.UpdateTwin(ctx, "thermostat-1", &service.TwinPatch{Desired: map[string]any{"mode": nil}},
		&service.UpdateTwinOptions{IfMatch: read.ETag})
	if err != nil {
		log.Fatal(err)
	}
	_, hasMode := tw.Desired.Properties["mode"]
	fmt.Println("desired version", tw.Desired.Version, "mode set:", hasMode)

	_, err = c.UpdateTwin(ctx, "thermostat-1", &service.TwinPatch{Tags: map[string]any{"building": "C3"}},
		&service.UpdateTwinOptions{IfMatch: read.ETag}) // the twin changed since
	fmt.Println("stale:", errors.Is(err, service.ErrPreconditionFailed))
	// Output:
	// desired version 2 20
	// desired version 3 mode set: false
	// stale: true
}

// Replace a twin's tags and desired properties: read it, change it, send
// it back. The twin's etag makes the replacement fail if the twin changed
// in between; reported properties are the device's and are not sent.
func ExampleClient_ReplaceTwin() {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	hub.AddDevice(exampleT{}, "pump-1")
	hc := hub.HTTPClient()
	defer hc.CloseIdleConnections()
	opts := &service.ClientOptions{}
	opts.Transport = hc
	c, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(), opts)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.UpdateTwin(ctx, "pump-1", &service.TwinPatch{Tags: map[string]any{"old": true}}, nil); err != nil {
		log.Fatal(err)
	}

	tw, err := c.GetTwin(ctx, "pump-1")
	if err != nil {
		log.Fatal(err)
	}
	tw.Tags = map[string]json.RawMessage{"site": json.RawMessage(`"north"`)}
	tw, err = c.ReplaceTwin(ctx, "pump-1", tw, nil) // If-Match: tw.ETag
	if err != nil {
		log.Fatal(err)
	}
	for k, v := range tw.Tags {
		fmt.Println(k, string(v))
	}
	// Output: site "north"
}

// exampleT satisfies iothubtest.TB outside of a test.
type exampleT struct{}

func (exampleT) Helper()                   {}
func (exampleT) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
func (exampleT) Cleanup(func())            {}

// startEchoDevice connects a device over MQTT with the eclipse/paho client
// and answers every method with status 200 and the request's payload (the
// SDK's device package does this for real devices). It returns once the
// hub sees the device online.
func startEchoDevice(hub *iothubtest.Server, connStr string) (stop func()) {
	cs, err := auth.ParseDeviceConnectionString(connStr)
	if err != nil {
		log.Fatal(err)
	}
	tp, err := cs.TokenProvider(nil)
	if err != nil {
		log.Fatal(err)
	}
	tok, err := tp.Token(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	o := paho.NewClientOptions().AddBroker("tls://" + cs.Address()).SetClientID(cs.DeviceID).
		SetUsername(cs.HostName + "/" + cs.DeviceID + "/?api-version=" + service.DefaultAPIVersion).SetPassword(tok.Value).
		SetTLSConfig(hub.TLSConfig()).SetProtocolVersion(4).SetAutoReconnect(false)
	c := paho.NewClient(o)
	if tk := c.Connect(); tk.Wait() && tk.Error() != nil {
		log.Fatal(tk.Error())
	}
	tk := c.Subscribe("$iothub/methods/POST/#", 0, func(c paho.Client, m paho.Message) {
		_, rid, _ := strings.Cut(m.Topic(), "?$rid=")
		c.Publish("$iothub/methods/res/200/?$rid="+rid, 0, false, m.Payload())
	})
	if tk.Wait() && tk.Error() != nil {
		log.Fatal(tk.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := hub.WaitOnline(ctx, cs.DeviceID); err != nil {
		log.Fatal(err)
	}
	return func() { c.Disconnect(50) }
}
