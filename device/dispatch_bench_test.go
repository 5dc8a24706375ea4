package device_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/transport"
)

// BenchmarkDispatch measures this client's own work per method call, with
// no network: from the transport handing over a request to the answer
// reaching the transport's RespondMethod, in batches of 64 calls in flight
// (iothub bench's load). "handoff" is its floor: the answer sent from a
// goroutine of its own, as a client that never goes deaf must, with
// nothing else. The difference is the dispatch, the handler slot, the
// handler's call and the answer check.
//
//	go test -run '^$' -bench Dispatch -benchmem ./device
func BenchmarkDispatch(b *testing.B) {
	const inFlight = 64
	payload := []byte(`{"data":"0123456789012345678901234567890123456789012345678901234567890123456789012345678"}`)
	reqs := make([]transport.MethodRequest, inFlight)
	for i := range reqs {
		reqs[i] = transport.MethodRequest{Name: "bench", RequestID: "0123456789abcdef", Payload: payload}
	}
	b.Run("handoff", func(b *testing.B) {
		var wg sync.WaitGroup
		respond := func(_ string, resp *transport.MethodResponse) { wg.Done() }
		b.ReportAllocs()
		for b.Loop() {
			wg.Add(inFlight)
			for i := range reqs {
				r := &reqs[i]
				go func() {
					respond(r.RequestID, &transport.MethodResponse{Status: 200, Payload: r.Payload})
				}()
			}
			wg.Wait()
		}
	})
	b.Run("sdk", func(b *testing.B) {
		tr := &benchTransport{}
		tokens, err := auth.NewKeyTokenProvider("bench.azure-devices.net/devices/bench", "", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", nil)
		require.NoError(b, err)
		c, err := device.NewClient(auth.Identity{HostName: "bench.azure-devices.net", DeviceID: "bench"},
			tokens, &device.ClientOptions{Transport: tr, MaxConcurrentHandlers: inFlight})
		require.NoError(b, err)
		require.NoError(b, c.SetMethodHandler("bench", echo))
		require.NoError(b, c.Connect(context.Background()))
		defer c.Close(context.Background())
		cn := tr.conn
		b.ReportAllocs()
		for b.Loop() {
			cn.wg.Add(inFlight)
			for i := range reqs {
				cn.methods(&reqs[i])
			}
			cn.wg.Wait()
		}
	})
}

// benchTransport dials benchConns.
type benchTransport struct {
	transport.UnimplementedTransport
	conn *benchConn
}

func (t *benchTransport) Dial(_ context.Context, cfg transport.Config) (transport.Conn, error) {
	t.conn = &benchConn{methods: cfg.Methods, done: make(chan struct{})}
	return t.conn, nil
}

func (*benchTransport) Name() string         { return "bench" }
func (*benchTransport) MethodSupport() error { return nil }
func (*benchTransport) TwinSupport() error   { return nil }

// benchConn hands requests to the client and counts its answers.
type benchConn struct {
	transport.UnimplementedConn
	methods func(*transport.MethodRequest)
	wg      sync.WaitGroup
	done    chan struct{}
	once    sync.Once
}

func (*benchConn) SubscribeMethods(context.Context) error { return nil }
func (c *benchConn) RespondMethod(_ context.Context, _ string, _ *transport.MethodResponse) error {
	c.wg.Done()
	return nil
}
func (c *benchConn) Done() <-chan struct{} { return c.done }
func (*benchConn) Err() error              { return nil }
func (c *benchConn) Close() error {
	c.once.Do(func() { close(c.done) })
	return nil
}
