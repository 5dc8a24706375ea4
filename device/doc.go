// Package device is the device side of Azure IoT Hub direct methods: a
// [Client] connects a device or module to its hub, registers method
// handlers, answers calls, and keeps itself connected.
//
//	c, err := device.NewClientFromConnectionString(cs, nil) // MQTT over TLS
//	c.SetMethodHandler("reboot", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
//		return device.JSONResponse(200, map[string]string{"result": "Reboot started."})
//	})
//	err = c.Connect(ctx)
//	defer c.Close(ctx)
//
// Reconnecting, SAS token renewal and the method subscription are handled
// once here, for every transport: after every reconnect the client
// subscribes again and counts itself connected only once the hub has
// confirmed the subscription.
//
// # Lifecycle
//
// [Client.Close] may be called from anywhere: from a method handler (it
// does not wait for the handler that called it, whose answer still goes
// out before the connection closes), from the OnConnectionStatus callback
// (the closed status is delivered once the callback returns), or while
// Connect is still dialing (the attempt ends at once). The client is
// subscribed to direct methods while at least one handler, or a default
// handler, is registered, as the official SDKs are; without one the hub
// answers callers 404103 (device not online).
package device
