package amqp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/iothub-go/iothub"
	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/internal/faultproxy"
	"github.com/iothub-go/iothub/internal/testutil/hubcall"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
	"github.com/iothub-go/iothub/transport"
	"github.com/iothub-go/iothub/transport/amqp"
)

var poolRetry = iothub.RetryOptions{RetryDelay: 20 * time.Millisecond, MaxRetryDelay: 200 * time.Millisecond}

// poolFleet is n device clients on one pool, each answering "echo" with
// its own id.
type poolFleet struct {
	hub     *iothubtest.Server
	pool    *amqp.Pool
	clients []*device.Client
	ids     []string
	// statuses records every connection status each client reported.
	mu       sync.Mutex
	statuses map[string][]device.ConnectionState
	errs     map[string][]string
}

func newPoolFleet(t *testing.T, hub *iothubtest.Server, pool *amqp.Pool, address string, n int, prefix string) *poolFleet {
	t.Helper()
	f := &poolFleet{hub: hub, pool: pool, statuses: map[string][]device.ConnectionState{}, errs: map[string][]string{}}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, n)
	f.clients = make([]*device.Client, n)
	for i := range n {
		id := fmt.Sprintf("%s%04d", prefix, i)
		f.ids = append(f.ids, id)
		cs := hub.AddDevice(t, id)
		if address != "" {
			cs = strings.Replace(cs, hub.Addr(), address, 1)
		}
		c, err := device.NewClientFromConnectionString(cs, &device.ClientOptions{
			Transport: pool, TLSConfig: hub.TLSConfig(), Retry: poolRetry,
			OnConnectionStatus: func(s device.ConnectionStatus) {
				f.mu.Lock()
				f.statuses[id] = append(f.statuses[id], s.State)
				if s.Err != nil {
					f.errs[id] = append(f.errs[id], s.Err.Error())
				}
				f.mu.Unlock()
			},
		})
		require.NoError(t, err)
		require.NoError(t, c.SetMethodHandler("echo", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
			return &device.MethodResponse{Status: 200, Payload: []byte(fmt.Sprintf("%q", id))}, nil
		}))
		f.clients[i] = c
	}
	for i, c := range f.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.Connect(ctx)
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, c := range f.clients {
			assert.NoError(t, c.Close(ctx))
		}
	})
	for i, err := range errs {
		require.NoError(t, err, "Connect %s", f.ids[i])
	}
	return f
}

// call invokes echo on id and returns the HTTP status and the payload.
func (f *poolFleet) call(id string) (int, string, error) {
	st, raw, err := hubcall.TryInvoke(f.hub, id, `{"methodName":"echo","responseTimeoutInSeconds":10}`)
	if err != nil || st != 200 {
		return st, raw, err
	}
	var v struct {
		Status  int
		Payload string
	}
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		return st, raw, err
	}
	return v.Status, v.Payload, nil
}

// callAll invokes echo on every device and requires each to answer with
// its own id.
func (f *poolFleet) callAll(t *testing.T, skip map[string]bool) {
	t.Helper()
	var wg sync.WaitGroup
	type res struct {
		st      int
		payload string
		err     error
	}
	out := make([]res, len(f.ids))
	sem := make(chan struct{}, 32)
	for i, id := range f.ids {
		if skip[id] {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			st, p, err := f.call(id)
			out[i] = res{st, p, err}
		}()
	}
	wg.Wait()
	for i, id := range f.ids {
		if skip[id] {
			continue
		}
		require.NoError(t, out[i].err, id)
		require.Equal(t, 200, out[i].st, "%s: %s", id, out[i].payload)
		require.Equal(t, id, out[i].payload)
	}
}

// report describes id's statuses for a failure message.
func (f *poolFleet) report(id string) func() string {
	return func() string {
		f.mu.Lock()
		defer f.mu.Unlock()
		return fmt.Sprintf("%s: %v %q", id, f.statuses[id], f.errs[id])
	}
}

// states returns the states id reported.
func (f *poolFleet) states(id string) []device.ConnectionState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]device.ConnectionState(nil), f.statuses[id]...)
}

// oneConnFleet starts a hub and a pool with n devices on one connection,
// checking for leaked goroutines at the end.
func oneConnFleet(t *testing.T, n int, prefix string) (*iothubtest.Server, *amqp.Pool, *poolFleet) {
	t.Helper()
	noLeaks(t)
	hub := iothubtest.NewServer(t, nil)
	pool := newPool(t, nil)
	f := newPoolFleet(t, hub, pool, "", n, prefix)
	require.Equal(t, 1, pool.Stats().Conns)
	return hub, pool, f
}

func waitFor(t *testing.T, what string, cond func() bool, args ...func() string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			msg := ""
			for _, a := range args {
				msg += a()
			}
			require.FailNow(t, "timed out waiting: "+what, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// 250 devices on a pool of 100 identities per connection share three
// connections, and every one answers its own calls.
func TestPoolSharesConnections(t *testing.T) {
	noLeaks(t)
	for _, ws := range []bool{false, true} {
		t.Run(map[bool]string{false: "tls", true: "websocket"}[ws], func(t *testing.T) {
			hub := iothubtest.NewServer(t, nil)
			pool := newPool(t, &amqp.PoolOptions{WebSocket: ws, DevicesPerConn: 100, DialRate: 1000})
			f := newPoolFleet(t, hub, pool, "", 250, "d")
			st := pool.Stats()
			assert.Equal(t, 3, st.Conns, "connections")
			assert.Equal(t, 250, st.Devices)
			assert.EqualValues(t, 3, st.Dials)
			f.callAll(t, nil)
		})
	}
}

// Bad options and identities are refused with a clear error.
func TestPoolRefusals(t *testing.T) {
	_, err := amqp.NewPool(&amqp.PoolOptions{DevicesPerConn: 1001})
	require.ErrorContains(t, err, "iothub: amqp: DevicesPerConn 1001 is out of range")
	_, err = amqp.NewPool(&amqp.PoolOptions{WebSocket: true, DevicesPerConn: 501})
	require.ErrorContains(t, err, "at most 500")
	_, err = amqp.NewPool(&amqp.PoolOptions{DialRate: -1})
	require.Error(t, err)

	hub := iothubtest.NewServer(t, nil)
	pool := newPool(t, nil)
	cs, cert := hub.AddX509Device(t, "x509dev")
	cred, err := auth.NewX509Credential(cert)
	require.NoError(t, err)
	c, err := device.NewClientFromConnectionString(cs, &device.ClientOptions{Transport: pool, TLSConfig: hub.TLSConfig(), X509: cred, Retry: poolRetry})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = c.Connect(ctx)
	require.ErrorIs(t, err, transport.ErrUnsupported)
	require.ErrorContains(t, err, "amqp: a pooled connection carries only shared-access-signature identities")
	require.NoError(t, c.Close(ctx))

	// Another hub.
	other := iothubtest.NewServer(t, nil)
	newPoolFleet(t, hub, pool, "", 1, "a")
	c, err = device.NewClientFromConnectionString(other.AddDevice(t, "b"), &device.ClientOptions{Transport: pool, TLSConfig: other.TLSConfig(), Retry: iothub.RetryOptions{MaxRetries: -1}})
	require.NoError(t, err)
	err = c.Connect(ctx)
	require.ErrorIs(t, err, transport.ErrUnsupported)
	require.ErrorContains(t, err, "amqp: a pool connects to one hub")
	require.NoError(t, c.Close(ctx))
}

// noLeaks checks, after every other cleanup of t, that t left no
// goroutine running.
func noLeaks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

// newPool returns a pool closed when t ends, after the clients on it.
func newPool(t *testing.T, opts *amqp.PoolOptions) *amqp.Pool {
	t.Helper()
	pool, err := amqp.NewPool(opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, pool.Close()) })
	return pool
}

// serviceClient returns a service client for hub.
func serviceClient(t *testing.T, hub *iothubtest.Server) *service.Client {
	t.Helper()
	sc, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(), &service.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: hub.HTTPClient()}})
	require.NoError(t, err)
	return sc
}

// One device's failure stays with it: a wrong key fails that device's
// Connect, an expired token, a detached link and a disabled device end that
// device's links alone, and the other devices on the same connection
// neither lose their connection nor miss a call.
func TestPoolIsolation(t *testing.T) {
	hub, pool, f := oneConnFleet(t, 20, "d")

	// A wrong key.
	cs := hub.AddDevice(t, "badkey")
	k := strings.Index(cs, "SharedAccessKey=") + len("SharedAccessKey=")
	cs = cs[:k] + "AAAA" + cs[k+4:]
	bad, err := device.NewClientFromConnectionString(cs, &device.ClientOptions{Transport: pool, TLSConfig: hub.TLSConfig(), Retry: poolRetry})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.ErrorIs(t, bad.Connect(ctx), device.ErrNotAuthorized)
	require.NoError(t, bad.Close(ctx))
	f.callAll(t, nil)

	// An expired token, a detached method link and a disabled device.
	// Tokens expire on whole seconds: the token d0003 mints to come back
	// must expire later than the one revoked.
	connected := time.Now()
	waitFor(t, "the clock to pass the live tokens' second", func() bool {
		return time.Now().Truncate(time.Second).After(connected)
	})
	// All three at once: the devices re-attach on the shared session while
	// go-amqp answers the others' detaches (see TestPoolDetachStorm).
	hub.ExpireTokens("d0003")
	require.True(t, hub.DetachMethodLink("d0004", "request"))
	sc := serviceClient(t, hub)
	d, err := sc.GetDevice(ctx, "d0005")
	require.NoError(t, err)
	d.Status = "disabled"
	_, err = sc.UpdateDevice(ctx, d, nil)
	require.NoError(t, err)

	// d0003 and d0004 come back; d0005 is disabled and stays away.
	for _, id := range []string{"d0003", "d0004"} {
		waitFor(t, id+" connected again", func() bool {
			s := f.states(id)
			return len(s) >= 4 && s[len(s)-1] == device.ConnectionStateConnected
		}, f.report(id))
	}
	waitFor(t, "d0005 disconnected", func() bool {
		s := f.states("d0005")
		return s[len(s)-1] == device.ConnectionStateDisconnected
	})
	f.callAll(t, map[string]bool{"d0005": true})
	st, _, err := f.call("d0005")
	require.NoError(t, err)
	assert.Equal(t, 404, st, "a call to the disabled device")
	for _, id := range f.ids {
		if id == "d0003" || id == "d0004" || id == "d0005" {
			continue
		}
		assert.Equal(t, []device.ConnectionState{device.ConnectionStateConnecting, device.ConnectionStateConnected}, f.states(id), "%s's statuses", id)
	}
	assert.Equal(t, 1, pool.Stats().Conns, "the shared connection stayed")
	assert.EqualValues(t, 1, pool.Stats().Dials)
}

// When the shared connections drop, every device reconnects through the
// pool, which dials the replacements at its dial rate.
func TestPoolConnectionLoss(t *testing.T) {
	noLeaks(t)
	hub := iothubtest.NewServer(t, nil)
	proxy, err := faultproxy.New(hub.Addr())
	require.NoError(t, err)
	t.Cleanup(func() { _ = proxy.Close() })
	pool := newPool(t, &amqp.PoolOptions{DevicesPerConn: 50, DialRate: 20, ReconnectJitter: 200 * time.Millisecond})
	f := newPoolFleet(t, hub, pool, proxy.Addr(), 200, "d")
	require.Equal(t, 4, pool.Stats().Conns)
	f.callAll(t, nil)

	require.Equal(t, 4, proxy.Cut())
	for _, id := range f.ids {
		waitFor(t, id+" back", func() bool {
			s := f.states(id)
			return len(s) >= 4 && s[len(s)-1] == device.ConnectionStateConnected
		})
	}
	f.callAll(t, nil)
	st := pool.Stats()
	assert.Equal(t, 4, st.Conns, "connections after the cut")
	assert.EqualValues(t, 8, st.Dials)
	assert.EqualValues(t, 4, st.Lost)
	assert.LessOrEqual(t, st.PeakRate, int64(21), "dials in one second")
}

// The hub detaching links of many devices on one shared session while
// they re-attach: go-amqp frees a detached link's handle before it writes
// its detach reply, and an attach that reuses the handle must not reach
// the hub first (the hub would end the session, amqp:session:handle-in-use,
// and with it every device on the connection). For two seconds, every
// device the hub sees subscribed has its method request link detached
// again; the shared connection must live through it all.
func TestPoolDetachStorm(t *testing.T) {
	hub, pool, f := oneConnFleet(t, 40, "s")

	detaches := 0
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		for _, id := range f.ids {
			if hub.DetachMethodLink(id, "request") {
				detaches++
			}
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("%d detaches", detaches)
	require.Greater(t, detaches, len(f.ids), "every device was detached more than once")
	for _, id := range f.ids {
		waitFor(t, id+" connected again", func() bool {
			s := f.states(id)
			return len(s) >= 4 && s[len(s)-1] == device.ConnectionStateConnected
		}, f.report(id))
	}
	f.callAll(t, nil)
	st := pool.Stats()
	assert.EqualValues(t, 0, st.Lost, "the shared connection was lost")
	assert.EqualValues(t, 1, st.Dials)
	assert.Equal(t, 1, st.Conns)
}

// An idle pooled device costs three goroutines, as go-amqp alone in the
// same layout does: go-amqp's two method links and the loop receiving
// method requests. The device client waits for the connection's end by
// callback (OnDone), not on a goroutine of its own.
func TestPoolGoroutinesPerDevice(t *testing.T) {
	hub, pool, _ := oneConnFleet(t, 10, "g")
	// Goroutines still running for the first fleet (status deliveries)
	// only raise the baseline; a goroutine more per device would still
	// show, as 60 more.
	before := runtime.NumGoroutine()
	const more = 60
	newPoolFleet(t, hub, pool, "", more, "h")
	waitFor(t, "at most 3 goroutines per pooled device", func() bool {
		return runtime.NumGoroutine()-before <= 3*more
	}, func() string {
		return fmt.Sprintf("%.2f goroutines per pooled device", float64(runtime.NumGoroutine()-before)/more)
	})
}
