package device

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/iothub-go/iothub/transport"
)

// MaxPayload is the largest method response payload IoT Hub accepts (128 KB).
const MaxPayload = 128 * 1024

// ErrPayloadTooLarge is wrapped when a response payload exceeds MaxPayload.
var ErrPayloadTooLarge = errors.New("iothub: method payload exceeds 128 KB")

// MethodRequest is one direct method call: its name, the hub's request id
// and the caller's raw JSON payload. Payload holds "null" when the caller
// sent JSON null (the service client's nil Payload) and is empty when the
// caller's request had no payload at all (the Azure portal and the az CLI
// send none). A handler that decodes the payload should accept both; the
// official Node device SDK answers 400 to an empty payload, this one
// leaves the choice to the handler.
type MethodRequest = transport.MethodRequest

// MethodResponse is a handler's answer: any integer status (data for the
// caller, not an HTTP status) and a JSON payload (empty: the caller sees
// null).
type MethodResponse = transport.MethodResponse

// MethodHandler answers one direct method call. It runs on its own
// goroutine, concurrently with other calls (see
// ClientOptions.MaxConcurrentHandlers).
//
// ctx ends in one case only: Close gave up waiting for running handlers
// because the context given to Close ended first. The answer of a handler
// still running then is dropped. A lost connection does not end ctx (the
// hub has already answered the caller 404103, and the answer goes
// nowhere), and neither does a Close that waits.
//
// A handler may call any method of the client, Close included: Close does
// not wait for the handler that called it, and that handler's answer is
// sent before the connection closes (the seed's reboot handler answers and
// then shuts the device down).
//
// Returning a response sends it as is, after checking that its payload is
// valid JSON of at most 128 KB (otherwise the caller gets status 500).
// Returning an error sends status 500 with {"error": err.Error()}: the
// message reaches the caller, so keep secrets out of it. A panic is
// recovered and answered with status 500; the connection is unaffected. A
// nil response with a nil error sends status 200 with no payload.
type MethodHandler func(ctx context.Context, req *MethodRequest) (*MethodResponse, error)

// JSONResponse encodes v as the payload of a response with status. It fails
// if v cannot be encoded or the payload exceeds 128 KB.
func JSONResponse(status int, v any) (*MethodResponse, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("iothub: encoding method response: %w", err)
	}
	if len(b) > MaxPayload {
		return nil, fmt.Errorf("%w: %d bytes", ErrPayloadTooLarge, len(b))
	}
	return &MethodResponse{Status: status, Payload: b}, nil
}

// errorResponse is the JSON answer for requests the client answers itself.
func errorResponse(status int, msg string) *MethodResponse {
	b, _ := json.Marshal(map[string]string{"error": msg})
	return &MethodResponse{Status: status, Payload: b}
}

// checkResponse validates a handler's answer before it is sent.
func checkResponse(resp *MethodResponse) *MethodResponse {
	if resp == nil {
		return &MethodResponse{Status: 200}
	}
	if len(resp.Payload) > MaxPayload {
		return errorResponse(500, fmt.Sprintf("the handler's response payload is %d bytes; the limit is 128 KB", len(resp.Payload)))
	}
	if len(resp.Payload) > 0 && !json.Valid(resp.Payload) {
		return errorResponse(500, "the handler's response payload is not valid JSON")
	}
	return resp
}
