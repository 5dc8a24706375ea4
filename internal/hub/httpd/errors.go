package httpd

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

// contentTypeJSON is what IoT Hub sends on every JSON answer, success or
// error.
const contentTypeJSON = "application/json; charset=utf-8"

// headerErrorCode carries the error code's name (e.g. "DeviceNotOnline");
// the .NET SDK only trusts a body's errorCode when it agrees with it.
const headerErrorCode = "iothub-errorcode"

// Error bodies. IoT Hub's service API answers errors in two shapes,
// both with the iothub-errorcode header naming the code
// (docs/hub-fidelity.md has the observed bodies and their sources):
//
//   - registry shape, for the registry (devices, modules, bulk,
//     statistics), for authorization and api-version failures, and for the
//     device-facing HTTPS endpoints:
//     {"Message":"ErrorCode:DeviceNotFound;<text>","ExceptionMessage":"Tracking ID:<32 hex>-G:0-TimeStamp:MM/dd/yyyy HH:mm:ss"}
//     The official Node service client reads the code and the text from
//     Message (it splits on ';' and then ':'), and only then turns a 404
//     into DeviceNotFoundError. The text therefore holds no ';'.
//   - method shape, for direct method invocations, whose Message is the
//     JSON text of {errorCode (a number), trackingId, message,
//     timestampUtc}, with ExceptionMessage "". Java and .NET read the
//     number from it.

// errorPayload is the inner object of a method-shape error body, in IoT
// Hub's field order.
type errorPayload struct {
	ErrorCode    int    `json:"errorCode"`
	TrackingID   string `json:"trackingId"`
	Message      string `json:"message"`
	TimestampUTC string `json:"timestampUtc"`
}

// errorBody is the outer object of both error shapes.
type errorBody struct {
	Message          string `json:"Message"`
	ExceptionMessage string `json:"ExceptionMessage"`
}

// marshal encodes v without escaping <, > and & (as .NET's serialisers
// do) and without a trailing newline.
func marshal(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only the package's own plain types are encoded here.
		panic("httpd: cannot encode JSON: " + err.Error())
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// trackingID returns an id in IoT Hub's form:
// 32 lower-case hex digits, "-G:0-TimeStamp:" and the time as
// MM/DD/YYYY HH:MM:SS (UTC).
func trackingID(now time.Time) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:]) + "-G:0-TimeStamp:" + now.UTC().Format("01/02/2006 15:04:05")
}

// codeName is the name a body and header give herr's code: its IoT Hub
// name, or the number for a code without one (an injected fault).
func codeName(herr *engine.Error) string {
	if herr.Name != "" {
		return herr.Name
	}
	return strconv.Itoa(herr.Code)
}

// errorBodyBytes returns the registry-shape body for herr at now.
func errorBodyBytes(herr *engine.Error, now time.Time) []byte {
	text := strings.ReplaceAll(herr.Message, ";", ",")
	return marshal(errorBody{
		Message:          "ErrorCode:" + codeName(herr) + ";" + text,
		ExceptionMessage: "Tracking ID:" + trackingID(now),
	})
}

// methodErrorBodyBytes returns the method-shape body for herr at now.
func methodErrorBodyBytes(herr *engine.Error, now time.Time) []byte {
	inner := marshal(errorPayload{
		ErrorCode:    herr.Code,
		TrackingID:   trackingID(now),
		Message:      herr.Message,
		TimestampUTC: now.UTC().Format("2006-01-02T15:04:05.0000000Z"),
	})
	return marshal(errorBody{Message: string(inner)})
}

// writeError answers with a hub error in the registry shape: its HTTP
// status, the iothub-errorcode header and the body.
func writeError(w http.ResponseWriter, herr *engine.Error) {
	writeErrorBody(w, herr, errorBodyBytes(herr, time.Now()))
}

// writeMethodError answers a direct method invocation with a hub error in
// the method shape.
func writeMethodError(w http.ResponseWriter, herr *engine.Error) {
	writeErrorBody(w, herr, methodErrorBodyBytes(herr, time.Now()))
}

func writeErrorBody(w http.ResponseWriter, herr *engine.Error, body []byte) {
	status := herr.Status
	if status < 400 || status > 599 {
		// An injected fault with a code outside IoT Hub's scheme must not
		// make net/http panic on an invalid status.
		status = http.StatusInternalServerError
	}
	h := w.Header()
	h.Set("Content-Type", contentTypeJSON)
	if herr.Name != "" {
		h.Set(headerErrorCode, herr.Name)
	}
	if ra := herr.RetryAfter; ra > 0 {
		// Retry-After takes whole seconds; Retry-After-Ms, which azcore
		// prefers, keeps an injected fault's sub-second delay.
		h.Set("Retry-After", strconv.FormatInt(int64((ra+time.Second-1)/time.Second), 10))
		h.Set("Retry-After-Ms", strconv.FormatInt(int64((ra+time.Millisecond-1)/time.Millisecond), 10))
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writePlainError answers errors that have no IoT Hub error code (unknown
// path, wrong HTTP method) with the plain ASP.NET body IoT Hub's front end
// uses for them: {"Message":"…","ExceptionMessage":""}, without an
// iothub-errorcode header.
func writePlainError(w http.ResponseWriter, status int, message string) {
	writeJSONStatus(w, status, marshal(errorBody{Message: message}), "")
}

// writeJSON answers 200 with a JSON body; etag, when not empty, is sent
// quoted in the ETag header.
func writeJSON(w http.ResponseWriter, body []byte, etag string) {
	writeJSONStatus(w, http.StatusOK, body, etag)
}

// writeJSONStatus answers status with a JSON body and, when etag is not
// empty, an ETag header.
func writeJSONStatus(w http.ResponseWriter, status int, body []byte, etag string) {
	h := w.Header()
	h.Set("Content-Type", contentTypeJSON)
	if etag != "" {
		h.Set("ETag", `"`+etag+`"`)
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
