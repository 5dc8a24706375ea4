package httpd

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/internal/jsonvalid"
)

// Method timeout rules (seconds). The response-timeout message is the one
// the hub sends (azure-iot-sdk-csharp #724); the connect-timeout message
// mirrors it [inf].
const (
	defaultResponseTimeout = 30
	minResponseTimeout     = 5
	maxResponseTimeout     = 300
	defaultConnectTimeout  = 0
	maxConnectTimeout      = 300

	msgResponseTimeout = "responseTimeoutInSeconds must be within [5; 300]."
	msgConnectTimeout  = "connectTimeoutInSeconds must be within [0; 300]."
)

// methodRequestWire is the request body as it arrives. Every field is kept
// raw so that this package, not encoding/json, decides what a bad value
// means. Field names match case-insensitively, like the hub's
// Newtonsoft.Json binding; unknown fields are ignored.
type methodRequestWire struct {
	MethodName      json.RawMessage `json:"methodName"`
	Payload         json.RawMessage `json:"payload"`
	ResponseTimeout json.RawMessage `json:"responseTimeoutInSeconds"`
	ConnectTimeout  json.RawMessage `json:"connectTimeoutInSeconds"`
}

// formatError is the answer to a body that cannot be read as the expected
// JSON shape (not JSON, not an object, a field of the wrong JSON type).
//
// Why 400006 IotHubFormatError rather than 400004 ArgumentInvalid: IoT
// Hub answered a malformed JSON request body with "iothub-errorcode:
// IotHubFormatError" (azure-iot-sdk-java #67), and the .NET SDK documents
// the code as "returned by the service if a Json object provided by this
// library cannot be parsed" (azure-iot-sdk-csharp #2092). Well-formed
// JSON with an invalid value (a timeout out of range, a bad method name)
// is 400004 ArgumentInvalid, as the documented timeout error is.
func formatError(format string, args ...any) *engine.Error {
	return engine.NewError(engine.CodeIotHubFormatError, format, args...)
}

// isNull reports whether a raw field was absent or JSON null.
func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// trimBody drops surrounding whitespace and a UTF-8 byte order mark, which
// .NET readers skip.
func trimBody(body []byte) []byte {
	body = bytes.TrimSpace(body)
	body = bytes.TrimPrefix(body, []byte("\xef\xbb\xbf"))
	return bytes.TrimSpace(body)
}

// decodeObject unmarshals a body that must be one JSON object into v,
// turning every failure into an IotHubFormatError that does not leak Go
// type names.
func decodeObject(body []byte, v any) *engine.Error {
	body = trimBody(body)
	if len(body) == 0 {
		return formatError("The request body is empty; a JSON object is required.")
	}
	if body[0] != '{' {
		return formatError("The request body must be a JSON object.")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			return formatError("The request body is not valid JSON (error at byte %d).", syn.Offset)
		case errors.As(err, &typ) && typ.Field != "":
			return formatError("The JSON value of '%s' has the wrong type (%s).", truncate(typ.Field, 64), typ.Value)
		default:
			return formatError("The request body is not valid JSON.")
		}
	}
	return nil
}

// parseTimeout reads an optional whole number of seconds within [min, max].
// Absent or null gives def. Anything else that is not a JSON number with
// an integral value in range (e.g. 4, 301, -1, 1.5, "30", true) is 400004
// with msg. Integral values written as 30.0 or 3e1 are accepted, as a
// .NET int binding would.
func parseTimeout(raw json.RawMessage, def, min, max int, msg string) (int, *engine.Error) {
	if isNull(raw) {
		return def, nil
	}
	bad := func() (int, *engine.Error) { return 0, engine.NewError(engine.CodeArgumentInvalid, "%s", msg) }
	if c := raw[0]; c != '-' && (c < '0' || c > '9') {
		return bad()
	}
	s := string(raw)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < int64(min) || n > int64(max) {
			return bad()
		}
		return int(n), nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || f != math.Trunc(f) || f < float64(min) || f > float64(max) {
		return bad()
	}
	return int(f), nil
}

// parseMethodRequest validates a method invocation body and returns the
// engine call. Errors are *engine.Error with a 4xx status:
//   - not JSON, not an object, methodName not a string: 400006
//     IotHubFormatError (see formatError);
//   - methodName missing or not a valid name, timeouts out of range:
//     400004 ArgumentInvalid;
//   - payload larger than engine.MaxPayload: 413001 MessageTooLarge.
//
// The payload is forwarded as the exact bytes the client wrote, JSON null
// included (the device receives the four bytes "null"); an absent payload
// member gives a nil Payload, and the device receives an empty body.
//
// Why null is not "no payload": the official SDKs' end-to-end tests send
// payload null to the real service and expect the device to receive JSON
// null (the Node device SDK JSON.parses every non-empty body and answers
// 400 to an empty one), while the portal and the az CLI omit the member and
// devices then receive an empty body, which the C SDK (azure-iot-sdk-c PR
// #2097) and the Python SDK (azure-iot-sdk-python #761) had to accept.
// See docs/hub-fidelity.md.
func parseMethodRequest(body []byte) (engine.MethodCall, *engine.Error) {
	var req methodRequestWire
	if herr := decodeObject(body, &req); herr != nil {
		return engine.MethodCall{}, herr
	}
	if isNull(req.MethodName) {
		return engine.MethodCall{}, engine.NewError(engine.CodeArgumentInvalid, "methodName is required.")
	}
	var name string
	if err := json.Unmarshal(req.MethodName, &name); err != nil {
		return engine.MethodCall{}, formatError("methodName must be a JSON string.")
	}
	if !engine.ValidMethodName(name) {
		return engine.MethodCall{}, engine.NewError(engine.CodeArgumentInvalid,
			"methodName %s is invalid: it must be 1 to %d US-ASCII printable characters without spaces or any of $ ( ) < > @ , ; : \\ \" / [ ] ? = { } + #.",
			strconv.QuoteToASCII(truncate(name, 128)), engine.MaxMethodNameLength)
	}
	rt, herr := parseTimeout(req.ResponseTimeout, defaultResponseTimeout, minResponseTimeout, maxResponseTimeout, msgResponseTimeout)
	if herr != nil {
		return engine.MethodCall{}, herr
	}
	ct, herr := parseTimeout(req.ConnectTimeout, defaultConnectTimeout, 0, maxConnectTimeout, msgConnectTimeout)
	if herr != nil {
		return engine.MethodCall{}, herr
	}
	var payload []byte
	if len(req.Payload) > 0 {
		// [inf] The documented limit is 128 KB; the HTTP status for going
		// over it is not documented, so we answer 413 MessageTooLarge,
		// the code IoT Hub uses for oversized messages elsewhere. The size
		// counted is that of the payload's JSON text as sent.
		if len(req.Payload) > engine.MaxPayload {
			return engine.MethodCall{}, engine.NewError(engine.CodeMessageTooLarge,
				"The method payload is %d bytes; the maximum is %d bytes.", len(req.Payload), engine.MaxPayload)
		}
		payload = append([]byte(nil), req.Payload...)
	}
	return engine.MethodCall{
		Name:            name,
		Payload:         payload,
		ResponseTimeout: time.Duration(rt) * time.Second,
		ConnectTimeout:  time.Duration(ct) * time.Second,
	}, nil
}

// methodResponseBody builds the success body {"status":…,"payload":…},
// splicing the device's body in verbatim (an empty body becomes null).
func methodResponseBody(res engine.MethodResult) ([]byte, *engine.Error) {
	p := trimBody(res.Payload)
	if len(p) > engine.MaxPayload {
		// [inf] as for request payloads: the limit applies to responses
		// too, the status is undocumented.
		return nil, engine.NewError(engine.CodeMessageTooLarge,
			"The device's method response payload is %d bytes; the maximum is %d bytes.", len(p), engine.MaxPayload)
	}
	if len(p) == 0 {
		p = []byte("null")
	} else if !jsonvalid.Valid(p) {
		// The device broke the protocol, not the caller: 502 Bad Gateway
		// with InvalidResponseWhileProxying, the name IoT Hub gives this
		// failure (azure-iot-sdk-c PR #6; the name follows
		// GenericBadGateway 502000 in the service's error-code list, so its
		// number is 502001 [inf]). The official Node service client turns a
		// 502 into BadDeviceResponseError, "a device sends a bad response to
		// a device method call". Hubs have also been seen splicing the bytes
		// in unchecked, producing a 200 whose body is not JSON; a caller
		// cannot use that, so we do not copy it. See docs/hub-fidelity.md.
		return nil, engine.NewError(engine.CodeInvalidResponseWhileProxying,
			"The device's method response payload is not valid JSON.")
	}
	b := make([]byte, 0, len(p)+40)
	b = append(b, `{"status":`...)
	b = strconv.AppendInt(b, int64(res.Status), 10)
	b = append(b, `,"payload":`...)
	b = append(b, p...)
	b = append(b, '}')
	return b, nil
}

// invoke serves POST /twins/{id}/methods and
// POST /twins/{id}/modules/{mid}/methods.
//
// Content-Type is not checked: SDKs send "application/json;
// charset=utf-8", the docs plain "application/json", and no source shows
// the hub refusing a body for its media type, so the emulator is not
// stricter than the hub [inf]. User-Agent and Request-Id are optional.
func (h *handler) invoke(w http.ResponseWriter, r *http.Request, rt route) {
	body, herr := readBody(w, r, maxMethodBody)
	if herr != nil {
		writeMethodError(w, herr)
		return
	}
	call, herr := parseMethodRequest(body)
	if herr != nil {
		writeMethodError(w, herr)
		return
	}
	id := auth.Identity{HostName: h.e.HostName(), DeviceID: rt.deviceID, ModuleID: rt.moduleID}
	res, herr := h.e.Invoke(r.Context(), id, call)
	if herr != nil {
		writeMethodError(w, herr)
		return
	}
	out, herr := methodResponseBody(res)
	if herr != nil {
		writeMethodError(w, herr)
		return
	}
	writeJSON(w, out, "")
}
