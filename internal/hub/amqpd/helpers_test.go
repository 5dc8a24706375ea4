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
	e, err := engine.New(engine.Config{HostName: testHost, Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := New(e, log)
	if err != nil {
		tb.Fatal(err)
	}
	for _, c := range configure {
		c(srv)
	}
	serverCert, pool := pkitest.ServerCert(tb)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
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
		if err := srv.Close(); err != nil {
			tb.Error(err)
		}
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
	if herr != nil {
		f.tb.Fatal(herr)
	}
	return *d.Authentication.SymmetricKey.PrimaryKey
}

// addModule registers a SAS module and returns its primary key.
func (f *fixture) addModule(deviceID, moduleID string) string {
	f.tb.Helper()
	m, herr := f.e.PutModule(deviceID, moduleID, engine.Module{}, "")
	if herr != nil {
		f.tb.Fatal(herr)
	}
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
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// ownerToken signs a hub-scoped iothubowner token.
func (f *fixture) ownerToken(resource string, expiry time.Time) string {
	f.tb.Helper()
	p, _ := f.e.Policy("iothubowner")
	tok, err := auth.SignSAS(resource, p.Name, p.PrimaryKey, expiry)
	if err != nil {
		f.tb.Fatal(err)
	}
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
	if err != nil {
		f.tb.Fatal(err)
	}
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
	if err != nil {
		f.tb.Fatalf("amqp connect: %v", err)
	}
	f.tb.Cleanup(func() { c.Close() })
	return c
}

func newSession(tb testing.TB, c *amqp.Conn) *amqp.Session {
	tb.Helper()
	s, err := c.NewSession(ctxT(tb), nil)
	if err != nil {
		tb.Fatalf("begin: %v", err)
	}
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
	if err != nil {
		tb.Fatalf("attach $cbs sender: %v", err)
	}
	rcv, err := s.NewReceiver(ctx, "$cbs", &amqp.ReceiverOptions{Name: "cbs-receiver", Credit: 10, TargetAddress: "cbs"})
	if err != nil {
		tb.Fatalf("attach $cbs receiver: %v", err)
	}
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
	if err := c.snd.Send(ctx, msg, nil); err != nil {
		tb.Fatalf("put-token send: %v", err)
	}
	reply, err := c.rcv.Receive(ctx, nil)
	if err != nil {
		tb.Fatalf("put-token reply: %v", err)
	}
	if err := c.rcv.AcceptMessage(ctx, reply); err != nil {
		tb.Fatalf("accept put-token reply: %v", err)
	}
	if reply.Properties == nil || !sameID(reply.Properties.CorrelationID, messageID) {
		tb.Fatalf("put-token reply correlation-id %#v, want %#v", reply.Properties, messageID)
	}
	code, ok := reply.ApplicationProperties["status-code"].(int32)
	if !ok {
		tb.Fatalf("put-token reply status-code %#v is not an int32", reply.ApplicationProperties["status-code"])
	}
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
	if err != nil {
		tb.Fatalf("attach method links of %s: %v", clientID, err)
	}
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
	if err != nil {
		tb.Fatalf("%s: receive request: %v", d.id, err)
	}
	if err := d.req.AcceptMessage(ctx, m); err != nil {
		tb.Fatalf("%s: accept request: %v", d.id, err)
	}
	return checkRequest(tb, m)
}

func checkRequest(tb testing.TB, m *amqp.Message) request {
	tb.Helper()
	if m.Properties == nil {
		tb.Fatal("request has no properties")
	}
	corr, ok := m.Properties.CorrelationID.(amqp.UUID)
	if !ok {
		tb.Fatalf("request correlation-id %#v is not an AMQP uuid", m.Properties.CorrelationID)
	}
	name, ok := m.ApplicationProperties["IoThub-methodname"].(string)
	if !ok {
		tb.Fatalf("request IoThub-methodname %#v is not a string", m.ApplicationProperties["IoThub-methodname"])
	}
	if len(m.Data) != 1 {
		tb.Fatalf("request body has %d data sections (value %#v), want 1", len(m.Data), m.Value)
	}
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
		tb.Fatal("the method call did not finish")
		return invokeResult{}
	}
}

// waitOnline waits until the identity is connected and subscribed.
func (f *fixture) waitOnline(clientID string) {
	f.tb.Helper()
	if err := f.e.WaitOnline(ctxT(f.tb), ident(clientID)); err != nil {
		f.tb.Fatalf("%s never came online: %v", clientID, err)
	}
}

// roundTrip invokes a method and answers it from d, checking both sides.
func roundTrip(tb testing.TB, f *fixture, d *device, payload string) {
	tb.Helper()
	f.waitOnline(d.id)
	call := f.invoke(d.id, "reboot", []byte(payload), 10*time.Second)
	r := d.next(tb)
	if r.name != "reboot" || string(r.payload) != payload {
		tb.Fatalf("request %q %q, want reboot %q", r.name, r.payload, payload)
	}
	if err := d.respond(tb, r.corr, int32(200), []byte(`{"ok":true}`)); err != nil {
		tb.Fatalf("respond: %v", err)
	}
	res := waitInvoke(tb, call)
	if res.err != nil || res.res.Status != 200 || string(res.res.Payload) != `{"ok":true}` {
		tb.Fatalf("invoke = %+v, %v", res.res, res.err)
	}
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
	if _, err := r.c.Write(b); err != nil {
		r.tb.Fatalf("raw write: %v", err)
	}
}

func (r *rawConn) frame(typ byte, ch uint16, body any, payload []byte) {
	r.tb.Helper()
	b, err := appendFrame(nil, typ, ch, body, payload)
	if err != nil {
		r.tb.Fatal(err)
	}
	r.write(b)
}

func (r *rawConn) readHeader() []byte {
	r.tb.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(waitLong))
	b := make([]byte, 8)
	if _, err := io.ReadFull(r.c, b); err != nil {
		r.tb.Fatalf("raw read header: %v", err)
	}
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
	if err != nil {
		r.tb.Fatalf("raw read frame: %v", err)
	}
	return f
}

// open runs the header and open exchange without SASL.
func (r *rawConn) open() {
	r.tb.Helper()
	r.write(headerAMQP)
	if h := r.readHeader(); string(h) != string(headerAMQP) {
		r.tb.Fatalf("server header %q", h)
	}
	r.frame(frameTypeAMQP, 0, performative(descOpen, "raw-client"), nil)
	if f := r.mustNext(); f.body == nil {
		r.tb.Fatal("no open")
	} else if _, ok := f.body.(*open); !ok {
		r.tb.Fatalf("got %T, want open", f.body)
	}
}

// expectClose reads frames until a close and returns its error.
func (r *rawConn) expectClose() *amqpError {
	r.tb.Helper()
	for {
		f, err := r.next()
		if err != nil {
			r.tb.Fatalf("no close frame before: %v", err)
		}
		if c, ok := f.body.(*closePerf); ok {
			return c.err
		}
	}
}
