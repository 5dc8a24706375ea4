package amqp

import (
	"encoding/binary"
	"net"
)

// go-amqp reports a link detached by the peer only to a later Send on it,
// and a session ended by the peer only to its receivers. A device whose
// method response link the hub detached would therefore take calls it can
// no longer answer, and the hub, which counts the device as unsubscribed,
// would answer callers 404103 until something else made the device
// reconnect. frameWatch reads the hub's frames as they pass to go-amqp and
// reports the hub's detach and end performatives, so that the connection
// can count them as lost.
type frameWatch struct {
	net.Conn
	sc frameScanner
}

// Read passes the bytes on to go-amqp unchanged, after the scanner has
// seen them. go-amqp reads from one goroutine only.
func (w *frameWatch) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if n > 0 {
		w.sc.feed(p[:n])
	}
	return n, err
}

// maxKept is how much of a frame body the scanner keeps: enough for the
// fields it reads of attach, detach and end (a link name, a handle, an
// error's condition and description). The rest of a body is skipped.
const maxKept = 1024

// maxLinks bounds the link names the scanner remembers; a device connection
// has five links at most.
const maxLinks = 256

// AMQP 1.0 performative descriptor codes (section 2.7).
const (
	codeAttach = 0x12
	codeDetach = 0x16
	codeEnd    = 0x17
	codeError  = 0x1d
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

	broken bool
	hdr    [8]byte
	hn     int    // bytes of hdr filled
	skip   int    // extended-header bytes still to skip
	body   int    // body bytes still to read
	kept   []byte // the body's first maxKept bytes
	pass   bool   // the frame is none the scanner reads: keep nothing more
	ch     uint16 // the frame's channel
	amqp   bool   // frame type 0 (AMQP), not SASL
	links  map[linkKey]string
}

func (s *frameScanner) feed(p []byte) {
	for len(p) > 0 && !s.broken {
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
			if !s.pass && len(s.kept) < maxKept {
				// The descriptor first (3 bytes), to decide whether to keep
				// the rest.
				limit := maxKept
				if len(s.kept) < 3 {
					limit = 3
				}
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
	return b[2] != codeAttach && b[2] != codeDetach && b[2] != codeEnd
}

// frame handles a complete frame.
func (s *frameScanner) frame() {
	if s.pass || len(s.kept) == 0 {
		return
	}
	r := reader{b: s.kept}
	code, ok := r.descriptor()
	if !ok {
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
		if ok1 && ok2 && len(s.links) < maxLinks {
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
