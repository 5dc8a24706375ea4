// Package apiversion holds the one IoT Hub API version that every part of
// the SDK speaks: the device transports (MQTT user name, AMQP and HTTPS
// query strings) and the service client's default.
package apiversion

// Current is the IoT Hub API version the SDK sends. The .NET and Node SDKs
// send the same one.
const Current = "2021-04-12"
