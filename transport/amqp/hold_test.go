package amqp

import (
	"bytes"
	"encoding/binary"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// wire is the network under a frameWatch: the hub's bytes to read, and
// the frames the client wrote, in order.
type wire struct {
	net.Conn
	in      bytes.Buffer
	written [][]byte
}

func (c *wire) Read(p []byte) (int, error) { return c.in.Read(p) }
func (c *wire) Write(p []byte) (int, error) {
	c.written = append(c.written, append([]byte(nil), p...))
	return len(p), nil
}

// fromHub makes the watch read frames from the hub, as go-amqp's reader
// would before handling them.
func fromHub(t *testing.T, w *frameWatch, c *wire, frames ...[]byte) {
	t.Helper()
	for _, f := range frames {
		c.in.Write(f)
	}
	buf := make([]byte, 4096)
	for c.in.Len() > 0 {
		_, err := w.Read(buf)
		require.NoError(t, err)
	}
}

func send(t *testing.T, w *frameWatch, f []byte) {
	t.Helper()
	n, err := w.Write(f)
	require.NoError(t, err)
	require.Equal(t, len(f), n)
}

// TestAttachHeldUntilDetachReply plays go-amqp's handle reuse race: the
// hub detaches link A (client handle 5 on channel 0), go-amqp frees handle
// 5 and gives it to link B, whose attach is written before go-amqp's reply
// to the detach. The hub must see the reply first.
func TestAttachHeldUntilDetachReply(t *testing.T) {
	c := &wire{}
	var detached []string
	w := newFrameWatch(c, 0, func(name, _, _ string) { detached = append(detached, name) }, nil)

	attachA, attachB := attachFrame(0, "methods-receiver-a", 5), attachFrame(0, "methods-sender-b", 5)
	send(t, w, attachA)
	fromHub(t, w, c, attachFrame(3, "methods-receiver-a", 9)) // the hub's handle 9 on its channel 3
	fromHub(t, w, c, detachFrame(3, 9, "amqp:unauthorized-access", "token expired"))
	assert.Equal(t, []string{"methods-receiver-a"}, detached, "the connection still hears of the detach")

	send(t, w, attachB) // go-amqp reused handle 5 before replying
	other := attachFrame(0, "twin-sender-c", 6)
	send(t, w, other) // other handles pass
	require.Equal(t, [][]byte{attachA, other}, c.written, "the attach reusing handle 5 is held back")

	reply := detachFrame(0, 5, "", "")
	send(t, w, reply)
	require.Equal(t, [][]byte{attachA, other, reply, attachB}, c.written, "the held attach follows the reply")

	// Handle 5 now belongs to B: the hub's detach of B is awaited in turn.
	fromHub(t, w, c, attachFrame(3, "methods-sender-b", 10), detachFrame(3, 10, "amqp:link:detach-forced", ""))
	attachD := attachFrame(0, "methods-sender-d", 5)
	send(t, w, attachD)
	require.Len(t, c.written, 4)
	send(t, w, detachFrame(0, 5, "", ""))
	require.Len(t, c.written, 6)
	assert.Equal(t, attachD, c.written[5])
}

// TestAttachNotHeldAfterClientDetach: a detach the client began is
// answered by the hub's, after which go-amqp frees the handle; nothing is
// owed, and an attach reusing the handle passes at once.
func TestAttachNotHeldAfterClientDetach(t *testing.T) {
	c := &wire{}
	w := newFrameWatch(c, 0, nil, nil)
	send(t, w, attachFrame(0, "cbs-sender", 1))
	fromHub(t, w, c, attachFrame(0, "cbs-sender", 1))
	send(t, w, detachFrame(0, 1, "", ""))
	fromHub(t, w, c, detachFrame(0, 1, "", ""))
	next := attachFrame(0, "cbs-sender-2", 1)
	send(t, w, next)
	require.Len(t, c.written, 3)
	assert.Equal(t, next, c.written[2])
	assert.Equal(t, map[string]linkKey{"cbs-sender-2": {0, 1}}, w.hold.handles, "nothing is remembered of a finished link")
	assert.Empty(t, w.hold.detaching)
	assert.Empty(t, w.hold.replying)
}

// TestHeldAttachWithoutReply: if go-amqp never answers the hub's detach,
// the attach held for it would wait forever, and every later attach that
// gets the handle with it; after holdTimeout the connection is closed
// instead, and every device on it reconnects.
func TestHeldAttachWithoutReply(t *testing.T) {
	defer func(d time.Duration) { holdTimeout = d }(holdTimeout)
	holdTimeout = 50 * time.Millisecond
	c := &closeWire{closed: make(chan struct{})}
	w := newFrameWatch(c, 0, nil, nil)
	send(t, w, attachFrame(0, "a", 2))
	fromHub(t, w, &c.wire, attachFrame(0, "a", 2), detachFrame(0, 2, "amqp:link:detach-forced", ""))
	send(t, w, attachFrame(0, "b", 2))
	require.Len(t, c.written, 1, "held")
	select {
	case <-c.closed:
	case <-time.After(30 * time.Second):
		require.FailNow(t, "the connection was not closed")
	}
}

// TestHeldAttachTimerStopsWithConnection: once go-amqp's reads fail (the
// connection is ending), a held attach's timer is stopped; it would only
// close a connection that is gone.
func TestHeldAttachTimerStopsWithConnection(t *testing.T) {
	c := &closeWire{closed: make(chan struct{})}
	w := newFrameWatch(c, 0, nil, nil)
	send(t, w, attachFrame(0, "a", 2))
	fromHub(t, w, &c.wire, attachFrame(0, "a", 2), detachFrame(0, 2, "amqp:link:detach-forced", ""))
	send(t, w, attachFrame(0, "b", 2))
	require.Len(t, w.hold.replying, 1, "an attach held")
	_, err := w.Read(make([]byte, 16)) // nothing more from the hub: the read fails
	require.Error(t, err)
	for _, o := range w.hold.replying {
		require.NotNil(t, o.timer, "the held attach's timer")
		assert.False(t, o.timer.Stop(), "the timer was stopped when the read failed")
	}
}

// closeWire is a wire that records its Close.
type closeWire struct {
	wire
	once   sync.Once
	closed chan struct{}
}

func (c *closeWire) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

// TestParseOutgoing reads only whole attach and detach frames.
func TestParseOutgoing(t *testing.T) {
	code, k, name, ok := parseOutgoing(attachFrame(2, "x", 7))
	require.True(t, ok)
	assert.Equal(t, byte(codeAttach), code)
	assert.Equal(t, linkKey{2, 7}, k)
	assert.Equal(t, "x", name)
	code, k, _, ok = parseOutgoing(detachFrame(1, 4, "c", "d"))
	require.True(t, ok)
	assert.Equal(t, byte(codeDetach), code)
	assert.Equal(t, linkKey{1, 4}, k)
	for _, p := range [][]byte{
		nil,
		[]byte("AMQP\x00\x01\x00\x00"),
		frame(0, 0, nil),                  // heartbeat
		attachFrame(0, "x", 7)[:12],       // cut short
		append(attachFrame(0, "x", 7), 0), // longer than its size
		frame(0, 0, described(0x14, list8(smallUint(1)))), // a transfer
		frame(0, 0, described(codeAttach, list8(str8("x")))),
	} {
		_, _, _, ok := parseOutgoing(p)
		assert.False(t, ok, "%x", p)
	}
}

// FuzzParseOutgoing: any bytes, as one write, never panic the hold, and
// an attach whose link the hub detached holds back the next attach of its
// handle until the client's detach of that handle, and no longer.
func FuzzParseOutgoing(f *testing.F) {
	f.Add(attachFrame(0, "methods-sender", 5))
	f.Add(attachFrame(7, "", 0))
	f.Add(detachFrame(0, 5, "amqp:link:detach-forced", "x"))
	f.Add(frame(0, 1, described(codeAttach, list8(str8("n"), smallUint(1)))))
	f.Add([]byte("AMQP\x00\x01\x00\x00"))
	f.Fuzz(func(t *testing.T, p []byte) {
		var h attachHold
		if hold, _ := h.outgoing(p); hold {
			t.Fatalf("held %x with nothing owed", p)
		}
		code, k, name, ok := parseOutgoing(p)
		if !ok || code != codeAttach {
			return
		}
		h.hubDetached(name)
		if hold, _ := h.outgoing(p); !hold {
			t.Fatalf("an attach of a handle owed a reply passed: %x", p)
		}
		detach := binary.BigEndian.AppendUint32([]byte{0x70}, k.handle) // uint
		reply := frame(k.channel, 0, described(codeDetach, list8(detach)))
		hold, after := h.outgoing(reply)
		if hold || len(after) != 1 || !bytes.Equal(after[0], p) {
			t.Fatalf("the reply released %d frames (held: %v)", len(after), hold)
		}
		if hold, _ := h.outgoing(p); hold {
			t.Fatalf("held after the reply: %x", p)
		}
	})
}
