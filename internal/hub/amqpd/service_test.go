package amqpd

import (
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func c2dSeed(tb testing.TB, to string, props map[string]any, data ...[]byte) []byte {
	tb.Helper()
	m := &amqp.Message{Properties: &amqp.MessageProperties{}, ApplicationProperties: props, Data: data}
	if to != "" {
		m.Properties.To = &to
	}
	b, err := m.MarshalBinary()
	require.NoError(tb, err)
	return b
}

// The "to" spellings the service SDKs send, and what the hub makes of
// them.
func TestC2DFromService(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		to   string
		dev  string
		cond Symbol
	}{
		{"/devices/dev1/messages/devicebound", "dev1", ""},
		{"/devices/dev%2B1/messages/deviceBound", "dev+1", ""},
		{"/devices/dev+1/messages/deviceBound", "dev+1", ""},
		{"amqps://h:5671/DEVICES/Dev1/Messages/DeviceBound", "Dev1", ""},
		{"/devices/dev1/modules/m1/messages/deviceBound", "", condNotImplemented},
		{"/devices/dev1/messages/events", "", condArgumentError},
		{"/devices//messages/devicebound", "", condArgumentError},
		{"/devices/d%zz/messages/devicebound", "", condArgumentError},
		{"", "", condArgumentError},
	} {
		m, err := decodeMessage(c2dSeed(t, tc.to, map[string]any{"IoTHub-Ack": "Full", "k": "v"}, []byte("x")))
		require.NoError(t, err)
		dev, msg, aerr := c2dFromService(m, now)
		if tc.cond != "" {
			require.NotNil(t, aerr, "to %q", tc.to)
			assert.Equal(t, tc.cond, aerr.condition, "to %q", tc.to)
			continue
		}
		require.Nil(t, aerr, "to %q", tc.to)
		assert.Equal(t, tc.dev, dev, "to %q", tc.to)
		assert.Equal(t, "Full", msg.Ack, "iothub-ack in any case, as sent")
		assert.Equal(t, map[string]string{"k": "v"}, msg.Properties)
		assert.Equal(t, "x", string(msg.Body))
		assert.True(t, msg.ExpiryTime.IsZero(), "no expiry asked for")
	}
}

// FuzzDecodeC2DMessage feeds arbitrary transfer payloads to the decoding
// of a service's cloud-to-device send: it never panics, and what it
// accepts names a device whose devicebound address parses back to it.
func FuzzDecodeC2DMessage(f *testing.F) {
	exp := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Add(c2dSeed(f, "/devices/dev1/messages/devicebound", map[string]any{"iothub-ack": "full", "k": "v"}, []byte("body")))
	f.Add(c2dSeed(f, "/devices/d%23%2F1/messages/deviceBound", map[string]any{"n": int64(1), "u": amqp.UUID{1}}, nil))
	f.Add(c2dSeed(f, "/devices/dev1/modules/m/messages/devicebound", nil))
	f.Add(c2dSeed(f, "amqps://h/devices/x/messages/devicebound", map[string]any{"t": exp, "s": amqp.Symbol("sym")}, []byte("a"), []byte("b")))
	m := &amqp.Message{
		Header:     &amqp.MessageHeader{TTL: time.Minute},
		Properties: &amqp.MessageProperties{MessageID: uint64(9), UserID: []byte("u"), AbsoluteExpiryTime: &exp},
		Value:      "v",
	}
	b, err := m.MarshalBinary()
	require.NoError(f, err)
	f.Add(b)
	f.Add([]byte{0x00, 0x53, 0x73, 0x45})
	f.Fuzz(func(t *testing.T, payload []byte) {
		m, err := decodeMessage(payload)
		if err != nil {
			return
		}
		dev, msg, aerr := c2dFromService(m, exp)
		if aerr != nil {
			require.NotEmpty(t, aerr.condition)
			return
		}
		require.NotEmpty(t, dev)
		id, node := parseIdentityAddress(deviceBoundTo(dev))
		require.Equal(t, nodeC2D, node, "device %q", dev)
		require.Equal(t, dev, id.DeviceID)
		require.Empty(t, id.ModuleID)
		for k := range msg.Properties {
			require.False(t, equalFold(k, propAck), "iothub-ack left in the properties")
		}
		_, err = encodeC2D(msg)
		require.NoError(t, err, "the device encoding of an accepted message")
	})
}
