// Package device is the device side of Azure IoT Hub direct methods and
// device twins: a [Client] connects a device or module to its hub, registers
// method handlers, answers calls, reports and receives twin properties,
// sends telemetry, and keeps itself connected.
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
// # What a caller learns from a handler
//
// A handler's answer is data sent to whoever invoked the method, through
// the hub, often an operator's back-end in another organisation. The
// client sends what the handler deliberately answers and nothing else: a
// [MethodResponse], or the Status and Message of a [*MethodError] the
// returned error wraps. Any other error is logged on the device and
// answered with status 500 and the fixed payload {"error":"the method
// handler failed"}, as a panic is. An error's text often carries file
// paths, host names, addresses or internal state (an open() error names the
// path, a dial error the address); sending it would leak that to every
// caller, so the client does not, as the .NET DeviceClient answers an
// exception with 500 without its text. A handler that wants the caller to
// know why returns a MethodError:
//
//	return nil, &device.MethodError{Status: 409, Message: "a reboot is already in progress"}
//
// # Twins
//
// GetTwin reads the twin (desired and reported properties with their
// $version), UpdateReportedProperties merges a patch into the reported
// properties, and SetDesiredPropertiesHandler receives desired changes, each
// once and in version order, including those made while the client was
// offline: after every reconnect the client reads the twin and hands the
// handler the difference. This is what the seed's reboot flow needs: the
// "reboot" handler answers, then reports iothubDM.reboot.lastReboot.
//
//	c.UpdateReportedProperties(ctx, map[string]any{
//		"iothubDM": map[string]any{"reboot": map[string]any{"lastReboot": time.Now().UTC()}},
//	})
//
// Twins need MQTT or AMQP; over HTTPS the calls return an error wrapping
// ErrUnsupported.
//
// # Middleware
//
// [ClientOptions].WrapHandler wraps every handler, the default handler and
// the built-in 501 answer included, once, when it is registered: the place
// for a trace span, a metric or a log line around each call.
//
// # Errors
//
// Errors are tested with errors.Is against this package's Err variables,
// and with errors.As against [*MethodError]; their text is not part of the
// API. The transport sentinels (ErrNotAuthorized, ErrMessageTooLarge, …)
// are re-exported under their own names, so a device program need not
// import package transport.
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
