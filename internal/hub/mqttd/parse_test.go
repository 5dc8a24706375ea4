package mqttd

import (
	"maps"
	"strings"
	"testing"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

func TestParseClientID(t *testing.T) {
	for _, tc := range []struct {
		in       string
		dev, mod string
		ok       bool
	}{
		{"dev1", "dev1", "", true},
		{"dev-1.a:b+c%d_e#f*g?h!i(j)k,l=m@n$o'p", "dev-1.a:b+c%d_e#f*g?h!i(j)k,l=m@n$o'p", "", true},
		{"dev1/mod1", "dev1", "mod1", true},
		{"", "", "", false},
		{"/mod1", "", "", false},
		{"dev1/", "", "", false},
		{"dev1/mod1/x", "", "", false},
		{"dev 1", "", "", false},
		{"dév", "", "", false},
		{strings.Repeat("a", 129), "", "", false},
	} {
		id, err := parseClientID(tc.in)
		if (err == nil) != tc.ok || id.DeviceID != tc.dev || id.ModuleID != tc.mod {
			t.Errorf("parseClientID(%q) = %+v, %v", tc.in, id, err)
		}
	}
}

func TestParseUsername(t *testing.T) {
	for _, tc := range []struct {
		user, clientID string
		host, api      string
		params         map[string]string
	}{
		{"h.net/dev/?api-version=2021-04-12", "dev", "h.net", "2021-04-12", nil},
		{"h.net/dev/api-version=2016-11-14&DeviceClientType=c", "dev", "h.net", "2016-11-14",
			map[string]string{"DeviceClientType": "c"}},
		{"h.net/dev/mod/?api-version=2020-09-30&DeviceClientType=azure-iot-device%2F1.0%20(node)&model-id=dtmi%3Aa%3Bb&x",
			"dev/mod", "h.net", "2020-09-30",
			map[string]string{"DeviceClientType": "azure-iot-device/1.0 (node)", "model-id": "dtmi:a;b", "x": ""}},
		{"h.net/a?b=c/?api-version=1&api-version=2", "a?b=c", "h.net", "1", nil},
		{"h.net/dev/?api-version=1&bad=%zz", "dev", "h.net", "1", map[string]string{"bad": "%zz"}},
		{"h.net/dev/DeviceClientType=x&api-version=1", "dev", "h.net", "1", map[string]string{"DeviceClientType": "x"}},
	} {
		u, err := parseUsername(tc.user, tc.clientID)
		if err != nil {
			t.Errorf("parseUsername(%q, %q): %v", tc.user, tc.clientID, err)
			continue
		}
		if u.Host != tc.host || u.Params["api-version"] != tc.api {
			t.Errorf("parseUsername(%q) = %+v", tc.user, u)
		}
		for k, v := range tc.params {
			if u.Params[k] != v {
				t.Errorf("parseUsername(%q): %s = %q, want %q", tc.user, k, u.Params[k], v)
			}
		}
	}
	for _, tc := range []struct{ user, clientID string }{
		{"", "dev"},
		{"h.net", "dev"},
		{"/dev/?api-version=1", "dev"},
		{"h.net/dev", "dev"},
		{"h.net/dev/", "dev"},
		{"h.net/dev/?", "dev"},
		{"h.net/dev/?DeviceClientType=x", "dev"},
		{"h.net/dev/?api-version=", "dev"},
		{"h.net/dev/?api-version", "dev"},
		{"h.net/dev/mod/api-version=1", "dev"},
		{"h.net/dev/x/?api-version=1", "dev"},
		{"h.net/dev2/?api-version=1", "dev"},
		{"h.net/dev/mod/?api-version=1", "dev"},
		{"h.net/dev/?api-version=1", "dev/mod"},
		{"h.net//?api-version=1", ""},
	} {
		if u, err := parseUsername(tc.user, tc.clientID); err == nil {
			t.Errorf("parseUsername(%q, %q) = %+v, want an error", tc.user, tc.clientID, u)
		}
	}
}

func TestParseMethodResponseTopic(t *testing.T) {
	for _, tc := range []struct {
		topic  string
		status int
		rid    string
		ok     bool
	}{
		{"$iothub/methods/res/200/?$rid=1", 200, "1", true},
		{"$iothub/methods/res/0/?$rid=ab12", 0, "ab12", true},
		{"$iothub/methods/res/-1/?$rid=x", -1, "x", true},
		{"$iothub/methods/res/65535/?foo=bar&$rid=7f&baz", 65535, "7f", true},
		{"$iothub/methods/res/200/?$rid=", 0, "", false},
		{"$iothub/methods/res/200/?rid=1", 0, "", false},
		{"$iothub/methods/res/200?$rid=1", 0, "", false},
		{"$iothub/methods/res/200/", 0, "", false},
		{"$iothub/methods/res//?$rid=1", 0, "", false},
		{"$iothub/methods/res/+200/?$rid=1", 0, "", false},
		{"$iothub/methods/res/2.5/?$rid=1", 0, "", false},
		{"$iothub/methods/res/99999999999/?$rid=1", 0, "", false},
		{"$iothub/methods/POST/200/?$rid=1", 0, "", false},
	} {
		status, rid, ok := parseMethodResponseTopic(tc.topic)
		if ok != tc.ok || status != tc.status || rid != tc.rid {
			t.Errorf("parseMethodResponseTopic(%q) = %d, %q, %v", tc.topic, status, rid, ok)
		}
	}
}

func TestClassify(t *testing.T) {
	dev := auth.Identity{DeviceID: "d1"}
	mod := auth.Identity{DeviceID: "d1", ModuleID: "m1"}
	for _, tc := range []struct {
		topic string
		id    auth.Identity
		want  topicKind
	}{
		{"$iothub/methods/res/200/?$rid=1", dev, topicMethodResponse},
		{"$iothub/methods/res/bad", mod, topicMethodResponse},
		{"devices/d1/messages/events/", dev, topicTelemetry},
		{"devices/d1/messages/events", dev, topicTelemetry},
		{"devices/d1/messages/events/a=b&c=d", dev, topicTelemetry},
		{"devices/d1/modules/m1/messages/events/", mod, topicTelemetry},
		{"devices/d1/messages/events/", mod, topicForbidden},
		{"devices/d2/messages/events/", dev, topicForbidden},
		{"devices/d1/messages/eventsX", dev, topicForbidden},
		{"devices/d1/messages/events/+", dev, topicForbidden},
		{"$iothub/twin/GET/?$rid=1", dev, topicForbidden},
		{"$iothub/methods/POST/x/?$rid=1", dev, topicForbidden},
		{"", dev, topicForbidden},
	} {
		if got := classifyTopic(tc.topic, tc.id); got != tc.want {
			t.Errorf("classifyTopic(%q, %s) = %d, want %d", tc.topic, tc.id, got, tc.want)
		}
	}
	for _, tc := range []struct {
		filter string
		id     auth.Identity
		want   filterKind
	}{
		{"$iothub/methods/POST/#", dev, filterMethods},
		{"$iothub/methods/POST/#", mod, filterMethods},
		{"$iothub/twin/res/#", dev, filterTwinResponse},
		{"$iothub/twin/PATCH/properties/desired/#", mod, filterTwinDesired},
		{"devices/d1/messages/devicebound/#", dev, filterCloudToDevice},
		{"devices/d1/messages/devicebound/#", mod, filterForbidden},
		{"devices/d2/messages/devicebound/#", dev, filterForbidden},
		{"$iothub/methods/POST/reboot", dev, filterForbidden},
		{"$iothub/methods/#", dev, filterForbidden},
		{"#", dev, filterForbidden},
		{"", dev, filterForbidden},
	} {
		if got := classifyFilter(tc.filter, tc.id); got != tc.want {
			t.Errorf("classifyFilter(%q, %s) = %d, want %d", tc.filter, tc.id, got, tc.want)
		}
	}
}

func FuzzParseUsername(f *testing.F) {
	f.Add("h.azure-devices.net/dev/?api-version=2021-04-12&DeviceClientType=x%2Fy", "dev")
	f.Add("h.azure-devices.net/dev/mod/?api-version=2020-09-30&model-id=dtmi%3Aa%3B1", "dev/mod")
	f.Add("h/dev/api-version=2016-11-14", "dev")
	f.Add("h/a?b/?api-version=1&&=&%zz=%", "a?b")
	f.Add("h/dev/?api-version=", "dev")
	f.Add("", "")
	f.Add("h//?api-version=1", "")
	f.Fuzz(func(t *testing.T, username, clientID string) {
		if id, err := parseClientID(clientID); err == nil && id.String() != clientID {
			t.Fatalf("parseClientID(%q) = %s", clientID, id)
		}
		u, err := parseUsername(username, clientID)
		if err != nil {
			return
		}
		if u.Host == "" || strings.Contains(u.Host, "/") || u.Params["api-version"] == "" {
			t.Fatalf("accepted %q with %+v", username, u)
		}
		if !strings.HasPrefix(username, u.Host+"/"+clientID+"/") {
			t.Fatalf("accepted %q for client id %q", username, clientID)
		}
		extra := maps.Clone(u.Params)
		delete(extra, "api-version")
		again, err := parseUsername(formatUsername(u.Host, clientID, u.Params["api-version"], extra), clientID)
		if err != nil {
			t.Fatalf("round trip of %q: %v", username, err)
		}
		if again.Host != u.Host || !maps.Equal(again.Params, u.Params) {
			t.Fatalf("round trip of %q: %+v, want %+v", username, again, u)
		}
	})
}

func FuzzParseTopic(f *testing.F) {
	f.Add("$iothub/methods/res/200/?$rid=1", "dev")
	f.Add("$iothub/methods/res/-7/?a=b&$rid=ff&c", "dev/mod")
	f.Add("$iothub/methods/res/x/?$rid=1", "dev")
	f.Add("devices/dev/messages/events/a=b", "dev")
	f.Add("devices/dev/modules/mod/messages/events/", "dev/mod")
	f.Add("devices/dev/messages/devicebound/#", "dev")
	f.Add("$iothub/methods/POST/#", "dev")
	f.Add("#", "")
	f.Fuzz(func(t *testing.T, topic, clientID string) {
		dev, mod, _ := strings.Cut(clientID, "/")
		id := auth.Identity{DeviceID: dev, ModuleID: mod}
		if status, rid, ok := parseMethodResponseTopic(topic); ok {
			if rid == "" || strings.Contains(rid, "&") {
				t.Fatalf("%q: rid %q", topic, rid)
			}
			s2, r2, ok2 := parseMethodResponseTopic(methodResponseTopic(status, rid))
			if !ok2 || s2 != status || r2 != rid {
				t.Fatalf("round trip of %q: %d %q %v", topic, s2, r2, ok2)
			}
			if classifyTopic(topic, id) != topicMethodResponse {
				t.Fatalf("%q parses as a response but is not classified as one", topic)
			}
		}
		switch classifyTopic(topic, id) {
		case topicTelemetry:
			if !strings.HasPrefix(topic, identityPrefix(id)+"messages/events") || strings.ContainsAny(topic, "+#") {
				t.Fatalf("%q accepted as telemetry of %s", topic, clientID)
			}
		case topicMethodResponse:
			if !strings.HasPrefix(topic, methodResponsePfx) {
				t.Fatalf("%q classified as a method response", topic)
			}
		}
		switch classifyFilter(topic, id) {
		case filterForbidden:
		case filterCloudToDevice:
			if mod != "" || topic != "devices/"+dev+"/messages/devicebound/#" {
				t.Fatalf("%q accepted as the C2D filter of %s", topic, clientID)
			}
		default:
			if topic != methodsFilter && topic != twinResponseFilter && topic != twinDesiredFilter {
				t.Fatalf("%q accepted as a filter", topic)
			}
		}
	})
}

func TestCheckTopicName(t *testing.T) {
	for _, tc := range []struct {
		topic string
		ok    bool
	}{
		{"$iothub/methods/POST/reboot/?$rid=1", true},
		{"$iothub/methods/POST/" + strings.Repeat("a", 65535-len("$iothub/methods/POST/")), true},
		{"$iothub/methods/POST/" + strings.Repeat("a", 65536-len("$iothub/methods/POST/")), false},
		{"", false},
		{"$iothub/methods/POST/a+b/?$rid=1", false},
		{"$iothub/methods/POST/a#/?$rid=1", false},
		{"$iothub/methods/POST/a\x00/?$rid=1", false},
		{"$iothub/methods/POST/\xff/?$rid=1", false},
	} {
		if err := checkTopicName(tc.topic); (err == nil) != tc.ok {
			t.Errorf("checkTopicName(%.40q) = %v, want ok %v", tc.topic, err, tc.ok)
		}
	}
}

// TestUnsendableMethodName: a request whose topic would not be valid MQTT
// fails at once with 400004 and never reaches the device, even when it
// bypasses the HTTPS API's name check.
func TestUnsendableMethodName(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	d := f.connect(f.sasOpts("dev1", key))
	d.subscribe(t, "$iothub/methods/POST/#", 0)
	for _, name := range []string{"a+b", "a#", strings.Repeat("n", 70000)} {
		r := waitInvoke(t, f.invoke("dev1", name, nil, 0))
		if r.err == nil || r.err.Code != engine.CodeArgumentInvalid {
			t.Fatalf("invoke %.20q: %+v, %v; want 400004", name, r.res, r.err)
		}
	}
	roundTrip(t, f, d, "dev1") // the connection still works, and got nothing else first
}
