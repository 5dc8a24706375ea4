package amqpd

import (
	"encoding/binary"
	"fmt"

	"github.com/iothub-go/iothub/auth"
)

// session is one AMQP session (begin/end), owned by the connection loop.
type session struct {
	c             *conn
	local, remote uint16
	ending        bool // an end was sent; waiting for the peer's

	// Incoming transfers.
	nextIncomingID uint32
	incomingWindow uint32
	// Outgoing transfers.
	nextOutgoingID       uint32
	remoteIncomingWindow uint32
	nextDeliveryID       uint32
	pending              [][]byte // encoded transfer frames waiting for the peer's window
	pendingBytes         int      // their total size, at most maxPendingBytes

	handleMax  uint32           // the peer's
	links      map[uint32]*link // by the peer's handle
	outHandles map[uint32]*link // by the hub's handle
	unsettled  map[uint32]*link // the hub's deliveries the peer has not settled
	// cbsOut are the session's $cbs links to the client, where put-token
	// replies go: a pooled connection carries thousands of links, and
	// every put-token looks for one.
	cbsOut map[*link]struct{}
}

// linkKind is what a link is for.
type linkKind int

const (
	linkRefused     linkKind = iota // attached only to be detached with an error
	linkCBSIn                       // device → hub put-token requests
	linkCBSOut                      // hub → device put-token replies
	linkMethodsReq                  // hub → device method requests
	linkMethodsResp                 // device → hub method responses
	linkEvents                      // device → hub telemetry
	linkTwinIn                      // device → hub twin requests
	linkTwinOut                     // hub → device twin responses and desired patches
	linkC2D                         // hub → device cloud-to-device messages (c2d.go)
	linkServiceSend                 // service → hub cloud-to-device sends (service.go)
	linkFeedback                    // hub → service feedback batches (service.go)
)

// link is one attached link. "in" is the peer's handle, "out" the hub's.
type link struct {
	s         *session
	name      string
	in, out   uint32
	hubSends  bool // the hub is the sender
	kind      linkKind
	address   string
	unit      *unit
	detaching bool // the hub sent a detach; waiting for the peer's

	settledSend bool // hub deliveries are sent pre-settled (snd-settle-mode settled)
	rcvSecond   bool // rcv-settle-mode second: hub dispositions do not settle

	// The hub sends.
	deliveryCount uint32
	credit        uint32
	drain         bool
	peerMaxMsg    uint64
	queue         [][]byte // encoded messages waiting for credit

	// The hub receives.
	rcvCount  uint32
	rcvCredit uint32
	partial   *partialDelivery

	// Cloud-to-device and feedback links, where each delivery holds an
	// engine lock (c2d.go, service.go).
	id      auth.Identity     // the identity of a cloud-to-device link
	locks   map[uint32]string // delivery id → engine lock token, while unsettled
	waiting bool              // a goroutine waits for the engine to have more
	gone    chan struct{}     // closed when the link is detached or dropped
}

// clearPartial forgets a partly received message.
func (l *link) clearPartial() {
	if l.partial != nil {
		l.s.c.buffered -= len(l.partial.buf)
		l.partial = nil
	}
}

type partialDelivery struct {
	id      uint32
	settled bool
	buf     []byte
}

func (s *session) send(body any, payload []byte) {
	s.c.send(s.local, body, payload)
}

// end ends the session with an error; its links go with it.
func (s *session) end(cond Symbol, desc string) {
	if s.ending {
		return
	}
	s.ending = true
	s.c.log.Info("amqp session ended by the hub", "condition", string(cond), "description", desc)
	s.send(performative(descEnd, errorValue(&amqpError{condition: cond, description: desc})), nil)
	for _, l := range s.links {
		s.dropLink(l)
	}
	s.links = map[uint32]*link{}
	s.pending, s.pendingBytes = nil, 0
}

func (s *session) onFrame(f frame) {
	if e, ok := f.body.(*end); ok {
		if !s.ending {
			if e.err != nil {
				s.c.log.Info("amqp session ended by the client with an error", "condition", string(e.err.condition), "description", e.err.description)
			}
			s.send(performative(descEnd), nil)
		}
		s.c.removeSession(s)
		return
	}
	if s.ending {
		return // frames in flight before the peer saw our end
	}
	switch p := f.body.(type) {
	case *attach:
		s.onAttach(p)
	case *flow:
		s.onFlow(p)
	case *transfer:
		s.onTransfer(p, f.payload)
	case *disposition:
		s.onDisposition(p)
	case *detach:
		s.onDetach(p)
	default:
		s.c.protocolViolation(condNotAllowed, fmt.Sprintf("unexpected %T frame", p))
	}
}

// sessionFlow returns a flow frame carrying the session state and, for a
// link, its link state.
func (s *session) flowFrame(l *link, drain bool) any {
	if l == nil {
		return performative(descFlow, s.nextIncomingID, s.incomingWindow, s.nextOutgoingID, uint32(0x7fffffff))
	}
	var count, credit uint32
	if l.hubSends {
		count, credit = l.deliveryCount, l.credit
	} else {
		count, credit = l.rcvCount, l.rcvCredit
	}
	var d any
	if drain {
		d = true
	}
	return performative(descFlow, s.nextIncomingID, s.incomingWindow, s.nextOutgoingID, uint32(0x7fffffff),
		l.out, count, credit, nil, d)
}

func (s *session) onFlow(f *flow) {
	base := uint32(0) // the hub's initial outgoing id
	if f.nextIncomingID != nil {
		base = *f.nextIncomingID
	}
	s.remoteIncomingWindow = base + f.incomingWindow - s.nextOutgoingID
	s.flushPending()
	if f.handle == nil {
		if f.echo {
			s.send(s.flowFrame(nil, false), nil)
		}
		return
	}
	l := s.links[*f.handle]
	if l == nil {
		s.end(condUnattachedHandle, fmt.Sprintf("flow for handle %d, which is not attached", *f.handle))
		return
	}
	if l.detaching {
		return
	}
	if l.hubSends {
		if f.linkCredit != nil {
			count := uint32(0) // the hub's initial delivery-count
			if f.deliveryCount != nil {
				count = *f.deliveryCount
			}
			l.credit = count + *f.linkCredit - l.deliveryCount
			if l.credit > 1<<31 { // a stale flow from before our deliveries
				l.credit = 0
			}
		}
		l.drain = f.drain
		s.pump(l)
		if f.echo && !l.drain {
			s.send(s.flowFrame(l, false), nil)
		}
		return
	}
	if f.deliveryCount != nil {
		l.rcvCount = *f.deliveryCount
	}
	if f.echo {
		s.send(s.flowFrame(l, false), nil)
	}
}

// pump sends queued messages while the link has credit, then answers a
// drain request.
func (s *session) pump(l *link) {
	if l.kind == linkC2D || l.kind == linkFeedback {
		s.c.fillLink(l)
	}
	for l.credit > 0 && len(l.queue) > 0 && !l.detaching {
		msg := l.queue[0]
		l.queue[0] = nil
		l.queue = l.queue[1:]
		s.sendDelivery(l, msg, nil)
	}
	if len(l.queue) == 0 {
		l.queue = nil
	}
	if l.drain && len(l.queue) == 0 && !l.detaching {
		l.deliveryCount += l.credit
		l.credit = 0
		l.drain = false
		s.send(s.flowFrame(l, true), nil)
	}
}

// sendDelivery sends one message as transfer frames no bigger than the
// peer's max-frame-size, and returns its delivery id. The delivery tag is
// tag, or the delivery id's four bytes when tag is nil.
func (s *session) sendDelivery(l *link, msg, tag []byte) uint32 {
	id := s.nextDeliveryID
	s.nextDeliveryID++
	l.deliveryCount++
	l.credit--
	if tag == nil {
		tag = binary.BigEndian.AppendUint32(nil, id)
	}
	var settled any
	if l.settledSend {
		settled = true
	} else {
		s.unsettled[id] = l
	}
	first := true
	for first || len(msg) > 0 {
		var perf any
		more := func(m bool) any {
			if m {
				return true
			}
			return nil
		}
		// The overhead of a transfer frame: header plus performative, at
		// most 8 + 40 bytes here; leave room for it.
		room := int(s.c.peerMaxFrame) - 64
		chunk := msg
		if len(chunk) > room {
			chunk = chunk[:room]
		}
		isMore := len(chunk) < len(msg)
		if first {
			perf = performative(descTransfer, l.out, id, tag, uint32(0), settled, more(isMore))
		} else {
			perf = performative(descTransfer, l.out, nil, nil, nil, settled, more(isMore))
		}
		fr, err := appendFrame(nil, frameTypeAMQP, s.local, perf, chunk)
		if err != nil {
			s.c.log.Error("amqp: cannot encode a transfer", "error", err)
			return id
		}
		if !s.sendTransferFrame(fr) {
			return id
		}
		msg = msg[len(chunk):]
		first = false
	}
	return id
}

// sendTransferFrame sends a transfer frame now if the peer's session
// window allows, otherwise after its next flow. A peer that grants link
// credit but keeps its session window closed while more than
// s.c.s.maxPendingBytes wait has its session ended with
// amqp:resource-limit-exceeded; sendTransferFrame then reports false.
func (s *session) sendTransferFrame(fr []byte) bool {
	if s.ending {
		return false
	}
	if len(s.pending) > 0 || s.remoteIncomingWindow == 0 {
		if s.pendingBytes+len(fr) > s.c.s.maxPendingBytes {
			s.end(condResourceLimit, fmt.Sprintf("More than %d bytes of transfers wait for the session's incoming-window to open", s.c.s.maxPendingBytes))
			return false
		}
		s.pending = append(s.pending, fr)
		s.pendingBytes += len(fr)
		return true
	}
	s.c.wbuf = append(s.c.wbuf, fr...)
	s.nextOutgoingID++
	s.remoteIncomingWindow--
	return true
}

func (s *session) flushPending() {
	for len(s.pending) > 0 && s.remoteIncomingWindow > 0 {
		s.c.wbuf = append(s.c.wbuf, s.pending[0]...)
		s.pendingBytes -= len(s.pending[0])
		s.pending[0] = nil
		s.pending = s.pending[1:]
		s.nextOutgoingID++
		s.remoteIncomingWindow--
	}
	if len(s.pending) == 0 {
		s.pending = nil
	}
}

func (s *session) onTransfer(t *transfer, payload []byte) {
	s.nextIncomingID++
	if s.incomingWindow == 0 {
		s.end(condWindowViolation, "transfer beyond the session's incoming-window")
		return
	}
	s.incomingWindow--
	if s.incomingWindow <= sessionWindow/2 {
		s.incomingWindow = sessionWindow
		s.send(s.flowFrame(nil, false), nil)
	}
	l := s.links[t.handle]
	if l == nil {
		s.end(condUnattachedHandle, fmt.Sprintf("transfer for handle %d, which is not attached", t.handle))
		return
	}
	if l.detaching {
		return // in flight before the peer saw our detach
	}
	if l.hubSends {
		s.c.detachLink(l, &amqpError{condition: condNotAllowed, description: "transfer on a link where the hub is the sender"})
		return
	}
	if l.partial == nil {
		if t.deliveryID == nil {
			s.c.detachLink(l, &amqpError{condition: condNotAllowed, description: "the first transfer of a delivery has no delivery-id"})
			return
		}
		if l.rcvCredit == 0 {
			s.c.detachLink(l, &amqpError{condition: condTransferLimit, description: "transfer without link credit"})
			return
		}
		l.partial = &partialDelivery{id: *t.deliveryID}
	} else if t.deliveryID != nil && *t.deliveryID != l.partial.id {
		s.c.detachLink(l, &amqpError{condition: condNotAllowed, description: "a new delivery started before the previous one ended"})
		return
	}
	p := l.partial
	p.settled = p.settled || t.settled
	if t.aborted {
		l.clearPartial()
		l.rcvCount++
		l.rcvCredit--
		s.topUp(l)
		return
	}
	if len(p.buf)+len(payload) > MaxMessageSize {
		s.c.detachLink(l, &amqpError{condition: condMessageSize,
			description: fmt.Sprintf("The message is larger than the maximum of %d bytes", MaxMessageSize)})
		return
	}
	if s.c.buffered+len(payload) > maxBuffered {
		s.c.detachLink(l, &amqpError{condition: condResourceLimit,
			description: "Too many partly transferred messages on this connection"})
		return
	}
	p.buf = append(p.buf, payload...)
	s.c.buffered += len(payload)
	if t.more {
		return
	}
	l.clearPartial()
	l.rcvCount++
	l.rcvCredit--
	outcome := s.c.onMessage(l, p.buf)
	if !p.settled && !l.detaching && outcome != nil {
		var settled any
		if !l.rcvSecond {
			settled = true
		}
		s.send(performative(descDisposition, true, p.id, nil, settled, outcome), nil)
	}
	s.topUp(l)
}

// topUp grants more credit on a link the hub receives on once half of it
// is used.
func (s *session) topUp(l *link) {
	if l.detaching || l.rcvCredit > linkCredit/2 {
		return
	}
	l.rcvCredit = linkCredit
	s.send(s.flowFrame(l, false), nil)
}

func (s *session) onDisposition(d *disposition) {
	if !d.receiver {
		return // settling deliveries the hub received in mode second
	}
	last := d.first
	if d.last != nil {
		last = *d.last
	}
	settle := func(id uint32) {
		l, ok := s.unsettled[id]
		if !ok {
			return
		}
		reply := d.state
		if l.kind == linkC2D || l.kind == linkFeedback {
			var keep bool
			if reply, keep = s.c.settleLocked(l, id, d.state, d.settled); keep {
				return // a non-terminal state: the delivery stays unsettled
			}
		}
		delete(s.unsettled, id)
		if !d.settled && !l.detaching {
			// The peer is in rcv-settle-mode second: the hub settles.
			s.send(performative(descDisposition, false, id, nil, true, reply), nil)
		}
		if rej, ok := d.state.(Described); ok {
			if code, _ := descriptorCode(rej.Descriptor); code == descRejected {
				s.c.log.Debug("amqp delivery rejected by the client", "link", l.name, "address", l.address)
			}
		}
	}
	if last-d.first < 4096 {
		for id := d.first; ; id++ {
			settle(id)
			if id == last {
				break
			}
		}
		return
	}
	for id := range s.unsettled {
		if id-d.first <= last-d.first {
			settle(id)
		}
	}
}

func (s *session) onDetach(d *detach) {
	l := s.links[d.handle]
	if l == nil {
		s.end(condUnattachedHandle, fmt.Sprintf("detach for handle %d, which is not attached", d.handle))
		return
	}
	if !l.detaching {
		if d.err != nil {
			s.c.log.Info("amqp link detached by the client with an error", "link", l.name, "address", l.address,
				"condition", string(d.err.condition), "description", d.err.description)
		}
		var closed any
		if d.closed {
			closed = true
		}
		s.send(performative(descDetach, l.out, closed), nil)
	}
	s.dropLink(l)
	delete(s.links, l.in)
}

// dropLink forgets a link: its handles, unsettled deliveries and its
// place in an identity's method, twin or telemetry links.
func (s *session) dropLink(l *link) {
	s.c.releaseLocks(l)
	delete(s.outHandles, l.out)
	delete(s.cbsOut, l)
	l.clearPartial()
	for id, ul := range s.unsettled {
		if ul == l {
			delete(s.unsettled, id)
		}
	}
	l.queue = nil
	if l.unit != nil {
		l.unit.linkGone(l)
		l.unit = nil
	}
}

// detachLink detaches a link with an error; the peer's detach then
// removes it.
func (c *conn) detachLink(l *link, e *amqpError) {
	if l.detaching {
		return
	}
	l.detaching = true
	l.clearPartial()
	c.releaseLocks(l)
	c.log.Info("amqp link detached by the hub", "link", l.name, "address", l.address,
		"condition", string(e.condition), "description", e.description)
	l.s.send(performative(descDetach, l.out, true, errorValue(e)), nil)
	l.queue = nil
	if l.unit != nil {
		l.unit.linkGone(l)
		l.unit = nil
	}
}
