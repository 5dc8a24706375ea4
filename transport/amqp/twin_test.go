package amqp

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub"
	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/transport"
)

const waitLong = 15 * time.Second

// testHub is a local hub on a random loopback port.
type testHub struct {
	tb   testing.TB
	h    *hub.Hub
	addr string
}

func newTestHub(tb testing.TB) *testHub {
	tb.Helper()
	h, err := hub.Start(hub.Options{})
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = h.Close() })
	return &testHub{tb: tb, h: h, addr: h.Addrs()[0].String()}
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	tb.Cleanup(cancel)
	return ctx
}

// identity registers a device ("dev") or module ("dev/mod") and returns
// it with a SAS token for it.
func (th *testHub) identity(clientID string) (auth.Identity, string) {
	th.tb.Helper()
	dev, mod, _ := strings.Cut(clientID, "/")
	var key string
	if _, herr := th.h.Engine.GetTwin(dev, ""); herr != nil {
		d, herr := th.h.Engine.PutDevice(dev, engine.Device{}, "")
		require.Nil(th.tb, herr)
		key = *d.Authentication.SymmetricKey.PrimaryKey
	}
	if mod != "" {
		m, herr := th.h.Engine.PutModule(dev, mod, engine.Module{}, "")
		require.Nil(th.tb, herr)
		key = *m.Authentication.SymmetricKey.PrimaryKey
	}
	id := auth.Identity{HostName: th.h.Engine.HostName(), DeviceID: dev, ModuleID: mod}
	tok, err := auth.SignSAS(id.Resource(), "", key, time.Now().Add(time.Hour))
	require.NoError(th.tb, err)
	return id, tok
}

// dialOpts are what a test may change in a connection's Config.
type dialOpts struct {
	ws      bool
	addr    string // "" for the hub's address
	desired func([]byte)
	methods func(*transport.MethodRequest)
	modelID string
	// messages receives cloud-to-device messages (c2d_test.go).
	messages func(*transport.CloudMessage)
}

// dial connects clientID (registering it) and closes the connection at
// the end of the test.
func (th *testHub) dial(clientID string, o dialOpts) *conn {
	th.tb.Helper()
	id, tok := th.identity(clientID)
	addr := o.addr
	if addr == "" {
		addr = th.addr
	}
	tc, err := New(&Options{WebSocket: o.ws}).Dial(ctxT(th.tb), transport.Config{
		Identity:    id,
		Address:     addr,
		Token:       tok,
		TLSConfig:   &tls.Config{RootCAs: th.h.CA.Pool(), MinVersion: tls.VersionTLS12},
		ProductInfo: "iothub-go-test/1.0",
		Methods:     o.methods,
		Desired:     o.desired,
		Messages:    o.messages,
		ModelID:     o.modelID,
	})
	require.NoError(th.tb, err, "dial %s", clientID)
	th.tb.Cleanup(func() { _ = tc.Close() })
	return tc.(*conn)
}

func (th *testHub) twin(deviceID, moduleID string) engine.Twin {
	th.tb.Helper()
	tw, herr := th.h.Engine.GetTwin(deviceID, moduleID)
	require.Nil(th.tb, herr)
	return tw
}

// reported decodes the reported section of a GET answer.
func reported(tb testing.TB, twin []byte) map[string]any {
	tb.Helper()
	var doc struct {
		Desired  map[string]any `json:"desired"`
		Reported map[string]any `json:"reported"`
	}
	require.NoError(tb, json.Unmarshal(twin, &doc), "twin %s", twin)
	require.NotNil(tb, doc.Desired, "twin %s has no desired section", twin)
	return doc.Reported
}

// GetTwin, UpdateReported with increasing versions and null deletes, over
// TLS and WebSocket, for a device and a module.
func TestTwinGetAndUpdateReported(t *testing.T) {
	th := newTestHub(t)
	for _, tc := range []struct {
		name, id string
		ws       bool
	}{
		{"tls", "dev-tls", false},
		{"websocket", "dev-ws", true},
		{"module", "edge/mod1", false},
		{"module-websocket", "edge/mod2", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := th.dial(tc.id, dialOpts{ws: tc.ws})
			ctx := ctxT(t)
			b, err := c.GetTwin(ctx)
			require.NoError(t, err)
			assert.JSONEq(t, `{"desired":{"$version":1},"reported":{"$version":1}}`, string(b))

			for i, patch := range []string{`{"a":1,"obj":{"x":1,"y":2}}`, `{"a":2}`, `{"obj":{"y":null}}`, `{"a":null}`} {
				v, err := c.UpdateReported(ctx, []byte(patch))
				require.NoError(t, err, "patch %s", patch)
				assert.Equal(t, int64(i+2), v, "reported version after %s", patch)
			}
			b, err = c.GetTwin(ctx)
			require.NoError(t, err)
			assert.Equal(t, map[string]any{"obj": map[string]any{"x": float64(1)}, "$version": float64(5)}, reported(t, b))
			dev, mod, _ := strings.Cut(tc.id, "/")
			assert.Contains(t, string(th.twin(dev, mod).Properties), `"obj":{"x":1}`)
		})
	}
	// The module's reports did not touch its device's twin.
	assert.NotContains(t, string(th.twin("edge", "").Properties), `"obj"`)
}

// Desired patches reach Config.Desired in version order once
// SubscribeDesired returned, from one goroutine.
func TestTwinDesiredPatches(t *testing.T) {
	for _, ws := range []bool{false, true} {
		t.Run("ws="+strconv.FormatBool(ws), func(t *testing.T) {
			th := newTestHub(t)
			patches := make(chan []byte, 100)
			var mu sync.Mutex
			inside := false
			overlap := false
			c := th.dial("dev1", dialOpts{ws: ws, desired: func(p []byte) {
				mu.Lock()
				overlap = overlap || inside
				inside = true
				mu.Unlock()
				patches <- p
				mu.Lock()
				inside = false
				mu.Unlock()
			}})
			ctx := ctxT(t)
			require.NoError(t, c.SubscribeDesired(ctx))
			require.NoError(t, c.SubscribeDesired(ctx), "subscribing again is harmless")

			const n = 120
			go func() {
				for i := 1; i <= n; i++ {
					body := `{"properties":{"desired":{"n":` + strconv.Itoa(i) + `,"gone":null}}}`
					if _, herr := th.h.Engine.UpdateTwin("dev1", "", []byte(body), ""); herr != nil {
						return // the test fails below, waiting for the patch
					}
				}
			}()
			for i := 1; i <= n; i++ {
				var p []byte
				select {
				case p = <-patches:
				case <-ctx.Done():
					require.FailNow(t, "desired patch did not arrive", "patch %d", i)
				}
				var m map[string]any
				require.NoError(t, json.Unmarshal(p, &m), "patch %s", p)
				assert.Equal(t, map[string]any{"n": float64(i), "gone": nil, "$version": float64(i + 1)}, m)
			}
			mu.Lock()
			assert.False(t, overlap, "Desired was called concurrently")
			mu.Unlock()
			b, err := c.GetTwin(ctx)
			require.NoError(t, err)
			assert.Contains(t, string(b), `"$version":`+strconv.Itoa(n+1))
		})
	}
}

// A patch the hub refuses is a *transport.HubError with its status and
// the hub's message, clipped and free of the token.
func TestTwinBadPatch(t *testing.T) {
	th := newTestHub(t)
	c := th.dial("dev1", dialOpts{})
	ctx := ctxT(t)
	for _, patch := range []string{`{"$bad":1}`, `{"a.b":1}`, `not json`, `[1,2]`, ``} {
		_, err := c.UpdateReported(ctx, []byte(patch))
		var he *transport.HubError
		require.ErrorAs(t, err, &he, "patch %q", patch)
		assert.Equal(t, 400, he.Status, "patch %q", patch)
		assert.Equal(t, "UpdateReported", he.Op)
		assert.NotEmpty(t, he.Message, "patch %q", patch)
		assert.LessOrEqual(t, len(he.Message), 200+len("…"))
		assert.NotContains(t, err.Error(), "SharedAccessSignature")
	}
	big := `{"a":"` + strings.Repeat("x", 4000) + `"`
	for i := 0; i < 9; i++ {
		big += `,"k` + strconv.Itoa(i) + `":"` + strings.Repeat("y", 4000) + `"`
	}
	_, err := c.UpdateReported(ctx, []byte(big+"}"))
	var he *transport.HubError
	require.ErrorAs(t, err, &he)
	assert.Equal(t, 403, he.Status, "a reported section over 32 KB")
	// The connection is still good.
	v, err := c.UpdateReported(ctx, []byte(`{"ok":true}`))
	require.NoError(t, err)
	assert.Equal(t, int64(2), v)
	select {
	case <-c.Done():
		require.FailNow(t, "the connection ended", "%v", c.Err())
	default:
	}
}

// The model id goes out with the connection: the twin shows it before
// any twin operation, and on every sending link.
func TestTwinModelID(t *testing.T) {
	th := newTestHub(t)
	const model = "dtmi:com:example:Thermostat;1"
	c := th.dial("pnp", dialOpts{modelID: model})
	assert.Equal(t, model, th.twin("pnp", "").ModelID)
	_, err := c.GetTwin(ctxT(t))
	require.NoError(t, err)
	assert.Equal(t, model, th.twin("pnp", "").ModelID)

	th.dial("pnp-ws/m", dialOpts{ws: true, modelID: "dtmi:com:example:Mod;2"})
	assert.Equal(t, "dtmi:com:example:Mod;2", th.twin("pnp-ws", "m").ModelID)
	assert.Empty(t, th.twin("pnp-ws", "").ModelID)
}

// Concurrent first twin operations attach one link pair between them.
func TestTwinConcurrentFirstCalls(t *testing.T) {
	th := newTestHub(t)
	c := th.dial("dev1", dialOpts{})
	ctx := ctxT(t)
	const n = 16
	errs := make(chan error, n)
	var start sync.WaitGroup
	start.Add(1)
	for i := 0; i < n; i++ {
		go func() {
			start.Wait()
			var err error
			if i%2 == 0 {
				_, err = c.GetTwin(ctx)
			} else {
				_, err = c.UpdateReported(ctx, []byte(`{"k`+strconv.Itoa(i)+`":1}`))
			}
			errs <- err
		}()
	}
	start.Done()
	for i := 0; i < n; i++ {
		require.NoError(t, <-errs)
	}
	c.mu.Lock()
	twinLinks := 0
	for _, k := range c.links {
		if k == linkTwin {
			twinLinks++
		}
	}
	c.mu.Unlock()
	assert.Equal(t, 2, twinLinks, "twin links attached")
	assert.Equal(t, int64(n/2+1), reportedVersion(th.twin("dev1", "")))
}

// reportedVersion returns the reported $version of a twin, -1 if it
// cannot be read. (It is called off the test goroutine: no require.)
func reportedVersion(tw engine.Twin) int64 {
	var p struct {
		Reported struct {
			Version int64 `json:"$version"`
		} `json:"reported"`
	}
	if json.Unmarshal(tw.Properties, &p) != nil {
		return -1
	}
	return p.Reported.Version
}

// A twin operation whose caller gives up does not spoil the next one.
func TestTwinContextEnds(t *testing.T) {
	th := newTestHub(t)
	c := th.dial("dev1", dialOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.GetTwin(ctx)
	require.ErrorIs(t, err, context.Canceled)
	_, err = c.GetTwin(ctxT(t))
	require.NoError(t, err)
}

// proxy forwards TCP connections to the hub. hold stops passing the hub's
// bytes to the client; cut closes every connection.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	held   chan struct{}
	wg     sync.WaitGroup
}

func newProxy(tb testing.TB, target string) *proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	p := &proxy{ln: ln, target: target, held: make(chan struct{})}
	p.wg.Add(1)
	go p.serve()
	tb.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		h, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, h)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			_, _ = io.Copy(h, c)
			h.Close()
		}()
		go func() {
			defer p.wg.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := h.Read(buf)
				if n > 0 {
					select {
					case <-p.held:
						continue // swallowed: the client never sees it
					default:
					}
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					c.Close()
					return
				}
			}
		}()
	}
}

func (p *proxy) hold() { close(p.held) }

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// A lost connection ends a pending twin request at once, with an error
// that is not the caller's deadline.
func TestTwinConnectionLossEndsRequest(t *testing.T) {
	th := newTestHub(t)
	p := newProxy(t, th.addr)
	c := th.dial("dev1", dialOpts{addr: p.ln.Addr().String()})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := c.GetTwin(ctx) // the twin links are attached
	require.NoError(t, err)

	p.hold()
	res := make(chan error, 1)
	go func() {
		_, err := c.UpdateReported(ctx, []byte(`{"pending":true}`))
		res <- err
	}()
	// The hub has carried out the patch; its answer is held.
	require.Eventually(t, func() bool {
		tw, herr := th.h.Engine.GetTwin("dev1", "")
		return herr == nil && reportedVersion(tw) == 2
	}, waitLong, 5*time.Millisecond)
	select {
	case err := <-res:
		require.FailNow(t, "the request finished while its answer was held", "%v", err)
	default:
	}
	p.cut()
	select {
	case err := <-res:
		require.Error(t, err)
		assert.False(t, errors.Is(err, context.DeadlineExceeded), "error %v is the deadline", err)
		var he *transport.HubError
		assert.False(t, errors.As(err, &he), "error %v is not the hub's", err)
	case <-time.After(waitLong):
		require.FailNow(t, "the pending request did not end with the connection")
	}
	<-c.Done()
	require.Error(t, c.Err())
	// Later operations fail at once too.
	_, err = c.GetTwin(ctx)
	require.Error(t, err)
	assert.NotErrorIs(t, err, context.DeadlineExceeded)
}

// Methods and twins run at once on one connection.
func TestTwinWithMethods(t *testing.T) {
	th := newTestHub(t)
	var c *conn
	ready := make(chan struct{})
	c = th.dial("dev1", dialOpts{methods: func(req *transport.MethodRequest) {
		go func() {
			<-ready
			_ = c.RespondMethod(context.Background(), req.RequestID, &transport.MethodResponse{Status: 200, Payload: req.Payload})
		}()
	}})
	close(ready)
	ctx := ctxT(t)
	require.NoError(t, c.SubscribeMethods(ctx))
	id := auth.Identity{HostName: th.h.Engine.HostName(), DeviceID: "dev1"}
	require.NoError(t, th.h.Engine.WaitOnline(ctx, id))

	const n = 10
	type result struct {
		status int
		err    *engine.Error
	}
	calls := make(chan result, n)
	for i := 0; i < n; i++ {
		go func() {
			res, herr := th.h.Engine.Invoke(ctx, id, engine.MethodCall{
				Name: "echo", Payload: []byte(`{"i":` + strconv.Itoa(i) + `}`), ResponseTimeout: 10 * time.Second,
			})
			calls <- result{res.Status, herr}
		}()
	}
	for i := 0; i < n; i++ {
		v, err := c.UpdateReported(ctx, []byte(`{"i":`+strconv.Itoa(i)+`}`))
		require.NoError(t, err)
		assert.Equal(t, int64(i+2), v)
	}
	for i := 0; i < n; i++ {
		r := <-calls
		require.Nil(t, r.err)
		assert.Equal(t, 200, r.status)
	}
	_, err := c.GetTwin(ctx)
	require.NoError(t, err)
}

// hubMessage takes the message of IoT Hub's JSON error, else the text,
// clipped and without control characters.
func TestHubMessage(t *testing.T) {
	assert.Equal(t, "bad key", hubMessage([]byte(`{"errorCode":400004,"message":"bad key","trackingId":"x"}`)))
	assert.Equal(t, "plain text", hubMessage([]byte("plain\ntext")))
	long := hubMessage([]byte(strings.Repeat("é", 300)))
	assert.LessOrEqual(t, len(long), 200+len("…"))
	assert.True(t, strings.HasSuffix(long, "…"))
	assert.Equal(t, "", hubMessage(nil))
	assert.Equal(t, "\uFFFD", hubMessage([]byte{0xff}))
}
