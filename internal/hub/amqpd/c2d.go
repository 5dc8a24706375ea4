package amqpd

// Cloud-to-device messages, device side: the receiver link a device
// attaches on /devices/{id}/messages/devicebound, and the locks its
// deliveries hold in the engine until the device settles them. Wire
// facts: /work/notes/c2d-facts.md §3.2 (sources there); feedback links
// (service.go) share the lock handling.

import (
	"sort"
	"strings"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

// Message annotations of a cloud-to-device message, as the .NET device
// SDK reads them (AmqpIotMessageConverter): a timestamp, a ubyte and a
// ulong.
const (
	annEnqueuedTime   = "iothub-enqueuedtime"
	annDeliveryCount  = "iothub-deliverycount"
	annSequenceNumber = "x-opt-sequence-number"

	// propAck is the application property carrying the feedback the
	// sender asked for.
	propAck = "iothub-ack"
)

// fillLink sends a cloud-to-device or feedback link what the engine has
// for it while the link has credit; when the engine has nothing, a
// goroutine waits for its next change and pumps the link again.
func (c *conn) fillLink(l *link) {
	if l.detaching || l.gone != nil && isClosed(l.gone) || l.s.ending {
		return
	}
	e := c.s.e
	if l.kind == linkFeedback && l.credit > 0 {
		// The service token may have expired since the attach.
		if herr := c.authorizeService(serviceFeedbackPath); herr != nil {
			c.detachLink(l, hubError(condUnauthorized, herr))
			return
		}
	}
	for l.credit > 0 && !l.detaching && !l.s.ending {
		var avail <-chan struct{}
		var msg, tag []byte
		var lock string
		if l.kind == linkC2D {
			avail = e.C2DAvailable(l.id)
			m, ok := e.ReceiveC2D(l.id)
			if !ok {
				c.waitForEngine(l, avail)
				return
			}
			enc, err := encodeC2D(m)
			if err != nil {
				// Only hub values are encoded: a bug, not input.
				c.log.Error("amqp: cannot encode a cloud-to-device message", "error", err)
				e.ReleaseC2D(l.id, m.LockToken)
				return
			}
			msg, tag, lock = enc, lockTag(m.LockToken), m.LockToken
		} else {
			avail = e.FeedbackAvailable()
			b, ok := e.ReceiveFeedback()
			if !ok {
				c.waitForEngine(l, avail)
				return
			}
			enc, err := encodeFeedback(b, hubName(e.HostName()))
			if err != nil {
				c.log.Error("amqp: cannot encode a feedback batch", "error", err)
				e.ReleaseFeedback(b.LockToken)
				return
			}
			msg, tag, lock = enc, lockTag(b.LockToken), b.LockToken
		}
		id := l.s.sendDelivery(l, msg, tag)
		if l.settledSend {
			// snd-settle-mode settled: the peer asked for at-most-once.
			c.settleEngine(l, lock, engine.C2DComplete)
			continue
		}
		if l.locks == nil {
			l.locks = map[uint32]string{}
		}
		l.locks[id] = lock
	}
}

// waitForEngine starts one goroutine that pumps l again once avail is
// closed; it ends with the link or the connection.
func (c *conn) waitForEngine(l *link, avail <-chan struct{}) {
	if l.waiting {
		return
	}
	l.waiting = true
	if l.gone == nil {
		l.gone = make(chan struct{})
	}
	gone, loopDone := l.gone, c.loopDone
	go func() {
		select {
		case <-avail:
			c.post(func() {
				l.waiting = false
				if !l.detaching && !isClosed(gone) {
					l.s.pump(l)
				}
			})
		case <-gone:
		case <-loopDone:
		}
	}()
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// releaseLocks gives the engine back the messages (or feedback batches)
// a link delivered and the peer has not settled: a detach, an ended
// session or connection. Their delivery count is unchanged, as when a
// lock expires (facts §1). It also stops the link's waiting goroutine.
func (c *conn) releaseLocks(l *link) {
	if l.gone == nil {
		l.gone = make(chan struct{})
		close(l.gone)
	} else if !isClosed(l.gone) {
		close(l.gone)
	}
	l.waiting = false
	for id, lock := range l.locks {
		delete(l.locks, id)
		switch l.kind {
		case linkC2D:
			c.s.e.ReleaseC2D(l.id, lock)
		case linkFeedback:
			c.s.e.ReleaseFeedback(lock)
		}
	}
}

// settleLocked carries out the peer's disposition of a delivery on a
// cloud-to-device or feedback link: accepted completes it, rejected
// rejects it, released and modified abandon it (facts §3.2: the SDKs
// send accepted, rejected and released; nobody sends modified). A
// settled disposition without an outcome releases the lock. It returns
// the state of the hub's own disposition for a peer in rcv-settle-mode
// second (rejected with com.microsoft:message-lock-lost when the engine
// no longer holds the lock), and keep=true for a non-terminal state
// (received) that leaves the delivery unsettled.
func (c *conn) settleLocked(l *link, id uint32, state any, settled bool) (reply any, keep bool) {
	lock, ok := l.locks[id]
	if !ok {
		return state, false
	}
	var o engine.C2DOutcome
	code := uint64(0)
	if d, ok := state.(Described); ok {
		code, _ = descriptorCode(d.Descriptor)
	}
	switch code {
	case descAccepted:
		o = engine.C2DComplete
	case descRejected:
		o = engine.C2DReject
	case descReleased, descModified:
		o = engine.C2DAbandon
	default:
		if !settled {
			return nil, true
		}
		delete(l.locks, id)
		if l.kind == linkC2D {
			c.s.e.ReleaseC2D(l.id, lock)
		} else {
			c.s.e.ReleaseFeedback(lock)
		}
		return state, false
	}
	delete(l.locks, id)
	if herr := c.settleEngine(l, lock, o); herr != nil {
		return performative(descRejected, errorValue(hubError(condLockLost, herr))), false
	}
	return state, false
}

// settleEngine settles a locked message or feedback batch in the engine.
func (c *conn) settleEngine(l *link, lock string, o engine.C2DOutcome) *engine.Error {
	var herr *engine.Error
	if l.kind == linkC2D {
		herr = c.s.e.SettleC2D(l.id, lock, o)
	} else {
		herr = c.s.e.SettleFeedback(lock, o)
	}
	if herr != nil {
		c.log.Info("amqp settlement refused", "link", l.name, "address", l.address, "code", herr.Code, "reason", herr.Message)
	}
	return herr
}

// lockTag returns the 16-byte delivery tag of a locked delivery: the
// lock token's bytes when it is a uuid, random bytes otherwise. The .NET
// SDKs take the tag as a Guid (facts §2.3, §3.2); the hub maps deliveries
// to locks by delivery id, so the tag only has to be 16 bytes.
func lockTag(lock string) []byte {
	if u, ok := parseUUID(lock); ok {
		return u[:]
	}
	u := newUUID()
	return u[:]
}

// hubName is the first label of the hub's host name.
func hubName(host string) string {
	name, _, _ := strings.Cut(host, ".")
	return name
}

// encodeC2D encodes a cloud-to-device message for the device: a header
// with the delivery count, the annotations the SDKs read, the properties
// as the service sent them, the application properties (iothub-ack
// first) and one data section.
func encodeC2D(m engine.C2DMessage) ([]byte, error) {
	dc := max(m.DeliveryCount, 0)
	var header Described
	if dc > 0 {
		header = performative(descHeader, nil, nil, nil, nil, uint32(dc))
	} else {
		header = performative(descHeader)
	}
	ann := Map{
		{Key: Symbol(annEnqueuedTime), Value: m.EnqueuedTime},
		{Key: Symbol(annDeliveryCount), Value: uint8(min(dc, 255))},
		{Key: Symbol(annSequenceNumber), Value: uint64(max(m.SequenceNumber, 0))},
	}
	var exp any
	if !m.ExpiryTime.IsZero() {
		exp = m.ExpiryTime
	}
	props := performative(descProperties, optString(m.MessageID), optBinary(m.UserID), optString(m.To), nil, nil,
		optString(m.CorrelationID), optSymbol(m.ContentType), optSymbol(m.ContentEncoding), exp)
	var app Map
	if m.Ack != "" {
		app = append(app, MapEntry{Key: propAck, Value: m.Ack})
	}
	keys := make([]string, 0, len(m.Properties))
	for k := range m.Properties {
		if !equalFold(k, propAck) || m.Ack == "" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		app = append(app, MapEntry{Key: k, Value: m.Properties[k]})
	}
	body := m.Body
	if body == nil {
		body = []byte{}
	}
	sections := []any{header, Described{Descriptor: uint64(descMessageAnnotations), Value: ann}, props}
	if len(app) > 0 {
		sections = append(sections, Described{Descriptor: uint64(descApplicationProperties), Value: app})
	}
	sections = append(sections, Described{Descriptor: uint64(descData), Value: body})
	var b []byte
	for _, s := range sections {
		var err error
		if b, err = appendValue(b, s); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func optString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func optSymbol(s string) any {
	if s == "" {
		return nil
	}
	return Symbol(s)
}

func optBinary(s string) any {
	if s == "" {
		return nil
	}
	return []byte(s)
}
