package mqttd

// Device twins over MQTT: the device's GET and reported PATCH requests,
// the hub's answers on $iothub/twin/res/…, and desired-property patches
// (SendDesired, link.go). docs/hub-fidelity.md ("Twins over MQTT") has the
// sources.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

// Twin topics of IoT Hub's MQTT device dialect.
const (
	twinGetPfx      = "$iothub/twin/GET/"
	twinReportedPfx = "$iothub/twin/PATCH/properties/reported/"
	twinResponsePfx = "$iothub/twin/res/"
	desiredPatchPfx = "$iothub/twin/PATCH/properties/desired/"
)

// modelIDAPIVersion is the first api-version with IoT Plug and Play: the
// username's model-id counts only from it on (azure-iot-sdk-c requires
// 2020-09-30 for PnP) [inf: what IoT Hub does with a model-id under an
// older api-version is not documented; it is ignored here].
const modelIDAPIVersion = "2020-09-30"

// modelIDOf returns the model id a CONNECT username announces: its
// model-id parameter, if the api-version supports Plug and Play.
func modelIDOf(u usernameInfo) string {
	if u.Params["api-version"] < modelIDAPIVersion {
		return ""
	}
	return u.Params["model-id"]
}

// parseTwinRequestTopic parses the topic of a device's twin request,
// "$iothub/twin/GET/?$rid={rid}" or
// "$iothub/twin/PATCH/properties/reported/?$rid={rid}", once
// classifyTopic said it is one (kind is topicTwinGet or
// topicTwinReported). After the prefix comes "?" and a query whose "$rid"
// (other '&'-separated parameters are ignored) has a non-empty value,
// taken byte for byte: the rid is opaque (the SDKs send GUIDs or decimal
// counters) and goes back unchanged. ok is false for anything else,
// such as a missing "?", an empty or missing $rid, or more path segments.
func parseTwinRequestTopic(topic string) (kind topicKind, rid string, ok bool) {
	var rest string
	switch {
	case strings.HasPrefix(topic, twinGetPfx):
		kind, rest = topicTwinGet, topic[len(twinGetPfx):]
	case strings.HasPrefix(topic, twinReportedPfx):
		kind, rest = topicTwinReported, topic[len(twinReportedPfx):]
	default:
		return topicForbidden, "", false
	}
	query, found := strings.CutPrefix(rest, "?")
	if !found {
		return topicForbidden, "", false
	}
	for _, kv := range strings.Split(query, "&") {
		if v, isRID := strings.CutPrefix(kv, "$rid="); isRID && v != "" {
			return kind, v, true
		}
	}
	return topicForbidden, "", false
}

// twinResponseTopic is the topic of the hub's answer to a twin request:
// "$iothub/twin/res/{status}/?$rid={rid}", plus "&$version={version}"
// when version > 0 (after a reported PATCH).
func twinResponseTopic(status int, rid string, version int64) string {
	t := twinResponsePfx + strconv.Itoa(status) + "/?$rid=" + rid
	if version > 0 {
		t += "&$version=" + strconv.FormatInt(version, 10)
	}
	return t
}

// desiredPatchTopic is the topic of a desired-property patch.
func desiredPatchTopic(version int64) string {
	return desiredPatchPfx + "?$version=" + strconv.FormatInt(version, 10)
}

// twinErrorBody is the JSON body of a refused twin request, in the shape
// IoT Hub sent a device whose reported patch was too large (Azure/iotedge
// #7035: {"message":"'Properties.Reported' size should be less than 32768
// bytes.","errorCode":403100,"trackingId":"","details":null}) [inf: the
// tracking id there was empty; here it is one in IoT Hub's form]. The Node
// SDK fails a twin request only when the body has errorCode.
func twinErrorBody(herr *engine.Error) []byte {
	v := struct {
		Message    string `json:"message"`
		ErrorCode  int    `json:"errorCode"`
		TrackingID string `json:"trackingId"`
		Details    any    `json:"details"`
	}{herr.Message, herr.Code, trackingID(time.Now()), nil}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // plain strings and ints only
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// trackingID returns an id in IoT Hub's form: 32 hex digits,
// "-G:0-TimeStamp:" and the UTC time as MM/DD/YYYY HH:MM:SS.
func trackingID(now time.Time) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:]) + "-G:0-TimeStamp:" + now.UTC().Format("01/02/2006 15:04:05")
}

// twinRequest serves a device's twin request (classifyTopic said kind) on
// its read goroutine and writes the answer before mochi acknowledges a
// QoS 1 request.
//
//   - A topic without a usable $rid is dropped unprocessed: no answer,
//     nothing changed, the connection stays up [inf: the docs require
//     $rid; a reported PATCH without it is not applied, as
//     Azure-Samples/IoTMQTTSample #19 observed].
//   - GET is answered 200 with {"desired":{…},"reported":{…}}; the body
//     of the request (empty, " " or anything) is ignored.
//   - A reported PATCH is merged by the engine and answered 204 with
//     "&$version={new reported version}" and an empty body. A body that
//     is not a JSON object, or breaks the twin rules, is refused whole:
//     400 (400004 ArgumentInvalid), or 403 (403100) for a section grown
//     past its size.
//   - Refusals carry twinErrorBody.
//   - A device not subscribed to $iothub/twin/res/# gets no answer, but
//     its request is processed [inf: the docs only say a device must
//     subscribe first; the SDKs always do].
func (l *link) twinRequest(cl *mqtt.Client, pk packets.Packet) {
	kind, rid, ok := parseTwinRequestTopic(pk.TopicName)
	if !ok {
		l.s.log.Debug("mqtt twin request dropped: no $rid", "clientId", l.id.String(), "topic", pk.TopicName)
		return
	}
	sess := l.sess.Load()
	if sess == nil {
		return
	}
	var (
		status  int
		version int64
		body    []byte
		herr    *engine.Error
	)
	if kind == topicTwinGet {
		status = 200
		body, herr = sess.GetTwin()
	} else {
		status = 204
		version, herr = sess.UpdateReported(pk.Payload)
	}
	if herr != nil {
		status, version, body = herr.Status, 0, twinErrorBody(herr)
		l.s.log.Debug("mqtt twin request refused", "clientId", l.id.String(), "rid", rid,
			"code", herr.Code, "reason", herr.Message)
	}
	if _, has := cl.State.Subscriptions.Get(twinResponseFilter); !has {
		l.s.log.Debug("mqtt twin answer dropped: the device is not subscribed to "+twinResponseFilter,
			"clientId", l.id.String(), "rid", rid)
		return
	}
	topic := twinResponseTopic(status, rid, version)
	if err := checkTopicName(topic); err != nil {
		l.s.log.Debug("mqtt twin answer dropped: "+strings.TrimPrefix(err.Error(), "iothub: "),
			"clientId", l.id.String())
		return
	}
	_ = l.send(topic, body, false, "twin response")
}
