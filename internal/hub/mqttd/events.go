package mqttd

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

// System property names of IoT Hub's MQTT property bag that the engine
// keeps.
const (
	propMessageID       = "$.mid"
	propCorrelationID   = "$.cid"
	propContentType     = "$.ct"
	propContentEncoding = "$.ce"
)

// ignoredSystemProps are the other system properties a device may put in
// the property bag (user id, to, expiry, creation time, output name,
// interface id, component, schema…). They are neither application
// properties nor kept.
var ignoredSystemProps = map[string]bool{
	"$.uid": true, "$.to": true, "$.exp": true, "$.ctime": true, "$.on": true,
	"$.ifid": true, "$.sub": true, "$.schema": true, "$.mct": true,
}

// eventTopic is what a telemetry topic's property bag carries.
type eventTopic struct {
	MessageID, CorrelationID, ContentType, ContentEncoding string
	// Properties are the application properties; nil when there are none.
	Properties map[string]string
}

// size is the properties' share of the message size as IoT Hub counts it.
func (t eventTopic) size() int {
	n := len(t.MessageID) + len(t.CorrelationID) + len(t.ContentType) + len(t.ContentEncoding)
	for k, v := range t.Properties {
		n += len(k) + len(v)
	}
	return n
}

// parseEventTopic parses the identity's telemetry topic
//
//	devices/{deviceId}/messages/events[/{bag}]
//	devices/{deviceId}/modules/{moduleId}/messages/events[/{bag}]
//
// where bag is "k1=v1&k2=v2…", keys and values URL-encoded. It follows
// the serializer of Microsoft's MQTT stack (UrlEncodedDictionarySerializer,
// shared by the .NET device SDK and the protocol gateway):
//
//   - '/' ends the bag; whatever follows it is ignored (the Node SDK
//     appends one after module output properties);
//   - a key without '=' has an empty value; "k=" too;
//   - an empty key ("=v", "a=1&&b=2", "&a=1"), a trailing '&' and a second
//     '=' in one pair are malformed;
//   - a raw '?' is dropped from keys and values; then %XX escapes are
//     decoded as .NET's Uri.UnescapeDataString does: '+' stays '+', and an
//     escape that is not valid hex or not valid UTF-8 stays as it is;
//   - of repeated keys the last one wins.
//
// "$.mid", "$.cid", "$.ct" and "$.ce" are the message-id, correlation-id,
// content-type and content-encoding system properties; the other "$."
// system properties IoT Hub documents are ignored; every other key is an
// application property. A key that is empty once decoded is malformed too.
func parseEventTopic(topic string, id auth.Identity) (eventTopic, error) {
	prefix := identityPrefix(id) + "messages/events"
	rest, ok := strings.CutPrefix(topic, prefix)
	if !ok || (rest != "" && rest[0] != '/') {
		return eventTopic{}, errors.New("iothub: not the identity's telemetry topic")
	}
	var out eventTopic
	if rest == "" {
		return out, nil
	}
	pairs, err := parsePropertyBag(rest[1:])
	if err != nil {
		return eventTopic{}, err
	}
	for _, kv := range pairs {
		switch k, v := kv[0], kv[1]; {
		case k == "":
			return eventTopic{}, errors.New("iothub: property bag: empty property name")
		case k == propMessageID:
			out.MessageID = v
		case k == propCorrelationID:
			out.CorrelationID = v
		case k == propContentType:
			out.ContentType = v
		case k == propContentEncoding:
			out.ContentEncoding = v
		case ignoredSystemProps[k]:
		default:
			if out.Properties == nil {
				out.Properties = map[string]string{}
			}
			out.Properties[k] = v
		}
	}
	return out, nil
}

// parsePropertyBag splits and decodes a property bag, in order (see
// parseEventTopic).
func parsePropertyBag(bag string) ([][2]string, error) {
	var out [][2]string
	if bag == "" {
		return nil, nil
	}
	const (
		readyForKey = iota
		inKey
		inValue
	)
	state, start := readyForKey, 0
	var key string
	for pos := 0; ; pos++ {
		end := pos >= len(bag)
		var c byte
		if !end {
			c = bag[pos]
		}
		switch state {
		case readyForKey:
			switch {
			case end:
				return nil, errors.New("iothub: property bag ends with '&'")
			case c == '=' || c == '&':
				return nil, fmt.Errorf("iothub: property bag: unexpected %q where a property name starts", c)
			case c == '/':
				return out, nil
			}
			start, state = pos, inKey
		case inKey:
			switch {
			case end || c == '/':
				return append(out, [2]string{decodeBagToken(bag[start:pos]), ""}), nil
			case c == '=':
				key, start, state = decodeBagToken(bag[start:pos]), pos+1, inValue
			case c == '&':
				out = append(out, [2]string{decodeBagToken(bag[start:pos]), ""})
				state = readyForKey
			}
		case inValue:
			switch {
			case end || c == '/':
				return append(out, [2]string{key, decodeBagToken(bag[start:pos])}), nil
			case c == '=':
				return nil, errors.New("iothub: property bag: unexpected '=' in a property value")
			case c == '&':
				out = append(out, [2]string{key, decodeBagToken(bag[start:pos])})
				state = readyForKey
			}
		}
	}
}

// decodeBagToken drops raw '?' characters and decodes %XX escapes like
// .NET's Uri.UnescapeDataString: '+' is kept, and escapes that are not two
// hex digits, or whose bytes are not valid UTF-8, stay undecoded.
func decodeBagToken(s string) string {
	s = strings.ReplaceAll(s, "?", "")
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		if s[i] != '%' || !isEscape(s, i) {
			b.WriteByte(s[i])
			i++
			continue
		}
		// A run of escapes: decode the bytes that form valid UTF-8,
		// keep the text of the others.
		j := i
		var raw []byte
		for j < len(s) && s[j] == '%' && isEscape(s, j) {
			raw = append(raw, unhex(s[j+1])<<4|unhex(s[j+2]))
			j += 3
		}
		for k := 0; k < len(raw); {
			r, n := utf8.DecodeRune(raw[k:])
			if r == utf8.RuneError && n <= 1 {
				b.WriteString(s[i+3*k : i+3*k+3])
				k++
				continue
			}
			b.Write(raw[k : k+n])
			k += n
		}
		i = j
	}
	return b.String()
}

func isEscape(s string, i int) bool {
	return i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2])
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// checkEventPacket is OnPacketRead's check of a device PUBLISH: for a
// telemetry topic it returns why the hub cannot accept the message (a
// malformed property bag, more than 256 KB), "" otherwise. IoT Hub's MQTT
// stack closes the connection on a message it cannot parse [inf: for the
// size limit too, since MQTT 3.1.1 has no negative PUBACK].
func checkEventPacket(pk packets.Packet, id auth.Identity) string {
	if classifyTopic(pk.TopicName, id) != topicTelemetry {
		return ""
	}
	t, err := parseEventTopic(pk.TopicName, id)
	if err != nil {
		return "malformed telemetry topic: " + strings.TrimPrefix(err.Error(), "iothub: ")
	}
	if n := len(pk.Payload) + t.size(); n > engine.MaxEventSize {
		return fmt.Sprintf("device-to-cloud message of %d bytes exceeds %d bytes (413001 MessageTooLarge)", n, engine.MaxEventSize)
	}
	return ""
}

// receiveEvent hands a telemetry PUBLISH that passed checkEventPacket to
// the engine. OnPublish acknowledges a QoS 1 message only when this
// succeeded.
func (l *link) receiveEvent(pk packets.Packet) *engine.Error {
	t, err := parseEventTopic(pk.TopicName, l.id)
	if err != nil { // not reached: OnPacketRead checked the topic
		return engine.NewError(engine.CodeArgumentInvalid, "%s", strings.TrimPrefix(err.Error(), "iothub: "))
	}
	return l.s.e.ReceiveEvent(engine.Event{
		Identity:        l.id,
		Protocol:        l.info.Protocol,
		Body:            pk.Payload,
		Properties:      t.Properties,
		MessageID:       t.MessageID,
		CorrelationID:   t.CorrelationID,
		ContentType:     t.ContentType,
		ContentEncoding: t.ContentEncoding,
	})
}
