// Package httpd is the local IoT Hub's HTTPS REST face: the service API
// that back-end applications call to invoke direct methods
// (POST /twins/{id}/methods, POST /twins/{id}/modules/{mid}/methods), to
// read and write device and module twins (GET, PATCH and PUT /twins/{id}
// and /twins/{id}/modules/{mid}, see twins.go) and to manage the identity
// registry (/devices/{id} and
// /devices/{id}/modules/{mid}), and the device-facing telemetry endpoint
// that devices post device-to-cloud messages to
// (POST /devices/{id}[/modules/{mid}]/messages/events, see events.go).
//
// It translates IoT Hub's wire format to calls on an [engine.Engine]:
// paths, api-version checks, SAS and Bearer authorization, request
// validation, and error answers in the hub's current body shape
//
//	{"Message":"{\"errorCode\":404103,\"trackingId\":\"…\",\"message\":\"…\",\"timestampUtc\":\"…\"}","ExceptionMessage":""}
//
// with the code's name in the iothub-errorcode response header.
//
// Where the documentation and the observed behaviour of a real hub are
// silent, the choices made here are marked "[inf]" in comments.
package httpd
