package device

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/iothub-go/iothub/internal/jsonvalid"
)

// MaxPayloadSize is the largest method payload IoT Hub carries, in each
// direction: 128 KB of JSON text. service.MaxPayloadSize is the same limit.
const MaxPayloadSize = 128 * 1024

// MethodRequest is one direct method call as the device receives it.
type MethodRequest struct {
	// Name is the method name the caller invoked.
	Name string
	// RequestID is the hub's id for this call. The client answers with it;
	// handlers need it only to correlate logs.
	RequestID string
	// Payload is the JSON text of the caller's payload, byte for byte. A
	// caller that sent JSON null gives the four bytes "null" (the Go and
	// .NET service clients send null when no payload is set); a caller that
	// sent no payload at all, as the Azure portal and the az CLI do, gives
	// an empty Payload. A handler that decodes the payload should accept
	// both. (The official Node device SDK answers 400 to an empty payload;
	// this one leaves the choice to the handler.)
	Payload json.RawMessage
}

// MethodResponse is a handler's answer to a direct method call.
type MethodResponse struct {
	// Status is the status the caller receives: any integer, chosen by the
	// device (it is data for the caller, not an HTTP status of the hub).
	Status int
	// Payload is the JSON answer, at most MaxPayloadSize bytes. Empty means
	// none: the caller sees null.
	Payload json.RawMessage
}

// MethodHandler answers one direct method call. It runs on its own
// goroutine, concurrently with other calls (see
// ClientOptions.MaxConcurrentHandlers), and under ClientOptions.WrapHandler
// when one is set.
//
// What the caller receives:
//   - a response (with a nil error) is sent as is, after checking that its
//     payload is valid JSON of at most MaxPayloadSize bytes (otherwise the
//     caller gets status 500); a nil response sends status 200 with no
//     payload;
//   - an error wrapping a *MethodError (found with errors.As) sends its
//     Status with {"error": Message}: the way for a handler to tell the
//     caller why it refused;
//   - any other error sends status 500 with {"error": "the method handler
//     failed"}, and the error is logged on the device (ClientOptions.Logger)
//     but never sent: error texts name files, hosts and internal state that
//     a back-end operator should not see;
//   - a panic is recovered, logged and answered like a plain error; the
//     connection is unaffected.
//
// ctx ends in one case only: Close gave up waiting for running handlers
// because the context given to Close ended first. The answer of a handler
// still running then is dropped. A lost connection does not end ctx (the
// hub has already answered the caller 404103, and the answer goes
// nowhere), and neither does a Close that waits.
//
// A handler may call any method of the client, Close included: Close does
// not wait for the handler that called it, and that handler's answer is
// sent before the connection closes (a reboot handler can answer and then
// shut the device down).
type MethodHandler func(ctx context.Context, req *MethodRequest) (*MethodResponse, error)

// MethodError is an error a method handler returns, directly or wrapped, to
// answer the caller with Status and the JSON payload {"error": Message}.
// Errors that wrap no MethodError reach the caller only as status 500 with
// a generic message; see MethodHandler.
type MethodError struct {
	// Status is the status the caller receives; zero means 500.
	Status int
	// Message is sent to the caller: keep secrets out of it.
	Message string
}

// Error returns "iothub: method error <status>: <message>".
func (e *MethodError) Error() string {
	return "iothub: method error " + strconv.Itoa(e.status()) + ": " + e.Message
}

func (e *MethodError) status() int {
	if e.Status == 0 {
		return 500
	}
	return e.Status
}

// JSONResponse encodes v as the payload of a response with status. It fails
// if v cannot be encoded or the payload exceeds MaxPayloadSize.
func JSONResponse(status int, v any) (*MethodResponse, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("iothub: encoding method response: %w", err)
	}
	if len(b) > MaxPayloadSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrPayloadTooLarge, len(b))
	}
	return &MethodResponse{Status: status, Payload: b}, nil
}

// errorResponse is the JSON answer for requests the client answers itself.
func errorResponse(status int, msg string) *MethodResponse {
	b, _ := json.Marshal(map[string]string{"error": msg})
	return &MethodResponse{Status: status, Payload: b}
}

// handlerFailed is the answer to a handler that failed without a
// MethodError, or panicked. It says nothing of the failure.
func handlerFailed() *MethodResponse {
	return errorResponse(500, "the method handler failed")
}

// checkResponse validates a handler's answer before it is sent.
func checkResponse(resp *MethodResponse) *MethodResponse {
	if resp == nil {
		return &MethodResponse{Status: 200}
	}
	if len(resp.Payload) > MaxPayloadSize {
		return errorResponse(500, fmt.Sprintf("the handler's response payload is %d bytes; the limit is 128 KB", len(resp.Payload)))
	}
	if len(resp.Payload) > 0 && !jsonvalid.Valid(resp.Payload) {
		return errorResponse(500, "the handler's response payload is not valid JSON")
	}
	return resp
}
