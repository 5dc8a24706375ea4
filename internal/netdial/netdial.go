// Package netdial opens the byte streams the device transports and the
// service client's AMQP connection run on: TLS over TCP, or a WebSocket over
// TLS. Every dial ends as soon as its context
// does, so a client closed during a connection attempt never waits for a
// silent listener or a stalled handshake.
package netdial

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/coder/websocket"
	"golang.org/x/net/http/httpproxy"
)

// Endpoint resolves a transport's address, "host" or "host:port", with
// defaultPort when it has none: it returns "host:port" to dial and the host,
// the TLS server name. It fails on an empty host.
func Endpoint(addr, defaultPort string) (hostport, host string, err error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host, port = strings.Trim(addr, "[]"), defaultPort
	}
	if host == "" {
		return "", "", errors.New("empty host address")
	}
	return net.JoinHostPort(host, port), host, nil
}

// ClientTLS returns a copy of conf that names host as the server, unless
// conf names one already.
func ClientTLS(conf *tls.Config, host string) *tls.Config {
	c := conf.Clone()
	if c.ServerName == "" {
		c.ServerName = host
	}
	return c
}

// SharedClientTLS is ClientTLS for the device transports, whose fleets dial
// one hub with one configuration by the thousand: it returns the same copy
// for the same conf and host as the call before, instead of a copy per
// connection (a tls.Conn keeps its configuration for its life, about half a
// kilobyte). The caller must not modify the result, as crypto/tls asks of
// any configuration in use.
func SharedClientTLS(conf *tls.Config, host string) *tls.Config {
	if e := lastTLS.Load(); e != nil && e.base == conf && e.host == host {
		return e.conf
	}
	c := ClientTLS(conf, host)
	lastTLS.Store(&tlsEntry{base: conf, host: host, conf: c})
	return c
}

// tlsEntry is SharedClientTLS's last result.
type tlsEntry struct {
	base *tls.Config
	host string
	conf *tls.Config
}

var lastTLS atomic.Pointer[tlsEntry]

// TLS opens a TLS connection to hostport; the handshake is done when it
// returns.
func TLS(ctx context.Context, hostport string, conf *tls.Config) (net.Conn, error) {
	d := &tls.Dialer{Config: conf}
	return d.DialContext(ctx, "tcp", hostport)
}

// WebSocketPath is the path of IoT Hub's WebSocket endpoint, for MQTT and
// AMQP alike.
const WebSocketPath = "/$iothub/websocket"

// WebSocket opens a binary WebSocket to wss://hostport+WebSocketPath with
// the given subprotocol and returns it as a net.Conn. It honours HTTPS_PROXY and
// NO_PROXY, read on every call (http.ProxyFromEnvironment reads them once
// per process). readLimit bounds one WebSocket message.
func WebSocket(ctx context.Context, hostport, subprotocol string, conf *tls.Config, readLimit int64) (net.Conn, error) {
	proxy := httpproxy.FromEnvironment().ProxyFunc()
	tr := &http.Transport{
		TLSClientConfig: conf,
		Proxy:           func(r *http.Request) (*url.URL, error) { return proxy(r.URL) },
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{
		Transport: tr,
		// Never follow a redirect: it could lead to plain HTTP.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	wc, _, err := websocket.Dial(ctx, "wss://"+hostport+WebSocketPath, &websocket.DialOptions{
		HTTPClient:   hc,
		Subprotocols: []string{subprotocol},
	})
	if err != nil {
		return nil, fmt.Errorf("websocket: %w", err)
	}
	if wc.Subprotocol() != subprotocol {
		wc.Close(websocket.StatusProtocolError, subprotocol+" expected")
		return nil, fmt.Errorf("the hub did not accept the %s WebSocket subprotocol", subprotocol)
	}
	wc.SetReadLimit(readLimit)
	return websocket.NetConn(context.Background(), wc, websocket.MessageBinary), nil
}
