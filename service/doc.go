// Package service is the back-end half of the SDK: it invokes direct
// methods on IoT Hub devices and modules, reads and writes their twins,
// and manages the hub's identity registry, over IoT Hub's HTTPS service
// API; it sends cloud-to-device messages and receives their feedback over
// AMQP.
//
// A Client is built on azcore's HTTP pipeline (retries, logging,
// telemetry, pluggable Transport) and authenticates with a hub shared
// access policy or with Microsoft Entra ID:
//
//	c, err := service.NewClientFromConnectionString(os.Getenv("IOTHUB_SERVICE_CONNECTION_STRING"), nil)
//	c, err := service.NewClient("myhub.azure-devices.net", cred, nil) // cred: an azcore.TokenCredential
//
//	res, err := c.InvokeDeviceMethod(ctx, "myDeviceId", service.CloudToDeviceMethod{
//		MethodName: "reboot", ResponseTimeout: 30 * time.Second})
//	if errors.Is(err, service.ErrDeviceNotOnline) { … }
//	fmt.Println(res.Status, string(res.Payload))
//
// # Results and errors
//
// The device's answer is a MethodResult: its status (a 4xx or 5xx from the
// device is data, not an error) and its raw JSON payload. Errors are
// reserved for the hub and the network: a *ResponseError carries the HTTP
// status, IoT Hub's error code (404103 DeviceNotOnline, 504101
// GatewayTimeout, …), message and tracking id, and matches the ErrXxx
// sentinels with errors.Is. Arguments are checked before anything is sent
// (method name, timeouts, payload size), and errors for them match
// ErrArgumentInvalid. An answer the client refuses matches ErrRedirect,
// ErrResponseTooLarge or ErrMalformedResponse; a network failure wraps
// the HTTP transport's error (with net/http, a *url.Error, and a
// *net.OpError for a refused connection). When the caller's context ends,
// ctx.Err() is returned as is. Every message starts with "iothub: " and its
// text is not part of the API.
//
// # Registry and etags
//
// Device and Module carry the ETag the hub gave them. Updates and deletes
// take a *UpdateOptions or *DeleteOptions, nil for the defaults, whose
// IfMatch names the version the identity must still be at, or "*" for any
// version: an update defaults to the ETag of the Device or Module passed
// (a get-modify-update never overwrites a concurrent change), a delete by
// id to any version, as in the .NET and Node SDKs. A stale etag fails with
// ErrPreconditionFailed.
//
// # Twins
//
// GetTwin reads a device twin: tags, desired and reported properties with
// their $version and $metadata, and the identity's fields. UpdateTwin
// merges a TwinPatch into the tags and desired properties (nil deletes),
// unconditionally unless UpdateTwinOptions.IfMatch names an etag;
// ReplaceTwin replaces them, by default only if the twin is still at the
// ETag of the Twin passed, like UpdateDevice. The module variants are
// GetModuleTwin, UpdateModuleTwin and ReplaceModuleTwin. Property names
// and values that break IoT Hub's rules are refused before anything is
// sent (ErrArgumentInvalid); reported properties are the device's and
// cannot be written here.
//
// # Retries
//
// A direct method is not idempotent: the client retries an invocation only
// when the hub provably did not dispatch it (connection refused, 429
// throttling, 503), never after a 504 or once the request may have reached
// the device. Registry writes are retried the same way (a retried create
// whose first attempt succeeded would fail with 409); registry reads use
// azcore's retry policy as configured in ClientOptions.Retry. Cancellation is
// never retried.
//
// # Tracing
//
// With ClientOptions.TracingProvider set, for instance to OpenTelemetry
// through github.com/Azure/azure-sdk-for-go/sdk/tracing/azotel, every call
// that talks to the hub is a span named like the Azure SDKs' spans,
// "Client.InvokeDeviceMethod", "Client.GetDevice" and so on, with the
// attribute az.namespace "Microsoft.Devices" and azcore's HTTP span of
// each attempt as a child. A failed call's span has status Error and, when
// the hub refused it, the attribute iothub.error_code holding IoT Hub's
// error code ("DeviceNotFound", "DeviceNotOnline", …). InvokeDeviceMethods
// makes one "Client.InvokeDeviceMethod" span per device.
//
// # Cloud-to-device messages
//
// Send queues a C2DMessage for a device, connected or not (IoT Hub keeps
// up to 50 per device, 64 KB each, for their TTL); NewFeedbackReceiver
// reads the outcomes the messages asked for with C2DMessage.Ack;
// PurgeMessageQueue empties a device's queue. Send and the feedback
// receiver share one AMQP connection per Client (TLS on port 5671, or
// WebSocket on 443 with ClientOptions.AMQPOverWebSockets), dialled on
// first use, authenticated like the HTTPS calls and redialled after a
// failure; Close closes it. Delivery to the device is at least once.
// Modules cannot receive cloud-to-device messages.
//
// # Local hub
//
// The connection strings of [github.com/iothub-go/iothub/iothubtest] carry
// GatewayHostName=127.0.0.1:PORT, which the client dials (tokens still name
// HostName); pass the hub's HTTPClient as ClientOptions.Transport so that
// its TLS certificate is trusted. ClientOptions.Endpoint does the same for
// NewClient.
//
// # Secrets
//
// Keys, tokens and connection strings never appear in errors, in String
// or %v of the Client, or in azcore's logs (the Authorization header is
// redacted; bodies are not logged unless ClientOptions.Logging.IncludeBody is
// set, which logs payloads and registry keys). DeviceConnectionString returns
// a secret by design.
package service
