package iothubtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/iothubtest"
	devhttp "github.com/iothub-go/iothub/transport/http"
)

// The hub's cloud-to-device settings, as an IoT Hub resource sets them,
// drive expiry and the dead-lettering of abandoned messages; values out of
// IoT Hub's ranges are refused.
func TestCloudToDeviceOptions(t *testing.T) {
	hub := iothubtest.NewServer(t, &iothubtest.Options{CloudToDevice: iothubtest.CloudToDeviceOptions{
		DefaultTTL: 2 * time.Minute, MaxDeliveryCount: 2,
	}})
	cs := hub.AddDevice(t, "dev1")
	c, err := device.NewClientFromConnectionString(cs, &device.ClientOptions{Transport: devhttp.New(nil), TLSConfig: hub.TLSConfig()})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, c.Connect(ctx))
	defer c.Close(context.Background())

	// Abandoned twice (MaxDeliveryCount 2), the message is dead-lettered.
	_, err = hub.SendC2DMessage("dev1", iothubtest.C2DMessage{MessageID: "a", Body: []byte("x")})
	require.NoError(t, err)
	for i := range 2 {
		m, err := c.ReceiveMessage(ctx)
		require.NoError(t, err)
		require.NotNil(t, m, "delivery %d", i+1)
		assert.Equal(t, i, m.DeliveryCount)
		require.NoError(t, c.SettleMessage(ctx, m, device.Abandon))
	}
	m, err := c.ReceiveMessage(ctx)
	require.NoError(t, err)
	assert.Nil(t, m, "dead-lettered after two abandons")

	// A message without expiry expires after DefaultTTL.
	q, err := hub.SendC2DMessage("dev1", iothubtest.C2DMessage{MessageID: "b", Body: []byte("y")})
	require.NoError(t, err)
	assert.WithinDuration(t, q.EnqueuedTime.Add(2*time.Minute), q.ExpiryTime, time.Second)
	hub.AdvanceClock(3 * time.Minute)
	assert.Empty(t, hub.C2DQueue("dev1"), "expired")

	for _, bad := range []iothubtest.CloudToDeviceOptions{
		{DefaultTTL: time.Second}, {DefaultTTL: 49 * time.Hour}, {MaxDeliveryCount: 101}, {MaxDeliveryCount: -1},
		{FeedbackLockDuration: time.Second}, {FeedbackTTL: 3 * 24 * time.Hour}, {FeedbackMaxDeliveryCount: 200},
	} {
		_, err := iothubtest.Start(&iothubtest.Options{CloudToDevice: bad})
		assert.ErrorContains(t, err, "iothub: CloudToDevice.", "%+v", bad)
	}
}
