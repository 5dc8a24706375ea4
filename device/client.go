package device

import (
	"context"
	"crypto/tls"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iothub-go/iothub"
	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/transport"
)

// Client is a device or module connection to IoT Hub that answers direct
// methods. Its methods are safe for concurrent use, from any goroutine,
// method handlers and the OnConnectionStatus callback included.
type Client struct {
	id        auth.Identity
	addr      string
	tokens    auth.TokenProvider // nil with X.509
	tlsConf   *tls.Config
	tr        transport.Transport
	retry     iothub.RetryOptions
	log       *slog.Logger
	status    *statusQueue
	sem       chan struct{} // a slot per running handler; made under mu by the first call
	maxRun    int           // handlers that may run at once: sem's capacity
	maxQueued int           // calls that may wait for a slot

	// life ends when Close is called: it ends dials, backoff waits,
	// renewals and subscriptions in progress.
	life lifeContext
	// handlerCtx is the handlers' context, made by the first handler
	// (handlersContext): it ends when Close gives up waiting for them
	// (endHandlers). Both guarded by mu.
	handlerCtx     context.Context
	cancelHandlers context.CancelFunc

	// wrap is ClientOptions.WrapHandler; notImplemented is the built-in
	// answer to a method without a handler, wrapped.
	wrap           func(MethodHandler) MethodHandler
	notImplemented MethodHandler

	// The registered handlers, wrapped: a set that is replaced, never
	// changed, so that a call reads it without a lock (handler). hmu
	// orders the replacements.
	hmu      sync.Mutex
	handlers atomic.Pointer[handlerSet] // nil until the first registration

	// subMu orders changes of the method subscription: those of
	// SetMethodHandler and those of each new connection. Taken before mu.
	subMu sync.Mutex

	// desiredP delivers desired-property changes (desired.go); nil until
	// needed (desired).
	desiredP atomic.Pointer[desiredState]
	// modelID is ClientOptions.ModelID.
	modelID string
	// messages delivers cloud-to-device messages (messages.go); nil until
	// needed (messageState). pollInterval is
	// ClientOptions.MessagePollInterval.
	messages     atomic.Pointer[messageState]
	pollInterval time.Duration

	mu       sync.Mutex
	state    ConnectionState
	changed  chan struct{} // closed and cleared on every state change; made by a waiter (liveConn)
	conn     *connection   // the live connection; nil while there is none
	running  bool          // Connect succeeded or is dialing, and the client has not given up
	closed   bool
	loop     *keeper // the connection loop of the last successful Connect
	watching *keeper // the loop, while it waits without a goroutine
	stopDial func()  // ends the dial of a Connect in progress; nil otherwise

	accepted     int           // calls taken whose handler has not returned: waiting for a slot or running
	answering    int           // answers of accepted calls being sent
	refusing     int           // busy answers being sent
	callsChanged chan struct{} // closed and cleared when a call finishes, if callsWatched; made by the waiter
	callsWatched bool          // someone waits on callsChanged
	closeAfter   bool          // Close left the connection to the handlers that called it
	handlersEnd  bool          // endHandlers was called: handlerCtx is born ended
}

// loadOrMake returns *p, making it on first use: state a client may never
// need (desired properties, cloud-to-device messages) costs a pointer
// until then.
func loadOrMake[T any](p *atomic.Pointer[T]) *T {
	if v := p.Load(); v != nil {
		return v
	}
	p.CompareAndSwap(nil, new(T))
	return p.Load()
}

// handlersContext returns the handlers' context, making it on first use:
// a client whose handlers never run has none.
func (c *Client) handlersContext() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.handlersContextLocked()
}

// handlersContextLocked is handlersContext with c.mu held.
func (c *Client) handlersContextLocked() context.Context {
	if c.handlerCtx == nil {
		c.handlerCtx, c.cancelHandlers = context.WithCancel(context.Background())
		if c.handlersEnd {
			c.cancelHandlers()
		}
	}
	return c.handlerCtx
}

// endHandlers ends the handlers' context, now or as it is made.
func (c *Client) endHandlers() {
	c.mu.Lock()
	c.handlersEnd = true
	cancel := c.cancelHandlers
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// ConnectionState returns the current state of the connection.
func (c *Client) ConnectionState() ConnectionState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

func (c *Client) setState(s ConnectionState, err error) {
	c.mu.Lock()
	c.setStateLocked(s, err)
	c.mu.Unlock()
}

// setStateLocked records a state change and queues its status. Nothing is
// reported after closed. The queue only appends, so holding c.mu keeps the
// statuses in the order of the changes.
func (c *Client) setStateLocked(s ConnectionState, err error) {
	if c.state == ConnectionStateClosed || (c.state == s && err == nil) {
		return
	}
	if c.state != s && c.changed != nil {
		close(c.changed)
		c.changed = nil // the next waiter makes the next one
	}
	c.state = s
	c.status.push(ConnectionStatus{State: s, Err: err})
}

// Connect connects to the hub, subscribes to direct methods if a handler
// is registered, and returns once the hub has confirmed the subscription.
// Transient failures are retried with backoff until ctx ends; refused
// credentials end it after three attempts with an error wrapping
// ErrNotAuthorized. It returns ErrAlreadyConnected if the client is
// connected or connecting already. Close ends a Connect in progress, whatever
// it is waiting for, and Connect then returns ErrClosed. After a
// successful Connect the client reconnects by itself whenever the
// connection drops, and renews its SAS token before it expires.
func (c *Client) Connect(ctx context.Context) error {
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return ErrClosed
	case c.running:
		c.mu.Unlock()
		return ErrAlreadyConnected
	}
	c.running = true
	// Close ends the dial through stopDial rather than through life (a
	// context derived from life would leave each client's life with a done
	// channel for good).
	c.stopDial = cancel
	c.setStateLocked(ConnectionStateConnecting, nil)
	c.mu.Unlock()

	streak := 0
	cn, tok, err := c.dialWithRetry(dctx, &streak)
	cancel()
	c.mu.Lock()
	c.stopDial = nil
	if c.closed {
		c.running = false
		c.mu.Unlock()
		if cn != nil {
			cn.Close() // Close may have missed it
		}
		return ErrClosed
	}
	if err != nil {
		c.running = false
		c.setStateLocked(ConnectionStateDisconnected, err)
		c.mu.Unlock()
		return err
	}
	k := &keeper{cn: cn, tok: tok, streak: streak}
	k.done.Add(1)
	c.loop = k
	c.setStateLocked(ConnectionStateConnected, nil)
	c.mu.Unlock()
	c.log.Info("connected")
	c.await(k)
	return nil
}

// Close stops reconnecting, waits until running handlers have returned and
// their answers have been sent, or until ctx ends, then closes the
// connection and reports ConnectionStateClosed. It returns ctx.Err() if
// handlers were still running; their context then ends, and their answers
// are dropped. It does not wait for answers on a connection that has been
// lost: they cannot be sent.
//
// Close may be called from a method handler: it does not wait for the
// handler that called it. That handler's answer is still sent, and the
// connection closes once it has been. Called from the OnConnectionStatus
// callback, Close returns without waiting for the callback, and the closed
// status follows once the callback has returned. Called while Connect is
// dialing, Close ends the attempt at once.
//
// Calls that arrive after Close get no answer (the caller gets the hub's
// timeout); calls still waiting for a handler slot are answered with
// status 503. Later calls of Close return nil; other methods return
// ErrClosed.
func (c *Client) Close(ctx context.Context) error {
	self := 0
	if c.inHandler() {
		self = 1
	}
	fromDesired := c.inDesiredHandler()
	fromMessages := c.inMessageHandler()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	loop, stopDial := c.loop, c.stopDial
	c.mu.Unlock()
	c.life.end()
	if stopDial != nil {
		stopDial() // ends a Connect in progress
	}
	c.wakeForClose()
	if loop != nil {
		loop.done.Wait() // prompt: every wait of the loop watches life
	}
	err := c.waitCalls(ctx, self, nil)
	if derr := c.stopDesired(ctx, fromDesired); err == nil {
		err = derr
	}
	if merr := c.stopMessages(ctx, fromMessages); err == nil {
		err = merr
	}
	c.mu.Lock()
	var cn *connection
	if err != nil || c.accepted == 0 { // answers left are on a connection that has ended
		cn, c.conn = c.conn, nil
	} else {
		c.closeAfter = true // the handler that called Close closes it
	}
	c.running = false
	c.setStateLocked(ConnectionStateClosed, nil)
	c.mu.Unlock()
	if cn != nil || err != nil {
		c.endHandlers() // no handler is left running, or Close gave up on them
	}
	if cn != nil {
		cn.Close()
	}
	c.log.Info("closed")
	c.status.drain(ctx)
	return err
}
