package device_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/iothub-go/iothub"
	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/internal/testutil/hubcall"
	"github.com/iothub-go/iothub/internal/testutil/statuslog"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/transport"
	"github.com/iothub-go/iothub/transport/amqp"
	"github.com/iothub-go/iothub/transport/mqtt"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var transports = []struct {
	name string
	tr   transport.Transport
}{
	{"mqtt", mqtt.New(nil)},
	{"mqtt-ws", mqtt.New(&mqtt.Options{WebSocket: true})},
	{"amqp", amqp.New(nil)},
	{"amqp-ws", amqp.New(&amqp.Options{WebSocket: true})},
}

// eachTransport runs f once per method transport, as parallel subtests: one
// suite, every transport.
func eachTransport(t *testing.T, f func(t *testing.T, tr transport.Transport)) {
	t.Helper()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			f(t, tr.tr)
		})
	}
}

// fastRetry keeps reconnects quick in tests.
var fastRetry = iothub.RetryOptions{RetryDelay: 20 * time.Millisecond, MaxRetryDelay: 200 * time.Millisecond}

// newClient builds and connects a client for connStr; it is closed at the
// end of the test.
func newClient(t *testing.T, hub *iothubtest.Server, connStr string, opts *device.ClientOptions, setup func(*device.Client)) *device.Client {
	t.Helper()
	if opts == nil {
		opts = &device.ClientOptions{}
	}
	if opts.TLSConfig == nil {
		opts.TLSConfig = hub.TLSConfig()
	}
	if opts.Retry == (iothub.RetryOptions{}) {
		opts.Retry = fastRetry
	}
	c, err := device.NewClientFromConnectionString(connStr, opts)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

type result struct {
	HTTP    int
	Status  int
	Payload json.RawMessage
	Raw     string
	Err     error // the request failed, or its answer did not decode
}

// invoke invokes method on id through the hub's REST API, with a response
// timeout in seconds. It never touches t: goroutines may call it.
func invoke(hub *iothubtest.Server, id, method, payload string, timeout int) result {
	body := fmt.Sprintf(`{"methodName":%q,"responseTimeoutInSeconds":%d`, method, timeout)
	if payload != "" {
		body += `,"payload":` + payload
	}
	st, raw, err := hubcall.TryInvoke(hub, id, body+"}")
	r := result{HTTP: st, Raw: raw, Err: err}
	if err == nil && st == 200 {
		var v struct {
			Status  int
			Payload json.RawMessage
		}
		if err := json.Unmarshal([]byte(raw), &v); err != nil {
			r.Err = fmt.Errorf("invoke answer %q: %w", raw, err)
		}
		r.Status, r.Payload = v.Status, v.Payload
	}
	return r
}

// call invokes method on id (30 s response timeout) from the test's
// goroutine.
func call(t *testing.T, hub *iothubtest.Server, id, method, payload string) result {
	t.Helper()
	r := invoke(hub, id, method, payload, 30)
	require.NoError(t, r.Err, "invoking %s on %s", method, id)
	return r
}

// callAsync invokes method on id on a goroutine of its own; the result
// arrives on the channel.
func callAsync(hub *iothubtest.Server, id, method, payload string, timeout int) <-chan result {
	ch := make(chan result, 1)
	go func() { ch <- invoke(hub, id, method, payload, timeout) }()
	return ch
}

// await returns the result of an async call, failing the test if it takes
// longer than a minute (a hang, not a slow machine).
func await(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		require.NoError(t, r.Err)
		return r
	case <-time.After(time.Minute):
		require.FailNow(t, "the call never returned")
		return result{}
	}
}

// requireNotDone fails the test if ch already holds a value.
func requireNotDone[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("%s returned: %+v", what, v)
	default:
	}
}

func echo(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
	return &device.MethodResponse{Status: 200, Payload: req.Payload}, nil
}

func TestRoundTrip(t *testing.T) {
	for _, tr := range transports {
		for _, module := range []bool{false, true} {
			name := tr.name + "/device"
			if module {
				name = tr.name + "/module"
			}
			t.Run(name, func(t *testing.T) {
				hub := iothubtest.NewServer(t, nil)
				id, cs := "dev1", hub.AddDevice(t, "dev1")
				if module {
					id, cs = "dev1/mod1", hub.AddModule(t, "dev1", "mod1")
				}
				newClient(t, hub, cs, &device.ClientOptions{Transport: tr.tr}, func(c *device.Client) {
					c.SetMethodHandler("reboot", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
						return device.JSONResponse(200, map[string]string{"result": "Reboot started.", "got": string(req.Payload)})
					})
				})
				r := call(t, hub, id, "reboot", `{"delay":5}`)
				if r.HTTP != 200 || r.Status != 200 || string(r.Payload) != `{"got":"{\"delay\":5}","result":"Reboot started."}` {
					t.Fatalf("got %+v", r)
				}
				calls := hub.Calls()
				if len(calls) != 1 || calls[0].Protocol != tr.name {
					t.Fatalf("hub calls %+v, want one over %s", calls, tr.name)
				}
			})
		}
	}
}

func TestHandlerOutcomes(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		c := newClient(t, hub, cs, &device.ClientOptions{Transport: tr}, func(c *device.Client) {
			c.SetMethodHandler("echo", echo)
			c.SetMethodHandler("fail", func(context.Context, *device.MethodRequest) (*device.MethodResponse, error) {
				return nil, errors.New("disk full")
			})
			c.SetMethodHandler("panic", func(context.Context, *device.MethodRequest) (*device.MethodResponse, error) {
				panic("boom")
			})
			c.SetMethodHandler("nothing", func(context.Context, *device.MethodRequest) (*device.MethodResponse, error) {
				return nil, nil
			})
			c.SetMethodHandler("status", func(context.Context, *device.MethodRequest) (*device.MethodResponse, error) {
				return &device.MethodResponse{Status: 418, Payload: json.RawMessage(`"teapot"`)}, nil
			})
			c.SetMethodHandler("badjson", func(context.Context, *device.MethodRequest) (*device.MethodResponse, error) {
				return &device.MethodResponse{Status: 200, Payload: json.RawMessage(`{not json`)}, nil
			})
		})
		for _, tc := range []struct {
			method, payload string
			status          int
			want            string
		}{
			{"unknown", "", 501, `{"error":"method \"unknown\" is not implemented on this device"}`},
			{"fail", "", 500, `{"error":"disk full"}`},
			{"panic", "", 500, `{"error":"the method handler failed"}`},
			{"echo", `{"after":"panic"}`, 200, `{"after":"panic"}`}, // the client still answers
			{"nothing", "", 200, `null`},
			{"status", "", 418, `"teapot"`},
			{"badjson", "", 500, `{"error":"the handler's response payload is not valid JSON"}`},
		} {
			t.Run(tc.method, func(t *testing.T) {
				r := call(t, hub, "dev1", tc.method, tc.payload)
				if r.HTTP != 200 || r.Status != tc.status || string(r.Payload) != tc.want {
					t.Fatalf("got %+v, want status %d payload %s", r, tc.status, tc.want)
				}
			})
		}

		// A default handler takes unknown names; removing it restores 501.
		c.SetDefaultMethodHandler(func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
			return device.JSONResponse(202, req.Name)
		})
		if r := call(t, hub, "dev1", "anything", ""); r.Status != 202 || string(r.Payload) != `"anything"` {
			t.Fatalf("default handler: %+v", r)
		}
		c.SetDefaultMethodHandler(nil)
		c.SetMethodHandler("echo", nil)
		if r := call(t, hub, "dev1", "echo", ""); r.Status != 501 {
			t.Fatalf("removed handler: %+v", r)
		}
	})
}

func TestPayloadsDeliveredExactly(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		var got atomic.Value
		newClient(t, hub, cs, &device.ClientOptions{Transport: tr}, func(c *device.Client) {
			c.SetMethodHandler("echo", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
				got.Store(string(req.Payload))
				return &device.MethodResponse{Status: 200, Payload: req.Payload}, nil
			})
		})
		big := `"` + strings.Repeat("x", device.MaxPayload-2) + `"` // exactly 128 KB of JSON
		for _, tc := range []struct{ name, payload, device, back string }{
			// JSON null is relayed as null; a request without a payload
			// member reaches the handler as an empty payload.
			{"null", "null", "null", "null"},
			{"absent", "", "", "null"},
			{"object", `{"a":{"b":[1,2,{"c":null}]},"u":"\u00e9\ud83d\ude00"}`, `{"a":{"b":[1,2,{"c":null}]},"u":"\u00e9\ud83d\ude00"}`, `{"a":{"b":[1,2,{"c":null}]},"u":"\u00e9\ud83d\ude00"}`},
			{"array", `[1,"two",3.5,true,null]`, `[1,"two",3.5,true,null]`, `[1,"two",3.5,true,null]`},
			{"string", `"hello"`, `"hello"`, `"hello"`},
			{"number", `-12.5e3`, `-12.5e3`, `-12.5e3`},
			{"128KB", big, big, big},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := call(t, hub, "dev1", "echo", tc.payload)
				if r.HTTP != 200 || r.Status != 200 {
					t.Fatalf("got %+v", r)
				}
				if g := got.Load(); g != tc.device {
					t.Fatalf("device received %.80q, want %.80q", g, tc.device)
				}
				if string(r.Payload) != tc.back {
					t.Fatalf("caller received %.80q, want %.80q", r.Payload, tc.back)
				}
			})
		}
	})
}

func TestResponseSizeLimit(t *testing.T) {
	// JSONResponse refuses 128 KB + 1 with a clear error …
	if _, err := device.JSONResponse(200, strings.Repeat("x", device.MaxPayload-1)); !errors.Is(err, device.ErrPayloadTooLarge) {
		t.Fatalf("JSONResponse of 128 KB + 1: %v, want ErrPayloadTooLarge", err)
	}
	if r, err := device.JSONResponse(200, strings.Repeat("x", device.MaxPayload-2)); err != nil || len(r.Payload) != device.MaxPayload {
		t.Fatalf("JSONResponse of 128 KB: %v", err)
	}
	// … and a raw oversized answer becomes a 500 for the caller.
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		newClient(t, hub, cs, &device.ClientOptions{Transport: tr}, func(c *device.Client) {
			c.SetMethodHandler("big", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
				return &device.MethodResponse{Status: 200, Payload: json.RawMessage(`"` + strings.Repeat("x", device.MaxPayload-1) + `"`)}, nil
			})
		})
		r := call(t, hub, "dev1", "big", "")
		if r.Status != 500 || !strings.Contains(string(r.Payload), "131073 bytes; the limit is 128 KB") {
			t.Fatalf("oversized answer: %+v", r)
		}
	})
}

func TestConcurrentCalls(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		release := make(chan struct{})
		newClient(t, hub, cs, &device.ClientOptions{Transport: tr, MaxConcurrentHandlers: 8}, func(c *device.Client) {
			c.SetMethodHandler("echo", echo)
			c.SetMethodHandler("slow", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
				select {
				case <-release:
				case <-ctx.Done():
				}
				return device.JSONResponse(200, "slow done")
			})
		})
		// A slow handler holds a slot while 100 other calls go through.
		slow := callAsync(hub, "dev1", "slow", "", 30)

		var wg sync.WaitGroup
		errs := make(chan string, 100)
		for i := 0; i < 100; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := fmt.Sprintf(`{"i":%d}`, i)
				if r := invoke(hub, "dev1", "echo", p, 30); r.Err != nil || r.HTTP != 200 || r.Status != 200 || string(r.Payload) != p {
					errs <- fmt.Sprintf("call %d: %+v", i, r)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
		requireNotDone(t, slow, "the slow call, before it was released")
		close(release)
		if r := await(t, slow); r.Status != 200 || string(r.Payload) != `"slow done"` {
			t.Fatalf("slow call: %+v", r)
		}
	})
}

func TestReconnectAfterDrop(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			hub := iothubtest.NewServer(t, nil)
			cs := hub.AddDevice(t, "dev1")
			log := statuslog.New()
			c := newClient(t, hub, cs, &device.ClientOptions{Transport: tr.tr, OnConnectionStatus: log.Record}, func(c *device.Client) {
				c.SetMethodHandler("echo", echo)
			})
			log.WaitFor(t, device.ConnectionStateConnected)
			for i := 0; i < 3; i++ {
				if !hub.DropConnection("dev1") {
					t.Fatal("the device was not connected")
				}
				if s := log.WaitFor(t, device.ConnectionStateConnecting); s.Err == nil {
					t.Fatal("the connecting status after a drop carries no reason")
				}
				log.WaitFor(t, device.ConnectionStateConnected)
				if c.ConnectionState() != device.ConnectionStateConnected {
					t.Fatalf("state %v after reconnect", c.ConnectionState())
				}
				// Connected means subscribed: the call must succeed at once.
				if r := call(t, hub, "dev1", "echo", `[1]`); r.Status != 200 || string(r.Payload) != `[1]` {
					t.Fatalf("call after reconnect %d: %+v", i, r)
				}
			}
		})
	}
}

// countingTokens hands out the tokens of a connection string's key and
// remembers each distinct one.
type countingTokens struct {
	auth.TokenProvider
	mu     sync.Mutex
	issued []auth.Token
}

func newCountingTokens(t *testing.T, connStr string, o auth.TokenOptions) (*countingTokens, auth.Identity) {
	t.Helper()
	cs, err := auth.ParseDeviceConnectionString(connStr)
	require.NoError(t, err)
	tp, err := cs.TokenProvider(&o)
	require.NoError(t, err)
	id := cs.Identity()
	return &countingTokens{TokenProvider: tp}, id
}

func (p *countingTokens) Token(ctx context.Context) (auth.Token, error) {
	return p.record(p.TokenProvider.Token(ctx))
}

// Renew mints a new token at once, as auth.KeyTokenProvider does (the
// client asks for one after a refusal).
func (p *countingTokens) Renew(ctx context.Context) (auth.Token, error) {
	return p.record(p.TokenProvider.(interface {
		Renew(context.Context) (auth.Token, error)
	}).Renew(ctx))
}

func (p *countingTokens) record(tok auth.Token, err error) (auth.Token, error) {
	if err == nil {
		p.mu.Lock()
		if n := len(p.issued); n == 0 || p.issued[n-1].Value != tok.Value {
			p.issued = append(p.issued, tok)
		}
		p.mu.Unlock()
	}
	return tok, err
}

func (p *countingTokens) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.issued)
}

func (p *countingTokens) last() auth.Token {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.issued[len(p.issued)-1]
}

// connectWithTokens connects a client with an echo handler for id, which
// takes its SAS tokens from tokens; it is closed at the end of the test.
// onStatus may be nil.
func connectWithTokens(t *testing.T, hub *iothubtest.Server, tr transport.Transport, id auth.Identity, tokens auth.TokenProvider, onStatus func(device.ConnectionStatus)) *device.Client {
	t.Helper()
	c, err := device.NewClient(id, tokens, &device.ClientOptions{Transport: tr, TLSConfig: hub.TLSConfig(), Retry: fastRetry,
		GatewayHostName: hub.Addr(), OnConnectionStatus: onStatus})
	require.NoError(t, err)
	require.NoError(t, c.SetMethodHandler("echo", echo))
	require.NoError(t, c.Connect(context.Background()))
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// waitUntil polls cond until it holds, failing the test after a minute.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, time.Minute, 5*time.Millisecond, "waiting for %s", what)
}

// With 2 s tokens the client renews several times while calls keep
// working after every renewal: by reconnecting on MQTT, by a CBS put-token
// on the live connection on AMQP (no reconnect at all).
func TestTokenRenewal(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		tokens, id := newCountingTokens(t, cs, authTTL(2*time.Second))
		log := statuslog.New()
		c := connectWithTokens(t, hub, tr, id, tokens, log.Record)
		for i := 1; i <= 3; i++ {
			n := tokens.count()
			waitUntil(t, "a renewal", func() bool { return tokens.count() > n })
			waitUntil(t, "connected", func() bool { return c.ConnectionState() == device.ConnectionStateConnected })
			if r := call(t, hub, "dev1", "echo", `"renewed"`); r.Status != 200 {
				t.Fatalf("call after renewal %d: %+v", i, r)
			}
		}
		reconnects, connected := 0, false
		for _, s := range log.All() { // count reconnects after the first connection
			connected = connected || s.State == device.ConnectionStateConnected
			if connected && s.State == device.ConnectionStateConnecting {
				reconnects++
			}
		}
		switch tr.Name() {
		case "mqtt", "mqtt-ws":
			if reconnects < 2 {
				t.Fatalf("%d reconnects over 3 renewals: the token was not renewed by reconnecting", reconnects)
			}
		default:
			if reconnects != 0 {
				t.Fatalf("%d reconnects: AMQP must renew with put-token on the live connection", reconnects)
			}
		}
	})
}

func TestForcedTokenExpiry(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		tokens, id := newCountingTokens(t, cs, auth.TokenOptions{})
		log := statuslog.New()
		connectWithTokens(t, hub, tr, id, tokens, log.Record)
		log.WaitFor(t, device.ConnectionStateConnected)
		// Tokens expire on whole seconds: a newly minted one must expire
		// later than the one revoked.
		live := tokens.last().ExpiresOn
		waitUntil(t, "the clock to pass the live token's second", func() bool {
			return time.Now().Add(auth.DefaultTokenTTL).Truncate(time.Second).After(live)
		})
		hub.ExpireTokens("dev1")
		log.WaitFor(t, device.ConnectionStateConnecting)
		log.WaitFor(t, device.ConnectionStateConnected)
		if r := call(t, hub, "dev1", "echo", `"again"`); r.Status != 200 {
			t.Fatalf("call after forced expiry: %+v", r)
		}
	})
}

func TestWrongKey(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		i := strings.Index(cs, "SharedAccessKey=") + len("SharedAccessKey=")
		wrong := cs[:i] + "AAAA" + cs[i+4:]
		c, err := device.NewClientFromConnectionString(wrong, &device.ClientOptions{Transport: tr, TLSConfig: hub.TLSConfig(), Retry: fastRetry})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		err = c.Connect(ctx)
		if !errors.Is(err, transport.ErrNotAuthorized) || ctx.Err() != nil {
			t.Fatalf("Connect with a wrong key: %v (ctx %v), want ErrNotAuthorized before the deadline", err, ctx.Err())
		}
		if c.ConnectionState() != device.ConnectionStateDisconnected {
			t.Fatalf("state %v", c.ConnectionState())
		}
		if strings.Contains(err.Error(), "SharedAccessSignature") {
			t.Fatalf("error leaks the token: %v", err)
		}
	})
}

func TestCloseWaitsForHandlers(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		started, release := make(chan struct{}), make(chan struct{})
		c, err := device.NewClientFromConnectionString(cs, &device.ClientOptions{Transport: tr, TLSConfig: hub.TLSConfig()})
		require.NoError(t, err)
		c.SetMethodHandler("work", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
			close(started)
			<-release
			return device.JSONResponse(200, "finished")
		})
		require.NoError(t, c.Connect(context.Background()))
		res := callAsync(hub, "dev1", "work", "", 30)
		<-started
		closed := make(chan error, 1)
		go func() { closed <- c.Close(context.Background()) }()
		waitUntil(t, "Close to begin", func() bool { return errors.Is(c.Connect(context.Background()), device.ErrClosed) })
		requireNotDone(t, closed, "Close, while a handler was running")
		close(release)
		if r := await(t, res); r.Status != 200 || string(r.Payload) != `"finished"` {
			t.Fatalf("call in flight at Close: %+v", r)
		}
		require.NoError(t, <-closed)
		require.NoError(t, c.Close(context.Background()), "second Close")
		require.ErrorIs(t, c.Connect(context.Background()), device.ErrClosed)
		require.Equal(t, device.ConnectionStateClosed, c.ConnectionState())
	})
}

func TestX509(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs, cert := hub.AddX509Device(t, "dev1")
		cred, err := authX509(cert)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := device.NewClientFromConnectionString(cs, nil); err == nil {
			t.Fatal("x509=true without a certificate was accepted")
		}
		newClient(t, hub, cs, &device.ClientOptions{Transport: tr, X509: cred}, func(c *device.Client) { c.SetMethodHandler("echo", echo) })
		if r := call(t, hub, "dev1", "echo", `1`); r.Status != 200 || string(r.Payload) != "1" {
			t.Fatalf("got %+v", r)
		}
	})
}

func authTTL(d time.Duration) auth.TokenOptions { return auth.TokenOptions{TTL: d} }

func authX509(cert tls.Certificate) (*auth.X509Credential, error) {
	return auth.NewX509Credential(cert)
}

// Handlers may be registered after Connect. A client without handlers is
// not subscribed (the hub answers 404103, as for .NET's DeviceClient
// before SetMethodHandlerAsync); registering the first one subscribes, and
// a name without a handler then gets 501.
func TestRegisterAfterConnect(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		c := newClient(t, hub, hub.AddDevice(t, "dev1"), &device.ClientOptions{Transport: tr}, nil)
		if r := call(t, hub, "dev1", "late", `1`); r.HTTP != 404 || !strings.Contains(r.Raw, "404103") {
			t.Fatalf("before registration: %+v", r)
		}
		if err := c.SetMethodHandler("late", echo); err != nil {
			t.Fatal(err)
		}
		if r := call(t, hub, "dev1", "late", `2`); r.Status != 200 || string(r.Payload) != "2" {
			t.Fatalf("after registration: %+v", r)
		}
		if r := call(t, hub, "dev1", "other", `3`); r.HTTP != 200 || r.Status != 501 {
			t.Fatalf("unregistered name: %+v", r)
		}
		if err := c.SetMethodHandler("", echo); err == nil {
			t.Fatal("empty method name accepted")
		}
	})
}
