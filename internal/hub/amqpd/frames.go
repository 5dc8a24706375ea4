package amqpd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Frames (AMQP 1.0 part 2.3): an 8-byte header (size, data offset in
// 4-byte words, type, channel), an optional extended header, and a body
// that holds one performative and, for transfers, payload bytes.

const (
	frameHeaderSize = 8
	frameTypeAMQP   = 0x00
	frameTypeSASL   = 0x01

	// minMaxFrameSize is the smallest max-frame-size a peer may announce
	// (MIN-MAX-FRAME-SIZE).
	minMaxFrameSize = 512
)

// Performative and SASL frame descriptor codes.
const (
	descOpen        = 0x10
	descBegin       = 0x11
	descAttach      = 0x12
	descFlow        = 0x13
	descTransfer    = 0x14
	descDisposition = 0x15
	descDetach      = 0x16
	descEnd         = 0x17
	descClose       = 0x18
	descError       = 0x1d
	descReceived    = 0x23
	descAccepted    = 0x24
	descRejected    = 0x25
	descReleased    = 0x26
	descModified    = 0x27
	descSource      = 0x28
	descTarget      = 0x29

	descSASLMechanisms = 0x40
	descSASLInit       = 0x41
	descSASLChallenge  = 0x42
	descSASLResponse   = 0x43
	descSASLOutcome    = 0x44
)

// Descriptor symbols, accepted as alternatives to the codes.
var descSymbols = map[Symbol]uint64{
	"amqp:open:list": descOpen, "amqp:begin:list": descBegin, "amqp:attach:list": descAttach,
	"amqp:flow:list": descFlow, "amqp:transfer:list": descTransfer, "amqp:disposition:list": descDisposition,
	"amqp:detach:list": descDetach, "amqp:end:list": descEnd, "amqp:close:list": descClose,
	"amqp:error:list": descError, "amqp:received:list": descReceived, "amqp:accepted:list": descAccepted,
	"amqp:rejected:list": descRejected, "amqp:released:list": descReleased, "amqp:modified:list": descModified,
	"amqp:source:list": descSource, "amqp:target:list": descTarget,
	"amqp:sasl-mechanisms:list": descSASLMechanisms, "amqp:sasl-init:list": descSASLInit,
	"amqp:sasl-challenge:list": descSASLChallenge, "amqp:sasl-response:list": descSASLResponse,
	"amqp:sasl-outcome:list": descSASLOutcome,
	"amqp:header:list":       descHeader, "amqp:delivery-annotations:map": descDeliveryAnnotations,
	"amqp:message-annotations:map": descMessageAnnotations, "amqp:properties:list": descProperties,
	"amqp:application-properties:map": descApplicationProperties, "amqp:data:binary": descData,
	"amqp:amqp-sequence:list": descAMQPSequence, "amqp:amqp-value:*": descAMQPValue, "amqp:footer:map": descFooter,
}

// descriptorCode returns a descriptor as its numeric code.
func descriptorCode(d any) (uint64, bool) {
	switch d := d.(type) {
	case uint64:
		return d, true
	case Symbol:
		c, ok := descSymbols[d]
		return c, ok
	}
	return 0, false
}

// Errors that end a connection. The AMQP condition sent in the close
// frame follows from which one is wrapped.
var (
	errFraming = errors.New("iothub: AMQP framing error")
)

func framingErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errFraming, fmt.Sprintf(format, args...))
}

// frame is one decoded frame. An empty frame (heartbeat) has body nil.
type frame struct {
	typ     byte
	channel uint16
	body    any    // *performative struct; nil for an empty frame
	payload []byte // transfer payload
}

// readFrame reads one frame of at most maxSize bytes from r. It allocates
// only after checking the size against maxSize.
func readFrame(r io.Reader, maxSize uint32) (frame, error) {
	var h [frameHeaderSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return frame{}, err
	}
	size := binary.BigEndian.Uint32(h[0:4])
	doff := uint32(h[4])
	if size < frameHeaderSize {
		return frame{}, framingErr("frame size %d is smaller than the header", size)
	}
	if size > maxSize {
		return frame{}, framingErr("frame size %d exceeds the max-frame-size %d", size, maxSize)
	}
	if doff < 2 || doff*4 > size {
		return frame{}, framingErr("data offset %d does not fit frame size %d", doff, size)
	}
	rest := make([]byte, size-frameHeaderSize)
	if _, err := io.ReadFull(r, rest); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return frame{}, err
	}
	return parseFrame(h[5], binary.BigEndian.Uint16(h[6:8]), rest[doff*4-frameHeaderSize:])
}

// decodeFrame decodes one whole frame held in b (header included); it is
// what the FuzzDecodeFrame target exercises.
func decodeFrame(b []byte, maxSize uint32) (frame, error) {
	if len(b) < frameHeaderSize {
		return frame{}, framingErr("short frame header")
	}
	if size := binary.BigEndian.Uint32(b[0:4]); uint64(size) != uint64(len(b)) {
		return frame{}, framingErr("frame size %d, %d bytes given", size, len(b))
	}
	return readFrame(bytesReader(b), maxSize)
}

func parseFrame(typ byte, channel uint16, body []byte) (frame, error) {
	f := frame{typ: typ, channel: channel}
	if typ != frameTypeAMQP && typ != frameTypeSASL {
		return f, framingErr("unknown frame type 0x%02x", typ)
	}
	if len(body) == 0 {
		return f, nil // heartbeat
	}
	d := decoder{b: body}
	v, err := d.value()
	if err != nil {
		return f, err
	}
	desc, ok := v.(Described)
	if !ok {
		return f, decodeErr("frame body is %T, not a performative", v)
	}
	code, ok := descriptorCode(desc.Descriptor)
	if !ok {
		return f, decodeErr("unknown performative descriptor %v", desc.Descriptor)
	}
	fields, ok := desc.Value.(List)
	if !ok {
		return f, decodeErr("performative 0x%02x is %T, not a list", code, desc.Value)
	}
	if typ == frameTypeSASL {
		f.body, err = parseSASL(code, fields)
	} else {
		f.body, err = parsePerformative(code, fields)
	}
	if err != nil {
		return f, err
	}
	if a, ok := f.body.(*attach); ok {
		// Keep the termini exactly as sent, to echo them.
		raws, err := rawFields(body)
		if err != nil {
			return f, err
		}
		if a.source != nil && len(raws) > 5 {
			a.source.raw = raws[5]
		}
		if a.target != nil && len(raws) > 6 {
			a.target.raw = raws[6]
		}
	}
	if len(d.b) > 0 {
		if _, isTransfer := f.body.(*transfer); !isTransfer {
			return f, decodeErr("%d bytes follow a performative that carries no payload", len(d.b))
		}
		f.payload = d.b
	}
	return f, nil
}

// fields reads a performative's list by position; absent and null
// fields read as missing.
type fields List

func (fs fields) get(i int) any {
	if i < len(fs) {
		return fs[i]
	}
	return nil
}

func (fs fields) uint32(i int, name string, required bool) (uint32, bool, error) {
	v := fs.get(i)
	if v == nil {
		if required {
			return 0, false, decodeErr("mandatory field %s is missing", name)
		}
		return 0, false, nil
	}
	u, ok := asUint(v)
	if !ok || u > 0xffffffff {
		return 0, false, decodeErr("field %s is %T, want uint", name, v)
	}
	return uint32(u), true, nil
}

func (fs fields) uint64(i int, name string) (uint64, error) {
	v := fs.get(i)
	if v == nil {
		return 0, nil
	}
	u, ok := asUint(v)
	if !ok {
		return 0, decodeErr("field %s is %T, want ulong", name, v)
	}
	return u, nil
}

func (fs fields) bool(i int, name string) (bool, error) {
	v := fs.get(i)
	if v == nil {
		return false, nil
	}
	b, ok := v.(bool)
	if !ok {
		return false, decodeErr("field %s is %T, want boolean", name, v)
	}
	return b, nil
}

func (fs fields) string(i int, name string, required bool) (string, error) {
	v := fs.get(i)
	if v == nil {
		if required {
			return "", decodeErr("mandatory field %s is missing", name)
		}
		return "", nil
	}
	s, ok := asString(v)
	if !ok {
		return "", decodeErr("field %s is %T, want string", name, v)
	}
	return s, nil
}

func (fs fields) mapField(i int, name string) (Map, error) {
	v := fs.get(i)
	if v == nil {
		return nil, nil
	}
	m, ok := v.(Map)
	if !ok {
		return nil, decodeErr("field %s is %T, want map", name, v)
	}
	return m, nil
}

func (fs fields) settleMode(i int, name string) (*uint8, error) {
	v := fs.get(i)
	if v == nil {
		return nil, nil
	}
	u, ok := asUint(v)
	if !ok || u > 2 {
		return nil, decodeErr("field %s is %v, want a settle mode", name, v)
	}
	m := uint8(u)
	return &m, nil
}

// Performatives.

type open struct {
	containerID  string
	hostname     string
	maxFrameSize uint32 // 0 when absent (unlimited)
	channelMax   uint16
	idleTimeout  uint32 // ms; 0 = none
}

type begin struct {
	remoteChannel  *uint16
	nextOutgoingID uint32
	incomingWindow uint32
	outgoingWindow uint32
	handleMax      uint32
}

// terminus is a source or target: its address and its encoded form,
// echoed back verbatim when a link is accepted.
type terminus struct {
	address string
	raw     raw
}

type attach struct {
	name                 string
	handle               uint32
	receiver             bool // the sender of this attach is the receiver
	sndSettleMode        *uint8
	rcvSettleMode        *uint8
	source               *terminus
	target               *terminus
	initialDeliveryCount uint32
	maxMessageSize       uint64
	properties           Map
}

type flow struct {
	nextIncomingID *uint32
	incomingWindow uint32
	nextOutgoingID uint32
	outgoingWindow uint32
	handle         *uint32
	deliveryCount  *uint32
	linkCredit     *uint32
	drain          bool
	echo           bool
}

type transfer struct {
	handle        uint32
	deliveryID    *uint32
	deliveryTag   []byte
	settled       bool
	more          bool
	rcvSettleMode *uint8
	aborted       bool
}

type disposition struct {
	receiver bool // the sender of this disposition is the receiver
	first    uint32
	last     *uint32
	settled  bool
	state    any // Described outcome or nil
}

type detach struct {
	handle uint32
	closed bool
	err    *amqpError
}

type end struct{ err *amqpError }

type closePerf struct{ err *amqpError }

// amqpError is the error type carried by detach, end, close and
// rejected.
type amqpError struct {
	condition   Symbol
	description string
	info        Map
}

func (e *amqpError) Error() string {
	if e.description == "" {
		return string(e.condition)
	}
	return string(e.condition) + ": " + e.description
}

type saslInit struct {
	mechanism       Symbol
	initialResponse []byte
	hostname        string
}

type saslResponse struct{}

// saslMechanismsFrame and saslOutcomeFrame are what a server sends; the
// hub decodes them only to refuse a client that sends them (and in
// tests).
type saslMechanismsFrame struct{ mechanisms Array }

type saslOutcomeFrame struct {
	code uint8
	data []byte
}

func parsePerformative(code uint64, l List) (any, error) {
	fs := fields(l)
	var err error
	switch code {
	case descOpen:
		var o open
		if o.containerID, err = fs.string(0, "container-id", true); err != nil {
			return nil, err
		}
		if o.hostname, err = fs.string(1, "hostname", false); err != nil {
			return nil, err
		}
		if o.maxFrameSize, _, err = fs.uint32(2, "max-frame-size", false); err != nil {
			return nil, err
		}
		o.channelMax = 65535
		if v := fs.get(3); v != nil {
			u, ok := v.(uint16)
			if !ok {
				return nil, decodeErr("field channel-max is %T, want ushort", v)
			}
			o.channelMax = u
		}
		if o.idleTimeout, _, err = fs.uint32(4, "idle-time-out", false); err != nil {
			return nil, err
		}
		return &o, nil
	case descBegin:
		var b begin
		if v := fs.get(0); v != nil {
			u, ok := v.(uint16)
			if !ok {
				return nil, decodeErr("field remote-channel is %T, want ushort", v)
			}
			b.remoteChannel = &u
		}
		if b.nextOutgoingID, _, err = fs.uint32(1, "next-outgoing-id", true); err != nil {
			return nil, err
		}
		if b.incomingWindow, _, err = fs.uint32(2, "incoming-window", true); err != nil {
			return nil, err
		}
		if b.outgoingWindow, _, err = fs.uint32(3, "outgoing-window", true); err != nil {
			return nil, err
		}
		var ok bool
		if b.handleMax, ok, err = fs.uint32(4, "handle-max", false); err != nil {
			return nil, err
		} else if !ok {
			b.handleMax = 0xffffffff
		}
		return &b, nil
	case descAttach:
		return parseAttach(fs)
	case descFlow:
		var f flow
		if v, ok, err := fs.uint32(0, "next-incoming-id", false); err != nil {
			return nil, err
		} else if ok {
			f.nextIncomingID = &v
		}
		if f.incomingWindow, _, err = fs.uint32(1, "incoming-window", true); err != nil {
			return nil, err
		}
		if f.nextOutgoingID, _, err = fs.uint32(2, "next-outgoing-id", true); err != nil {
			return nil, err
		}
		if f.outgoingWindow, _, err = fs.uint32(3, "outgoing-window", true); err != nil {
			return nil, err
		}
		for i, p := range []**uint32{&f.handle, &f.deliveryCount, &f.linkCredit} {
			name := [...]string{"handle", "delivery-count", "link-credit"}[i]
			if v, ok, err := fs.uint32(4+i, name, false); err != nil {
				return nil, err
			} else if ok {
				*p = &v
			}
		}
		if f.drain, err = fs.bool(8, "drain"); err != nil {
			return nil, err
		}
		if f.echo, err = fs.bool(9, "echo"); err != nil {
			return nil, err
		}
		return &f, nil
	case descTransfer:
		var t transfer
		if t.handle, _, err = fs.uint32(0, "handle", true); err != nil {
			return nil, err
		}
		if v, ok, err := fs.uint32(1, "delivery-id", false); err != nil {
			return nil, err
		} else if ok {
			t.deliveryID = &v
		}
		if v := fs.get(2); v != nil {
			tag, ok := v.([]byte)
			if !ok || len(tag) > 32 {
				return nil, decodeErr("field delivery-tag is not binary of at most 32 bytes")
			}
			t.deliveryTag = tag
		}
		if t.settled, err = fs.bool(4, "settled"); err != nil {
			return nil, err
		}
		if t.more, err = fs.bool(5, "more"); err != nil {
			return nil, err
		}
		if t.rcvSettleMode, err = fs.settleMode(6, "rcv-settle-mode"); err != nil {
			return nil, err
		}
		if t.aborted, err = fs.bool(9, "aborted"); err != nil {
			return nil, err
		}
		return &t, nil
	case descDisposition:
		var d disposition
		if d.receiver, err = fs.bool(0, "role"); err != nil {
			return nil, err
		}
		if fs.get(0) == nil {
			return nil, decodeErr("mandatory field role is missing")
		}
		if d.first, _, err = fs.uint32(1, "first", true); err != nil {
			return nil, err
		}
		if v, ok, err := fs.uint32(2, "last", false); err != nil {
			return nil, err
		} else if ok {
			d.last = &v
		}
		if d.settled, err = fs.bool(3, "settled"); err != nil {
			return nil, err
		}
		d.state = fs.get(4)
		return &d, nil
	case descDetach:
		var d detach
		if d.handle, _, err = fs.uint32(0, "handle", true); err != nil {
			return nil, err
		}
		if d.closed, err = fs.bool(1, "closed"); err != nil {
			return nil, err
		}
		if d.err, err = parseError(fs.get(2)); err != nil {
			return nil, err
		}
		return &d, nil
	case descEnd:
		e, err := parseError(fs.get(0))
		if err != nil {
			return nil, err
		}
		return &end{err: e}, nil
	case descClose:
		e, err := parseError(fs.get(0))
		if err != nil {
			return nil, err
		}
		return &closePerf{err: e}, nil
	}
	return nil, decodeErr("unexpected performative 0x%02x in an AMQP frame", code)
}

func parseAttach(fs fields) (*attach, error) {
	var a attach
	var err error
	if a.name, err = fs.string(0, "name", true); err != nil {
		return nil, err
	}
	if a.handle, _, err = fs.uint32(1, "handle", true); err != nil {
		return nil, err
	}
	if fs.get(2) == nil {
		return nil, decodeErr("mandatory field role is missing")
	}
	if a.receiver, err = fs.bool(2, "role"); err != nil {
		return nil, err
	}
	if a.sndSettleMode, err = fs.settleMode(3, "snd-settle-mode"); err != nil {
		return nil, err
	}
	if a.rcvSettleMode, err = fs.settleMode(4, "rcv-settle-mode"); err != nil {
		return nil, err
	}
	if a.source, err = parseTerminus(fs.get(5), descSource, "source"); err != nil {
		return nil, err
	}
	if a.target, err = parseTerminus(fs.get(6), descTarget, "target"); err != nil {
		return nil, err
	}
	if a.initialDeliveryCount, _, err = fs.uint32(9, "initial-delivery-count", false); err != nil {
		return nil, err
	}
	if a.maxMessageSize, err = fs.uint64(10, "max-message-size"); err != nil {
		return nil, err
	}
	if a.properties, err = fs.mapField(13, "properties"); err != nil {
		return nil, err
	}
	return &a, nil
}

func parseTerminus(v any, want uint64, name string) (*terminus, error) {
	if v == nil {
		return nil, nil
	}
	d, ok := v.(Described)
	code, known := descriptorCode(d.Descriptor)
	if !ok || !known || code != want {
		return nil, decodeErr("field %s is not a %s", name, name)
	}
	l, ok := d.Value.(List)
	if !ok {
		return nil, decodeErr("%s is %T, not a list", name, d.Value)
	}
	t := &terminus{}
	if len(l) > 0 && l[0] != nil {
		if t.address, ok = asString(l[0]); !ok {
			return nil, decodeErr("%s address is %T, want string", name, l[0])
		}
	}
	return t, nil
}

// rawFields returns the encoded elements of the performative at the
// start of b (already validated by a full decode).
func rawFields(b []byte) ([]raw, error) {
	d := decoder{b: b}
	if c, err := d.byte1(); err != nil || c != codeDescribed {
		return nil, decodeErr("not a described value")
	}
	if _, err := d.value(); err != nil {
		return nil, err
	}
	c, err := d.byte1()
	if err != nil {
		return nil, err
	}
	if c == codeList0 {
		return nil, nil
	}
	if c != codeList8 && c != codeList32 {
		return nil, decodeErr("performative is not a list")
	}
	sub, count, err := d.region(c)
	if err != nil {
		return nil, err
	}
	out := make([]raw, 0, min(count, len(sub.b)))
	for i := 0; i < count; i++ {
		start := sub.b
		if _, err := sub.value(); err != nil {
			return nil, err
		}
		out = append(out, raw(start[:len(start)-len(sub.b)]))
	}
	return out, nil
}

func parseError(v any) (*amqpError, error) {
	if v == nil {
		return nil, nil
	}
	d, ok := v.(Described)
	code, known := descriptorCode(d.Descriptor)
	if !ok || !known || code != descError {
		return nil, decodeErr("error field is not an amqp:error")
	}
	l, ok := d.Value.(List)
	if !ok {
		return nil, decodeErr("error is %T, not a list", d.Value)
	}
	fs := fields(l)
	var e amqpError
	c, ok := fs.get(0).(Symbol)
	if !ok {
		return nil, decodeErr("error condition is missing or not a symbol")
	}
	e.condition = c
	var err error
	if e.description, err = fs.string(1, "description", false); err != nil {
		return nil, err
	}
	if e.info, err = fs.mapField(2, "info"); err != nil {
		return nil, err
	}
	return &e, nil
}

func parseSASL(code uint64, l List) (any, error) {
	fs := fields(l)
	switch code {
	case descSASLInit:
		var s saslInit
		m, ok := fs.get(0).(Symbol)
		if !ok {
			return nil, decodeErr("sasl-init mechanism is missing or not a symbol")
		}
		s.mechanism = m
		if v := fs.get(1); v != nil {
			b, ok := v.([]byte)
			if !ok {
				return nil, decodeErr("sasl-init initial-response is %T, want binary", v)
			}
			s.initialResponse = b
		}
		var err error
		if s.hostname, err = fs.string(2, "hostname", false); err != nil {
			return nil, err
		}
		return &s, nil
	case descSASLResponse:
		return &saslResponse{}, nil
	case descSASLMechanisms:
		var m saslMechanismsFrame
		switch v := fs.get(0).(type) {
		case Array:
			m.mechanisms = v
		case Symbol:
			m.mechanisms = Array{v}
		default:
			return nil, decodeErr("sasl-mechanisms is %T", v)
		}
		return &m, nil
	case descSASLOutcome:
		var o saslOutcomeFrame
		c, ok := fs.get(0).(uint8)
		if !ok {
			return nil, decodeErr("sasl-outcome code is missing or not a ubyte")
		}
		o.code = c
		o.data, _ = fs.get(1).([]byte)
		return &o, nil
	}
	return nil, decodeErr("unexpected SASL frame 0x%02x", code)
}

// Encoding performatives. Descriptors are written as smallulong codes:
// go-amqp rejects frame bodies whose descriptor is encoded otherwise.

// performative builds the described list for code, trimming trailing
// nulls (absent fields).
func performative(code uint64, fs ...any) Described {
	n := len(fs)
	for n > 0 && fs[n-1] == nil {
		n--
	}
	return Described{Descriptor: code, Value: List(fs[:n])}
}

// appendFrame appends a frame with body (a Described performative, or
// nil for an empty frame) and payload.
func appendFrame(b []byte, typ byte, channel uint16, body any, payload []byte) ([]byte, error) {
	start := len(b)
	b = append(b, 0, 0, 0, 0, 2, typ, byte(channel>>8), byte(channel))
	if body != nil {
		var err error
		if b, err = appendValue(b, body); err != nil {
			return nil, err
		}
	}
	b = append(b, payload...)
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start))
	return b, nil
}

// errorValue encodes an amqpError as its described list (nil for none).
func errorValue(e *amqpError) any {
	if e == nil {
		return nil
	}
	var desc, info any
	if e.description != "" {
		desc = e.description
	}
	if len(e.info) > 0 {
		info = e.info
	}
	return performative(descError, e.condition, desc, info)
}

func optMode(p *uint8) any {
	if p == nil {
		return nil
	}
	return *p
}

// bytesReader is a minimal io.Reader over a byte slice.
type sliceReader struct{ b []byte }

func bytesReader(b []byte) *sliceReader { return &sliceReader{b: b} }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}
