package device

import (
	"context"
	"errors"
	"fmt"

	"github.com/iothub-go/iothub/transport"
)

// Message is a device-to-cloud message (telemetry): a body, optional system
// properties (message id, correlation id, content type and encoding) and
// application properties.
type Message = transport.Message

// MaxMessageSize is the largest device-to-cloud message (256 KB: body and
// properties together).
const MaxMessageSize = transport.MaxMessageSize

// ErrNotConnected is returned by SendEvent when the client is not connected
// and will not be (Connect was not called, or it gave up reconnecting).
var ErrNotConnected = errors.New("iothub: the client is not connected")

// SendEvent sends a device-to-cloud message and returns once the hub has
// accepted it (MQTT PUBACK, HTTP 204). While the client is reconnecting it
// waits for the connection, as long as ctx allows; nothing is queued or
// dropped silently: if SendEvent returns an error the hub may or may not
// have the message, and the caller decides whether to send it again.
func (c *Client) SendEvent(ctx context.Context, msg *Message) error {
	if msg == nil {
		return errors.New("iothub: nil message")
	}
	if n := msg.Size(); n > MaxMessageSize {
		return fmt.Errorf("iothub: the message is %d bytes; the limit is 256 KB", n)
	}
	for k := range msg.Properties {
		if k == "" {
			return errors.New("iothub: empty message property name")
		}
	}
	for {
		c.mu.Lock()
		state, conn, changed, closed, running := c.state, c.conn, c.changed, c.closed, c.running
		c.mu.Unlock()
		switch {
		case closed:
			return ErrClosed
		case state == ConnectionStateConnected && conn != nil:
			err := conn.SendEvent(ctx, msg)
			if err != nil && ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		case !running:
			return ErrNotConnected
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
