package reliability_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/internal/faultproxy"
	"github.com/iothub-go/iothub/internal/testutil/statuslog"
	"github.com/iothub-go/iothub/service"
)

// forEachTransport runs fn as a parallel subtest per method transport; the
// test itself runs in parallel with the other scenarios.
func forEachTransport(t *testing.T, fn func(t *testing.T, tp tport)) {
	t.Parallel()
	for _, tp := range transports {
		t.Run(tp.name, func(t *testing.T) {
			t.Parallel()
			fn(t, tp)
		})
	}
}

// holder is a method handler that blocks until released, and says when it
// has started.
type holder struct {
	started chan string
	release chan struct{}
	once    sync.Once
}

func newHolder() *holder {
	return &holder{started: make(chan string, 16), release: make(chan struct{})}
}

func (h *holder) handler(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
	h.started <- string(req.Payload)
	select {
	case <-h.release:
	case <-ctx.Done():
	}
	return device.JSONResponse(200, "late")
}

func (h *holder) wait(t testing.TB) string {
	t.Helper()
	select {
	case p := <-h.started:
		return p
	case <-time.After(60 * time.Second):
		require.FailNow(t, "the handler did not start")
		return ""
	}
}

func (h *holder) free() { h.once.Do(func() { close(h.release) }) }

type callResult struct {
	res *service.MethodResult
	err error
}

func (f *fixture) invokeAsync(id, method string, payload any, rt, ct time.Duration) <-chan callResult {
	ch := make(chan callResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		r, err := f.invoke(ctx, id, method, payload, rt, ct)
		ch <- callResult{r, err}
	}()
	return ch
}

func waitCall(t testing.TB, ch <-chan callResult) callResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Minute):
		require.FailNow(t, "the call never returned")
		return callResult{}
	}
}

// recovered checks that d is connected, answering, and holds exactly one
// connection through the proxy.
func (f *fixture) recovered(t testing.TB, d *dev, tag string) {
	t.Helper()
	require.Equal(t, device.ConnectionStateConnected, d.c.ConnectionState(), "state after recovery")
	f.mustEcho(t, d, tag)
	waitFor(t, "exactly one proxied connection", func() bool { return f.proxy.Active() == 1 })
}

// lastCall returns the hub's record of the newest call of method.
func (f *fixture) lastCall(method string) (code int, protocol string) {
	calls := f.engine().Calls()
	for i := len(calls) - 1; i >= 0; i-- {
		if calls[i].Method == method {
			return calls[i].ErrorCode, calls[i].Protocol
		}
	}
	return -1, ""
}

// A connection reset while a handler runs: the caller gets 404103 at once
// (not a 30 s timeout), the late answer goes nowhere, the device reconnects
// and answers the next call.
func TestConnectionCutMidCall(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tp tport) {
		f := newFixture(t, nil)
		f.addDevice("dev1")
		h := newHolder()
		defer h.free()
		d := f.connect(t, "dev1", tp, &devOptions{setup: func(c *device.Client) { c.SetMethodHandler("hold", h.handler) }})
		d.status.WaitFor(t, device.ConnectionStateConnected)

		call := f.invokeAsync("dev1", "hold", nil, 60*time.Second, 0)
		h.wait(t)
		require.Equal(t, 1, f.proxy.Cut(), "connections cut")
		r := waitCall(t, call)
		require.ErrorIs(t, r.err, service.ErrDeviceNotOnline, "call cut mid-way: %+v", r.res)
		d.status.Reconnected(t, "the cut")
		h.free() // its answer belongs to a dead connection
		f.recovered(t, d, "after cut")
		code, proto := f.lastCall("hold")
		require.Equal(t, 404103, code, "the hub's record of the cut call")
		require.Equal(t, tp.name, proto, "the hub's record of the cut call")
	})
}

// The hub process goes away and comes back on the same address with the
// same registry: callers meanwhile get an error, the device reconnects by
// itself with backoff, and calls work again.
func TestHubRestart(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tp tport) {
		f := newFixture(t, &fixtureOptions{svcRetry: &policy.RetryOptions{MaxRetries: -1}})
		f.addDevice("dev1")
		h := newHolder()
		defer h.free()
		d := f.connect(t, "dev1", tp, &devOptions{direct: true, setup: func(c *device.Client) { c.SetMethodHandler("hold", h.handler) }})
		d.status.WaitFor(t, device.ConnectionStateConnected)

		pending := f.invokeAsync("dev1", "hold", nil, 60*time.Second, 0)
		h.wait(t)
		f.stop()
		// The call in flight ends with the hub's error or, when the hub
		// went before it could answer, a network error: never a result and
		// never a hang.
		r := waitCall(t, pending)
		require.Error(t, r.err, "a call in flight at the restart returned %+v", r.res)
		require.Contains(t, []int{0, 404103, 503001}, hubErrorCode(r.err), "call in flight at the restart: %v", r.err)
		s := d.status.WaitFor(t, device.ConnectionStateConnecting)
		require.Error(t, s.Err, "the status after the hub went gives no reason")
		// While the hub is down a call fails promptly.
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		_, err := f.invoke(ctx, "dev1", "echo", nil, 5*time.Second, 0)
		cancel()
		require.Error(t, err, "a call succeeded while the hub was down")
		// Let the client fail a few reconnects before the hub is back.
		waitFor(t, "failed reconnect attempts", func() bool { return statuslog.CountLosses(d.status.All()) >= 3 })
		f.start()
		d.status.WaitFor(t, device.ConnectionStateConnected)
		h.free()
		require.Equal(t, device.ConnectionStateConnected, d.c.ConnectionState(), "state")
		f.mustEcho(t, d, "after restart")
	})
}

// The link goes silent (no FIN, no RST) for longer than the keep-alive:
// the client must notice by itself and reconnect; a call sent into the dead
// link ends with the hub's 504101 or 404103.
func TestStallLongerThanKeepAlive(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tp tport) {
		f := newFixture(t, nil)
		f.addDevice("dev1")
		d := f.connect(t, "dev1", tp, &devOptions{keepAlive: 2 * time.Second})
		d.status.WaitFor(t, device.ConnectionStateConnected)
		time.Sleep(500 * time.Millisecond) // let the link settle (AMQP flow, MQTT acks)
		require.Equal(t, 1, f.proxy.Stall(), "connections stalled")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		_, err := f.invoke(ctx, "dev1", "echo", json.RawMessage(`"into the void"`), 5*time.Second, 0)
		cancel()
		require.True(t, errors.Is(err, service.ErrGatewayTimeout) || errors.Is(err, service.ErrDeviceNotOnline),
			"call into a stalled link: %v; want 504101 or 404103", err)
		require.Zero(t, d.executions(`"into the void"`), "a request crossed the stalled link")
		d.status.Reconnected(t, "the stall")
		f.recovered(t, d, "after stall")
	})
}

// The hub expires the device's token while a handler runs: the hub closes
// the connection, the caller gets 404103, the client reconnects with a new
// token and answers again.
func TestTokenExpiryDuringCall(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tp tport) {
		f := newFixture(t, nil)
		f.addDevice("dev1")
		h := newHolder()
		defer h.free()
		d := f.connect(t, "dev1", tp, &devOptions{setup: func(c *device.Client) { c.SetMethodHandler("hold", h.handler) }})
		d.status.WaitFor(t, device.ConnectionStateConnected)
		time.Sleep(1100 * time.Millisecond) // a new token then expires a second later

		call := f.invokeAsync("dev1", "hold", nil, 60*time.Second, 0)
		h.wait(t)
		f.engine().ExpireTokens(identity("dev1"))
		r := waitCall(t, call)
		require.ErrorIs(t, r.err, service.ErrDeviceNotOnline, "call during token expiry: %+v", r.res)
		d.status.Reconnected(t, "the expiry")
		h.free()
		f.recovered(t, d, "after expiry")
	})
}

// A handler slower than the call's response timeout: the caller gets
// 504101 after the timeout, the late answer is dropped, and the device is
// not disturbed. The hub's response-delay fault gives the same.
func TestHandlerSlowerThanResponseTimeout(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tp tport) {
		f := newFixture(t, nil)
		f.addDevice("dev1")
		h := newHolder()
		defer h.free()
		d := f.connect(t, "dev1", tp, &devOptions{setup: func(c *device.Client) { c.SetMethodHandler("hold", h.handler) }})
		d.status.WaitFor(t, device.ConnectionStateConnected)

		call := f.invokeAsync("dev1", "hold", nil, 5*time.Second, 0)
		h.wait(t)
		r := waitCall(t, call)
		require.ErrorIs(t, r.err, service.ErrGatewayTimeout, "slow handler: %+v", r.res)
		require.Equal(t, 504101, hubErrorCode(r.err), "slow handler: %v", r.err)
		h.free() // the late answer must be dropped quietly
		f.mustEcho(t, d, "after late answer")

		f.engine().SetResponseFault(identity("dev1"), 6*time.Second, false)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		_, err := f.invoke(ctx, "dev1", "echo", json.RawMessage(`"delayed"`), 5*time.Second, 0)
		cancel()
		require.Equal(t, 504101, hubErrorCode(err), "delayed response: %v", err)
		f.engine().SetResponseFault(identity("dev1"), 0, false)
		f.recovered(t, d, "after delays")
		require.Zero(t, statuslog.CountLosses(d.status.All()), "connections lost over slow answers")
	})
}

// 429 storms: throttled calls fail with ErrThrottled after the client's
// retries, or succeed when a retry gets through; a throttled call never
// reaches the device, a retried one runs there exactly once.
func TestThrottlingStorm(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tp tport) {
		f := newFixture(t, &fixtureOptions{svcRetry: &policy.RetryOptions{MaxRetries: 2, RetryDelay: 5 * time.Millisecond, MaxRetryDelay: 20 * time.Millisecond}})
		f.addDevice("dev1")
		d := f.connect(t, "dev1", tp, nil)
		d.status.WaitFor(t, device.ConnectionStateConnected)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()

		// More 429s than retries: the caller gets the hub's 429001.
		f.engine().FailServiceRequests(429001, 3)
		_, err := f.invoke(ctx, "dev1", "echo", json.RawMessage(`"t1"`), 10*time.Second, 0)
		require.ErrorIs(t, err, service.ErrThrottled, "storm beyond the retries")
		require.Equal(t, 429001, hubErrorCode(err), "storm beyond the retries: %v", err)
		require.Zero(t, d.executions(`"t1"`), "a throttled call reached the device")
		// Fewer 429s than retries: the call goes through, once.
		f.engine().FailServiceRequests(429001, 2)
		r, err := f.invoke(ctx, "dev1", "echo", json.RawMessage(`"t2"`), 10*time.Second, 0)
		require.NoError(t, err, "retried call")
		require.Equal(t, `"t2"`, string(r.Payload), "retried call")
		require.Equal(t, 1, d.executions(`"t2"`), "executions of a retried call")
		// 503s are handled the same way.
		f.engine().FailServiceRequests(503001, 3)
		_, err = f.invoke(ctx, "dev1", "echo", json.RawMessage(`"t3"`), 10*time.Second, 0)
		require.ErrorIs(t, err, service.ErrServiceUnavailable, "503 storm")

		// A storm across concurrent callers without retries: each call is
		// throttled or answered, and the device runs exactly the answered ones.
		noRetry := f.serviceClient(t, f.serviceConnString("iothubowner", f.ownerKey), policy.RetryOptions{MaxRetries: -1})
		f.engine().FailServiceRequests(429001, 60)
		var wg sync.WaitGroup
		var answered, throttled atomic.Int32
		errs := make(chan error, 100)
		for i := range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := fmt.Sprintf(`{"storm":%d}`, i)
				r, err := invokeWith(ctx, noRetry, "dev1", "echo", json.RawMessage(p), 30*time.Second, 0)
				switch {
				case err == nil && string(r.Payload) == p:
					answered.Add(1)
					if n := d.executions(p); n != 1 {
						errs <- fmt.Errorf("call %d answered but ran %d times", i, n)
					}
				case errors.Is(err, service.ErrThrottled):
					throttled.Add(1)
					if n := d.executions(p); n != 0 {
						errs <- fmt.Errorf("call %d throttled but ran %d times", i, n)
					}
				default:
					errs <- fmt.Errorf("call %d: %v", i, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			assert.NoError(t, err)
		}
		require.Equal(t, int32(40), answered.Load(), "answered calls (throttled: %d)", throttled.Load())
		require.Equal(t, int32(60), throttled.Load(), "throttled calls")
		f.recovered(t, d, "after storm")
	})
}

// A device whose link keeps dropping (proxy resets and hub-side drops,
// alternately) while callers keep calling with a connect timeout: every
// call is answered or fails with a documented error, none runs twice, and
// once the flapping stops the device is connected and answering.
func TestDeviceFlapping(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tp tport) {
		f := newFixture(t, nil)
		f.addDevice("dev1")
		d := f.connect(t, "dev1", tp, nil)
		d.status.WaitFor(t, device.ConnectionStateConnected)

		stop := make(chan struct{})
		var flaps atomic.Int32
		var fwg sync.WaitGroup
		fwg.Add(1)
		go func() {
			defer fwg.Done()
			rng := rand.New(rand.NewPCG(1, 2))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(100+rng.IntN(300)) * time.Millisecond):
				}
				var cut bool
				if i%2 == 0 {
					cut = f.proxy.Cut() > 0
				} else {
					cut = f.engine().DropConnection(identity("dev1"))
				}
				if cut {
					flaps.Add(1)
				}
			}
		}()

		var wg sync.WaitGroup
		var mu sync.Mutex
		outcomes := map[string]int{}
		var seq atomic.Int32
		deadline := time.Now().Add(4 * time.Second)
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					p := fmt.Sprintf(`{"w":%d,"n":%d}`, w, seq.Add(1))
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
					r, err := f.invoke(ctx, "dev1", "echo", json.RawMessage(p), 5*time.Second, 5*time.Second)
					cancel()
					runs := d.executions(p)
					var o string
					switch {
					case err == nil && r.Status == 200 && string(r.Payload) == p && runs == 1:
						o = "answered"
					case err == nil:
						o = fmt.Sprintf("BAD answer %d %s (ran %d times)", r.Status, r.Payload, runs)
					case errors.Is(err, service.ErrDeviceNotOnline) && runs <= 1:
						o = "404103"
					case errors.Is(err, service.ErrGatewayTimeout) && runs == 1:
						// The handler ran and its answer was lost with the
						// connection. A 504101 for a call no handler saw
						// would be a call lost inside the client.
						o = "504101"
					default:
						o = fmt.Sprintf("BAD %v (ran %d times)", err, runs)
					}
					mu.Lock()
					outcomes[o]++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		close(stop)
		fwg.Wait()
		for o, n := range outcomes {
			assert.False(t, strings.HasPrefix(o, "BAD"), "%d× %s", n, o)
		}
		t.Logf("%d flaps; outcomes %v", flaps.Load(), outcomes)
		require.GreaterOrEqual(t, flaps.Load(), int32(3), "the scenario did not exercise anything: outcomes %v", outcomes)
		require.NotZero(t, outcomes["answered"], "the scenario did not exercise anything: %d flaps, outcomes %v", flaps.Load(), outcomes)
		d.status.Skip()
		f.waitOnline(t, "dev1")
		waitFor(t, "the client to report connected", func() bool { return d.c.ConnectionState() == device.ConnectionStateConnected })
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("statuses: %v", d.status.All())
				calls := f.engine().Calls()
				t.Logf("last hub calls: %+v", calls[max(len(calls)-3, 0):])
			}
		})
		// A connect attempt cut by the flapping can reach the hub after the
		// device's newer connection and replace it (newest connection
		// wins), so the device may need one more reconnect: the call
		// allows for it with a connect timeout, as a careful caller would.
		p := fmt.Sprintf(`{"tag":"after flapping","at":%d}`, time.Now().UnixNano())
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		r, err := f.invoke(ctx, "dev1", "echo", json.RawMessage(p), 30*time.Second, 30*time.Second)
		require.NoError(t, err, "echo after flapping (ran %d times)", d.executions(p))
		require.Equal(t, 200, r.Status, "echo after flapping: %s", r.Payload)
		require.Equal(t, p, string(r.Payload), "echo after flapping")
		require.Equal(t, 1, d.executions(p), "echo after flapping: executions")
		waitFor(t, "the client to report connected", func() bool { return d.c.ConnectionState() == device.ConnectionStateConnected })
		waitFor(t, "exactly one proxied connection", func() bool { return f.proxy.Active() == 1 })
		require.NotZero(t, statuslog.CountLosses(d.status.All()), "the connection-status callback never reported a loss")
	})
}

// With a persistent MQTT session the hub delivers a waiting call as soon as
// the device's CONNACK is out, before its SUBACK. The client's route for
// method requests is in place before CONNECT, so such a call is answered,
// never lost (a 504101 with no handler run).
func TestNoCallLostBeforeSubAck(t *testing.T) {
	t.Parallel()
	for _, tp := range transports {
		if tp.name != "mqtt" && tp.name != "mqtt-ws" {
			continue // AMQP has no such window: the links carry nothing before they attach
		}
		t.Run(tp.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			f.addDevice("dev1")
			d := f.connect(t, "dev1", tp, nil)
			d.status.WaitFor(t, device.ConnectionStateConnected)
			for round := range 25 { // the window is narrow: many rounds make a lost call show
				f.proxy.SetRefuse(true)
				require.Equal(t, 1, f.proxy.Cut(), "round %d", round)
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				require.NoError(t, f.engine().WaitOffline(ctx, identity("dev1")))
				cancel()
				p := fmt.Sprintf(`{"round":%d}`, round)
				call := f.invokeAsync("dev1", "echo", json.RawMessage(p), 10*time.Second, 30*time.Second)
				// The call now waits at the hub for the device (its connect
				// timeout); let two refused attempts pass so that it is
				// surely there before the device gets back in.
				n := statuslog.CountLosses(d.status.All())
				waitFor(t, "two refused attempts", func() bool { return statuslog.CountLosses(d.status.All()) >= n+2 })
				f.proxy.SetRefuse(false)
				r := waitCall(t, call)
				require.NoError(t, r.err, "round %d: the call waiting for the device (ran %d times)", round, d.executions(p))
				require.Equal(t, 200, r.res.Status)
				require.Equal(t, p, string(r.res.Payload))
				require.Equal(t, 1, d.executions(p))
				waitFor(t, "connected", func() bool { return d.c.ConnectionState() == device.ConnectionStateConnected })
			}
		})
	}
}

// A slow, throttled network (150 ms each way, 64 kB/s) still carries a
// 100 kB call and its answer.
func TestSlowNetwork(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tp tport) {
		f := newFixture(t, nil)
		f.addDevice("dev1")
		d := f.connect(t, "dev1", tp, nil)
		d.status.WaitFor(t, device.ConnectionStateConnected)
		f.proxy.SetDelay(150 * time.Millisecond)
		f.proxy.SetRate(64 * 1024)
		p := `"` + strings.Repeat("s", 100*1024) + `"`
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		r, err := f.invoke(ctx, "dev1", "echo", json.RawMessage(p), 60*time.Second, 0)
		require.NoError(t, err, "100 kB over a slow link")
		require.Equal(t, 200, r.Status, "100 kB over a slow link")
		require.Equal(t, p, string(r.Payload), "100 kB over a slow link")
		require.Equal(t, 1, d.executions(p), "executions")
		f.proxy.SetDelay(0)
		f.proxy.SetRate(0)
		f.recovered(t, d, "after slow network")
		require.Zero(t, statuslog.CountLosses(d.status.All()), "reconnects the slow link cost")
	})
}

// Half-open connections: when the hub's side of the stream ends (the
// client reads EOF) or the client's side does (the hub reads EOF), the
// client notices, reconnects and answers.
func TestHalfClosedConnection(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tp tport) {
		for _, dir := range []faultproxy.Direction{faultproxy.ToClient, faultproxy.ToUpstream} {
			t.Run(dir.String(), func(t *testing.T) {
				f := newFixture(t, nil)
				f.addDevice("dev1")
				d := f.connect(t, "dev1", tp, nil)
				d.status.WaitFor(t, device.ConnectionStateConnected)
				require.Equal(t, 1, f.proxy.HalfClose(dir), "connections half-closed")
				d.status.Reconnected(t, "the half-close")
				f.recovered(t, d, "after half-close")
			})
		}
	})
}

// While new connections are refused (the hub's port resets them) the
// client keeps trying with backoff and callers with a connect timeout get
// 404103; once connections are accepted again the device is back.
func TestReconnectRefused(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tp tport) {
		f := newFixture(t, nil)
		f.addDevice("dev1")
		d := f.connect(t, "dev1", tp, nil)
		d.status.WaitFor(t, device.ConnectionStateConnected)
		f.proxy.SetRefuse(true)
		f.proxy.Cut()
		waitFor(t, "refused reconnect attempts", func() bool { return statuslog.CountLosses(d.status.All()) >= 4 })
		require.Equal(t, device.ConnectionStateConnecting, d.c.ConnectionState(), "state while the hub refuses connections")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err := f.invoke(ctx, "dev1", "echo", nil, 5*time.Second, 1*time.Second)
		cancel()
		require.ErrorIs(t, err, service.ErrDeviceNotOnline, "call while the device cannot connect")
		f.proxy.SetRefuse(false)
		d.status.WaitFor(t, device.ConnectionStateConnected)
		f.recovered(t, d, "after refusals")
	})
}

// Answers racing the loss of their connection: handlers finish just as the
// link is reset. Each answer is sent or given up promptly (the caller has
// its 404103 already), so Close, which waits for running handlers, returns
// long before the transports' 30 s write timeouts.
func TestAnswersRacingConnectionLoss(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tp tport) {
		f := newFixture(t, nil)
		f.addDevice("dev1")
		var mu sync.Mutex
		release := make(chan struct{})
		started := make(chan struct{}, 64)
		d := f.connect(t, "dev1", tp, &devOptions{setup: func(c *device.Client) {
			c.SetMethodHandler("race", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
				mu.Lock()
				rel := release
				mu.Unlock()
				started <- struct{}{}
				<-rel
				return device.JSONResponse(200, "raced")
			})
		}})
		for round := range 10 {
			d.status.WaitFor(t, device.ConnectionStateConnected)
			f.waitOnline(t, "dev1")
			var calls []<-chan callResult
			for range 8 {
				calls = append(calls, f.invokeAsync("dev1", "race", nil, 30*time.Second, 0))
			}
			for range 8 {
				select {
				case <-started:
				case <-time.After(time.Minute):
					require.FailNow(t, "handlers did not start", "round %d", round)
				}
			}
			mu.Lock()
			close(release)
			release = make(chan struct{})
			mu.Unlock()
			if round%2 == 0 {
				f.proxy.Cut()
			} else {
				f.engine().DropConnection(identity("dev1"))
			}
			for _, ch := range calls {
				if r := waitCall(t, ch); r.err != nil {
					require.ErrorIs(t, r.err, service.ErrDeviceNotOnline, "round %d", round)
				}
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		require.NoError(t, d.c.Close(ctx), "Close while answers raced lost connections")
	})
}

// X.509 devices, self-signed and CA-signed, survive the same faults as SAS
// ones: after a cut and after a hub restart the client presents its
// certificate again on every reconnect, and calls work again.
func TestX509UnderFaults(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tp tport) {
		for _, caSigned := range []bool{false, true} {
			kind := "self-signed"
			if caSigned {
				kind = "ca-signed"
			}
			t.Run(kind, func(t *testing.T) {
				f := newFixture(t, nil)
				cert := f.addX509Device("x509dev", caSigned)
				d := f.connect(t, "x509dev", tp, &devOptions{cert: cert})
				d.status.WaitFor(t, device.ConnectionStateConnected)
				f.mustEcho(t, d, "before the cut")
				require.Equal(t, 1, f.proxy.Cut(), "connections cut")
				d.status.Reconnected(t, "the cut")
				f.recovered(t, d, "after the cut")
				// The hub restarts; the registry (thumbprint or trusted CA)
				// comes back with it, and the client reconnects by itself.
				f.stop()
				d.status.WaitFor(t, device.ConnectionStateConnecting)
				f.start()
				d.status.WaitFor(t, device.ConnectionStateConnected)
				f.recovered(t, d, "after the hub restart")
			})
		}
	})
}
