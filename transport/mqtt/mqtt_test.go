package mqtt

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseMethodTopic(t *testing.T) {
	for _, tc := range []struct {
		topic, name, rid string
		ok               bool
	}{
		{"$iothub/methods/POST/reboot/?$rid=1", "reboot", "1", true},
		{"$iothub/methods/POST/reboot?$rid=abc", "reboot", "abc", true}, // "/" before "?" is optional
		{"$iothub/methods/POST/a-b_c.d/?$rid=ff&x=y", "a-b_c.d", "ff", true},
		{"$iothub/methods/POST/m/?x=y&$rid=9", "m", "9", true},
		{"$iothub/methods/POST//?$rid=1", "", "", false},
		{"$iothub/methods/POST/reboot/", "", "", false},
		{"$iothub/methods/POST/reboot/?$rid=", "", "", false},
		{"$iothub/methods/POST/a/b/?$rid=1", "", "", false},
		{"$iothub/methods/res/200/?$rid=1", "", "", false},
		{"devices/d/messages/devicebound/x", "", "", false},
		{"", "", "", false},
	} {
		name, rid, ok := parseMethodTopic(tc.topic)
		assert.Equal(t, []any{tc.name, tc.rid, tc.ok}, []any{name, rid, ok}, "parseMethodTopic(%q)", tc.topic)
	}
}

func FuzzParseMethodTopic(f *testing.F) {
	for _, s := range []string{
		"$iothub/methods/POST/reboot/?$rid=1", "$iothub/methods/POST/x?$rid=2&a=b", "$iothub/methods/POST/",
		"$iothub/methods/POST/a/b/?$rid=1", "$iothub/methods/POST/?$rid=", "\x00", "$iothub/methods/POST/é/?$rid=%zz",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		name, rid, ok := parseMethodTopic(topic)
		if !ok {
			require.Empty(t, name, "name of a failed parse")
			require.Empty(t, rid, "rid of a failed parse")
			return
		}
		require.NotEmpty(t, name, "parseMethodTopic(%q)", topic)
		require.NotEmpty(t, rid, "parseMethodTopic(%q)", topic)
		require.NotContains(t, name, "/", "parseMethodTopic(%q)", topic)
		require.NotContains(t, name, "?", "parseMethodTopic(%q)", topic)
		// A topic rebuilt from the parts parses to the same parts.
		n2, r2, ok2 := parseMethodTopic("$iothub/methods/POST/" + name + "/?$rid=" + rid)
		require.True(t, ok2, "round trip of %q", topic)
		require.Equal(t, name, n2, "round trip of %q", topic)
		if !strings.Contains(rid, "&") {
			require.Equal(t, rid, r2, "round trip of %q", topic)
		}
	})
}

func TestUsernameAndBroker(t *testing.T) {
	cfg := transport.Config{Identity: auth.Identity{HostName: "h.azure-devices.net", DeviceID: "d1", ModuleID: "m1"}, ProductInfo: "iothub-go/0.1.0 (go1.26; linux/amd64)"}
	want := "h.azure-devices.net/d1/m1/?api-version=2021-04-12&DeviceClientType=iothub-go%2F0.1.0+%28go1.26%3B+linux%2Famd64%29"
	assert.Equal(t, want, username(cfg), "username")
	for _, tc := range []struct {
		ws         bool
		addr, url  string
		serverName string
	}{
		{false, "h.azure-devices.net", "tls://h.azure-devices.net:8883", "h.azure-devices.net"},
		{true, "h.azure-devices.net", "wss://h.azure-devices.net:443/$iothub/websocket", "h.azure-devices.net"},
		{false, "127.0.0.1:1234", "tls://127.0.0.1:1234", "127.0.0.1"},
		{true, "localhost:9443", "wss://localhost:9443/$iothub/websocket", "localhost"},
		{false, "[::1]:8883", "tls://[::1]:8883", "::1"},
	} {
		url, _, sn, err := New(&Options{WebSocket: tc.ws}).brokerURL(tc.addr)
		if assert.NoError(t, err, "brokerURL(%q, ws=%v)", tc.addr, tc.ws) {
			assert.Equal(t, tc.url, url, "brokerURL(%q, ws=%v)", tc.addr, tc.ws)
			assert.Equal(t, tc.serverName, sn, "brokerURL(%q, ws=%v) server name", tc.addr, tc.ws)
		}
	}
	_, _, _, err := New(nil).brokerURL("")
	assert.Error(t, err, "empty address accepted")
}

// SendEvent refuses, before publishing anything, a message over the size
// limit, one with an empty property name and one whose properties make the
// topic too long; each error wraps its sentinel. (The conn has no MQTT
// client: a publish would panic.)
func TestSendEventRefusals(t *testing.T) {
	c := &conn{id: auth.Identity{HostName: "h", DeviceID: "d"}}
	ctx := context.Background()
	err := c.SendEvent(ctx, &transport.Message{Body: make([]byte, transport.MaxMessageSize+1)})
	require.ErrorIs(t, err, transport.ErrMessageTooLarge)
	err = c.SendEvent(ctx, &transport.Message{Properties: map[string]string{"": "v"}})
	require.ErrorIs(t, err, transport.ErrInvalidProperty)
	err = c.SendEvent(ctx, &transport.Message{Properties: map[string]string{"a": strings.Repeat("é", 12000)}})
	require.ErrorIs(t, err, ErrTopicTooLong)
	require.ErrorIs(t, err, transport.ErrInvalidProperty, "ErrTopicTooLong is an invalid property")
	assert.NotErrorIs(t, err, transport.ErrMessageTooLarge)
}
