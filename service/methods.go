package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"

	"github.com/iothub-go/iothub/internal/jsonvalid"
)

// MaxPayloadSize is the largest method payload IoT Hub accepts: 128 KB of
// JSON text, for requests and responses alike.
const MaxPayloadSize = 128 * 1024

// Method timeout rules of IoT Hub, and the margin the client adds for the
// HTTP exchange itself.
const (
	defaultResponseTimeout = 30 * time.Second
	minResponseTimeout     = 5 * time.Second
	maxResponseTimeout     = 300 * time.Second
	maxConnectTimeout      = 300 * time.Second
	deadlineMargin         = 15 * time.Second
)

// CloudToDeviceMethod is one direct method call: the method's name, its
// payload and how long the hub waits.
//
// The client gives up waiting for the hub after ConnectTimeout +
// ResponseTimeout + 15 s (the hub itself answers 404103 or 504101 before
// that), or when the caller's context ends, whichever comes first.
type CloudToDeviceMethod struct {
	// MethodName is the name the device's handler is registered under:
	// 1 to 100 characters of printable US-ASCII without spaces or any of
	// $ ( ) < > @ , ; : \ " / [ ] ? = { } + # (an RFC 7230 token without
	// '$', '+' and '#').
	// Names are case-sensitive. Required.
	MethodName string
	// Payload is the request payload, encoded with encoding/json (so a
	// []byte becomes a base64 string); a json.RawMessage is checked and
	// sent verbatim. nil (and an empty json.RawMessage) sends
	// "payload":null, as .NET's CloudToDeviceMethod does when no payload is
	// set, and the device receives the four bytes null. Its JSON text may
	// be at most MaxPayloadSize bytes.
	Payload any
	// ResponseTimeout is how long the hub waits for the device's answer
	// before failing with 504101 GatewayTimeout. Zero means 30 s; otherwise
	// it must be a whole number of seconds from 5 s to 300 s.
	ResponseTimeout time.Duration
	// ConnectTimeout is how long the hub waits for an offline device to
	// connect and subscribe before failing with 404103 DeviceNotOnline.
	// Zero means not at all (the device must be online); otherwise it must
	// be a whole number of seconds up to 300 s.
	ConnectTimeout time.Duration
}

// MethodResult is the device's answer to a direct method. A device that
// answers with a 4xx or 5xx status still produces a MethodResult, not an
// error: the status is the device's, not the hub's.
type MethodResult struct {
	// Status is the status code the device's handler returned.
	Status int
	// Payload is the device's JSON payload, exactly as the hub relayed it;
	// "null" when the device sent none.
	Payload json.RawMessage
}

// InvokeDeviceMethod invokes a direct method on a device and returns the
// device's answer. It returns an error when the hub or the network fails:
// a *ResponseError (errors.Is with ErrDeviceNotOnline, ErrDeviceNotFound,
// ErrGatewayTimeout, ErrThrottled, ErrUnauthorized, …), an error matching
// ErrArgumentInvalid when m or deviceID is invalid (nothing is sent then),
// or ctx.Err() as is when ctx ends first.
//
// A method call is not idempotent, so only failures that prove the call
// was not dispatched are retried (see ClientOptions).
func (c *Client) InvokeDeviceMethod(ctx context.Context, deviceID string, m CloudToDeviceMethod) (*MethodResult, error) {
	var err error
	ctx, end := c.startSpan(ctx, "Client.InvokeDeviceMethod")
	defer func() { end(err) }()
	if err = checkID("device", deviceID); err != nil {
		return nil, err
	}
	res, err := c.invoke(ctx, deviceMethodsPath(deviceID), m)
	return res, err
}

func deviceMethodsPath(deviceID string) string { return "/twins/" + pathSegment(deviceID) + "/methods" }

// InvokeModuleMethod invokes a direct method on a module of a device, like
// InvokeDeviceMethod. A missing module fails with ErrModuleNotFound.
func (c *Client) InvokeModuleMethod(ctx context.Context, deviceID, moduleID string, m CloudToDeviceMethod) (*MethodResult, error) {
	var err error
	ctx, end := c.startSpan(ctx, "Client.InvokeModuleMethod")
	defer func() { end(err) }()
	if err = checkID("device", deviceID); err != nil {
		return nil, err
	}
	if err = checkID("module", moduleID); err != nil {
		return nil, err
	}
	res, err := c.invoke(ctx, "/twins/"+pathSegment(deviceID)+"/modules/"+pathSegment(moduleID)+"/methods", m)
	return res, err
}

func (c *Client) invoke(ctx context.Context, path string, m CloudToDeviceMethod) (*MethodResult, error) {
	body, timeout, err := m.encode()
	if err != nil {
		return nil, err
	}
	return c.send(ctx, path, body, timeout)
}

// send posts an encoded method call and waits at most timeout for the
// answer.
func (c *Client) send(ctx context.Context, path string, body []byte, timeout time.Duration) (*MethodResult, error) {
	return c.sendRetry(ctx, path, body, timeout, c.invokeRetry)
}

// sendRetry is send with the given retry options (InvokeDeviceMethods
// handles 429 itself).
func (c *Client) sendRetry(ctx context.Context, path string, body []byte, timeout time.Duration, retry policy.RetryOptions) (*MethodResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	callCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := c.newRequest(policy.WithRetryOptions(withBodyLimit(callCtx, maxResultBody), retry), http.MethodPost, path, "")
	if err != nil {
		return nil, err
	}
	if err := req.SetBody(memBody{bytes.NewReader(body)}, "application/json; charset=utf-8"); err != nil {
		return nil, fmt.Errorf("iothub: building request: %w", err)
	}
	resp, err := c.pl.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		if gerr := guarded(err); gerr != nil {
			return nil, gerr
		}
		if errors.Is(callCtx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("iothub: no answer from the hub within %v (the method's timeouts plus %v): %w", timeout, deadlineMargin, context.DeadlineExceeded)
		}
		return nil, wrapTransport(err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, newResponseError(resp)
	}
	return decodeResult(resp)
}

// decodeResult decodes a method result; a body that is not one fails with
// ErrMalformedResponse, and never quotes the body (the device's payload).
func decodeResult(resp *http.Response) (*MethodResult, error) {
	b, err := runtime.Payload(resp)
	if err != nil {
		return nil, readError(err)
	}
	if res, ok := quickResult(b); ok {
		return res, nil
	}
	var wire struct {
		Status  *int            `json:"status"`
		Payload json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(b, &wire); err != nil || wire.Status == nil {
		return nil, fmt.Errorf("%w: not a method result (%d bytes)", ErrMalformedResponse, len(b))
	}
	if len(wire.Payload) == 0 {
		wire.Payload = json.RawMessage("null")
	}
	return &MethodResult{Status: *wire.Status, Payload: wire.Payload}, nil
}

// quickResult decodes a method result written the way the hub writes it,
// {"status":<integer>,"payload":<one JSON value>}, without reflection:
// json.Unmarshal was a fifth of the client's own CPU per call. It reports
// false for anything else, which decodeResult leaves to json.Unmarshal;
// where it reports true, json.Unmarshal gives the same result
// (FuzzDecodeResult checks both). The payload shares b's array.
func quickResult(b []byte) (*MethodResult, bool) {
	rest, ok := bytes.CutPrefix(b, []byte(`{"status":`))
	if !ok {
		return nil, false
	}
	neg := len(rest) > 0 && rest[0] == '-'
	if neg {
		rest = rest[1:]
	}
	n, status := 0, 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		status = status*10 + int(rest[n]-'0')
		n++
	}
	// One to nine digits (no overflow), and no leading zero: JSON's.
	if n == 0 || n > 9 || (n > 1 && rest[0] == '0') {
		return nil, false
	}
	if neg {
		status = -status
	}
	rest, ok = bytes.CutPrefix(rest[n:], []byte(`,"payload":`))
	if !ok {
		return nil, false
	}
	rest = bytes.TrimRight(rest, jsonSpace)
	if len(rest) == 0 || rest[len(rest)-1] != '}' {
		return nil, false
	}
	p := bytes.Trim(rest[:len(rest)-1], jsonSpace)
	if len(p) == 0 || !jsonvalid.Valid(p) { // one value, or the members went on
		return nil, false
	}
	return &MethodResult{Status: status, Payload: p[:len(p):len(p)]}, true
}

// jsonSpace is JSON's insignificant whitespace.
const jsonSpace = " \t\r\n"

// encode validates m and returns the request body and the client-side
// deadline of the call.
func (m CloudToDeviceMethod) encode() ([]byte, time.Duration, error) {
	if err := checkMethodName(m.MethodName); err != nil {
		return nil, 0, err
	}
	rt := m.ResponseTimeout
	if rt == 0 {
		rt = defaultResponseTimeout
	}
	if rt < minResponseTimeout || rt > maxResponseTimeout || rt%time.Second != 0 {
		return nil, 0, argErr(fmt.Sprintf("ResponseTimeout %v is invalid: want a whole number of seconds from 5s to 5m0s (0 means 30s)", m.ResponseTimeout))
	}
	ct := m.ConnectTimeout
	if ct < 0 || ct > maxConnectTimeout || ct%time.Second != 0 {
		return nil, 0, argErr(fmt.Sprintf("ConnectTimeout %v is invalid: want a whole number of seconds from 0s to 5m0s", m.ConnectTimeout))
	}
	payload, err := encodePayload(m.Payload)
	if err != nil {
		return nil, 0, err
	}
	b := make([]byte, 0, len(payload)+len(m.MethodName)+96)
	b = append(b, `{"methodName":"`...)
	b = append(b, m.MethodName...) // a token: nothing to escape
	b = append(b, `","responseTimeoutInSeconds":`...)
	b = strconv.AppendInt(b, int64(rt/time.Second), 10)
	b = append(b, `,"connectTimeoutInSeconds":`...)
	b = strconv.AppendInt(b, int64(ct/time.Second), 10)
	b = append(b, `,"payload":`...)
	b = append(b, payload...)
	b = append(b, '}')
	return b, ct + rt + deadlineMargin, nil
}

// maxMethodNameLength is the longest method name the client sends: IoT
// Hub documents none, EdgeHub refuses more than 100 characters, and so
// does the local hub.
const maxMethodNameLength = 100

// checkMethodName accepts 1 to 100 characters of an RFC 7230 token without
// '$' (protocol.md §8), '+' or '#' (MQTT wildcards: the name travels in a
// topic).
func checkMethodName(name string) error {
	if name == "" {
		return argErr("MethodName is empty")
	}
	if len(name) > maxMethodNameLength {
		return argErr(fmt.Sprintf("MethodName is %d characters long; the most is %d", len(name), maxMethodNameLength))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		bad := c <= ' ' || c >= 0x7f
		switch c {
		case '$', '(', ')', '<', '>', '@', ',', ';', ':', '\\', '"', '/', '[', ']', '?', '=', '{', '}', '+', '#':
			bad = true
		}
		if bad {
			return argErr(fmt.Sprintf("MethodName %s is invalid at byte %d: use printable US-ASCII without spaces or any of $ ( ) < > @ , ; : \\ \" / [ ] ? = { } + #",
				strconv.QuoteToASCII(clipID(name)), i+1))
		}
	}
	return nil
}

// encodePayload returns the JSON text of a payload.
func encodePayload(v any) ([]byte, error) {
	var out []byte
	switch p := v.(type) {
	case nil:
		return []byte("null"), nil
	case json.RawMessage:
		if len(p) == 0 {
			return []byte("null"), nil
		}
		if !jsonvalid.Valid(p) {
			return nil, argErr("Payload is a json.RawMessage that is not valid JSON")
		}
		out = p
	default:
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			return nil, &argumentError{msg: "iothub: Payload cannot be encoded as JSON: " + err.Error(), cause: err}
		}
		out = bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	}
	if len(out) > MaxPayloadSize {
		return nil, &argumentError{
			msg:  fmt.Sprintf("iothub: Payload is %d bytes of JSON; IoT Hub accepts at most %d (128 KB)", len(out), MaxPayloadSize),
			also: ErrMessageTooLarge,
		}
	}
	return out, nil
}

// dispatchSafeRetry derives the retry options of non-idempotent requests
// (method invocations, registry writes) from the caller's: the same counts
// and delays and, unless the caller supplied ShouldRetry, a classification
// that retries only what provably was not dispatched.
func dispatchSafeRetry(o policy.RetryOptions) policy.RetryOptions {
	if o.ShouldRetry == nil {
		codes := o.StatusCodes
		o.ShouldRetry = func(resp *http.Response, err error) bool {
			if err != nil {
				return notDispatched(err)
			}
			switch resp.StatusCode {
			case http.StatusTooManyRequests, http.StatusServiceUnavailable:
				// The hub throttles or refuses before it dispatches.
				return codes == nil || slices.Contains(codes, resp.StatusCode)
			}
			return false
		}
	}
	return o
}

// notDispatched reports whether a transport error happened before the
// request could be written: the connection was never established
// (refused, unreachable, DNS). Errors on an established connection may
// come after the hub received the call and are not retried. (net/http
// itself resends a request on a reused connection that closed before
// anything was written.)
func notDispatched(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
