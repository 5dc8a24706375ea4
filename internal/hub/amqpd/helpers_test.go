package amqpd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iothub-go/iothub/internal/testutil/pkitest"

	amqp "github.com/Azure/go-amqp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

const (
	testHost = "test-hub.azure-devices.net"
	waitLong = 15 * time.Second // generous deadline for events that must happen
)

// fixture is an engine plus the AMQP endpoint behind a TLS listener on
// 127.0.0.1, with a throw-away CA.
type fixture struct {
	tb   testing.TB
	e    *engine.Engine
	srv  *Server
	ln   net.Listener
	addr string
	pool *x509.CertPool
	wg   sync.WaitGroup

	mu      sync.Mutex
	results []error // ServeConn results, in the order connections ended
}

func testLogger() *slog.Logger {
	if os.Getenv("AMQPD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

func newFixture(tb testing.TB, configure ...func(*Server)) *fixture {
	tb.Helper()
	return newFixtureLog(tb, testLogger(), configure...)
}

func newFixtureLog(tb testing.TB, log *slog.Logger, configure ...func(*Server)) *fixture {
	tb.Helper()
	return newFixtureConfig(tb, engine.Config{HostName: testHost, Logger: log}, configure...)
}

// newFixtureConfig is newFixture with an engine configuration.
func newFixtureConfig(tb testing.TB, cfg engine.Config, configure ...func(*Server)) *fixture {
	tb.Helper()
	log := cfg.Logger
	e, err := engine.New(cfg)
	require.NoError(tb, err)
	srv, err := New(e, log)
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
				err := srv.ServeConn(tc, ConnInfo{Protocol: "amqp", PeerCertificates: tc.ConnectionState().PeerCertificates})
				f.mu.Lock()
				f.results = append(f.results, err)
				f.mu.Unlock()
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
	return &tls.Config{RootCAs: f.pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
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

// ownerToken signs a hub-scoped iothubowner token.
func (f *fixture) ownerToken(resource string, expiry time.Time) string {
	f.tb.Helper()
	p, _ := f.e.Policy("iothubowner")
	tok, err := auth.SignSAS(resource, p.Name, p.PrimaryKey, expiry)
	require.NoError(f.tb, err)
	return tok
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	tb.Cleanup(cancel)
	return ctx
}

// dialTLS opens a TLS connection, optionally with a client certificate.
func (f *fixture) dialTLS(cert *tls.Certificate) *tls.Conn {
	f.tb.Helper()
	conf := f.clientTLS()
	if cert != nil {
		conf.Certificates = []tls.Certificate{*cert}
	}
	c, err := tls.Dial("tcp", f.addr, conf)
	require.NoError(f.tb, err)
	return c
}

// connect opens a go-amqp connection over TLS.
func (f *fixture) connect(opts *amqp.ConnOptions, cert *tls.Certificate) (*amqp.Conn, error) {
	f.tb.Helper()
	if opts == nil {
		opts = &amqp.ConnOptions{}
	}
	if opts.HostName == "" {
		opts.HostName = "localhost"
	}
	return amqp.NewConn(ctxT(f.tb), f.dialTLS(cert), opts)
}

func (f *fixture) mustConnect(opts *amqp.ConnOptions, cert *tls.Certificate) *amqp.Conn {
	f.tb.Helper()
	c, err := f.connect(opts, cert)
	require.NoError(f.tb, err, "amqp connect")
	f.tb.Cleanup(func() { c.Close() })
	return c
}

func newSession(tb testing.TB, c *amqp.Conn) *amqp.Session {
	tb.Helper()
	s, err := c.NewSession(ctxT(tb), nil)
	require.NoError(tb, err, "begin")
	return s
}

// cbs is a client's $cbs link pair.
type cbs struct {
	snd *amqp.Sender
	rcv *amqp.Receiver
}

func newCBS(tb testing.TB, s *amqp.Session) *cbs {
	tb.Helper()
	ctx := ctxT(tb)
	snd, err := s.NewSender(ctx, "$cbs", &amqp.SenderOptions{Name: "cbs-sender"})
	require.NoError(tb, err, "attach $cbs sender")
	rcv, err := s.NewReceiver(ctx, "$cbs", &amqp.ReceiverOptions{Name: "cbs-receiver", Credit: 10, TargetAddress: "cbs"})
	require.NoError(tb, err, "attach $cbs receiver")
	return &cbs{snd: snd, rcv: rcv}
}

// putToken sends a put-token with a string message-id, as Node does, and
// returns the reply's status-code and status-description.
func (c *cbs) putToken(tb testing.TB, audience, tok string) (int32, string) {
	tb.Helper()
	return c.putTokenWith(tb, newUUID().String(), "servicebus.windows.net:sastoken", audience, tok)
}

func (c *cbs) putTokenWith(tb testing.TB, messageID any, typ, audience, tok string) (int32, string) {
	tb.Helper()
	ctx := ctxT(tb)
	to, replyTo := "$cbs", "cbs"
	msg := &amqp.Message{
		Properties: &amqp.MessageProperties{MessageID: messageID, To: &to, ReplyTo: &replyTo},
		ApplicationProperties: map[string]any{
			"operation": "put-token", "type": typ, "name": audience,
		},
		Value: tok,
	}
	require.NoError(tb, c.snd.Send(ctx, msg, nil), "put-token send")
	reply, err := c.rcv.Receive(ctx, nil)
	require.NoError(tb, err, "put-token reply")
	require.NoError(tb, c.rcv.AcceptMessage(ctx, reply), "accept put-token reply")
	require.NotNil(tb, reply.Properties, "put-token reply has no properties, want correlation-id %#v", messageID)
	require.True(tb, sameID(reply.Properties.CorrelationID, messageID),
		"put-token reply correlation-id %#v, want %#v", reply.Properties.CorrelationID, messageID)
	code, ok := reply.ApplicationProperties["status-code"].(int32)
	require.True(tb, ok, "put-token reply status-code %#v is not an int32", reply.ApplicationProperties["status-code"])
	desc, _ := reply.ApplicationProperties["status-description"].(string)
	return code, desc
}

func sameID(a, b any) bool {
	switch av := a.(type) {
	case []byte:
		bv, ok := b.([]byte)
		return ok && string(av) == string(bv)
	}
	return a == b
}

// device is a client's method links for one identity.
type device struct {
	id   string
	req  *amqp.Receiver // requests from the hub
	resp *amqp.Sender   // responses to the hub
}

func methodsAddress(clientID string) string {
	dev, mod, ok := strings.Cut(clientID, "/")
	if ok {
		return "/devices/" + dev + "/modules/" + mod + "/methods/devicebound"
	}
	return "/devices/" + dev + "/methods/devicebound"
}

// attachMethods attaches the two method links as the Node SDK does:
// first the sender, then the receiver, with the same link properties.
func attachMethods(tb testing.TB, s *amqp.Session, clientID string, credit int32) (*device, error) {
	tb.Helper()
	ctx := ctxT(tb)
	addr := methodsAddress(clientID)
	props := map[string]any{
		"com.microsoft:api-version":            "2021-04-12",
		"com.microsoft:channel-correlation-id": "methods:" + newUUID().String(),
		"com.microsoft:client-version":         "amqpd-test/1.0",
	}
	first := amqp.ReceiverSettleModeFirst
	snd, err := s.NewSender(ctx, addr, &amqp.SenderOptions{Properties: props, RequestedReceiverSettleMode: &first})
	if err != nil {
		return nil, err
	}
	rcv, err := s.NewReceiver(ctx, addr, &amqp.ReceiverOptions{Properties: props, Credit: credit, SettlementMode: &first})
	if err != nil {
		return nil, err
	}
	return &device{id: clientID, req: rcv, resp: snd}, nil
}

func mustAttachMethods(tb testing.TB, s *amqp.Session, clientID string) *device {
	tb.Helper()
	d, err := attachMethods(tb, s, clientID, 10)
	require.NoError(tb, err, "attach method links of %s", clientID)
	return d
}

// request is a method request as the device saw it.
type request struct {
	name    string
	corr    amqp.UUID
	payload []byte
	msg     *amqp.Message
}

// next receives and accepts one method request, checking its shape.
func (d *device) next(tb testing.TB) request {
	tb.Helper()
	ctx := ctxT(tb)
	m, err := d.req.Receive(ctx, nil)
	require.NoError(tb, err, "%s: receive request", d.id)
	require.NoError(tb, d.req.AcceptMessage(ctx, m), "%s: accept request", d.id)
	return checkRequest(tb, m)
}

func checkRequest(tb testing.TB, m *amqp.Message) request {
	tb.Helper()
	require.NotNil(tb, m.Properties, "request has no properties")
	corr, ok := m.Properties.CorrelationID.(amqp.UUID)
	require.True(tb, ok, "request correlation-id %#v is not an AMQP uuid", m.Properties.CorrelationID)
	name, ok := m.ApplicationProperties["IoThub-methodname"].(string)
	require.True(tb, ok, "request IoThub-methodname %#v is not a string", m.ApplicationProperties["IoThub-methodname"])
	require.Len(tb, m.Data, 1, "request body data sections (value %#v)", m.Value)
	return request{name: name, corr: corr, payload: m.Data[0], msg: m}
}

// respond answers a request with the given correlation-id value.
func (d *device) respond(tb testing.TB, corr any, status any, body []byte) error {
	tb.Helper()
	return d.resp.Send(ctxT(tb), &amqp.Message{
		Properties:            &amqp.MessageProperties{CorrelationID: corr},
		ApplicationProperties: map[string]any{"IoThub-status": status},
		Data:                  [][]byte{body},
	}, nil)
}

type invokeResult struct {
	res engine.MethodResult
	err *engine.Error
}

// invoke starts a method call and returns its outcome channel.
func (f *fixture) invoke(clientID, name string, payload []byte, responseTimeout time.Duration) <-chan invokeResult {
	ch := make(chan invokeResult, 1)
	go func() {
		res, herr := f.e.Invoke(context.Background(), ident(clientID), engine.MethodCall{
			Name: name, Payload: payload, ResponseTimeout: responseTimeout,
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

// waitOnline waits until the identity is connected and subscribed.
func (f *fixture) waitOnline(clientID string) {
	f.tb.Helper()
	require.NoError(f.tb, f.e.WaitOnline(ctxT(f.tb), ident(clientID)), "%s never came online", clientID)
}

// roundTrip invokes a method and answers it from d, checking both sides.
func roundTrip(tb testing.TB, f *fixture, d *device, payload string) {
	tb.Helper()
	f.waitOnline(d.id)
	call := f.invoke(d.id, "reboot", []byte(payload), 10*time.Second)
	r := d.next(tb)
	require.Equal(tb, "reboot", r.name, "request method name")
	require.Equal(tb, payload, string(r.payload), "request payload")
	require.NoError(tb, d.respond(tb, r.corr, int32(200), []byte(`{"ok":true}`)), "respond")
	res := waitInvoke(tb, call)
	require.Nil(tb, res.err, "invoke")
	require.Equal(tb, 200, res.res.Status, "invoke status")
	require.Equal(tb, `{"ok":true}`, string(res.res.Payload), "invoke payload")
}

// remoteErr returns the AMQP error a link or connection error carries.
func remoteErr(err error) *amqp.Error {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		return ae
	}
	var le *amqp.LinkError
	if errors.As(err, &le) && le.RemoteErr != nil {
		return le.RemoteErr
	}
	var ce *amqp.ConnError
	if errors.As(err, &ce) && ce.RemoteErr != nil {
		return ce.RemoteErr
	}
	return nil
}

// requireCondition checks that err carries an AMQP error with condition
// cond, and returns that error.
func requireCondition(tb testing.TB, err error, cond amqp.ErrCond, msgAndArgs ...any) *amqp.Error {
	tb.Helper()
	e := remoteErr(err)
	require.NotNil(tb, e, msgAndArgs...)
	require.Equal(tb, cond, e.Condition, msgAndArgs...)
	return e
}

// Raw AMQP, for what go-amqp cannot send.

// rawConn is a hand-driven AMQP client.
type rawConn struct {
	tb testing.TB
	c  net.Conn
}

func (f *fixture) rawDial() *rawConn {
	f.tb.Helper()
	c := f.dialTLS(nil)
	f.tb.Cleanup(func() { c.Close() })
	return &rawConn{tb: f.tb, c: c}
}

func (r *rawConn) write(b []byte) {
	r.tb.Helper()
	_ = r.c.SetWriteDeadline(time.Now().Add(waitLong))
	_, err := r.c.Write(b)
	require.NoError(r.tb, err, "raw write")
}

func (r *rawConn) frame(typ byte, ch uint16, body any, payload []byte) {
	r.tb.Helper()
	b, err := appendFrame(nil, typ, ch, body, payload)
	require.NoError(r.tb, err)
	r.write(b)
}

func (r *rawConn) readHeader() []byte {
	r.tb.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(waitLong))
	b := make([]byte, 8)
	_, err := io.ReadFull(r.c, b)
	require.NoError(r.tb, err, "raw read header")
	return b
}

// next reads the next non-empty frame.
func (r *rawConn) next() (frame, error) {
	for {
		_ = r.c.SetReadDeadline(time.Now().Add(waitLong))
		f, err := readFrame(r.c, 1<<20)
		if err != nil || f.body != nil {
			return f, err
		}
	}
}

func (r *rawConn) mustNext() frame {
	r.tb.Helper()
	f, err := r.next()
	require.NoError(r.tb, err, "raw read frame")
	return f
}

// open runs the header and open exchange without SASL.
func (r *rawConn) open() {
	r.tb.Helper()
	r.write(headerAMQP)
	require.Equal(r.tb, string(headerAMQP), string(r.readHeader()), "server header")
	r.frame(frameTypeAMQP, 0, performative(descOpen, "raw-client"), nil)
	require.IsType(r.tb, &open{}, r.mustNext().body, "want open")
}

// expectClose reads frames until a close and returns its error.
func (r *rawConn) expectClose() *amqpError {
	r.tb.Helper()
	for {
		f, err := r.next()
		require.NoError(r.tb, err, "no close frame before")
		if c, ok := f.body.(*closePerf); ok {
			return c.err
		}
	}
}
