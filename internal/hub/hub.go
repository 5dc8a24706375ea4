// Package hub runs the local IoT Hub: TLS listeners that serve MQTT, AMQP
// and HTTPS (with WebSocket upgrades on /$iothub/websocket) on every port,
// telling the protocols apart by their first bytes, all on one engine.
package hub

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/iothub-go/iothub/internal/hub/amqpd"
	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/internal/hub/httpd"
	"github.com/iothub-go/iothub/internal/hub/mqttd"
	"github.com/iothub-go/iothub/internal/hub/ui"
	"github.com/iothub-go/iothub/internal/pki"
)

// WebSocketPath is where MQTT and AMQP over WebSocket are served.
const WebSocketPath = "/$iothub/websocket"

// Lifetimes of HTTPS connections (variables so that tests can shorten
// them). A request has httpRequestTimeout to send its body, and its answer
// httpWriteTimeout to be written, which covers the longest method call (300
// s to connect and 300 s to answer). A keep-alive connection is closed after
// httpIdleTimeout without a request: the 4 minutes of Azure's load
// balancers, whose idle timeout fronts IoT Hub [inf]. WebSocket sessions
// have neither deadline: MQTT and AMQP keep-alives govern them.
var (
	httpRequestTimeout = 60 * time.Second
	httpWriteTimeout   = 11 * time.Minute
	httpIdleTimeout    = 4 * time.Minute
)

// Options configures a Hub.
type Options struct {
	// HostName is the hub's host name (the SAS audience). Default "localhost".
	HostName string
	// Addrs are the listen addresses; each one serves every protocol.
	// Default: one random loopback port, "127.0.0.1:0".
	Addrs []string
	// CA issues the hub's TLS certificate; nil generates a fresh one.
	CA *pki.CA
	// OwnerKey fixes the iothubowner policy's primary key (base64).
	OwnerKey string
	// TrustedCAs are the verified CAs of CA-signed device identities.
	TrustedCAs *x509.CertPool
	// Logger receives connection and method-call events; nil is silent.
	Logger *slog.Logger
	// MaxActiveJobs is engine.Config.MaxActiveJobs: 0 is IoT Hub's S1
	// limit of one active job, negative no limit.
	MaxActiveJobs int
	// C2D is engine.Config.C2D: the cloud-to-device settings (zero values
	// are IoT Hub's defaults).
	C2D engine.C2DConfig
	// Store is engine.Config.Store: nil keeps the hub's state in memory
	// only. The caller closes it after Close.
	Store engine.Store
	// UI serves the web dashboard (package ui) under /ui on the HTTPS
	// port; Hub.UI issues its one-time login links.
	UI bool
}

// Hub is a running local IoT Hub.
type Hub struct {
	Engine *engine.Engine
	CA     *pki.CA
	// UI is the dashboard when Options.UI is set, else nil.
	UI *ui.Server

	log       *slog.Logger
	tlsConf   *tls.Config
	listeners []net.Listener
	httpLn    *chanListener
	httpSrv   *http.Server
	mqtt      *mqttd.Server
	amqp      *amqpd.Server
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup

	mu      sync.Mutex
	raw     map[net.Conn]struct{} // connections not yet handed to a protocol server
	closing bool
}

// Start listens on every address and serves until Close.
func Start(opts Options) (*Hub, error) {
	if opts.HostName == "" {
		opts.HostName = "localhost"
	}
	if len(opts.Addrs) == 0 {
		opts.Addrs = []string{"127.0.0.1:0"}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ca := opts.CA
	if ca == nil {
		var err error
		if ca, err = pki.NewCA("iothub local hub CA"); err != nil {
			return nil, err
		}
	}
	names := uniq(opts.HostName, "localhost", "127.0.0.1", "::1")
	leaf, err := ca.IssueServer(names...)
	if err != nil {
		return nil, err
	}
	eng, err := engine.New(engine.Config{HostName: opts.HostName, GatewayHostNames: names[1:], OwnerKey: opts.OwnerKey, TrustedCAs: opts.TrustedCAs, Logger: log, MaxActiveJobs: opts.MaxActiveJobs, C2D: opts.C2D, Store: opts.Store})
	if err != nil {
		return nil, err
	}
	mq, err := mqttd.New(eng, log)
	if err != nil {
		return nil, err
	}
	aq, err := amqpd.New(eng, log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{
		Engine: eng,
		CA:     ca,
		log:    log,
		tlsConf: &tls.Config{
			Certificates: []tls.Certificate{leaf},
			ClientAuth:   tls.RequestClientCert, // the engine checks thumbprints and chains
			MinVersion:   tls.VersionTLS12,
		},
		mqtt:   mq,
		amqp:   aq,
		ctx:    ctx,
		cancel: cancel,
		raw:    map[net.Conn]struct{}{},
	}
	h.httpLn = newChanListener()
	rest := httpd.NewHandler(eng)
	if opts.UI {
		h.UI = ui.New(eng)
	}
	h.httpSrv = &http.Server{
		// Not a ServeMux: it would redirect paths holding the valid ids
		// "." and "..".
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rc := http.NewResponseController(w)
			if r.URL.Path == WebSocketPath {
				// The upgraded connection outlives any request deadline.
				_ = rc.SetReadDeadline(time.Time{})
				_ = rc.SetWriteDeadline(time.Time{})
				h.serveWebSocket(w, r)
				return
			}
			// A read deadline that passes while a method call waits does
			// not end the call: TestHTTPConnectionLifetimes checks it.
			_ = rc.SetReadDeadline(time.Now().Add(httpRequestTimeout))
			_ = rc.SetWriteDeadline(time.Now().Add(httpWriteTimeout))
			if h.UI != nil && ui.Handles(r.URL.Path) {
				h.UI.ServeHTTP(w, r)
				return
			}
			rest.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       httpIdleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if pc, ok := c.(*peekConn); ok {
				return engine.WithPeerCertificates(ctx, pc.peerCerts)
			}
			return ctx
		},
	}
	for _, a := range opts.Addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			h.Close()
			return nil, fmt.Errorf("iothub: listen on %s: %w", a, err)
		}
		h.listeners = append(h.listeners, ln)
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		_ = h.httpSrv.Serve(h.httpLn)
	}()
	for _, ln := range h.listeners {
		h.wg.Add(1)
		go h.acceptLoop(ln)
	}
	return h, nil
}

func uniq(names ...string) []string {
	var out []string
	seen := map[string]bool{}
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// Addrs returns the listening addresses, in the order of Options.Addrs.
func (h *Hub) Addrs() []net.Addr {
	out := make([]net.Addr, len(h.listeners))
	for i, ln := range h.listeners {
		out[i] = ln.Addr()
	}
	return out
}

// Close stops listening, drops every connection, fails pending calls and
// waits for all of the hub's goroutines to end.
func (h *Hub) Close() error {
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		return nil
	}
	h.closing = true
	for c := range h.raw {
		c.Close()
	}
	h.mu.Unlock()
	h.cancel()
	for _, ln := range h.listeners {
		ln.Close()
	}
	h.Engine.Close()
	_ = h.httpSrv.Close()
	h.httpLn.Close()
	err := h.mqtt.Close()
	if aerr := h.amqp.Close(); err == nil {
		err = aerr
	}
	h.wg.Wait()
	return err
}

func (h *Hub) track(c net.Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return false
	}
	h.raw[c] = struct{}{}
	return true
}

func (h *Hub) untrack(c net.Conn) {
	h.mu.Lock()
	delete(h.raw, c)
	h.mu.Unlock()
}

func (h *Hub) acceptLoop(ln net.Listener) {
	defer h.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		if !h.track(c) {
			c.Close()
			return
		}
		h.wg.Add(1)
		go h.serveConn(c)
	}
}

// serveConn completes the TLS handshake, looks at the first byte and hands
// the connection to the protocol it belongs to.
func (h *Hub) serveConn(raw net.Conn) {
	defer h.wg.Done()
	tc := tls.Server(raw, h.tlsConf)
	_ = raw.SetDeadline(time.Now().Add(20 * time.Second))
	if err := tc.HandshakeContext(h.ctx); err != nil {
		h.untrack(raw)
		raw.Close()
		return
	}
	br := bufio.NewReader(tc)
	first, err := br.Peek(1)
	h.untrack(raw)
	if err != nil {
		tc.Close()
		return
	}
	_ = raw.SetDeadline(time.Time{})
	pc := &peekConn{Conn: tc, r: br, peerCerts: tc.ConnectionState().PeerCertificates}
	switch {
	case first[0] == 0x10: // MQTT CONNECT
		_ = h.mqtt.ServeConn(pc, mqttd.ConnInfo{Protocol: "mqtt", PeerCertificates: pc.peerCerts})
	case first[0] == 'A': // AMQP protocol header
		_ = h.amqp.ServeConn(pc, amqpd.ConnInfo{Protocol: "amqp", PeerCertificates: pc.peerCerts})
	default:
		if !h.httpLn.push(pc) {
			pc.Close()
		}
	}
}

// serveWebSocket upgrades /$iothub/websocket and serves MQTT or AMQP over
// it, chosen by the subprotocol.
func (h *Hub) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		http.Error(w, "hub closing", http.StatusServiceUnavailable)
		return
	}
	h.wg.Add(1) // Close waits for WebSocket sessions, which http.Server does not track
	h.mu.Unlock()
	defer h.wg.Done()
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"mqtt", "AMQPWSB10"}})
	if err != nil {
		return // Accept has written the HTTP error
	}
	sub := c.Subprotocol()
	switch {
	case strings.EqualFold(sub, "mqtt"):
		nc := websocket.NetConn(h.ctx, c, websocket.MessageBinary)
		certs := engine.PeerCertificates(r.Context())
		_ = h.mqtt.ServeConn(nc, mqttd.ConnInfo{Protocol: "mqtt-ws", PeerCertificates: certs})
	case strings.EqualFold(sub, "AMQPWSB10"):
		nc := websocket.NetConn(h.ctx, c, websocket.MessageBinary)
		certs := engine.PeerCertificates(r.Context())
		_ = h.amqp.ServeConn(nc, amqpd.ConnInfo{Protocol: "amqp-ws", PeerCertificates: certs})
	default:
		c.Close(websocket.StatusPolicyViolation, "subprotocol must be mqtt or AMQPWSB10")
	}
}

// peekConn is a TLS connection whose first bytes were peeked.
type peekConn struct {
	net.Conn
	r         *bufio.Reader
	peerCerts []*x509.Certificate
}

func (c *peekConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// chanListener hands connections accepted elsewhere to http.Server.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
