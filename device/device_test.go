package device_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/iothub-go/iothub"
	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/internal/testutil/hubcall"
	"github.com/iothub-go/iothub/internal/testutil/statuslog"
	"github.com/iothub-go/iothub/internal/testutil/syncbuf"
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
	require.NoError(t, err)
	if setup != nil {
		setup(c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, c.Connect(ctx), "Connect")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, c.Close(ctx), "Close")
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

// String shows the result with its payload cut short: the failure
// messages print results of 128 KB payloads.
func (r result) String() string {
	const max = 200
	p, raw := string(r.Payload), r.Raw
	if len(p) > max {
		p = p[:max] + "…"
	}
	if len(raw) > max {
		raw = raw[:max] + "…"
	}
	return fmt.Sprintf("{HTTP:%d Status:%d Payload:%s Raw:%s Err:%v}", r.HTTP, r.Status, p, raw, r.Err)
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
		require.FailNow(t, what+" returned", "%+v", v)
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
				var requestID atomic.Value
				newClient(t, hub, cs, &device.ClientOptions{Transport: tr.tr}, func(c *device.Client) {
					c.SetMethodHandler("reboot", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
						requestID.Store(req.RequestID)
						return device.JSONResponse(200, map[string]string{"result": "Reboot started.", "got": string(req.Payload)})
					})
				})
				r := call(t, hub, id, "reboot", `{"delay":5}`)
				require.Equal(t, 200, r.HTTP, "%+v", r)
				assert.Equal(t, 200, r.Status, "%+v", r)
				assert.Equal(t, `{"got":"{\"delay\":5}","result":"Reboot started."}`, string(r.Payload))
				assert.NotEmpty(t, requestID.Load(), "the handler's request id")
				calls := hub.Calls()
				require.Len(t, calls, 1, "hub calls %+v, want one over %s", calls, tr.name)
				assert.Equal(t, tr.name, calls[0].Protocol, "hub calls %+v", calls)
			})
		}
	}
}

func TestHandlerOutcomes(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		var logs syncbuf.Buffer
		c := newClient(t, hub, cs, &device.ClientOptions{Transport: tr, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, func(c *device.Client) {
			c.SetMethodHandler("echo", echo)
			c.SetMethodHandler("fail", func(context.Context, *device.MethodRequest) (*device.MethodResponse, error) {
				return nil, errors.New("open /etc/device/secret.key: permission denied")
			})
			c.SetMethodHandler("refuse", func(context.Context, *device.MethodRequest) (*device.MethodResponse, error) {
				return nil, &device.MethodError{Status: 409, Message: "a reboot is already in progress"}
			})
			c.SetMethodHandler("refuse-wrapped", func(context.Context, *device.MethodRequest) (*device.MethodResponse, error) {
				return &device.MethodResponse{Status: 200}, fmt.Errorf("reboot: %w", &device.MethodError{Status: 403, Message: "not allowed"})
			})
			c.SetMethodHandler("refuse-no-status", func(context.Context, *device.MethodRequest) (*device.MethodResponse, error) {
				return nil, &device.MethodError{Message: "broken"}
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
			// A plain error's text stays on the device: the caller gets
			// a generic 500.
			{"fail", "", 500, `{"error":"the method handler failed"}`},
			// A MethodError, returned or wrapped, is the handler's answer.
			{"refuse", "", 409, `{"error":"a reboot is already in progress"}`},
			{"refuse-wrapped", "", 403, `{"error":"not allowed"}`},
			{"refuse-no-status", "", 500, `{"error":"broken"}`},
			{"panic", "", 500, `{"error":"the method handler failed"}`},
			{"echo", `{"after":"panic"}`, 200, `{"after":"panic"}`}, // the client still answers
			{"nothing", "", 200, `null`},
			{"status", "", 418, `"teapot"`},
			{"badjson", "", 500, `{"error":"the handler's response payload is not valid JSON"}`},
		} {
			t.Run(tc.method, func(t *testing.T) {
				r := call(t, hub, "dev1", tc.method, tc.payload)
				require.Equal(t, 200, r.HTTP, "%+v", r)
				assert.Equal(t, tc.status, r.Status, "%+v", r)
				assert.Equal(t, tc.want, string(r.Payload))
			})
		}
		// The device's log has what the caller did not get.
		assert.Contains(t, logs.String(), "permission denied", "the failed handler's error in the device's log")

		// A default handler takes unknown names; removing it restores 501.
		c.SetDefaultMethodHandler(func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
			return device.JSONResponse(202, req.Name)
		})
		r := call(t, hub, "dev1", "anything", "")
		assert.Equal(t, 202, r.Status, "default handler: %+v", r)
		assert.Equal(t, `"anything"`, string(r.Payload), "default handler")
		c.SetDefaultMethodHandler(nil)
		c.SetMethodHandler("echo", nil)
		assert.Equal(t, 501, call(t, hub, "dev1", "echo", "").Status, "removed handler")
	})
}

// ClientOptions.WrapHandler wraps every handler once, the default handler
// and the built-in 501 included: the wrapper sees every call with its
// name and the handler's own error, and may change the answer. A panic, in
// the handler or in the wrapper, is still recovered.
func TestWrapHandler(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	var (
		mu    sync.Mutex
		seen  []string // "name status err"
		wraps int
	)
	wrap := func(next device.MethodHandler) device.MethodHandler {
		mu.Lock()
		wraps++
		mu.Unlock()
		return func(ctx context.Context, req *device.MethodRequest) (resp *device.MethodResponse, err error) {
			if req.Name == "wrapper-panics" {
				panic("in the wrapper")
			}
			resp, err = next(ctx, req)
			status := 0
			if resp != nil {
				status = resp.Status
			}
			mu.Lock()
			seen = append(seen, fmt.Sprintf("%s %d %v", req.Name, status, err != nil))
			mu.Unlock()
			if req.Name == "rewrite" {
				return &device.MethodResponse{Status: 299, Payload: json.RawMessage(`"rewritten"`)}, nil
			}
			return resp, err
		}
	}
	c := newClient(t, hub, hub.AddDevice(t, "dev1"), &device.ClientOptions{WrapHandler: wrap}, func(c *device.Client) {
		require.NoError(t, c.SetMethodHandler("echo", echo))
		require.NoError(t, c.SetMethodHandler("rewrite", echo))
		require.NoError(t, c.SetMethodHandler("fail", func(context.Context, *device.MethodRequest) (*device.MethodResponse, error) {
			return nil, errors.New("disk full")
		}))
		require.NoError(t, c.SetMethodHandler("panic", func(context.Context, *device.MethodRequest) (*device.MethodResponse, error) {
			panic("boom")
		}))
		require.NoError(t, c.SetMethodHandler("wrapper-panics", echo))
	})
	r := call(t, hub, "dev1", "echo", `"hi"`)
	assert.Equal(t, 200, r.Status, "echo: %+v", r)
	assert.Equal(t, `"hi"`, string(r.Payload), "echo")
	r = call(t, hub, "dev1", "rewrite", `"hi"`)
	assert.Equal(t, 299, r.Status, "the wrapper's answer: %+v", r)
	assert.Equal(t, `"rewritten"`, string(r.Payload), "the wrapper's answer")
	assert.Equal(t, 500, call(t, hub, "dev1", "fail", "").Status, "a failed handler under the wrapper")
	assert.Equal(t, 500, call(t, hub, "dev1", "panic", "").Status, "a panicking handler under the wrapper")
	assert.Equal(t, 500, call(t, hub, "dev1", "wrapper-panics", "").Status, "a panicking wrapper")
	assert.Equal(t, 501, call(t, hub, "dev1", "unknown", "").Status, "the built-in answer under the wrapper")
	require.NoError(t, c.SetDefaultMethodHandler(func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
		return device.JSONResponse(202, req.Name)
	}))
	assert.Equal(t, 202, call(t, hub, "dev1", "other", "").Status, "the default handler under the wrapper")
	assert.Equal(t, 200, call(t, hub, "dev1", "echo", `1`).Status, "echo, again")

	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"echo 200 false", "rewrite 200 false", "fail 0 true", "unknown 501 false", "other 202 false", "echo 200 false"}, seen,
		"the calls the wrapper saw (a panic skips its bookkeeping)")
	// The built-in 501, five SetMethodHandler, one SetDefaultMethodHandler:
	// once per registration, not per call.
	assert.Equal(t, 7, wraps, "WrapHandler calls")
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
		big := `"` + strings.Repeat("x", device.MaxPayloadSize-2) + `"` // exactly 128 KB of JSON
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
				require.Equal(t, 200, r.HTTP, "%v", r)
				require.Equal(t, 200, r.Status, "%v", r)
				require.Equal(t, tc.device, got.Load(), "what the device received")
				require.Equal(t, tc.back, string(r.Payload), "what the caller received")
			})
		}
	})
}

func TestResponseSizeLimit(t *testing.T) {
	// JSONResponse refuses 128 KB + 1 with a clear error …
	_, err := device.JSONResponse(200, strings.Repeat("x", device.MaxPayloadSize-1))
	require.ErrorIs(t, err, device.ErrPayloadTooLarge, "JSONResponse of 128 KB + 1")
	r, err := device.JSONResponse(200, strings.Repeat("x", device.MaxPayloadSize-2))
	require.NoError(t, err, "JSONResponse of 128 KB")
	require.Len(t, r.Payload, device.MaxPayloadSize, "JSONResponse of 128 KB")
	// … and a raw oversized answer becomes a 500 for the caller.
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		newClient(t, hub, cs, &device.ClientOptions{Transport: tr}, func(c *device.Client) {
			c.SetMethodHandler("big", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
				return &device.MethodResponse{Status: 200, Payload: json.RawMessage(`"` + strings.Repeat("x", device.MaxPayloadSize-1) + `"`)}, nil
			})
		})
		r := call(t, hub, "dev1", "big", "")
		assert.Equal(t, 500, r.Status, "oversized answer: %v", r)
		assert.Contains(t, string(r.Payload), "131073 bytes; the limit is 128 KB", "oversized answer")
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
			assert.Fail(t, "a concurrent call failed", e)
		}
		requireNotDone(t, slow, "the slow call, before it was released")
		close(release)
		r := await(t, slow)
		assert.Equal(t, 200, r.Status, "slow call: %v", r)
		assert.Equal(t, `"slow done"`, string(r.Payload), "slow call")
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
				require.True(t, hub.DropConnection("dev1"), "the device was not connected")
				s := log.WaitFor(t, device.ConnectionStateConnecting)
				require.Error(t, s.Err, "the connecting status after a drop carries no reason")
				log.WaitFor(t, device.ConnectionStateConnected)
				require.Equal(t, device.ConnectionStateConnected, c.ConnectionState(), "state after reconnect")
				// Connected means subscribed: the call must succeed at once.
				r := call(t, hub, "dev1", "echo", `[1]`)
				require.Equal(t, 200, r.Status, "call after reconnect %d: %v", i, r)
				require.Equal(t, `[1]`, string(r.Payload), "call after reconnect %d", i)
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
			r := call(t, hub, "dev1", "echo", `"renewed"`)
			require.Equal(t, 200, r.Status, "call after renewal %d: %v", i, r)
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
			require.GreaterOrEqual(t, reconnects, 2, "reconnects over 3 renewals: the token was not renewed by reconnecting")
		default:
			require.Zero(t, reconnects, "reconnects: AMQP must renew with put-token on the live connection")
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
		r := call(t, hub, "dev1", "echo", `"again"`)
		require.Equal(t, 200, r.Status, "call after forced expiry: %v", r)
	})
}

func TestWrongKey(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		i := strings.Index(cs, "SharedAccessKey=") + len("SharedAccessKey=")
		wrong := cs[:i] + "AAAA" + cs[i+4:]
		c, err := device.NewClientFromConnectionString(wrong, &device.ClientOptions{Transport: tr, TLSConfig: hub.TLSConfig(), Retry: fastRetry})
		require.NoError(t, err)
		defer c.Close(context.Background())
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		err = c.Connect(ctx)
		require.ErrorIs(t, err, device.ErrNotAuthorized, "Connect with a wrong key")
		require.ErrorIs(t, err, transport.ErrNotAuthorized, "device.ErrNotAuthorized is transport's")
		require.NoError(t, ctx.Err(), "ErrNotAuthorized must come before the deadline")
		require.Equal(t, device.ConnectionStateDisconnected, c.ConnectionState())
		require.NotContains(t, err.Error(), "SharedAccessSignature", "the error leaks the token")
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
		require.ErrorIs(t, c.Connect(context.Background()), device.ErrAlreadyConnected, "a second Connect")
		res := callAsync(hub, "dev1", "work", "", 30)
		<-started
		closed := make(chan error, 1)
		go func() { closed <- c.Close(context.Background()) }()
		waitUntil(t, "Close to begin", func() bool { return errors.Is(c.Connect(context.Background()), device.ErrClosed) })
		requireNotDone(t, closed, "Close, while a handler was running")
		close(release)
		r := await(t, res)
		require.Equal(t, 200, r.Status, "call in flight at Close: %v", r)
		require.Equal(t, `"finished"`, string(r.Payload), "call in flight at Close")
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
		require.NoError(t, err)
		_, err = device.NewClientFromConnectionString(cs, nil)
		require.ErrorIs(t, err, device.ErrInvalidOptions, "x509=true without a certificate")
		newClient(t, hub, cs, &device.ClientOptions{Transport: tr, X509: cred}, func(c *device.Client) { c.SetMethodHandler("echo", echo) })
		r := call(t, hub, "dev1", "echo", `1`)
		require.Equal(t, 200, r.Status, "%v", r)
		require.Equal(t, "1", string(r.Payload))
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
		r := call(t, hub, "dev1", "late", `1`)
		require.Equal(t, 404, r.HTTP, "before registration: %v", r)
		require.Contains(t, r.Raw, "404103", "before registration")
		require.NoError(t, c.SetMethodHandler("late", echo))
		r = call(t, hub, "dev1", "late", `2`)
		require.Equal(t, 200, r.Status, "after registration: %v", r)
		require.Equal(t, "2", string(r.Payload), "after registration")
		r = call(t, hub, "dev1", "other", `3`)
		require.Equal(t, 200, r.HTTP, "unregistered name: %v", r)
		require.Equal(t, 501, r.Status, "unregistered name: %v", r)
		require.Error(t, c.SetMethodHandler("", echo), "empty method name accepted")
	})
}
