package mqtt

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// writeTimeout bounds every write to the hub: when writes have been under
// way this long with none completing, the watch closes the connection,
// which the device client then sees lost (and reconnects). Tests shorten
// it.
var writeTimeout = 30 * time.Second

// watchSteps is how many steps of the watch's clock make writeTimeout: a
// stalled write ends between writeTimeout and (1 + 1/watchSteps) ×
// writeTimeout after it began.
const watchSteps = 8

// errWriteStalled is what a connection's reads return once the watch
// closed it for a write that did not complete.
type errWriteStalled struct{ d time.Duration }

func (e errWriteStalled) Error() string {
	return fmt.Sprintf("iothub: mqtt: a write to the hub did not complete within %v", e.d)
}

// The write watch. paho's own write timeout covers PUBLISH packets only,
// and costs each of them two SetWriteDeadline calls, each a change of a
// runtime timer. The watch covers every write (PINGREQ, PUBACK and
// SUBSCRIBE too: paho's keep-alive writes its PINGREQ itself, and stops
// checking for the answer while the write blocks) for two atomic
// operations each. One goroutine, shared by the process's connections and
// running only while one is open, steps a coarse clock and closes any
// connection that has had a write under way, and none completing, for
// writeTimeout.
var watch struct {
	clock atomic.Int64 // steps of the watch since the process began; read by every write

	mu    sync.Mutex
	conns map[*limitConn]struct{}
	stop  chan struct{} // closed when the last connection leaves; nil while none is open
}

// watchWrites registers c with the write watch, starting it if c is the
// only connection open.
func watchWrites(c *limitConn) {
	watch.mu.Lock()
	defer watch.mu.Unlock()
	if watch.conns == nil {
		watch.conns = make(map[*limitConn]struct{})
	}
	watch.conns[c] = struct{}{}
	if watch.stop == nil {
		watch.stop = make(chan struct{})
		go runWatch(watch.stop, writeTimeout)
	}
}

// unwatchWrites removes c from the write watch, stopping the watch if it
// was the last connection open.
func unwatchWrites(c *limitConn) {
	watch.mu.Lock()
	defer watch.mu.Unlock()
	if _, ok := watch.conns[c]; !ok {
		return
	}
	delete(watch.conns, c)
	if len(watch.conns) == 0 {
		close(watch.stop)
		watch.stop = nil
	}
}

// runWatch steps the clock every timeout/watchSteps and closes the
// connections whose writes have made no progress for more than watchSteps
// steps. It steps the clock only while it is the watch (its stop is the
// current one), under watch.mu: a watch that was stopped and a new one
// never both step it.
func runWatch(stop chan struct{}, timeout time.Duration) {
	t := time.NewTicker(timeout / watchSteps)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		var stalled []*limitConn
		watch.mu.Lock()
		if watch.stop != stop {
			watch.mu.Unlock()
			return
		}
		now := watch.clock.Add(1)
		for c := range watch.conns {
			if c.stalledSince(now, watchSteps) {
				stalled = append(stalled, c)
			}
		}
		watch.mu.Unlock()
		// Closing may take a while (a TLS close alert, a WebSocket close
		// handshake): not on the watch's goroutine.
		for _, c := range stalled {
			go c.stall(timeout)
		}
	}
}

// A connection's write mark, c.writing, packs the writes under way (the
// bits from markShift up) and the step of the watch's clock when the
// connection last made progress while writing (the bits below): the step
// when a write began with none under way, or when one of several ended.
// Writes to one connection may overlap (paho's keepalive writes its
// PINGREQ from a goroutine of its own). 0 is no write under way.
const (
	markShift = 48
	markOne   = 1 << markShift
	markStep  = markOne - 1
)

// beginWrite marks a write of c as under way; endWrite marks it done.
func (c *limitConn) beginWrite() {
	for {
		old := c.writing.Load()
		next := old + markOne
		if old == 0 {
			next |= watch.clock.Load() & markStep
		}
		if c.writing.CompareAndSwap(old, next) {
			return
		}
	}
}

func (c *limitConn) endWrite() {
	for {
		old := c.writing.Load()
		next := int64(0)
		if old>>markShift > 1 { // others still write: this one was progress
			next = (old>>markShift-1)<<markShift | watch.clock.Load()&markStep
		}
		if c.writing.CompareAndSwap(old, next) {
			return
		}
	}
}

// stalledSince reports whether c has writes under way that made no
// progress for more than steps steps before now. (The mark is the step
// current when the progress was made, up to a step after that step began;
// "more than" makes the bound at least steps whole steps.)
func (c *limitConn) stalledSince(now, steps int64) bool {
	m := c.writing.Load()
	return m != 0 && (now-m)&markStep > steps
}

// stall closes c for a write that did not complete within d; its reads
// then fail with errWriteStalled.
func (c *limitConn) stall(d time.Duration) {
	c.stalled.Store(&errWriteStalled{d: d})
	c.Close()
}
