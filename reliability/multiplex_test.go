package reliability_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/service"
	"github.com/iothub-go/iothub/transport/amqp"
)

// The multiplexed soak: 1,000 devices on one amqp.Pool (four shared
// connections of 250) behind the fault proxy, 16 callers invoking random
// devices while faults hit: a whole shared connection cut, one device's
// token expired, one device's method link detached, one device disabled
// and enabled again, lost answers. Every call is accounted for, as in
// TestSoak: answered with its own payload and run exactly once, or failed
// with a documented error (404103, 504101: run at most once; 404001 for a
// disabled device: never run). A single device's fault leaves the devices
// sharing its connection connected. Afterwards every device is connected
// and answers, over as many proxied connections as the pool holds.
func TestMultiplexSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test: skipped with -short")
	}
	dur, n := 20*time.Second, 1000
	if v := os.Getenv("IOTHUB_SOAK"); v != "" {
		var err error
		dur, err = time.ParseDuration(v)
		require.NoError(t, err, "IOTHUB_SOAK=%q", v)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("multiplex soak: %d devices, faults for %v, seed %d", n, dur, seed)
	rng := rand.New(rand.NewPCG(seed, 11))
	var rngMu sync.Mutex
	randN := func(k int) int { rngMu.Lock(); defer rngMu.Unlock(); return rng.IntN(k) }

	f := newFixture(t, &fixtureOptions{svcRetry: &policy.RetryOptions{MaxRetries: -1}})
	pool, err := amqp.NewPool(&amqp.PoolOptions{DevicesPerConn: 250, DialRate: 50, ReconnectJitter: 100 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, pool.Close()) }) // after the clients (cleanups run last first)

	type muxDevice struct {
		id        string
		c         *device.Client
		up        atomic.Bool
		connected atomic.Int64 // unix nanos of the last connected status
		losses    atomic.Int32 // connected → not connected
	}
	var runsMu sync.Mutex
	runs := map[string]int{}
	devs := make([]*muxDevice, n)
	for i := range devs {
		id := fmt.Sprintf("mux%04d", i)
		f.addDevice(id)
		devs[i] = &muxDevice{id: id}
	}
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 100)
	errs := make([]error, n)
	for i, d := range devs {
		c, err := device.NewClientFromConnectionString(f.connString(d.id, true), &device.ClientOptions{
			Transport: pool, TLSConfig: f.tlsConfig(), Retry: fastRetry,
			OnConnectionStatus: func(s device.ConnectionStatus) {
				up := s.State == device.ConnectionStateConnected
				if up {
					d.connected.Store(time.Now().UnixNano())
				}
				if d.up.Swap(up) && !up {
					d.losses.Add(1)
				}
			},
		})
		require.NoError(t, err)
		require.NoError(t, c.SetMethodHandler("echo", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
			runsMu.Lock()
			runs[string(req.Payload)]++
			runsMu.Unlock()
			return &device.MethodResponse{Status: 200, Payload: req.Payload}, nil
		}))
		d.c = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			errs[i] = c.Connect(ctx)
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, d := range devs {
			assert.NoError(t, d.c.Close(ctx), "%s: Close", d.id)
		}
	})
	for i, err := range errs {
		require.NoError(t, err, "%s: Connect", devs[i].id)
	}
	require.Equal(t, 4, pool.Stats().Conns, "shared connections")
	t.Logf("multiplex soak: %d devices connected in %v over %d connections", n, time.Since(start).Round(time.Millisecond), pool.Stats().Conns)

	// Callers.
	type outcome struct{ kind, payload, id string }
	var outMu sync.Mutex
	var outcomes []outcome
	stop := make(chan struct{})
	var callers sync.WaitGroup
	var seq atomic.Int64
	for range 16 {
		callers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				d := devs[randN(n)]
				p := fmt.Sprintf(`{"call":%d}`, seq.Add(1))
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				r, err := f.invoke(ctx, d.id, "echo", json.RawMessage(p), 5*time.Second, 5*time.Second)
				cancel()
				var kind string
				switch {
				case err == nil && r.Status == 200 && string(r.Payload) == p:
					kind = "answered"
				case err == nil:
					kind = fmt.Sprintf("wrong answer %d %.60s", r.Status, r.Payload)
				case errors.Is(err, service.ErrDeviceNotOnline):
					kind = "404103"
				case errors.Is(err, service.ErrGatewayTimeout):
					kind = "504101"
				case errors.Is(err, service.ErrDeviceNotFound):
					kind = "404001"
				default:
					kind = "undocumented error: " + err.Error()
				}
				outMu.Lock()
				outcomes = append(outcomes, outcome{kind, p, d.id})
				outMu.Unlock()
			}
		})
	}

	// Faults. Single-device faults are checked for isolation: the
	// device's neighbours lose nothing while no connection is cut.
	faultCounts := map[string]int{}
	var disabled []string
	var restore []func()
	setStatus := func(id, status string) {
		k := f.key(id)
		_, herr := f.engine().PutDevice(id, engine.Device{Status: status, Authentication: engine.Authentication{Type: engine.AuthSAS,
			SymmetricKey: engine.SymmetricKey{PrimaryKey: &k, SecondaryKey: &k}}}, "*")
		require.Nil(t, herr, "setting %s's status to %s", id, status)
	}
	deadline := time.Now().Add(dur)
	for time.Now().Before(deadline) {
		time.Sleep(time.Duration(100+randN(300)) * time.Millisecond)
		d := devs[randN(n)]
		var name string
		switch randN(6) {
		case 0:
			if cs := f.proxy.Conns(); len(cs) > 0 && randN(3) == 0 { // rarer: it reconnects 250 devices
				cs[randN(len(cs))].Cut()
				name = "shared connection cut"
			}
		case 1:
			if time.Since(time.Unix(0, d.connected.Load())) > 3*time.Second {
				f.engine().ExpireTokens(identity(d.id))
				name = "token expiry"
			}
		case 2:
			if f.engine().DetachMethodLink(identity(d.id), "request") {
				name = "link detach"
			}
		case 3:
			setStatus(d.id, "disabled")
			disabled = append(disabled, d.id)
			name = "disabled"
		case 4:
			id := identity(d.id)
			f.engine().SetResponseFault(id, 0, true)
			restore = append(restore, func() { f.engine().SetResponseFault(id, 0, false) })
			name = "lost answers"
		case 5:
			if len(disabled) > 0 {
				id := disabled[0]
				disabled = disabled[1:]
				setStatus(id, "enabled")
				name = "enabled again"
			}
		}
		if name != "" {
			faultCounts[name]++
		}
		if len(restore) > 8 {
			restore[0]()
			restore = restore[1:]
		}
	}
	for _, r := range restore {
		r()
	}
	for _, id := range disabled {
		setStatus(id, "enabled")
	}
	close(stop)
	callers.Wait()
	t.Logf("multiplex soak: faults %v", faultCounts)

	// Account for every call.
	runsMu.Lock()
	left := make(map[string]int, len(runs))
	for k, v := range runs {
		left[k] = v
	}
	runsMu.Unlock()
	counts := map[string]int{}
	bad := 0
	for _, o := range outcomes {
		ran := left[o.payload]
		delete(left, o.payload)
		ok := false
		switch o.kind {
		case "answered":
			ok = ran == 1
		case "404103", "504101":
			ok = ran <= 1
		case "404001":
			ok = ran == 0
		}
		counts[o.kind]++
		if !ok {
			bad++
			if bad <= 20 {
				assert.Fail(t, "a call not accounted for", "call %s to %s: %s, ran %d times on the device", o.payload, o.id, o.kind, ran)
			}
		}
	}
	assert.Empty(t, left, "executions on devices of calls nobody made or accounted for")
	assert.Zero(t, bad, "calls not accounted for")
	t.Logf("multiplex soak: %d calls: %v", len(outcomes), counts)
	require.NotZero(t, counts["answered"])
	require.GreaterOrEqual(t, len(faultCounts), 5, "the soak exercised too little: faults %v", faultCounts)

	// Devices the client gave up on (disabled: refused three times)
	// connect again now that they are enabled.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, d := range devs {
		if d.c.ConnectionState() == device.ConnectionStateDisconnected {
			require.NoError(t, d.c.Connect(ctx), "%s: Connect again", d.id)
		}
	}
	for _, d := range devs {
		require.NoError(t, f.engine().WaitOnline(ctx, identity(d.id)), "%s is not back online (client state %v)", d.id, d.c.ConnectionState())
	}
	waitFor(t, "every client to report connected", func() bool {
		for _, d := range devs {
			if d.c.ConnectionState() != device.ConnectionStateConnected {
				return false
			}
		}
		return true
	})
	st := pool.Stats()
	waitFor(t, "one proxied connection per pooled connection", func() bool { return f.proxy.Active() == pool.Stats().Conns })
	t.Logf("multiplex soak: pool after the faults: %+v", st)
	var failed []string
	var fmu sync.Mutex
	var sweep sync.WaitGroup
	for _, d := range devs {
		sweep.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			p := fmt.Sprintf(`{"final":%q}`, d.id)
			r, err := f.invoke(ctx, d.id, "echo", json.RawMessage(p), 30*time.Second, 0)
			if err != nil || string(r.Payload) != p {
				fmu.Lock()
				failed = append(failed, fmt.Sprintf("%s: %v", d.id, err))
				fmu.Unlock()
			}
		})
	}
	sweep.Wait()
	assert.Empty(t, failed, "devices that did not answer after the faults")
}

// One device's fault on a shared connection leaves the other devices on it
// connected: none of them reports a loss while only single-device faults
// happen (token expiry, link detach, disabled).
func TestMultiplexIsolation(t *testing.T) {
	f := newFixture(t, nil)
	pool, err := amqp.NewPool(nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, pool.Close()) })
	const n = 200
	ids := make([]string, n)
	losses := make([]atomic.Int32, n)
	clients := make([]*device.Client, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("iso%03d", i)
		f.addDevice(ids[i])
		var up atomic.Bool
		c, err := device.NewClientFromConnectionString(f.connString(ids[i], false), &device.ClientOptions{
			Transport: pool, TLSConfig: f.tlsConfig(), Retry: fastRetry,
			OnConnectionStatus: func(s device.ConnectionStatus) {
				now := s.State == device.ConnectionStateConnected
				if up.Swap(now) && !now {
					losses[i].Add(1)
				}
			},
		})
		require.NoError(t, err)
		require.NoError(t, c.SetMethodHandler("echo", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
			return &device.MethodResponse{Status: 200, Payload: req.Payload}, nil
		}))
		clients[i] = c
	}
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			assert.NoError(t, c.Connect(ctx))
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, c := range clients {
			assert.NoError(t, c.Close(ctx))
		}
	})
	require.Equal(t, 1, pool.Stats().Conns)
	connected := time.Now()
	waitFor(t, "the clock to pass the live tokens' second", func() bool { return time.Now().Truncate(time.Second).After(connected) })

	// All three at once: the devices re-attach on the shared session while
	// go-amqp answers the hub's detaches of the others' links. go-amqp
	// v1.7.0 frees a detached link's handle before it writes its reply; the
	// transport keeps an attach that reuses the handle back until the
	// reply is out (transport/amqp: attachHold), or the hub would end the
	// session with amqp:session:handle-in-use, and with it every device.
	hit := map[int]bool{3: true, 50: true, 150: true}
	f.engine().ExpireTokens(identity(ids[3]))
	require.True(t, f.engine().DetachMethodLink(identity(ids[50]), "request"))
	k := f.key(ids[150])
	_, herr := f.engine().PutDevice(ids[150], engine.Device{Status: "disabled", Authentication: engine.Authentication{Type: engine.AuthSAS,
		SymmetricKey: engine.SymmetricKey{PrimaryKey: &k, SecondaryKey: &k}}}, "*")
	require.Nil(t, herr)
	waitFor(t, "the three devices to lose their links", func() bool {
		return losses[3].Load() > 0 && losses[50].Load() > 0 && losses[150].Load() > 0
	})
	waitFor(t, "the expired and detached devices back", func() bool {
		return clients[3].ConnectionState() == device.ConnectionStateConnected && clients[50].ConnectionState() == device.ConnectionStateConnected
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, id := range ids {
		if hit[i] {
			continue
		}
		assert.Zero(t, losses[i].Load(), "%s, on the same connection, lost it", id)
		r, err := f.invoke(ctx, id, "echo", json.RawMessage(`{"ok":1}`), 10*time.Second, 0)
		if assert.NoError(t, err, id) {
			assert.Equal(t, 200, r.Status, id)
		}
	}
	for _, id := range []string{ids[3], ids[50]} {
		r, err := f.invoke(ctx, id, "echo", json.RawMessage(`{"ok":1}`), 10*time.Second, 0)
		require.NoError(t, err, id)
		assert.Equal(t, 200, r.Status, id)
	}
	_, err = f.invoke(ctx, ids[150], "echo", json.RawMessage(`{"ok":1}`), 10*time.Second, 0)
	require.ErrorIs(t, err, service.ErrDeviceNotFound, "a call to the disabled device")
	assert.Equal(t, 1, pool.Stats().Conns, "the shared connection stayed")
	assert.EqualValues(t, 1, pool.Stats().Dials)
}
