package transport_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/transport"
)

// telemetryConn is a Conn as a program outside the module writes one: it
// embeds UnimplementedConn and implements only what its protocol does.
type telemetryConn struct {
	transport.UnimplementedConn
	sent []*transport.Message
}

func (c *telemetryConn) SendEvent(_ context.Context, msg *transport.Message) error {
	c.sent = append(c.sent, msg)
	return nil
}

// bareConn embeds UnimplementedConn and nothing else.
type bareConn struct{ transport.UnimplementedConn }

// outsideTransport embeds UnimplementedTransport and dials telemetryConns.
type outsideTransport struct {
	transport.UnimplementedTransport
}

func (outsideTransport) Dial(context.Context, transport.Config) (transport.Conn, error) {
	return &telemetryConn{}, nil
}

var (
	_ transport.Conn      = bareConn{}
	_ transport.Conn      = (*telemetryConn)(nil)
	_ transport.Transport = outsideTransport{}
	_ transport.Transport = transport.UnimplementedTransport{}
)

// A type embedding UnimplementedConn is a Conn, and every method it leaves
// to the embedded value answers ErrUnsupported: the connection looks ended
// at once rather than blocking a device client forever.
func TestUnimplementedConn(t *testing.T) {
	ctx := context.Background()
	var c transport.Conn = bareConn{}
	assert.ErrorIs(t, c.SubscribeMethods(ctx), transport.ErrUnsupported, "SubscribeMethods")
	assert.ErrorIs(t, c.UnsubscribeMethods(ctx), transport.ErrUnsupported, "UnsubscribeMethods")
	assert.ErrorIs(t, c.RespondMethod(ctx, "1", &transport.MethodResponse{Status: 200}), transport.ErrUnsupported, "RespondMethod")
	assert.ErrorIs(t, c.SendEvent(ctx, &transport.Message{}), transport.ErrUnsupported, "SendEvent")
	assert.ErrorIs(t, c.Err(), transport.ErrUnsupported, "Err")
	select {
	case <-c.Done():
	default:
		assert.Fail(t, "Done is not closed")
	}
	assert.NoError(t, c.Close(), "Close")
	assert.NoError(t, c.Close(), "second Close")

	// Embedded through a pointer type, the overridden method wins and the
	// rest still answer ErrUnsupported.
	tc := &telemetryConn{}
	c = tc
	require.NoError(t, c.SendEvent(ctx, &transport.Message{Body: []byte("b")}))
	assert.Len(t, tc.sent, 1, "messages sent")
	assert.ErrorIs(t, c.SubscribeMethods(ctx), transport.ErrUnsupported, "SubscribeMethods")
}

func TestUnimplementedTransport(t *testing.T) {
	var tr transport.Transport = transport.UnimplementedTransport{}
	c, err := tr.Dial(context.Background(), transport.Config{})
	assert.ErrorIs(t, err, transport.ErrUnsupported, "Dial")
	assert.Nil(t, c, "Dial's Conn")
	assert.ErrorIs(t, tr.MethodSupport(), transport.ErrUnsupported, "MethodSupport")
	assert.NotEmpty(t, tr.Name(), "Name")

	tr = outsideTransport{}
	c, err = tr.Dial(context.Background(), transport.Config{})
	require.NoError(t, err)
	assert.ErrorIs(t, tr.MethodSupport(), transport.ErrUnsupported, "a telemetry-only transport by default")
	assert.NoError(t, c.SendEvent(context.Background(), &transport.Message{}))
}

func TestMessageSize(t *testing.T) {
	m := &transport.Message{Body: []byte("body"), MessageID: "id", CorrelationID: "c", ContentType: "ct", ContentEncoding: "e",
		Properties: map[string]string{"k": "value", "kk": ""}}
	assert.Equal(t, 4+2+1+2+1+1+5+2, m.Size())
}
