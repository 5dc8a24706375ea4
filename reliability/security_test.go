package reliability_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	goamqp "github.com/Azure/go-amqp"
	"github.com/coder/websocket"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub"
	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/internal/hubauth"
	"github.com/iothub-go/iothub/internal/testutil/pahodev"
	"github.com/iothub-go/iothub/internal/testutil/testkey"
	"github.com/iothub-go/iothub/service"
	"github.com/iothub-go/iothub/transport"
)

// recorder is a default method handler that records every request it gets.
type recorder struct {
	mu   sync.Mutex
	got  []string
	name string
}

func (r *recorder) handler(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
	r.mu.Lock()
	r.got = append(r.got, req.Name+" "+string(req.Payload))
	r.mu.Unlock()
	return device.JSONResponse(200, r.name)
}

func (r *recorder) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

func (f *fixture) connectRecorder(t *testing.T, id string, tp tport) (*dev, *recorder) {
	t.Helper()
	r := &recorder{name: id}
	d := f.connect(t, id, tp, &devOptions{setup: func(c *device.Client) {
		c.SetMethodHandler("echo", nil)
		c.SetDefaultMethodHandler(r.handler)
	}})
	return d, r
}

// A device receives its own methods only: not another device's, not its
// modules', whether the other identity is online or not.
func TestCannotReceiveAnotherIdentitysMethods(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tp tport) {
		f := newFixture(t, nil)
		f.addDevice("devA")
		f.addDevice("devA/mod1")
		f.addDevice("devB")
		_, recA := f.connectRecorder(t, "devA", tp)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		for _, other := range []string{"devB", "devA/mod1"} {
			_, err := f.invoke(ctx, other, "secret", json.RawMessage(`"for `+other+`"`), 5*time.Second, 0)
			require.ErrorIs(t, err, service.ErrDeviceNotOnline, "call to offline %s", other)
		}
		_, recB := f.connectRecorder(t, "devB", tp)
		_, recM := f.connectRecorder(t, "devA/mod1", tp)
		for _, id := range []string{"devA", "devB", "devA/mod1"} {
			r, err := f.invoke(ctx, id, "whoami", nil, 10*time.Second, 0)
			require.NoError(t, err, "call to %s", id)
			require.Equal(t, strconv.Quote(id), string(r.Payload), "the device that answered the call to %s", id)
		}
		require.Equal(t, []string{"whoami null"}, recA.requests(), "devA received more than its own call")
		require.Len(t, recB.requests(), 1, "devB's calls")
		require.Len(t, recM.requests(), 1, "devA/mod1's calls")
	})
}

// A hostile MQTT device (raw paho) guesses the hub's request ids and
// answers another device's pending call: the call stays open for its
// rightful device; subscribing to another device's topics costs the
// connection.
func TestCannotAnswerAnotherIdentitysCallMQTT(t *testing.T) {
	t.Parallel()
	for _, tp := range transports[:2] {
		t.Run(tp.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			keyA := f.addDevice("devA")
			f.addDevice("devB")
			h := newHolder()
			defer h.free()
			f.connect(t, "devB", tp, &devOptions{setup: func(c *device.Client) { c.SetMethodHandler("hold", h.handler) }})
			url := "tls://" + f.addr
			if tp.name == "mqtt-ws" {
				url = "wss://" + f.addr + "/$iothub/websocket"
			}
			idA := identity("devA")
			tok, err := auth.SignSAS(idA.Resource(), "", keyA, time.Now().Add(time.Hour))
			require.NoError(t, err)
			a, err := pahodev.Dial(t, pahodev.Options{URL: url, TLS: f.tlsConfig(), Identity: idA, Password: tok})
			require.NoError(t, err, "devA")
			pahodev.Echo(t, a, 299)

			call := f.invokeAsync("devB", "hold", nil, 60*time.Second, 0)
			h.wait(t)
			// Request ids are small hex counters: devA answers every id the
			// hub can have issued so far.
			for i := 1; i <= 256; i++ {
				a.Publish("$iothub/methods/res/299/?$rid="+strconv.FormatInt(int64(i), 16), 0, false, []byte(`"stolen"`)).Wait()
			}
			select {
			case r := <-call:
				require.FailNow(t, "devA completed devB's call", "%+v, %v", r.res, r.err)
			case <-time.After(300 * time.Millisecond):
			}
			h.free()
			r := waitCall(t, call)
			require.NoError(t, r.err, "devB's call")
			require.Equal(t, 200, r.res.Status, "devB's call")
			require.Equal(t, `"late"`, string(r.res.Payload), "devB's call")
			require.True(t, a.IsConnectionOpen(), "answering unknown request ids cost devA its connection")

			// Subscribing to devB's topics is a protocol violation: the hub
			// closes the connection.
			lost := make(chan error, 1)
			b, err := pahodev.Dial(t, pahodev.Options{URL: url, TLS: f.tlsConfig(), Identity: idA, Password: tok, OnLost: func(err error) { lost <- err }})
			require.NoError(t, err)
			b.Subscribe("devices/devB/messages/devicebound/#", 0, func(paho.Client, paho.Message) {})
			select {
			case <-lost:
			case <-time.After(time.Minute):
				require.FailNow(t, "subscribing to devB's topic was tolerated")
			}
		})
	}
}

// A hostile AMQP client authenticated as devA attaches devB's method links:
// the hub refuses both, while devA's own links attach. Over AMQP and AMQP
// over WebSocket (raw go-amqp).
func TestCannotAttachAnotherIdentitysLinksAMQP(t *testing.T) {
	t.Parallel()
	for _, ws := range []bool{false, true} {
		name := "amqp"
		if ws {
			name = "amqp-ws"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			keyA := f.addDevice("devA")
			f.addDevice("devB")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			conn := f.dialAMQP(ctx, t, ws)
			defer conn.Close()
			sess, err := conn.NewSession(ctx, nil)
			require.NoError(t, err)
			idA := identity("devA")
			tok, err := auth.SignSAS(idA.Resource(), "", keyA, time.Now().Add(time.Hour))
			require.NoError(t, err)
			require.Equal(t, 200, putToken(ctx, t, sess, idA.Resource(), tok), "devA's own put-token")
			for _, addr := range []string{"/devices/devB/methods/devicebound", "/devices/devA/modules/m1/methods/devicebound"} {
				if s, err := sess.NewSender(ctx, addr, nil); err == nil {
					// Some servers refuse by detaching right after the attach.
					err = s.Send(ctx, goamqp.NewMessage([]byte("x")), nil)
					require.Error(t, err, "sender on %s accepted a message", addr)
				}
				if r, err := sess.NewReceiver(ctx, addr, &goamqp.ReceiverOptions{Credit: 1}); err == nil {
					rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
					_, err = r.Receive(rctx, nil)
					rcancel()
					var le *goamqp.LinkError
					require.ErrorAs(t, err, &le, "receiver on %s stayed attached", addr)
				}
			}
			// A token for devB signed with devA's key is refused.
			forged, err := auth.SignSAS(identity("devB").Resource(), "", keyA, time.Now().Add(time.Hour))
			require.NoError(t, err)
			require.Contains(t, []int{401, 403}, putToken(ctx, t, sess, identity("devB").Resource(), forged), "put-token of a forged devB token")
			_, err = sess.NewReceiver(ctx, "/devices/devA/methods/devicebound", &goamqp.ReceiverOptions{Credit: 1})
			require.NoError(t, err, "devA's own method link")
		})
	}
}

// dialAMQP opens a raw AMQP connection to the hub, over TLS or WebSocket.
func (f *fixture) dialAMQP(ctx context.Context, t *testing.T, ws bool) *goamqp.Conn {
	t.Helper()
	opts := &goamqp.ConnOptions{TLSConfig: f.tlsConfig(), HostName: hostName}
	if !ws {
		conn, err := goamqp.Dial(ctx, "amqps://"+f.addr, opts)
		require.NoError(t, err)
		return conn
	}
	hc := f.httpClient()
	defer hc.CloseIdleConnections()
	wc, _, err := websocket.Dial(ctx, "wss://"+f.addr+"/$iothub/websocket", &websocket.DialOptions{HTTPClient: hc, Subprotocols: []string{"AMQPWSB10"}})
	require.NoError(t, err)
	conn, err := goamqp.NewConn(ctx, websocket.NetConn(context.Background(), wc, websocket.MessageBinary), &goamqp.ConnOptions{HostName: hostName})
	require.NoError(t, err)
	return conn
}

func putToken(ctx context.Context, t *testing.T, sess *goamqp.Session, audience, tok string) int {
	t.Helper()
	s, err := sess.NewSender(ctx, "$cbs", nil)
	require.NoError(t, err)
	defer s.Close(ctx)
	r, err := sess.NewReceiver(ctx, "$cbs", &goamqp.ReceiverOptions{Credit: 10})
	require.NoError(t, err)
	defer r.Close(ctx)
	to, reply := "$cbs", "cbs"
	msg := &goamqp.Message{
		Properties:            &goamqp.MessageProperties{MessageID: "put-1", To: &to, ReplyTo: &reply},
		ApplicationProperties: map[string]any{"operation": "put-token", "type": "servicebus.windows.net:sastoken", "name": audience},
		Value:                 tok,
	}
	require.NoError(t, s.Send(ctx, msg, nil))
	resp, err := r.Receive(ctx, nil)
	require.NoError(t, err)
	_ = r.AcceptMessage(ctx, resp)
	switch v := resp.ApplicationProperties["status-code"].(type) {
	case int32:
		return int(v)
	case int64:
		return int(v)
	}
	return -1
}

// dialWith opens one transport connection presenting token as id, without
// the device client (which would refuse an expired token itself).
func (f *fixture) dialWith(tp tport, id auth.Identity, token string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := tp.newT(0).Dial(ctx, transport.Config{
		Identity: id, Address: f.addr, Token: token, TLSConfig: f.tlsConfig(),
		ProductInfo: "reliability", Logger: slog.New(slog.DiscardHandler), Methods: func(*transport.MethodRequest) {},
	})
	if err != nil {
		return err
	}
	// A connection is only useful once it carries methods.
	err = c.SubscribeMethods(ctx)
	c.Close()
	return err
}

// Device tokens that are expired, for another audience, signed with a
// wrong or rotated key, or signed by a policy without DeviceConnect are
// refused on every transport; the valid ones (positive controls) pass.
func TestDeviceTokensRefused(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tp tport) {
		f := newFixture(t, nil)
		keyA := f.addDevice("devA")
		keyB := f.addDevice("devB")
		f.addDevice("devA/mod1")
		idA, idM := identity("devA"), identity("devA/mod1")
		hour := time.Now().Add(time.Hour)
		sign := func(resource, keyName, key string, exp time.Time) string {
			s, err := auth.SignSAS(resource, keyName, key, exp)
			require.NoError(t, err)
			return s
		}
		for _, tc := range []struct {
			name  string
			id    auth.Identity
			token string
			ok    bool
		}{
			{"valid (control)", idA, sign(idA.Resource(), "", keyA, hour), true},
			{"device policy (control)", idA, sign(hostName, "device", f.policyKey("device"), hour), true},
			{"expired (beyond the 5 min clock skew)", idA, sign(idA.Resource(), "", keyA, time.Now().Add(-hubauth.MaxClockSkew-time.Minute)), false},
			{"another device's token", idA, sign(identity("devB").Resource(), "", keyB, hour), false},
			{"another device's audience, own key", idA, sign(identity("devB").Resource(), "", keyA, hour), false},
			{"another hub's audience", idA, sign("otherhub.azure-devices.net/devices/devA", "", keyA, hour), false},
			{"wrong key", idA, sign(idA.Resource(), "", testkey.New(), hour), false},
			{"device token for its module", idM, sign(idA.Resource(), "", keyA, hour), false},
			{"device key for its module", idM, sign(idM.Resource(), "", keyA, hour), false},
			{"registryRead policy", idA, sign(hostName, "registryRead", f.policyKey("registryRead"), hour), false},
			{"service policy", idA, sign(hostName, "service", f.policyKey("service"), hour), false},
			{"unknown policy", idA, sign(hostName, "nosuch", keyA, hour), false},
			{"not a token", idA, "SharedAccessSignature sr=localhost%2Fdevices%2FdevA&sig=AAAA&se=99999999999", false},
		} {
			err := f.dialWith(tp, tc.id, tc.token)
			if tc.ok {
				assert.NoError(t, err, "%s: refused", tc.name)
			} else {
				assert.ErrorIs(t, err, transport.ErrNotAuthorized, tc.name)
			}
		}

		// Rotating the keys drops the live connection; the old key is
		// refused from then on, and the client reports that it gave up.
		d := f.connect(t, "devA", tp, nil)
		d.status.WaitFor(t, device.ConnectionStateConnected)
		oldTok := sign(idA.Resource(), "", keyA, hour)
		newKey := testkey.New()
		_, herr := f.engine().PutDevice("devA", engine.Device{Authentication: engine.Authentication{Type: engine.AuthSAS,
			SymmetricKey: engine.SymmetricKey{PrimaryKey: &newKey, SecondaryKey: &newKey}}}, "*")
		require.Nil(t, herr, "rotating devA's keys")
		s := d.status.WaitFor(t, device.ConnectionStateDisconnected)
		require.ErrorIs(t, s.Err, transport.ErrNotAuthorized, "what the client reported after the key rotation")
		require.ErrorIs(t, f.dialWith(tp, idA, oldTok), transport.ErrNotAuthorized, "token of the rotated key")
		require.NoError(t, f.dialWith(tp, idA, sign(idA.Resource(), "", newKey, hour)), "token of the new key")
	})
}

// Service API requests with tokens that are expired, for another audience,
// signed with a wrong key, or from a policy without ServiceConnect are
// refused with 401, and the device never sees the call.
func TestServiceTokensRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	f.addDevice("dev1")
	d := f.connect(t, "dev1", transports[0], nil)
	d.status.WaitFor(t, device.ConnectionStateConnected)
	hour := time.Now().Add(time.Hour)
	sign := func(resource, keyName, key string, exp time.Time) string {
		s, err := auth.SignSAS(resource, keyName, key, exp)
		require.NoError(t, err)
		return s
	}
	owner := f.ownerKey
	hc := f.httpClient()
	defer hc.CloseIdleConnections()
	post := func(authz string) (int, string) {
		req, err := http.NewRequest("POST", "https://"+f.addr+"/twins/dev1/methods?api-version=2021-04-12",
			strings.NewReader(`{"methodName":"echo","payload":"svc","responseTimeoutInSeconds":10}`))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := hc.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		name, authz string
		want        int
	}{
		{"iothubowner (control)", sign(hostName, "iothubowner", owner, hour), 200},
		{"service policy (control)", sign(hostName, "service", f.policyKey("service"), hour), 200},
		{"no header", "", 401},
		{"expired (beyond the 5 min clock skew)", sign(hostName, "iothubowner", owner, time.Now().Add(-hubauth.MaxClockSkew-time.Minute)), 401},
		{"another hub", sign("otherhub.azure-devices.net", "iothubowner", owner, hour), 401},
		{"another path", sign(hostName+"/devices/dev2", "iothubowner", owner, hour), 401},
		{"wrong key", sign(hostName, "iothubowner", testkey.New(), hour), 401},
		{"device policy", sign(hostName, "device", f.policyKey("device"), hour), 401},
		{"registryRead policy", sign(hostName, "registryRead", f.policyKey("registryRead"), hour), 401},
		{"registryReadWrite policy", sign(hostName, "registryReadWrite", f.policyKey("registryReadWrite"), hour), 401},
		{"device key", sign(identity("dev1").Resource(), "", f.key("dev1"), hour), 401},
		{"unknown bearer", "Bearer abc.def", 401},
	} {
		before := d.executions(`"svc"`)
		code, body := post(tc.authz)
		assert.Equal(t, tc.want, code, "%s: %s", tc.name, body)
		wantRuns := 0
		if tc.want == 200 {
			wantRuns = 1
		}
		assert.Equal(t, wantRuns, d.executions(`"svc"`)-before, "%s: the device's runs of the call", tc.name)
	}
	// The SDK's service client maps the refusal to ErrUnauthorized.
	for _, p := range []string{"device", "registryRead"} {
		svc := f.serviceClient(t, f.serviceConnString(p, f.policyKey(p)), f.svcRetryNone())
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err := invokeWith(ctx, svc, "dev1", "echo", nil, 5*time.Second, 0)
		cancel()
		assert.ErrorIs(t, err, service.ErrUnauthorized, "policy %s", p)
	}
}

// A disabled device is dropped, cannot connect with any valid token, and
// its calls fail with 404001; enabled again, it connects.
func TestDisabledDevice(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tp tport) {
		f := newFixture(t, nil)
		key := f.addDevice("dev1")
		d := f.connect(t, "dev1", tp, nil)
		d.status.WaitFor(t, device.ConnectionStateConnected)
		setStatus := func(status string) {
			k := key
			_, herr := f.engine().PutDevice("dev1", engine.Device{Status: status, Authentication: engine.Authentication{Type: engine.AuthSAS,
				SymmetricKey: engine.SymmetricKey{PrimaryKey: &k, SecondaryKey: &k}}}, "*")
			require.Nil(t, herr, "setting dev1's status to %s", status)
		}
		setStatus("disabled")
		s := d.status.WaitFor(t, device.ConnectionStateDisconnected)
		require.ErrorIs(t, s.Err, transport.ErrNotAuthorized, "what the disabled device's client reported")
		tok, err := auth.SignSAS(identity("dev1").Resource(), "", key, time.Now().Add(time.Hour))
		require.NoError(t, err)
		require.ErrorIs(t, f.dialWith(tp, identity("dev1"), tok), transport.ErrNotAuthorized, "disabled device connected")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err = f.invoke(ctx, "dev1", "echo", nil, 5*time.Second, 0)
		require.ErrorIs(t, err, service.ErrDeviceNotFound, "call to a disabled device: want 404001")
		setStatus("enabled")
		d2 := f.connect(t, "dev1", tp, nil)
		f.mustEcho(t, d2, "enabled again")
	})
}

// The hub refuses TLS below 1.2 on its single port (which serves every
// protocol), and a device client limited to TLS 1.1 never connects.
func TestTLSBelow12Refused(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	f.addDevice("dev1")
	for _, v := range []struct {
		name string
		ver  uint16
		ok   bool
	}{{"TLS 1.0", tls.VersionTLS10, false}, {"TLS 1.1", tls.VersionTLS11, false}, {"TLS 1.2", tls.VersionTLS12, true}, {"TLS 1.3", tls.VersionTLS13, true}} {
		conf := &tls.Config{RootCAs: f.ca.Pool(), MinVersion: v.ver, MaxVersion: v.ver, ServerName: "localhost"}
		c, err := tls.Dial("tcp", f.addr, conf)
		if err == nil {
			c.Close()
		}
		if v.ok {
			assert.NoError(t, err, "%s: handshake", v.name)
		} else {
			assert.Error(t, err, "%s: handshake", v.name)
		}
	}
	for _, tp := range transports {
		c, err := device.NewClientFromConnectionString(f.connString("dev1", false), &device.ClientOptions{
			Transport: tp.newT(0),
			TLSConfig: &tls.Config{RootCAs: f.ca.Pool(), MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11},
			Retry:     iothub.RetryOptions{RetryDelay: 10 * time.Millisecond, MaxRetryDelay: 20 * time.Millisecond, MaxRetries: 2},
		})
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err = c.Connect(ctx)
		cancel()
		c.Close(context.Background())
		assert.Error(t, err, "%s: a TLS 1.1 client connected", tp.name)
	}
}

func (f *fixture) svcRetryNone() policy.RetryOptions { return policy.RetryOptions{MaxRetries: -1} }
