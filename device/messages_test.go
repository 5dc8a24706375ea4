package device_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/internal/testutil/statuslog"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/transport"
	devhttp "github.com/iothub-go/iothub/transport/http"
)

// c2dTransports are the device transports with cloud-to-device messages:
// every one, HTTPS included (it polls).
func eachC2DTransport(t *testing.T, f func(t *testing.T, name string, tr transport.Transport)) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { f(t, tr.name, tr.tr) })
	}
	t.Run("http", func(t *testing.T) { f(t, "http", devhttp.New(nil)) })
}

// inbox collects the messages a handler saw.
type inbox struct {
	mu   sync.Mutex
	msgs []*device.CloudMessage
	wake chan struct{}
}

func newInbox() *inbox { return &inbox{wake: make(chan struct{}, 1)} }

func (b *inbox) add(m *device.CloudMessage) {
	b.mu.Lock()
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// waitN waits until n messages arrived and returns them.
func (b *inbox) waitN(t *testing.T, n int) []*device.CloudMessage {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		b.mu.Lock()
		if len(b.msgs) >= n {
			out := append([]*device.CloudMessage(nil), b.msgs...)
			b.mu.Unlock()
			return out
		}
		b.mu.Unlock()
		select {
		case <-b.wake:
		case <-timeout:
			require.FailNow(t, "messages did not arrive", "want %d", n)
		}
	}
}

// waitQueue waits until the device's queue holds n messages.
func waitQueue(t *testing.T, hub *iothubtest.Server, id string, n int) []iothubtest.QueuedMessage {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		q := hub.C2DQueue(id)
		if len(q) == n {
			return q
		}
		if time.Now().After(deadline) {
			require.FailNow(t, "queue length", "want %d, have %d", n, len(q))
		}
		<-time.After(10 * time.Millisecond) // polling the hub's state, not waiting for time to pass
	}
}

// Messages queued while the device was offline arrive once it connects,
// in order, with their properties; completing empties the queue.
func TestMessagesOfflineDelivery(t *testing.T) {
	eachC2DTransport(t, func(t *testing.T, name string, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		for _, id := range []string{"m1", "m2", "m3"} {
			_, err := hub.SendC2DMessage("dev1", iothubtest.C2DMessage{MessageID: id, Body: []byte("body-" + id),
				Properties: map[string]string{"kind": "cmd", "n": id}})
			require.NoError(t, err)
		}
		box := newInbox()
		newClient(t, hub, cs, &device.ClientOptions{Transport: tr, MessagePollInterval: 20 * time.Millisecond}, func(c *device.Client) {
			require.NoError(t, c.SetMessageHandler(func(_ context.Context, m *device.CloudMessage) device.Disposition {
				box.add(m)
				return device.Complete
			}))
		})
		got := box.waitN(t, 3)
		for i, id := range []string{"m1", "m2", "m3"} {
			assert.Equal(t, id, got[i].MessageID, "order")
			assert.Equal(t, "body-"+id, string(got[i].Body))
			assert.Equal(t, map[string]string{"kind": "cmd", "n": id}, got[i].Properties)
			assert.Equal(t, 0, got[i].DeliveryCount)
		}
		waitQueue(t, hub, "dev1", 0)
	})
}

// Reject dead-letters; abandon redelivers with a larger delivery count.
// MQTT can do neither: the message stays unsettled and comes back after
// a reconnect.
func TestMessagesRejectAbandon(t *testing.T) {
	eachC2DTransport(t, func(t *testing.T, name string, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		box := newInbox()
		var mu sync.Mutex
		seen := map[string]int{}
		newClient(t, hub, cs, &device.ClientOptions{Transport: tr, MessagePollInterval: 20 * time.Millisecond}, func(c *device.Client) {
			require.NoError(t, c.SetMessageHandler(func(_ context.Context, m *device.CloudMessage) device.Disposition {
				box.add(m)
				mu.Lock()
				defer mu.Unlock()
				seen[m.MessageID]++
				switch {
				case m.MessageID == "reject-me":
					return device.Reject
				case m.MessageID == "abandon-me" && seen[m.MessageID] == 1:
					return device.Abandon
				}
				return device.Complete
			}))
		})
		_, err := hub.SendC2DMessage("dev1", iothubtest.C2DMessage{MessageID: "reject-me", Body: []byte("r")})
		require.NoError(t, err)
		_, err = hub.SendC2DMessage("dev1", iothubtest.C2DMessage{MessageID: "abandon-me", Body: []byte("a")})
		require.NoError(t, err)
		if name == "mqtt" || name == "mqtt-ws" {
			box.waitN(t, 2)
			// Neither reject nor abandon can reach the hub: both stay
			// unsettled, and after a reconnect both come back.
			waitQueue(t, hub, "dev1", 2)
			require.True(t, hub.DropConnection("dev1"))
			got := box.waitN(t, 4)
			var ids []string
			for _, m := range got[2:] {
				ids = append(ids, m.MessageID)
			}
			assert.ElementsMatch(t, []string{"reject-me", "abandon-me"}, ids, "redelivered after the reconnect")
			waitQueue(t, hub, "dev1", 1) // abandon-me completed this time; reject-me still unsettled
			return
		}
		got := box.waitN(t, 3)
		assert.Equal(t, "abandon-me", got[2].MessageID, "the abandoned message comes back")
		assert.Equal(t, 1, got[2].DeliveryCount, "after one abandon")
		waitQueue(t, hub, "dev1", 0) // rejected (dead-lettered) and completed
	})
}

// A message the device received but did not settle before the connection
// was cut comes back on the next connection.
// (HTTPS has no connection to cut: an unsettled message comes back when
// its one-minute lock expires, TestMessagesLockExpiry.)
func TestMessagesRedeliveryAfterCut(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		box := newInbox()
		release := make(chan struct{})
		first := true
		log := statuslog.New()
		newClient(t, hub, cs, &device.ClientOptions{Transport: tr, OnConnectionStatus: log.Record}, func(c *device.Client) {
			require.NoError(t, c.SetMessageHandler(func(ctx context.Context, m *device.CloudMessage) device.Disposition {
				box.add(m)
				if first {
					first = false
					select { // hold the first delivery until the connection is cut
					case <-release:
					case <-ctx.Done():
					}
				}
				return device.Complete
			}))
		})
		_, err := hub.SendC2DMessage("dev1", iothubtest.C2DMessage{MessageID: "cut", Body: []byte("x")})
		require.NoError(t, err)
		box.waitN(t, 1)
		log.Skip()
		require.True(t, hub.DropConnection("dev1"))
		// Once the client knows the connection is gone, settling on it
		// fails: the hub still has the message.
		log.WaitFor(t, device.ConnectionStateConnecting)
		close(release)
		got := box.waitN(t, 2)
		assert.Equal(t, "cut", got[1].MessageID, "delivered again on the new connection")
		waitQueue(t, hub, "dev1", 0)
	})
}

// HTTPS: a received message not settled within the hub's lock comes back.
func TestMessagesLockExpiry(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	cs := hub.AddDevice(t, "dev1")
	c, err := device.NewClientFromConnectionString(cs, &device.ClientOptions{Transport: devhttp.New(nil), TLSConfig: hub.TLSConfig()})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, c.Connect(ctx))
	defer c.Close(context.Background())

	m, err := c.ReceiveMessage(ctx)
	require.NoError(t, err)
	assert.Nil(t, m, "an empty queue")
	_, err = hub.SendC2DMessage("dev1", iothubtest.C2DMessage{MessageID: "lock", Body: []byte("x")})
	require.NoError(t, err)
	m, err = c.ReceiveMessage(ctx)
	require.NoError(t, err)
	require.NotNil(t, m)
	again, err := c.ReceiveMessage(ctx)
	require.NoError(t, err)
	assert.Nil(t, again, "locked for the device: not delivered twice")
	hub.AdvanceClock(61 * time.Second)
	again, err = c.ReceiveMessage(ctx)
	require.NoError(t, err)
	require.NotNil(t, again, "back after the lock expired")
	assert.Equal(t, "lock", again.MessageID)
	err = c.SettleMessage(ctx, m, device.Complete)
	assert.ErrorIs(t, err, device.ErrLockLost, "the first lock is gone")
	require.NoError(t, c.SettleMessage(ctx, again, device.Complete))
	assert.Empty(t, hub.C2DQueue("dev1"))
}

// Expired messages are never delivered; a full queue refuses the 51st.
func TestMessagesExpiryAndFullQueue(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	cs := hub.AddDevice(t, "dev1")
	_, err := hub.SendC2DMessage("dev1", iothubtest.C2DMessage{MessageID: "old", Body: []byte("x"), TTL: time.Minute})
	require.NoError(t, err)
	hub.AdvanceClock(2 * time.Minute)
	for i := range 50 {
		_, err := hub.SendC2DMessage("dev1", iothubtest.C2DMessage{Body: []byte{byte(i)}})
		require.NoError(t, err, "message %d", i+1)
	}
	_, err = hub.SendC2DMessage("dev1", iothubtest.C2DMessage{Body: []byte("one too many")})
	require.Error(t, err, "the 51st message")
	assert.Contains(t, err.Error(), "403004")

	box := newInbox()
	newClient(t, hub, cs, &device.ClientOptions{}, func(c *device.Client) {
		require.NoError(t, c.SetMessageHandler(func(_ context.Context, m *device.CloudMessage) device.Disposition {
			box.add(m)
			return device.Complete
		}))
	})
	got := box.waitN(t, 50)
	for _, m := range got {
		assert.NotEqual(t, "old", m.MessageID, "an expired message was delivered")
	}
	waitQueue(t, hub, "dev1", 0)
}

// Close is safe from the message handler.
func TestMessagesCloseFromHandler(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	cs := hub.AddDevice(t, "dev1")
	closed := make(chan error, 1)
	c, err := device.NewClientFromConnectionString(cs, &device.ClientOptions{TLSConfig: hub.TLSConfig()})
	require.NoError(t, err)
	require.NoError(t, c.SetMessageHandler(func(context.Context, *device.CloudMessage) device.Disposition {
		closed <- c.Close(context.Background())
		return device.Complete
	}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, c.Connect(ctx))
	_, err = hub.SendC2DMessage("dev1", iothubtest.C2DMessage{Body: []byte("bye")})
	require.NoError(t, err)
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-ctx.Done():
		require.FailNow(t, "Close from the handler hung")
	}
	assert.ErrorIs(t, c.SetMessageHandler(nil), device.ErrClosed)
	_, err = c.ReceiveMessage(ctx)
	assert.True(t, errors.Is(err, device.ErrClosed), "%v", err)
}
