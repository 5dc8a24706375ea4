package device_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/transport"
	"github.com/iothub-go/iothub/transport/amqp"
	"github.com/iothub-go/iothub/transport/http"
	"github.com/iothub-go/iothub/transport/mqtt"
)

// eventTransports are the device transports that carry telemetry.
var eventTransports = []struct {
	name string
	tr   transport.Transport
}{
	{"mqtt", mqtt.New(nil)},
	{"mqtt-ws", mqtt.New(&mqtt.Options{WebSocket: true})},
	{"amqp", amqp.New(nil)},
	{"amqp-ws", amqp.New(&amqp.Options{WebSocket: true})},
	{"http", http.New(nil)},
}

func TestSendEvent(t *testing.T) {
	for _, tr := range eventTransports {
		t.Run(tr.name, func(t *testing.T) {
			hub := iothubtest.NewServer(t, nil)
			c := newClient(t, hub, hub.AddDevice(t, "dev1"), &device.ClientOptions{Transport: tr.tr}, nil)
			msgs := []*device.Message{
				{Body: []byte(`{"temp":21.5}`), MessageID: "m-1", CorrelationID: "c-1", ContentType: "application/json", ContentEncoding: "utf-8",
					Properties: map[string]string{"alert": "false", "site": "b-12"}},
				{Body: []byte("plain text, no properties")},
				{Body: make([]byte, 200*1024)},
			}
			if tr.name != "http" { // HTTPS allows only token characters in properties
				msgs = append(msgs, &device.Message{Body: []byte("x"), Properties: map[string]string{"with space": "a=b&c/d?é"}})
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for i, m := range msgs {
				if err := c.SendEvent(ctx, m); err != nil {
					t.Fatalf("SendEvent %d: %v", i, err)
				}
			}
			got, err := hub.WaitEvents(ctx, len(msgs))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(msgs) {
				t.Fatalf("hub has %d events, want %d", len(got), len(msgs))
			}
			for i, m := range msgs {
				e := got[i]
				if e.DeviceID != "dev1" || e.ModuleID != "" || string(e.Body) != string(m.Body) || e.MessageID != m.MessageID ||
					e.CorrelationID != m.CorrelationID || e.ContentType != m.ContentType || e.ContentEncoding != m.ContentEncoding {
					t.Errorf("event %d = %+v, want %+v", i, summary(e), m)
				}
				if len(e.Properties) != len(m.Properties) {
					t.Errorf("event %d properties %v, want %v", i, e.Properties, m.Properties)
				}
				for k, v := range m.Properties {
					if e.Properties[k] != v {
						t.Errorf("event %d property %q = %q, want %q", i, k, e.Properties[k], v)
					}
				}
				if e.Protocol != tr.name {
					t.Errorf("event %d protocol %q, want %q", i, e.Protocol, tr.name)
				}
			}
		})
	}
}

func summary(e iothubtest.Event) string {
	b := string(e.Body)
	if len(b) > 40 {
		b = b[:40] + "…"
	}
	return e.DeviceID + " " + e.Protocol + " " + b + " mid=" + e.MessageID + " cid=" + e.CorrelationID + " ct=" + e.ContentType + " ce=" + e.ContentEncoding
}

func TestSendEventRefused(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c := newClient(t, hub, hub.AddDevice(t, "dev1"), nil, nil)
	ctx := context.Background()
	big := &device.Message{Body: make([]byte, device.MaxMessageSize-3), Properties: map[string]string{"ab": "cd"}}
	if err := c.SendEvent(ctx, big); err == nil || !strings.Contains(err.Error(), "limit is 256 KB") {
		t.Fatalf("oversized message: %v", err)
	}
	if err := c.SendEvent(ctx, &device.Message{Properties: map[string]string{"": "x"}}); err == nil {
		t.Fatal("empty property name accepted")
	}
	// Over HTTPS, property characters are limited.
	hc := newClient(t, hub, hub.AddDevice(t, "dev2"), &device.ClientOptions{Transport: http.New(nil)}, nil)
	if err := hc.SendEvent(ctx, &device.Message{Properties: map[string]string{"a b": "x"}}); err == nil || !strings.Contains(err.Error(), "not allowed over HTTPS") {
		t.Fatalf("bad HTTPS property: %v", err)
	}
	if len(hub.Events()) != 0 {
		t.Fatalf("refused messages reached the hub: %d", len(hub.Events()))
	}
	// A client that never connected says so.
	nc, err := device.NewClientFromConnectionString(hub.AddDevice(t, "dev3"), &device.ClientOptions{TLSConfig: hub.TLSConfig()})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.SendEvent(ctx, &device.Message{Body: []byte("x")}); !errors.Is(err, device.ErrNotConnected) {
		t.Fatalf("SendEvent before Connect: %v", err)
	}
	nc.Close(ctx)
	if err := nc.SendEvent(ctx, &device.Message{Body: []byte("x")}); !errors.Is(err, device.ErrClosed) {
		t.Fatalf("SendEvent after Close: %v", err)
	}
}

// Direct methods over HTTPS are refused at once, with a clear error.
func TestHTTPRefusesMethods(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c, err := device.NewClientFromConnectionString(hub.AddDevice(t, "dev1"), &device.ClientOptions{Transport: http.New(nil), TLSConfig: hub.TLSConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	err = c.SetMethodHandler("reboot", echo)
	if !errors.Is(err, transport.ErrUnsupported) || !strings.Contains(err.Error(), "use MQTT or AMQP") {
		t.Fatalf("SetMethodHandler over HTTP: %v", err)
	}
	if err := c.SetDefaultMethodHandler(echo); !errors.Is(err, transport.ErrUnsupported) {
		t.Fatalf("SetDefaultMethodHandler over HTTP: %v", err)
	}
	if err := c.SetMethodHandler("reboot", nil); err != nil {
		t.Fatalf("removing a handler: %v", err)
	}
	if err := c.Connect(context.Background()); err != nil {
		t.Fatalf("Connect for telemetry only: %v", err)
	}
	// The hub sees no method subscription: callers get 404103.
	if r := call(t, hub, "dev1", "reboot", ""); r.HTTP != 404 || !strings.Contains(r.Raw, "404103") {
		t.Fatalf("invoke of an HTTP device: %+v", r)
	}
}

// An X.509 device sends telemetry over every transport, including HTTPS
// (where the hub reads the client certificate of the request).
func TestSendEventX509(t *testing.T) {
	for _, tr := range eventTransports {
		t.Run(tr.name, func(t *testing.T) {
			hub := iothubtest.NewServer(t, nil)
			cs, cert := hub.AddX509Device(t, "x1")
			cred, err := authX509(cert)
			if err != nil {
				t.Fatal(err)
			}
			c := newClient(t, hub, cs, &device.ClientOptions{Transport: tr.tr, X509: cred}, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := c.SendEvent(ctx, &device.Message{Body: []byte("from x509")}); err != nil {
				t.Fatal(err)
			}
			if evs := hub.Events(); len(evs) != 1 || evs[0].DeviceID != "x1" || string(evs[0].Body) != "from x509" {
				t.Fatalf("events %+v", evs)
			}
		})
	}
}

// Issue 16.3: over MQTT, properties URL-encoded into a topic longer than an
// MQTT packet can carry fail with mqtt.ErrTopicTooLong instead of being cut
// short (a property shortened, the next ones lost) with a nil error; the
// hub receives nothing. AMQP carries the same message.
func TestSendEventTopicTooLong(t *testing.T) {
	long := &device.Message{Body: []byte("x"), Properties: map[string]string{"a": strings.Repeat("é", 12000), "z": "last"}}
	many := &device.Message{Body: []byte("x"), Properties: map[string]string{}}
	for i := range 3000 {
		many.Properties[fmt.Sprintf("p%04d", i)] = "&&&&&&"
	}
	for _, tr := range eventTransports[:3] { // mqtt, mqtt-ws, amqp
		t.Run(tr.name, func(t *testing.T) {
			hub := iothubtest.NewServer(t, nil)
			c := newClient(t, hub, hub.AddDevice(t, "dev1"), &device.ClientOptions{Transport: tr.tr}, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for _, m := range []*device.Message{long, many} {
				require.Less(t, m.Size(), device.MaxMessageSize)
				err := c.SendEvent(ctx, m)
				if tr.name == "amqp" {
					require.NoError(t, err)
					continue
				}
				require.ErrorIs(t, err, mqtt.ErrTopicTooLong)
			}
			if tr.name == "amqp" {
				got, err := hub.WaitEvents(ctx, 2)
				require.NoError(t, err)
				require.Equal(t, long.Properties, got[0].Properties)
				return
			}
			// The connection is still usable, and the refused messages
			// never reached the hub.
			require.NoError(t, c.SendEvent(ctx, &device.Message{Body: []byte("after")}))
			got, err := hub.WaitEvents(ctx, 1)
			require.NoError(t, err)
			require.Len(t, got, 1)
			require.Equal(t, "after", string(got[0].Body))
		})
	}
}
