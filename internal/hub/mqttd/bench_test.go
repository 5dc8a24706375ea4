package mqttd

import (
	"crypto/tls"
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/internal/testutil/pkitest"
)

// BenchmarkConnections connects 1000 devices over TLS (a hand-written
// CONNECT + SUBSCRIBE $iothub/methods/POST/# each, SAS-authenticated) and
// reports the memory they hold once connected and subscribed:
//
//   - B/conn: heap per connection on the hub side, estimated as the heap
//     of both ends minus half the heap of an idle bare TLS connection pair
//     (the client's half, which also lives in this process);
//   - total-B/conn: heap of both ends per connection;
//   - tlspair-B/conn: heap per idle bare TLS connection pair (both ends,
//     the server side blocked in Read), measured the same way;
//   - stack-B/conn and goroutines/conn: goroutine stacks and goroutines
//     per connection (the client side has no goroutines).
//
// Run: go test -run '^$' -bench BenchmarkConnections -benchtime 1x ./internal/hub/mqttd
func BenchmarkConnections(b *testing.B) {
	const n = 1000
	f := newFixture(b)
	ids := make([]string, n)
	tokens := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("bench-%04d", i)
		tokens[i] = token(b, ids[i], f.addDevice(ids[i]), time.Now().Add(time.Hour))
	}
	pair := bareTLSPairHeap(b, n)
	b.ResetTimer()
	for range b.N {
		before := memNow()
		conns := parallel(b, n, func(i int) net.Conn { return rawDevice(b, f, ids[i], tokens[i]) })
		after := memNow()
		b.StopTimer()
		total := float64(after.heap-before.heap) / n
		b.ReportMetric(total-pair/2, "B/conn")
		b.ReportMetric(total, "total-B/conn")
		b.ReportMetric(pair, "tlspair-B/conn")
		b.ReportMetric(float64(after.stack-before.stack)/n, "stack-B/conn")
		b.ReportMetric(float64(after.goroutines-before.goroutines)/n, "goroutines/conn")
		for _, c := range conns {
			c.Close()
		}
		waitIdle(b, f)
		b.StartTimer()
	}
}

type memSample struct {
	heap, stack int64
	goroutines  int
}

func memNow() memSample {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return memSample{heap: int64(m.HeapAlloc), stack: int64(m.StackInuse), goroutines: runtime.NumGoroutine()}
}

// parallel opens n connections with a few dialers at a time.
func parallel(tb testing.TB, n int, dial func(i int) net.Conn) []net.Conn {
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				conns[i] = dial(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, c := range conns {
		require.NotNil(tb, c, "connection %d failed", i)
	}
	return conns
}

// rawDevice connects and subscribes one device with hand-written packets.
func rawDevice(tb testing.TB, f *fixture, clientID, sas string) net.Conn {
	// Runs on parallel's dialers: assert only, never require.
	c, err := tls.Dial("tcp", f.addr, f.clientTLS())
	if !assert.NoError(tb, err) {
		return nil
	}
	fail := func(what string, err error) net.Conn {
		assert.Fail(tb, clientID+" "+what, "%v", err)
		c.Close()
		return nil
	}
	if _, err := c.Write(connectPacket(4, clientID, username(clientID), sas)); err != nil {
		return fail("CONNECT", err)
	}
	if b, err := readN(c, 4); err != nil || b[3] != 0 {
		return fail("CONNACK", fmt.Errorf("% x %v", b, err))
	}
	if _, err := c.Write(subscribePacket(1, methodsFilter, 0)); err != nil {
		return fail("SUBSCRIBE", err)
	}
	if b, err := readN(c, 5); err != nil || b[0] != 0x90 || b[4] != 0 {
		return fail("SUBACK", fmt.Errorf("% x %v", b, err))
	}
	_ = c.SetReadDeadline(time.Time{})
	return c
}

// waitIdle waits until the server has cleaned up every connection.
func waitIdle(tb testing.TB, f *fixture) {
	require.EventuallyWithT(tb, func(c *assert.CollectT) {
		f.srv.mu.Lock()
		left := len(f.srv.links)
		f.srv.mu.Unlock()
		assert.Zero(c, left, "connections still open")
	}, time.Minute, 10*time.Millisecond)
}

// bareTLSPairHeap returns the heap per idle TLS connection pair, both ends
// in this process, the server end blocked in Read.
func bareTLSPairHeap(tb testing.TB, n int) float64 {
	cert, pool := pkitest.ServerCert(tb)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert})
				buf := make([]byte, 1)
				for {
					if _, err := tc.Read(buf); err != nil {
						break
					}
				}
				tc.Close()
			})
		}
	})
	defer func() {
		ln.Close()
		wg.Wait()
	}()
	conf := &tls.Config{RootCAs: pool}
	before := memNow()
	conns := parallel(tb, n, func(int) net.Conn {
		c, err := tls.Dial("tcp", ln.Addr().String(), conf)
		if !assert.NoError(tb, err) {
			return nil
		}
		// One byte makes the server finish its side of the handshake.
		_, err = c.Write([]byte{0})
		assert.NoError(tb, err)
		return c
	})
	time.Sleep(200 * time.Millisecond) // let the servers read the byte
	after := memNow()
	for _, c := range conns {
		c.Close()
	}
	return float64(after.heap-before.heap) / float64(n)
}
