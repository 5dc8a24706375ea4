package device

import (
	"context"
	"errors"
	"fmt"

	"github.com/iothub-go/iothub/transport"
)

// Message is a device-to-cloud message (telemetry).
type Message struct {
	// Body is the payload, any bytes.
	Body []byte
	// MessageID and CorrelationID are the message's system properties
	// message-id and correlation-id; "" omits them.
	MessageID     string
	CorrelationID string
	// ContentType and ContentEncoding describe the body (e.g.
	// "application/json" and "utf-8"); IoT Hub routing reads them.
	ContentType     string
	ContentEncoding string
	// Properties are application properties. Names must not be empty;
	// over HTTPS they are limited to ASCII letters, digits and
	// !#$%&'*+-.^_`|~.
	Properties map[string]string
}

// Size returns the message's size as IoT Hub counts it against
// MaxMessageSize: the body plus every property name and value.
func (m *Message) Size() int {
	n := len(m.Body) + len(m.MessageID) + len(m.CorrelationID) + len(m.ContentType) + len(m.ContentEncoding)
	for k, v := range m.Properties {
		n += len(k) + len(v)
	}
	return n
}

// MaxMessageSize is the largest device-to-cloud message IoT Hub accepts:
// 256 KB of body, property names and property values together (see
// Message.Size).
const MaxMessageSize = 256 * 1024

// SendEvent sends a device-to-cloud message and returns once the hub has
// accepted it (MQTT PUBACK, AMQP accepted, HTTP 204). While the client is
// reconnecting it waits for the connection, as long as ctx allows; nothing
// is queued or dropped silently: if SendEvent returns an error the hub may
// or may not have the message, and the caller decides whether to send it
// again.
//
// Errors to test for with errors.Is: a message refused before it is sent
// wraps ErrMessageTooLarge or ErrInvalidProperty; a closed client returns
// ErrClosed, one that is not connected and will not be ErrNotConnected; an
// HTTPS transport may also return errors wrapping ErrThrottled,
// ErrServiceUnavailable or ErrNotAuthorized. ctx's error is returned as
// is. msg must not be nil.
func (c *Client) SendEvent(ctx context.Context, msg *Message) error {
	if msg == nil {
		return errors.New("iothub: SendEvent: nil message") // a programming error, like http.Client.Do(nil)
	}
	if n := msg.Size(); n > MaxMessageSize {
		return fmt.Errorf("%w: the message is %d bytes; the limit is 256 KB", ErrMessageTooLarge, n)
	}
	for k := range msg.Properties {
		if k == "" {
			return fmt.Errorf("%w: empty property name", ErrInvalidProperty)
		}
	}
	tm := &transport.Message{
		Body:            msg.Body,
		MessageID:       msg.MessageID,
		CorrelationID:   msg.CorrelationID,
		ContentType:     msg.ContentType,
		ContentEncoding: msg.ContentEncoding,
		Properties:      msg.Properties,
	}
	conn, err := c.liveConn(ctx)
	if err != nil {
		return err
	}
	err = conn.SendEvent(ctx, tm)
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
