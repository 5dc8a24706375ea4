package faultproxy_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

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
	if err != nil {
		t.Fatal(err)
	}
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
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, p *faultproxy.Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitFor polls cond with a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func readN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, n)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read: %v", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	return string(buf)
}

func TestForwards(t *testing.T) {
	s := startServer(t, true)
	p := newProxy(t, s.ln.Addr().String())
	c := dial(t, p)
	big := bytes.Repeat([]byte("0123456789"), 20000)
	go c.Write(big)
	if got := readN(t, c, len(big)); got != string(big) {
		t.Fatal("echo differs")
	}
	waitFor(t, "one active connection", func() bool { return p.Active() == 1 })
	c.Close()
	waitFor(t, "no active connection", func() bool { return p.Active() == 0 })
	if p.Accepted() != 1 {
		t.Fatalf("accepted %d", p.Accepted())
	}
}

func TestCutResetsBothSides(t *testing.T) {
	s := startServer(t, true)
	p := newProxy(t, s.ln.Addr().String())
	c := dial(t, p)
	c.Write([]byte("x"))
	readN(t, c, 1)
	if n := p.Cut(); n != 1 {
		t.Fatalf("cut %d connections", n)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read after cut: %v", err)
	}
	waitFor(t, "no active connection", func() bool { return p.Active() == 0 })
	// New connections still work.
	c2 := dial(t, p)
	c2.Write([]byte("y"))
	if readN(t, c2, 1) != "y" {
		t.Fatal("no echo after cut")
	}
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
	if got := s.received(); got != "a" {
		t.Fatalf("server received %q during the stall", got)
	}
	p.Resume()
	waitFor(t, "held bytes delivered", func() bool { return s.received() == "abcd" })
	if got := readN(t, c, 3); got != "bcd" {
		t.Fatalf("echo after resume %q", got)
	}
	// The server's FIN is held back too.
	p.Stall()
	s.conn(t, 0).Close()
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := c.Read(make([]byte, 1)); n != 0 || !isTimeout(err) {
		t.Fatalf("read during the stall: %d, %v; want a timeout", n, err)
	}
	p.Resume()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("after resume the client sees the server's close: %v", err)
	}
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
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("client read after half-close: %d, %v; want EOF", n, err)
	}
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
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("client: %v", err)
	}
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
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Fatalf("round trip took %v with 100 ms of delay each way", el)
	}
	p.SetDelay(0)
	p.SetRate(20000)
	data := bytes.Repeat([]byte("z"), 10000)
	start = time.Now()
	go c.Write(data)
	readN(t, c, len(data))
	if el := time.Since(start); el < 400*time.Millisecond {
		t.Fatalf("10 kB at 20 kB/s each way took %v", el)
	}
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
		if err == nil || isTimeout(err) {
			t.Fatalf("a refused connection stayed open: %v", err)
		}
	}
	p.SetRefuse(false)
	p.SetUpstream(s2.ln.Addr().String())
	c2 := dial(t, p)
	c2.Write([]byte("two"))
	waitFor(t, "bytes at the new upstream", func() bool { return s2.received() == "two" })
	if s1.received() != "" {
		t.Fatalf("old upstream got %q", s1.received())
	}
	if p.Accepted() != 2 {
		t.Fatalf("accepted %d", p.Accepted())
	}
}

func TestCloseEndsEverything(t *testing.T) {
	s := startServer(t, true)
	p, err := faultproxy.New(s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	var cs []net.Conn
	for i := 0; i < 5; i++ {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cs = append(cs, c)
	}
	waitFor(t, "five connections", func() bool { return p.Active() == 5 })
	p.Stall()
	p.Close()
	p.Close()
	if p.Active() != 0 {
		t.Fatalf("active %d after Close", p.Active())
	}
	for _, c := range cs {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("a connection survived Close")
		}
	}
}
