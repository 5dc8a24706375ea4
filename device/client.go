// Package device is the device side of Azure IoT Hub direct methods: a
// [Client] connects a device or module to its hub, registers method
// handlers, answers calls, and keeps itself connected.
//
//	c, err := device.NewClientFromConnectionString(cs, nil) // MQTT over TLS
//	c.SetMethodHandler("reboot", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
//		return device.JSONResponse(200, map[string]string{"result": "Reboot started."})
//	})
//	err = c.Connect(ctx)
//	defer c.Close(ctx)
//
// Reconnecting, SAS token renewal and the method subscription are handled
// once here, for every transport: after every reconnect the client
// subscribes again and counts itself connected only once the hub has
// confirmed the subscription.
package device

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/iothub-go/iothub"
	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/transport"
	"github.com/iothub-go/iothub/transport/mqtt"
)

// Version is this SDK's version, sent to the hub as part of the client type.
const Version = "0.1.0"

// DefaultMaxConcurrentHandlers is how many method handlers run at once when
// ClientOptions.MaxConcurrentHandlers is zero. Further calls wait for a slot.
const DefaultMaxConcurrentHandlers = 16

// maxAuthAttempts is how many consecutive attempts refused for bad
// credentials the client makes (each with a newly minted token) before it
// gives up.
const maxAuthAttempts = 3

// ErrClosed is returned by calls on a closed client.
var ErrClosed = errors.New("iothub: client closed")

// ClientOptions configures a Client. nil or the zero value gives defaults.
type ClientOptions struct {
	// Transport is the protocol. nil means MQTT over TLS (mqtt.New(nil)).
	Transport transport.Transport
	// TLSConfig configures TLS (e.g. RootCAs for a local hub). nil means
	// the system roots. The client certificate comes from X509.
	TLSConfig *tls.Config
	// X509 is the client certificate of an identity that authenticates
	// with X.509 (connection strings with x509=true).
	X509 *auth.X509Credential
	// GatewayHostName, for NewClient and NewClientWithX509, is the host
	// (optionally "host:port") to dial instead of the identity's HostName.
	// Connection strings carry their own.
	GatewayHostName string
	// SAS configures tokens minted from a connection string's
	// SharedAccessKey: zero means 1 h tokens renewed when 15 % of their
	// lifetime remains.
	SAS auth.TokenOptions
	// Retry is the reconnect policy: exponential backoff with full jitter.
	// MaxRetries zero means retry until Close (Connect is bounded by its
	// context); refusals of the credentials stop the client after 3
	// attempts, each with a newly minted token.
	Retry iothub.RetryOptions
	// MaxConcurrentHandlers bounds how many handlers run at once. Zero
	// means DefaultMaxConcurrentHandlers.
	MaxConcurrentHandlers int
	// OnConnectionStatus is called on every change of the connection, one
	// call at a time and in order, never with the client's locks held. It
	// must not block for long.
	OnConnectionStatus func(ConnectionStatus)
	// Logger receives connection events and one line per method call (name,
	// status, duration); never keys, tokens or payloads. nil is silent.
	Logger *slog.Logger
}

// Client is a device or module connection to IoT Hub that answers direct
// methods. Its methods are safe for concurrent use.
type Client struct {
	id      auth.Identity
	addr    string
	tokens  auth.TokenProvider // nil with X.509
	tlsConf *tls.Config
	tr      transport.Transport
	retry   iothub.RetryOptions
	log     *slog.Logger
	sem     chan struct{}
	status  *statusQueue

	handlerCtx     context.Context // ends when Close gives up waiting for handlers
	cancelHandlers context.CancelFunc

	hmu            sync.RWMutex
	handlers       map[string]MethodHandler
	defaultHandler MethodHandler

	mu       sync.Mutex
	state    ConnectionState
	changed  chan struct{} // closed and replaced on every state change
	conn     transport.Conn
	running  bool          // the connection loop runs
	stop     chan struct{} // closed by Close: stop the loop
	loopDone chan struct{}
	closed   bool
	inflight int
	idle     chan struct{} // closed when inflight drops to zero

	// cancelLoop cancels the loop's context; Close calls it with stop.
	cancelLoop context.CancelFunc
}

// NewClientFromConnectionString returns a client for a device or module
// connection string (with SharedAccessKey, SharedAccessSignature, or
// x509=true and opts.X509). It does no network I/O; see Connect.
func NewClientFromConnectionString(connStr string, opts *ClientOptions) (*Client, error) {
	cs, err := auth.ParseDeviceConnectionString(connStr)
	if err != nil {
		return nil, err
	}
	o := options(opts)
	var tokens auth.TokenProvider
	if cs.X509 {
		if o.X509 == nil {
			return nil, errors.New("iothub: the connection string says x509=true: set ClientOptions.X509 to the device certificate")
		}
	} else if tokens, err = cs.TokenProvider(&o.SAS); err != nil {
		return nil, err
	}
	return newClient(cs.Identity(), cs.Address(), tokens, o)
}

// NewClient returns a client for identity that authenticates with SAS
// tokens from tokens. It does no network I/O.
func NewClient(identity auth.Identity, tokens auth.TokenProvider, opts *ClientOptions) (*Client, error) {
	if tokens == nil {
		return nil, errors.New("iothub: NewClient needs a token provider")
	}
	o := options(opts)
	return newClient(identity, gateway(identity, o), tokens, o)
}

// NewClientWithX509 returns a client for identity that authenticates with
// the client certificate cred. It does no network I/O.
func NewClientWithX509(identity auth.Identity, cred *auth.X509Credential, opts *ClientOptions) (*Client, error) {
	if cred == nil {
		return nil, errors.New("iothub: NewClientWithX509 needs a certificate")
	}
	o := options(opts)
	o.X509 = cred
	return newClient(identity, gateway(identity, o), nil, o)
}

func options(opts *ClientOptions) ClientOptions {
	if opts == nil {
		return ClientOptions{}
	}
	return *opts
}

func gateway(id auth.Identity, o ClientOptions) string {
	if o.GatewayHostName != "" {
		return o.GatewayHostName
	}
	return id.HostName
}

func newClient(id auth.Identity, addr string, tokens auth.TokenProvider, o ClientOptions) (*Client, error) {
	if id.HostName == "" {
		return nil, errors.New("iothub: the identity has no HostName")
	}
	if err := auth.CheckID(id.DeviceID); err != nil {
		return nil, fmt.Errorf("iothub: DeviceID: %w", err)
	}
	if id.ModuleID != "" {
		if err := auth.CheckID(id.ModuleID); err != nil {
			return nil, fmt.Errorf("iothub: ModuleID: %w", err)
		}
	}
	if o.MaxConcurrentHandlers < 0 {
		return nil, errors.New("iothub: MaxConcurrentHandlers must not be negative")
	}
	if o.MaxConcurrentHandlers == 0 {
		o.MaxConcurrentHandlers = DefaultMaxConcurrentHandlers
	}
	if o.Transport == nil {
		o.Transport = mqtt.New(nil)
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.TLSConfig != nil {
		tlsConf = o.TLSConfig.Clone()
	}
	if o.X509 != nil {
		tlsConf.Certificates = []tls.Certificate{o.X509.Certificate()}
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("identity", id.String(), "transport", o.Transport.Name())
	hctx, cancel := context.WithCancel(context.Background())
	return &Client{
		id:             id,
		addr:           addr,
		tokens:         tokens,
		tlsConf:        tlsConf,
		tr:             o.Transport,
		retry:          o.Retry,
		log:            log,
		sem:            make(chan struct{}, o.MaxConcurrentHandlers),
		status:         newStatusQueue(o.OnConnectionStatus),
		handlerCtx:     hctx,
		cancelHandlers: cancel,
		handlers:       map[string]MethodHandler{},
		changed:        make(chan struct{}),
	}, nil
}

// SetMethodHandler registers h for the method name, replacing any handler
// it had; a nil h removes it. It may be called before or after Connect, at
// any time: on transports that carry methods the client is always
// subscribed, and calls for names without a handler go to the default
// handler. On a transport that cannot receive methods (HTTPS) it returns an
// error wrapping transport.ErrUnsupported and registers nothing.
func (c *Client) SetMethodHandler(name string, h MethodHandler) error {
	if name == "" {
		return errors.New("iothub: empty method name")
	}
	if h != nil {
		if err := c.tr.MethodSupport(); err != nil {
			return err
		}
	}
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if h == nil {
		delete(c.handlers, name)
		return nil
	}
	c.handlers[name] = h
	return nil
}

// SetDefaultMethodHandler registers h for methods that have no handler of
// their own. nil restores the built-in default, which answers status 501.
// Like SetMethodHandler it fails on a transport without methods.
func (c *Client) SetDefaultMethodHandler(h MethodHandler) error {
	if h != nil {
		if err := c.tr.MethodSupport(); err != nil {
			return err
		}
	}
	c.hmu.Lock()
	defer c.hmu.Unlock()
	c.defaultHandler = h
	return nil
}

// ConnectionState returns the current state of the connection.
func (c *Client) ConnectionState() ConnectionState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

func (c *Client) setState(s ConnectionState, err error) {
	c.mu.Lock()
	changed := c.state != s || err != nil
	if c.state != s {
		close(c.changed)
		c.changed = make(chan struct{})
	}
	c.state = s
	c.mu.Unlock()
	if changed {
		c.status.push(ConnectionStatus{State: s, Err: err})
	}
}

// Connect connects to the hub, subscribes to direct methods and returns
// once the hub has confirmed the subscription. Transient failures are
// retried with backoff until ctx ends; refused credentials end it after
// three attempts with an error wrapping transport.ErrNotAuthorized. After a
// successful Connect the client reconnects by itself whenever the
// connection drops, and renews its SAS token before it expires.
func (c *Client) Connect(ctx context.Context) error {
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return ErrClosed
	case c.running:
		c.mu.Unlock()
		return errors.New("iothub: the client is already connected")
	}
	stop := make(chan struct{})
	c.stop, c.running = stop, true
	c.mu.Unlock()

	c.setState(ConnectionStateConnecting, nil)
	conn, tok, err := c.dialWithRetry(ctx, stop)
	if err != nil {
		c.mu.Lock()
		c.running = false
		closed := c.closed
		c.mu.Unlock()
		if closed {
			return ErrClosed
		}
		c.setState(ConnectionStateDisconnected, err)
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		conn.Close()
		return ErrClosed
	}
	c.conn = conn
	c.loopDone = make(chan struct{})
	c.mu.Unlock()
	c.setState(ConnectionStateConnected, nil)
	c.log.Info("connected")
	go c.loop(conn, tok, stop)
	return nil
}

// Close stops reconnecting, waits for running handlers to finish and send
// their answers until ctx ends, then closes the connection. It returns
// ctx.Err() if handlers were still running. Later calls return nil;
// other methods return ErrClosed.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	stop, loopDone := c.stop, c.loopDone
	if c.running && stop != nil {
		close(stop)
	}
	if c.cancelLoop != nil {
		c.cancelLoop()
	}
	c.mu.Unlock()
	if loopDone != nil {
		<-loopDone
	}
	err := c.waitIdle(ctx)
	c.cancelHandlers()
	c.mu.Lock()
	conn := c.conn
	c.conn = nil
	c.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
	c.setState(ConnectionStateClosed, nil)
	c.status.close()
	c.log.Info("closed")
	return err
}

// dialWithRetry connects and subscribes, retrying per the policy until it
// succeeds, ctx ends or stop is closed.
func (c *Client) dialWithRetry(ctx context.Context, stop <-chan struct{}) (transport.Conn, auth.Token, error) {
	authFailures := 0
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(c.retry.Delay(attempt - 1))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, auth.Token{}, ctx.Err()
			case <-stop:
				t.Stop()
				return nil, auth.Token{}, ErrClosed
			}
		}
		conn, tok, err := c.dialOnce(ctx, authFailures > 0)
		if err == nil {
			return conn, tok, nil
		}
		if ctx.Err() != nil {
			return nil, auth.Token{}, ctx.Err()
		}
		c.log.Info("connection attempt failed", "attempt", attempt+1, "error", err)
		if errors.Is(err, auth.ErrSASExpired) {
			return nil, auth.Token{}, err // a fixed token cannot be renewed
		}
		if errors.Is(err, transport.ErrNotAuthorized) {
			authFailures++
			if authFailures >= maxAuthAttempts {
				return nil, auth.Token{}, err
			}
		} else {
			authFailures = 0
		}
		if c.retry.MaxRetries < 0 || (c.retry.MaxRetries > 0 && attempt >= int(c.retry.MaxRetries)) {
			return nil, auth.Token{}, err
		}
		c.setState(ConnectionStateConnecting, err)
	}
}

// renewer is implemented by token providers that can mint a token on demand
// (auth.KeyTokenProvider).
type renewer interface {
	Renew(ctx context.Context) (auth.Token, error)
}

// dialOnce opens one connection and subscribes to methods.
func (c *Client) dialOnce(ctx context.Context, freshToken bool) (transport.Conn, auth.Token, error) {
	var tok auth.Token
	if c.tokens != nil {
		var err error
		if r, ok := c.tokens.(renewer); ok && freshToken {
			tok, err = r.Renew(ctx)
		} else {
			tok, err = c.tokens.Token(ctx)
		}
		if err != nil {
			return nil, tok, err
		}
	}
	dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	conn, err := c.tr.Dial(dctx, transport.Config{
		Identity:    c.id,
		Address:     c.addr,
		Token:       tok.Value,
		TLSConfig:   c.tlsConf,
		ProductInfo: "iothub-go/" + Version + " (" + runtime.Version() + "; " + runtime.GOOS + "/" + runtime.GOARCH + ")",
		Logger:      c.log,
	})
	if err != nil {
		return nil, tok, err
	}
	if c.tr.MethodSupport() == nil {
		if err := conn.SubscribeMethods(dctx, func(req *MethodRequest) { c.dispatch(conn, req) }); err != nil {
			conn.Close()
			return nil, tok, err
		}
	}
	return conn, tok, nil
}

// loop keeps the client connected until stop is closed.
func (c *Client) loop(conn transport.Conn, tok auth.Token, stop chan struct{}) {
	defer close(c.loopDone)
	// ctx ends when Close closes stop: Close cancels it (no goroutine
	// per client waits for stop).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.mu.Lock()
	c.cancelLoop = cancel
	if c.closed {
		cancel()
	}
	c.mu.Unlock()
	for {
		var renew <-chan time.Time
		var timer *time.Timer
		if !tok.RenewAt.IsZero() {
			timer = time.NewTimer(time.Until(tok.RenewAt))
			renew = timer.C
		}
		select {
		case <-stop:
			if timer != nil {
				timer.Stop()
			}
			return
		case <-conn.Done():
			if timer != nil {
				timer.Stop()
			}
			err := conn.Err()
			// Release what the lost connection still holds: a transport may
			// end a connection for the client (e.g. AMQP, when the hub
			// detaches the method links) while its socket stays open.
			conn.Close()
			c.log.Info("connection lost", "error", err)
			c.setState(ConnectionStateConnecting, err)
		case <-renew:
			if u, ok := conn.(transport.TokenUpdater); ok {
				if next, err := c.tokens.Token(ctx); err == nil && u.UpdateToken(ctx, next.Value) == nil {
					tok = next
					continue
				}
			}
			// Renew by reconnecting, once running handlers have answered
			// (bounded, so the token cannot expire meanwhile).
			c.log.Info("renewing the SAS token by reconnecting")
			wctx, wcancel := context.WithDeadline(ctx, tok.ExpiresOn.Add(-time.Second))
			_ = c.waitIdle(wctx)
			wcancel()
			conn.Close()
			c.setState(ConnectionStateConnecting, nil)
		}
		next, nextTok, err := c.dialWithRetry(ctx, stop)
		if err != nil {
			if errors.Is(err, ErrClosed) || ctx.Err() != nil {
				return
			}
			c.log.Warn("giving up reconnecting", "error", err)
			c.mu.Lock()
			c.running = false
			c.conn = nil
			c.mu.Unlock()
			c.setState(ConnectionStateDisconnected, err)
			return
		}
		c.mu.Lock()
		c.conn = next
		c.mu.Unlock()
		conn, tok = next, nextTok
		c.setState(ConnectionStateConnected, nil)
		c.log.Info("reconnected")
	}
}

// dispatch runs a handler for req off the transport's read loop and sends
// its answer on the connection the request came from.
func (c *Client) dispatch(conn transport.Conn, req *MethodRequest) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock() // closing: new calls are not taken (the caller gets the hub's timeout)
		return
	}
	if c.inflight == 0 {
		c.idle = make(chan struct{})
	}
	c.inflight++
	c.mu.Unlock()
	go func() {
		defer c.handlerDone()
		select {
		case c.sem <- struct{}{}:
		case <-c.handlerCtx.Done():
			return
		}
		start := time.Now()
		resp := c.run(req)
		<-c.sem
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := conn.RespondMethod(ctx, req.RequestID, resp); err != nil {
			c.log.Warn("method response not sent", "method", req.Name, "error", err)
			return
		}
		if c.log.Enabled(ctx, slog.LevelInfo) { // no attributes for a logger that drops them
			c.log.Info("method", "method", req.Name, "status", resp.Status, "duration", time.Since(start))
		}
	}()
}

func (c *Client) handlerDone() {
	c.mu.Lock()
	c.inflight--
	if c.inflight == 0 {
		close(c.idle)
	}
	c.mu.Unlock()
}

// waitIdle waits until no handler runs, or ctx ends.
func (c *Client) waitIdle(ctx context.Context) error {
	c.mu.Lock()
	if c.inflight == 0 {
		c.mu.Unlock()
		return nil
	}
	idle := c.idle
	c.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run calls the handler for req and turns every outcome into a response.
func (c *Client) run(req *MethodRequest) (resp *MethodResponse) {
	c.hmu.RLock()
	h, ok := c.handlers[req.Name]
	if !ok {
		h = c.defaultHandler
	}
	c.hmu.RUnlock()
	if h == nil {
		return errorResponse(501, fmt.Sprintf("method %q is not implemented on this device", req.Name))
	}
	if len(req.Payload) > 0 && !json.Valid(req.Payload) {
		return errorResponse(400, "the request payload is not valid JSON")
	}
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("method handler panicked", "method", req.Name, "panic", fmt.Sprint(p))
			resp = errorResponse(500, "the method handler failed")
		}
	}()
	r, err := h(c.handlerCtx, req)
	if err != nil {
		return errorResponse(500, err.Error())
	}
	return checkResponse(r)
}
