package amqpd

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

// conditionFor maps a hub error to the AMQP error condition IoT Hub uses
// for it (protocol.md §4.4; the mapping of codes IoT Hub does not
// document is [inf]).
func conditionFor(herr *engine.Error) Symbol {
	switch {
	case herr.Code == engine.CodeConnectionForcefullyClosed || herr.Code == engine.CodeLinkCreationConflict:
		return condStolen // a newer connection of the identity took over
	case herr.Status == 401:
		return condUnauthorized
	case herr.Status == 404:
		return condNotFound
	case herr.Status == 403:
		return condResourceLimit
	case herr.Status == 413:
		return condMessageSize
	case herr.Status == 429:
		return condDeviceThrottled
	case herr.Status == 400:
		return condArgumentError
	case herr.Status == 504:
		return condTimeout
	case herr.Status == 503:
		return condForced
	}
	return condInternal
}

// hubError is an AMQP error carrying a hub error the way IoT Hub sends
// it: the description is the JSON error object, the info map carries the
// tracking id.
func hubError(cond Symbol, herr *engine.Error) *amqpError {
	tid := trackingID(time.Now())
	return &amqpError{
		condition:   cond,
		description: hubErrorJSONWith(herr, tid),
		info:        Map{{Key: Symbol("com.microsoft:tracking-id"), Value: tid}},
	}
}

// hubErrorJSON returns IoT Hub's JSON error description, e.g.
// {"errorCode":401002,"message":"…","trackingId":"…","timestampUtc":"…","info":null}.
func hubErrorJSON(herr *engine.Error) string {
	return hubErrorJSONWith(herr, trackingID(time.Now()))
}

func hubErrorJSONWith(herr *engine.Error, tid string) string {
	v := struct {
		ErrorCode    int    `json:"errorCode"`
		Message      string `json:"message"`
		TrackingID   string `json:"trackingId"`
		TimestampUTC string `json:"timestampUtc"`
		Info         any    `json:"info"`
	}{herr.Code, herr.Message, tid, time.Now().UTC().Format("2006-01-02T15:04:05.0000000Z"), nil}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return string(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
}

// trackingID returns an id in IoT Hub's form: 32 hex digits,
// "-G:0-TimeStamp:" and the UTC time as MM/DD/YYYY HH:MM:SS.
func trackingID(now time.Time) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:]) + "-G:0-TimeStamp:" + now.UTC().Format("01/02/2006 15:04:05")
}

// twinErrorJSON returns the body of a refused twin request:
// {"message":"…","errorCode":400004,"trackingId":"…","details":null}, the
// shape IoT Hub sent a device whose reported patch was too large (iotedge
// #7035, an edgeAgent, which reads the body as the error text as the .NET
// SDK's AMQP twin link does). The tracking id there was empty; ours is
// filled [inf].
func twinErrorJSON(herr *engine.Error) []byte {
	v := struct {
		Message    string `json:"message"`
		ErrorCode  int    `json:"errorCode"`
		TrackingID string `json:"trackingId"`
		Details    any    `json:"details"`
	}{herr.Message, herr.Code, trackingID(time.Now()), nil}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}
