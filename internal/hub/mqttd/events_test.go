package mqttd

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/packets"

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
			if err == nil {
				t.Errorf("parseEventTopic(%q, %s) = %+v, want an error", tc.topic, tc.id, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseEventTopic(%q, %s): %v", tc.topic, tc.id, err)
			continue
		}
		if !sameEventTopic(got, tc.want) {
			t.Errorf("parseEventTopic(%q)\n got %+v\nwant %+v", tc.topic, got, tc.want)
		}
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
		if classifyTopic(topic, id) != topicTelemetry && !strings.ContainsAny(topic, "+#\x00") {
			t.Fatalf("%q parsed as telemetry of %s but is not classified as such", topic, clientID)
		}
		if !strings.HasPrefix(topic, identityPrefix(id)+"messages/events") {
			t.Fatalf("%q accepted for %s", topic, clientID)
		}
		valid := utf8.ValidString(got.MessageID + got.CorrelationID + got.ContentType + got.ContentEncoding)
		for k, v := range got.Properties {
			if k == "" {
				t.Fatalf("%q: empty property name", topic)
			}
			if strings.HasPrefix(k, "$.") && (k == propMessageID || ignoredSystemProps[k]) {
				t.Fatalf("%q: system property %q kept as an application property", topic, k)
			}
			valid = valid && utf8.ValidString(k) && utf8.ValidString(v)
		}
		if got.size() > len(topic) {
			t.Fatalf("%q: decoded properties (%d bytes) larger than the topic", topic, got.size())
		}
		if !valid {
			return // escaped non-UTF-8 is not decoded, so it does not round-trip
		}
		again, err := parseEventTopic(formatEventTopic(id, got), id)
		if err != nil || !sameEventTopic(again, got) {
			t.Fatalf("round trip of %q: %+v, %v; want %+v", topic, again, err, got)
		}
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
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("checkEventPacket(%q, %d bytes) = %q, want %q", tc.pk.TopicName, len(tc.pk.Payload), got, tc.want)
		}
	}
}

// waitEvents waits for the engine to hold n events.
func (f *fixture) waitEvents(n int) []engine.Event {
	f.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	evs, err := f.e.WaitEvents(ctx, n)
	if err != nil {
		f.tb.Fatalf("waiting for %d events: %v (have %d)", n, err, len(evs))
	}
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
			if err := d.publish(t, tc.topic, 1, []byte(tc.body)); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
			// The PUBACK comes after the engine accepted the message.
			if n := len(f.e.Events()); n != i+1 {
				t.Fatalf("after the PUBACK of message %d the engine holds %d events", i, n)
			}
		} else if err := d.publish(t, tc.topic, 0, []byte(tc.body)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		ev := f.waitEvents(i + 1)[i]
		w := tc.want
		if ev.Identity.DeviceID != "dev1" || ev.Identity.ModuleID != "" || ev.Identity.HostName != testHost ||
			ev.Protocol != "mqtt" || string(ev.Body) != tc.body || ev.EnqueuedTime.IsZero() {
			t.Errorf("event %d = %+v", i, ev)
		}
		if ev.MessageID != w.mid || ev.CorrelationID != w.cid || ev.ContentType != w.ct || ev.ContentEncoding != w.ce {
			t.Errorf("event %d system properties mid=%q cid=%q ct=%q ce=%q, want %+v", i, ev.MessageID, ev.CorrelationID, ev.ContentType, ev.ContentEncoding, w)
		}
		if len(ev.Properties) != len(w.props) || (len(w.props) > 0 && !maps.Equal(ev.Properties, w.props)) {
			t.Errorf("event %d properties %q, want %q", i, ev.Properties, w.props)
		}
	}
	d.stillUp(t)

	// lastActivityTime moves with telemetry (the format sorts as text).
	after, _ := f.e.GetDevice("dev1")
	if !(before.LastActivityTime < connected.LastActivityTime && connected.LastActivityTime < after.LastActivityTime) {
		t.Errorf("lastActivityTime %s → connect %s → telemetry %s, want increasing",
			before.LastActivityTime, connected.LastActivityTime, after.LastActivityTime)
	}
	if after.ETag != before.ETag {
		t.Errorf("telemetry changed the device etag")
	}
}

func TestModuleTelemetry(t *testing.T) {
	f := newFixture(t)
	f.addDevice("edge1")
	key := f.addModule("edge1", "mod1")
	d := f.connect(f.sasOpts("edge1/mod1", key))
	if err := d.publish(t, "devices/edge1/modules/mod1/messages/events/%24.mid=7&k=v", 1, []byte("from a module")); err != nil {
		t.Fatal(err)
	}
	ev := f.waitEvents(1)[0]
	if ev.Identity.DeviceID != "edge1" || ev.Identity.ModuleID != "mod1" || ev.MessageID != "7" || ev.Properties["k"] != "v" {
		t.Fatalf("module event = %+v", ev)
	}
	m, _ := f.e.GetModule("edge1", "mod1")
	dev, _ := f.e.GetDevice("edge1")
	if m.LastActivityTime <= dev.LastActivityTime {
		t.Errorf("module lastActivityTime %s not after the device's %s", m.LastActivityTime, dev.LastActivityTime)
	}
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
			if tc.qos == 1 && tok.WaitTimeout(100*time.Millisecond) && tok.Error() == nil {
				t.Errorf("the refused QoS 1 message was acknowledged")
			}
			if n := f.e.EventCount(); n != 0 {
				t.Errorf("the engine accepted %d events", n)
			}
		})
	}
}
