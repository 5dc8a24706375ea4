package amqpcbs

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRequest(t *testing.T) {
	req, id := Request(TokenType, "hub.example/devices/d1", "tok")
	require.NotNil(t, req.Properties)
	assert.Equal(t, id, req.Properties.MessageID)
	require.NotNil(t, req.Properties.To)
	assert.Equal(t, "$cbs", *req.Properties.To)
	require.NotNil(t, req.Properties.ReplyTo)
	assert.Equal(t, "cbs", *req.Properties.ReplyTo)
	assert.Equal(t, map[string]any{
		"operation": "put-token",
		"type":      "servicebus.windows.net:sastoken",
		"name":      "hub.example/devices/d1",
	}, req.ApplicationProperties)
	assert.Equal(t, "tok", req.Value)

	_, id2 := Request(TokenType, "a", "b")
	assert.NotEqual(t, id, id2, "every request has its own message-id")
}

func TestNewUUID(t *testing.T) {
	u := NewUUID()
	assert.Equal(t, byte(4), u[6]>>4, "%s is not version 4", u)
	assert.Equal(t, byte(2), u[8]>>6, "%s is not an RFC 4122 variant", u)
	assert.NotEqual(t, u, NewUUID())
}

func TestToInt(t *testing.T) {
	for _, v := range []any{int8(7), int16(7), int32(7), int64(7), 7, uint8(7), uint16(7), uint32(7), uint64(7)} {
		n, ok := ToInt(v)
		assert.True(t, ok, "%T", v)
		assert.Equal(t, int64(7), n, "%T", v)
	}
	n, ok := ToInt(uint64(1 << 62))
	assert.True(t, ok)
	assert.Equal(t, int64(1<<62), n)
	for _, v := range []any{uint64(1<<62 + 1), "7", 7.0, nil} {
		_, ok := ToInt(v)
		assert.False(t, ok, "%T %v", v, v)
	}
}
