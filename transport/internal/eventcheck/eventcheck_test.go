package eventcheck

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/iothub-go/iothub/transport"
)

func TestCheck(t *testing.T) {
	atLimit := &transport.Message{Body: make([]byte, transport.MaxMessageSize-2), Properties: map[string]string{"k": "v"}}
	assert.NoError(t, Check(atLimit), "a message of exactly MaxMessageSize")
	assert.NoError(t, Check(&transport.Message{}), "an empty message")
	over := &transport.Message{Body: make([]byte, transport.MaxMessageSize-1), Properties: map[string]string{"k": "v"}}
	assert.ErrorIs(t, Check(over), transport.ErrMessageTooLarge, "one byte over, counting properties")
	assert.ErrorIs(t, Check(&transport.Message{Properties: map[string]string{"": "v"}}), transport.ErrInvalidProperty)
}
