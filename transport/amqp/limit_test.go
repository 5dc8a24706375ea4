package amqp

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// transferFrame is a transfer on channel ch for link handle h, with
// more set as given, carrying payload.
func transferFrame(ch uint16, h byte, more bool, payload []byte) []byte {
	moreV := byte(0x42)
	if more {
		moreV = 0x41
	}
	perf := described(codeTransfer, list8(smallUint(h), smallUint(0), []byte{0xa0, 1, 't'}, smallUint(0), []byte{0x42}, []byte{moreV}))
	return frame(ch, 0, append(perf, payload...))
}

// Issue 16.1: a hub that streams one message in frames of 60 KiB with
// more=true fails the connection once the message passes MaxMessageSize,
// whatever max-message-size it announced in its attach; messages within the
// limit, and frames of other links, pass.
func TestHubMessageSizeBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	chunk := make([]byte, 60<<10)
	served := make(chan error, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer nc.Close()
		var b []byte
		b = append(b, "AMQP\x00\x01\x00\x00"...)
		b = append(b, attachFrame(0, "methods-receiver-x", 0)...)
		b = append(b, transferFrame(0, 0, true, chunk)...) // a 120 KiB message: passes
		b = append(b, transferFrame(0, 0, false, chunk)...)
		if _, err := nc.Write(b); err != nil {
			served <- err
			return
		}
		for { // a message without end
			if _, err := nc.Write(transferFrame(0, 0, true, chunk)); err != nil {
				served <- nil // the client hung up
				return
			}
		}
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	w := newFrameWatch(nc, 0, func(string, string, string) {}, func([]string, string, string) {})
	require.NoError(t, nc.SetReadDeadline(time.Now().Add(30*time.Second)))
	n, err := io.Copy(io.Discard, w) // go-amqp's reads
	require.ErrorIs(t, err, errMessageTooLarge)
	assert.Less(t, n, int64(2*120<<10+MaxMessageSize), "bytes passed on before the limit ended the connection")
	select {
	case err := <-served:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		require.FailNow(t, "the hostile hub never saw the connection close")
	}
}

func TestFrameScannerMessageLimit(t *testing.T) {
	sc := &frameScanner{maxMessage: 100}
	sc.feed(transferFrame(0, 0, true, make([]byte, 60)))
	sc.feed(transferFrame(0, 1, false, make([]byte, 90))) // another link
	sc.feed(transferFrame(1, 0, true, make([]byte, 90)))  // another channel
	require.NoError(t, sc.err)
	sc.feed(transferFrame(0, 0, false, make([]byte, 40))) // 100 bytes: at the limit
	require.NoError(t, sc.err)
	sc.feed(transferFrame(0, 0, false, make([]byte, 100))) // a new message
	require.NoError(t, sc.err)
	sc.feed(transferFrame(1, 0, false, make([]byte, 11)))
	require.ErrorIs(t, sc.err, errMessageTooLarge)
}
