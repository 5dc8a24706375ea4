package device

// Desired properties: one delivery goroutine per client hands the handler
// every change, once and in version order, across reconnects.
//
// The hub pushes each desired patch with its $version to a connection that
// subscribed, but nothing made while the device was offline, and nothing
// between a subscription and the read that follows it. So on every new
// connection the client subscribes first, then reads the twin (a resync),
// and the goroutine compares versions: a pushed patch at or below the
// version it already delivered is dropped, the next version is delivered,
// and a gap (a lost patch) triggers another resync. A resync hands the
// handler the difference between what it last saw and the twin now, as one
// merge patch at the twin's version.

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// twinTimeout bounds a resync's twin read.
const twinTimeout = 60 * time.Second

// maxQueuedPatches bounds the patches waiting for a slow handler; beyond
// it they are replaced by one resync, which delivers the same changes.
const maxQueuedPatches = 1024

// desiredEvent is a patch pushed on a connection, or a resync on one.
type desiredEvent struct {
	cn   *connection
	body []byte // nil for a resync
	full bool   // resync: hand over the whole section, not a difference
}

// desiredState is the client's desired-properties delivery.
type desiredState struct {
	mu      sync.Mutex
	handler DesiredPropertiesHandler
	queue   []desiredEvent
	wake    chan struct{}
	done    chan struct{} // closed when the goroutine returns; nil before it starts
	closed  bool
	// needFull: the next resync hands over the whole section (a handler
	// was registered while there was no connection).
	needFull bool

	// Owned by the goroutine: the section as the handler knows it.
	doc     map[string]any
	version int64
	have    bool
}

// desired returns the client's desired-property delivery, making it on
// first use: a client that never registers a handler has none (Client
// stays small).
func (c *Client) desired() *desiredState { return loadOrMake(&c.desiredP) }

// SetDesiredPropertiesHandler registers h to receive the twin's
// desired-property changes; nil removes it. Over HTTPS it returns an error
// wrapping ErrUnsupported.
//
// h is called on one goroutine of the client, one call at a time, in
// version order. Its first call, made once the client is connected, holds
// the whole desired section at its current version; every later call
// holds a merge patch (see TwinProperties) with a larger version. No
// change is lost across reconnects, and none is delivered twice: after
// every reconnect the client reads the twin and hands h what changed
// while it was offline, as one patch, before any newer one. The official
// SDKs, which only relay what the hub pushes, lose those changes.
//
// Registering h on a connected client subscribes to desired-property
// changes and returns once the hub has confirmed; the subscription then
// stays for the connection, and later connections make it while a handler
// is registered. h may call any method of the client, Close included.
func (c *Client) SetDesiredPropertiesHandler(h DesiredPropertiesHandler) error {
	if h != nil {
		if err := c.tr.TwinSupport(); err != nil {
			return err
		}
	}
	d := c.desired()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	d.handler = h
	if h == nil {
		d.queue = nil
		d.mu.Unlock()
		return nil
	}
	start := d.done == nil
	if start {
		d.done = make(chan struct{})
		d.wake = make(chan struct{}, 1)
	}
	d.mu.Unlock()
	if start {
		go c.desiredLoop()
	}
	return c.syncDesired()
}

// wantDesired reports whether a desired handler is registered.
func (c *Client) wantDesired() bool {
	d := c.desiredP.Load()
	if d == nil {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.handler != nil
}

// subscribeDesired subscribes cn to desired patches if a handler wants
// them and queues the resync that follows every subscription. Called with
// c.subMu held.
func (c *Client) subscribeDesired(ctx context.Context, cn *connection, full bool) error {
	if cn.desiredSub || !c.wantDesired() || c.tr.TwinSupport() != nil {
		if full && cn.desiredSub {
			c.postDesired(desiredEvent{cn: cn, full: true})
		}
		return nil
	}
	if err := cn.SubscribeDesired(ctx); err != nil {
		return err
	}
	cn.desiredSub = true
	c.postDesired(desiredEvent{cn: cn, full: full})
	return nil
}

// syncDesired gives the live connection the subscription a newly
// registered handler needs, and has the handler's first call made.
func (c *Client) syncDesired() error {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	c.mu.Lock()
	cn, closed := c.conn, c.closed
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if cn == nil {
		// Not connected: the next connection subscribes, and its resync
		// gives the new handler the whole section.
		d := c.desired()
		d.mu.Lock()
		d.needFull = true
		d.mu.Unlock()
		return nil
	}
	ctx, cancel := context.WithTimeout(&c.life, subscribeTimeout)
	defer cancel()
	err := c.subscribeDesired(ctx, cn, true)
	if err == nil {
		return nil
	}
	select {
	case <-cn.Done():
		return nil // the next connection subscribes
	default:
	}
	if c.life.Err() != nil {
		return nil
	}
	cn.Close() // deaf to desired changes otherwise: reconnect and try again
	return fmt.Errorf("iothub: subscribing to desired properties: %w", err)
}

// postDesired queues an event for the delivery goroutine.
func (c *Client) postDesired(ev desiredEvent) {
	d := c.desiredP.Load()
	if d == nil {
		return // no handler was ever registered
	}
	d.mu.Lock()
	if d.handler == nil || d.closed || d.done == nil {
		d.mu.Unlock()
		return
	}
	if len(d.queue) >= maxQueuedPatches {
		full := false
		for _, q := range d.queue {
			full = full || q.full
		}
		d.queue = []desiredEvent{{cn: ev.cn, full: full}}
	} else {
		d.queue = append(d.queue, ev)
	}
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// desiredLoop delivers queued events until Close.
func (c *Client) desiredLoop() {
	d := c.desired()
	defer close(d.done)
	for {
		select {
		case <-d.wake:
		case <-c.life.Done():
			return
		}
		for c.life.Err() == nil {
			d.mu.Lock()
			if len(d.queue) == 0 || d.handler == nil {
				d.mu.Unlock()
				break
			}
			ev := d.queue[0]
			if ev.body == nil && d.needFull {
				ev.full, d.needFull = true, false
			}
			d.queue = d.queue[1:]
			h := d.handler
			d.mu.Unlock()
			c.handleDesired(ev, h)
		}
	}
}

// handleDesired handles one event on the delivery goroutine.
func (c *Client) handleDesired(ev desiredEvent, h DesiredPropertiesHandler) {
	d := c.desired()
	if ev.body == nil {
		c.resync(ev.cn, h, ev.full)
		return
	}
	v, err := decodeJSON(ev.body)
	var s section
	if err == nil {
		s, err = parseSection(v)
	}
	if err != nil {
		c.log.Warn("the hub sent a desired-property patch that is not a JSON object; reading the twin", "error", err)
		c.resync(ev.cn, h, false)
		return
	}
	switch {
	case !d.have:
		// The first resync is queued behind this patch and includes it.
	case s.version <= d.version:
		// Delivered already, by a resync.
	case s.version == d.version+1:
		p := toProperties(s)
		d.doc = mergePatch(d.doc, s.props)
		d.version = s.version
		c.runDesired(h, p)
	default:
		c.log.Info("a desired-property version was skipped; reading the twin", "have", d.version, "got", s.version)
		c.resync(ev.cn, h, false)
	}
}

// resync reads the twin on cn and hands the handler what it has not seen:
// everything when full or when it has seen nothing, else the difference.
// A connection on which the twin cannot be read is closed, so that the
// client reconnects and resyncs on the next one.
func (c *Client) resync(cn *connection, h DesiredPropertiesHandler, full bool) {
	d := c.desired()
	ctx, cancel := context.WithTimeout(&c.life, twinTimeout)
	defer cancel()
	b, err := cn.GetTwin(ctx)
	var desired section
	if err == nil {
		desired, _, err = parseDeviceTwin(b)
	}
	if err != nil {
		select {
		case <-cn.Done():
			return // the next connection resyncs
		default:
		}
		if c.life.Err() != nil {
			return
		}
		c.log.Warn("reading the twin for desired properties failed; reconnecting", "error", err)
		if full {
			d.have = false // the next connection's resync is a full one
		}
		cn.Close()
		return
	}
	if full || !d.have {
		d.doc, d.version, d.have = desired.props, desired.version, true
		c.runDesired(h, toProperties(desired))
		return
	}
	if desired.version == d.version {
		return
	}
	patch := diffDocs(d.doc, desired.props)
	d.doc, d.version = desired.props, desired.version
	if len(patch) == 0 {
		return // changed and changed back while offline
	}
	c.runDesired(h, toProperties(section{version: desired.version, props: patch}))
}

// runDesired calls the handler, recovering a panic. Close recognises this
// frame on its caller's stack (see inDesiredHandler).
func (c *Client) runDesired(h DesiredPropertiesHandler, p TwinProperties) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("the desired-properties handler panicked", "panic", fmt.Sprint(r))
		}
	}()
	h(c.handlersContext(), p)
}

// desiredFrame is the function the desired handler runs under.
const desiredFrame = "github.com/iothub-go/iothub/device.(*Client).runDesired"

// inDesiredHandler reports whether the calling goroutine runs the desired
// handler.
func (c *Client) inDesiredHandler() bool {
	d := c.desiredP.Load()
	if d == nil {
		return false
	}
	d.mu.Lock()
	started := d.done != nil
	d.mu.Unlock()
	if !started {
		return false
	}
	return onStack(desiredFrame)
}

// stopDesired ends the delivery goroutine: it waits for it unless called
// from the handler, or until ctx ends.
func (c *Client) stopDesired(ctx context.Context, fromHandler bool) error {
	d := c.desired()
	d.mu.Lock()
	d.closed = true
	d.queue = nil
	done := d.done
	d.mu.Unlock()
	if fromHandler {
		return nil
	}
	return waitClosed(ctx, done)
}

// waitClosed waits until ch is closed (nil: at once) or ctx ends; the
// delivery goroutines of desired properties and of cloud-to-device
// messages are stopped with it.
func waitClosed(ctx context.Context, ch <-chan struct{}) error {
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
