package mqttd

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

func TestParseEventTopic(t *testing.T) {
	dev := auth.Identity{DeviceID: "d1"}
	mod := auth.Identity{DeviceID: "d1", ModuleID: "m1"}
	for _, tc := range []struct {
		topic string
		id    auth.Identity
		want  eventTopic
		bad   bool
	}{
		{topic: "devices/d1/messages/events", id: dev},
		{topic: "devices/d1/messages/events/", id: dev},
		{topic: "devices/d1/messages/events//", id: dev},
		{topic: "devices/d1/modules/m1/messages/events/", id: mod},
		{topic: "devices/d1/messages/events/a=b&c=d", id: dev,
			want: eventTopic{Properties: map[string]string{"a": "b", "c": "d"}}},
		// The Node SDK: system properties by querystring.stringify, then
		// encodeURIComponent'ed application properties.
		{topic: "devices/d1/messages/events/%24.mid=m-1&%24.cid=c-1&%24.ct=application%2Fjson&%24.ce=utf-8&temp%20alert=true&site=b%2F12",
			id: dev, want: eventTopic{MessageID: "m-1", CorrelationID: "c-1", ContentType: "application/json", ContentEncoding: "utf-8",
				Properties: map[string]string{"temp alert": "true", "site": "b/12"}}},
		// Unencoded "$." names, as the docs write them.
		{topic: "devices/d1/modules/m1/messages/events/$.mid=1&$.ct=text%2Fplain", id: mod,
			want: eventTopic{MessageID: "1", ContentType: "text/plain"}},
		// Ignored system properties; an unknown "$." name is an
		// application property.
		{topic: "devices/d1/messages/events/$.uid=u&$.to=x&$.exp=1&$.on=out&$.ifid=i&$.sub=c&$.x=y", id: dev,
			want: eventTopic{Properties: map[string]string{"$.x": "y"}}},
		// A key without a value; an empty value; the last duplicate wins.
		{topic: "devices/d1/messages/events/flag&empty=&k=1&k=2", id: dev,
			want: eventTopic{Properties: map[string]string{"flag": "", "empty": "", "k": "2"}}},
		// '/' ends the bag (Node's output-event form, and anything after).
		{topic: "devices/d1/modules/m1/messages/events/$.on=out&a=1/", id: mod,
			want: eventTopic{Properties: map[string]string{"a": "1"}}},
		{topic: "devices/d1/messages/events/a=1/b=2", id: dev,
			want: eventTopic{Properties: map[string]string{"a": "1"}}},
		// '+' stays '+'; raw '?' is dropped; bad escapes stay as they are;
		// escaped UTF-8 decodes, escaped non-UTF-8 does not.
		{topic: "devices/d1/messages/events/p=1+2&q?=%3F?&r=100%25%zz%4&s=%C3%A9%FF&%E2%82%AC=euro", id: dev,
			want: eventTopic{Properties: map[string]string{"p": "1+2", "q": "?", "r": "100%%zz%4", "s": "é%FF", "€": "euro"}}},
		{topic: "devices/d1/messages/events/a=b&c=%3D%26%2F%3F", id: dev,
			want: eventTopic{Properties: map[string]string{"a": "b", "c": "=&/?"}}},

		// Malformed bags.
		{topic: "devices/d1/messages/events/a=1&", id: dev, bad: true},
		{topic: "devices/d1/messages/events/&a=1", id: dev, bad: true},
		{topic: "devices/d1/messages/events/a=1&&b=2", id: dev, bad: true},
		{topic: "devices/d1/messages/events/=v", id: dev, bad: true},
		{topic: "devices/d1/messages/events/a=b=c", id: dev, bad: true},
		{topic: "devices/d1/messages/events/?=1", id: dev, bad: true},
		// Not the identity's topic.
		{topic: "devices/d2/messages/events/", id: dev, bad: true},
		{topic: "devices/d1/messages/events/", id: mod, bad: true},
		{topic: "devices/d1/messages/eventsX", id: dev, bad: true},
		{topic: "devices/d1/modules/m1/messages/events/", id: dev, bad: true},
	} {
		got, err := parseEventTopic(tc.topic, tc.id)
		if tc.bad {
			assert.Error(t, err, "parseEventTopic(%q, %s) = %+v, want an error", tc.topic, tc.id, got)
			continue
		}
		if !assert.NoError(t, err, "parseEventTopic(%q, %s)", tc.topic, tc.id) {
			continue
		}
		// sameEventTopic, not assert.Equal: a nil and an empty property map are the same.
		assert.True(t, sameEventTopic(got, tc.want), "parseEventTopic(%q)\n got %+v\nwant %+v", tc.topic, got, tc.want)
	}
}

func sameEventTopic(a, b eventTopic) bool {
	return a.MessageID == b.MessageID && a.CorrelationID == b.CorrelationID && a.ContentType == b.ContentType &&
		a.ContentEncoding == b.ContentEncoding && maps.Equal(a.Properties, b.Properties)
}

// formatEventTopic is the reference encoder for round trips: every byte
// outside RFC 3986's unreserved set is %XX-escaped.
func formatEventTopic(id auth.Identity, t eventTopic) string {
	var pairs []string
	add := func(k, v string) { pairs = append(pairs, escapeAll(k)+"="+escapeAll(v)) }
	for k, v := range map[string]string{propMessageID: t.MessageID, propCorrelationID: t.CorrelationID,
		propContentType: t.ContentType, propContentEncoding: t.ContentEncoding} {
		if v != "" {
			add(k, v)
		}
	}
	for k, v := range t.Properties {
		add(k, v)
	}
	return identityPrefix(id) + "messages/events/" + strings.Join(pairs, "&")
}

func escapeAll(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.~", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

func FuzzParseEventTopic(f *testing.F) {
	f.Add("devices/d1/messages/events/%24.mid=m-1&%24.cid=c-1&%24.ct=application%2Fjson&%24.ce=utf-8&a%20b=c%26d", "d1")
	f.Add("devices/d1/modules/m1/messages/events/$.on=out&a=1/", "d1/m1")
	f.Add("devices/d1/messages/events/flag&empty=&k=1&k=2", "d1")
	f.Add("devices/d1/messages/events/p=1+2&q?=%3F?&r=100%25%zz%4&s=%C3%A9%FF", "d1")
	f.Add("devices/d1/messages/events/a=1&&b=2", "d1")
	f.Add("devices/d1/messages/events/=v&a=b=c", "d1")
	f.Add("devices/d1/messages/events", "d1")
	f.Add("devices/d2/messages/events/", "d1")
	f.Fuzz(func(t *testing.T, topic, clientID string) {
		dev, mod, _ := strings.Cut(clientID, "/")
		id := auth.Identity{DeviceID: dev, ModuleID: mod}
		got, err := parseEventTopic(topic, id)
		if err != nil {
			return
		}
		require.True(t, classifyTopic(topic, id) == topicTelemetry || strings.ContainsAny(topic, "+#\x00"),
			"%q parsed as telemetry of %s but is not classified as such", topic, clientID)
		require.True(t, strings.HasPrefix(topic, identityPrefix(id)+"messages/events"), "%q accepted for %s", topic, clientID)
		valid := utf8.ValidString(got.MessageID + got.CorrelationID + got.ContentType + got.ContentEncoding)
		for k, v := range got.Properties {
			require.NotEmpty(t, k, "%q: empty property name", topic)
			require.False(t, strings.HasPrefix(k, "$.") && (k == propMessageID || ignoredSystemProps[k]),
				"%q: system property %q kept as an application property", topic, k)
			valid = valid && utf8.ValidString(k) && utf8.ValidString(v)
		}
		require.LessOrEqual(t, got.size(), len(topic), "%q: decoded properties larger than the topic", topic)
		if !valid {
			return // escaped non-UTF-8 is not decoded, so it does not round-trip
		}
		again, err := parseEventTopic(formatEventTopic(id, got), id)
		require.NoError(t, err, "round trip of %q", topic)
		require.True(t, sameEventTopic(again, got), "round trip of %q: %+v; want %+v", topic, again, got)
	})
}

func TestCheckEventPacket(t *testing.T) {
	id := auth.Identity{DeviceID: "d1"}
	pk := func(topic string, n int) packets.Packet {
		return packets.Packet{TopicName: topic, Payload: make([]byte, n)}
	}
	for _, tc := range []struct {
		pk   packets.Packet
		want string // substring of the refusal; "" accepts
	}{
		{pk("devices/d1/messages/events/", engine.MaxEventSize), ""},
		{pk("devices/d1/messages/events/", engine.MaxEventSize+1), "413001"},
		{pk("devices/d1/messages/events/ab=cd", engine.MaxEventSize-4), ""},
		{pk("devices/d1/messages/events/ab=cd", engine.MaxEventSize-3), "413001"},
		{pk("devices/d1/messages/events/%24.mid=12", engine.MaxEventSize-2), ""},
		{pk("devices/d1/messages/events/%24.mid=12", engine.MaxEventSize-1), "413001"},
		{pk("devices/d1/messages/events/a=1&", 1), "malformed"},
		{pk("$iothub/methods/res/200/?$rid=1", engine.MaxEventSize+1), ""}, // not telemetry
	} {
		got := checkEventPacket(tc.pk, id)
		if tc.want == "" {
			assert.Empty(t, got, "checkEventPacket(%q, %d bytes)", tc.pk.TopicName, len(tc.pk.Payload))
		} else {
			// The refusal is a reason string for the log, not an error.
			assert.Contains(t, got, tc.want, "checkEventPacket(%q, %d bytes)", tc.pk.TopicName, len(tc.pk.Payload))
		}
	}
}

// waitEvents waits for the engine to hold n events.
func (f *fixture) waitEvents(n int) []engine.Event {
	f.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	evs, err := f.e.WaitEvents(ctx, n)
	require.NoError(f.tb, err, "waiting for %d events (have %d)", n, len(evs))
	return evs
}

func TestTelemetry(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	before, _ := f.e.GetDevice("dev1")
	d := f.connect(f.sasOpts("dev1", key))
	connected, _ := f.e.GetDevice("dev1")

	type want struct {
		mid, cid, ct, ce string
		props            map[string]string
	}
	for i, tc := range []struct {
		topic string
		qos   byte
		body  string
		want  want
	}{
		{"devices/dev1/messages/events/%24.mid=m-1&%24.cid=c%2F1&%24.ct=application%2Fjson&%24.ce=utf-8&with%20space=a%3Db%26c%2Fd%3F%C3%A9&plus=1%2B2%20",
			1, `{"temp":21.5}`,
			want{"m-1", "c/1", "application/json", "utf-8", map[string]string{"with space": "a=b&c/d?é", "plus": "1+2 "}}},
		{"devices/dev1/messages/events/", 0, "qos 0, no properties", want{}},
		{"devices/dev1/messages/events", 1, "", want{}},
		{"devices/dev1/messages/events/$.ct=text%2Fplain&alert", 0, "x", want{ct: "text/plain", props: map[string]string{"alert": ""}}},
	} {
		if tc.qos == 1 {
			require.NoError(t, d.publish(t, tc.topic, 1, []byte(tc.body)), "publish %d", i)
			// The PUBACK comes after the engine accepted the message.
			n := len(f.e.Events())
			require.Equal(t, i+1, n, "after the PUBACK of message %d the engine holds %d events", i, n)
		} else {
			require.NoError(t, d.publish(t, tc.topic, 0, []byte(tc.body)), "publish %d", i)
		}
		ev := f.waitEvents(i + 1)[i]
		w := tc.want
		assert.Equal(t, "dev1", ev.Identity.DeviceID, "event %d device id", i)
		assert.Empty(t, ev.Identity.ModuleID, "event %d module id", i)
		assert.Equal(t, testHost, ev.Identity.HostName, "event %d host name", i)
		assert.Equal(t, "mqtt", ev.Protocol, "event %d protocol", i)
		assert.Equal(t, tc.body, string(ev.Body), "event %d body", i)
		assert.False(t, ev.EnqueuedTime.IsZero(), "event %d has no enqueued time", i)
		assert.Equal(t, w.mid, ev.MessageID, "event %d message id", i)
		assert.Equal(t, w.cid, ev.CorrelationID, "event %d correlation id", i)
		assert.Equal(t, w.ct, ev.ContentType, "event %d content type", i)
		assert.Equal(t, w.ce, ev.ContentEncoding, "event %d content encoding", i)
		if len(w.props) == 0 {
			assert.Empty(t, ev.Properties, "event %d properties", i)
		} else {
			assert.Equal(t, w.props, ev.Properties, "event %d properties", i)
		}
	}
	d.stillUp(t)

	// lastActivityTime moves with telemetry (the format sorts as text).
	after, _ := f.e.GetDevice("dev1")
	assert.Less(t, before.LastActivityTime, connected.LastActivityTime, "lastActivityTime at connect, want increasing")
	assert.Less(t, connected.LastActivityTime, after.LastActivityTime, "lastActivityTime after telemetry, want increasing")
	assert.Equal(t, before.ETag, after.ETag, "telemetry changed the device etag")
}

func TestModuleTelemetry(t *testing.T) {
	f := newFixture(t)
	f.addDevice("edge1")
	key := f.addModule("edge1", "mod1")
	d := f.connect(f.sasOpts("edge1/mod1", key))
	require.NoError(t, d.publish(t, "devices/edge1/modules/mod1/messages/events/%24.mid=7&k=v", 1, []byte("from a module")))
	ev := f.waitEvents(1)[0]
	assert.Equal(t, "edge1", ev.Identity.DeviceID, "module event device id")
	assert.Equal(t, "mod1", ev.Identity.ModuleID, "module event module id")
	assert.Equal(t, "7", ev.MessageID, "module event message id")
	assert.Equal(t, "v", ev.Properties["k"], "module event property k")
	m, _ := f.e.GetModule("edge1", "mod1")
	dev, _ := f.e.GetDevice("edge1")
	assert.Greater(t, m.LastActivityTime, dev.LastActivityTime, "module lastActivityTime not after the device's")
}

// Messages the hub cannot accept close the connection, are never
// acknowledged and never reach the engine.
func TestTelemetryRefused(t *testing.T) {
	for _, tc := range []struct {
		name, topic string
		qos         byte
		body        int
	}{
		{"another device's topic", "devices/dev2/messages/events/", 1, 1},
		{"another device's topic qos 0", "devices/dev2/messages/events/", 0, 1},
		{"a module's topic", "devices/dev1/modules/m/messages/events/", 1, 1},
		{"malformed property bag", "devices/dev1/messages/events/a=1&&b=2", 1, 1},
		{"malformed property bag qos 0", "devices/dev1/messages/events/=v", 0, 1},
		{"second '=' in a value", "devices/dev1/messages/events/a=b=c", 1, 1},
		{"oversized", "devices/dev1/messages/events/", 1, engine.MaxEventSize + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			key := f.addDevice("dev1")
			f.addDevice("dev2")
			d := f.connect(f.sasOpts("dev1", key))
			tok := d.c.Publish(tc.topic, tc.qos, false, make([]byte, tc.body))
			d.waitLost(t)
			if tc.qos == 1 {
				acked := tok.WaitTimeout(100*time.Millisecond) && tok.Error() == nil
				assert.False(t, acked, "the refused QoS 1 message was acknowledged")
			}
			assert.Zero(t, f.e.EventCount(), "the engine accepted events")
		})
	}
}
