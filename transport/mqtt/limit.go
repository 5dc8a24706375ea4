package mqtt

import (
	"fmt"
	"math"
	"net"
	"sync/atomic"

	"github.com/iothub-go/iothub/transport"
)

// MaxPacketSize is the largest MQTT packet, in remaining length (the bytes
// after the fixed header), that the transport accepts from the hub: 256 KiB.
// The largest packets IoT Hub legitimately sends a device are a method
// request, a PUBLISH of at most 128 KB of payload plus its topic, and a
// twin (the answer to GetTwin): desired and reported properties of at most
// 32 KB each by IoT Hub's count, a little more as JSON. The cap leaves
// room for either twice over. A packet that announces more fails the connection
// with an error wrapping transport.ErrHubMessageTooLarge before any of it is buffered (the
// MQTT library would otherwise allocate whatever a 5-byte header announces,
// up to 256 MiB). The device client then reconnects.
const MaxPacketSize = 256 * 1024

// errPacketTooLarge is wrapped by the error of a connection whose peer
// announced an MQTT packet larger than MaxPacketSize, or sent a malformed
// packet length.
var errPacketTooLarge = fmt.Errorf("%w: mqtt packet", transport.ErrHubMessageTooLarge)

// packetLimit follows the MQTT fixed headers (MQTT 3.1.1 section 2.2) of
// the bytes fed to it, whatever the read boundaries, and fails as soon as a
// packet's remaining length exceeds max, or its length field is malformed.
type packetLimit struct {
	// int32 is enough (a remaining length is at most 268,435,455) and keeps
	// limitConn, a field of every connection, small.
	max    int32
	length int32 // remaining length decoded so far
	body   int32 // body bytes still to pass
	nlen   uint8 // remaining-length bytes read so far
	inLen  bool  // reading the remaining-length bytes
}

// feed checks p, the next bytes of the stream.
func (l *packetLimit) feed(p []byte) error {
	for i := 0; i < len(p); {
		switch {
		case l.body > 0:
			n := min(int(l.body), len(p)-i)
			l.body -= int32(n)
			i += n
		case !l.inLen: // the packet type byte
			l.inLen, l.nlen, l.length = true, 0, 0
			i++
		default:
			b := p[i]
			i++
			l.length |= int32(b&0x7f) << (7 * l.nlen)
			l.nlen++
			// The value only grows with more bytes: refuse as early as
			// possible.
			if l.length > l.max {
				return fmt.Errorf("%w: a packet of at least %d bytes announced (the limit is %d)", errPacketTooLarge, l.length, l.max)
			}
			if b&0x80 != 0 {
				if l.nlen == 4 {
					return fmt.Errorf("%w: malformed remaining length", errPacketTooLarge)
				}
				continue
			}
			l.inLen = false
			l.body = l.length
		}
	}
	return nil
}

// limitConn is the hub connection as paho uses it: every byte read passes
// through a packetLimit before paho sees it, and every write is watched
// (writewatch.go).
type limitConn struct {
	net.Conn
	lim packetLimit
	err error // set once the limit failed; paho reads from one goroutine

	writing atomic.Int64                    // the write mark (writewatch.go)
	stalled atomic.Pointer[errWriteStalled] // set when the watch closed the connection
}

// newLimitConn wraps c, and watches its writes until Close.
func newLimitConn(c net.Conn, max int) *limitConn {
	lc := new(limitConn)
	lc.init(c, max)
	return lc
}

// init makes lc, not yet in use, wrap c, and watches its writes until
// Close.
func (lc *limitConn) init(c net.Conn, max int) {
	lc.Conn, lc.lim = c, packetLimit{max: int32(min(max, math.MaxInt32))}
	watchWrites(lc)
}

// Read passes on the bytes read, unless they break the limit: then it
// closes the connection and returns the error, now and on every later call.
// Once the write watch closed the connection, a failed read says why.
func (c *limitConn) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		if lerr := c.lim.feed(p[:n]); lerr != nil {
			c.err = lerr
			c.Close()
			return 0, lerr
		}
	}
	if err != nil {
		if s := c.stalled.Load(); s != nil {
			c.err = *s
			return n, c.err
		}
	}
	return n, err
}

// Write writes p, watched: when writes are under way and none has
// completed for writeTimeout, the watch closes the connection.
func (c *limitConn) Write(p []byte) (int, error) {
	c.beginWrite()
	n, err := c.Conn.Write(p)
	c.endWrite()
	if err != nil {
		if s := c.stalled.Load(); s != nil {
			return n, *s
		}
	}
	return n, err
}

// Close closes the connection and ends its watch.
func (c *limitConn) Close() error {
	unwatchWrites(c)
	return c.Conn.Close()
}
