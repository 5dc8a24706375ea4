package http

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/transport"
)

// dialHub dials the HTTPS transport to iothubtest as a new device.
func dialHub(t *testing.T, hub *iothubtest.Server, deviceID string) transport.Conn {
	t.Helper()
	cs, err := auth.ParseDeviceConnectionString(hub.AddDevice(t, deviceID))
	require.NoError(t, err)
	id := cs.Identity()
	tok, err := auth.SignSAS(id.Resource(), "", cs.SharedAccessKey, time.Now().Add(time.Hour))
	require.NoError(t, err)
	c, err := New(nil).Dial(context.Background(), transport.Config{
		Identity: id, Address: hub.Addr(), Token: tok, TLSConfig: hub.TLSConfig(),
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestC2DReceiveAndSettle(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c := dialHub(t, hub, "dev+1")
	ctx := context.Background()

	m, err := c.ReceiveMessage(ctx)
	require.NoError(t, err)
	require.Nil(t, m, "empty queue")

	q, err := hub.SendC2DMessage("dev+1", iothubtest.C2DMessage{MessageID: "m1", CorrelationID: "c1", Ack: "full",
		Body: []byte("hello"), Properties: map[string]string{"color": "red"}})
	require.NoError(t, err)
	require.NoError(t, hub.SendC2D("dev+1", []byte("two"), nil))
	require.NoError(t, hub.SendC2D("dev+1", []byte("three"), nil))

	m, err = c.ReceiveMessage(ctx)
	require.NoError(t, err)
	require.NotNil(t, m)
	assert.Equal(t, "hello", string(m.Body))
	assert.Equal(t, "m1", m.MessageID)
	assert.Equal(t, "c1", m.CorrelationID)
	assert.Equal(t, "full", m.Ack)
	assert.Equal(t, "/devices/dev+1/messages/deviceBound", m.To)
	assert.Equal(t, map[string]string{"color": "red"}, m.Properties)
	assert.True(t, m.ExpiryTime.Equal(q.ExpiryTime), "expiry %v, want %v", m.ExpiryTime, q.ExpiryTime)
	assert.True(t, m.EnqueuedTime.Equal(q.EnqueuedTime))
	assert.Zero(t, m.DeliveryCount)
	assert.NotEmpty(t, m.LockToken)
	require.True(t, hub.C2DQueue("dev+1")[0].Locked)
	require.NoError(t, c.SettleMessage(ctx, m.LockToken, transport.Complete))

	m2, err := c.ReceiveMessage(ctx)
	require.NoError(t, err)
	require.Equal(t, "two", string(m2.Body))
	require.NoError(t, c.SettleMessage(ctx, m2.LockToken, transport.Abandon))
	m2, err = c.ReceiveMessage(ctx)
	require.NoError(t, err)
	require.Equal(t, "two", string(m2.Body), "abandoned: first again")
	assert.Equal(t, 1, m2.DeliveryCount)
	require.NoError(t, c.SettleMessage(ctx, m2.LockToken, transport.Reject))

	m3, err := c.ReceiveMessage(ctx)
	require.NoError(t, err)
	require.Equal(t, "three", string(m3.Body))
	require.NoError(t, c.SettleMessage(ctx, m3.LockToken, transport.Complete))
	assert.Empty(t, hub.C2DQueue("dev+1"))

	// A settled lock is lost.
	err = c.SettleMessage(ctx, m.LockToken, transport.Complete)
	require.ErrorIs(t, err, transport.ErrLockLost)
	var se *StatusError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, 412, se.StatusCode)
	assert.Equal(t, "DeviceMessageLockLost", se.ErrorCode)
	require.ErrorIs(t, c.SettleMessage(ctx, m.LockToken, transport.Abandon), transport.ErrLockLost)
	require.ErrorIs(t, c.SettleMessage(ctx, "", transport.Complete), transport.ErrLockLost)

	require.ErrorIs(t, c.SubscribeMessages(ctx), transport.ErrUnsupported)
}

func TestC2DLockExpiry(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c := dialHub(t, hub, "dev1")
	ctx := context.Background()
	require.NoError(t, hub.SendC2D("dev1", []byte("x"), nil))
	m, err := c.ReceiveMessage(ctx)
	require.NoError(t, err)
	require.NotNil(t, m)
	none, err := c.ReceiveMessage(ctx)
	require.NoError(t, err)
	require.Nil(t, none, "locked for a minute")

	hub.AdvanceClock(time.Minute)
	again, err := c.ReceiveMessage(ctx)
	require.NoError(t, err)
	require.NotNil(t, again, "redelivered after the lock expired")
	assert.NotEqual(t, m.LockToken, again.LockToken)
	assert.Zero(t, again.DeliveryCount, "a lock expiry does not count")
	err = c.SettleMessage(ctx, m.LockToken, transport.Complete)
	require.ErrorIs(t, err, transport.ErrLockLost, "the first delivery's lock")
	require.NoError(t, c.SettleMessage(ctx, again.LockToken, transport.Complete))
}

func TestC2DErrors(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c := dialHub(t, hub, "dev1")
	ctx := context.Background()
	require.NoError(t, c.Close())
	_, err := c.ReceiveMessage(ctx)
	require.Error(t, err, "closed")

	// A token for another device: 401.
	cs, err := auth.ParseDeviceConnectionString(hub.AddDevice(t, "dev2"))
	require.NoError(t, err)
	tok, err := auth.SignSAS(cs.Identity().Resource(), "", cs.SharedAccessKey, time.Now().Add(time.Hour))
	require.NoError(t, err)
	bad, err := New(nil).Dial(ctx, transport.Config{
		Identity: auth.Identity{HostName: hub.HostName(), DeviceID: "dev1"}, Address: hub.Addr(), Token: tok, TLSConfig: hub.TLSConfig(),
	})
	require.NoError(t, err)
	defer bad.Close()
	_, err = bad.ReceiveMessage(ctx)
	require.ErrorIs(t, err, transport.ErrNotAuthorized)

	mod, err := New(nil).Dial(ctx, transport.Config{
		Identity: auth.Identity{HostName: hub.HostName(), DeviceID: "dev1", ModuleID: "m"}, Address: hub.Addr(), TLSConfig: hub.TLSConfig(),
	})
	require.NoError(t, err)
	defer mod.Close()
	_, err = mod.ReceiveMessage(ctx)
	require.ErrorIs(t, err, transport.ErrUnsupported)

	ctxDone, cancel := context.WithCancel(ctx)
	cancel()
	c2 := dialHub(t, hub, "dev3")
	_, err = c2.ReceiveMessage(ctxDone)
	require.True(t, errors.Is(err, context.Canceled), "%v", err)
}

func TestCloudMessageFromHeader(t *testing.T) {
	h := map[string][]string{
		"Etag":                 {`"abc"`},
		"Iothub-Deliverycount": {"x"},
		"Iothub-Expiry":        {"Mon, 02 Jan 2006 15:04:05 GMT"},
		"Iothub-Enqueuedtime":  {"garbage"},
		"Iothub-App-K":         {"v"},
		"iothub-app-":          {"ignored"},
	}
	m := cloudMessageFromHeader(h)
	assert.Equal(t, "abc", m.LockToken)
	assert.Zero(t, m.DeliveryCount)
	assert.Equal(t, time.Date(2006, 1, 2, 15, 4, 5, 0, time.UTC), m.ExpiryTime)
	assert.True(t, m.EnqueuedTime.IsZero())
	assert.Equal(t, map[string]string{"k": "v"}, m.Properties)
}
