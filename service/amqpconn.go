package service

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	amqp "github.com/Azure/go-amqp"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/amqpcbs"
	"github.com/iothub-go/iothub/internal/netdial"
)

// The client's AMQP connection: cloud-to-device messages (Send) and the
// feedback receiver go over AMQP 1.0, as in the .NET and Node service
// SDKs; everything else goes over HTTPS.
//
// One connection per Client, dialled by the first call that needs it and
// shared by every Send and FeedbackReceiver. It authenticates with a CBS
// put-token on $cbs and renews the token on the live connection before it
// expires. A connection that dies (network, hub, token renewal) is
// forgotten; the next call dials a new one.

// ErrClosed matches the error of Send, NewFeedbackReceiver and the
// FeedbackReceiver methods after Client.Close (or FeedbackReceiver.Close).
// Use errors.Is.
var ErrClosed = errors.New("iothub: client closed")

// ErrConnectionLost matches the error of an AMQP operation whose
// connection to the hub failed while it was in progress (the network or
// the hub closed it). For Send, the message may or may not have been
// enqueued. The next call dials a new connection. Use errors.Is.
var ErrConnectionLost = errors.New("iothub: connection to the hub lost")

const (
	amqpPortTLS       = "5671"
	amqpPortWebSocket = "443"
	// amqpSubprotocol is the subprotocol of IoT Hub's AMQP over
	// WebSocket endpoint, on netdial.WebSocketPath (Azure/azure-iot-sdk-c
	// iothubtransportamqp_websockets.c).
	amqpSubprotocol = "AMQPWSB10"
	// amqpIdleTimeout is the idle time-out the client announces: the hub
	// sends an empty frame at least this often, and a connection silent
	// for longer is dead.
	amqpIdleTimeout = 120 * time.Second
	// maxFeedbackSize bounds one feedback batch (at most 64 records of a
	// few hundred bytes each).
	maxFeedbackSize = 1 << 20
)

// amqpState is the Client's connection slot.
type amqpState struct {
	mu      sync.Mutex
	cur     *amqpConn     // the live connection, or nil
	dialing chan struct{} // closed when the dial in progress ends
	closed  bool
}

// amqpConn is one AMQP connection with its session and $cbs links.
type amqpConn struct {
	ac   *amqp.Conn
	sess *amqp.Session
	done chan struct{} // closed when the connection has ended
	// bg bounds the background work (token renewal); cancelled on close.
	bg   context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu    sync.Mutex
	err   error // why it ended
	ended bool

	cbsMu  sync.Mutex
	cbsOut *amqp.Sender
	cbsIn  *amqp.Receiver

	sendMu sync.Mutex
	sender *amqp.Sender // on /messages/devicebound, attached by the first Send
}

// fail ends the connection with err as the reason.
func (a *amqpConn) fail(err error) {
	a.mu.Lock()
	if a.ended {
		a.mu.Unlock()
		return
	}
	a.ended = true
	a.err = err
	close(a.done)
	a.mu.Unlock()
	a.stop()
	_ = a.ac.Close()
}

// alive reports whether the connection has not ended. It looks at
// go-amqp's connection too, which ends before the watcher closes done.
func (a *amqpConn) alive() bool {
	select {
	case <-a.done:
		return false
	case <-a.ac.Done():
		return false
	default:
		return true
	}
}

// lostErr is the error of an operation that failed because the
// connection ended.
func (a *amqpConn) lostErr(what string, err error) error {
	a.mu.Lock()
	reason := a.err
	a.mu.Unlock()
	if reason == nil {
		reason = err
	}
	if errors.Is(reason, ErrClosed) {
		return fmt.Errorf("%w (%s)", ErrClosed, what)
	}
	return &connLostError{what: what, err: reason}
}

// close ends the connection and waits for its background work.
func (a *amqpConn) close() {
	a.fail(ErrClosed)
	a.wg.Wait()
}

// connLostError matches ErrConnectionLost.
type connLostError struct {
	what string
	err  error
}

func (e *connLostError) Error() string {
	return "iothub: connection to the hub lost (" + e.what + "): " + e.err.Error()
}
func (e *connLostError) Is(target error) bool { return target == ErrConnectionLost }
func (e *connLostError) Unwrap() error        { return e.err }

// amqpConn returns the client's live AMQP connection, dialling one when
// there is none. Concurrent callers share one dial; a caller whose ctx ends
// stops waiting, and a dial that failed is not cached.
func (c *Client) amqpConn(ctx context.Context) (conn *amqpConn, fresh bool, err error) {
	s := &c.amqp
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, false, ErrClosed
		}
		if s.cur != nil && s.cur.alive() {
			conn := s.cur
			s.mu.Unlock()
			return conn, false, nil
		}
		s.cur = nil
		if wait := s.dialing; wait != nil {
			s.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, false, ctx.Err()
			}
		}
		wait := make(chan struct{})
		s.dialing = wait
		s.mu.Unlock()

		conn, err := c.dialAMQP(ctx)

		s.mu.Lock()
		s.dialing = nil
		close(wait)
		if err == nil && s.closed {
			s.mu.Unlock()
			conn.close()
			return nil, false, ErrClosed
		}
		if err == nil {
			s.cur = conn
		}
		s.mu.Unlock()
		return conn, true, err
	}
}

// forget drops conn from the slot (it has failed) so that the next call
// dials again.
func (c *Client) forget(conn *amqpConn) {
	c.amqp.mu.Lock()
	if c.amqp.cur == conn {
		c.amqp.cur = nil
	}
	c.amqp.mu.Unlock()
}

// Close closes the client's AMQP connection, if one is open: Sends in
// progress fail, FeedbackReceivers end, and Send and NewFeedbackReceiver
// fail with ErrClosed from then on. The HTTPS operations (registry,
// methods, twins, jobs, PurgeMessageQueue) hold no connection and keep
// working. Close is safe to call more than once and from any goroutine;
// ctx bounds waiting for a dial in progress to end (the connection it
// produces is closed anyway).
func (c *Client) Close(ctx context.Context) error {
	s := &c.amqp
	s.mu.Lock()
	s.closed = true
	conn, wait := s.cur, s.dialing
	s.cur = nil
	s.mu.Unlock()
	if conn != nil {
		conn.close()
	}
	if wait != nil {
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// amqpAddress returns the host:port to dial and the host name for TLS:
// the endpoint's host (GatewayHostName, ClientOptions.Endpoint or
// HostName) with the endpoint's explicit port, else 5671 (TLS) or 443
// (WebSocket).
func (c *Client) amqpAddress() (hostport, host string, err error) {
	u, err := url.Parse(c.endpoint)
	if err != nil {
		return "", "", err
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = amqpPortTLS
		if c.amqpWS {
			port = amqpPortWebSocket
		}
	}
	return net.JoinHostPort(host, port), host, nil
}

// amqpTLSConfig returns the TLS configuration of AMQP connections:
// ClientOptions.TLSConfig, else that of Transport when it is an
// *http.Client over an *http.Transport, else nil (system roots).
func amqpTLSConfig(o ClientOptions) *tls.Config {
	if o.TLSConfig != nil {
		return o.TLSConfig
	}
	if hc, ok := o.Transport.(*http.Client); ok && hc != nil {
		if tr, ok := hc.Transport.(*http.Transport); ok && tr != nil && tr.TLSClientConfig != nil {
			return tr.TLSClientConfig
		}
	}
	return nil
}

// dialNet opens the TLS or WebSocket byte stream.
func (c *Client) dialNet(ctx context.Context) (net.Conn, error) {
	hostport, host, err := c.amqpAddress()
	if err != nil {
		return nil, fmt.Errorf("iothub: amqp address: %w", err)
	}
	base := c.tlsConf
	if base == nil {
		base = &tls.Config{}
	}
	conf := netdial.ClientTLS(base, host)
	if conf.MinVersion == 0 {
		conf.MinVersion = tls.VersionTLS12
	}
	if !c.amqpWS {
		return netdial.TLS(ctx, hostport, conf)
	}
	return netdial.WebSocket(ctx, hostport, amqpSubprotocol, conf, -1) // AMQP frames its own data
}

// newUUID is the shared helper, by its name in this package.
var newUUID = amqpcbs.NewUUID

// dialAMQP dials, opens a session and authenticates with a CBS put-token.
// It uses no SASL layer, as the .NET and Node SDKs do.
func (c *Client) dialAMQP(ctx context.Context) (*amqpConn, error) {
	nc, err := c.dialNet(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("iothub: amqp: %w", err)
	}
	ac, err := amqp.NewConn(ctx, nc, &amqp.ConnOptions{
		ContainerID: newUUID().String(),
		HostName:    c.hostName,
		IdleTimeout: amqpIdleTimeout,
	})
	if err != nil {
		nc.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("iothub: amqp: open: %w", err)
	}
	bg, stop := context.WithCancel(context.Background())
	a := &amqpConn{ac: ac, done: make(chan struct{}), bg: bg, stop: stop}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		select {
		case <-ac.Done():
			err := ac.Err()
			if err == nil {
				err = errors.New("the hub closed the connection")
			}
			a.fail(err)
		case <-a.done:
		}
	}()
	fail := func(err error) (*amqpConn, error) {
		a.close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if a.sess, err = ac.NewSession(ctx, nil); err != nil {
		return fail(fmt.Errorf("iothub: amqp: begin: %w", err))
	}
	renewAt, err := c.authenticate(ctx, a)
	if err != nil {
		return fail(err)
	}
	if !renewAt.IsZero() {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			c.renewLoop(a, renewAt)
		}()
	}
	return a, nil
}

// authenticate presents the client's token on $cbs and returns when it
// should be renewed (zero: never, a fixed SAS token).
func (c *Client) authenticate(ctx context.Context, a *amqpConn) (time.Time, error) {
	if c.entra != nil {
		// As the Node SDK does (azure-iothub service/src/amqp.ts): the
		// Entra token with a "Bearer " prefix, the scope as audience.
		tok, err := c.entra.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{EntraScope}})
		if err != nil {
			if ctx.Err() != nil {
				return time.Time{}, ctx.Err()
			}
			return time.Time{}, fmt.Errorf("iothub: getting a Microsoft Entra ID token: %w", err)
		}
		if err := a.putToken(ctx, EntraScope, "Bearer "+tok.Token); err != nil {
			return time.Time{}, err
		}
		return entraRenewAt(tok, time.Now()), nil
	}
	tok, err := c.tokens.Token(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return time.Time{}, ctx.Err()
		}
		if errors.Is(err, auth.ErrSASExpired) {
			return time.Time{}, fmt.Errorf("iothub: the connection string's SharedAccessSignature has expired and cannot be renewed; use a connection string with a SharedAccessKey: %w", err)
		}
		return time.Time{}, err
	}
	// The audience is the token's sr, the hub's host name (Node:
	// azure-iothub service/src/amqp.ts).
	if err := a.putToken(ctx, c.hostName, tok.Value); err != nil {
		return time.Time{}, err
	}
	return tok.RenewAt, nil
}

// entraRenewAt is when to renew an Entra token: after two thirds of its
// remaining lifetime (as Node does), at least a second from now.
func entraRenewAt(tok azcore.AccessToken, now time.Time) time.Time {
	left := tok.ExpiresOn.Sub(now)
	at := now.Add(left * 2 / 3)
	if at.Before(now.Add(time.Second)) {
		at = now.Add(time.Second)
	}
	return at
}

// renewLoop renews the connection's token at renewAt and after, until the
// connection ends. A failed renewal ends the connection: the next call
// dials again and authenticates afresh.
func (c *Client) renewLoop(a *amqpConn, renewAt time.Time) {
	for {
		t := time.NewTimer(time.Until(renewAt))
		select {
		case <-t.C:
		case <-a.done:
			t.Stop()
			return
		}
		ctx, cancel := context.WithTimeout(a.bg, time.Minute)
		next, err := c.authenticate(ctx, a)
		cancel()
		if err != nil {
			a.fail(fmt.Errorf("renewing the token: %w", err))
			return
		}
		if next.IsZero() {
			return
		}
		renewAt = next
	}
}

// putToken presents a token on the $cbs node and waits for status 200.
func (a *amqpConn) putToken(ctx context.Context, audience, token string) error {
	a.cbsMu.Lock()
	defer a.cbsMu.Unlock()
	if a.cbsOut == nil {
		s, err := a.sess.NewSender(ctx, amqpcbs.Address, &amqp.SenderOptions{Name: "cbs-sender-" + newUUID().String()})
		if err != nil {
			return a.opErr(ctx, "attaching $cbs", err)
		}
		r, err := a.sess.NewReceiver(ctx, amqpcbs.Address, &amqp.ReceiverOptions{Name: "cbs-receiver-" + newUUID().String(), Credit: 10, MaxMessageSize: 64 << 10})
		if err != nil {
			return a.opErr(ctx, "attaching $cbs", err)
		}
		a.cbsOut, a.cbsIn = s, r
	}
	req, id := amqpcbs.Request(amqpcbs.TokenType, audience, token)
	if err := a.cbsOut.Send(ctx, req, nil); err != nil {
		return a.opErr(ctx, "put-token", err)
	}
	code, desc, err := amqpcbs.Reply(ctx, a.cbsIn, id)
	if err != nil {
		return a.opErr(ctx, "put-token reply", err)
	}
	if code == 200 || code == 202 {
		return nil
	}
	e := &ResponseError{StatusCode: int(code), Message: clip(desc)}
	if code == http.StatusUnauthorized {
		e.ErrorCode, e.Code = ErrorCodeIotHubUnauthorizedAccess, 401002
	}
	return fmt.Errorf("iothub: amqp: the hub refused the token (CBS put-token): %w", e)
}

// opErr classifies the error of an AMQP operation: ctx.Err() as is when
// ctx ended, the connection's loss, else err with what was being done.
func (a *amqpConn) opErr(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ce *amqp.ConnError
	if errors.As(err, &ce) || !a.alive() {
		a.fail(err)
		return a.lostErr(what, err)
	}
	var ae *amqp.Error
	if errors.As(err, &ae) {
		return fmt.Errorf("iothub: amqp: %s: %w", what, amqpResponseError(ae))
	}
	return fmt.Errorf("iothub: amqp: %s: %w", what, err)
}
