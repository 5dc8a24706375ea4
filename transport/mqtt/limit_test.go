package mqtt

import (
	"cmp"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/testutil/pkitest"
	"github.com/iothub-go/iothub/transport"
)

// hostileHub accepts one MQTT connection over TLS on a random loopback
// port, reads the CONNECT and writes script. It keeps the connection open
// until the test ends, so that a client waiting for announced bytes would
// wait.
func hostileHub(t *testing.T, script []byte) (addr string, roots *tls.Config) {
	t.Helper()
	return scriptedHub(t, script, true)
}

// scriptedHub serves one connection: it reads the CONNECT, writes script,
// and then reads (and drops) whatever comes if read is set, or stops
// reading.
func scriptedHub(t *testing.T, script []byte, read bool) (addr string, roots *tls.Config) {
	t.Helper()
	cert, pool := pkitest.ServerCert(t)
	var lc net.ListenConfig
	if !read { // a small receive window: the device's writes soon block
		lc.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
			return cmp.Or(err, serr)
		}
	}
	tl, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := tls.NewListener(tl, &tls.Config{Certificates: []tls.Certificate{cert}})
	done := make(chan struct{})
	stop := make(chan struct{})
	go func() {
		defer close(done)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		if _, err := packets.ReadPacket(nc); err != nil { // CONNECT
			return
		}
		if _, err := nc.Write(script); err != nil {
			return
		}
		if read {
			go func() { _, _ = io.Copy(io.Discard, nc) }() // ends when nc closes
		}
		<-stop
	}()
	t.Cleanup(func() {
		close(stop)
		ln.Close()
		<-done
	})
	return ln.Addr().String(), &tls.Config{RootCAs: pool}
}

func dialHostile(ctx context.Context, addr string, tlsConf *tls.Config) (transport.Conn, error) {
	return New(nil).Dial(ctx, transport.Config{
		Identity:  auth.Identity{HostName: "h", DeviceID: "d"},
		Address:   addr,
		Token:     "SharedAccessSignature sr=h&sig=x&se=1",
		TLSConfig: tlsConf,
		Logger:    slog.New(slog.DiscardHandler),
	})
}

var connack = []byte{0x20, 0x02, 0x00, 0x00}

// A peer announcing a 256 MiB packet in a 5-byte header fails the
// connection with errPacketTooLarge at once, whether it is the CONNACK or
// a PUBLISH on an established connection; nothing of that size is
// allocated (paho would allocate it before reading a byte of it).
func TestHostilePacketLength(t *testing.T) {
	huge := []byte{0xff, 0xff, 0xff, 0x7f} // remaining length 268,435,455
	t.Run("connack", func(t *testing.T) {
		addr, tlsConf := hostileHub(t, append([]byte{0x20}, huge...))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := dialHostile(ctx, addr, tlsConf)
		if c != nil {
			c.Close()
		}
		require.Error(t, err)
		assert.ErrorIs(t, err, errPacketTooLarge)
		assert.NoError(t, ctx.Err(), "the dial ended by the limit, not by the deadline")
	})
	t.Run("publish", func(t *testing.T) {
		script := append(append([]byte{}, connack...), 0x30)
		addr, tlsConf := hostileHub(t, append(script, huge...))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		c, err := dialHostile(ctx, addr, tlsConf)
		require.NoError(t, err)
		defer c.Close()
		select {
		case <-c.Done():
		case <-ctx.Done():
			require.FailNow(t, "the connection survived a 256 MiB packet header")
		}
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		assert.ErrorIs(t, c.Err(), errPacketTooLarge)
		assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(16<<20), "bytes allocated")
	})
}

// A legitimate packet at the limit passes; one byte more fails.
func TestPacketLimitBoundary(t *testing.T) {
	enc := func(typ byte, n int) []byte {
		b := []byte{typ}
		for {
			d := byte(n % 128)
			n /= 128
			if n > 0 {
				d |= 0x80
			}
			b = append(b, d)
			if n == 0 {
				return b
			}
		}
	}
	l := packetLimit{max: MaxPacketSize}
	require.NoError(t, l.feed(append(enc(0x30, MaxPacketSize), make([]byte, MaxPacketSize)...)))
	require.NoError(t, l.feed([]byte{0xd0, 0x00})) // PINGRESP
	require.ErrorIs(t, l.feed(enc(0x30, MaxPacketSize+1)), errPacketTooLarge)
	l = packetLimit{max: 1 << 30}
	require.ErrorIs(t, l.feed([]byte{0x30, 0x80, 0x80, 0x80, 0x80, 0x01}), errPacketTooLarge, "a 5-byte length is malformed")
}

// FuzzPacketLimit feeds arbitrary bytes in arbitrary chunks: the limit
// never panics, and it fails exactly when a whole-stream parse finds a
// packet over the limit or a malformed length.
func FuzzPacketLimit(f *testing.F) {
	f.Add([]byte{0x20, 0x02, 0x00, 0x00, 0x30, 0x03, 0x00, 0x01, 'a'}, uint8(1), uint16(16))
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0x7f}, uint8(2), uint16(1000))
	f.Add([]byte{0x30, 0x80, 0x80, 0x80, 0x80, 0x01}, uint8(3), uint16(0xffff))
	f.Add([]byte{0x30, 0x81, 0x01, 0x00}, uint8(1), uint16(128))
	f.Add([]byte{0x30, 0x81, 0x01, 0x00}, uint8(1), uint16(129))
	f.Fuzz(func(t *testing.T, b []byte, chunk uint8, limit uint16) {
		l := packetLimit{max: int32(limit)}
		n := max(int(chunk), 1)
		var got error
		for i := 0; i < len(b) && got == nil; i += n {
			got = l.feed(b[i:min(i+n, len(b))])
		}
		want := referenceCheck(b, int(limit))
		require.Equal(t, want == nil, got == nil, "feed: %v; reference: %v", got, want)
		if got != nil {
			require.ErrorIs(t, got, errPacketTooLarge)
		}
	})
}

// referenceCheck parses the whole stream with paho's own decoder of the
// fixed header's length rules.
func referenceCheck(b []byte, limit int) error {
	for len(b) > 0 {
		b = b[1:]
		length, mult, i := 0, 1, 0
		for {
			if i == len(b) {
				if length > limit {
					return errPacketTooLarge
				}
				return nil
			}
			d := b[i]
			i++
			length += int(d&0x7f) * mult
			mult *= 128
			if length > limit {
				return errPacketTooLarge
			}
			if d&0x80 == 0 {
				break
			}
			if i == 4 {
				return errPacketTooLarge
			}
		}
		b = b[i:]
		if length >= len(b) {
			return nil
		}
		b = b[length:]
	}
	return nil
}
