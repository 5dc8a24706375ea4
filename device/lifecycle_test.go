package device_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/internal/testutil/statuslog"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/transport"
)

// The lifecycle of device.Client: Close from anywhere, no blind spots, no
// reconnect storms (issue 14). Each test names the case it covers.

// holder is a method handler that blocks until released, and says when it
// has started.
type holder struct {
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func newHolder() *holder {
	return &holder{started: make(chan struct{}, 64), release: make(chan struct{})}
}

func (h *holder) handler(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
	h.started <- struct{}{}
	<-h.release
	return device.JSONResponse(200, "late")
}

func (h *holder) waitStarted(t *testing.T) {
	t.Helper()
	select {
	case <-h.started:
	case <-time.After(time.Minute):
		require.FailNow(t, "the handler did not start")
	}
}

func (h *holder) free() { h.once.Do(func() { close(h.release) }) }

// logCapture is a slog handler that keeps every message.
type logCapture struct {
	mu   *sync.Mutex
	msgs *[]string
}

func newLogCapture() logCapture { return logCapture{mu: &sync.Mutex{}, msgs: new([]string)} }

func (l logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (l logCapture) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	*l.msgs = append(*l.msgs, r.Message)
	l.mu.Unlock()
	return nil
}
func (l logCapture) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l logCapture) WithGroup(string) slog.Handler      { return l }

func (l logCapture) has(msg string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range *l.msgs {
		if m == msg {
			return true
		}
	}
	return false
}

func onlyTransports(t *testing.T, names []string, f func(t *testing.T, tr transport.Transport)) {
	t.Helper()
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		for _, n := range names {
			if tr.Name() == n {
				f(t, tr)
				return
			}
		}
	})
}

// Case 1: a handler that answers and then shuts the device down, as the
// seed's reboot flow does. Close returns inside the handler, the answer
// reaches the caller, and the connection closes once it is sent.
func TestCloseFromHandler(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		log := statuslog.New()
		closeErr := make(chan error, 1)
		c, err := device.NewClientFromConnectionString(cs, &device.ClientOptions{Transport: tr, TLSConfig: hub.TLSConfig(), OnConnectionStatus: log.Record})
		require.NoError(t, err)
		require.NoError(t, c.SetMethodHandler("reboot", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
			// No deadline: a Close that waited for this handler would
			// never return, and the caller would get 504101.
			closeErr <- c.Close(context.Background())
			return device.JSONResponse(200, map[string]string{"result": "Reboot started."})
		}))
		require.NoError(t, c.Connect(context.Background()))

		r := invoke(hub, "dev1", "reboot", "", 10)
		require.NoError(t, r.Err)
		require.Equal(t, 200, r.HTTP, "the handler's answer must reach the caller: %s", r.Raw)
		assert.Equal(t, 200, r.Status)
		assert.JSONEq(t, `{"result":"Reboot started."}`, string(r.Payload))
		require.NoError(t, <-closeErr, "Close from the handler")

		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		require.NoError(t, hub.WaitOffline(ctx, "dev1"), "the connection must close once the answer is sent")
		waitUntil(t, "the closed status", func() bool {
			all := log.All()
			return len(all) > 0 && all[len(all)-1].State == device.ConnectionStateClosed
		})
		log.Check(t, "dev1")
		require.NoError(t, c.Close(context.Background()), "a second Close")
		require.ErrorIs(t, c.Connect(context.Background()), device.ErrClosed)
	})
}

// Case 2: "give up and clean up" code calls Close in the status callback
// when the connection drops. Close returns there, and the final status,
// delivered after the callback returns, is closed.
func TestCloseFromStatusCallback(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		log := statuslog.New()
		closeErr := make(chan error, 1)
		var c *device.Client
		var once sync.Once
		c, err := device.NewClientFromConnectionString(cs, &device.ClientOptions{
			Transport: tr, TLSConfig: hub.TLSConfig(), Retry: fastRetry,
			OnConnectionStatus: func(s device.ConnectionStatus) {
				log.Record(s)
				if s.State == device.ConnectionStateConnecting && s.Err != nil {
					once.Do(func() { closeErr <- c.Close(context.Background()) })
				}
			},
		})
		require.NoError(t, err)
		require.NoError(t, c.SetMethodHandler("echo", echo))
		require.NoError(t, c.Connect(context.Background()))
		log.WaitFor(t, device.ConnectionStateConnected)
		require.True(t, hub.DropConnection("dev1"))
		select {
		case err := <-closeErr:
			require.NoError(t, err)
		case <-time.After(time.Minute):
			require.FailNow(t, "Close called from the status callback never returned")
		}
		log.WaitFor(t, device.ConnectionStateClosed)
		log.Check(t, "dev1")
		require.Equal(t, device.ConnectionStateClosed, c.ConnectionState())
	})
}

// silentListener accepts TCP connections and never says a word: a TLS
// handshake with it hangs.
type silentListener struct {
	ln       net.Listener
	accepted chan net.Conn
}

func newSilentListener(t *testing.T) *silentListener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &silentListener{ln: ln, accepted: make(chan net.Conn, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for {
			select {
			case c := <-s.accepted:
				c.Close()
			default:
				return
			}
		}
	})
	return s
}

// Case 3: Close while the dial hangs in the handshake. Connect returns at
// once with ErrClosed, the client drops the half-open socket, and nothing
// is reported after closed.
func TestCloseDuringConnect(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		sl := newSilentListener(t)
		key := base64.StdEncoding.EncodeToString(make([]byte, 32))
		cs := fmt.Sprintf("HostName=localhost;DeviceId=dev1;SharedAccessKey=%s;GatewayHostName=%s", key, sl.ln.Addr())
		log := statuslog.New()
		c, err := device.NewClientFromConnectionString(cs, &device.ClientOptions{Transport: tr, OnConnectionStatus: log.Record})
		require.NoError(t, err)
		require.NoError(t, c.SetMethodHandler("echo", echo))
		connectErr := make(chan error, 1)
		go func() { connectErr <- c.Connect(context.Background()) }()
		var peer net.Conn
		select {
		case peer = <-sl.accepted:
		case <-time.After(time.Minute):
			require.FailNow(t, "the client never dialed")
		}
		require.NoError(t, c.Close(context.Background()))
		select {
		case err := <-connectErr:
			require.ErrorIs(t, err, device.ErrClosed)
		case <-time.After(20 * time.Second): // a hang guard: the dial's own limit is 60 s
			require.FailNow(t, "Connect did not end when Close was called")
		}
		// The client let go of the socket.
		require.NoError(t, peer.SetReadDeadline(time.Now().Add(20*time.Second)))
		_, err = io.ReadAll(peer)
		var ne net.Error
		require.False(t, errors.As(err, &ne) && ne.Timeout(), "the client kept the socket open: %v", err)
		log.WaitFor(t, device.ConnectionStateClosed)
		log.Check(t, "dev1")
	})
}

// Case 4: while MQTT renewal waits for a running handler before it
// reconnects, a lost connection is noticed at once: the client reports
// connecting, reconnects and takes calls, though the handler still runs.
func TestRenewalWaitNoticesLoss(t *testing.T) {
	onlyTransports(t, []string{"mqtt", "mqtt-ws"}, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		logs := newLogCapture()
		log := statuslog.New()
		hold := newHolder()
		defer hold.free()
		// Renewal due 2-3 s after connecting, 57 s before expiry.
		newClient(t, hub, cs, &device.ClientOptions{Transport: tr, OnConnectionStatus: log.Record, Logger: slog.New(logs),
			SAS: auth.TokenOptions{TTL: time.Minute, RenewBefore: 57 * time.Second}}, func(c *device.Client) {
			c.SetMethodHandler("hold", hold.handler)
			c.SetMethodHandler("echo", echo)
		})
		log.WaitFor(t, device.ConnectionStateConnected)
		held := callAsync(hub, "dev1", "hold", "", 60)
		hold.waitStarted(t)
		waitUntil(t, "the renewal to wait for the handler", func() bool { return logs.has("renewing the SAS token by reconnecting") })

		require.True(t, hub.DropConnection("dev1"))
		s := log.WaitFor(t, device.ConnectionStateConnecting)
		require.Error(t, s.Err, "the loss must carry a reason")
		log.WaitFor(t, device.ConnectionStateConnected)
		r := call(t, hub, "dev1", "echo", `"during the wait"`)
		require.Equal(t, 200, r.Status, "%+v", r)
		hold.free()
		await(t, held) // its connection is gone: the hub answered 404103
	})
}

// Case 4, second half: Close during the renewal wait still lets the running
// handler's answer go out before the connection closes.
func TestCloseDuringRenewalWait(t *testing.T) {
	onlyTransports(t, []string{"mqtt", "mqtt-ws"}, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		logs := newLogCapture()
		hold := newHolder()
		defer hold.free()
		c, err := device.NewClientFromConnectionString(cs, &device.ClientOptions{Transport: tr, TLSConfig: hub.TLSConfig(), Logger: slog.New(logs),
			SAS: auth.TokenOptions{TTL: time.Minute, RenewBefore: 57 * time.Second}})
		require.NoError(t, err)
		require.NoError(t, c.SetMethodHandler("hold", hold.handler))
		require.NoError(t, c.Connect(context.Background()))
		held := callAsync(hub, "dev1", "hold", "", 60)
		hold.waitStarted(t)
		waitUntil(t, "the renewal to wait for the handler", func() bool { return logs.has("renewing the SAS token by reconnecting") })

		closed := make(chan error, 1)
		go func() { closed <- c.Close(context.Background()) }()
		waitUntil(t, "Close to begin", func() bool { return errors.Is(c.Connect(context.Background()), device.ErrClosed) })
		hold.free()
		r := await(t, held)
		require.Equal(t, 200, r.HTTP, "the answer of the running handler must go out: %s", r.Raw)
		require.Equal(t, `"late"`, string(r.Payload))
		require.NoError(t, <-closed)
	})
}

// Case 5: two clients sharing one identity. The hub keeps only the newest
// connection, so each connect ends the other's; connections that end that
// soon count toward the backoff, and the pair settles instead of storming.
func TestSharedIdentityNoReconnectStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("observes 10 s")
	}
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		var logs [2]*statuslog.Log
		for i := range logs {
			logs[i] = statuslog.New()
			// Default retry options: what two processes sharing a
			// connection string would run with.
			c, err := device.NewClientFromConnectionString(cs, &device.ClientOptions{Transport: tr, TLSConfig: hub.TLSConfig(), OnConnectionStatus: logs[i].Record})
			require.NoError(t, err)
			require.NoError(t, c.SetMethodHandler("echo", echo))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			require.NoError(t, c.Connect(ctx))
			cancel()
			t.Cleanup(func() { c.Close(context.Background()) })
		}
		start := time.Now()
		window := 10 * time.Second
		<-time.After(window) // an observation window, not a wait for a condition
		reconnects, reasons := 0, 0
		for _, l := range logs {
			for _, s := range l.Between(start, start.Add(window)) {
				if s.State == device.ConnectionStateConnected {
					reconnects++
				}
			}
			for _, s := range l.All() {
				if s.State == device.ConnectionStateConnecting && device.IsShortLived(s.Err) {
					reasons++
				}
			}
		}
		t.Logf("%d reconnects in %v between the two clients", reconnects, window)
		assert.LessOrEqual(t, reconnects, 12, "reconnects in %v", window)
		assert.Positive(t, reasons, "no status said the connection ended soon after it started: %v %v", logs[0].All(), logs[1].All())
	})
}

// Case 7: AMQP partial failures. A detach of only the response link, of
// only the request link, or the end of the session alone counts as a lost
// connection: the client reconnects, subscribes again and answers.
func TestAMQPPartialFailures(t *testing.T) {
	onlyTransports(t, []string{"amqp", "amqp-ws"}, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		log := statuslog.New()
		newClient(t, hub, cs, &device.ClientOptions{Transport: tr, OnConnectionStatus: log.Record}, func(c *device.Client) {
			c.SetMethodHandler("echo", echo)
		})
		log.WaitFor(t, device.ConnectionStateConnected)
		for _, fault := range []string{"response", "request", "session", "response"} {
			if fault == "session" {
				require.True(t, hub.EndSession("dev1"), "end the session")
			} else {
				require.True(t, hub.DetachMethodLink("dev1", fault), "detach the %s link", fault)
			}
			s := log.WaitFor(t, device.ConnectionStateConnecting)
			require.Error(t, s.Err, "after the %s fault", fault)
			log.WaitFor(t, device.ConnectionStateConnected)
			p := fmt.Sprintf(`"after %s"`, fault)
			r := call(t, hub, "dev1", "echo", p)
			require.Equal(t, 200, r.Status, "call after the %s fault: %+v", fault, r)
			require.Equal(t, p, string(r.Payload))
		}
	})
}

// Case 8: removing handlers. One removed handler's name gets 501; with no
// handler left the client unsubscribes and the hub answers 404103; the
// next registration subscribes again before it returns.
func TestRemovingHandlersUnsubscribes(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		c := newClient(t, hub, cs, &device.ClientOptions{Transport: tr}, func(c *device.Client) {
			c.SetMethodHandler("a", echo)
			c.SetMethodHandler("b", echo)
		})
		notOnline := func(method string) {
			t.Helper()
			r := invoke(hub, "dev1", method, "", 5)
			require.NoError(t, r.Err)
			require.Equal(t, 404, r.HTTP, "%+v", r)
			require.Contains(t, r.Raw, "404103")
		}
		require.NoError(t, c.SetMethodHandler("a", nil))
		assert.Equal(t, 501, call(t, hub, "dev1", "a", "1").Status)
		assert.Equal(t, 200, call(t, hub, "dev1", "b", "2").Status)

		require.NoError(t, c.SetMethodHandler("b", nil))
		notOnline("b")
		assert.Equal(t, device.ConnectionStateConnected, c.ConnectionState(), "unsubscribing is no disconnect")

		require.NoError(t, c.SetDefaultMethodHandler(func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
			return device.JSONResponse(202, req.Name)
		}))
		r := call(t, hub, "dev1", "anything", "")
		assert.Equal(t, 202, r.Status, "the default handler subscribes: %+v", r)

		require.NoError(t, c.SetDefaultMethodHandler(nil))
		notOnline("anything")

		require.NoError(t, c.SetMethodHandler("b", echo))
		r = call(t, hub, "dev1", "b", "3")
		assert.Equal(t, 200, r.Status, "subscribed again: %+v", r)

		// The registry, not the connection, decides: after a reconnect a
		// client without handlers stays unsubscribed.
		require.NoError(t, c.SetMethodHandler("b", nil))
		require.True(t, hub.DropConnection("dev1"))
		waitUntil(t, "the reconnect", func() bool { return c.ConnectionState() == device.ConnectionStateConnected })
		notOnline("b")
	})
}

// Case 9: calls waiting for a handler slot are bounded. With one slot and
// 16 waiting places, further calls are answered at once with 503.
func TestWaitingCallsBounded(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		hold := newHolder()
		defer hold.free()
		newClient(t, hub, cs, &device.ClientOptions{Transport: tr, MaxConcurrentHandlers: 1}, func(c *device.Client) {
			c.SetMethodHandler("hold", hold.handler)
		})
		const taken, extra = 1 + 16, 4
		results := make(chan result, taken+extra)
		for range taken + extra {
			go func() { results <- invoke(hub, "dev1", "hold", "", 60) }()
		}
		for i := range extra {
			select {
			case r := <-results:
				require.NoError(t, r.Err)
				require.Equal(t, 503, r.Status, "answer %d before the release: %+v", i, r)
				require.Contains(t, string(r.Payload), "busy")
			case <-time.After(time.Minute):
				require.FailNow(t, "calls beyond the bound were not answered at once")
			}
		}
		hold.free()
		for range taken {
			r := <-results
			require.NoError(t, r.Err)
			require.Equal(t, 200, r.Status, "%+v", r)
		}
	})
}

// dueTokens hands out valid tokens that are already due for renewal.
type dueTokens struct {
	*countingTokens
	calls atomic.Int32
	first atomic.Int64 // unix nanoseconds of the first call
}

func (p *dueTokens) Token(ctx context.Context) (auth.Token, error) {
	p.first.CompareAndSwap(0, time.Now().UnixNano())
	p.calls.Add(1)
	tok, err := p.countingTokens.Token(ctx)
	tok.RenewAt = time.Now().Add(-time.Minute)
	return tok, err
}

// Case 9: a token that is overdue as soon as it is handed out never causes
// a tight renewal or reconnect loop.
func TestOverdueTokenNoTightLoop(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		ct, id := newCountingTokens(t, cs, auth.TokenOptions{})
		tokens := &dueTokens{countingTokens: ct}
		c := connectWithTokens(t, hub, tr, id, tokens, nil)
		waitUntil(t, "three renewals", func() bool { return tokens.calls.Load() >= 4 })
		elapsed := time.Since(time.Unix(0, tokens.first.Load()))
		// At least a second between renewals of an overdue token: three
		// renewals cannot take less than two seconds on any machine.
		require.GreaterOrEqual(t, elapsed, 2*time.Second, "%d token requests in %v", tokens.calls.Load(), elapsed)
		waitUntil(t, "connected", func() bool { return c.ConnectionState() == device.ConnectionStateConnected })
		require.Equal(t, 200, call(t, hub, "dev1", "echo", "1").Status)
	})
}

// stuckTokens hangs on its second request until the caller's context ends.
type stuckTokens struct {
	*countingTokens
	calls  atomic.Int32
	stuck  chan struct{} // closed when the stuck request starts
	gaveUp chan error    // the stuck request's context error
}

func (p *stuckTokens) Token(ctx context.Context) (auth.Token, error) {
	if p.calls.Add(1) == 2 {
		close(p.stuck)
		<-ctx.Done()
		p.gaveUp <- ctx.Err()
		return auth.Token{}, ctx.Err()
	}
	return p.countingTokens.Token(ctx)
}

// Case 9: renewal has a time limit. A token provider that never answers
// the renewal is given up on, and the client renews by reconnecting.
func TestRenewalTimeLimit(t *testing.T) {
	t.Cleanup(device.SetRenewTimeout(time.Second)) // restored after the subtests' clients closed
	// AMQP renews on the live connection, with a put-token: that is the
	// renewal with its own time limit. MQTT renews by reconnecting, and its
	// token request is bounded by the dial's time limit.
	onlyTransports(t, []string{"amqp", "amqp-ws"}, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		ct, id := newCountingTokens(t, cs, auth.TokenOptions{TTL: time.Minute, RenewBefore: 57 * time.Second})
		tokens := &stuckTokens{countingTokens: ct, stuck: make(chan struct{}), gaveUp: make(chan error, 1)}
		c := connectWithTokens(t, hub, tr, id, tokens, nil)
		select {
		case <-tokens.stuck:
		case <-time.After(time.Minute):
			require.FailNow(t, "no renewal")
		}
		select {
		case err := <-tokens.gaveUp:
			require.ErrorIs(t, err, context.DeadlineExceeded)
		case <-time.After(time.Minute): // the limit is 1 s here
			require.FailNow(t, "the renewal waited for the token provider without a time limit")
		}
		waitUntil(t, "a working connection again", func() bool {
			return c.ConnectionState() == device.ConnectionStateConnected && tokens.calls.Load() >= 3
		})
		require.Equal(t, 200, call(t, hub, "dev1", "echo", "1").Status)
	})
}

// Case 9: the goroutine behind OnConnectionStatus starts on Connect, not
// in the constructor, and a client that never connected leaves nothing
// running.
func TestNoGoroutineBeforeConnect(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	cs := hub.AddDevice(t, "dev1")
	hubRunning := goleak.IgnoreCurrent()
	c, err := device.NewClientFromConnectionString(cs, &device.ClientOptions{TLSConfig: hub.TLSConfig(), OnConnectionStatus: func(device.ConnectionStatus) {}})
	require.NoError(t, err)
	require.NoError(t, c.SetMethodHandler("echo", echo))
	goleak.VerifyNone(t, hubRunning)
	require.NoError(t, c.Close(context.Background()))
	goleak.VerifyNone(t, hubRunning)
}

// Issue 16.4: a call that waited in the device's queue longer than the hub
// waits for any answer is never handed to a handler (its caller gave up
// long ago): it is refused with status 504, and later calls run as usual.
func TestStaleCallsNeverRun(t *testing.T) {
	t.Cleanup(device.SetStaleAfter(300 * time.Millisecond)) // after the parallel subtests
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		hold := newHolder()
		defer hold.free()
		var ran atomic.Int32
		newClient(t, hub, cs, &device.ClientOptions{Transport: tr, MaxConcurrentHandlers: 1}, func(c *device.Client) {
			c.SetMethodHandler("hold", hold.handler)
			c.SetMethodHandler("reboot", func(context.Context, *device.MethodRequest) (*device.MethodResponse, error) {
				ran.Add(1)
				return nil, nil
			})
		})
		first := callAsync(hub, "dev1", "hold", "", 60)
		hold.waitStarted(t)
		// The only handler slot is taken: this call waits in the queue
		// until it is stale, and the hub waits 5 s for its answer.
		r := await(t, callAsync(hub, "dev1", "reboot", "", 5))
		require.Equal(t, 504, r.Status, "the stale call's answer: %+v", r)
		require.Contains(t, string(r.Payload), "not run")
		hold.free()
		require.Equal(t, 200, await(t, first).Status)
		require.Equal(t, 200, call(t, hub, "dev1", "reboot", "").Status)
		require.Equal(t, int32(1), ran.Load(), "the stale call reached its handler")
	})
}

// stallTransport is a real transport whose connections hold an answer
// whose payload is "stall" until released, whatever the context says: as paho's
// Publish holds an MQTT answer for its write timeout (30 s) when the
// connection drops during the hand-over (RELIABILITY.md, fix 2 of the fault
// tests), which a test cannot time.
type stallTransport struct {
	transport.Transport
	entered chan struct{}
	release chan struct{}
}

type stallConn struct {
	transport.Conn
	st *stallTransport
}

func (s *stallTransport) Dial(ctx context.Context, cfg transport.Config) (transport.Conn, error) {
	c, err := s.Transport.Dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &stallConn{Conn: c, st: s}, nil
}

func (c *stallConn) RespondMethod(ctx context.Context, rid string, resp *transport.MethodResponse) error {
	if string(resp.Payload) == `"stall"` {
		c.st.entered <- struct{}{}
		<-c.st.release
	}
	return c.Conn.RespondMethod(ctx, rid, resp)
}

// Close does not wait for an answer on a connection that has been lost:
// it cannot reach the hub, and may be held up for paho's write timeout.
// It still waits for the handlers.
func TestCloseSkipsAnswersOnLostConnection(t *testing.T) {
	onlyTransports(t, []string{"mqtt"}, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		log := statuslog.New()
		st := &stallTransport{Transport: tr, entered: make(chan struct{}, 1), release: make(chan struct{})}
		var releaseOnce sync.Once
		release := func() { releaseOnce.Do(func() { close(st.release) }) }
		defer release()
		c := newClient(t, hub, cs, &device.ClientOptions{Transport: st, OnConnectionStatus: log.Record}, func(c *device.Client) {
			c.SetMethodHandler("echo", echo)
		})
		log.WaitFor(t, device.ConnectionStateConnected)
		held := callAsync(hub, "dev1", "echo", `"stall"`, 60)
		select {
		case <-st.entered:
		case <-time.After(time.Minute):
			require.FailNow(t, "the answer was not sent")
		}
		require.True(t, hub.DropConnection("dev1"))
		log.WaitFor(t, device.ConnectionStateConnecting)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		require.NoError(t, c.Close(ctx), "Close waited for an answer on a lost connection")
		release()
		r := await(t, held) // its connection is gone: the hub answered 404103
		require.NotEqual(t, 200, r.Status, "%+v", r)
	})
}
