package mqtt

import (
	"context"
	"crypto/tls"

	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub"
	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/internal/hub/mqttd"
	"github.com/iothub-go/iothub/transport"
)

// c2dHub is a local hub whose engine the tests drive directly (to queue
// cloud-to-device messages without a service client).
type c2dHub struct {
	*hub.Hub
	t *testing.T
}

func startC2DHub(t *testing.T) *c2dHub {
	t.Helper()
	h, err := hub.Start(hub.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = h.Close() })
	return &c2dHub{Hub: h, t: t}
}

// c2dDevice is a connection with the cloud-to-device messages it got.
type c2dDevice struct {
	transport.Conn
	msgs chan *transport.CloudMessage
}

// dial connects identity id (created on first use) over MQTT.
func (h *c2dHub) dial(id auth.Identity) *c2dDevice {
	t := h.t
	t.Helper()
	id.HostName = h.Engine.HostName()
	var key string
	if id.ModuleID == "" {
		if d, herr := h.Engine.GetDevice(id.DeviceID); herr == nil {
			key = *d.Authentication.SymmetricKey.PrimaryKey
		} else {
			d, herr := h.Engine.PutDevice(id.DeviceID, engine.Device{}, "")
			require.Nil(t, herr)
			key = *d.Authentication.SymmetricKey.PrimaryKey
		}
	} else {
		_, _ = h.Engine.PutDevice(id.DeviceID, engine.Device{}, "")
		m, herr := h.Engine.PutModule(id.DeviceID, id.ModuleID, engine.Module{}, "")
		require.Nil(t, herr)
		key = *m.Authentication.SymmetricKey.PrimaryKey
	}
	tok, err := auth.SignSAS(id.Resource(), "", key, time.Now().Add(time.Hour))
	require.NoError(t, err)
	d := &c2dDevice{msgs: make(chan *transport.CloudMessage, 100)}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	c, err := New(nil).Dial(ctx, transport.Config{
		Identity:    id,
		Address:     h.Addrs()[0].String(),
		Token:       tok,
		TLSConfig:   &tls.Config{RootCAs: h.CA.Pool(), MinVersion: tls.VersionTLS12},
		ProductInfo: "iothub-go-test/1.0",
		Logger:      slog.New(slog.DiscardHandler),
		Messages:    func(m *transport.CloudMessage) { d.msgs <- m },
	})
	require.NoError(t, err, "Dial")
	t.Cleanup(func() { _ = c.Close() })
	d.Conn = c
	return d
}

func (d *c2dDevice) next(t *testing.T) *transport.CloudMessage {
	t.Helper()
	select {
	case m := <-d.msgs:
		return m
	case <-time.After(waitLong):
		require.FailNow(t, "no cloud-to-device message arrived")
		return nil
	}
}

func (h *c2dHub) enqueue(deviceID string, m engine.C2DMessage) engine.C2DMessage {
	h.t.Helper()
	q, herr := h.Engine.EnqueueC2D(deviceID, m)
	require.Nil(h.t, herr, "EnqueueC2D")
	return q
}

func (h *c2dHub) waitQueue(deviceID string, ok func([]engine.QueuedC2D) bool, what string) {
	h.t.Helper()
	require.Eventually(h.t, func() bool { return ok(h.Engine.C2DQueue(deviceID)) }, waitLong, 5*time.Millisecond, what)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	t.Cleanup(cancel)
	return ctx
}

func TestSubscribeMessagesAndComplete(t *testing.T) {
	h := startC2DHub(t)
	d := h.dial(auth.Identity{DeviceID: "dev1"})
	require.NoError(t, d.SubscribeMessages(ctxT(t)))
	q := h.enqueue("dev1", engine.C2DMessage{
		MessageID: "m1", CorrelationID: "c 1", UserID: "svc", ContentType: "application/json",
		ContentEncoding: "utf-8", Ack: "full", Properties: map[string]string{"k": "v/w", "e": "", "$x": "+"},
		Body: []byte(`{"a":1}`),
	})
	m := d.next(t)
	assert.Equal(t, []byte(`{"a":1}`), m.Body)
	assert.Equal(t, "m1", m.MessageID)
	assert.Equal(t, "c 1", m.CorrelationID)
	assert.Equal(t, "svc", m.UserID)
	assert.Equal(t, "/devices/dev1/messages/devicebound", m.To)
	assert.Equal(t, "application/json", m.ContentType)
	assert.Equal(t, "utf-8", m.ContentEncoding)
	assert.Equal(t, "full", m.Ack)
	assert.WithinDuration(t, q.ExpiryTime, m.ExpiryTime, 100*time.Nanosecond, "expiry (.NET's format has 100 ns ticks)")
	assert.Equal(t, map[string]string{"k": "v/w", "e": "", "$x": "+"}, m.Properties)
	assert.NotEmpty(t, m.LockToken)

	// Not acknowledged before SettleMessage.
	h.waitQueue("dev1", func(q []engine.QueuedC2D) bool { return len(q) == 1 && q[0].Locked }, "the message is not locked")
	require.NoError(t, d.SettleMessage(ctxT(t), m.LockToken, transport.Complete))
	h.waitQueue("dev1", func(q []engine.QueuedC2D) bool { return len(q) == 0 }, "Complete did not complete the message")
	// A second settlement of the same delivery: the lock is gone.
	assert.ErrorIs(t, d.SettleMessage(ctxT(t), m.LockToken, transport.Complete), transport.ErrLockLost)
	assert.ErrorIs(t, d.SettleMessage(ctxT(t), "unknown", transport.Complete), transport.ErrLockLost)
}

func TestSettleMessageRejectAbandonUnsupported(t *testing.T) {
	h := startC2DHub(t)
	d := h.dial(auth.Identity{DeviceID: "dev1"})
	require.NoError(t, d.SubscribeMessages(ctxT(t)))
	h.enqueue("dev1", engine.C2DMessage{MessageID: "m1"})
	m := d.next(t)
	for _, disp := range []transport.Disposition{transport.Reject, transport.Abandon} {
		err := d.SettleMessage(ctxT(t), m.LockToken, disp)
		require.ErrorIs(t, err, transport.ErrUnsupported, "%s", disp)
	}
	assert.Error(t, d.SettleMessage(ctxT(t), m.LockToken, transport.Disposition(9)))
	// Still unacknowledged: after a reconnect the hub delivers it again.
	h.waitQueue("dev1", func(q []engine.QueuedC2D) bool { return len(q) == 1 && q[0].Locked }, "the message is not locked")
	require.NoError(t, d.Close())
	assert.ErrorIs(t, d.SettleMessage(ctxT(t), m.LockToken, transport.Complete), transport.ErrLockLost,
		"a token of an ended connection")

	d2 := h.dial(auth.Identity{DeviceID: "dev1"})
	require.NoError(t, d2.SubscribeMessages(ctxT(t)))
	again := d2.next(t)
	assert.Equal(t, "m1", again.MessageID)
	assert.NotEqual(t, m.LockToken, again.LockToken)
	assert.ErrorIs(t, d2.SettleMessage(ctxT(t), m.LockToken, transport.Complete), transport.ErrLockLost,
		"the old connection's token")
	require.NoError(t, d2.SettleMessage(ctxT(t), again.LockToken, transport.Complete))
	h.waitQueue("dev1", func(q []engine.QueuedC2D) bool { return len(q) == 0 }, "Complete did not complete the message")
}

func TestSubscribeMessagesEveryConnection(t *testing.T) {
	h := startC2DHub(t)
	for i := range 2 {
		d := h.dial(auth.Identity{DeviceID: "dev1"})
		require.NoError(t, d.SubscribeMessages(ctxT(t)), "connection %d", i)
		h.enqueue("dev1", engine.C2DMessage{MessageID: "m"})
		m := d.next(t)
		require.NoError(t, d.SettleMessage(ctxT(t), m.LockToken, transport.Complete))
		h.waitQueue("dev1", func(q []engine.QueuedC2D) bool { return len(q) == 0 }, "Complete did not complete the message")
		require.NoError(t, d.Close())
	}
}

func TestSubscribeMessagesModuleUnsupported(t *testing.T) {
	h := startC2DHub(t)
	d := h.dial(auth.Identity{DeviceID: "dev1", ModuleID: "mod1"})
	require.ErrorIs(t, d.SubscribeMessages(ctxT(t)), transport.ErrUnsupported)
	// Nothing was sent: the connection is still up.
	_, err := d.GetTwin(ctxT(t))
	require.NoError(t, err)
}

func TestReceiveMessageUnsupported(t *testing.T) {
	h := startC2DHub(t)
	d := h.dial(auth.Identity{DeviceID: "dev1"})
	m, err := d.ReceiveMessage(ctxT(t))
	assert.Nil(t, m)
	assert.ErrorIs(t, err, transport.ErrUnsupported)
}

func TestParseCloudTopic(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 600, time.UTC)
	for _, tc := range []struct {
		topic string
		want  transport.CloudMessage
		ok    bool
	}{
		{"devices/d/messages/devicebound", transport.CloudMessage{}, true},
		{"devices/d/messages/devicebound/", transport.CloudMessage{}, true},
		{"devices/d/messages/devicebound/%24.to=%2Fdevices%2Fd%2Fmessages%2FdeviceBound&foo=bar",
			transport.CloudMessage{To: "/devices/d/messages/deviceBound", Properties: map[string]string{"foo": "bar"}}, true},
		// A literal "$", a "?" before the bag, a trailing "/".
		{"devices/d/messages/devicebound/?$.mid=1&$.cid=2&iothub-ack=Full/",
			transport.CloudMessage{MessageID: "1", CorrelationID: "2", Ack: "Full"}, true},
		{"devices/d/messages/devicebound/%24.mid=6b82&%24.exp=0&%24.uid=u&%24.ct=text%2Fplain%3B%20charset%3DUTF-8&%24.ce=utf-8",
			transport.CloudMessage{MessageID: "6b82", UserID: "u", ContentType: "text/plain; charset=UTF-8", ContentEncoding: "utf-8"}, true},
		{"devices/d/messages/devicebound/%24.exp=2030-01-02T03%3A04%3A05.0000006Z",
			transport.CloudMessage{ExpiryTime: exp}, true},
		// Bare keys, empty values, bad escapes, "+" kept.
		{"devices/d/messages/devicebound/a&b=&c=%zz&d=1+2&&=v",
			transport.CloudMessage{Properties: map[string]string{"a": "", "b": "", "c": "%zz", "d": "1+2", "": "v"}}, true},
		{"devices/d/messages/deviceboundx", transport.CloudMessage{}, false},
		{"devices/d/modules/m/messages/devicebound/a=b", transport.CloudMessage{}, false},
		{"devices//messages/devicebound/a=b", transport.CloudMessage{}, false},
		{"$iothub/methods/POST/x/?$rid=1", transport.CloudMessage{}, false},
		{"", transport.CloudMessage{}, false},
	} {
		got, ok := parseCloudTopic(tc.topic)
		assert.Equal(t, tc.ok, ok, "parseCloudTopic(%q)", tc.topic)
		assert.Equal(t, tc.want, got, "parseCloudTopic(%q)", tc.topic)
	}
}

// FuzzParseCloudTopic: any topic parses without panicking, and a message
// formatted by the hub (mqttd.FormatC2DTopic) reads back as sent.
func FuzzParseCloudTopic(f *testing.F) {
	for _, s := range []string{
		"devices/d/messages/devicebound/%24.to=%2Fdevices%2Fd%2Fmessages%2FdeviceBound&foo=bar",
		"devices/d/messages/devicebound/%24.mid=1&%24.exp=0&iothub-ack=full&p=%E2%82%AC",
		"devices/d/messages/devicebound/?a&=&%&%2&%zz=%",
		"devices/d/messages/devicebound", "devices/", "devices/d/messages/devicebound/a/b/c", "\x00\xff",
	} {
		f.Add(s, "dev", "mid", "k", "v")
	}
	f.Add("", "d é", "a&b=c/d", "$.x", "+%20 ")
	f.Add("", "d", "", "", "")
	f.Fuzz(func(t *testing.T, topic, dev, mid, k, v string) {
		parseCloudTopic(topic) // must not panic

		if dev == "" || strings.ContainsAny(dev, "/") || strings.Contains(dev, "/messages/devicebound") {
			return
		}
		sent := engine.C2DMessage{MessageID: mid, CorrelationID: v, To: "/devices/" + dev, Ack: k,
			ExpiryTime: time.Unix(1893456000, 123456700), Properties: map[string]string{k: v}}
		got, ok := parseCloudTopic(mqttd.FormatC2DTopic(dev, sent))
		require.True(t, ok)
		assert.Equal(t, sent.MessageID, got.MessageID)
		assert.Equal(t, sent.CorrelationID, got.CorrelationID)
		assert.Equal(t, sent.To, got.To)
		assert.Equal(t, sent.Ack, got.Ack)
		assert.True(t, sent.ExpiryTime.Equal(got.ExpiryTime), "expiry %v", got.ExpiryTime)
		switch k {
		case "$.mid", "$.cid", "$.uid", "$.to", "$.ct", "$.ce", "$.exp", "iothub-ack":
			assert.Empty(t, got.Properties)
		default:
			assert.Equal(t, map[string]string{k: v}, got.Properties)
		}
	})
}
