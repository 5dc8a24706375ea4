package mqttd

import (
	"maps"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
		if tc.ok {
			assert.NoError(t, err, "parseClientID(%q)", tc.in)
		} else {
			assert.Error(t, err, "parseClientID(%q) = %+v", tc.in, id)
		}
		assert.Equal(t, tc.dev, id.DeviceID, "parseClientID(%q): device id", tc.in)
		assert.Equal(t, tc.mod, id.ModuleID, "parseClientID(%q): module id", tc.in)
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
		if !assert.NoError(t, err, "parseUsername(%q, %q)", tc.user, tc.clientID) {
			continue
		}
		assert.Equal(t, tc.host, u.Host, "parseUsername(%q): host", tc.user)
		assert.Equal(t, tc.api, u.Params["api-version"], "parseUsername(%q): api-version", tc.user)
		for k, v := range tc.params {
			assert.Equal(t, v, u.Params[k], "parseUsername(%q): %s", tc.user, k)
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
		u, err := parseUsername(tc.user, tc.clientID)
		assert.Error(t, err, "parseUsername(%q, %q) = %+v, want an error", tc.user, tc.clientID, u)
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
		assert.Equal(t, tc.ok, ok, "parseMethodResponseTopic(%q): ok", tc.topic)
		assert.Equal(t, tc.status, status, "parseMethodResponseTopic(%q): status", tc.topic)
		assert.Equal(t, tc.rid, rid, "parseMethodResponseTopic(%q): rid", tc.topic)
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
		{"$iothub/twin/GET/?$rid=1", dev, topicTwinGet},
		{"$iothub/twin/GET/", mod, topicTwinGet},
		{"$iothub/twin/PATCH/properties/reported/?$rid=1", mod, topicTwinReported},
		{"$iothub/twin/GET?$rid=1", dev, topicForbidden},
		{"$iothub/twin/GET/x?$rid=1", dev, topicForbidden},
		{"$iothub/twin/GET/?$rid=#", dev, topicForbidden},
		{"$iothub/twin/PATCH/properties/desired/?$rid=1", dev, topicForbidden},
		{"$iothub/twin/res/200/?$rid=1", dev, topicForbidden},
		{"$iothub/methods/POST/x/?$rid=1", dev, topicForbidden},
		{"", dev, topicForbidden},
	} {
		assert.Equal(t, tc.want, classifyTopic(tc.topic, tc.id), "classifyTopic(%q, %s)", tc.topic, tc.id)
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
		assert.Equal(t, tc.want, classifyFilter(tc.filter, tc.id), "classifyFilter(%q, %s)", tc.filter, tc.id)
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
		if id, err := parseClientID(clientID); err == nil {
			require.Equal(t, clientID, id.String(), "parseClientID(%q)", clientID)
		}
		u, err := parseUsername(username, clientID)
		if err != nil {
			return
		}
		require.NotEmpty(t, u.Host, "accepted %q with %+v", username, u)
		require.NotContains(t, u.Host, "/", "accepted %q with %+v", username, u)
		require.NotEmpty(t, u.Params["api-version"], "accepted %q with %+v", username, u)
		require.True(t, strings.HasPrefix(username, u.Host+"/"+clientID+"/"), "accepted %q for client id %q", username, clientID)
		extra := maps.Clone(u.Params)
		delete(extra, "api-version")
		again, err := parseUsername(formatUsername(u.Host, clientID, u.Params["api-version"], extra), clientID)
		require.NoError(t, err, "round trip of %q", username)
		require.Equal(t, u.Host, again.Host, "round trip of %q: host", username)
		require.True(t, maps.Equal(again.Params, u.Params), "round trip of %q: %+v, want %+v", username, again, u)
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
			require.NotEmpty(t, rid, "%q: rid", topic)
			require.NotContains(t, rid, "&", "%q: rid %q", topic, rid)
			s2, r2, ok2 := parseMethodResponseTopic(methodResponseTopic(status, rid))
			require.True(t, ok2, "round trip of %q", topic)
			require.Equal(t, status, s2, "round trip of %q: status", topic)
			require.Equal(t, rid, r2, "round trip of %q: rid", topic)
			require.Equal(t, topicMethodResponse, classifyTopic(topic, id), "%q parses as a response but is not classified as one", topic)
		}
		switch classifyTopic(topic, id) {
		case topicTelemetry:
			require.True(t, strings.HasPrefix(topic, identityPrefix(id)+"messages/events"), "%q accepted as telemetry of %s", topic, clientID)
			require.False(t, strings.ContainsAny(topic, "+#"), "%q accepted as telemetry of %s", topic, clientID)
		case topicMethodResponse:
			require.True(t, strings.HasPrefix(topic, methodResponsePfx), "%q classified as a method response", topic)
		}
		switch classifyFilter(topic, id) {
		case filterForbidden:
		case filterCloudToDevice:
			require.Empty(t, mod, "%q accepted as the C2D filter of %s", topic, clientID)
			require.Equal(t, "devices/"+dev+"/messages/devicebound/#", topic, "%q accepted as the C2D filter of %s", topic, clientID)
		default:
			require.Contains(t, []string{methodsFilter, twinResponseFilter, twinDesiredFilter}, topic, "%q accepted as a filter", topic)
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
		err := checkTopicName(tc.topic)
		if tc.ok {
			assert.NoError(t, err, "checkTopicName(%.40q)", tc.topic)
		} else {
			assert.Error(t, err, "checkTopicName(%.40q)", tc.topic)
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
		requireCode(t, r, engine.CodeArgumentInvalid, "invoke %.20q: %+v, %v; want 400004", name, r.res, r.err)
	}
	roundTrip(t, f, d, "dev1") // the connection still works, and got nothing else first
}
