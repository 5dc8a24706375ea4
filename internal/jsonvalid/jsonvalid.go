// Package jsonvalid checks that bytes are one JSON value, as
// encoding/json.Valid does, several times faster: it is on the path of
// every method call, where the device checks its handler's answer and the
// service client the payloads it sends and receives. Valid and
// encoding/json.Valid agree on every input (FuzzValid checks it).
package jsonvalid

import "encoding/binary"

// maxDepth is encoding/json's limit on nesting: an array or object more
// than this deep is not valid to it.
const maxDepth = 10000

// Valid reports whether b is exactly one JSON value, with optional
// whitespace around it, by the rules of encoding/json.Valid: RFC 8259
// syntax, strings not checked for UTF-8, nesting at most 10,000 deep.
func Valid(b []byte) bool {
	p := parser{b: b}
	p.space()
	if !p.value() {
		return false
	}
	p.space()
	return p.i == len(b)
}

// parser walks b from i. Containers are walked with an explicit stack, so
// deep nesting costs no goroutine stack: one bit per open container (1 for
// an object), depth of them, the first 128 in small and the rest in more
// (allocated only for deeper values).
type parser struct {
	b     []byte
	i     int
	depth int
	small [2]uint64
	more  []uint64
}

// word returns the stack word that holds container d's bit.
func (p *parser) word(d int) *uint64 {
	w := d / 64
	if w < len(p.small) {
		return &p.small[w]
	}
	w -= len(p.small)
	if w == len(p.more) {
		p.more = append(p.more, 0)
	}
	return &p.more[w]
}

func (p *parser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\r', '\n':
			p.i++
		default:
			return
		}
	}
}

// push opens a container; it reports false beyond maxDepth.
func (p *parser) push(object bool) bool {
	if p.depth >= maxDepth {
		return false
	}
	w, bit := p.word(p.depth), uint(p.depth%64)
	if object {
		*w |= 1 << bit
	} else {
		*w &^= 1 << bit
	}
	p.depth++
	return true
}

// inObject reports whether the innermost open container is an object.
func (p *parser) inObject() bool {
	d := p.depth - 1
	return *p.word(d)&(1<<uint(d%64)) != 0
}

// value reads one value, containers included, and reports whether it is
// valid. p.i is at its first byte (after whitespace).
func (p *parser) value() bool {
	base := p.depth
	for {
		// A value starts here: a scalar, or a container to open.
		if p.i >= len(p.b) {
			return false
		}
		switch c := p.b[p.i]; c {
		case '{', '[':
			if !p.push(c == '{') {
				return false
			}
			p.i++
			p.space()
			if p.i < len(p.b) && p.b[p.i] == c+2 { // '}' is '{'+2, ']' is '['+2: empty
				p.i++
				p.depth--
				break
			}
			if c == '{' && !p.key() {
				return false
			}
			continue // the container's first value
		case '"':
			if !p.str() {
				return false
			}
		case 't':
			if !p.lit("true") {
				return false
			}
		case 'f':
			if !p.lit("false") {
				return false
			}
		case 'n':
			if !p.lit("null") {
				return false
			}
		default:
			if !p.number() {
				return false
			}
		}
		// A value ended: close the containers it ends, or go on to the
		// next member.
		for {
			if p.depth == base {
				return true
			}
			p.space()
			if p.i >= len(p.b) {
				return false
			}
			obj := p.inObject()
			switch c := p.b[p.i]; {
			case c == ',':
				p.i++
				p.space()
				if obj && !p.key() {
					return false
				}
			case obj && c == '}', !obj && c == ']':
				p.i++
				p.depth--
				continue
			default:
				return false
			}
			break
		}
	}
}

// key reads a member's name and its colon, and the whitespace after it.
func (p *parser) key() bool {
	if p.i >= len(p.b) || p.b[p.i] != '"' || !p.str() {
		return false
	}
	p.space()
	if p.i >= len(p.b) || p.b[p.i] != ':' {
		return false
	}
	p.i++
	p.space()
	return true
}

func (p *parser) lit(s string) bool {
	if len(p.b)-p.i < len(s) || string(p.b[p.i:p.i+len(s)]) != s {
		return false
	}
	p.i += len(s)
	return true
}

// str reads a string; p.i is at its opening quote.
func (p *parser) str() bool {
	b := p.b
	i := p.i + 1
	for i < len(b) {
		// Eight bytes at a time past the plain ones: none of them a quote,
		// a backslash or a control character.
		for len(b)-i >= 8 && plain8(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
		}
		if i >= len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			p.i = i + 1
			return true
		case c < 0x20:
			return false
		case c == '\\':
			i++
			if i >= len(b) {
				return false
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if len(b)-i < 5 {
					return false
				}
				for _, h := range b[i+1 : i+5] {
					if !isHex(h) {
						return false
					}
				}
				i += 5
			default:
				return false
			}
		default:
			i++
		}
	}
	return false
}

// Bit patterns for plain8: every byte 0x01 or 0x80, or a byte value in
// each byte.
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// plain8 reports whether none of the eight bytes of w is '"', '\\' or
// below 0x20, with the word-at-a-time tests "has a byte less than n"
// ((w-ones*n) &^ w & highs, for n up to 0x80) and "has a zero byte" (the
// same with n = 1, on w xor the byte sought). The tests never miss a byte
// they look for; a borrow may flag a plain byte above one they found, which
// only sends str to its byte loop one word early.
func plain8(w uint64) bool {
	ctl := (w - ones*0x20) &^ w
	quote := w ^ (ones * '"')
	bslash := w ^ (ones * '\\')
	q := (quote - ones) &^ quote
	s := (bslash - ones) &^ bslash
	return (ctl|q|s)&highs == 0
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// number reads -? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?.
func (p *parser) number() bool {
	b, i := p.b, p.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		i = digits(b, i)
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return false
		}
		i = j
	}
	p.i = i
	return true
}

// digits returns the index after the run of digits at i.
func digits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}
