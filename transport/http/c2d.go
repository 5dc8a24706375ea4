package http

import (
	"context"
	"fmt"

	"github.com/iothub-go/iothub/transport"
)

// Cloud-to-device messages: to be implemented (issue 20).

// SubscribeMessages is not implemented yet.
func (c *conn) SubscribeMessages(context.Context) error {
	return fmt.Errorf("%w: cloud-to-device messages are not implemented yet", transport.ErrUnsupported)
}

// ReceiveMessage is not implemented yet.
func (c *conn) ReceiveMessage(context.Context) (*transport.CloudMessage, error) {
	return nil, fmt.Errorf("%w: cloud-to-device messages are not implemented yet", transport.ErrUnsupported)
}

// SettleMessage is not implemented yet.
func (c *conn) SettleMessage(context.Context, string, transport.Disposition) error {
	return fmt.Errorf("%w: cloud-to-device messages are not implemented yet", transport.ErrUnsupported)
}
