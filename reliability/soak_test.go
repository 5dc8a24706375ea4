package reliability_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
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

// soakConfig reads IOTHUB_SOAK (how long faults run, e.g. "5m"; default
// 30s) and IOTHUB_SOAK_DEVICES (default 1000).
func soakConfig(t *testing.T) (time.Duration, int) {
	d, n := 30*time.Second, 1000
	if v := os.Getenv("IOTHUB_SOAK"); v != "" {
		var err error
		d, err = time.ParseDuration(v)
		require.NoError(t, err, "IOTHUB_SOAK=%q", v)
	}
	if v := os.Getenv("IOTHUB_SOAK_DEVICES"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(t, err, "IOTHUB_SOAK_DEVICES=%q: want a number ≥ 4", v)
		require.GreaterOrEqual(t, n, 4, "IOTHUB_SOAK_DEVICES=%q: want a number ≥ 4", v)
	}
	return d, n
}

// soakDevice is one device of the soak test.
type soakDevice struct {
	id        string
	c         *device.Client
	status    *statuslog.Log
	connected atomic.Int64 // unix nanos of the last connected status
}

// The soak test: 1,000 devices over the four transports behind the fault
// proxy, 32 callers invoking methods on random devices while random faults
// hit random devices (resets, hub-side drops, stalls, half-closes, token
// expiry, slow and lost answers, 429 and 503 storms). Every call is
// accounted for: answered with its own payload and run exactly once on the
// device, or failed with a documented error (404103, 504101: run at most
// once; 429, 503: never run). Afterwards every device is connected, holds
// one connection and answers.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test: skipped with -short")
	}
	dur, n := soakConfig(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("soak: %d devices, faults for %v, seed %d", n, dur, seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	var rngMu sync.Mutex
	randN := func(k int) int { rngMu.Lock(); defer rngMu.Unlock(); return rng.IntN(k) }

	f := newFixture(t, &fixtureOptions{svcRetry: &policy.RetryOptions{MaxRetries: -1}})
	var runsMu sync.Mutex
	runs := map[string]int{} // call payload → executions on devices
	devs := make([]*soakDevice, n)
	for i := range devs {
		id := fmt.Sprintf("soak%04d", i)
		f.addDevice(id)
		devs[i] = &soakDevice{id: id, status: statuslog.New()}
	}

	// Connect everyone, 32 at a time.
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	var connErrs atomic.Int32
	for i, d := range devs {
		tp := transports[i%len(transports)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := device.NewClientFromConnectionString(f.connString(d.id, true), &device.ClientOptions{
				Transport: tp.newT(0), TLSConfig: f.tlsConfig(), Retry: fastRetry,
				OnConnectionStatus: func(s device.ConnectionStatus) {
					if s.State == device.ConnectionStateConnected {
						d.connected.Store(time.Now().UnixNano())
					}
					d.status.Record(s)
				},
			})
			if err != nil {
				connErrs.Add(1)
				return
			}
			c.SetMethodHandler("echo", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
				runsMu.Lock()
				runs[string(req.Payload)]++
				runsMu.Unlock()
				return &device.MethodResponse{Status: 200, Payload: req.Payload}, nil
			})
			d.c = c
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if err := c.Connect(ctx); err != nil {
				assert.NoError(t, err, "%s: Connect", d.id)
				connErrs.Add(1)
			}
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		var cw sync.WaitGroup
		for _, d := range devs {
			if d.c == nil {
				continue
			}
			cw.Add(1)
			go func() {
				defer cw.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				assert.NoError(t, d.c.Close(ctx), "%s: Close", d.id)
				d.status.Check(t, d.id)
			}()
		}
		cw.Wait()
		waitFor(t, "no proxied connection after Close", func() bool { return f.proxy.Active() == 0 })
	})
	require.Zero(t, connErrs.Load(), "devices that failed to connect")
	t.Logf("soak: %d devices connected in %v", n, time.Since(start).Round(time.Millisecond))

	// Callers.
	type outcome struct {
		kind    string
		payload string
	}
	var outMu sync.Mutex
	var outcomes []outcome
	stop := make(chan struct{})
	var callers sync.WaitGroup
	var seq atomic.Int64
	for range 32 {
		callers.Add(1)
		go func() {
			defer callers.Done()
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
				case errors.Is(err, service.ErrThrottled):
					kind = "429"
				case errors.Is(err, service.ErrServiceUnavailable):
					kind = "503"
				default:
					kind = "undocumented error: " + err.Error()
				}
				outMu.Lock()
				outcomes = append(outcomes, outcome{kind, p})
				outMu.Unlock()
			}
		}()
	}

	// Faults.
	faultCounts := map[string]int{}
	var restore []func()
	deadline := time.Now().Add(dur)
	for time.Now().Before(deadline) {
		time.Sleep(time.Duration(50+randN(150)) * time.Millisecond)
		d := devs[randN(n)]
		var name string
		switch k := randN(10); k {
		case 0, 1:
			if cs := f.proxy.Conns(); len(cs) > 0 {
				cs[randN(len(cs))].Cut()
				name = "reset"
			}
		case 2:
			if f.engine().DropConnection(identity(d.id)) {
				name = "hub drop"
			}
		case 3:
			// A renewed token must expire at least a second after the
			// revoked one: only devices connected for a while.
			if time.Since(time.Unix(0, d.connected.Load())) > 3*time.Second {
				f.engine().ExpireTokens(identity(d.id))
				name = "token expiry"
			}
		case 4:
			if cs := f.proxy.Conns(); len(cs) > 0 {
				c := cs[randN(len(cs))]
				c.Stall()
				time.AfterFunc(time.Duration(1+randN(3))*time.Second, c.Resume)
				name = "stall"
			}
		case 5:
			if cs := f.proxy.Conns(); len(cs) > 0 {
				cs[randN(len(cs))].HalfClose(faultproxy.Direction(randN(2)))
				name = "half-close"
			}
		case 6:
			id := identity(d.id)
			f.engine().SetResponseFault(id, 6*time.Second, false)
			restore = append(restore, func() { f.engine().SetResponseFault(id, 0, false) })
			name = "slow answers"
		case 7:
			id := identity(d.id)
			f.engine().SetResponseFault(id, 0, true)
			restore = append(restore, func() { f.engine().SetResponseFault(id, 0, false) })
			name = "lost answers"
		case 8:
			f.engine().FailServiceRequests(429001, 1+randN(10))
			name = "429 storm"
		case 9:
			f.engine().FailServiceRequests(503001, 1+randN(3))
			name = "503 storm"
		}
		if name != "" {
			faultCounts[name]++
		}
		// Answer faults last a little, then go.
		if len(restore) > 8 {
			restore[0]()
			restore = restore[1:]
		}
	}
	for _, r := range restore {
		r()
	}
	close(stop)
	callers.Wait()
	for f.engine().TakeServiceFault() != nil { // drop the storms' leftovers
	}
	t.Logf("soak: faults %v", faultCounts)

	// Account for every call.
	runsMu.Lock()
	runsCopy := make(map[string]int, len(runs))
	for k, v := range runs {
		runsCopy[k] = v
	}
	runsMu.Unlock()
	counts := map[string]int{}
	bad := 0
	for _, o := range outcomes {
		ran := runsCopy[o.payload]
		delete(runsCopy, o.payload)
		ok := false
		switch o.kind {
		case "answered":
			ok = ran == 1
		case "404103", "504101":
			ok = ran <= 1
		case "429", "503":
			ok = ran == 0
		}
		counts[o.kind]++
		if !ok {
			bad++
			if bad <= 20 {
				assert.Fail(t, "a call not accounted for", "call %s: %s, ran %d times on the device", o.payload, o.kind, ran)
			}
		}
	}
	assert.Empty(t, runsCopy, "executions on devices of calls nobody made or accounted for")
	assert.LessOrEqual(t, bad, 20, "calls in all not accounted for")
	t.Logf("soak: %d calls: %v", len(outcomes), counts)
	require.NotZero(t, counts["answered"], "the soak exercised too little: outcomes %v, faults %v", counts, faultCounts)
	require.GreaterOrEqual(t, len(faultCounts), 5, "the soak exercised too little: outcomes %v, faults %v", counts, faultCounts)

	// Every device recovers: connected, one connection each, answering.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, d := range devs {
		err := f.engine().WaitOnline(ctx, identity(d.id))
		require.NoError(t, err, "%s is not back online (client state %v; statuses %v)", d.id, d.c.ConnectionState(), d.status.All())
	}
	waitFor(t, "every client to report connected", func() bool {
		for _, d := range devs {
			if d.c.ConnectionState() != device.ConnectionStateConnected {
				return false
			}
		}
		return true
	})
	waitFor(t, "one proxied connection per device", func() bool { return f.proxy.Active() == n })
	var failed []string
	var fmu sync.Mutex
	var sweep sync.WaitGroup
	for _, d := range devs {
		sweep.Add(1)
		go func() {
			defer sweep.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			p := fmt.Sprintf(`{"final":%q}`, d.id)
			r, err := f.invoke(ctx, d.id, "echo", json.RawMessage(p), 30*time.Second, 0)
			if err != nil || string(r.Payload) != p {
				fmu.Lock()
				failed = append(failed, fmt.Sprintf("%s: %v", d.id, err))
				fmu.Unlock()
			}
		}()
	}
	sweep.Wait()
	sort.Strings(failed)
	require.Empty(t, failed[:min(len(failed), 10)], "%d devices did not answer after the faults", len(failed))
	losses := 0
	for _, d := range devs {
		losses += statuslog.CountLosses(d.status.All())
	}
	t.Logf("soak: every device answered after the faults; the status callbacks reported %d losses", losses)
}
