package hub

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// SetHTTPTimeouts shortens the HTTPS connection lifetimes for a test and
// restores them when it ends.
func setHTTPTimeouts(t interface{ Cleanup(func()) }, request, idle time.Duration) {
	r, i := httpRequestTimeout, httpIdleTimeout
	httpRequestTimeout, httpIdleTimeout = request, idle
	t.Cleanup(func() { httpRequestTimeout, httpIdleTimeout = r, i })
}

// TestHTTPConnectionLifetimes: a stalled request body and an idle
// keep-alive connection are closed by the hub, while a WebSocket session on
// the same port and a method call that outlasts the body deadline are not.
func TestHTTPConnectionLifetimes(t *testing.T) {
	setHTTPTimeouts(t, 300*time.Millisecond, 300*time.Millisecond)
	h := startHub(t)
	addr := h.Addrs()[0].String()
	key := addDevice(t, h, "dev-ws")
	echoDevice(t, h, "wss://"+addr+WebSocketPath, "dev-ws", key)

	// closedWithin reads c until the hub closes it; it fails the test if
	// that takes longer than limit (a hang, not a slow machine).
	closedWithin := func(t *testing.T, c net.Conn, limit time.Duration) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(limit))
		_, err := io.Copy(io.Discard, c)
		var ne net.Error
		if errors.As(err, &ne) {
			require.False(t, ne.Timeout(), "the hub kept the connection open for %v", limit)
		}
	}

	t.Run("stalled body", func(t *testing.T) {
		c, err := tls.Dial("tcp", addr, clientTLS(h))
		require.NoError(t, err, "dial TLS")
		defer c.Close()
		_, _ = io.WriteString(c, "PUT /devices/x?api-version=2021-04-12 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{")
		closedWithin(t, c, 30*time.Second)
	})

	t.Run("idle keep-alive", func(t *testing.T) {
		c, err := tls.Dial("tcp", addr, clientTLS(h))
		require.NoError(t, err, "dial TLS")
		defer c.Close()
		_, _ = io.WriteString(c, "GET /devices?api-version=2021-04-12 HTTP/1.1\r\nHost: localhost\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err, "read the response")
		resp.Body.Close()
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "want a kept-alive 401")
		require.False(t, resp.Close, "want a kept-alive 401, got Connection: close")
		closedWithin(t, c, 30*time.Second)
	})

	// Both deadlines have passed: the WebSocket device still answers, and a
	// call that waits longer than the body deadline is not cut short.
	st, body := invoke(t, h, "dev-ws", `{"methodName":"m","payload":"ws"}`)
	require.Equal(t, 200, st, "invoke over WebSocket after the deadlines: %s", body)
	require.Equal(t, `{"status":200,"payload":"ws"}`, body, "invoke over WebSocket after the deadlines")
	key2 := addDevice(t, h, "dev-late")
	done := make(chan [2]any, 1)
	go func() {
		st, body := invokeNoFatal(h, "dev-late", `{"methodName":"m","payload":"late","connectTimeoutInSeconds":30}`)
		done <- [2]any{st, body}
	}()
	// Connect only once the call has outlived the body deadline.
	idle, err := tls.Dial("tcp", addr, clientTLS(h))
	require.NoError(t, err, "dial TLS")
	_, _ = io.WriteString(idle, "GET /devices?api-version=2021-04-12 HTTP/1.1\r\nHost: localhost\r\n\r\n")
	closedWithin(t, idle, 30*time.Second)
	idle.Close()
	echoDevice(t, h, "tls://"+addr, "dev-late", key2)
	select {
	case r := <-done:
		require.Equal(t, 200, r[0], "late call: %v", r[1])
		require.Equal(t, `{"status":200,"payload":"late"}`, r[1], "late call")
	case <-time.After(time.Minute):
		require.FailNow(t, "the late call never returned")
	}
}
