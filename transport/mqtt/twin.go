package mqtt

// PLACEHOLDER: twins over mqtt are being written (issue 18); until then
// every twin operation answers ErrUnsupported.

import (
	"context"

	"github.com/iothub-go/iothub/transport"
)

var errTwinPending = transport.UnimplementedConn{}

// TwinSupport reports whether twins are carried.
func (t *Transport) TwinSupport() error { return transport.UnimplementedTransport{}.TwinSupport() }

func (c *conn) GetTwin(ctx context.Context) ([]byte, error) { return errTwinPending.GetTwin(ctx) }

func (c *conn) UpdateReported(ctx context.Context, p []byte) (int64, error) {
	return errTwinPending.UpdateReported(ctx, p)
}

func (c *conn) SubscribeDesired(ctx context.Context) error { return errTwinPending.SubscribeDesired(ctx) }
