// Package iothub is the root of an SDK for Azure IoT Hub direct methods: a
// device registers handlers ([github.com/iothub-go/iothub/device]) and a
// back-end invokes them ([github.com/iothub-go/iothub/service]). Both share
// [github.com/iothub-go/iothub/auth], and
// [github.com/iothub-go/iothub/iothubtest] runs a local, protocol-faithful
// IoT Hub for tests.
//
// This package holds only the small vocabulary the others share.
package iothub

// Version is this SDK's version. Device clients send it to the hub in their
// client type ("iothub-go/" + Version), and the service client reports it
// in its User-Agent.
const Version = "0.1.0"
