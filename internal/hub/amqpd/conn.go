package amqpd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

var (
	headerAMQP = []byte("AMQP\x00\x01\x00\x00")
	headerSASL = []byte("AMQP\x03\x01\x00\x00")
)

// AMQP error conditions the hub sends.
const (
	condDecodeError      Symbol = "amqp:decode-error"
	condFramingError     Symbol = "amqp:connection:framing-error"
	condForced           Symbol = "amqp:connection:forced"
	condNotAllowed       Symbol = "amqp:not-allowed"
	condNotFound         Symbol = "amqp:not-found"
	condUnauthorized     Symbol = "amqp:unauthorized-access"
	condResourceLimit    Symbol = "amqp:resource-limit-exceeded"
	condInternal         Symbol = "amqp:internal-error"
	condInvalidField     Symbol = "amqp:invalid-field"
	condMessageSize      Symbol = "amqp:link:message-size-exceeded"
	condTransferLimit    Symbol = "amqp:link:transfer-limit-exceeded"
	condStolen           Symbol = "amqp:link:stolen"
	condDetachForced     Symbol = "amqp:link:detach-forced"
	condUnattachedHandle Symbol = "amqp:session:unattached-handle"
	condHandleInUse      Symbol = "amqp:session:handle-in-use"
	condWindowViolation  Symbol = "amqp:session:window-violation"
	condArgumentError    Symbol = "com.microsoft:argument-error"
	condTimeout          Symbol = "com.microsoft:timeout"
	condDeviceThrottled  Symbol = "com.microsoft:device-container-throttled"
	condLockLost         Symbol = "com.microsoft:message-lock-lost"
	condNotImplemented   Symbol = "amqp:not-implemented"
)

// inbound is what the read goroutine hands the connection loop.
type inbound struct {
	f   frame
	err error
}

// conn is one AMQP connection. After the handshake, all of its protocol
// state is owned by one goroutine (the loop); other goroutines reach it
// only through post.
type conn struct {
	s    *Server
	nc   net.Conn
	br   *bufio.Reader
	info ConnInfo
	log  *slog.Logger

	done       chan struct{} // closed when serve has returned
	loopDone   chan struct{} // closed when the loop has ended
	in         chan inbound
	readerDone chan struct{}
	wake       chan struct{}
	lastRead   atomic.Int64 // unix nanoseconds of the last frame read
	closeOnce  sync.Once

	mu      sync.Mutex
	posted  []func()
	running bool // the loop runs; posts will be served
	ended   bool // the loop has ended; posts are dropped

	// Loop-owned state.
	wbuf         []byte
	peerMaxFrame uint32 // largest frame the peer accepts, capped at MaxFrameSize
	peerIdle     time.Duration
	peerChanMax  uint16
	sessions     map[uint16]*session // by the peer's channel
	localChans   map[uint16]*session
	units        map[string]*unit // by identity key
	tokens       map[string]*cbsToken
	hubToken     *cbsToken
	serviceToken *cbsToken // a hub policy (or bearer) token with ServiceConnect (service.go)
	plain        *plainAuth
	plainTimer   *time.Timer
	closing      bool // a close frame was sent
	finished     bool // the loop should end
	quick        bool // end right after sending close (hub shutdown)
	closeTimer   *time.Timer
	serveErr     error
	buffered     int // bytes of partly received messages, on all links
}

func newConn(s *Server, nc net.Conn, info ConnInfo) *conn {
	return &conn{
		s:          s,
		nc:         nc,
		info:       info,
		log:        s.log.With("protocol", info.Protocol, "remote", remoteAddr(nc)),
		done:       make(chan struct{}),
		loopDone:   make(chan struct{}),
		in:         make(chan inbound),
		readerDone: make(chan struct{}),
		wake:       make(chan struct{}, 1),
		sessions:   map[uint16]*session{},
		localChans: map[uint16]*session{},
		units:      map[string]*unit{},
		tokens:     map[string]*cbsToken{},
	}
}

func remoteAddr(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

// closeSocket closes the network connection once.
func (c *conn) closeSocket() {
	c.closeOnce.Do(func() { _ = c.nc.Close() })
}

// post runs f on the loop. It never blocks, and reports false when the
// connection has ended (f will never run).
func (c *conn) post(f func()) bool {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return false
	}
	c.posted = append(c.posted, f)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return true
}

// shutdown ends the connection for Server.Close: with a close frame
// when the connection is open, by closing the socket otherwise.
func (c *conn) shutdown() {
	c.mu.Lock()
	running := c.running
	c.mu.Unlock()
	if !running || !c.post(func() {
		c.quick = true
		c.fail(condForced, "The hub is shutting down")
	}) {
		go c.closeSocket()
	}
}

// serve runs the connection to its end.
func (c *conn) serve() (err error) {
	defer close(c.done)
	defer c.closeSocket()
	c.br = bufio.NewReaderSize(c.nc, 16*1024)
	if err := c.handshake(); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
			// The client went away (or the hub is closing).
			c.log.Debug("amqp connection ended during the handshake", "reason", trimErr(err))
		} else {
			c.log.Info("amqp connection refused", "reason", trimErr(err))
		}
		return err
	}
	c.lastRead.Store(time.Now().UnixNano())
	go c.readLoop()
	c.loop()
	close(c.loopDone)
	c.teardown()
	c.closeSocket()
	<-c.readerDone
	return c.serveErr
}

func trimErr(err error) string {
	s := err.Error()
	if len(s) > 9 && s[:8] == "iothub: " {
		return s[8:]
	}
	return s
}

// handshake exchanges protocol headers, runs SASL when the client asks
// for it, and exchanges open frames.
func (c *conn) handshake() error {
	t := time.AfterFunc(c.s.connectWait, c.closeSocket)
	defer t.Stop()
	hdr := make([]byte, 8)
	if _, err := io.ReadFull(c.br, hdr); err != nil {
		return fmt.Errorf("iothub: reading the AMQP protocol header: %w", err)
	}
	switch {
	case bytes.Equal(hdr, headerSASL):
		if err := c.writeRaw(headerSASL); err != nil {
			return err
		}
		if err := c.saslExchange(); err != nil {
			return err
		}
		if _, err := io.ReadFull(c.br, hdr); err != nil {
			return fmt.Errorf("iothub: reading the AMQP protocol header after SASL: %w", err)
		}
		if !bytes.Equal(hdr, headerAMQP) {
			_ = c.writeRaw(headerAMQP)
			return fmt.Errorf("iothub: unsupported protocol header %q after SASL", hdr)
		}
		if err := c.writeRaw(headerAMQP); err != nil {
			return err
		}
	case bytes.Equal(hdr, headerAMQP):
		if err := c.writeRaw(headerAMQP); err != nil {
			return err
		}
	default:
		// AMQP 1.0 §2.2: answer with a supported header, then close.
		_ = c.writeRaw(headerAMQP)
		return fmt.Errorf("iothub: unsupported protocol header %q", hdr)
	}

	f, err := readFrame(c.br, MaxFrameSize)
	var o *open
	if err == nil {
		var ok bool
		if o, ok = f.body.(*open); !ok || f.typ != frameTypeAMQP {
			err = framingErr("the first frame is not an open")
		}
	}
	if err != nil {
		if !errors.Is(err, errDecode) && !errors.Is(err, errFraming) {
			return fmt.Errorf("iothub: reading the open frame: %w", err)
		}
		// An open must precede the close that says why.
		c.peerMaxFrame = minMaxFrameSize
		c.sendOpen()
		c.sendClose(protocolError(err))
		_ = c.flush()
		return err
	}
	c.peerMaxFrame = MaxFrameSize
	if o.maxFrameSize != 0 && o.maxFrameSize < MaxFrameSize {
		c.peerMaxFrame = o.maxFrameSize
	}
	c.peerChanMax = o.channelMax
	c.peerIdle = time.Duration(o.idleTimeout) * time.Millisecond
	c.sendOpen()
	if o.maxFrameSize != 0 && o.maxFrameSize < minMaxFrameSize {
		c.sendClose(&amqpError{condition: condInvalidField, description: fmt.Sprintf("max-frame-size %d is below the minimum of 512", o.maxFrameSize)})
		_ = c.flush()
		return errors.New("iothub: client announced a max-frame-size below 512")
	}
	// From now on the client may consider the connection open: a hub
	// shutdown must reach it as a close frame, through the loop.
	c.mu.Lock()
	c.running = true
	c.mu.Unlock()
	if err := c.flush(); err != nil {
		return err
	}
	if !t.Stop() {
		return errors.New("iothub: AMQP handshake timed out")
	}
	if c.plain != nil {
		exp := c.plain.expiry
		c.plainTimer = time.AfterFunc(time.Until(exp), func() {
			c.post(func() {
				c.fail(condUnauthorized, hubErrorJSON(engine.NewError(engine.CodeUnauthorized,
					"The SAS token of the connection (SASL PLAIN) expired")))
			})
		})
	}
	return nil
}

func (c *conn) sendOpen() {
	var idle any
	if c.s.idleTimeout > 0 {
		idle = uint32(c.s.idleTimeout / time.Millisecond)
	}
	c.send(0, performative(descOpen, c.s.e.HostName(), nil, uint32(MaxFrameSize), uint16(channelMax), idle), nil)
}

func (c *conn) sendClose(e *amqpError) {
	c.send(0, performative(descClose, errorValue(e)), nil)
}

// protocolError turns a decoding or framing error into the AMQP error
// that closes the connection.
func protocolError(err error) *amqpError {
	cond := condDecodeError
	if errors.Is(err, errFraming) {
		cond = condFramingError
	}
	return &amqpError{condition: cond, description: trimErr(err)}
}

func (c *conn) writeRaw(b []byte) error {
	_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.nc.Write(b); err != nil {
		return fmt.Errorf("iothub: AMQP write: %w", err)
	}
	return nil
}

// send queues a frame; flush writes the queue.
func (c *conn) send(channel uint16, body any, payload []byte) {
	b, err := appendFrame(c.wbuf, frameTypeAMQP, channel, body, payload)
	if err != nil {
		// Only the hub's own values are encoded here: a bug, not input.
		c.log.Error("amqp: cannot encode a frame", "error", err)
		return
	}
	c.wbuf = b
}

func (c *conn) flush() error {
	if len(c.wbuf) == 0 {
		return nil
	}
	err := c.writeRaw(c.wbuf)
	if cap(c.wbuf) > 4*MaxFrameSize {
		c.wbuf = nil
	} else {
		c.wbuf = c.wbuf[:0]
	}
	return err
}

// readLoop reads frames for the loop. After a malformed frame it keeps
// reading and discarding, so that the close frame reaches a peer that is
// still writing instead of a reset.
func (c *conn) readLoop() {
	defer close(c.readerDone)
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("amqp: panic reading a frame", "panic", r, "stack", string(debug.Stack()))
			c.closeSocket()
		}
	}()
	for {
		f, err := readFrame(c.br, MaxFrameSize)
		if err == nil {
			c.lastRead.Store(time.Now().UnixNano())
		}
		select {
		case c.in <- inbound{f: f, err: err}:
		case <-c.loopDone:
			return
		}
		if err != nil {
			if errors.Is(err, errDecode) || errors.Is(err, errFraming) {
				_, _ = io.Copy(io.Discard, c.br)
			}
			return
		}
	}
}

// authenticated reports whether any identity has been authenticated on
// the connection: SASL PLAIN, a CBS token (device or hub policy) or a link
// of an X.509 identity.
func (c *conn) authenticated() bool {
	return c.plain != nil || c.hubToken != nil || c.serviceToken != nil || len(c.tokens) > 0 || len(c.units) > 0
}

// loop runs the connection until it ends.
func (c *conn) loop() {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("amqp: panic serving a connection", "panic", r, "stack", string(debug.Stack()))
			c.serveErr = fmt.Errorf("iothub: internal error: %v", r)
			if !c.closing {
				c.sendClose(&amqpError{condition: condInternal, description: "internal error"})
				_ = c.flush()
			}
		}
	}()
	var heartbeat <-chan time.Time
	if c.peerIdle > 0 {
		every := max(c.peerIdle/2, minHeartbeat)
		t := time.NewTicker(every)
		defer t.Stop()
		heartbeat = t.C
	}
	var idleCheck <-chan time.Time
	if c.s.idleTimeout > 0 {
		t := time.NewTicker(max(c.s.idleTimeout/4, 10*time.Millisecond))
		defer t.Stop()
		idleCheck = t.C
	}
	authCheck := time.NewTimer(c.s.authWait)
	defer authCheck.Stop()
	readerDone := c.readerDone
	for !c.finished {
		var closeDeadline <-chan time.Time
		if c.closeTimer != nil {
			closeDeadline = c.closeTimer.C
		}
		select {
		case in := <-c.in:
			c.onInbound(in)
		case <-c.wake:
			c.runPosted()
		case <-heartbeat:
			if !c.closing {
				c.wbuf = append(c.wbuf, 0, 0, 0, 8, 2, 0, 0, 0)
			}
		case <-idleCheck:
			if idle := time.Since(time.Unix(0, c.lastRead.Load())); idle > c.s.idleTimeout && !c.closing {
				c.log.Info("amqp connection idle: closing", "idle", idle.Round(time.Millisecond))
				c.fail(condResourceLimit, fmt.Sprintf("No frame was received for %s (idle-time-out)", c.s.idleTimeout))
			}
		case <-authCheck.C:
			if !c.authenticated() && !c.closing {
				c.log.Info("amqp connection never authenticated: closing", "after", c.s.authWait)
				c.fail(condUnauthorized, hubErrorJSON(engine.NewError(engine.CodeUnauthorized,
					"No identity was authenticated within %s of opening the connection", c.s.authWait)))
			}
		case <-closeDeadline:
			c.finished = true
		case <-readerDone:
			readerDone = nil
			if c.closing {
				c.finished = true
			}
		}
		if c.closing && c.quick {
			c.finished = true
		}
		if err := c.flush(); err != nil {
			c.log.Debug("amqp write failed", "error", err)
			c.finished = true
		}
	}
	if c.closeTimer != nil {
		c.closeTimer.Stop()
	}
}

func (c *conn) runPosted() {
	c.mu.Lock()
	fs := c.posted
	c.posted = nil
	c.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// teardown ends every identity's engine session; posts that arrive later
// are dropped.
func (c *conn) teardown() {
	c.mu.Lock()
	c.ended = true
	c.posted = nil
	c.mu.Unlock()
	if c.plainTimer != nil {
		c.plainTimer.Stop()
	}
	// Messages and feedback delivered but not settled go back to their
	// queues (c2d.go).
	for _, s := range c.sessions {
		for _, l := range s.links {
			c.releaseLocks(l)
		}
	}
	for _, u := range c.units {
		u.end()
	}
	c.units = nil
}

// fail closes the connection with an error. The loop then waits a
// little for the peer's close.
func (c *conn) fail(cond Symbol, desc string) {
	if c.closing {
		return
	}
	c.closing = true
	c.log.Info("amqp connection closed by the hub", "condition", string(cond), "description", desc)
	c.sendClose(&amqpError{condition: cond, description: desc})
	c.closeTimer = time.NewTimer(c.s.closeGrace)
}

func (c *conn) onInbound(in inbound) {
	if in.err != nil {
		switch {
		case errors.Is(in.err, errDecode) || errors.Is(in.err, errFraming):
			c.serveErr = in.err
			e := protocolError(in.err)
			c.fail(e.condition, e.description)
		case errors.Is(in.err, io.EOF), errors.Is(in.err, net.ErrClosed), errors.Is(in.err, os.ErrDeadlineExceeded):
			c.finished = true
		default:
			if !c.closing {
				c.serveErr = fmt.Errorf("iothub: amqp connection: %w", in.err)
			}
			c.finished = true
		}
		return
	}
	f := in.f
	if f.body == nil {
		return // heartbeat
	}
	if c.closing {
		if _, ok := f.body.(*closePerf); ok {
			c.finished = true
		}
		return
	}
	if f.typ != frameTypeAMQP {
		c.protocolViolation(condFramingError, "SASL frame after the AMQP open")
		return
	}
	if f.channel > channelMax {
		c.protocolViolation(condFramingError, fmt.Sprintf("channel %d exceeds channel-max %d", f.channel, channelMax))
		return
	}
	switch p := f.body.(type) {
	case *open:
		c.protocolViolation(condNotAllowed, "second open frame")
	case *closePerf:
		if p.err != nil {
			c.log.Info("amqp connection closed by the client with an error", "condition", string(p.err.condition), "description", p.err.description)
		}
		c.sendClose(nil)
		c.closing = true
		c.finished = true
	case *begin:
		c.onBegin(f.channel, p)
	default:
		s := c.sessions[f.channel]
		if s == nil {
			c.protocolViolation(condNotAllowed, fmt.Sprintf("frame on channel %d, which has no session", f.channel))
			return
		}
		s.onFrame(f)
	}
}

// protocolViolation closes the connection for a state violation.
func (c *conn) protocolViolation(cond Symbol, desc string) {
	c.serveErr = fmt.Errorf("iothub: AMQP protocol violation: %s: %s", cond, desc)
	c.fail(cond, desc)
}

func (c *conn) onBegin(channel uint16, b *begin) {
	if b.remoteChannel != nil {
		c.protocolViolation(condNotAllowed, "begin answers a session the hub never began")
		return
	}
	if c.sessions[channel] != nil {
		c.protocolViolation(condNotAllowed, fmt.Sprintf("channel %d already has a session", channel))
		return
	}
	local, ok := uint16(0), false
	for ch := 0; ch <= int(min(c.peerChanMax, channelMax)); ch++ {
		if c.localChans[uint16(ch)] == nil {
			local, ok = uint16(ch), true
			break
		}
	}
	if !ok {
		c.protocolViolation(condResourceLimit, "no free channel for another session")
		return
	}
	s := &session{
		c:                    c,
		local:                local,
		remote:               channel,
		nextIncomingID:       b.nextOutgoingID,
		incomingWindow:       sessionWindow,
		remoteIncomingWindow: b.incomingWindow,
		handleMax:            b.handleMax,
		links:                map[uint32]*link{},
		outHandles:           map[uint32]*link{},
		unsettled:            map[uint32]*link{},
	}
	c.sessions[channel] = s
	c.localChans[local] = s
	c.send(local, performative(descBegin, channel, uint32(0), uint32(sessionWindow), uint32(0x7fffffff), uint32(handleMax)), nil)
}

// removeSession forgets a session whose end has been exchanged.
func (c *conn) removeSession(s *session) {
	for _, l := range s.links {
		s.dropLink(l)
	}
	delete(c.sessions, s.remote)
	delete(c.localChans, s.local)
}
