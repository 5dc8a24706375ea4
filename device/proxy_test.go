package device_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/transport/mqtt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// connectProxy is a minimal HTTP CONNECT proxy that sends every tunnel to
// target, whatever host the client asked for, and counts the tunnels.
type connectProxy struct {
	ln      net.Listener
	target  string
	tunnels atomic.Int32
	asked   atomic.Value
	wg      sync.WaitGroup
}

func startProxy(t *testing.T, target string) *connectProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &connectProxy{ln: ln, target: target}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.serve(c) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *connectProxy) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil || req.Method != http.MethodConnect {
		return
	}
	p.asked.Store(req.Host)
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
		return
	}
	defer up.Close()
	p.tunnels.Add(1)
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, br); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done
	<-done
}

// MQTT over WebSocket goes through the proxy named by HTTPS_PROXY.
func TestWebSocketProxyFromEnvironment(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	proxy := startProxy(t, hub.Addr())
	t.Setenv("HTTPS_PROXY", "http://"+proxy.ln.Addr().String())
	t.Setenv("NO_PROXY", "")
	_, port, _ := net.SplitHostPort(hub.Addr())
	// A host name the proxy resolves (loopback addresses are never proxied).
	cs := strings.Replace(hub.AddDevice(t, "dev1"), "GatewayHostName="+hub.Addr(), "GatewayHostName=hub.example:"+port, 1)
	tlsConf := hub.TLSConfig()
	tlsConf.ServerName = "localhost"
	newClient(t, hub, cs, &device.ClientOptions{Transport: mqtt.New(&mqtt.Options{WebSocket: true}), TLSConfig: tlsConf},
		func(c *device.Client) { c.SetMethodHandler("echo", echo) })
	r := call(t, hub, "dev1", "echo", `"via proxy"`)
	require.Equal(t, 200, r.Status, "%v", r)
	require.Equal(t, `"via proxy"`, string(r.Payload))
	assert.GreaterOrEqual(t, proxy.tunnels.Load(), int32(1), "tunnels through the proxy")
	assert.Equal(t, "hub.example:"+port, proxy.asked.Load(), "the host the proxy was asked for")
}
