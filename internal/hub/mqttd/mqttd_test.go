package mqttd

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/internal/hubauth"
	"github.com/iothub-go/iothub/internal/testutil/pkitest"
	"github.com/iothub-go/iothub/internal/testutil/testkey"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// roundTrip invokes "reboot" on clientID, answers it from d and checks
// both ends. The call does not wait for the device to come online: the
// hub must count it as online and subscribed as soon as the device holds
// its SUBACK (or, for an inherited session, its CONNACK).
func roundTrip(t *testing.T, f *fixture, d *device, clientID string) {
	t.Helper()
	call := f.invoke(clientID, "reboot", []byte(`{"delay":5}`), 0)
	m := d.next(t)
	rid := ridOf(t, m, "reboot")
	require.Equal(t, `{"delay":5}`, string(m.payload), "request payload")
	require.NoError(t, d.publish(t, "$iothub/methods/res/200/?$rid="+rid, 0, []byte(`{"rebooted":true}`)))
	r := waitInvoke(t, call)
	require.Nil(t, r.err, "invoke")
	require.Equal(t, 200, r.res.Status, "invoke result status")
	require.Equal(t, `{"rebooted":true}`, string(r.res.Payload), "invoke result payload")
}

func TestMethodRoundTrip(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	d := f.connect(f.sasOpts("dev1", key))
	require.Equal(t, byte(0), d.subscribe(t, "$iothub/methods/POST/#", 0), "granted QoS")
	roundTrip(t, f, d, "dev1")

	// A call without a payload reaches the device as an empty body; an empty
	// response body comes back empty.
	call := f.invoke("dev1", "ping", nil, 0)
	m := d.next(t)
	rid := ridOf(t, m, "ping")
	require.Empty(t, m.payload, "request payload")
	require.NoError(t, d.publish(t, "$iothub/methods/res/404/?$rid="+rid, 0, nil))
	r := waitInvoke(t, call)
	require.Nil(t, r.err, "invoke")
	assert.Equal(t, 404, r.res.Status, "invoke status")
	assert.Empty(t, r.res.Payload, "invoke payload")

	calls := f.e.Calls()
	require.Len(t, calls, 2, "call records")
	assert.Equal(t, "mqtt", calls[0].Protocol, "call record protocol")
}

func TestConnectRefused(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	otherKey := f.addDevice("dev2")
	_, herr := f.e.PutDevice("off", engine.Device{Status: "disabled"}, "")
	require.Nil(t, herr)
	offKey := func() string {
		d, _ := f.e.GetDevice("off")
		return *d.Authentication.SymmetricKey.PrimaryKey
	}()
	hour := time.Now().Add(time.Hour)
	good := token(t, "dev1", key, hour)
	tampered := strings.Replace(good, "sig=", "sig=A", 1)

	cases := []struct {
		name string
		o    connOpts
		want byte
	}{
		{"wrong key", connOpts{clientID: "dev1", user: username("dev1"), hasUser: true,
			pass: token(t, "dev1", otherKey, hour), hasPass: true}, 5},
		{"expired token", connOpts{clientID: "dev1", user: username("dev1"), hasUser: true,
			pass: token(t, "dev1", key, time.Now().Add(-10*time.Minute)), hasPass: true}, 5},
		{"tampered token", connOpts{clientID: "dev1", user: username("dev1"), hasUser: true,
			pass: tampered, hasPass: true}, 5},
		{"not a token", connOpts{clientID: "dev1", user: username("dev1"), hasUser: true,
			pass: "hunter2", hasPass: true}, 5},
		{"unknown device", connOpts{clientID: "ghost", user: username("ghost"), hasUser: true,
			pass: token(t, "ghost", key, hour), hasPass: true}, 5},
		{"disabled device", connOpts{clientID: "off", user: username("off"), hasUser: true,
			pass: token(t, "off", offKey, hour), hasPass: true}, 5},
		{"token for another device", connOpts{clientID: "dev1", user: username("dev1"), hasUser: true,
			pass: token(t, "dev2", otherKey, hour), hasPass: true}, 5},
		{"no password and no certificate", connOpts{clientID: "dev1", user: username("dev1"), hasUser: true}, 5},
		{"no username", connOpts{clientID: "dev1", pass: good, hasPass: true}, 5},
		{"username for another hub", connOpts{clientID: "dev1", hasUser: true,
			user: "other-hub.azure-devices.net/dev1/?api-version=" + apiVersion, pass: good, hasPass: true}, 5},
		{"username for another identity", connOpts{clientID: "dev1", hasUser: true,
			user: testHost + "/dev2/?api-version=" + apiVersion, pass: good, hasPass: true}, 5},
		{"username without api-version", connOpts{clientID: "dev1", hasUser: true,
			user: testHost + "/dev1/?DeviceClientType=x", pass: good, hasPass: true}, 5},
		{"username with empty api-version", connOpts{clientID: "dev1", hasUser: true,
			user: testHost + "/dev1/?api-version=&DeviceClientType=x", pass: good, hasPass: true}, 5},
		{"username without query", connOpts{clientID: "dev1", hasUser: true,
			user: testHost + "/dev1", pass: good, hasPass: true}, 5},
		{"username is only the host", connOpts{clientID: "dev1", hasUser: true,
			user: testHost, pass: good, hasPass: true}, 5},
		{"malformed client id", connOpts{clientID: "dev 1", user: testHost + "/dev 1/?api-version=" + apiVersion,
			hasUser: true, pass: good, hasPass: true}, 2},
		{"client id with three segments", connOpts{clientID: "dev1/m/x", user: testHost + "/dev1/m/x/?api-version=" + apiVersion,
			hasUser: true, pass: good, hasPass: true}, 2},
		{"empty client id", connOpts{clientID: "", user: username("dev1"), hasUser: true,
			pass: good, hasPass: true}, 2},
		{"MQTT 3.1", connOpts{clientID: "dev1", user: username("dev1"), hasUser: true,
			pass: good, hasPass: true, protocolVersion: 3}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.clean = true
			_, code, err := f.dial(tc.o)
			require.Error(t, err, "CONNACK %d, want %d", code, tc.want)
			assert.Equal(t, tc.want, code, "CONNACK (%v)", err)
		})
	}

	// The accepted username forms.
	accepted := []struct{ name, user string }{
		{"documented minimum", testHost + "/dev1/?api-version=" + apiVersion},
		{"legacy form without ?", testHost + "/dev1/api-version=2016-11-14&DeviceClientType=c%2Fsdk"},
		{"host in other case, model id, unknown params", strings.ToUpper(testHost) +
			"/dev1/?api-version=" + apiVersion + "&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1&foo=bar"},
	}
	for _, tc := range accepted {
		t.Run(tc.name, func(t *testing.T) {
			o := f.sasOpts("dev1", key)
			o.user = tc.user
			d := f.connect(o)
			d.c.Disconnect(50)
		})
	}
}

// TestConnectMQTT5Refused: an MQTT 5 CONNECT gets a 3.1.1 CONNACK with
// return code 1 and the connection is closed.
func TestConnectMQTT5Refused(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	c := f.rawDial()
	defer c.Close()
	_, err := c.Write(connectPacket(5, "dev1", username("dev1"), token(t, "dev1", key, time.Now().Add(time.Hour))))
	require.NoError(t, err)
	b, err := readN(c, 4)
	require.NoError(t, err)
	require.Equal(t, []byte{0x20, 0x02, 0x00, 0x01}, b, "CONNACK")
	_, err = readN(c, 1)
	assert.Error(t, err, "connection still open after CONNACK 1")
}

func TestQoS2PublishCloses(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	d := f.connect(f.sasOpts("dev1", key))
	d.subscribe(t, "$iothub/methods/POST/#", 1)
	d.c.Publish("devices/dev1/messages/events/", 2, false, []byte("x"))
	d.waitLost(t)
	r := waitInvoke(t, f.invoke("dev1", "m", nil, 0))
	requireCode(t, r, engine.CodeDeviceNotOnline, "invoke after close = %v, want 404103", r.err)
}

func TestForbiddenPublishCloses(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	f.addDevice("dev2")
	for _, topic := range []string{
		"devices/dev2/messages/events/",
		"devices/dev1/modules/m1/messages/events/",
		"$iothub/methods/POST/reboot/?$rid=1",
		"$iothub/twin/GET?$rid=1", // twin_test.go has the rest of $iothub/twin/
		"some/topic",
	} {
		t.Run(topic, func(t *testing.T) {
			d := f.connect(f.sasOpts("dev1", key))
			d.c.Publish(topic, 0, false, []byte("{}"))
			d.waitLost(t)
		})
	}
}

func TestForbiddenSubscriptionCloses(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	f.addDevice("dev2")
	for _, filter := range []string{
		"devices/dev2/messages/devicebound/#",
		"#",
		"$iothub/methods/#",
		"$iothub/methods/POST/+",
		"$iothub/methods/res/#",
		"devices/dev1/messages/events/#",
	} {
		t.Run(filter, func(t *testing.T) {
			d := f.connect(f.sasOpts("dev1", key))
			d.c.Subscribe(filter, 0, nil)
			d.waitLost(t)
		})
	}
}

func TestSubscribeGrants(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	d := f.connect(f.sasOpts("dev1", key))
	for _, tc := range []struct {
		filter    string
		qos, want byte
	}{
		{"$iothub/methods/POST/#", 2, 1},
		{"$iothub/twin/res/#", 0, 0},
		{"$iothub/twin/PATCH/properties/desired/#", 1, 1},
		{"devices/dev1/messages/devicebound/#", 2, 1},
	} {
		assert.Equal(t, tc.want, d.subscribe(t, tc.filter, tc.qos), "SUBSCRIBE %s QoS %d: granted QoS", tc.filter, tc.qos)
	}
	roundTrip(t, f, d, "dev1")
	d.stillUp(t)
}

func TestUnsubscribe(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	d := f.connect(f.sasOpts("dev1", key))
	d.subscribe(t, "$iothub/methods/POST/#", 0)
	tok := d.c.Unsubscribe("$iothub/methods/POST/#")
	require.True(t, tok.WaitTimeout(waitLong), "UNSUBSCRIBE did not complete")
	require.NoError(t, tok.Error(), "UNSUBSCRIBE")
	r := waitInvoke(t, f.invoke("dev1", "m", nil, 0))
	requireCode(t, r, engine.CodeDeviceNotOnline, "invoke after UNSUBSCRIBE = %v, want 404103", r.err)
	d.none(t, 100*time.Millisecond)
	d.stillUp(t)
}

func TestSecondConnectionKicksFirst(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	first := f.connect(f.sasOpts("dev1", key))
	first.subscribe(t, "$iothub/methods/POST/#", 1)
	second := f.connect(f.sasOpts("dev1", key))
	first.waitLost(t)
	second.subscribe(t, "$iothub/methods/POST/#", 1)
	roundTrip(t, f, second, "dev1")
	first.none(t, 50*time.Millisecond)
}

func TestPersistentSession(t *testing.T) {
	t.Run("clean=false reconnect keeps the subscription", func(t *testing.T) {
		f := newFixture(t)
		key := f.addDevice("dev1")
		o := f.sasOpts("dev1", key)
		o.clean = false
		d := f.connect(o)
		d.subscribe(t, "$iothub/methods/POST/#", 1)
		d.c.Disconnect(50)

		o.pass = token(t, "dev1", key, time.Now().Add(2*time.Hour)) // a renewed token
		d2 := f.connect(o)
		roundTrip(t, f, d2, "dev1") // no SUBSCRIBE on this connection
	})
	t.Run("clean=false takeover keeps the subscription", func(t *testing.T) {
		f := newFixture(t)
		key := f.addDevice("dev1")
		o := f.sasOpts("dev1", key)
		o.clean = false
		d := f.connect(o)
		d.subscribe(t, "$iothub/methods/POST/#", 1)
		d2 := f.connect(o)
		d.waitLost(t)
		roundTrip(t, f, d2, "dev1")
	})
	t.Run("clean=true reconnect loses it", func(t *testing.T) {
		f := newFixture(t)
		key := f.addDevice("dev1")
		o := f.sasOpts("dev1", key)
		o.clean = false
		d := f.connect(o)
		d.subscribe(t, "$iothub/methods/POST/#", 1)
		d.c.Disconnect(50)

		o.clean = true
		d2 := f.connect(o)
		r := waitInvoke(t, f.invoke("dev1", "m", nil, time.Second))
		requireCode(t, r, engine.CodeDeviceNotOnline, "invoke = %v, want 404103", r.err)
		d2.none(t, 50*time.Millisecond)
	})
}

func TestTokenExpiryDropsConnection(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	o := f.sasOpts("dev1", key)
	// se is in the past: the token holds for the five minutes of skew
	// that every endpoint allows, and the connection is dropped then.
	o.pass = token(t, "dev1", key, time.Now().Add(-hubauth.MaxClockSkew+2*time.Second))
	d := f.connect(o)
	d.subscribe(t, "$iothub/methods/POST/#", 0)
	d.waitLost(t) // the engine closes the connection when the token expires
	r := waitInvoke(t, f.invoke("dev1", "m", nil, 0))
	requireCode(t, r, engine.CodeDeviceNotOnline, "invoke after expiry = %v, want 404103", r.err)
}

func TestResponses(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	d := f.connect(f.sasOpts("dev1", key))
	d.subscribe(t, "$iothub/methods/POST/#", 1)

	// QoS 1 response: PUBACKed and delivered.
	call := f.invoke("dev1", "get", []byte(`"x"`), 0)
	rid := ridOf(t, d.next(t), "get")
	require.NoError(t, d.publish(t, "$iothub/methods/res/201/?$rid="+rid, 1, []byte(`[1,2]`)), "QoS 1 response")
	r := waitInvoke(t, call)
	require.Nil(t, r.err, "invoke")
	assert.Equal(t, 201, r.res.Status, "invoke status")
	assert.Equal(t, `[1,2]`, string(r.res.Payload), "invoke payload")

	// Unknown rid and malformed topics: PUBACKed, dropped, connection up.
	for _, topic := range []string{
		"$iothub/methods/res/200/?$rid=fffffff",
		"$iothub/methods/res/abc/?$rid=1",
		"$iothub/methods/res/200/?rid=1",
		"$iothub/methods/res/200/",
		"$iothub/methods/res/200?$rid=1",
	} {
		require.NoError(t, d.publish(t, topic, 1, []byte(`{}`)), "%s", topic)
	}
	d.stillUp(t)

	// Telemetry is accepted (and dropped for now).
	for _, topic := range []string{"devices/dev1/messages/events/", "devices/dev1/messages/events/a=b&%24.ct=application%2Fjson"} {
		require.NoError(t, d.publish(t, topic, 1, []byte(`{"t":1}`)), "%s", topic)
	}
	d.stillUp(t)
	roundTrip(t, f, d, "dev1")
}

func TestPacketTooLarge(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	d := f.connect(f.sasOpts("dev1", key))
	require.NoError(t, d.publish(t, "devices/dev1/messages/events/", 1, make([]byte, 200*1024)), "200 KB telemetry")
	d.stillUp(t)
	d.c.Publish("devices/dev1/messages/events/", 1, false, make([]byte, MaxPacketSize))
	d.waitLost(t)
}

func TestCannotAnswerAnotherDevicesRequest(t *testing.T) {
	f := newFixture(t)
	keyA := f.addDevice("devA")
	keyB := f.addDevice("devB")
	a := f.connect(f.sasOpts("devA", keyA))
	b := f.connect(f.sasOpts("devB", keyB))
	a.subscribe(t, "$iothub/methods/POST/#", 1)
	b.subscribe(t, "$iothub/methods/POST/#", 1)

	call := f.invoke("devB", "open", []byte(`{}`), 0)
	rid := ridOf(t, b.next(t), "open")
	a.none(t, 50*time.Millisecond) // only devB gets devB's request

	// devA answers devB's rid: acknowledged, but the call stays open.
	require.NoError(t, a.publish(t, "$iothub/methods/res/299/?$rid="+rid, 1, []byte(`"stolen"`)))
	select {
	case r := <-call:
		require.FailNow(t, "devA completed devB's call", "%+v %v", r.res, r.err)
	case <-time.After(200 * time.Millisecond):
	}
	require.NoError(t, b.publish(t, "$iothub/methods/res/200/?$rid="+rid, 0, []byte(`"mine"`)))
	r := waitInvoke(t, call)
	require.Nil(t, r.err, "invoke")
	assert.Equal(t, 200, r.res.Status, "invoke status")
	assert.Equal(t, `"mine"`, string(r.res.Payload), "invoke payload")
	a.stillUp(t)
}

func TestX509SelfSigned(t *testing.T) {
	f := newFixture(t)
	cert := pkitest.SelfSigned(t, "certdev")
	tp := auth.ComputeThumbprints(cert.Certificate[0]).SHA256
	_, herr := f.e.PutDevice("certdev", engine.Device{Authentication: engine.Authentication{
		Type: engine.AuthSelfSigned, X509Thumbprint: engine.X509Thumbprint{PrimaryThumbprint: &tp},
	}}, "")
	require.Nil(t, herr)
	o := connOpts{clientID: "certdev", user: username("certdev"), hasUser: true, clean: true, cert: &cert}
	d := f.connect(o)
	d.subscribe(t, "$iothub/methods/POST/#", 0)
	roundTrip(t, f, d, "certdev")
	d.c.Disconnect(50)

	wrong := pkitest.SelfSigned(t, "certdev")
	o.cert = &wrong
	_, code, err := f.dial(o)
	assert.Error(t, err, "wrong certificate: CONNACK %d, want 5", code)
	assert.Equal(t, byte(5), code, "wrong certificate: CONNACK (%v)", err)
	o.cert = nil
	_, code, err = f.dial(o)
	assert.Error(t, err, "no certificate: CONNACK %d, want 5", code)
	assert.Equal(t, byte(5), code, "no certificate: CONNACK (%v)", err)
}

func TestModule(t *testing.T) {
	f := newFixture(t)
	f.addDevice("edge1")
	key := f.addModule("edge1", "mod1")
	d := f.connect(f.sasOpts("edge1/mod1", key))
	d.subscribe(t, "$iothub/methods/POST/#", 1)
	roundTrip(t, f, d, "edge1/mod1")
	require.NoError(t, d.publish(t, "devices/edge1/modules/mod1/messages/events/", 1, []byte(`{}`)))
	d.stillUp(t)

	// The device identity is a different one: not online.
	r := waitInvoke(t, f.invoke("edge1", "m", nil, 0))
	requireCode(t, r, engine.CodeDeviceNotOnline, "invoke on the device = %v, want 404103", r.err)
	// A module may not use its device's telemetry topic.
	d.c.Publish("devices/edge1/messages/events/", 0, false, []byte(`{}`))
	d.waitLost(t)
}

func TestWebSocket(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("wsdev")
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/$iothub/websocket" {
			http.NotFound(w, r)
			return
		}
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"mqtt", "MQTT"}})
		if err != nil {
			return
		}
		c.SetReadLimit(2 * MaxPacketSize)
		nc := websocket.NetConn(r.Context(), c, websocket.MessageBinary)
		_ = f.srv.ServeConn(nc, ConnInfo{Protocol: "mqtt-ws", PeerCertificates: r.TLS.PeerCertificates})
	}))
	hs.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	hs.StartTLS()
	t.Cleanup(hs.Close)
	o := f.sasOpts("wsdev", key)
	o.url = "wss://" + strings.TrimPrefix(hs.URL, "https://") + "/$iothub/websocket"
	o.tls = hs.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	d := f.connect(o)
	d.subscribe(t, "$iothub/methods/POST/#", 0)
	roundTrip(t, f, d, "wsdev")
	calls := f.e.Calls()
	require.NotEmpty(t, calls, "call records")
	assert.Equal(t, "mqtt-ws", calls[len(calls)-1].Protocol, "protocol")
	d.c.Disconnect(50)
}

func TestWill(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	o := f.sasOpts("dev1", key)
	o.will = "devices/dev1/messages/events/"
	d := f.connect(o) // accepted (and dropped, like telemetry)
	d.subscribe(t, "$iothub/methods/POST/#", 0)
	roundTrip(t, f, d, "dev1")
	d.c.Disconnect(50)

	o.will = "devices/dev2/messages/events/"
	_, _, err := f.dial(o)
	assert.Error(t, err, "CONNECT with another identity's will topic was accepted")
}

func TestConnectTimeout(t *testing.T) {
	f := newFixture(t, func(s *Server) { s.connectWait = 200 * time.Millisecond })
	c := f.rawDial()
	defer c.Close()
	_, err := readN(c, 1)
	require.Error(t, err, "read succeeded, want the hub to close a connection that sends no CONNECT")
	assert.NotErrorIs(t, err, os.ErrDeadlineExceeded, "read timed out, want the hub to close a connection that sends no CONNECT")
}

func TestMochiLogRedaction(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(mochiHandler{slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})})
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}}
	pk.Connect.Password = []byte("SharedAccessSignature sr=x&sig=secret")
	pk.Payload = []byte("payload-secret")
	log.Info("packet", "pk", pk, "packet", &pk, "n", 1)
	log.With("pk", pk).Warn("again")
	out := buf.String()
	assert.NotContains(t, out, "secret", "log leaks a secret")
	assert.Contains(t, out, "level=DEBUG msg=packet", "log")
	assert.Contains(t, out, "level=WARN msg=again", "log")
}

func TestServeConnAfterClose(t *testing.T) {
	_, err := New(nil, nil)
	require.Error(t, err, "New(nil engine) did not fail")
	e, err := engine.New(engine.Config{HostName: testHost})
	require.NoError(t, err)
	defer e.Close() // the engine runs a timer goroutine (cloud-to-device expiry)
	srv, err := New(e, nil)
	require.NoError(t, err)
	require.NoError(t, srv.Close())
	require.NoError(t, srv.Close(), "second Close")
	c1, c2 := net.Pipe()
	defer c2.Close()
	assert.ErrorIs(t, srv.ServeConn(c1, ConnInfo{}), ErrServerClosed, "ServeConn after Close")
}

// TestPersistentSessionDiesWithIdentity: a clean=false session does not
// survive the deletion of its device or a change of its keys: the device
// created again (or rekeyed) gets no methods it did not subscribe to.
func TestPersistentSessionDiesWithIdentity(t *testing.T) {
	for _, change := range []string{"deleted and created again", "keys changed"} {
		t.Run(change, func(t *testing.T) {
			f := newFixture(t)
			key := f.addDevice("dev1")
			o := f.sasOpts("dev1", key)
			o.clean = false
			d := f.connect(o)
			d.subscribe(t, "$iothub/methods/POST/#", 1)
			d.c.Disconnect(50)

			if change == "keys changed" {
				newKey := testkey.New()
				_, herr := f.e.PutDevice("dev1", engine.Device{Authentication: engine.Authentication{Type: engine.AuthSAS,
					SymmetricKey: engine.SymmetricKey{PrimaryKey: &newKey, SecondaryKey: &newKey}}}, "*")
				require.Nil(t, herr)
				key = newKey
			} else {
				require.Nil(t, f.e.DeleteDevice("dev1", "*"))
				key = f.addDevice("dev1")
			}
			o = f.sasOpts("dev1", key)
			o.clean = false
			d2 := f.connect(o)
			r := waitInvoke(t, f.invoke("dev1", "m", nil, 0))
			requireCode(t, r, engine.CodeDeviceNotOnline, "invoke = %+v, %v; want 404103: the new identity never subscribed", r.res, r.err)
			d2.none(t, 50*time.Millisecond)
		})
	}
}

// TestAbandonedSessionExpires: the session of a device that stays away
// longer than sessionExpiry is dropped.
func TestAbandonedSessionExpires(t *testing.T) {
	f := newFixture(t, func(s *Server) { s.sessionExpiry = time.Second })
	key := f.addDevice("dev1")
	key2 := f.addDevice("dev2")
	o := f.sasOpts("dev1", key)
	o.clean = false
	d := f.connect(o)
	d.subscribe(t, "$iothub/methods/POST/#", 1)
	d.c.Disconnect(50)
	// Other devices connecting make the server sweep; wait until it has
	// dropped dev1's session (mochi keeps stop times in whole seconds).
	// Not require.Eventually: f.connect must run on the test goroutine.
	deadline := time.Now().Add(30 * time.Second)
	for f.srv.hasSession("dev1") {
		if time.Now().After(deadline) {
			require.FailNow(t, "the abandoned session is still kept")
		}
		time.Sleep(200 * time.Millisecond)
		other := f.connect(f.sasOpts("dev2", key2))
		other.c.Disconnect(0)
	}
}
