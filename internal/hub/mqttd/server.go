package mqttd

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

// MaxPacketSize is the largest MQTT packet a device may send (IoT Hub's
// 256 KB message limit). A bigger packet closes the connection.
const MaxPacketSize = 256 * 1024

const (
	// listenerID names the (absent) mochi listener our connections belong to.
	listenerID = "iothub"
	// maxKeepalive caps the keep-alive the hub honours: IoT Hub times a
	// connection out after 1.5 × keep-alive, at most 1767 s. A keep-alive
	// of 0 (none) is treated as the maximum as well [inf].
	maxKeepalive = 1178
	// sendTimeout bounds how long a method request may wait for a device
	// that does not read its socket; the connection is then closed [inf].
	sendTimeout = 10 * time.Second
	// connectWait is how long a connection may take to send its CONNECT
	// [inf]; from then on mochi applies the keep-alive.
	connectWait = 30 * time.Second
	// takeoverWait bounds how long a new connection waits for the one it
	// replaces to wind down.
	takeoverWait = 5 * time.Second
)

// ErrServerClosed is returned by [Server.ServeConn] once [Server.Close]
// has been called.
var ErrServerClosed = errors.New("iothub: MQTT server closed")

// ConnInfo describes a connection handed to [Server.ServeConn].
type ConnInfo struct {
	// Protocol names the transport for the engine's logs and call
	// records: "mqtt" (TLS) or "mqtt-ws" (WebSocket). Empty means "mqtt".
	Protocol string
	// PeerCertificates is the client's TLS certificate chain, leaf first,
	// verified or not: the engine checks thumbprints and chains when the
	// CONNECT carries no password. nil when the client sent none.
	PeerCertificates []*x509.Certificate
}

// Server is the MQTT device endpoint. Its methods are safe for concurrent
// use.
type Server struct {
	e   *engine.Engine
	log *slog.Logger
	mq  *mqtt.Server

	mu    sync.Mutex
	links map[*link]struct{}
	live  map[string]*link // identity -> the connection that last connected
	// epochs records, per ClientId, the identity's credentials when its
	// persistent session was last used (engine.CredentialEpoch); a session
	// from another epoch is dropped, not inherited.
	epochs    map[string]string
	lastSweep time.Time
	closed    bool
	wg        sync.WaitGroup // one per running ServeConn

	connectWait   time.Duration // connectWait; tests shorten it
	sessionExpiry time.Duration // sessionExpiry; tests shorten it
}

// sessionExpiry is how long the hub keeps the persistent (clean=false)
// session of a device that stays away. IoT Hub documents none; a session
// exists for the messages queued for an offline device, whose longest
// time-to-live is 48 hours, so it is kept that long [inf].
const sessionExpiry = 48 * time.Hour

// sweepEvery is how often, at most, a new connection makes the server
// look for expired sessions.
const sweepEvery = time.Minute

// New returns an MQTT endpoint for the engine. It starts no goroutines
// and opens no listeners. logger receives connection events (refused
// CONNECTs, protocol violations) and the embedded broker's own messages,
// without passwords or payloads; nil is silent.
func New(e *engine.Engine, logger *slog.Logger) (*Server, error) {
	if e == nil {
		return nil, errors.New("iothub: mqttd.New: engine is nil")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = MaxPacketSize
	caps.MaximumClientWritesPending = 128 // mochi's default 8192 costs 64 KiB per connection
	caps.MinimumProtocolVersion = 4
	caps.MaximumQos = 1 // SUBSCRIBE QoS 2 is granted as QoS 1
	caps.SharedSubAvailable = 0
	caps.RetainAvailable = 0 // retained messages are never stored
	caps.WildcardSubAvailable = 1
	caps.TopicAliasMaximum = 0
	s := &Server{
		e:             e,
		log:           logger,
		links:         map[*link]struct{}{},
		live:          map[string]*link{},
		epochs:        map[string]string{},
		sessionExpiry: sessionExpiry,

		connectWait: connectWait,
	}
	s.mq = mqtt.New(&mqtt.Options{
		Capabilities: caps,
		Logger:       slog.New(mochiHandler{logger.Handler()}).With("component", "mochi-mqtt"),
		// Serve is never called, so mochi's $SYS ticker loop never runs;
		// a long interval keeps it idle should that ever change.
		SysTopicResendInterval: 24 * 3600,
	})
	if err := s.mq.AddHook(&hook{s: s}, nil); err != nil {
		return nil, fmt.Errorf("iothub: mqttd.New: %w", err)
	}
	return s, nil
}

// ServeConn serves one established connection (a *tls.Conn after its
// handshake, or a WebSocket carried as a net.Conn) until it ends, and
// closes it. It returns nil when the device disconnected or the hub closed
// the connection (kicked by a newer connection, token expired, Close…),
// [ErrServerClosed] after Close, and otherwise the reason the connection
// was refused or dropped (a refused CONNECT, a protocol violation).
func (s *Server) ServeConn(c net.Conn, info ConnInfo) error {
	if info.Protocol == "" {
		info.Protocol = "mqtt"
	}
	l := &link{s: s, raw: c, info: info, done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = c.Close()
		return ErrServerClosed
	}
	s.links[l] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	_ = c.SetReadDeadline(time.Now().Add(s.connectWait))
	err := s.mq.EstablishConnection(listenerID, &wireConn{Conn: c, l: l})

	l.shut()
	// Unacknowledged cloud-to-device messages go back to the queue.
	if done := l.stopC2D(); done != nil {
		<-done
	}
	if sess := l.sess.Load(); sess != nil {
		sess.SetDesiredSubscribed(false)
		sess.Disconnect()
	}
	s.mu.Lock()
	delete(s.links, l)
	if l.key != "" && s.live[l.key] == l {
		delete(s.live, l.key)
	}
	s.mu.Unlock()
	close(l.done)

	switch {
	case err == nil, l.closing.Load(), errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, packets.CodeDisconnect):
		return nil
	}
	return fmt.Errorf("iothub: mqtt connection: %w", err)
}

// Close closes every connection, waits for every ServeConn to return and
// stops the embedded broker. Later ServeConn calls fail with
// [ErrServerClosed]. Close is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	links := make([]*link, 0, len(s.links))
	for l := range s.links {
		links = append(links, l)
	}
	s.mu.Unlock()

	var closers sync.WaitGroup
	for _, l := range links {
		l.closing.Store(true)
		closers.Add(1)
		go func() { // a TLS or WebSocket close may wait for its peer
			defer closers.Done()
			l.shut()
		}()
	}
	closers.Wait()
	s.wg.Wait()
	return s.mq.Close()
}

// dropStaleSessions runs before mochi looks for the previous session of
// clientID. A persistent session belongs to one incarnation of an
// identity: if the device was deleted and created again, or its
// credentials changed, since the session was last used, the session is
// dropped, so that the new identity never receives methods it did not
// subscribe to. It also drops, at most once per sweepEvery, the sessions
// of devices that have stayed away longer than s.sessionExpiry.
func (s *Server) dropStaleSessions(clientID string, id auth.Identity) {
	epoch := s.e.CredentialEpoch(id)
	now := time.Now()
	s.mu.Lock()
	var drop []*mqtt.Client
	if old, ok := s.mq.Clients.Get(clientID); ok && s.epochs[clientID] != epoch {
		drop = append(drop, old)
	}
	s.epochs[clientID] = epoch
	if now.Sub(s.lastSweep) >= sweepEvery || s.sessionExpiry < sweepEvery {
		s.lastSweep = now
		for cid, cl := range s.mq.Clients.GetAll() {
			if cid != clientID && cl.Closed() && !cl.Properties.Clean && now.Sub(time.Unix(cl.StopTime(), 0)) > s.sessionExpiry {
				drop = append(drop, cl)
				delete(s.epochs, cid)
			}
		}
	}
	s.mu.Unlock()
	for _, cl := range drop {
		s.mq.UnsubscribeClient(cl)
		cl.ClearInflights()
		s.mq.Clients.Delete(cl.ID)
	}
}

// hasSession reports whether the broker holds a session for clientID.
func (s *Server) hasSession(clientID string) bool {
	_, ok := s.mq.Clients.Get(clientID)
	return ok
}
