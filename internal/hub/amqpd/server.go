package amqpd

import (
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

// Limits and timings. Values IoT Hub does not document are marked [inf].
const (
	// MaxFrameSize is the max-frame-size the hub announces and the largest
	// frame it accepts; a client may announce a smaller one for what the
	// hub sends.
	MaxFrameSize = 64 * 1024
	// MaxMessageSize is the largest message a device may send (IoT Hub's
	// 256 KB message limit); a bigger one detaches its link with
	// amqp:link:message-size-exceeded.
	MaxMessageSize = 256 * 1024
	// IdleTimeout is the idle-time-out the hub announces (EdgeHub's
	// default; IoT Hub's own value is not documented [inf]). A connection
	// that sends nothing, not even an empty frame, for this long is closed
	// with amqp:resource-limit-exceeded.
	IdleTimeout = 240 * time.Second

	// channelMax and handleMax are what IoT Hub announces in open and
	// begin (wire traces in azure-iot-sdk-c#2233, Azure/go-amqp#326): up
	// to 8,192 sessions per connection (Java and .NET open one per
	// multiplexed device) and 262,144 links per session (the C SDK puts
	// every device's links on one session).
	channelMax = 8191
	handleMax  = 262143

	// sessionWindow is the incoming-window of each session, in frames.
	sessionWindow = 2048
	// linkCredit is the credit granted on every link the device sends on
	// ($cbs requests, method responses), topped up at half.
	linkCredit = 100
	// maxQueued bounds the messages waiting for link credit on each link
	// the hub sends on; a method request beyond it fails at once and the
	// engine answers the call as it does for an offline device [inf]. It is
	// large because a device with little credit (the .NET SDK grants 50) is
	// still online: IoT Hub delivers bursts as credit comes back.
	defaultMaxQueued = 1024
	// maxBuffered bounds the bytes of partly received messages one
	// connection may hold across its links [inf].
	maxBuffered = 4 * MaxMessageSize
	// maxIdentities bounds the identities one connection may authenticate
	// with CBS: IoT Hub answers the 1,001st put-token with status 500 "The
	// maximum number of tokens per connection (1000) has been reached."
	// (iotedge-lorawan-starterkit#1337). It counts every identity ever
	// authenticated on the connection, as the service is suspected to
	// (azure-iot-sdk-java#1526) [inf].
	maxIdentities = 1000

	connectWait = 30 * time.Second // header, SASL and open must be done by then [inf]
	// authWait is how long an open connection may go without any identity
	// authenticated (SASL PLAIN, a CBS token or an X.509 link), like
	// nats-server's auth timer: heartbeats alone do not keep it [inf].
	authWait = 60 * time.Second
	// defaultMaxPendingBytes bounds the transfer frames a session holds
	// while the peer's session window is closed: 1024 queued messages of a
	// 128 KB method request each fit, a peer that never opens it does not.
	defaultMaxPendingBytes = 160 << 20
	writeTimeout           = 15 * time.Second // a device that does not read is dropped [inf]
	sendTimeout            = 10 * time.Second // bound on SendMethod waiting for the connection
	closeGrace             = 2 * time.Second  // how long a close waits for the peer's close
	minHeartbeat           = 500 * time.Millisecond
)

// ErrServerClosed is returned by [Server.ServeConn] once [Server.Close]
// has been called.
var ErrServerClosed = errors.New("iothub: AMQP server closed")

// ConnInfo describes a connection handed to [Server.ServeConn].
type ConnInfo struct {
	// Protocol names the transport for the engine's logs and call
	// records: "amqp" (TLS) or "amqp-ws" (WebSocket). Empty means "amqp".
	Protocol string
	// PeerCertificates is the client's TLS certificate chain, leaf first,
	// verified or not: the engine checks thumbprints and chains when a
	// method link is attached without a CBS token (X.509 devices). nil
	// when the client sent none.
	PeerCertificates []*x509.Certificate
}

// Server is the AMQP 1.0 device endpoint. Its methods are safe for
// concurrent use.
type Server struct {
	e   *engine.Engine
	log *slog.Logger

	mu     sync.Mutex
	conns  map[*conn]struct{}
	closed bool
	wg     sync.WaitGroup // one per running ServeConn

	// Timings; tests shorten them.
	connectWait     time.Duration
	authWait        time.Duration
	maxPendingBytes int
	idleTimeout     time.Duration
	maxQueued       int // see defaultMaxQueued
	closeGrace      time.Duration
}

// New returns an AMQP endpoint for the engine. It starts no goroutines
// and opens no listeners. logger receives connection events (refused
// links, closed connections, protocol violations) without tokens, keys
// or payloads; nil is silent.
func New(e *engine.Engine, logger *slog.Logger) (*Server, error) {
	if e == nil {
		return nil, errors.New("iothub: amqpd.New: engine is nil")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{
		e:               e,
		log:             logger,
		conns:           map[*conn]struct{}{},
		connectWait:     connectWait,
		authWait:        authWait,
		maxPendingBytes: defaultMaxPendingBytes,
		maxQueued:       defaultMaxQueued,
		idleTimeout:     IdleTimeout,
		closeGrace:      closeGrace,
	}, nil
}

// ServeConn serves one established connection (a *tls.Conn after its
// handshake, or a WebSocket carried as a net.Conn) until it ends, and
// closes it. It returns nil when the device closed the connection or the
// hub did (token expired, Close…), [ErrServerClosed] after Close, and
// otherwise why the connection failed (a refused SASL exchange, a
// malformed frame, a dropped socket).
func (s *Server) ServeConn(nc net.Conn, info ConnInfo) error {
	if info.Protocol == "" {
		info.Protocol = "amqp"
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = nc.Close()
		return ErrServerClosed
	}
	c := newConn(s, nc, info)
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	err := c.serve()

	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	return err
}

// Close closes every connection (with an AMQP close carrying
// amqp:connection:forced where the connection is up), waits for every
// ServeConn to return, and makes later ServeConn calls fail with
// [ErrServerClosed]. Close is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	for _, c := range conns {
		c.shutdown()
	}
	deadline := time.NewTimer(s.closeGrace)
	defer deadline.Stop()
	for _, c := range conns {
		select {
		case <-c.done:
		case <-deadline.C:
			for _, c := range conns {
				go c.closeSocket() // a TLS or WebSocket close may wait for its peer
			}
			s.wg.Wait()
			return nil
		}
	}
	s.wg.Wait()
	return nil
}
