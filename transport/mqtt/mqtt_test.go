package mqtt

import (
	"strings"
	"testing"

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
		name, rid, ok := ParseMethodTopic(tc.topic)
		if name != tc.name || rid != tc.rid || ok != tc.ok {
			t.Errorf("ParseMethodTopic(%q) = %q, %q, %v; want %q, %q, %v", tc.topic, name, rid, ok, tc.name, tc.rid, tc.ok)
		}
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
		name, rid, ok := ParseMethodTopic(topic)
		if !ok {
			if name != "" || rid != "" {
				t.Fatalf("failed parse returned %q, %q", name, rid)
			}
			return
		}
		if name == "" || rid == "" || strings.ContainsAny(name, "/?") {
			t.Fatalf("ParseMethodTopic(%q) = %q, %q", topic, name, rid)
		}
		// A topic rebuilt from the parts parses to the same parts.
		n2, r2, ok2 := ParseMethodTopic("$iothub/methods/POST/" + name + "/?$rid=" + rid)
		if !ok2 || n2 != name || (r2 != rid && !strings.Contains(rid, "&")) {
			t.Fatalf("round trip of %q: %q, %q, %v", topic, n2, r2, ok2)
		}
	})
}

func TestUsernameAndBroker(t *testing.T) {
	cfg := transport.Config{Identity: auth.Identity{HostName: "h.azure-devices.net", DeviceID: "d1", ModuleID: "m1"}, ProductInfo: "iothub-go/0.1.0 (go1.26; linux/amd64)"}
	want := "h.azure-devices.net/d1/m1/?api-version=2021-04-12&DeviceClientType=iothub-go%2F0.1.0+%28go1.26%3B+linux%2Famd64%29"
	if got := Username(cfg); got != want {
		t.Errorf("Username = %q, want %q", got, want)
	}
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
		if err != nil || url != tc.url || sn != tc.serverName {
			t.Errorf("brokerURL(%q, ws=%v) = %q, %q, %v; want %q, %q", tc.addr, tc.ws, url, sn, err, tc.url, tc.serverName)
		}
	}
	if _, _, _, err := New(nil).brokerURL(""); err == nil {
		t.Error("empty address accepted")
	}
}
