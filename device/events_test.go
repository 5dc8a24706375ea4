package device_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
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
				require.NoError(t, c.SendEvent(ctx, m), "SendEvent %d", i)
			}
			got, err := hub.WaitEvents(ctx, len(msgs))
			require.NoError(t, err)
			require.Len(t, got, len(msgs), "events at the hub")
			for i, m := range msgs {
				e := got[i]
				assert.Equal(t, "dev1", e.DeviceID, "event %d", i)
				assert.Empty(t, e.ModuleID, "event %d", i)
				assert.Equal(t, string(m.Body), string(e.Body), "event %d body (%s)", i, summary(e))
				assert.Equal(t, m.MessageID, e.MessageID, "event %d message id", i)
				assert.Equal(t, m.CorrelationID, e.CorrelationID, "event %d correlation id", i)
				assert.Equal(t, m.ContentType, e.ContentType, "event %d content type", i)
				assert.Equal(t, m.ContentEncoding, e.ContentEncoding, "event %d content encoding", i)
				assert.Len(t, e.Properties, len(m.Properties), "event %d properties %v, want %v", i, e.Properties, m.Properties)
				for k, v := range m.Properties {
					assert.Equal(t, v, e.Properties[k], "event %d property %q", i, k)
				}
				assert.Equal(t, tr.name, e.Protocol, "event %d protocol", i)
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
	require.ErrorIs(t, c.SendEvent(ctx, big), device.ErrMessageTooLarge, "oversized message")
	require.ErrorIs(t, c.SendEvent(ctx, big), transport.ErrMessageTooLarge, "device.ErrMessageTooLarge is transport's")
	require.ErrorIs(t, c.SendEvent(ctx, &device.Message{Properties: map[string]string{"": "x"}}), device.ErrInvalidProperty, "empty property name")
	require.Error(t, c.SendEvent(ctx, nil), "nil message")
	// Over HTTPS, property characters are limited.
	hc := newClient(t, hub, hub.AddDevice(t, "dev2"), &device.ClientOptions{Transport: http.New(nil)}, nil)
	require.ErrorIs(t, hc.SendEvent(ctx, &device.Message{Properties: map[string]string{"a b": "x"}}), device.ErrInvalidProperty, "bad HTTPS property")
	require.Empty(t, hub.Events(), "refused messages reached the hub")
	// A client that never connected says so.
	nc, err := device.NewClientFromConnectionString(hub.AddDevice(t, "dev3"), &device.ClientOptions{TLSConfig: hub.TLSConfig()})
	require.NoError(t, err)
	require.ErrorIs(t, nc.SendEvent(ctx, &device.Message{Body: []byte("x")}), device.ErrNotConnected, "SendEvent before Connect")
	nc.Close(ctx)
	require.ErrorIs(t, nc.SendEvent(ctx, &device.Message{Body: []byte("x")}), device.ErrClosed, "SendEvent after Close")
}

// device.Message is counted as transport's: the same limit, the same size.
func TestMessageSize(t *testing.T) {
	assert.Equal(t, transport.MaxMessageSize, device.MaxMessageSize)
	m := device.Message{Body: []byte("body"), MessageID: "m", CorrelationID: "c", ContentType: "ct", ContentEncoding: "ce",
		Properties: map[string]string{"k": "value"}}
	tm := transport.Message{Body: m.Body, MessageID: m.MessageID, CorrelationID: m.CorrelationID, ContentType: m.ContentType,
		ContentEncoding: m.ContentEncoding, Properties: m.Properties}
	assert.Equal(t, tm.Size(), m.Size())
	assert.Equal(t, 4+1+1+2+2+1+5, m.Size())
}

// Direct methods over HTTPS are refused at once, with a clear error.
func TestHTTPRefusesMethods(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c, err := device.NewClientFromConnectionString(hub.AddDevice(t, "dev1"), &device.ClientOptions{Transport: http.New(nil), TLSConfig: hub.TLSConfig()})
	require.NoError(t, err)
	defer c.Close(context.Background())
	err = c.SetMethodHandler("reboot", echo)
	require.ErrorIs(t, err, device.ErrUnsupported, "SetMethodHandler over HTTP")
	assert.ErrorContains(t, err, "use MQTT or AMQP", "SetMethodHandler over HTTP says what to do")
	require.ErrorIs(t, c.SetDefaultMethodHandler(echo), transport.ErrUnsupported, "SetDefaultMethodHandler over HTTP")
	require.NoError(t, c.SetMethodHandler("reboot", nil), "removing a handler")
	require.NoError(t, c.Connect(context.Background()), "Connect for telemetry only")
	// The hub sees no method subscription: callers get 404103.
	r := call(t, hub, "dev1", "reboot", "")
	require.Equal(t, 404, r.HTTP, "invoke of an HTTP device: %v", r)
	require.Contains(t, r.Raw, "404103", "invoke of an HTTP device")
}

// An X.509 device sends telemetry over every transport, including HTTPS
// (where the hub reads the client certificate of the request).
func TestSendEventX509(t *testing.T) {
	for _, tr := range eventTransports {
		t.Run(tr.name, func(t *testing.T) {
			hub := iothubtest.NewServer(t, nil)
			cs, cert := hub.AddX509Device(t, "x1")
			cred, err := authX509(cert)
			require.NoError(t, err)
			c := newClient(t, hub, cs, &device.ClientOptions{Transport: tr.tr, X509: cred}, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			require.NoError(t, c.SendEvent(ctx, &device.Message{Body: []byte("from x509")}))
			evs := hub.Events()
			require.Len(t, evs, 1, "events %+v", evs)
			require.Equal(t, "x1", evs[0].DeviceID)
			require.Equal(t, "from x509", string(evs[0].Body))
		})
	}
}

// Issue 16.3: over MQTT, properties URL-encoded into a topic longer than an
// MQTT packet can carry fail with mqtt.ErrTopicTooLong, an
// ErrInvalidProperty, instead of being cut short (a property shortened, the
// next ones lost) with a nil error; the hub receives nothing. AMQP carries
// the same message.
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
				require.ErrorIs(t, err, device.ErrInvalidProperty)
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
