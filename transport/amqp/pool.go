package amqp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/iothub-go/iothub/internal/amqpcbs"
	"github.com/iothub-go/iothub/transport"
)

// IoT Hub's limits on identities per AMQP connection. The service refuses
// the put-token of the 1,001st identity on one connection with status 500,
// "The maximum number of tokens per connection (1000) has been reached.";
// the Java SDK's MultiplexingClient allows 1,000 devices over AMQPS and 500
// over AMQPS-WS, whose limit the service enforces by closing the
// connection without a useful error.
const (
	// MaxDevicesPerConn is the most identities IoT Hub authenticates on
	// one AMQP connection over TLS.
	MaxDevicesPerConn = 1000
	// MaxDevicesPerWebSocketConn is the most over WebSocket.
	MaxDevicesPerWebSocketConn = 500
)

// Pool defaults.
const (
	// DefaultDevicesPerConn leaves room below MaxDevicesPerConn, as the .NET
	// SDK's pool intends (995).
	DefaultDevicesPerConn = 995
	// DefaultDialRate is how many connections a Pool opens per second at
	// most.
	DefaultDialRate = 10
	// DefaultReconnectJitter is the longest a Pool waits, at random, before
	// it dials again after losing a connection.
	DefaultReconnectJitter = time.Second
	// DefaultPendingTokens is how many put-tokens a pooled connection has
	// in flight at once over TLS. Over WebSocket it is 30: IoT Hub closes
	// an AMQPS-WS connection on which 31 or more identities authenticate
	// at once (the Java SDK keeps to 30 for that reason).
	DefaultPendingTokens = 100
)

// PoolOptions configures a [Pool]. The zero value is AMQP over TLS with
// IoT Hub's limits.
type PoolOptions struct {
	// WebSocket selects AMQP over WebSocket (port 443) instead of AMQP
	// over TLS (port 5671).
	WebSocket bool
	// IdleTimeout is the AMQP idle time-out each connection announces.
	// Zero means 120 s.
	IdleTimeout time.Duration
	// DevicesPerConn is how many identities one connection carries. It
	// counts every identity the connection has authenticated since it
	// opened, not those present now, as IoT Hub counts tokens: a device
	// that leaves does not make room. Zero means DefaultDevicesPerConn
	// over TLS and MaxDevicesPerWebSocketConn over WebSocket; more than
	// MaxDevicesPerConn (MaxDevicesPerWebSocketConn) is refused.
	DevicesPerConn int
	// DialRate bounds how many connections the pool opens per second, all
	// together, so that a fleet that lost its connections at once does
	// not dial at once. Zero means DefaultDialRate.
	DialRate float64
	// ReconnectJitter is the longest a connection opened after the pool
	// lost one waits before it dials, at random (full jitter), so that
	// many processes that lost the hub at once do not return together.
	// Zero means DefaultReconnectJitter; negative means no wait.
	ReconnectJitter time.Duration
	// PendingTokens bounds the put-tokens in flight on one connection.
	// Zero means DefaultPendingTokens over TLS and 30 over WebSocket.
	PendingTokens int
}

// Pool is a [transport.Transport] that puts many device and module
// identities on a few shared AMQP connections: AMQP multiplexing, as the
// Java SDK's MultiplexingClient and the .NET SDK's connection pool do it.
// Every device.Client given the same Pool shares its connections. Each
// client keeps its own handlers, status, retries and token renewal: its
// SAS token is its own CBS put-token on the shared connection, and its
// links are its own, so a refused key, an expired token, a disabled
// device or a detached link ends that device's connection alone.
//
// A Pool fills one connection up to PoolOptions.DevicesPerConn identities
// before it opens the next, and places a device that comes back on the
// connection that already counts it. When a connection drops, every
// device on it sees its connection lost and reconnects through the pool,
// which opens replacement connections after a random wait and at most
// PoolOptions.DialRate per second.
//
// Only shared-access-signature identities can share a connection: an
// X.509 identity is the TLS connection's client certificate, so Dial
// refuses it (use [New] for such a device). All the devices of a Pool
// connect to one hub, at the address and with the TLS configuration of
// the first device that dialed.
type Pool struct {
	ws       bool
	idle     time.Duration
	perConn  int
	interval time.Duration // 1 / dial rate
	jitter   time.Duration
	pending  int

	mu       sync.Mutex
	closed   bool
	target   *poolTarget
	conns    []*carrier // open or opening, oldest first
	nextDial time.Time  // the dial rate's next free slot
	lostAt   time.Time  // when a connection was last lost
	life     context.Context
	endLife  context.CancelFunc

	dials     atomic.Int64
	lost      atomic.Int64
	peakRate  atomic.Int64 // most dials started in one second
	rateSec   int64        // the second rateCount counts; under mu
	rateCount int64
}

// poolTarget is the hub every device of a pool connects to.
type poolTarget struct {
	address  string
	hostName string
	tls      *tls.Config
	info     string
}

// NewPool returns a pool with no connection yet; the first Dial opens one.
// opts may be nil.
func NewPool(opts *PoolOptions) (*Pool, error) {
	var o PoolOptions
	if opts != nil {
		o = *opts
	}
	limit := MaxDevicesPerConn
	if o.WebSocket {
		limit = MaxDevicesPerWebSocketConn
	}
	switch {
	case o.DevicesPerConn < 0 || o.DevicesPerConn > limit:
		return nil, fmt.Errorf("iothub: amqp: DevicesPerConn %d is out of range: IoT Hub takes at most %d identities on one connection", o.DevicesPerConn, limit)
	case o.DialRate < 0:
		return nil, errors.New("iothub: amqp: DialRate must not be negative")
	case o.PendingTokens < 0:
		return nil, errors.New("iothub: amqp: PendingTokens must not be negative")
	case o.IdleTimeout < 0:
		return nil, errors.New("iothub: amqp: IdleTimeout must not be negative")
	}
	p := &Pool{ws: o.WebSocket, idle: o.IdleTimeout, perConn: o.DevicesPerConn, jitter: o.ReconnectJitter, pending: o.PendingTokens}
	if p.idle == 0 {
		p.idle = 120 * time.Second
	}
	if p.perConn == 0 {
		p.perConn = min(DefaultDevicesPerConn, limit)
	}
	rate := o.DialRate
	if rate == 0 {
		rate = DefaultDialRate
	}
	p.interval = time.Duration(float64(time.Second) / rate)
	if p.jitter == 0 {
		p.jitter = DefaultReconnectJitter
	}
	if p.pending == 0 {
		p.pending = DefaultPendingTokens
		if p.ws {
			p.pending = 30
		}
	}
	p.life, p.endLife = context.WithCancel(context.Background())
	return p, nil
}

// Name returns "amqp" or "amqp-ws".
func (p *Pool) Name() string {
	if p.ws {
		return "amqp-ws"
	}
	return "amqp"
}

// MethodSupport returns nil: AMQP carries direct methods.
func (p *Pool) MethodSupport() error { return nil }

// TwinSupport returns nil: AMQP carries device twins.
func (p *Pool) TwinSupport() error { return nil }

// PoolStats counts what a Pool has done.
type PoolStats struct {
	Conns    int   // connections open or opening now
	Devices  int   // device connections on them now
	Dials    int64 // connections dialed since NewPool
	Lost     int64 // connections lost since NewPool (not counting Close)
	PeakRate int64 // the most dials started within one second
}

// Stats returns the pool's counters.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	s := PoolStats{Conns: len(p.conns)}
	conns := append([]*carrier(nil), p.conns...)
	p.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		s.Devices += len(c.devices)
		c.mu.Unlock()
	}
	s.Dials, s.Lost, s.PeakRate = p.dials.Load(), p.lost.Load(), p.peakRate.Load()
	return s
}

// Close closes every connection of the pool; the devices on them see
// their connections lost, and later Dials fail. Close the device clients
// first to end them cleanly.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	p.endLife()
	for _, c := range conns {
		c.fail(errPoolClosed)
	}
	return nil
}

var errPoolClosed = errors.New("iothub: amqp: the pool is closed")

// Dial authenticates one identity on a shared connection, opening one if
// none has room, and returns the device's connection. It refuses
// identities without a SAS token (X.509) and devices of another hub.
func (p *Pool) Dial(ctx context.Context, cfg transport.Config) (transport.Conn, error) {
	if cfg.Token == "" || (cfg.TLSConfig != nil && (len(cfg.TLSConfig.Certificates) > 0 || cfg.TLSConfig.GetClientCertificate != nil)) {
		return nil, fmt.Errorf("%w: amqp: a pooled connection carries only shared-access-signature identities; %s authenticates with an X.509 certificate, which belongs to a TLS connection of its own (use amqp.New for it)", transport.ErrUnsupported, cfg.Identity)
	}
	key := cfg.Identity.Resource()
	for {
		car, err := p.pick(cfg, key)
		if err != nil {
			return nil, err
		}
		if err := car.wait(ctx); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		c := newConn(cfg)
		c.car = car
		if !car.join(c) {
			continue // lost meanwhile: pick again
		}
		err = c.putToken(ctx, cfg.Token)
		if errors.Is(err, errConnFull) {
			car.leave(c)
			car.setFull()
			continue
		}
		if err == nil && c.modelID != "" {
			_, err = c.eventsSender(ctx)
		}
		if err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
}

// pick returns the connection for identity key: the one that counts it
// already, else the oldest with room, else a new one, which it reserves a
// place on.
func (p *Pool) pick(cfg transport.Config, key string) (*carrier, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errPoolClosed
	}
	if p.target == nil {
		p.target = &poolTarget{address: cfg.Address, hostName: cfg.Identity.HostName, tls: cfg.TLSConfig, info: cfg.ProductInfo}
	} else if cfg.Address != p.target.address || !strings.EqualFold(cfg.Identity.HostName, p.target.hostName) {
		return nil, fmt.Errorf("%w: amqp: a pool connects to one hub (%s at %q); %s is for %s at %q", transport.ErrUnsupported, p.target.hostName, p.target.address, cfg.Identity, cfg.Identity.HostName, cfg.Address)
	}
	for _, c := range p.conns {
		if c.counts(key) {
			return c, nil
		}
	}
	for _, c := range p.conns {
		if c.reserve(key) {
			return c, nil
		}
	}
	c := p.newCarrier()
	c.reserve(key)
	return c, nil
}

// newCarrier starts opening a connection; under p.mu.
func (p *Pool) newCarrier() *carrier {
	c := &carrier{
		p:       p,
		ready:   make(chan struct{}),
		done:    make(chan struct{}),
		seen:    map[string]bool{},
		devices: map[*conn]struct{}{},
		owners:  map[string]*conn{},
		waiting: map[string]chan cbsReply{},
		tokens:  make(chan struct{}, p.pending),
	}
	c.life, c.endLife = context.WithCancel(p.life)
	now := time.Now()
	at := now
	if p.nextDial.After(at) {
		at = p.nextDial
	}
	if !p.lostAt.IsZero() && now.Sub(p.lostAt) < 10*time.Second && p.jitter > 0 {
		at = at.Add(rand.N(p.jitter))
	}
	p.nextDial = at.Add(p.interval)
	p.conns = append(p.conns, c)
	go c.open(at)
	return c
}

// countDial records a dial for the peak dial rate.
func (p *Pool) countDial() {
	p.dials.Add(1)
	sec := time.Now().Unix()
	p.mu.Lock()
	if sec != p.rateSec {
		p.rateSec, p.rateCount = sec, 0
	}
	p.rateCount++
	n := p.rateCount
	p.mu.Unlock()
	for {
		old := p.peakRate.Load()
		if n <= old || p.peakRate.CompareAndSwap(old, n) {
			return
		}
	}
}

// drop forgets a connection that ended.
func (p *Pool) drop(c *carrier, lost bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, x := range p.conns {
		if x == c {
			p.conns = append(p.conns[:i], p.conns[i+1:]...)
			break
		}
	}
	if lost {
		p.lostAt = time.Now()
		p.lost.Add(1)
	}
}

// carrier is one shared AMQP connection: its session, which every device
// on it uses, and its $cbs link pair, on which every device puts its
// token.
type carrier struct {
	p       *Pool
	ready   chan struct{} // closed once open, or failed
	done    chan struct{} // closed when it has ended
	life    context.Context
	endLife context.CancelFunc
	ac      *amqp.Conn
	session *amqp.Session
	cbsOut  *amqp.Sender
	tokens  chan struct{} // put-tokens in flight

	mu      sync.Mutex
	err     error
	ended   bool
	full    bool
	seen    map[string]bool // identities counted against the limit
	devices map[*conn]struct{}
	owners  map[string]*conn // link name → the device it belongs to
	waiting map[string]chan cbsReply
}

type cbsReply struct {
	code int64
	desc string
}

// errConnFull is the hub's refusal of one identity more on a connection.
var errConnFull = errors.New("connection full")

// counts reports whether the connection has counted identity key; under p.mu.
func (c *carrier) counts(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.ended && c.seen[key]
}

// reserve counts identity key on the connection if it has room; under p.mu.
func (c *carrier) reserve(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended || c.full || len(c.seen) >= c.p.perConn {
		return false
	}
	c.seen[key] = true
	return true
}

// setFull takes no more identities: the hub refused one.
func (c *carrier) setFull() {
	c.mu.Lock()
	c.full = true
	c.mu.Unlock()
}

// wait returns once the connection is open, or its error.
func (c *carrier) wait(ctx context.Context) error {
	select {
	case <-c.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// open dials at time at, then begins the session and attaches $cbs.
func (c *carrier) open(at time.Time) {
	p := c.p
	var in *amqp.Receiver
	var opened func(*amqp.Conn) // set once the frame watch exists
	err := func() error {
		if d := time.Until(at); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-p.life.Done():
				t.Stop()
				return errPoolClosed
			}
		}
		ctx, cancel := context.WithTimeout(p.life, 60*time.Second)
		defer cancel()
		p.countDial()
		tr := &Transport{ws: p.ws, idle: p.idle}
		nc, err := tr.dialNet(ctx, transport.Config{Address: p.target.address, TLSConfig: p.target.tls})
		if err != nil {
			return err
		}
		w := newFrameWatch(nc, pooledLinks, c.hubDetached, c.hubEnded)
		opened = w.afterConnEnd(c.fail)
		ac, err := amqp.NewConn(ctx, w, &amqp.ConnOptions{
			ContainerID: newUUID().String(),
			HostName:    p.target.hostName,
			IdleTimeout: p.idle,
		})
		if err != nil {
			nc.Close()
			return fmt.Errorf("iothub: amqp: open: %w", err)
		}
		fail := func(err error) error {
			ac.Close()
			return err
		}
		sess, err := ac.NewSession(ctx, nil)
		if err != nil {
			return fail(fmt.Errorf("iothub: amqp: begin: %w", err))
		}
		out, err := sess.NewSender(ctx, amqpcbs.Address, &amqp.SenderOptions{Name: c.ownName("cbs-sender")})
		if err != nil {
			return fail(wrap("attaching $cbs", err))
		}
		in, err = sess.NewReceiver(ctx, amqpcbs.Address, &amqp.ReceiverOptions{Name: c.ownName("cbs-receiver"), Credit: int32(p.pending), MaxMessageSize: MaxMessageSize})
		if err != nil {
			return fail(wrap("attaching $cbs", err))
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.ended { // the pool closed meanwhile
			return fail(errPoolClosed)
		}
		c.ac, c.session, c.cbsOut = ac, sess, out
		return nil
	}()
	if err != nil {
		if opened != nil {
			opened(nil)
		}
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.ready)
		c.fail(err)
		return
	}
	close(c.ready)
	c.mu.Lock()
	ac := c.ac
	c.mu.Unlock()
	go c.receiveReplies(in)
	opened(ac) // from now on, the end of ac ends the connection
}

// pooledLinks bounds the link names a pooled connection's frame scanner
// remembers: six links for each of MaxDevicesPerConn identities, $cbs,
// and room for links detaching while others attach.
const pooledLinks = 8192

// ownName returns a name for one of the connection's own ($cbs) links.
func (c *carrier) ownName(prefix string) string {
	name := linkName(prefix)
	c.mu.Lock()
	if c.owners != nil {
		c.owners[name] = nil
	}
	c.mu.Unlock()
	return name
}

// own records that link name belongs to device d.
func (c *carrier) own(name string, d *conn) {
	c.mu.Lock()
	if c.owners != nil {
		c.owners[name] = d
	}
	c.mu.Unlock()
}

// join adds a device and gives it the session it attaches on; false if
// the connection has ended. The device's session is set under both locks,
// so that fail, which releases it, cannot come in between.
func (c *carrier) join(d *conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended || c.session == nil {
		return false
	}
	d.mu.Lock()
	d.session = c.session
	d.mu.Unlock()
	c.devices[d] = struct{}{}
	return true
}

// leave detaches the links of device d and forgets it. It does not wait
// for the hub's answers: the hub detaches them in its own time, and the
// connection forgets their names then.
func (c *carrier) leave(d *conn) {
	c.mu.Lock()
	_, present := c.devices[d]
	delete(c.devices, d)
	ended := c.ended
	c.mu.Unlock()
	if !present {
		return
	}
	d.mu.Lock()
	var closers []func(context.Context) error
	var names []string
	if d.methodsS != nil {
		closers, names = append(closers, d.methodsS.Close, d.methodsR.Close), append(names, d.methodsS.LinkName(), d.methodsR.LinkName())
		d.methodsS, d.methodsR = nil, nil
	}
	if d.events != nil {
		closers, names = append(closers, d.events.Close), append(names, d.events.LinkName())
		d.events = nil
	}
	if d.twin != nil && d.twin.s != nil {
		closers, names = append(closers, d.twin.s.Close, d.twin.r.Close), append(names, d.twin.s.LinkName(), d.twin.r.LinkName())
	}
	if d.c2dR != nil {
		closers, names = append(closers, d.c2dR.Close), append(names, d.c2dR.LinkName())
	}
	var links []string
	for n := range d.links {
		links = append(links, n)
	}
	d.mu.Unlock()
	if ended {
		return
	}
	d.closingLinks(names...)
	if len(closers) > 0 {
		// Closing a link waits for the hub's detach; do it off the
		// caller's goroutine, bounded by the connection's life.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			stop := context.AfterFunc(c.p.life, cancel)
			defer stop()
			for _, cl := range closers {
				_ = cl(ctx)
			}
			c.forget(links)
		}()
		return
	}
	c.forget(links)
}

// forget drops link names from the owners.
func (c *carrier) forget(names []string) {
	c.mu.Lock()
	for _, n := range names {
		delete(c.owners, n)
	}
	c.mu.Unlock()
}

// hubDetached passes the hub's detach of a link to the device it belongs
// to. A detached $cbs link ends the connection: no device on it could
// renew its token.
func (c *carrier) hubDetached(name, cond, desc string) {
	c.mu.Lock()
	d, known := c.owners[name]
	delete(c.owners, name)
	c.mu.Unlock()
	switch {
	case !known:
	case d == nil:
		c.fail(fmt.Errorf("the hub detached the $cbs link%s", describe(cond, desc)))
	default:
		d.hubDetached(name, cond, desc)
	}
}

// hubEnded ends the connection: the hub ended the session every device
// uses.
func (c *carrier) hubEnded(_ []string, cond, desc string) {
	c.fail(fmt.Errorf("the hub ended the session%s", describe(cond, desc)))
}

// fail ends the connection and every device connection on it.
func (c *carrier) fail(err error) {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return
	}
	c.ended = true
	if c.err == nil {
		c.err = err
	}
	devices := make([]*conn, 0, len(c.devices))
	for d := range c.devices {
		devices = append(devices, d)
	}
	clear(c.devices)
	waiting := c.waiting
	c.waiting = map[string]chan cbsReply{}
	// Let go of go-amqp's objects: a device client holds its ended conn,
	// and through it this carrier, until it has connected again.
	ac := c.ac
	c.ac, c.session, c.cbsOut, c.owners = nil, nil, nil, nil
	c.mu.Unlock()
	close(c.done)
	c.endLife()
	for _, ch := range waiting {
		close(ch)
	}
	c.p.drop(c, !errors.Is(err, errPoolClosed))
	if ac != nil {
		// Not on this goroutine: fail may run on go-amqp's reader (the
		// frame scanner saw the hub end the session), and Close waits for
		// the reader to return.
		go ac.Close()
	}
	if err == nil {
		err = errors.New("connection closed by the hub")
	}
	for _, d := range devices {
		d.fail(fmt.Errorf("the shared connection: %w", err))
		d.release()
	}
}

// putToken presents identity name's token on the shared $cbs link and
// waits for its reply, with at most PoolOptions.PendingTokens in flight.
func (c *carrier) putToken(ctx context.Context, name, token string) error {
	select {
	case c.tokens <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return c.lostErr("put-token")
	}
	defer func() { <-c.tokens }()
	req, id := amqpcbs.Request(amqpcbs.TokenType, name, token)
	ch := make(chan cbsReply, 1)
	c.mu.Lock()
	out := c.cbsOut
	if c.ended || out == nil {
		c.mu.Unlock()
		return c.lostErr("put-token")
	}
	c.waiting[id] = ch
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.waiting, id)
		c.mu.Unlock()
	}
	if err := out.Send(ctx, req, nil); err != nil {
		forget()
		return wrap("put-token", err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return c.lostErr("put-token")
		}
		if r.code == 500 && strings.Contains(r.desc, "maximum number of tokens") {
			return errConnFull
		}
		return putTokenResult(r.code, r.desc)
	case <-ctx.Done():
		forget()
		return ctx.Err()
	}
}

func (c *carrier) lostErr(what string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Errorf("iothub: amqp: %s: the shared connection was lost: %v", what, c.err)
}

// receiveReplies hands each put-token reply to the request waiting for it.
func (c *carrier) receiveReplies(in *amqp.Receiver) {
	ctx := c.life
	for {
		msg, err := in.Receive(ctx, nil)
		if err != nil {
			if ctx.Err() == nil {
				c.fail(fmt.Errorf("$cbs link: %w", err))
			}
			return
		}
		_ = in.AcceptMessage(ctx, msg)
		if msg.Properties == nil {
			continue
		}
		id := fmt.Sprint(msg.Properties.CorrelationID)
		code, _ := amqpcbs.ToInt(msg.ApplicationProperties["status-code"])
		desc, _ := msg.ApplicationProperties["status-description"].(string)
		c.mu.Lock()
		ch := c.waiting[id]
		delete(c.waiting, id)
		c.mu.Unlock()
		if ch != nil {
			ch <- cbsReply{code: code, desc: desc}
		}
	}
}

var _ transport.Transport = (*Pool)(nil)
