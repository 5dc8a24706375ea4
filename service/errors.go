package service

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// ErrorCode is the name of an IoT Hub error code, as the hub sends it in
// the iothub-errorcode response header (e.g. "DeviceNotOnline"). The
// numeric form (e.g. 404103) is in [ResponseError.Code].
type ErrorCode string

// IoT Hub error codes the service API answers with. The number in each
// comment is the code's numeric form.
const (
	ErrorCodeInvalidProtocolVersion           ErrorCode = "InvalidProtocolVersion"           // 400001
	ErrorCodeInvalidOperation                 ErrorCode = "InvalidOperation"                 // 400003
	ErrorCodeArgumentInvalid                  ErrorCode = "ArgumentInvalid"                  // 400004
	ErrorCodeArgumentNull                     ErrorCode = "ArgumentNull"                     // 400005
	ErrorCodeIotHubFormatError                ErrorCode = "IotHubFormatError"                // 400006
	ErrorCodeInvalidDeviceScope               ErrorCode = "InvalidDeviceScope"               // 400028
	ErrorCodeIotHubUnauthorizedAccess         ErrorCode = "IotHubUnauthorizedAccess"         // 401002
	ErrorCodeIotHubUnauthorized               ErrorCode = "IotHubUnauthorized"               // 401003
	ErrorCodeIotHubQuotaExceeded              ErrorCode = "IotHubQuotaExceeded"              // 403002
	ErrorCodeDeviceMaximumQueueDepthExceeded  ErrorCode = "DeviceMaximumQueueDepthExceeded"  // 403004
	ErrorCodeDeviceModelMaxPropertiesExceeded ErrorCode = "DeviceModelMaxPropertiesExceeded" // 403100
	ErrorCodeDeviceNotFound                   ErrorCode = "DeviceNotFound"                   // 404001
	ErrorCodeJobNotFound                      ErrorCode = "JobNotFound"                      // 404002
	ErrorCodeModuleNotFound                   ErrorCode = "ModuleNotFound"                   // 404010
	ErrorCodeDeviceNotOnline                  ErrorCode = "DeviceNotOnline"                  // 404103
	ErrorCodeDeviceAlreadyExists              ErrorCode = "DeviceAlreadyExists"              // 409001
	ErrorCodeModuleAlreadyExistsOnDevice      ErrorCode = "ModuleAlreadyExistsOnDevice"      // 409301
	ErrorCodePreconditionFailed               ErrorCode = "PreconditionFailed"               // 412001
	ErrorCodeDeviceMessageLockLost            ErrorCode = "DeviceMessageLockLost"            // 412002
	ErrorCodeMessageTooLarge                  ErrorCode = "MessageTooLarge"                  // 413001
	ErrorCodeThrottlingException              ErrorCode = "ThrottlingException"              // 429001
	ErrorCodeThrottleBacklogLimitExceeded     ErrorCode = "ThrottleBacklogLimitExceeded"     // 429002
	ErrorCodeThrottlingBacklogTimeout         ErrorCode = "ThrottlingBacklogTimeout"         // 429003
	// 429004: a new job while as many jobs are active as the hub's tier
	// allows (1 on Free and S1, 5 on S2, 10 on S3).
	ErrorCodeThrottlingMaxActiveJobCountExceeded ErrorCode = "ThrottlingMaxActiveJobCountExceeded" // 429004
	ErrorCodeServerError                         ErrorCode = "ServerError"                         // 500001
	ErrorCodeInvalidResponseWhileProxying        ErrorCode = "InvalidResponseWhileProxying"        // 502001
	ErrorCodeServiceUnavailable                  ErrorCode = "ServiceUnavailable"                  // 503001
	ErrorCodeGatewayTimeout                      ErrorCode = "GatewayTimeout"                      // 504101
)

// codeNames maps numeric codes to their names.
var codeNames = map[int]ErrorCode{
	400001: ErrorCodeInvalidProtocolVersion,
	400003: ErrorCodeInvalidOperation,
	400004: ErrorCodeArgumentInvalid,
	400005: ErrorCodeArgumentNull,
	400006: ErrorCodeIotHubFormatError,
	400028: ErrorCodeInvalidDeviceScope,
	401002: ErrorCodeIotHubUnauthorizedAccess,
	401003: ErrorCodeIotHubUnauthorized,
	403002: ErrorCodeIotHubQuotaExceeded,
	403004: ErrorCodeDeviceMaximumQueueDepthExceeded,
	403100: ErrorCodeDeviceModelMaxPropertiesExceeded,
	404001: ErrorCodeDeviceNotFound,
	404002: ErrorCodeJobNotFound,
	404010: ErrorCodeModuleNotFound,
	404103: ErrorCodeDeviceNotOnline,
	409001: ErrorCodeDeviceAlreadyExists,
	409301: ErrorCodeModuleAlreadyExistsOnDevice,
	412001: ErrorCodePreconditionFailed,
	412002: ErrorCodeDeviceMessageLockLost,
	413001: ErrorCodeMessageTooLarge,
	429001: ErrorCodeThrottlingException,
	429002: ErrorCodeThrottleBacklogLimitExceeded,
	429003: ErrorCodeThrottlingBacklogTimeout,
	429004: ErrorCodeThrottlingMaxActiveJobCountExceeded,
	500001: ErrorCodeServerError,
	502001: ErrorCodeInvalidResponseWhileProxying,
	503001: ErrorCodeServiceUnavailable,
	504101: ErrorCodeGatewayTimeout,
}

// codeNumbers is the inverse of codeNames.
var codeNumbers = func() map[ErrorCode]int {
	m := make(map[ErrorCode]int, len(codeNames))
	for n, c := range codeNames {
		m[c] = n
	}
	return m
}()

// sentinel is the type of the ErrXxx values. A *ResponseError matches a
// sentinel in errors.Is when its code is one of codes, or its status is
// class (any code of that HTTP status), or it carries no code at all and its
// status is fallback.
type sentinel struct {
	msg      string
	codes    []int
	class    int
	fallback int
}

func (s *sentinel) Error() string { return s.msg }

func (s *sentinel) match(e *ResponseError) bool {
	code := e.code()
	if s.class != 0 && (e.StatusCode == s.class || code/1000 == s.class) {
		return true
	}
	for _, c := range s.codes {
		if code == c {
			return true
		}
	}
	return code == 0 && s.fallback != 0 && e.StatusCode == s.fallback
}

// Sentinel errors, matched with errors.Is against the errors the client
// returns. A [*ResponseError] matches by its error code, so
// errors.Is(err, ErrDeviceNotOnline) holds for any error chain holding a
// 404103 DeviceNotOnline answer. Their messages are not part of the API.
var (
	// ErrDeviceNotOnline: 404103, the device is not connected or has not
	// subscribed to direct methods (within the call's ConnectTimeout).
	// It is not retried automatically: set CloudToDeviceMethod.ConnectTimeout
	// to let the hub wait for the device.
	ErrDeviceNotOnline error = &sentinel{msg: "iothub: device not online", codes: []int{404103}}
	// ErrDeviceNotFound: 404001, no such device in the registry (or it is
	// disabled).
	ErrDeviceNotFound error = &sentinel{msg: "iothub: device not found", codes: []int{404001}}
	// ErrJobNotFound: 404002, no job with that id.
	ErrJobNotFound error = &sentinel{msg: "iothub: job not found", codes: []int{404002}}
	// ErrModuleNotFound: 404010, no such module on the device.
	ErrModuleNotFound error = &sentinel{msg: "iothub: module not found", codes: []int{404010}}
	// ErrGatewayTimeout: 504101, the device did not answer within the
	// call's ResponseTimeout (also any 504 without an IoT Hub code). The
	// method may have run on the device.
	ErrGatewayTimeout error = &sentinel{msg: "iothub: gateway timeout", codes: []int{504101}, fallback: http.StatusGatewayTimeout}
	// ErrThrottled: any 429 (429001 ThrottlingException, 429002, 429003, …).
	ErrThrottled error = &sentinel{msg: "iothub: throttled", class: http.StatusTooManyRequests}
	// ErrUnauthorized: any 401 (401002 IotHubUnauthorizedAccess, …): a
	// missing, invalid or expired token, or a policy without the right
	// permission.
	ErrUnauthorized error = &sentinel{msg: "iothub: unauthorized", class: http.StatusUnauthorized}
	// ErrArgumentInvalid: the request's arguments are invalid. It matches
	// the hub's 400004 ArgumentInvalid, 400005 ArgumentNull, 400006
	// IotHubFormatError (the hub uses it for bodies it cannot parse) and
	// 400028 InvalidDeviceScope (a device scope or parent that breaks the
	// IoT Edge hierarchy rules); in every case the request must be fixed,
	// not retried. It also matches a 400 without an IoT Hub code, and the
	// client's own validation errors, which are returned before anything is
	// sent.
	ErrArgumentInvalid error = &sentinel{msg: "iothub: invalid argument", codes: []int{400004, 400005, 400006, 400028}, fallback: http.StatusBadRequest}
	// ErrBadDeviceResponse: any 502, such as 502001
	// InvalidResponseWhileProxying: the device answered a direct method with
	// a payload that is not JSON. The method ran on the device.
	ErrBadDeviceResponse error = &sentinel{msg: "iothub: bad device response", class: http.StatusBadGateway}
	// ErrMessageTooLarge: 413001, a method payload over 128 KB or a
	// cloud-to-device message over 64 KB (both also reported by the client
	// before sending), or any 413.
	ErrMessageTooLarge error = &sentinel{msg: "iothub: message too large", codes: []int{413001}, fallback: http.StatusRequestEntityTooLarge}
	// ErrTwinTooLarge: 403100 DeviceModelMaxPropertiesExceeded, a twin
	// update that would make the tags larger than 8 KB or the desired
	// properties larger than 32 KB (as IoT Hub counts them: the lengths of
	// keys and values). Remove properties, not retry.
	ErrTwinTooLarge error = &sentinel{msg: "iothub: twin too large", codes: []int{403100}}
	// ErrPreconditionFailed: 412001, the etag given does not match the
	// identity's current etag.
	ErrPreconditionFailed error = &sentinel{msg: "iothub: precondition failed", codes: []int{412001}, fallback: http.StatusPreconditionFailed}
	// ErrDeviceAlreadyExists: 409001, a device with that id exists.
	ErrDeviceAlreadyExists error = &sentinel{msg: "iothub: device already exists", codes: []int{409001}}
	// ErrModuleAlreadyExists: 409301 ModuleAlreadyExistsOnDevice.
	ErrModuleAlreadyExists error = &sentinel{msg: "iothub: module already exists", codes: []int{409301}}
	// ErrDeviceQueueFull: 403004 DeviceMaximumQueueDepthExceeded, a
	// cloud-to-device message to a device whose queue already holds 50
	// messages (IoT Hub's limit). Wait for the device to take some, or
	// purge the queue (PurgeMessageQueue).
	ErrDeviceQueueFull error = &sentinel{msg: "iothub: device queue full", codes: []int{403004}}
	// ErrLockLost: 412002 DeviceMessageLockLost, or a feedback batch
	// settled after its connection ended: the hub no longer holds it for
	// this receiver and delivers it again.
	ErrLockLost error = &sentinel{msg: "iothub: message lock lost", codes: []int{412002}}
	// ErrServiceUnavailable: any 503 (503001 ServiceUnavailable).
	ErrServiceUnavailable error = &sentinel{msg: "iothub: service unavailable", class: http.StatusServiceUnavailable}
)

// ResponseError is returned when IoT Hub answers a request with an error
// status. Use errors.As to reach it, and errors.Is with the ErrXxx sentinels
// to test for a code. StatusCode, ErrorCode and Code are part of the API;
// the text of Error and Message is not.
//
// Error never includes the request's Authorization header or any token.
//
// The hub's refusals over AMQP (Send, the CBS token) are ResponseErrors
// too: the code comes from the error's description, else from its AMQP
// condition (amqp:not-found is 404001, amqp:resource-limit-exceeded
// 403004, amqp:link:message-size-exceeded 413001, …); StatusCode is the
// code's HTTP status (the code divided by 1000), Condition holds the AMQP
// condition and RawResponse is nil.
type ResponseError struct {
	// StatusCode is the HTTP status of the answer.
	StatusCode int
	// Condition is the AMQP error condition (e.g. "amqp:not-found") of a
	// refusal over AMQP; "" for HTTPS answers.
	Condition string
	// ErrorCode is the name of the IoT Hub error code, from the
	// iothub-errorcode header, else from the body; "" when the answer
	// carries none.
	ErrorCode ErrorCode
	// Code is the numeric IoT Hub error code (e.g. 404103); 0 when unknown.
	Code int
	// Message is the hub's explanation.
	Message string
	// TrackingID identifies the request to Azure support; "" when the hub
	// sent none.
	TrackingID string
	// RawResponse is the HTTP response; its body has been read and is
	// available again from RawResponse.Body.
	RawResponse *http.Response

	az error // the *azcore.ResponseError
}

// code is the numeric code, from Code or else from the name.
func (e *ResponseError) code() int {
	if e.Code != 0 {
		return e.Code
	}
	return codeNumbers[e.ErrorCode]
}

// Error returns "iothub: CODE NAME: message", e.g.
// "iothub: 404103 DeviceNotOnline: The operation failed because …".
func (e *ResponseError) Error() string {
	var b strings.Builder
	b.WriteString("iothub: ")
	switch {
	case e.Code != 0 && e.ErrorCode != "":
		b.WriteString(strconv.Itoa(e.Code))
		b.WriteByte(' ')
		b.WriteString(string(e.ErrorCode))
	case e.Code != 0:
		b.WriteString(strconv.Itoa(e.Code))
	case e.ErrorCode != "":
		b.WriteString(string(e.ErrorCode))
	default:
		b.WriteString("HTTP ")
		b.WriteString(strconv.Itoa(e.StatusCode))
		if t := http.StatusText(e.StatusCode); t != "" {
			b.WriteByte(' ')
			b.WriteString(t)
		}
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	return b.String()
}

// Is reports whether target is one of the ErrXxx sentinels and this error's
// code matches it.
func (e *ResponseError) Is(target error) bool {
	s, ok := target.(*sentinel)
	return ok && s.match(e)
}

// Unwrap returns the *azcore.ResponseError for the same answer, so that
// code handling Azure errors generically also works.
func (e *ResponseError) Unwrap() error { return e.az }

// argumentError is a request the client refused to send.
type argumentError struct {
	msg   string
	also  error // another sentinel it matches, or nil
	cause error // an underlying error (e.g. from encoding/json), or nil
}

func (e *argumentError) Error() string { return e.msg }

func (e *argumentError) Is(target error) bool {
	return target == ErrArgumentInvalid || (e.also != nil && target == e.also)
}

func (e *argumentError) Unwrap() error { return e.cause }

func argErr(msg string) error { return &argumentError{msg: "iothub: " + msg} }

// maxMessageLen bounds Message: a hostile or broken server cannot make
// error strings unbounded.
const maxMessageLen = 4096

// errorInfo is what an error body says.
type errorInfo struct {
	code       int
	name       ErrorCode
	message    string
	trackingID string
}

// parseErrorBody reads the error body shapes IoT Hub has used (see
// protocol.md §5.3); it never fails, and returns what it could find:
//
//	A: {"Message":"{\"errorCode\":404103,\"trackingId\":\"…\",\"message\":\"…\",\"timestampUtc\":\"…\"}","ExceptionMessage":""}
//	B: {"Message":"ErrorCode:IotHubUnauthorizedAccess;Unauthorized","ExceptionMessage":"Tracking ID:…-G:4-TimeStamp:…"}
//	C: {"Message":{"errorCode":"404103","trackingId":"…","message":"…","timestampUtc":"…"},"ExceptionMessage":""}
//
// and the inner object on its own ({"errorCode":…,"message":…}). Other
// JSON objects with a string Message give that message; anything else gives
// the body's text as the message.
func parseErrorBody(body []byte) errorInfo {
	body = bytes.TrimSpace(bytes.TrimPrefix(bytes.TrimSpace(body), []byte("\xef\xbb\xbf")))
	if len(body) == 0 {
		return errorInfo{}
	}
	var outer struct {
		Message          json.RawMessage `json:"Message"`
		ExceptionMessage json.RawMessage `json:"ExceptionMessage"`
		ErrorCode        json.RawMessage `json:"errorCode"`
		TrackingID       json.RawMessage `json:"trackingId"`
	}
	if body[0] != '{' || json.Unmarshal(body, &outer) != nil {
		return errorInfo{message: clip(string(body))}
	}
	var info errorInfo
	switch {
	case len(outer.ErrorCode) > 0:
		// The inner object at the top level.
		info = parseInner(body)
	case isJSONString(outer.Message):
		var msg string
		_ = json.Unmarshal(outer.Message, &msg)
		inner := strings.TrimSpace(msg)
		if strings.HasPrefix(inner, "{") && json.Valid([]byte(inner)) {
			info = parseInner([]byte(inner)) // shape A
			if info.code == 0 && info.name == "" && info.message == "" {
				info.message = msg
			}
		} else if rest, ok := cutPrefixFold(msg, "ErrorCode:"); ok && validName(strings.TrimSpace(beforeSemicolon(rest))) {
			name, text, _ := strings.Cut(rest, ";") // shape B
			name = strings.TrimSpace(name)
			if n, err := strconv.Atoi(name); err == nil && n >= 100000 && n <= 999999 {
				info.code = n // a code without a name
			} else {
				info.name = ErrorCode(name)
			}
			info.message = strings.TrimSpace(text)
		} else {
			info.message = msg
		}
	case len(outer.Message) > 0 && outer.Message[0] == '{':
		info = parseInner(outer.Message) // shape C
	}
	if info.trackingID == "" {
		var s string
		if json.Unmarshal(outer.TrackingID, &s) == nil {
			info.trackingID = s
		}
	}
	if info.trackingID == "" {
		var em string
		if json.Unmarshal(outer.ExceptionMessage, &em) == nil {
			if _, id, ok := strings.Cut(em, "Tracking ID:"); ok {
				info.trackingID = strings.TrimSpace(id)
			}
		}
	}
	if info.code == 0 && info.name == "" && info.message == "" {
		// A JSON object we do not know: keep it as the message, so the
		// caller sees what the server said.
		info.message = string(body)
	}
	info.message = clip(info.message)
	info.trackingID = clip(info.trackingID)
	return info
}

// parseInner reads {"errorCode":…,"trackingId":…,"message":…}; errorCode
// may be a number, a numeric string or a name.
func parseInner(b []byte) errorInfo {
	var in struct {
		ErrorCode  json.RawMessage `json:"errorCode"`
		TrackingID json.RawMessage `json:"trackingId"`
		Message    json.RawMessage `json:"message"`
	}
	if json.Unmarshal(b, &in) != nil {
		return errorInfo{}
	}
	var info errorInfo
	var s string
	if json.Unmarshal(in.Message, &s) == nil {
		info.message = s
	}
	if json.Unmarshal(in.TrackingID, &s) == nil {
		info.trackingID = s
	}
	raw := strings.TrimSpace(string(in.ErrorCode))
	if json.Unmarshal(in.ErrorCode, &s) == nil {
		raw = strings.TrimSpace(s)
	}
	if n, err := strconv.Atoi(raw); err == nil {
		if n >= 100000 && n <= 999999 {
			info.code = n
		}
	} else if raw != "" && raw != "null" && validName(raw) {
		info.name = ErrorCode(raw)
	}
	return info
}

func beforeSemicolon(s string) string {
	before, _, _ := strings.Cut(s, ";")
	return before
}

func isJSONString(raw json.RawMessage) bool { return len(raw) > 0 && raw[0] == '"' }

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// validName accepts what can be an error code name: letters and digits,
// up to 64 of them.
func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func clip(s string) string {
	if len(s) <= maxMessageLen {
		return s
	}
	return strings.ToValidUTF8(s[:maxMessageLen], "") + "…"
}

// newResponseError builds the error for a non-success answer. The code is
// taken from the iothub-errorcode header first, then from the body: when
// both name a code and they disagree, the header's name wins and the body's
// number is kept only if it is the header's code.
func newResponseError(resp *http.Response) error {
	body, err := runtime.Payload(resp)
	if err != nil {
		body = nil
	}
	info := parseErrorBody(body)
	e := &ResponseError{
		StatusCode:  resp.StatusCode,
		Message:     info.message,
		TrackingID:  info.trackingID,
		RawResponse: resp,
	}
	header := strings.TrimSpace(resp.Header.Get("iothub-errorcode"))
	if header != "" && !validName(header) {
		header = ""
	}
	switch {
	case header != "":
		e.ErrorCode = ErrorCode(header)
		known, isKnown := codeNumbers[e.ErrorCode]
		switch {
		case info.code != 0 && (codeNames[info.code] == e.ErrorCode || (!isKnown && codeNames[info.code] == "")):
			e.Code = info.code
		case isKnown:
			e.Code = known
		}
	case info.code != 0:
		e.Code = info.code
		e.ErrorCode = codeNames[info.code]
	case info.name != "":
		e.ErrorCode = info.name
		e.Code = codeNumbers[info.name]
	}
	e.az = runtime.NewResponseErrorWithErrorCode(resp, string(e.ErrorCode))
	return e
}
