package mqtt

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/transport"
)

// shortWriteTimeout sets writeTimeout to d for the test. The watch takes
// its timeout when it starts, so no connection may be open.
func shortWriteTimeout(t *testing.T, d time.Duration) {
	t.Helper()
	require.Eventually(t, watchStopped, 10*time.Second, 5*time.Millisecond, "a connection of an earlier test is still watched")
	old := writeTimeout
	writeTimeout = d
	t.Cleanup(func() { writeTimeout = old })
}

// writeState reports whether a watched connection is writing, and
// whether that write has been under way since the watch's clock last
// stepped, at least (so blocked, not passing).
func writeState() (writing, blocked bool) {
	watch.mu.Lock()
	defer watch.mu.Unlock()
	for c := range watch.conns {
		if c.writing.Load() != 0 {
			return true, c.stalledSince(watch.clock.Load(), 0)
		}
	}
	return false, false
}

func watchStopped() bool {
	watch.mu.Lock()
	defer watch.mu.Unlock()
	return watch.stop == nil && len(watch.conns) == 0
}

// A hub that stops reading: the device's writes fill the socket buffers
// and block, and the write watch ends the connection with errWriteStalled.
// The watch stops once no connection is left.
func TestWriteWatchEndsStalledConnection(t *testing.T) {
	shortWriteTimeout(t, 300*time.Millisecond)
	addr, tlsConf := scriptedHub(t, connack, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := dialHostile(ctx, addr, tlsConf)
	require.NoError(t, err)
	defer c.Close()
	// Events until the socket buffers are full and the writer blocks in
	// one: after each, wait until its write is done or has been under way
	// for a step of the watch's clock. None is acknowledged, so each send
	// ends by its own deadline. No event follows the one that blocks: it
	// would wait in paho's Publish for the writer, 30 s, after the
	// connection ends.
	payload := bytes.Repeat([]byte("x"), 200<<10)
	for sent := 0; ; sent++ {
		require.Less(t, sent, 100, "20 MB sent, and no write blocked")
		sctx, scancel := context.WithTimeout(ctx, 50*time.Millisecond)
		_ = c.SendEvent(sctx, &transport.Message{Body: payload})
		scancel()
		var blocked bool
		require.Eventually(t, func() bool {
			var writing bool
			writing, blocked = writeState()
			return !writing || blocked
		}, 10*time.Second, time.Millisecond, "a write neither done nor blocked")
		if blocked {
			break
		}
	}
	select {
	case <-c.Done():
	case <-ctx.Done():
		require.FailNow(t, "the connection survived a stalled write")
	}
	var stalled errWriteStalled
	require.ErrorAs(t, c.Err(), &stalled, "connection error: %v", c.Err())
	assert.Equal(t, 300*time.Millisecond, stalled.d)
	require.NoError(t, c.Close())
	assert.Eventually(t, watchStopped, 10*time.Second, 5*time.Millisecond, "the watch outlived its connections")
}

// A write that cannot complete is ended by the watch, and so are the
// connection's reads; writes that keep completing, however long the
// connection lives, are left alone.
func TestWriteWatch(t *testing.T) {
	shortWriteTimeout(t, 200*time.Millisecond)
	t.Run("stalled", func(t *testing.T) {
		a, b := net.Pipe() // nobody reads b: a's first write blocks
		defer b.Close()
		require.NoError(t, a.SetDeadline(time.Now().Add(10*time.Second))) // fail, not hang, without the watch
		lc := newLimitConn(a, MaxPacketSize)
		defer lc.Close()
		_, err := lc.Write([]byte("x"))
		var stalled errWriteStalled
		require.ErrorAs(t, err, &stalled)
		_, err = lc.Read(make([]byte, 1))
		require.ErrorAs(t, err, &stalled)
	})
	t.Run("steady", func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		go func() { _, _ = io.Copy(io.Discard, b) }() // ends when a closes
		lc := newLimitConn(a, MaxPacketSize)
		defer lc.Close()
		until, deadline := watch.clock.Load()+3*watchSteps, time.Now().Add(10*time.Second) // three timeouts
		for n := 0; watch.clock.Load() < until; n++ {
			require.True(t, time.Now().Before(deadline), "the watch's clock stopped")
			_, err := lc.Write([]byte("x"))
			require.NoError(t, err, "write %d", n)
		}
		assert.Nil(t, lc.stalled.Load())
		assert.Zero(t, lc.writing.Load(), "write mark after the writes")
	})
	t.Run("overlapping", func(t *testing.T) {
		// One write blocks; others on the same connection complete, so
		// the connection makes progress and lives, until they stop.
		a, b := net.Pipe()
		defer b.Close()
		require.NoError(t, a.SetDeadline(time.Now().Add(10*time.Second))) // fail, not hang, without the watch
		lc := newLimitConn(a, MaxPacketSize)
		defer lc.Close()
		lc.beginWrite() // a write under way that never returns
		until, deadline := watch.clock.Load()+2*watchSteps, time.Now().Add(10*time.Second)
		for watch.clock.Load() < until {
			require.True(t, time.Now().Before(deadline), "the watch's clock stopped")
			lc.beginWrite()
			lc.endWrite()
			require.Nil(t, lc.stalled.Load(), "closed while other writes completed")
		}
		_, err := lc.Read(make([]byte, 1)) // the others stopped: the watch closes it
		var stalled errWriteStalled
		require.True(t, errors.As(err, &stalled), "read after the stall: %v", err)
	})
}
