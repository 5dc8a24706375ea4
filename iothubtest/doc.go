// Package iothubtest runs a local, protocol-faithful Azure IoT Hub inside a
// test, the way net/http/httptest runs an HTTP server.
//
// The hub listens on one random loopback port with TLS and serves MQTT,
// AMQP 1.0, both over WebSocket too, the device HTTPS API (telemetry) and
// the HTTPS service API (direct methods, twins and the device registry) there. It is as strict as IoT Hub: bad tokens, unknown
// devices, offline devices, slow devices, QoS 2, foreign topics and
// out-of-range timeouts get IoT Hub's answers and error codes, so device and
// service code that passes here behaves the same against Azure.
//
// A test registers identities, connects its device code with the
// connection strings the hub hands out, and checks what the hub saw:
//
//	func TestReboot(t *testing.T) {
//		hub := iothubtest.NewServer(t, nil) // closed by t.Cleanup
//		devCS := hub.AddDevice(t, "dev1")   // HostName=localhost;DeviceId=dev1;SharedAccessKey=…;GatewayHostName=127.0.0.1:PORT
//		// … start the device code with devCS and hub.TLSConfig() …
//		if err := hub.WaitOnline(ctx, "dev1"); err != nil { … }
//		// … invoke with hub.ServiceConnectionString() and hub.HTTPClient() …
//		calls := hub.Calls() // identity, method, payload, status, error code, protocol, latency
//	}
//
// Twin, UpdateDesired, UpdateTags and UpdateReported read and set device and module
// twins directly: a test can check what its device code reported, or give
// its back-end code a twin to work on without running a device.
//
// Outside a test (examples, tools), Start returns a hub the caller closes.
//
// Identities are named "deviceID" or "deviceID/moduleID" in the fault
// injection methods: DropConnection, DelayResponses, DropResponses,
// ExpireTokens, and FailServiceRequests (FailServiceRequestsRetryAfter
// with a Retry-After) for the service API. Credential stands in for
// Microsoft Entra ID.
package iothubtest
