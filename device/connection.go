package device

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iothub-go/iothub"
	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/transport"
)

const (
	// dialTimeout bounds one connection attempt: token, dial, handshakes
	// and the method subscription.
	dialTimeout = 60 * time.Second
	// stableAfter is how long a connection must have lasted for its loss
	// to reset the backoff. A connection the hub ends sooner (another
	// client with the same identity replacing it, say) counts as a failed
	// attempt.
	stableAfter = 30 * time.Second
	// minRenewDelay is the least time between renewals when the token
	// provider hands out tokens that are already due for renewal.
	minRenewDelay = time.Second
)

// productInfo names this SDK to the hub (the MQTT user name's
// DeviceClientType, AMQP's com.microsoft:client-version).
var productInfo = "iothub-go/" + iothub.Version + " (" + runtime.Version() + "; " + runtime.GOOS + "/" + runtime.GOARCH + ")"

// renewTimeout bounds a renewal: the new token and its put-token. A
// variable for the tests.
var renewTimeout = 30 * time.Second

// connection is one transport connection of the client. ready's channel
// is closed once Dial has returned: a method request can arrive before
// that (MQTT delivers on a resumed session at once), and its answer waits
// for it.
type connection struct {
	transport.Conn
	since time.Time // when it was established; set under Client.mu

	readyMu sync.Mutex
	readyCh chan struct{} // made by a waiter while Dial runs; nil otherwise
	isReady bool          // Dial has returned: Conn is set (nil if it failed)

	answers int // answers being sent on it (waitCalls); guarded by Client.mu

	subscribed  bool        // guarded by Client.subMu
	desiredSub  bool        // guarded by Client.subMu
	messagesSub bool        // guarded by Client.subMu
	polled      atomic.Bool // HTTPS: the client polls this connection for messages
}

// closedChan is a closed channel: ready's answer once Dial has returned.
var closedChan = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

// ready returns a channel that is closed once Dial has returned. Only a
// request that arrives while Dial runs costs a channel.
func (cn *connection) ready() <-chan struct{} {
	cn.readyMu.Lock()
	defer cn.readyMu.Unlock()
	if cn.isReady {
		return closedChan
	}
	if cn.readyCh == nil {
		cn.readyCh = make(chan struct{})
	}
	return cn.readyCh
}

// setReady records what Dial returned and wakes those waiting for it.
func (cn *connection) setReady(conn transport.Conn) {
	cn.readyMu.Lock()
	defer cn.readyMu.Unlock()
	cn.Conn = conn
	cn.isReady = true
	if cn.readyCh != nil {
		close(cn.readyCh)
	}
}

// shortLivedError is the reason given for the loss of a connection that
// the hub ended soon after it was established.
type shortLivedError struct {
	lived time.Duration
	err   error
}

func (e *shortLivedError) Error() string {
	return fmt.Sprintf("iothub: the connection ended %v after it was established; the client backs off before it reconnects"+
		" (if this repeats, is another client using this identity? The hub keeps only its newest connection): %v",
		e.lived.Round(time.Millisecond), e.err)
}

func (e *shortLivedError) Unwrap() error { return e.err }

// dialWithRetry connects and subscribes, retrying per the policy until it
// succeeds or ctx ends. streak counts the consecutive failures so far,
// failed attempts and connections that did not last: while it is positive
// every attempt first waits for the backoff.
func (c *Client) dialWithRetry(ctx context.Context, streak *int) (*connection, auth.Token, error) {
	authFailures := 0
	for attempt := 0; ; attempt++ {
		if *streak > 0 {
			t := time.NewTimer(c.retry.Delay(*streak - 1))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, auth.Token{}, ctx.Err()
			}
		}
		cn, tok, err := c.dialOnce(ctx, authFailures > 0)
		if err == nil {
			return cn, tok, nil
		}
		if ctx.Err() != nil {
			return nil, auth.Token{}, ctx.Err()
		}
		*streak++
		c.log.Info("connection attempt failed", "attempt", attempt+1, "error", err)
		if errors.Is(err, auth.ErrSASExpired) {
			return nil, auth.Token{}, err // a fixed token cannot be renewed
		}
		if errors.Is(err, transport.ErrUnsupported) {
			return nil, auth.Token{}, err // the transport cannot carry this client: retrying will not help
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

// dialOnce opens one connection, subscribes to methods if a handler is
// registered, and makes it the client's connection.
func (c *Client) dialOnce(ctx context.Context, freshToken bool) (*connection, auth.Token, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
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
	cn := &connection{}
	conn, err := c.tr.Dial(ctx, transport.Config{
		Identity:    c.id,
		Address:     c.addr,
		Token:       tok.Value,
		TLSConfig:   c.tlsConf,
		ProductInfo: productInfo,
		Logger:      c.log,
		Methods:     func(req *transport.MethodRequest) { c.dispatch(cn, req) },
		Desired:     func(patch []byte) { c.postDesired(desiredEvent{cn: cn, body: append([]byte(nil), patch...)}) },
		Messages:    func(m *transport.CloudMessage) { c.postMessage(cn, m) },
		ModelID:     c.modelID,
	})
	cn.setReady(conn)
	if err != nil {
		return nil, tok, err
	}
	if err := c.establish(ctx, cn); err != nil {
		conn.Close()
		return nil, tok, err
	}
	return cn, tok, nil
}

// establish gives a new connection the method subscription the registry
// asks for and makes it the client's connection, unless the client closed
// meanwhile.
func (c *Client) establish(ctx context.Context, cn *connection) error {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	if c.tr.MethodSupport() == nil {
		if c.wantMethods() {
			if err := cn.SubscribeMethods(ctx); err != nil {
				return err
			}
			cn.subscribed = true
		} else if err := cn.UnsubscribeMethods(ctx); err != nil {
			return err // a resumed MQTT session may hold a subscription
		}
	}
	// Desired properties: subscribe, then resync (read the twin), so that
	// nothing changed while the client was offline goes unseen.
	if err := c.subscribeDesired(ctx, cn, false); err != nil {
		return fmt.Errorf("iothub: subscribing to desired properties: %w", err)
	}
	// Cloud-to-device messages: queued while the device was offline, they
	// arrive once it has subscribed.
	if err := c.subscribeMessages(ctx, cn); err != nil {
		return fmt.Errorf("iothub: subscribing to cloud-to-device messages: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	c.conn = cn
	cn.since = time.Now()
	return nil
}

// doneNotifier is implemented by connections that can call a function when
// they end (packages mqtt's and amqp's). The client then waits for an idle
// connection's events without a goroutine of its own: a fleet of idle
// clients costs no stack per client beyond the transport's.
type doneNotifier interface {
	// OnDone sets the function to run on a goroutine of its own once the
	// connection has ended, at once if it has; nil removes it. A
	// connection holds one: a later call replaces the earlier function.
	OnDone(f func())
}

// keeper is the state of the connection loop, which keeps the client
// connected until Close or until it gives up: it waits for the next event
// (await), handles it (step), and waits again.
type keeper struct {
	cn      *connection
	tok     auth.Token
	streak  int
	overdue int            // renewals in a row whose new token was already due
	done    sync.WaitGroup // done when the loop has returned

	// The loop's wait without a goroutine (await). The first of its
	// wake-ups (the connection's end, the renewal timer, Close) claims it
	// and runs the loop's next step. One function and one timer serve
	// every wait of the loop: they are part of the per-device cost of a
	// fleet (BENCHMARKS.md).
	wmu     sync.Mutex  // taken after Client.mu, never before
	waiting bool        // a wait is armed and not claimed yet
	renewAt time.Time   // when the armed wait's renewal is due; zero if it has none
	timer   *time.Timer // the renewal timer, made by the first wait that renews
	wake    func()      // every wait's wake-up (Client.wake), made by the first
}

// wake is a wake-up of the loop's wait: the connection ended, the renewal
// timer fired, or Close was called. A wake-up left over from an earlier
// wait (a timer that fired as another wake-up claimed the wait, the end
// of a connection the loop has replaced) finds none of those true of the
// wait now armed, and does nothing.
func (c *Client) wake(k *keeper) {
	var renewing bool
	happened := func() bool {
		var ended bool
		select {
		case <-k.cn.Done():
			ended = true
		default:
		}
		closing := c.life.Err() != nil
		due := !k.renewAt.IsZero() && !time.Now().Before(k.renewAt)
		renewing = due && !ended && !closing
		return ended || closing || due
	}
	if c.claim(k, happened) {
		c.step(k, renewing)
	}
}

// claim reports whether the caller is the first wake-up of the loop's
// armed wait, and then disarms the others. happened, if not nil, is
// checked under the wait's lock, in the same step as the claim: a wake-up
// whose event was true of one wait must not claim the next.
func (c *Client) claim(k *keeper, happened func() bool) bool {
	k.wmu.Lock()
	if !k.waiting || (happened != nil && !happened()) {
		k.wmu.Unlock()
		return false
	}
	k.waiting = false
	timer := k.timer // under wmu: an await of the next wait may be making it
	k.wmu.Unlock()
	// The claimer alone runs from here to the loop's next wait.
	if n, ok := k.cn.Conn.(doneNotifier); ok {
		n.OnDone(nil)
	}
	if timer != nil {
		timer.Stop()
	}
	c.mu.Lock()
	if c.watching == k {
		c.watching = nil
	}
	c.mu.Unlock()
	return true
}

// renewDelay returns how long until the token is due for renewal; false if
// it never is.
func (c *Client) renewDelay(k *keeper) (time.Duration, bool) {
	if k.tok.RenewAt.IsZero() {
		return 0, false
	}
	d := time.Until(k.tok.RenewAt)
	if d <= 0 {
		// A token due for renewal as soon as it is handed out would
		// renew (or reconnect) in a tight loop.
		k.overdue++
		d = max(minRenewDelay, c.retry.Delay(k.overdue-1))
		c.log.Warn("the token provider returned a token already due for renewal", "next renewal in", d)
	} else {
		k.overdue = 0
	}
	return d, true
}

// await waits for the loop's next event: Close, the end of the
// connection, or the token's renewal time. With a connection that calls
// back when it ends, nothing waits: the event's wake-up runs the next
// step. Otherwise a goroutine waits.
func (c *Client) await(k *keeper) {
	d, renews := c.renewDelay(k)
	n, ok := k.cn.Conn.(doneNotifier)
	if !ok {
		go c.waitStep(k, d, renews)
		return
	}
	if k.wake == nil {
		k.wake = func() { c.wake(k) }
	}
	k.wmu.Lock()
	k.waiting = true
	k.renewAt = time.Time{}
	if renews {
		k.renewAt = time.Now().Add(d)
		if k.timer == nil {
			k.timer = time.AfterFunc(d, k.wake)
		} else {
			k.timer.Reset(d)
		}
	}
	k.wmu.Unlock()
	n.OnDone(k.wake)
	// Close ends life, then wakes the wait it finds here; a wait put here
	// after that sees life ended. Only a wait still armed is put here: one
	// already claimed (the connection had ended) may belong to a loop that
	// has moved on, or given up and been replaced.
	c.mu.Lock()
	k.wmu.Lock()
	if k.waiting {
		c.watching = k
	}
	k.wmu.Unlock()
	c.mu.Unlock()
	if c.life.Err() != nil && c.claim(k, nil) {
		go c.step(k, false)
	}
}

// wakeForClose runs the loop's next step, which returns, if the loop waits
// without a goroutine. Close calls it after ending life.
func (c *Client) wakeForClose() {
	c.mu.Lock()
	k := c.watching
	c.mu.Unlock()
	if k != nil && c.claim(k, nil) {
		go c.step(k, false)
	}
}

// waitStep is await on a goroutine: it waits for the next event, then
// runs the next step.
func (c *Client) waitStep(k *keeper, d time.Duration, renews bool) {
	var renew <-chan time.Time
	if renews {
		timer := time.NewTimer(d)
		defer timer.Stop()
		renew = timer.C
	}
	var renewing bool
	select {
	case <-c.life.Done():
	case <-k.cn.Done():
	case <-renew:
		renewing = true
	}
	c.step(k, renewing)
}

// step handles an event of the loop (renewing: the renewal time came;
// otherwise Close or the end of the connection), then waits for the next
// one, or ends the loop.
func (c *Client) step(k *keeper, renewing bool) {
	if c.handle(k, renewing) {
		c.await(k)
		return
	}
	k.done.Done()
}

// handle handles an event of the loop, reconnecting if the connection
// ended or the token is renewed by reconnecting. It reports whether the
// loop goes on.
func (c *Client) handle(k *keeper, renewing bool) bool {
	cn := k.cn
	switch {
	case c.life.Err() != nil:
		return false // Close takes the connection from here
	case !renewing:
		c.lost(cn, cn.Err(), &k.streak)
	default:
		if c.renewInPlace(cn, &k.tok) {
			return true
		}
		if c.life.Err() != nil {
			return false
		}
		// Renew by reconnecting, once running handlers have answered
		// (bounded, so the token cannot expire meanwhile); a lost
		// connection or Close ends the wait.
		c.log.Info("renewing the SAS token by reconnecting")
		switch c.waitForRenewal(cn, k.tok) {
		case renewalClosed:
			return false
		case renewalLost:
			c.lost(cn, cn.Err(), &k.streak)
		case renewalReady:
			c.mu.Lock()
			if c.conn == cn {
				c.conn = nil
			}
			c.setStateLocked(ConnectionStateConnecting, nil)
			c.mu.Unlock()
			cn.Close()
			k.streak = 0
		}
	}
	next, nextTok, err := c.dialWithRetry(&c.life, &k.streak)
	if err != nil {
		if c.life.Err() != nil {
			return false
		}
		c.log.Warn("giving up reconnecting", "error", err)
		c.mu.Lock()
		c.running = false
		c.setStateLocked(ConnectionStateDisconnected, err)
		c.mu.Unlock()
		return false
	}
	k.cn, k.tok = next, nextTok
	c.setState(ConnectionStateConnected, nil)
	c.log.Info("reconnected")
	return true
}

// lost handles the end of a connection the client did not close: it
// reports connecting with the reason, and counts a connection that did not
// last as a failure in streak.
func (c *Client) lost(cn *connection, err error, streak *int) {
	cn.Close() // release what a transport-ended connection still holds
	if err == nil {
		err = errors.New("iothub: the connection closed")
	}
	c.mu.Lock()
	lived := time.Since(cn.since)
	if lived < stableAfter {
		*streak++
		err = &shortLivedError{lived: lived, err: err}
	} else {
		*streak = 0
	}
	if c.conn == cn {
		c.conn = nil
	}
	c.setStateLocked(ConnectionStateConnecting, err)
	c.mu.Unlock()
	c.log.Info("connection lost", "error", err)
}

// renewInPlace renews the token on the live connection if the transport
// can (AMQP's put-token), within renewTimeout.
func (c *Client) renewInPlace(cn *connection, tok *auth.Token) bool {
	u, ok := cn.Conn.(transport.TokenUpdater)
	if !ok {
		return false
	}
	ctx, cancel := context.WithTimeout(&c.life, renewTimeout)
	defer cancel()
	next, err := c.tokens.Token(ctx)
	if err == nil {
		err = u.UpdateToken(ctx, next.Value)
	}
	if err != nil {
		c.log.Info("renewing the SAS token on the connection failed; reconnecting", "error", err)
		return false
	}
	*tok = next
	return true
}

type renewalWait int

const (
	renewalReady  renewalWait = iota // no handler runs (or the token is about to expire)
	renewalLost                      // the connection ended meanwhile
	renewalClosed                    // Close was called
)

// waitForRenewal waits until no handler is running, the connection ends,
// Close is called, or the token is a second from its expiry.
func (c *Client) waitForRenewal(cn *connection, tok auth.Token) renewalWait {
	ctx, cancel := context.WithDeadline(&c.life, tok.ExpiresOn.Add(-time.Second))
	defer cancel()
	err := c.waitCalls(ctx, 0, cn.Done())
	switch {
	case c.life.Err() != nil:
		return renewalClosed
	case errors.Is(err, errConnectionLost):
		return renewalLost
	}
	return renewalReady // idle, or the token is about to expire
}
