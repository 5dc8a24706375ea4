package faultproxy_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/iothub-go/iothub/internal/faultproxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server is an upstream that echoes every connection and remembers them.
type server struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
	got   bytes.Buffer // everything received, by every connection
}

func startServer(t *testing.T, echo bool) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err, "listen")
	s := &server{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						s.mu.Lock()
						s.got.Write(buf[:n])
						s.mu.Unlock()
						if echo {
							if _, err := c.Write(buf[:n]); err != nil {
								return
							}
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *server) received() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got.String()
}

func (s *server) conn(t *testing.T, i int) net.Conn {
	t.Helper()
	waitFor(t, "upstream connection", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.conns) > i
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[i]
}

func newProxy(t *testing.T, upstream string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(upstream)
	require.NoError(t, err, "new proxy")
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, p *faultproxy.Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err, "dial the proxy")
	t.Cleanup(func() { c.Close() })
	return c
}

// waitFor polls cond with a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, 20*time.Second, 5*time.Millisecond, "timed out waiting for %s", what)
}

func readN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, n)
	_, err := io.ReadFull(c, buf)
	require.NoError(t, err, "read")
	_ = c.SetReadDeadline(time.Time{})
	return string(buf)
}

func TestForwards(t *testing.T) {
	s := startServer(t, true)
	p := newProxy(t, s.ln.Addr().String())
	c := dial(t, p)
	big := bytes.Repeat([]byte("0123456789"), 20000)
	go c.Write(big)
	require.True(t, readN(t, c, len(big)) == string(big), "echo differs")
	waitFor(t, "one active connection", func() bool { return p.Active() == 1 })
	c.Close()
	waitFor(t, "no active connection", func() bool { return p.Active() == 0 })
	require.Equal(t, 1, p.Accepted(), "accepted")
}

func TestCutResetsBothSides(t *testing.T) {
	s := startServer(t, true)
	p := newProxy(t, s.ln.Addr().String())
	c := dial(t, p)
	c.Write([]byte("x"))
	readN(t, c, 1)
	require.Equal(t, 1, p.Cut(), "connections cut")
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err := c.Read(make([]byte, 1))
	require.Error(t, err, "read after cut")
	require.False(t, isTimeout(err), "read after cut: %v", err)
	waitFor(t, "no active connection", func() bool { return p.Active() == 0 })
	// New connections still work.
	c2 := dial(t, p)
	c2.Write([]byte("y"))
	require.Equal(t, "y", readN(t, c2, 1), "no echo after cut")
}

func TestStallHoldsEverythingUntilResume(t *testing.T) {
	s := startServer(t, true)
	p := newProxy(t, s.ln.Addr().String())
	c := dial(t, p)
	c.Write([]byte("a"))
	readN(t, c, 1)
	p.Stall()
	c.Write([]byte("bcd"))
	// Nothing reaches the server while stalled.
	time.Sleep(200 * time.Millisecond)
	require.Equal(t, "a", s.received(), "server received during the stall")
	p.Resume()
	waitFor(t, "held bytes delivered", func() bool { return s.received() == "abcd" })
	require.Equal(t, "bcd", readN(t, c, 3), "echo after resume")
	// The server's FIN is held back too.
	p.Stall()
	s.conn(t, 0).Close()
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	n, err := c.Read(make([]byte, 1))
	require.Zero(t, n, "bytes read during the stall")
	require.True(t, isTimeout(err), "read during the stall: %v; want a timeout", err)
	p.Resume()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err = io.ReadAll(c)
	require.NoError(t, err, "after resume the client sees the server's close")
	c.Close()
	waitFor(t, "no active connection", func() bool { return p.Active() == 0 })
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestStalledConnectionGoesWhenClientGivesUp(t *testing.T) {
	s := startServer(t, true)
	p := newProxy(t, s.ln.Addr().String())
	c := dial(t, p)
	waitFor(t, "one active connection", func() bool { return p.Active() == 1 })
	p.Stall()
	c.Close()
	waitFor(t, "no active connection", func() bool { return p.Active() == 0 })
}

func TestHalfClose(t *testing.T) {
	s := startServer(t, false)
	p := newProxy(t, s.ln.Addr().String())
	c := dial(t, p)
	waitFor(t, "one active connection", func() bool { return p.Active() == 1 })
	p.HalfClose(faultproxy.ToClient)
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := c.Read(make([]byte, 1))
	require.Zero(t, n, "bytes read after half-close")
	require.ErrorIs(t, err, io.EOF, "client read after half-close")
	// The other direction still carries data.
	c.Write([]byte("still"))
	waitFor(t, "bytes after half-close", func() bool { return s.received() == "still" })
	c.Close()
	waitFor(t, "no active connection", func() bool { return p.Active() == 0 })
}

func TestHalfCloseUpstream(t *testing.T) {
	s := startServer(t, true)
	p := newProxy(t, s.ln.Addr().String())
	c := dial(t, p)
	waitFor(t, "one active connection", func() bool { return p.Active() == 1 })
	p.HalfClose(faultproxy.ToUpstream)
	// The server reads EOF and closes; the client then sees EOF too.
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err := io.ReadAll(c)
	require.NoError(t, err, "client")
	c.Close()
	waitFor(t, "no active connection", func() bool { return p.Active() == 0 })
}

func TestDelayAndRate(t *testing.T) {
	s := startServer(t, true)
	p := newProxy(t, s.ln.Addr().String())
	p.SetDelay(100 * time.Millisecond)
	c := dial(t, p)
	start := time.Now()
	c.Write([]byte("ping"))
	readN(t, c, 4)
	// Lower bounds only: the delay applies in each direction.
	require.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond, "round trip with 100 ms of delay each way")
	p.SetDelay(0)
	p.SetRate(20000)
	data := bytes.Repeat([]byte("z"), 10000)
	start = time.Now()
	go c.Write(data)
	readN(t, c, len(data))
	require.GreaterOrEqual(t, time.Since(start), 400*time.Millisecond, "10 kB at 20 kB/s each way")
}

func TestRefuseAndSwitchUpstream(t *testing.T) {
	s1 := startServer(t, false)
	s2 := startServer(t, false)
	p := newProxy(t, s1.ln.Addr().String())
	p.SetRefuse(true)
	// The reset may arrive during the dial or on the first read.
	if c, err := net.Dial("tcp", p.Addr()); err == nil {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
		require.Error(t, err, "a refused connection stayed open")
		require.False(t, isTimeout(err), "a refused connection stayed open: %v", err)
	}
	p.SetRefuse(false)
	p.SetUpstream(s2.ln.Addr().String())
	c2 := dial(t, p)
	c2.Write([]byte("two"))
	waitFor(t, "bytes at the new upstream", func() bool { return s2.received() == "two" })
	require.Empty(t, s1.received(), "old upstream got data")
	require.Equal(t, 2, p.Accepted(), "accepted")
}

func TestCloseEndsEverything(t *testing.T) {
	s := startServer(t, true)
	p, err := faultproxy.New(s.ln.Addr().String())
	require.NoError(t, err, "new proxy")
	var cs []net.Conn
	for i := 0; i < 5; i++ {
		c, err := net.Dial("tcp", p.Addr())
		require.NoError(t, err, "dial the proxy")
		defer c.Close()
		cs = append(cs, c)
	}
	waitFor(t, "five connections", func() bool { return p.Active() == 5 })
	p.Stall()
	p.Close()
	p.Close()
	require.Zero(t, p.Active(), "active after Close")
	for _, c := range cs {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err := c.Read(make([]byte, 1))
		require.Error(t, err, "a connection survived Close")
	}
}
