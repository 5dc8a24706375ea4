package amqp

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/transport"
)

// c2dDial connects clientID with a channel for its cloud-to-device
// messages.
func (th *testHub) c2dDial(clientID string, ws bool) (*conn, chan *transport.CloudMessage) {
	th.tb.Helper()
	ch := make(chan *transport.CloudMessage, 100)
	c := th.dial(clientID, dialOpts{ws: ws, messages: func(m *transport.CloudMessage) { ch <- m }})
	return c, ch
}

// redial connects the identity of c again.
func (th *testHub) redial(c *conn) (*conn, chan *transport.CloudMessage) {
	th.tb.Helper()
	ch := make(chan *transport.CloudMessage, 100)
	d, herr := th.h.Engine.GetDevice(c.id.DeviceID)
	require.Nil(th.tb, herr)
	tok, err := auth.SignSAS(c.id.Resource(), "", *d.Authentication.SymmetricKey.PrimaryKey, time.Now().Add(time.Hour))
	require.NoError(th.tb, err)
	tc, err := New(nil).Dial(ctxT(th.tb), transport.Config{
		Identity:  c.id,
		Address:   th.addr,
		Token:     tok,
		TLSConfig: &tls.Config{RootCAs: th.h.CA.Pool(), MinVersion: tls.VersionTLS12},
		Messages:  func(m *transport.CloudMessage) { ch <- m },
	})
	require.NoError(th.tb, err)
	th.tb.Cleanup(func() { _ = tc.Close() })
	return tc.(*conn), ch
}

func (th *testHub) enqueue(dev string, m engine.C2DMessage) engine.C2DMessage {
	th.tb.Helper()
	q, herr := th.h.Engine.EnqueueC2D(dev, m)
	require.Nil(th.tb, herr)
	return q
}

func next(tb testing.TB, ch <-chan *transport.CloudMessage) *transport.CloudMessage {
	tb.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(waitLong):
		require.FailNow(tb, "no cloud-to-device message")
		return nil
	}
}

// A message queued before the subscription arrives with every field;
// complete, reject and abandon reach the hub; a token settled already is
// ErrLockLost. Over TLS and WebSocket.
func TestCloudMessages(t *testing.T) {
	for _, ws := range []bool{false, true} {
		t.Run(map[bool]string{false: "tls", true: "websocket"}[ws], func(t *testing.T) {
			th := newTestHub(t)
			c, ch := th.c2dDial("dev1", ws)
			ctx := ctxT(t)
			exp := time.Now().Add(time.Hour).Truncate(time.Millisecond)
			q := th.enqueue("dev1", engine.C2DMessage{
				MessageID: "m1", CorrelationID: "c1", UserID: "svc", To: "/devices/dev1/messages/deviceBound",
				ContentType: "application/json", ContentEncoding: "utf-8", Ack: "full", ExpiryTime: exp,
				Properties: map[string]string{"k": "v"}, Body: []byte(`{"x":1}`),
			})
			require.NoError(t, c.SubscribeMessages(ctx))
			require.NoError(t, c.SubscribeMessages(ctx), "subscribing again does nothing")
			m := next(t, ch)
			assert.Equal(t, []byte(`{"x":1}`), m.Body)
			assert.Equal(t, "m1", m.MessageID)
			assert.Equal(t, "c1", m.CorrelationID)
			assert.Equal(t, "svc", m.UserID)
			assert.Equal(t, "/devices/dev1/messages/deviceBound", m.To)
			assert.Equal(t, "application/json", m.ContentType)
			assert.Equal(t, "utf-8", m.ContentEncoding)
			assert.Equal(t, "full", m.Ack)
			assert.True(t, exp.Equal(m.ExpiryTime), "expiry %v, want %v", m.ExpiryTime, exp)
			assert.True(t, q.EnqueuedTime.Truncate(time.Millisecond).Equal(m.EnqueuedTime), "enqueued %v, want %v", m.EnqueuedTime, q.EnqueuedTime)
			assert.Equal(t, 0, m.DeliveryCount)
			assert.Equal(t, map[string]string{"k": "v"}, m.Properties)
			require.NotEmpty(t, m.LockToken)

			require.NoError(t, c.SettleMessage(ctx, m.LockToken, transport.Complete))
			assert.Empty(t, th.h.Engine.C2DQueue("dev1"), "completed")
			assert.ErrorIs(t, c.SettleMessage(ctx, m.LockToken, transport.Complete), transport.ErrLockLost, "settled twice")
			assert.ErrorIs(t, c.SettleMessage(ctx, "nope", transport.Abandon), transport.ErrLockLost, "unknown token")

			// Sent while subscribed.
			th.enqueue("dev1", engine.C2DMessage{MessageID: "m2"})
			m = next(t, ch)
			require.NoError(t, c.SettleMessage(ctx, m.LockToken, transport.Reject))
			assert.Empty(t, th.h.Engine.C2DQueue("dev1"), "rejected")

			th.enqueue("dev1", engine.C2DMessage{MessageID: "m3"})
			m = next(t, ch)
			require.NoError(t, c.SettleMessage(ctx, m.LockToken, transport.Abandon))
			m = next(t, ch)
			assert.Equal(t, "m3", m.MessageID)
			assert.Equal(t, 1, m.DeliveryCount, "abandoned once")
			require.Error(t, c.SettleMessage(ctx, m.LockToken, transport.Disposition(9)))
			require.NoError(t, c.SettleMessage(ctx, m.LockToken, transport.Complete), "a bad disposition leaves the lock")
			assert.Empty(t, th.h.Engine.C2DQueue("dev1"))

			_, err := c.ReceiveMessage(ctx)
			assert.ErrorIs(t, err, transport.ErrUnsupported)
		})
	}
}

// A settlement after the hub's lock expired is ErrLockLost, and the
// message comes again.
func TestCloudMessageLockExpired(t *testing.T) {
	th := newTestHub(t)
	c, ch := th.c2dDial("dev1", false)
	ctx := ctxT(t)
	require.NoError(t, c.SubscribeMessages(ctx))
	th.enqueue("dev1", engine.C2DMessage{MessageID: "m1"})
	m := next(t, ch)
	th.h.Engine.AdvanceJobClock(2 * time.Minute)
	err := c.SettleMessage(ctx, m.LockToken, transport.Complete)
	require.ErrorIs(t, err, transport.ErrLockLost)
	m = next(t, ch)
	assert.Equal(t, "m1", m.MessageID)
	require.NoError(t, c.SettleMessage(ctx, m.LockToken, transport.Complete))
}

// Messages unsettled when the connection ends go back to the hub and
// reach the next connection; their tokens are lost; the receive loop
// ends with the connection.
func TestCloudMessagesConnectionEnd(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t, goleak.IgnoreCurrent()) })
	th := newTestHub(t)
	c, ch := th.c2dDial("dev1", false)
	ctx := ctxT(t)
	require.NoError(t, c.SubscribeMessages(ctx))
	th.enqueue("dev1", engine.C2DMessage{MessageID: "m1"})
	m := next(t, ch)
	require.NoError(t, c.Close())
	assert.ErrorIs(t, c.SettleMessage(ctx, m.LockToken, transport.Complete), transport.ErrLockLost)

	c2, ch2 := th.redial(c)
	require.NoError(t, c2.SubscribeMessages(ctx))
	m = next(t, ch2)
	assert.Equal(t, "m1", m.MessageID)
	assert.Equal(t, 0, m.DeliveryCount, "a release does not count")
	require.NoError(t, c2.SettleMessage(ctx, m.LockToken, transport.Complete))

	// The hub drops the connection: Done closes, the token is lost.
	th.enqueue("dev1", engine.C2DMessage{MessageID: "m2"})
	m = next(t, ch2)
	require.True(t, th.h.Engine.DropConnection(c2.id))
	select {
	case <-c2.Done():
	case <-time.After(waitLong):
		require.FailNow(t, "the connection did not end")
	}
	assert.ErrorIs(t, c2.SettleMessage(ctx, m.LockToken, transport.Complete), transport.ErrLockLost)
}

// IoT Hub has no cloud-to-device messages for modules: SubscribeMessages
// fails and the connection stays usable.
func TestCloudMessagesModule(t *testing.T) {
	th := newTestHub(t)
	c, _ := th.c2dDial("dev1/m1", false)
	ctx := ctxT(t)
	require.Error(t, c.SubscribeMessages(ctx))
	_, err := c.GetTwin(ctx)
	require.NoError(t, err, "the connection survives the refusal")
	require.NoError(t, c.Err())
}
