package amqp

import (
	"context"
	"testing"

	amqp "github.com/Azure/go-amqp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/transport"
)

// SendEvent refuses, before attaching or sending anything, a message over
// the size limit and one with an empty property name. (The conn has no
// session: attaching would panic.)
func TestSendEventRefusals(t *testing.T) {
	c := &conn{}
	ctx := context.Background()
	require.ErrorIs(t, c.SendEvent(ctx, &transport.Message{Body: make([]byte, transport.MaxMessageSize+1)}), transport.ErrMessageTooLarge)
	require.ErrorIs(t, c.SendEvent(ctx, &transport.Message{Properties: map[string]string{"": "v"}}), transport.ErrInvalidProperty)
}

// The hub's AMQP conditions that mean refused credentials or a message too
// large map to the transport sentinels; others are wrapped as they are.
func TestWrapConditions(t *testing.T) {
	err := wrap("sending event", &amqp.Error{Condition: amqp.ErrCondUnauthorizedAccess})
	assert.ErrorIs(t, err, transport.ErrNotAuthorized)
	err = wrap("sending event", &amqp.Error{Condition: amqp.ErrCondMessageSizeExceeded})
	assert.ErrorIs(t, err, transport.ErrMessageTooLarge)
	assert.NotErrorIs(t, err, errMessageTooLarge, "a refusal of the device's message is not the hub's oversized message")
	other := &amqp.Error{Condition: amqp.ErrCondInternalError}
	err = wrap("sending event", other)
	var ae *amqp.Error
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, other, ae)
	assert.NotErrorIs(t, err, transport.ErrNotAuthorized)
	assert.NotErrorIs(t, err, transport.ErrMessageTooLarge)
}
