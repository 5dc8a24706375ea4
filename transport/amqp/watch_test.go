package amqp

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Frames are built by hand from the AMQP 1.0 type encodings (section
// 1.6) and the frame layout (section 2.3.1), independently of the scanner.

func str8(s string) []byte { return append([]byte{0xa1, byte(len(s))}, s...) }
func sym8(s string) []byte { return append([]byte{0xa3, byte(len(s))}, s...) }
func smallUint(v byte) []byte {
	return []byte{0x52, v}
}

// list8 encodes fields as a list8.
func list8(fields ...[]byte) []byte {
	var body []byte
	for _, f := range fields {
		body = append(body, f...)
	}
	return append([]byte{0xc0, byte(len(body) + 1), byte(len(fields))}, body...)
}

func described(code byte, list []byte) []byte {
	return append([]byte{0x00, 0x53, code}, list...)
}

// frame wraps a performative in an AMQP frame on channel ch, with an
// extended header of ext 4-byte words.
func frame(ch uint16, ext int, body []byte) []byte {
	doff := 2 + ext
	b := make([]byte, 8+4*ext, 8+4*ext+len(body))
	binary.BigEndian.PutUint32(b, uint32(len(b)+len(body)))
	b[4] = byte(doff)
	binary.BigEndian.PutUint16(b[6:], ch)
	return append(b, body...)
}

func attachFrame(ch uint16, name string, handle byte) []byte {
	return frame(ch, 0, described(codeAttach, list8(str8(name), smallUint(handle), []byte{0x41})))
}

func detachFrame(ch uint16, handle byte, cond, desc string) []byte {
	errv := []byte{0x40}
	if cond != "" {
		errv = described(codeError, list8(sym8(cond), str8(desc)))
	}
	return frame(ch, 0, described(codeDetach, list8(smallUint(handle), []byte{0x41}, errv)))
}

func endFrame(ch uint16, cond string) []byte {
	return frame(ch, 0, described(codeEnd, list8(described(codeError, list8(sym8(cond))))))
}

type seen struct {
	detached []string
	ended    [][]string
	conds    []string
}

func newScanner(s *seen) *frameScanner {
	return &frameScanner{
		onDetach: func(name, cond, desc string) {
			s.detached = append(s.detached, name)
			s.conds = append(s.conds, cond+"|"+desc)
		},
		onEnd: func(names []string, cond, _ string) {
			s.ended = append(s.ended, names)
			s.conds = append(s.conds, cond)
		},
	}
}

func stream() []byte {
	var b []byte
	b = append(b, "AMQP\x00\x01\x00\x00"...)
	b = append(b, frame(0, 0, nil)...)                        // heartbeat
	b = append(b, frame(0, 1, described(0x10, list8()))...)   // open, with an extended header
	b = append(b, attachFrame(1, "methods-sender-x", 0)...)   // hub's handle 0 on channel 1
	b = append(b, attachFrame(1, "methods-receiver-y", 1)...) //
	b = append(b, attachFrame(2, "events-z", 0)...)           // same handle, other channel
	transfer := frame(1, 0, append(described(0x14, list8(smallUint(1))), make([]byte, 3000)...))
	b = append(b, transfer...) // a long body the scanner skips
	b = append(b, detachFrame(1, 0, "amqp:link:detach-forced", "gone")...)
	b = append(b, endFrame(2, "amqp:internal-error")...)
	b = append(b, detachFrame(1, 7, "", "")...) // an unknown handle: ignored
	return b
}

func check(t *testing.T, s *seen) {
	t.Helper()
	assert.Equal(t, []string{"methods-sender-x"}, s.detached)
	require.Len(t, s.ended, 1)
	assert.Equal(t, []string{"events-z"}, s.ended[0])
	assert.Equal(t, []string{"amqp:link:detach-forced|gone", "amqp:internal-error"}, s.conds)
}

func TestFrameScanner(t *testing.T) {
	b := stream()
	for _, chunk := range []int{len(b), 1, 3, 7, 64} {
		var s seen
		sc := newScanner(&s)
		for i := 0; i < len(b); i += chunk {
			sc.feed(b[i:min(i+chunk, len(b))])
		}
		require.False(t, sc.broken, "chunk %d", chunk)
		check(t, &s)
	}
}

// A transfer's body is not copied beyond its performative.
func TestFrameScannerSkipsTransfers(t *testing.T) {
	var s seen
	sc := newScanner(&s)
	transfer := frame(1, 0, append(described(0x14, list8(smallUint(1))), make([]byte, 3000)...))
	sc.feed(transfer[:2000])
	assert.LessOrEqual(t, len(sc.kept), maxTransferKept)
	sc.feed(transfer[2000:])
	sc.feed(attachFrame(1, "after", 0))
	sc.feed(detachFrame(1, 0, "", ""))
	assert.Equal(t, []string{"after"}, s.detached, "frames after a skipped transfer are still read")
}

// The buffer a long attach was kept in is not held for the life of the
// connection: after it, the scanner holds at most a transfer's share, and
// still reads the frames that follow.
func TestFrameScannerLetsGoOfLongFrames(t *testing.T) {
	var s seen
	sc := newScanner(&s)
	long := string(make([]byte, 200)) // a 200-byte link name
	sc.feed(attachFrame(1, long, 0))
	assert.LessOrEqual(t, cap(sc.kept), maxTransferKept)
	sc.feed(frame(1, 0, append(described(0x14, list8(smallUint(1))), make([]byte, 300)...)))
	assert.LessOrEqual(t, cap(sc.kept), maxTransferKept)
	sc.feed(detachFrame(1, 0, "", ""))
	assert.Equal(t, []string{long}, s.detached)
}

func TestFrameScannerStopsOnGarbage(t *testing.T) {
	var s seen
	sc := newScanner(&s)
	sc.feed([]byte{0, 0, 0, 4, 2, 0, 0, 0}) // size below the 8-byte header
	assert.True(t, sc.broken)
	sc.feed(detachFrame(1, 0, "", ""))
	assert.Empty(t, s.detached)
}

// FuzzFrameScanner feeds arbitrary bytes, in arbitrary chunks, to the
// scanner that reads the hub's frames: it must never panic, and it keeps at
// most maxKept bytes of a body and maxLinks link names.
func FuzzFrameScanner(f *testing.F) {
	f.Add(stream(), uint8(1))
	f.Add(stream(), uint8(13))
	f.Add(attachFrame(0, "n", 0), uint8(2))
	f.Add(detachFrame(0, 0, "c", "d"), uint8(5))
	f.Add(append(transferFrame(0, 0, true, make([]byte, 100)), transferFrame(0, 0, false, nil)...), uint8(7))
	f.Add(transferFrame(1, 2, true, nil)[:20], uint8(1))
	f.Add([]byte("AMQP\x03\x01\x00\x00\x00\x00\x00\x08\x02\x01\x00\x00"), uint8(4))
	f.Add(frame(0, 0, []byte{0x00, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x12, 0xd0, 0, 0, 0, 9, 0, 0, 0, 2, 0x40, 0x43}), uint8(3))
	f.Fuzz(func(t *testing.T, b []byte, chunk uint8) {
		sc := &frameScanner{onDetach: func(string, string, string) {}, onEnd: func([]string, string, string) {}}
		n := max(int(chunk), 1)
		for i := 0; i < len(b); i += n {
			sc.feed(b[i:min(i+n, len(b))])
			require.LessOrEqual(t, len(sc.kept), maxKept, "bytes kept of a body")
			require.LessOrEqual(t, len(sc.links), maxLinks, "links kept")
			require.LessOrEqual(t, len(sc.partial), maxLinks, "unfinished messages kept")
			for _, n := range sc.partial {
				require.LessOrEqual(t, n, MaxMessageSize, "an unfinished message passed")
			}
		}
	})
}
