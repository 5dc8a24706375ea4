// Package faultproxy is a TCP proxy for tests that injects network faults
// between a client and a server: it can cut connections (TCP reset), stall
// them (nothing is delivered, as on a dead link), delay and throttle them,
// half-close them, refuse new ones, and switch the upstream so that new
// connections reach another server (a restarted hub).
//
// It forwards bytes and knows nothing of the protocols (TLS, MQTT, AMQP,
// WebSocket) it carries. It listens on a random loopback port.
//
//	p, err := faultproxy.New("127.0.0.1:8883")
//	defer p.Close()
//	// point the client at p.Addr(), then:
//	p.Cut()   // every live connection is reset
//	p.Stall() // every live connection goes silent
package faultproxy

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Direction names one direction of a proxied connection.
type Direction int

const (
	// ToClient is the direction from the upstream server to the client.
	ToClient Direction = iota
	// ToUpstream is the direction from the client to the upstream server.
	ToUpstream
)

// String returns "to-client" or "to-upstream".
func (d Direction) String() string {
	if d == ToClient {
		return "to-client"
	}
	return "to-upstream"
}

// Proxy is a fault-injecting TCP proxy. Its methods are safe for concurrent
// use.
type Proxy struct {
	ln net.Listener
	wg sync.WaitGroup

	mu       sync.Mutex
	upstream string
	conns    map[*Conn]struct{}
	closed   bool
	refuse   bool
	delay    time.Duration
	rate     int // bytes per second in each direction; 0 unlimited

	accepted atomic.Int64
	nextID   atomic.Int64
}

// New starts a proxy on a random loopback port that forwards every
// connection to upstream ("host:port").
func New(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, upstream: upstream, conns: map[*Conn]struct{}{}}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr returns the proxy's "127.0.0.1:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetUpstream makes new connections go to addr. Live connections keep
// their upstream.
func (p *Proxy) SetUpstream(addr string) {
	p.mu.Lock()
	p.upstream = addr
	p.mu.Unlock()
}

// SetRefuse makes the proxy accept and at once reset new connections
// (refuse true), as a host whose server is down would, or serve them again.
func (p *Proxy) SetRefuse(refuse bool) {
	p.mu.Lock()
	p.refuse = refuse
	p.mu.Unlock()
}

// SetDelay adds latency d to every chunk of bytes, in both directions, on
// live and new connections. Zero removes it.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// SetRate throttles every connection to bytesPerSecond in each direction.
// Zero removes the limit.
func (p *Proxy) SetRate(bytesPerSecond int) {
	p.mu.Lock()
	p.rate = max(bytesPerSecond, 0)
	p.mu.Unlock()
}

func (p *Proxy) shaping() (time.Duration, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delay, p.rate
}

// Conns returns the live connections, in no particular order.
func (p *Proxy) Conns() []*Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*Conn, 0, len(p.conns))
	for c := range p.conns {
		out = append(out, c)
	}
	return out
}

// Active returns how many connections are live (accepted, connected
// upstream and not yet torn down).
func (p *Proxy) Active() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Accepted returns how many connections the proxy has accepted in all,
// refused ones included.
func (p *Proxy) Accepted() int { return int(p.accepted.Load()) }

// Cut resets every live connection (TCP RST on both sides) and returns how
// many there were.
func (p *Proxy) Cut() int {
	cs := p.Conns()
	for _, c := range cs {
		c.Cut()
	}
	return len(cs)
}

// Stall makes every live connection silent: nothing is delivered in either
// direction and the server's FIN or RST is held back too, as on a dead
// link, until Resume. A client that gives up and closes its side tears the
// connection down. It returns how many connections it stalled.
func (p *Proxy) Stall() int {
	cs := p.Conns()
	for _, c := range cs {
		c.Stall()
	}
	return len(cs)
}

// Resume ends the stall of every live connection: what was held back is
// delivered.
func (p *Proxy) Resume() {
	for _, c := range p.Conns() {
		c.Resume()
	}
}

// HalfClose half-closes every live connection in direction d and returns
// how many there were.
func (p *Proxy) HalfClose(d Direction) int {
	cs := p.Conns()
	for _, c := range cs {
		c.HalfClose(d)
	}
	return len(cs)
}

// Close stops listening, resets every connection and waits for all of the
// proxy's goroutines to end. It is safe to call more than once.
func (p *Proxy) Close() error {
	p.mu.Lock()
	already := p.closed
	p.closed = true
	p.mu.Unlock()
	if !already {
		p.ln.Close()
	}
	p.Cut()
	p.wg.Wait()
	return nil
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		p.accepted.Add(1)
		p.mu.Lock()
		closed, refuse, upstream := p.closed, p.refuse, p.upstream
		if !closed {
			p.wg.Add(1)
		}
		p.mu.Unlock()
		if closed {
			reset(c)
			return
		}
		if refuse {
			reset(c)
			p.wg.Done()
			continue
		}
		go p.open(c, upstream)
	}
}

// open dials upstream for the accepted client connection cc and starts
// forwarding.
func (p *Proxy) open(cc net.Conn, upstream string) {
	defer p.wg.Done()
	uc, err := net.DialTimeout("tcp", upstream, 10*time.Second)
	if err != nil {
		reset(cc)
		return
	}
	c := &Conn{p: p, id: p.nextID.Add(1), client: cc, upstream: uc, done: make(chan struct{})}
	c.pipes[ToClient] = &pipe{c: c, dir: ToClient, src: uc, dst: cc, wake: make(chan struct{}, 1)}
	c.pipes[ToUpstream] = &pipe{c: c, dir: ToUpstream, src: cc, dst: uc, wake: make(chan struct{}, 1)}
	c.running.Store(2)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		reset(cc)
		reset(uc)
		return
	}
	p.conns[c] = struct{}{}
	p.wg.Add(4)
	p.mu.Unlock()
	for _, pp := range c.pipes {
		go pp.read()
		go pp.write()
	}
}

// reset closes c with a TCP RST.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// Conn is one proxied connection: the client's connection to the proxy and
// the proxy's connection upstream.
type Conn struct {
	p        *Proxy
	id       int64
	client   net.Conn
	upstream net.Conn
	pipes    [2]*pipe
	done     chan struct{}
	once     sync.Once
	running  atomic.Int32 // writers that have not finished
	stalled  atomic.Bool
}

// ID is the connection's sequence number, from 1 in order of acceptance.
func (c *Conn) ID() int64 { return c.id }

// ClientAddr is the client's address as the proxy sees it.
func (c *Conn) ClientAddr() net.Addr { return c.client.RemoteAddr() }

// Done is closed once the connection has been torn down.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Cut resets both sides of the connection at once.
func (c *Conn) Cut() { c.teardown(true) }

// Stall stops delivering anything in either direction (see Proxy.Stall).
func (c *Conn) Stall() { c.stalled.Store(true) }

// Resume delivers what the stall held back and forwards again.
func (c *Conn) Resume() {
	c.stalled.Store(false)
	for _, pp := range c.pipes {
		pp.signal()
	}
}

// HalfClose sends a FIN in direction d (ToClient: the client reads EOF;
// ToUpstream: the server does) and discards whatever the other end still
// sends that way. The opposite direction keeps working.
func (c *Conn) HalfClose(d Direction) {
	pp := c.pipes[d]
	pp.mu.Lock()
	pp.shut = true
	pp.q = nil
	pp.mu.Unlock()
	pp.signal()
}

// teardown closes both sides once; rst sends resets instead of FINs.
func (c *Conn) teardown(rst bool) {
	c.once.Do(func() {
		close(c.done)
		if rst {
			reset(c.client)
			reset(c.upstream)
		} else {
			c.client.Close()
			c.upstream.Close()
		}
		c.p.mu.Lock()
		delete(c.p.conns, c)
		c.p.mu.Unlock()
	})
}

type chunk struct {
	b  []byte
	at time.Time
}

// pipe forwards one direction: read queues chunks, write delivers them
// when the delay has passed and the connection is not stalled.
type pipe struct {
	c        *Conn
	dir      Direction
	src, dst net.Conn
	wake     chan struct{}

	mu   sync.Mutex
	q    []chunk
	eof  bool // src ended; after the queue drains, dst gets a FIN
	shut bool // half-closed by HalfClose
}

func (pp *pipe) signal() {
	select {
	case pp.wake <- struct{}{}:
	default:
	}
}

func (pp *pipe) read() {
	defer pp.c.p.wg.Done()
	buf := make([]byte, 32*1024)
	for {
		n, err := pp.src.Read(buf)
		if n > 0 {
			pp.mu.Lock()
			if !pp.shut {
				pp.q = append(pp.q, chunk{b: append([]byte(nil), buf[:n]...), at: time.Now()})
			}
			pp.mu.Unlock()
			pp.signal()
		}
		if err != nil {
			if pp.dir == ToUpstream && pp.c.stalled.Load() {
				// The client gave up on the stalled link: nothing is left
				// to deliver to it, so the connection goes.
				pp.c.teardown(false)
				return
			}
			pp.mu.Lock()
			pp.eof = true
			pp.mu.Unlock()
			pp.signal()
			return
		}
	}
}

func (pp *pipe) write() {
	c := pp.c
	defer c.p.wg.Done()
	for {
		pp.mu.Lock()
		var next *chunk
		finish := false
		if !c.stalled.Load() {
			switch {
			case pp.shut:
				finish = true
			case len(pp.q) > 0:
				next = &pp.q[0]
				pp.q = pp.q[1:]
			case pp.eof:
				finish = true
			}
		}
		pp.mu.Unlock()
		if finish {
			if tc, ok := pp.dst.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
			if c.running.Add(-1) == 0 {
				c.teardown(false)
			}
			return
		}
		if next == nil {
			select {
			case <-pp.wake:
				continue
			case <-c.done:
				return
			}
		}
		delay, rate := c.p.shaping()
		if wait := time.Until(next.at.Add(delay)); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-c.done:
				t.Stop()
				return
			}
		}
		if err := pp.deliver(next.b, rate); err != nil {
			c.teardown(true)
			return
		}
	}
}

// deliver writes b to dst, at most rate bytes per second when rate > 0.
func (pp *pipe) deliver(b []byte, rate int) error {
	if rate <= 0 {
		_, err := pp.dst.Write(b)
		return err
	}
	slice := max(rate/20, 1) // about 50 ms worth per write
	for len(b) > 0 {
		n := min(slice, len(b))
		if _, err := pp.dst.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
		t := time.NewTimer(time.Duration(n) * time.Second / time.Duration(rate))
		select {
		case <-t.C:
		case <-pp.c.done:
			t.Stop()
			return net.ErrClosed
		}
	}
	return nil
}
