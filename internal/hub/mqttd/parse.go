package mqttd

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/iothub-go/iothub/auth"
)

// Topic names and filters of IoT Hub's MQTT device dialect.
const (
	methodsFilter      = "$iothub/methods/POST/#"
	methodRequestPfx   = "$iothub/methods/POST/"
	methodResponsePfx  = "$iothub/methods/res/"
	twinResponseFilter = "$iothub/twin/res/#"
	twinDesiredFilter  = "$iothub/twin/PATCH/properties/desired/#"
)

// parseClientID checks a CONNECT ClientId: "{deviceId}" or
// "{deviceId}/{moduleId}", each a valid registry id.
func parseClientID(clientID string) (auth.Identity, error) {
	dev, mod, isModule := strings.Cut(clientID, "/")
	if err := auth.CheckID(dev); err != nil {
		return auth.Identity{}, errors.New("iothub: client id: device id: " + strings.TrimPrefix(err.Error(), "iothub: "))
	}
	if !isModule {
		return auth.Identity{DeviceID: dev}, nil
	}
	if err := auth.CheckID(mod); err != nil {
		return auth.Identity{}, errors.New("iothub: client id: module id: " + strings.TrimPrefix(err.Error(), "iothub: "))
	}
	return auth.Identity{DeviceID: dev, ModuleID: mod}, nil
}

// usernameInfo is what a valid CONNECT username carries.
type usernameInfo struct {
	Host   string
	Params map[string]string // URL-unescaped query parameters; api-version is non-empty
}

// parseUsername parses a CONNECT username for the connection of clientID:
//
//	{host}/{clientID}/?api-version={v}[&DeviceClientType=…][&model-id=…]…
//	{host}/{clientID}/api-version={v}[&…]     (legacy: no "?", no '/' after)
//
// The identity in the username must be exactly clientID (it is matched as
// a whole because device and module ids may contain '?' and '='). As in
// EdgeHub's parser, parameters may come in any order, are split on '&'
// only, keys and values are URL-unescaped (kept raw when the escaping is
// invalid), the first of repeated keys wins, unknown parameters are kept
// but mean nothing, and api-version must be present and non-empty.
func parseUsername(username, clientID string) (usernameInfo, error) {
	host, rest, ok := strings.Cut(username, "/")
	if !ok || host == "" {
		return usernameInfo{}, errors.New("iothub: username is not {host}/{clientId}/?api-version=…")
	}
	tail, ok := strings.CutPrefix(rest, clientID+"/")
	if !ok || clientID == "" {
		return usernameInfo{}, errors.New("iothub: username does not name the connection's client id")
	}
	if q, ok := strings.CutPrefix(tail, "?"); ok {
		tail = q
	} else if strings.Contains(tail, "/") {
		// Legacy form: the properties are the last '/' segment.
		return usernameInfo{}, errors.New("iothub: username has extra segments after {host}/{clientId}/")
	}
	params := map[string]string{}
	for _, kv := range strings.Split(tail, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		k, v = unescape(k), unescape(v)
		if _, dup := params[k]; !dup {
			params[k] = v
		}
	}
	if params["api-version"] == "" {
		return usernameInfo{}, errors.New("iothub: username has no api-version")
	}
	return usernameInfo{Host: host, Params: params}, nil
}

func unescape(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

// formatUsername builds the username parseUsername accepts (used by
// tests and fuzzing for round trips).
func formatUsername(host, clientID, apiVersion string, extra map[string]string) string {
	var b strings.Builder
	b.WriteString(host + "/" + clientID + "/?api-version=" + url.QueryEscape(apiVersion))
	for k, v := range extra {
		b.WriteString("&" + url.QueryEscape(k) + "=" + url.QueryEscape(v))
	}
	return b.String()
}

// methodRequestTopic is the topic of a method request the hub sends.
func methodRequestTopic(name, rid string) string {
	return methodRequestPfx + name + "/?$rid=" + rid
}

// checkTopicName reports why topic cannot be the topic of a PUBLISH the
// hub writes: MQTT 3.1.1 (sections 1.5.3, 4.7.1 and 4.7.3) allows at most
// 65,535 bytes of UTF-8 without U+0000, and no wildcard in a topic name.
// The engine validates method names before they get here; this guard
// keeps a bug elsewhere from putting invalid protocol on the wire (a
// 16-bit length that wraps, a '+' that a device's filter matching
// misreads).
func checkTopicName(topic string) error {
	switch {
	case len(topic) == 0 || len(topic) > 65535:
		return fmt.Errorf("iothub: an MQTT topic must be 1 to 65535 bytes, not %d", len(topic))
	case !utf8.ValidString(topic):
		return errors.New("iothub: an MQTT topic must be UTF-8")
	case strings.ContainsAny(topic, "+#\x00"):
		return errors.New("iothub: an MQTT topic name cannot contain '+', '#' or U+0000")
	}
	return nil
}

// methodResponseTopic is the topic of a device's method response.
func methodResponseTopic(status int, rid string) string {
	return methodResponsePfx + strconv.Itoa(status) + "/?$rid=" + rid
}

// parseMethodResponseTopic parses "$iothub/methods/res/{status}/?$rid={rid}".
// status is a decimal integer (optionally negative, within int32); the
// query holds "$rid" (other '&'-separated parameters are ignored) with a
// non-empty value, which is taken byte for byte. ok is false for anything
// else.
func parseMethodResponseTopic(topic string) (status int, rid string, ok bool) {
	rest, found := strings.CutPrefix(topic, methodResponsePfx)
	if !found {
		return 0, "", false
	}
	statusText, query, found := strings.Cut(rest, "/?")
	if !found || !decimal(statusText) {
		return 0, "", false
	}
	n, err := strconv.ParseInt(statusText, 10, 32)
	if err != nil {
		return 0, "", false
	}
	for _, kv := range strings.Split(query, "&") {
		if v, isRID := strings.CutPrefix(kv, "$rid="); isRID && v != "" {
			return int(n), v, true
		}
	}
	return 0, "", false
}

// decimal reports whether s is an optionally negative run of ASCII digits.
func decimal(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// topicKind classifies a PUBLISH topic from a device.
type topicKind int

const (
	topicForbidden      topicKind = iota // not allowed: the hub closes the connection
	topicMethodResponse                  // $iothub/methods/res/… (possibly malformed)
	topicTelemetry                       // the identity's own device-to-cloud topic
	topicTwinGet                         // $iothub/twin/GET/[?…] (the $rid may be missing)
	topicTwinReported                    // $iothub/twin/PATCH/properties/reported/[?…]
)

// classifyTopic says what a device with identity id may do with a PUBLISH
// to topic. Every "$iothub/methods/res/" topic is a method response, even a
// malformed one (the caller drops those); telemetry must be the
// identity's own "devices/{id}/messages/events/…" (modules:
// "devices/{id}/modules/{mid}/messages/events/…") without wildcards. A
// twin request is "$iothub/twin/GET/" or
// "$iothub/twin/PATCH/properties/reported/", each followed by nothing or
// by "?" and a query (the caller drops one without a $rid); every other
// topic under "$iothub/twin/" is forbidden.
func classifyTopic(topic string, id auth.Identity) topicKind {
	if strings.HasPrefix(topic, methodResponsePfx) {
		return topicMethodResponse
	}
	if strings.ContainsAny(topic, "+#\x00") {
		return topicForbidden
	}
	for _, t := range []struct {
		pfx  string
		kind topicKind
	}{{twinGetPfx, topicTwinGet}, {twinReportedPfx, topicTwinReported}} {
		if rest, ok := strings.CutPrefix(topic, t.pfx); ok {
			if rest == "" || rest[0] == '?' {
				return t.kind
			}
			return topicForbidden
		}
	}
	events := identityPrefix(id) + "messages/events"
	if topic == events || strings.HasPrefix(topic, events+"/") {
		return topicTelemetry
	}
	return topicForbidden
}

// identityPrefix is "devices/{id}/" or "devices/{id}/modules/{mid}/".
func identityPrefix(id auth.Identity) string {
	if id.ModuleID == "" {
		return "devices/" + id.DeviceID + "/"
	}
	return "devices/" + id.DeviceID + "/modules/" + id.ModuleID + "/"
}

// filterKind classifies a SUBSCRIBE topic filter from a device.
type filterKind int

const (
	filterForbidden     filterKind = iota // not allowed: the hub closes the connection
	filterMethods                         // $iothub/methods/POST/#
	filterTwinResponse                    // $iothub/twin/res/#
	filterTwinDesired                     // $iothub/twin/PATCH/properties/desired/#
	filterCloudToDevice                   // devices/{deviceId}/messages/devicebound/#
)

// classifyFilter says whether a device with identity id may subscribe to
// filter. Only IoT Hub's documented device filters are allowed, exactly as
// documented; the cloud-to-device filter must name the device itself and
// is not available to modules (IoT Hub has no cloud-to-device messages
// for modules).
func classifyFilter(filter string, id auth.Identity) filterKind {
	switch filter {
	case methodsFilter:
		return filterMethods
	case twinResponseFilter:
		return filterTwinResponse
	case twinDesiredFilter:
		return filterTwinDesired
	}
	if id.ModuleID == "" && id.DeviceID != "" && filter == "devices/"+id.DeviceID+"/messages/devicebound/#" {
		return filterCloudToDevice
	}
	return filterForbidden
}
