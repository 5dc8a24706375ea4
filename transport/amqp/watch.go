package amqp

import (
	"encoding/binary"
	"fmt"
	"net"

	"github.com/Azure/go-amqp"

	"github.com/iothub-go/iothub/transport"
)

// go-amqp reports a link detached by the peer only to a later Send on it,
// and a session ended by the peer only to its receivers. A device whose
// method response link the hub detached would therefore take calls it can
// no longer answer, and the hub, which counts the device as unsubscribed,
// would answer callers 404103 until something else made the device
// reconnect. frameWatch reads the hub's frames as they pass to go-amqp and
// reports the hub's detach and end performatives, so that the connection
// can count them as lost. On the way out, its attachHold keeps go-amqp's
// attaches from reusing a handle the hub detached before go-amqp has
// answered that detach.
type frameWatch struct {
	net.Conn
	sc   frameScanner
	hold attachHold
	// readEnded, if set, is called once, on go-amqp's reader goroutine,
	// when a read fails: go-amqp's connection is ending (go-amqp closes
	// the network connection whatever ends it, and its reader's read then
	// fails).
	readEnded func()
}

// newFrameWatch watches nc, remembering at most links link names (0:
// maxLinks), with the connection's callbacks for the hub's detach of a
// link and end of a session.
func newFrameWatch(nc net.Conn, links int, onDetach func(name, condition, description string), onEnd func(names []string, condition, description string)) *frameWatch {
	w := &frameWatch{Conn: nc}
	w.sc.maxLinks, w.hold.max = links, links
	w.hold.stuck = func() { w.Conn.Close() } // go-amqp then fails the connection
	w.sc.onDetach = func(name, cond, desc string) {
		w.hold.hubDetached(name)
		if onDetach != nil {
			onDetach(name, cond, desc)
		}
	}
	w.sc.onEnd = onEnd
	return w
}

// Write passes go-amqp's frames on, except an attach that must wait for
// the client's reply to the hub's detach of its handle, which it writes
// after that reply (see attachHold). go-amqp writes one frame per Write,
// from one goroutine.
func (w *frameWatch) Write(p []byte) (int, error) {
	hold, after := w.hold.outgoing(p)
	if hold {
		return len(p), nil
	}
	n, err := w.Conn.Write(p)
	if err != nil {
		return n, err
	}
	for _, f := range after {
		if _, err := w.Conn.Write(f); err != nil {
			return n, err
		}
	}
	return n, nil
}

// Read passes the bytes on to go-amqp unchanged, after the scanner has
// seen them. go-amqp reads from one goroutine only. Once the hub has sent
// more of one message than the limit, Read closes the connection and
// returns the scanner's error.
func (w *frameWatch) Read(p []byte) (int, error) {
	if w.sc.err != nil {
		return 0, w.sc.err
	}
	n, err := w.Conn.Read(p)
	if n > 0 {
		w.sc.feed(p[:n])
		if w.sc.err != nil {
			w.Conn.Close()
			w.ended()
			return 0, w.sc.err
		}
	}
	if err != nil {
		w.ended()
	}
	return n, err
}

// afterConnEnd arranges for fail to be called with go-amqp's reason once
// the go-amqp connection on w has ended, without a goroutine waiting for
// it meanwhile: the first failed read starts one, which waits for go-amqp
// to finish ending. Call opened once: with the connection once it is
// open, or with nil if opening it failed (fail is not called then).
func (w *frameWatch) afterConnEnd(fail func(error)) (opened func(*amqp.Conn)) {
	ch := make(chan *amqp.Conn, 1)
	w.readEnded = func() {
		go func() {
			if ac := <-ch; ac != nil {
				<-ac.Done()
				fail(ac.Err())
			}
		}()
	}
	return func(ac *amqp.Conn) { ch <- ac }
}

// ended stops the held attaches' timers and calls readEnded once.
func (w *frameWatch) ended() {
	w.hold.stop()
	if f := w.readEnded; f != nil {
		w.readEnded = nil
		f()
	}
}

// MaxMessageSize is the largest message the transport accepts from the
// hub: 256 KiB, room for twice the largest method request (128 KB of
// payload plus properties). It is announced as the max-message-size of the
// receiving links, and enforced on the hub's transfers as they arrive: a
// hub whose message grows past it, whatever it announced in its attach
// (go-amqp adopts a peer's max-message-size of 0, "no limit", in place of
// its own), fails the connection with an error wrapping
// transport.ErrHubMessageTooLarge, and the device client reconnects.
//
// It bounds what the hub sends. What a device sends is bounded by
// transport.MaxMessageSize (device.MaxMessageSize), the same number of
// bytes, and a message over that is refused by SendEvent with
// transport.ErrMessageTooLarge.
const MaxMessageSize = 256 * 1024

// errMessageTooLarge is wrapped by the error of a connection whose hub sent
// a message larger than MaxMessageSize.
var errMessageTooLarge = fmt.Errorf("%w: amqp message", transport.ErrHubMessageTooLarge)

// maxKept is how much of a frame body the scanner keeps: enough for the
// fields it reads of attach, detach and end (a link name, a handle, an
// error's condition and description). The rest of a body is skipped.
const maxKept = 1024

// maxLinks bounds the link names the scanner remembers; a device connection
// has five links at most.
const maxLinks = 256

// maxTransferKept is how much of a transfer frame's body the scanner
// keeps: its performative up to the "more" field (a delivery tag has at
// most 32 bytes). The message bytes that follow are not copied.
const maxTransferKept = 96

// AMQP 1.0 performative descriptor codes (section 2.7).
const (
	codeTransfer = 0x14
	codeAttach   = 0x12
	codeDetach   = 0x16
	codeEnd      = 0x17
	codeError    = 0x1d
)

type linkKey struct {
	channel uint16
	handle  uint32
}

// frameScanner follows the AMQP frame structure of the bytes fed to it,
// whatever the read boundaries, in bounded memory. It learns each link's
// name from the peer's attach and calls onDetach for the peer's detach of a
// link and onEnd for the peer's end of a session, with the error's
// condition and description when the frame carries them. On bytes that are
// not AMQP it stops; go-amqp then fails the connection itself.
type frameScanner struct {
	onDetach func(name, condition, description string)
	onEnd    func(names []string, condition, description string)
	// maxMessage bounds the bytes of one message the peer sends on a
	// link, over all its transfer frames; 0 means MaxMessageSize.
	maxMessage int
	// maxLinks bounds the links it remembers; 0 means maxLinks, enough
	// for one device.
	maxLinks int

	err    error // the peer broke maxMessage: the stream is not read further
	broken bool
	hdr    [8]byte
	hn     int    // bytes of hdr filled
	skip   int    // extended-header bytes still to skip
	body   int    // body bytes still to read
	kept   []byte // the body's first maxKept bytes
	pass   bool   // the frame is none the scanner reads: keep nothing more
	ch     uint16 // the frame's channel
	amqp   bool   // frame type 0 (AMQP), not SASL
	size   int    // the frame's body size
	links  map[linkKey]string
	// partial holds the bytes so far of each link's unfinished message
	// (transfers with more=true).
	partial map[linkKey]int
}

func (s *frameScanner) feed(p []byte) {
	for len(p) > 0 && !s.broken && s.err == nil {
		switch {
		case s.skip > 0:
			n := min(s.skip, len(p))
			s.skip -= n
			p = p[n:]
			if s.skip == 0 && s.body == 0 {
				s.frame()
			}
		case s.body > 0:
			n := min(s.body, len(p))
			// The descriptor first (3 bytes), to decide whether to keep
			// the rest, and how much of it.
			limit := maxKept
			if len(s.kept) < 3 {
				limit = 3
			} else if s.kept[2] == codeTransfer {
				limit = maxTransferKept
			}
			if !s.pass && len(s.kept) < limit {
				n = min(n, limit-len(s.kept))
				s.kept = append(s.kept, p[:n]...)
				s.pass = uninteresting(s.kept)
			}
			s.body -= n
			p = p[n:]
			if s.body == 0 {
				s.frame()
			}
		default:
			n := copy(s.hdr[s.hn:], p)
			s.hn += n
			p = p[n:]
			if s.hn == len(s.hdr) {
				s.hn = 0
				s.header()
			}
		}
	}
}

// header starts a frame (or passes over a protocol header).
func (s *frameScanner) header() {
	if string(s.hdr[:4]) == "AMQP" {
		return // a protocol header: 8 bytes, nothing follows it here
	}
	size := binary.BigEndian.Uint32(s.hdr[0:4])
	doff := int(s.hdr[4])
	if doff < 2 || size < 8 || uint64(doff)*4 > uint64(size) {
		s.broken = true
		return
	}
	s.ch = binary.BigEndian.Uint16(s.hdr[6:8])
	s.amqp = s.hdr[5] == 0
	s.skip = doff*4 - 8
	s.body = int(size) - doff*4
	s.size = s.body
	s.kept = s.kept[:0]
	s.pass = !s.amqp
	if s.skip == 0 && s.body == 0 {
		s.frame() // an empty frame: a heartbeat
	}
}

// uninteresting reports whether a body that starts with b is a
// performative the scanner does not read (transfers above all, the
// frames that carry messages), so that it copies no more of it.
func uninteresting(b []byte) bool {
	if len(b) < 3 || b[0] != 0x00 || b[1] != 0x53 {
		return false // not known yet, or a long-form descriptor
	}
	return b[2] != codeAttach && b[2] != codeDetach && b[2] != codeEnd && b[2] != codeTransfer
}

// frame handles a complete frame. The buffer an attach, a detach or an
// end was kept in is let go afterwards: those frames are rare and up to
// maxKept bytes long, and a connection would otherwise hold the largest
// for as long as it lives, where transfers need maxTransferKept.
func (s *frameScanner) frame() {
	if s.pass || len(s.kept) == 0 {
		return
	}
	r := reader{b: s.kept}
	if cap(s.kept) > maxTransferKept {
		s.kept = nil
	}
	code, ok := r.descriptor()
	if !ok {
		return
	}
	if code == codeTransfer {
		s.transfer(r)
		return
	}
	n, ok := r.list()
	if !ok {
		return
	}
	switch code {
	case codeAttach:
		if n < 2 {
			return
		}
		name, ok1 := r.str()
		handle, ok2 := r.uint()
		if ok1 && ok2 && len(s.links) < s.linkLimit() {
			if s.links == nil {
				s.links = map[linkKey]string{}
			}
			s.links[linkKey{s.ch, handle}] = name
		}
	case codeDetach:
		if n < 1 {
			return
		}
		handle, ok := r.uint()
		if !ok {
			return
		}
		k := linkKey{s.ch, handle}
		name, known := s.links[k]
		delete(s.links, k)
		if !known {
			return
		}
		var cond, desc string
		if n >= 3 {
			if _, ok := r.boolean(); ok {
				cond, desc = r.errorValue()
			}
		}
		if s.onDetach != nil {
			s.onDetach(name, cond, desc)
		}
	case codeEnd:
		var names []string
		for k, name := range s.links {
			if k.channel == s.ch {
				names = append(names, name)
				delete(s.links, k)
			}
		}
		var cond, desc string
		if n >= 1 {
			cond, desc = r.errorValue()
		}
		if s.onEnd != nil {
			s.onEnd(names, cond, desc)
		}
	}
}

func (s *frameScanner) linkLimit() int {
	if s.maxLinks > 0 {
		return s.maxLinks
	}
	return maxLinks
}

// transfer counts a transfer frame's message bytes (the body after the
// performative) against its link's unfinished message, which a frame
// without "more" finishes. A performative the scanner cannot read counts
// as unfinished.
func (s *frameScanner) transfer(r reader) {
	before := len(r.b)
	n, size, ok := r.listSized()
	if !ok {
		s.err = fmt.Errorf("%w: a transfer the client cannot read", errMessageTooLarge)
		return
	}
	perf := 3 + (before - len(r.b)) + size // descriptor, list header, list body
	handle, ok := r.uint()
	if !ok || perf > s.size {
		s.err = fmt.Errorf("%w: a transfer the client cannot read", errMessageTooLarge)
		return
	}
	more := false
	if n >= 6 {
		_, ok1 := r.uintOrNull() // delivery-id
		ok2 := r.skipBinary()    // delivery-tag
		_, ok3 := r.uintOrNull() // message-format
		_, ok4 := r.boolean()    // settled
		m, ok5 := r.boolean()    // more
		more = m || !(ok1 && ok2 && ok3 && ok4 && ok5)
	}
	max := s.maxMessage
	if max == 0 {
		max = MaxMessageSize
	}
	k := linkKey{s.ch, handle}
	total := s.partial[k] + s.size - perf
	if total > max {
		s.err = fmt.Errorf("%w: more than %d bytes of one message (the limit is %d)", errMessageTooLarge, total, max)
		return
	}
	if !more {
		delete(s.partial, k)
		return
	}
	if s.partial == nil {
		s.partial = map[linkKey]int{}
	}
	if _, known := s.partial[k]; !known && len(s.partial) >= s.linkLimit() {
		s.err = fmt.Errorf("%w: unfinished messages on too many links", errMessageTooLarge)
		return
	}
	s.partial[k] = total
}

// reader decodes the few AMQP 1.0 types the scanner needs (section 1.6).
// Every method reports false, and consumes nothing useful, on anything
// else or on a short buffer.
type reader struct{ b []byte }

func (r *reader) take(n int) ([]byte, bool) {
	if n < 0 || len(r.b) < n {
		r.b = nil
		return nil, false
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v, true
}

func (r *reader) byte1() (byte, bool) {
	b, ok := r.take(1)
	if !ok {
		return 0, false
	}
	return b[0], true
}

// descriptor reads a described type's numeric descriptor.
func (r *reader) descriptor() (uint64, bool) {
	if c, ok := r.byte1(); !ok || c != 0x00 {
		return 0, false
	}
	c, ok := r.byte1()
	if !ok {
		return 0, false
	}
	switch c {
	case 0x44: // ulong0
		return 0, true
	case 0x53: // smallulong
		v, ok := r.byte1()
		return uint64(v), ok
	case 0x80: // ulong
		b, ok := r.take(8)
		if !ok {
			return 0, false
		}
		return binary.BigEndian.Uint64(b), true
	}
	return 0, false
}

// list reads a list header and returns its element count.
func (r *reader) list() (int, bool) {
	c, ok := r.byte1()
	if !ok {
		return 0, false
	}
	switch c {
	case 0x45: // list0
		return 0, true
	case 0xc0: // list8: size, count
		b, ok := r.take(2)
		if !ok {
			return 0, false
		}
		return int(b[1]), true
	case 0xd0: // list32
		b, ok := r.take(8)
		if !ok {
			return 0, false
		}
		n := binary.BigEndian.Uint32(b[4:])
		if n > 1<<16 {
			return 0, false
		}
		return int(n), true
	}
	return 0, false
}

// listSized reads a list header and returns its element count and the
// size in bytes of the elements that follow.
func (r *reader) listSized() (count, size int, ok bool) {
	c, ok := r.byte1()
	if !ok {
		return 0, 0, false
	}
	switch c {
	case 0x45: // list0
		return 0, 0, true
	case 0xc0: // list8: size (counting the count byte), count
		b, ok := r.take(2)
		if !ok || b[0] < 1 {
			return 0, 0, false
		}
		return int(b[1]), int(b[0]) - 1, true
	case 0xd0: // list32
		b, ok := r.take(8)
		if !ok {
			return 0, 0, false
		}
		sz := binary.BigEndian.Uint32(b)
		if sz < 4 || sz > 1<<30 {
			return 0, 0, false
		}
		return int(binary.BigEndian.Uint32(b[4:])), int(sz) - 4, true
	}
	return 0, 0, false
}

// uintOrNull reads a uint or null.
func (r *reader) uintOrNull() (uint32, bool) {
	if len(r.b) > 0 && r.b[0] == 0x40 {
		r.b = r.b[1:]
		return 0, true
	}
	return r.uint()
}

// skipBinary skips a binary value or null.
func (r *reader) skipBinary() bool {
	c, ok := r.byte1()
	if !ok {
		return false
	}
	switch c {
	case 0x40:
		return true
	case 0xa0:
		l, ok := r.byte1()
		if !ok {
			return false
		}
		_, ok = r.take(int(l))
		return ok
	case 0xb0:
		b, ok := r.take(4)
		if !ok {
			return false
		}
		l := binary.BigEndian.Uint32(b)
		if l > maxTransferKept {
			return false
		}
		_, ok = r.take(int(l))
		return ok
	}
	return false
}

// str reads a string or symbol; null reads as "".
func (r *reader) str() (string, bool) {
	c, ok := r.byte1()
	if !ok {
		return "", false
	}
	var n int
	switch c {
	case 0x40:
		return "", true
	case 0xa1, 0xa3: // str8, sym8
		l, ok := r.byte1()
		if !ok {
			return "", false
		}
		n = int(l)
	case 0xb1, 0xb3: // str32, sym32
		b, ok := r.take(4)
		if !ok {
			return "", false
		}
		l := binary.BigEndian.Uint32(b)
		if l > maxKept {
			return "", false
		}
		n = int(l)
	default:
		return "", false
	}
	b, ok := r.take(n)
	return string(b), ok
}

// uint reads a uint.
func (r *reader) uint() (uint32, bool) {
	c, ok := r.byte1()
	if !ok {
		return 0, false
	}
	switch c {
	case 0x43: // uint0
		return 0, true
	case 0x52: // smalluint
		v, ok := r.byte1()
		return uint32(v), ok
	case 0x70:
		b, ok := r.take(4)
		if !ok {
			return 0, false
		}
		return binary.BigEndian.Uint32(b), true
	}
	return 0, false
}

// boolean reads a boolean or null.
func (r *reader) boolean() (bool, bool) {
	c, ok := r.byte1()
	if !ok {
		return false, false
	}
	switch c {
	case 0x40, 0x42:
		return false, true
	case 0x41:
		return true, true
	case 0x56:
		v, ok := r.byte1()
		return v == 1, ok
	}
	return false, false
}

// errorValue reads an error (or null): its condition and description.
func (r *reader) errorValue() (condition, description string) {
	if len(r.b) > 0 && r.b[0] == 0x40 {
		return "", ""
	}
	code, ok := r.descriptor()
	if !ok || code != codeError {
		return "", ""
	}
	n, ok := r.list()
	if !ok || n < 1 {
		return "", ""
	}
	condition, ok = r.str()
	if !ok {
		return "", ""
	}
	if n >= 2 {
		description, _ = r.str()
	}
	return condition, description
}
