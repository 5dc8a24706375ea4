package mqttd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iothub-go/iothub/internal/testutil/pkitest"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

const (
	testHost   = "test-hub.azure-devices.net"
	apiVersion = "2021-04-12"
	waitLong   = 15 * time.Second // generous deadline for events that must happen
)

// fixture is an engine plus the MQTT endpoint behind a TLS listener on
// 127.0.0.1, with a throw-away CA.
type fixture struct {
	tb   testing.TB
	e    *engine.Engine
	srv  *Server
	ln   net.Listener
	addr string
	pool *x509.CertPool // trusts the server certificate
	wg   sync.WaitGroup
}

func testLogger() *slog.Logger {
	if os.Getenv("MQTTD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

func newFixture(tb testing.TB, configure ...func(*Server)) *fixture {
	tb.Helper()
	e, err := engine.New(engine.Config{HostName: testHost, Logger: testLogger()})
	require.NoError(tb, err)
	srv, err := New(e, testLogger())
	require.NoError(tb, err)
	for _, c := range configure {
		c(srv)
	}
	serverCert, pool := pkitest.ServerCert(tb)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	f := &fixture{tb: tb, e: e, srv: srv, ln: ln, addr: ln.Addr().String(), pool: pool}
	conf := &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.RequestClientCert,
		MinVersion:   tls.VersionTLS12,
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				tc := tls.Server(c, conf)
				_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
				if err := tc.Handshake(); err != nil {
					c.Close()
					return
				}
				_ = tc.SetDeadline(time.Time{})
				state := tc.ConnectionState()
				_ = srv.ServeConn(tc, ConnInfo{Protocol: "mqtt", PeerCertificates: state.PeerCertificates})
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		e.Close()
		assert.NoError(tb, srv.Close())
		f.wg.Wait()
	})
	return f
}

func (f *fixture) clientTLS() *tls.Config {
	return &tls.Config{RootCAs: f.pool, MinVersion: tls.VersionTLS12}
}

// addDevice registers a SAS device and returns its primary key.
func (f *fixture) addDevice(id string) string {
	f.tb.Helper()
	d, herr := f.e.PutDevice(id, engine.Device{}, "")
	require.Nil(f.tb, herr)
	return *d.Authentication.SymmetricKey.PrimaryKey
}

// addModule registers a SAS module and returns its primary key.
func (f *fixture) addModule(deviceID, moduleID string) string {
	f.tb.Helper()
	m, herr := f.e.PutModule(deviceID, moduleID, engine.Module{}, "")
	require.Nil(f.tb, herr)
	return *m.Authentication.SymmetricKey.PrimaryKey
}

func ident(clientID string) auth.Identity {
	dev, mod, _ := strings.Cut(clientID, "/")
	return auth.Identity{HostName: testHost, DeviceID: dev, ModuleID: mod}
}

// token signs a SAS token for clientID's resource with key.
func token(tb testing.TB, clientID, key string, expiry time.Time) string {
	tb.Helper()
	tok, err := auth.SignSAS(ident(clientID).Resource(), "", key, expiry)
	require.NoError(tb, err)
	return tok
}

func username(clientID string) string {
	return testHost + "/" + clientID + "/?api-version=" + apiVersion +
		"&DeviceClientType=" + url.QueryEscape("iothub-go-test/1.0 (go)")
}

// msg is a PUBLISH a test device received.
type msg struct {
	topic   string
	payload []byte
	qos     byte
	retain  bool
	id      uint16
	dup     bool
	ack     func() // sends the PUBACK when the device's auto-ack is off
}

// device is a paho client with its events as channels.
type device struct {
	c    paho.Client
	lost chan error
	msgs chan msg
}

type connOpts struct {
	clientID, user, pass string
	hasUser, hasPass     bool
	clean                bool
	cert                 *tls.Certificate
	will                 string // will topic; "" for none
	protocolVersion      uint
	url                  string // default ssl://{addr}
	tls                  *tls.Config
	ordered              bool // deliver messages in order, on paho's router goroutine
	manualAck            bool // PUBACK only when the test calls msg.ack
}

// sasOpts are the options of a device connecting with a fresh SAS token.
func (f *fixture) sasOpts(clientID, key string) connOpts {
	return connOpts{
		clientID: clientID, user: username(clientID), hasUser: true,
		pass: token(f.tb, clientID, key, time.Now().Add(time.Hour)), hasPass: true,
		clean: true,
	}
}

// dial connects a paho client; it returns the CONNECT outcome (the client
// is disconnected again at cleanup).
func (f *fixture) dial(o connOpts) (*device, byte, error) {
	f.tb.Helper()
	d := &device{lost: make(chan error, 1), msgs: make(chan msg, 64)}
	po := paho.NewClientOptions()
	if o.url == "" {
		o.url = "ssl://" + f.addr
	}
	po.AddBroker(o.url)
	po.SetClientID(o.clientID)
	if o.hasUser {
		po.SetUsername(o.user)
	}
	if o.hasPass {
		po.SetPassword(o.pass)
	}
	tc := o.tls
	if tc == nil {
		tc = f.clientTLS()
	}
	if o.cert != nil {
		tc.Certificates = []tls.Certificate{*o.cert}
	}
	po.SetTLSConfig(tc)
	pv := o.protocolVersion
	if pv == 0 {
		pv = 4
	}
	po.SetProtocolVersion(pv)
	po.SetCleanSession(o.clean)
	if o.will != "" {
		po.SetWill(o.will, "gone", 1, true)
	}
	po.SetAutoReconnect(false)
	po.SetConnectRetry(false)
	po.SetOrderMatters(o.ordered)
	po.SetAutoAckDisabled(o.manualAck)
	po.SetKeepAlive(60 * time.Second)
	po.SetConnectTimeout(10 * time.Second)
	po.SetWriteTimeout(10 * time.Second)
	po.SetConnectionLostHandler(func(_ paho.Client, err error) {
		select {
		case d.lost <- err:
		default:
		}
	})
	po.SetDefaultPublishHandler(d.handler)
	d.c = paho.NewClient(po)
	f.tb.Cleanup(func() { d.c.Disconnect(50) })
	tok := d.c.Connect()
	require.True(f.tb, tok.WaitTimeout(waitLong), "CONNECT did not complete")
	return d, tok.(*paho.ConnectToken).ReturnCode(), tok.Error()
}

// connect dials and fails the test unless the CONNECT is accepted.
func (f *fixture) connect(o connOpts) *device {
	f.tb.Helper()
	d, code, err := f.dial(o)
	require.NoError(f.tb, err, "connect %s: code %d", o.clientID, code)
	require.Equal(f.tb, byte(0), code, "connect %s: CONNACK code", o.clientID)
	return d
}

func (d *device) handler(_ paho.Client, m paho.Message) {
	d.msgs <- msg{topic: m.Topic(), payload: append([]byte(nil), m.Payload()...), qos: m.Qos(), retain: m.Retained(),
		id: m.MessageID(), dup: m.Duplicate(), ack: m.Ack}
}

// subscribe subscribes and returns the granted QoS.
func (d *device) subscribe(tb testing.TB, filter string, qos byte) byte {
	tb.Helper()
	tok := d.c.Subscribe(filter, qos, d.handler)
	require.True(tb, tok.WaitTimeout(waitLong), "SUBSCRIBE %s did not complete", filter)
	require.NoError(tb, tok.Error(), "SUBSCRIBE %s", filter)
	return tok.(*paho.SubscribeToken).Result()[filter]
}

// publish publishes and waits for the token (PUBACK for QoS 1).
func (d *device) publish(tb testing.TB, topic string, qos byte, payload []byte) error {
	tb.Helper()
	tok := d.c.Publish(topic, qos, false, payload)
	if !tok.WaitTimeout(waitLong) {
		return errors.New("publish did not complete")
	}
	return tok.Error()
}

// next returns the next message, failing after waitLong.
func (d *device) next(tb testing.TB) msg {
	tb.Helper()
	select {
	case m := <-d.msgs:
		return m
	case <-time.After(waitLong):
		require.FailNow(tb, "no message arrived")
		return msg{}
	}
}

// none fails if a message arrives within d.
func (d *device) none(tb testing.TB, wait time.Duration) {
	tb.Helper()
	select {
	case m := <-d.msgs:
		require.FailNow(tb, "unexpected message", "on %s", m.topic)
	case <-time.After(wait):
	}
}

// waitLost waits for the connection-lost handler.
func (d *device) waitLost(tb testing.TB) {
	tb.Helper()
	select {
	case <-d.lost:
	case <-time.After(waitLong):
		require.FailNow(tb, "the connection was not closed")
	}
}

// stillUp fails if the connection was lost.
func (d *device) stillUp(tb testing.TB) {
	tb.Helper()
	select {
	case err := <-d.lost:
		require.FailNow(tb, "connection lost", "%v", err)
	default:
	}
	require.True(tb, d.c.IsConnectionOpen(), "connection is not open")
}

type invokeResult struct {
	res engine.MethodResult
	err *engine.Error
}

// invoke starts a method call and returns its outcome channel.
func (f *fixture) invoke(clientID, name string, payload []byte, connectTimeout time.Duration) <-chan invokeResult {
	ch := make(chan invokeResult, 1)
	go func() {
		res, herr := f.e.Invoke(context.Background(), ident(clientID), engine.MethodCall{
			Name: name, Payload: payload, ResponseTimeout: 10 * time.Second, ConnectTimeout: connectTimeout,
		})
		ch <- invokeResult{res, herr}
	}()
	return ch
}

func waitInvoke(tb testing.TB, ch <-chan invokeResult) invokeResult {
	tb.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(waitLong + 10*time.Second):
		require.FailNow(tb, "the method call did not finish")
		return invokeResult{}
	}
}

// requireCode checks that a method call failed with the hub error code.
func requireCode(tb testing.TB, r invokeResult, code int, msgAndArgs ...any) {
	tb.Helper()
	require.NotNil(tb, r.err, msgAndArgs...)
	require.Equal(tb, code, r.err.Code, msgAndArgs...)
}

// ridOf checks that m is a method request for name and returns its rid.
func ridOf(tb testing.TB, m msg, name string) string {
	tb.Helper()
	rest, ok := strings.CutPrefix(m.topic, "$iothub/methods/POST/"+name+"/?$rid=")
	require.True(tb, ok, "request topic = %q, want $iothub/methods/POST/%s/?$rid={rid}", m.topic, name)
	require.NotEmpty(tb, rest, "request topic = %q, want $iothub/methods/POST/%s/?$rid={rid}", m.topic, name)
	require.Equal(tb, byte(0), m.qos, "request qos")
	require.False(tb, m.retain, "request retain")
	return rest
}

// Raw MQTT, for what paho cannot send and for the connection benchmark.

func mqttString(s string) []byte {
	return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...)
}

func remainingLength(n int) []byte {
	var out []byte
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		out = append(out, b)
		if n == 0 {
			return out
		}
	}
}

// connectPacket encodes a CONNECT with the given protocol level (5 gets
// an empty properties block).
func connectPacket(level byte, clientID, user, pass string) []byte {
	name := "MQTT"
	if level == 3 {
		name = "MQIsdp"
	}
	body := mqttString(name)
	flags := byte(0x02) // clean session
	if user != "" {
		flags |= 0x80
	}
	if pass != "" {
		flags |= 0x40
	}
	body = append(body, level, flags, 0, 60)
	if level == 5 {
		body = append(body, 0)
	}
	body = append(body, mqttString(clientID)...)
	if user != "" {
		body = append(body, mqttString(user)...)
	}
	if pass != "" {
		body = append(body, mqttString(pass)...)
	}
	return append(append([]byte{0x10}, remainingLength(len(body))...), body...)
}

func subscribePacket(id uint16, filter string, qos byte) []byte {
	body := append([]byte{byte(id >> 8), byte(id)}, mqttString(filter)...)
	body = append(body, qos)
	return append(append([]byte{0x82}, remainingLength(len(body))...), body...)
}

// rawDial opens a TLS connection to the fixture.
func (f *fixture) rawDial() *tls.Conn {
	f.tb.Helper()
	c, err := tls.Dial("tcp", f.addr, f.clientTLS())
	require.NoError(f.tb, err)
	return c
}

// readN reads exactly n bytes with a deadline.
func readN(c net.Conn, n int) ([]byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(waitLong))
	b := make([]byte, n)
	_, err := io.ReadFull(c, b)
	return b, err
}
