package amqpd

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"
)

// The AMQP 1.0 type system, the subset IoT Hub clients use (AMQP 1.0
// part 1). Decoded values have these Go types:
//
//	null            nil
//	boolean         bool
//	ubyte … ulong   uint8, uint16, uint32, uint64
//	byte … long     int8, int16, int32, int64
//	float, double   float32, float64
//	decimal32/64/128 Decimal (opaque bytes)
//	char            Char
//	timestamp       time.Time (UTC, millisecond precision)
//	uuid            UUID
//	binary          []byte
//	string          string
//	symbol          Symbol
//	list            List
//	map             Map (ordered pairs; keys of any type)
//	array           Array
//	described       Described
//
// The decoder never allocates more than its input justifies: every length
// and count is checked against the bytes that remain, and nesting is
// limited to maxDepth.

// Symbol is an AMQP symbol (ASCII).
type Symbol string

// UUID is an AMQP uuid (RFC 4122 bytes).
type UUID [16]byte

// String formats u canonically: 8-4-4-4-12 lower-case hex digits.
func (u UUID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}

// parseUUID parses the canonical 36-character form (any hex case).
func parseUUID(s string) (UUID, bool) {
	var u UUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, false
	}
	h := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	if _, err := hex.Decode(u[:], []byte(h)); err != nil {
		return UUID{}, false
	}
	return u, true
}

// Char is an AMQP char (a UTF-32 code point).
type Char rune

// Decimal is an undecoded decimal32, decimal64 or decimal128.
type Decimal []byte

// List is an AMQP list.
type List []any

// Map is an AMQP map, its pairs in wire order. Keys may be of any type
// (including ones Go maps cannot hold, such as binary).
type Map []MapEntry

// MapEntry is one key/value pair of a Map.
type MapEntry struct {
	Key, Value any
}

// Get returns the value of the first pair whose key equals key (same
// type and value).
func (m Map) Get(key any) (any, bool) {
	for _, kv := range m {
		if keyEqual(kv.Key, key) {
			return kv.Value, true
		}
	}
	return nil, false
}

// getFold returns the value of the first string or symbol key that
// equals name case-insensitively.
func (m Map) getFold(name string) (any, bool) {
	for _, kv := range m {
		var k string
		switch v := kv.Key.(type) {
		case string:
			k = v
		case Symbol:
			k = string(v)
		default:
			continue
		}
		if equalFold(k, name) {
			return kv.Value, true
		}
	}
	return nil, false
}

// keyEqual compares two decoded values of the comparable kinds; other
// kinds (binary, lists, maps…) never compare equal, which keeps the
// comparison from panicking on uncomparable dynamic types.
func keyEqual(a, b any) bool {
	switch av := a.(type) {
	case string:
		bv, ok := b.(string)
		return ok && av == bv
	case Symbol:
		bv, ok := b.(Symbol)
		return ok && av == bv
	case uint64:
		bv, ok := b.(uint64)
		return ok && av == bv
	case uint32:
		bv, ok := b.(uint32)
		return ok && av == bv
	case int32:
		bv, ok := b.(int32)
		return ok && av == bv
	case int64:
		bv, ok := b.(int64)
		return ok && av == bv
	case UUID:
		bv, ok := b.(UUID)
		return ok && av == bv
	case bool:
		bv, ok := b.(bool)
		return ok && av == bv
	}
	return false
}

// Array is an AMQP array: elements of one type.
type Array []any

// Described is a described value: a descriptor (a ulong code or a
// symbol) and the value it describes.
type Described struct {
	Descriptor any
	Value      any
}

// raw is an already encoded value, written verbatim (used to echo a
// peer's terminus exactly as it was sent).
type raw []byte

// Type codes.
const (
	codeDescribed  = 0x00
	codeNull       = 0x40
	codeTrue       = 0x41
	codeFalse      = 0x42
	codeUint0      = 0x43
	codeUlong0     = 0x44
	codeList0      = 0x45
	codeUbyte      = 0x50
	codeByte       = 0x51
	codeSmallUint  = 0x52
	codeSmallUlong = 0x53
	codeSmallInt   = 0x54
	codeSmallLong  = 0x55
	codeBool       = 0x56
	codeUshort     = 0x60
	codeShort      = 0x61
	codeUint       = 0x70
	codeInt        = 0x71
	codeFloat      = 0x72
	codeChar       = 0x73
	codeDecimal32  = 0x74
	codeUlong      = 0x80
	codeLong       = 0x81
	codeDouble     = 0x82
	codeTimestamp  = 0x83
	codeDecimal64  = 0x84
	codeDecimal128 = 0x94
	codeUUID       = 0x98
	codeVbin8      = 0xa0
	codeStr8       = 0xa1
	codeSym8       = 0xa3
	codeVbin32     = 0xb0
	codeStr32      = 0xb1
	codeSym32      = 0xb3
	codeList8      = 0xc0
	codeMap8       = 0xc1
	codeList32     = 0xd0
	codeMap32      = 0xd1
	codeArray8     = 0xe0
	codeArray32    = 0xf0
)

// maxDepth bounds the nesting of compound and described values.
const maxDepth = 32

// errDecode is wrapped by every decoding error.
var errDecode = errors.New("iothub: AMQP decode error")

func decodeErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errDecode, fmt.Sprintf(format, args...))
}

// decoder reads values from b.
type decoder struct {
	b     []byte
	depth int
}

// decodeValue decodes one value from the start of b and returns the bytes
// that follow it.
func decodeValue(b []byte) (any, []byte, error) {
	d := decoder{b: b}
	v, err := d.value()
	if err != nil {
		return nil, nil, err
	}
	return v, d.b, nil
}

func (d *decoder) take(n int) ([]byte, error) {
	if n < 0 || n > len(d.b) {
		return nil, decodeErr("value needs %d bytes, %d remain", n, len(d.b))
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v, nil
}

func (d *decoder) byte1() (byte, error) {
	if len(d.b) < 1 {
		return 0, decodeErr("unexpected end of data")
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c, nil
}

func (d *decoder) value() (any, error) {
	code, err := d.byte1()
	if err != nil {
		return nil, err
	}
	if code == codeDescribed {
		return d.described()
	}
	return d.primitive(code)
}

func (d *decoder) described() (any, error) {
	if d.depth >= maxDepth {
		return nil, decodeErr("values nested deeper than %d", maxDepth)
	}
	d.depth++
	defer func() { d.depth-- }()
	desc, err := d.value()
	if err != nil {
		return nil, err
	}
	switch desc.(type) {
	case uint64, Symbol:
	default:
		return nil, decodeErr("descriptor of type %T, want ulong or symbol", desc)
	}
	v, err := d.value()
	if err != nil {
		return nil, err
	}
	return Described{Descriptor: desc, Value: v}, nil
}

// primitive decodes a value whose constructor code has been read.
func (d *decoder) primitive(code byte) (any, error) {
	switch code {
	case codeNull:
		return nil, nil
	case codeTrue:
		return true, nil
	case codeFalse:
		return false, nil
	case codeUint0:
		return uint32(0), nil
	case codeUlong0:
		return uint64(0), nil
	case codeList0:
		return List{}, nil
	}
	switch code >> 4 {
	case 0x5:
		b, err := d.take(1)
		if err != nil {
			return nil, err
		}
		switch code {
		case codeUbyte:
			return b[0], nil
		case codeByte:
			return int8(b[0]), nil
		case codeSmallUint:
			return uint32(b[0]), nil
		case codeSmallUlong:
			return uint64(b[0]), nil
		case codeSmallInt:
			return int32(int8(b[0])), nil
		case codeSmallLong:
			return int64(int8(b[0])), nil
		case codeBool:
			switch b[0] {
			case 0:
				return false, nil
			case 1:
				return true, nil
			}
			return nil, decodeErr("boolean octet 0x%02x", b[0])
		}
	case 0x6:
		b, err := d.take(2)
		if err != nil {
			return nil, err
		}
		switch code {
		case codeUshort:
			return binary.BigEndian.Uint16(b), nil
		case codeShort:
			return int16(binary.BigEndian.Uint16(b)), nil
		}
	case 0x7:
		b, err := d.take(4)
		if err != nil {
			return nil, err
		}
		u := binary.BigEndian.Uint32(b)
		switch code {
		case codeUint:
			return u, nil
		case codeInt:
			return int32(u), nil
		case codeFloat:
			return math.Float32frombits(u), nil
		case codeChar:
			return Char(rune(u)), nil
		case codeDecimal32:
			return Decimal(append([]byte(nil), b...)), nil
		}
	case 0x8:
		b, err := d.take(8)
		if err != nil {
			return nil, err
		}
		u := binary.BigEndian.Uint64(b)
		switch code {
		case codeUlong:
			return u, nil
		case codeLong:
			return int64(u), nil
		case codeDouble:
			return math.Float64frombits(u), nil
		case codeTimestamp:
			return time.UnixMilli(int64(u)).UTC(), nil
		case codeDecimal64:
			return Decimal(append([]byte(nil), b...)), nil
		}
	case 0x9:
		b, err := d.take(16)
		if err != nil {
			return nil, err
		}
		switch code {
		case codeUUID:
			var u UUID
			copy(u[:], b)
			return u, nil
		case codeDecimal128:
			return Decimal(append([]byte(nil), b...)), nil
		}
	case 0xa, 0xb:
		n, err := d.length(code >> 4)
		if err != nil {
			return nil, err
		}
		b, err := d.take(n)
		if err != nil {
			return nil, err
		}
		switch code {
		case codeVbin8, codeVbin32:
			return append([]byte{}, b...), nil
		case codeStr8, codeStr32:
			if !utf8.Valid(b) {
				return nil, decodeErr("string is not valid UTF-8")
			}
			return string(b), nil
		case codeSym8, codeSym32:
			for _, c := range b {
				if c >= 0x80 {
					return nil, decodeErr("symbol is not ASCII")
				}
			}
			return Symbol(b), nil
		}
	case 0xc, 0xd:
		switch code {
		case codeList8, codeList32, codeMap8, codeMap32:
			return d.compound(code)
		}
	case 0xe, 0xf:
		switch code {
		case codeArray8, codeArray32:
			return d.array(code)
		}
	}
	return nil, decodeErr("unknown type code 0x%02x", code)
}

// length reads a 1-byte (width class 0xa/0xc/0xe) or 4-byte size.
func (d *decoder) length(class byte) (int, error) {
	switch class {
	case 0xa, 0xc, 0xe:
		b, err := d.take(1)
		if err != nil {
			return 0, err
		}
		return int(b[0]), nil
	default:
		b, err := d.take(4)
		if err != nil {
			return 0, err
		}
		n := binary.BigEndian.Uint32(b)
		if uint64(n) > uint64(len(d.b)) {
			return 0, decodeErr("size %d exceeds the %d bytes that remain", n, len(d.b))
		}
		return int(n), nil
	}
}

// region splits off a compound's size-delimited bytes and reads its
// count; the returned decoder covers the elements only.
func (d *decoder) region(code byte) (*decoder, int, error) {
	size, err := d.length(code >> 4)
	if err != nil {
		return nil, 0, err
	}
	body, err := d.take(size)
	if err != nil {
		return nil, 0, err
	}
	sub := &decoder{b: body, depth: d.depth + 1}
	if sub.depth > maxDepth {
		return nil, 0, decodeErr("values nested deeper than %d", maxDepth)
	}
	var count int
	if code>>4 == 0xc || code>>4 == 0xe {
		c, err := sub.take(1)
		if err != nil {
			return nil, 0, err
		}
		count = int(c[0])
	} else {
		c, err := sub.take(4)
		if err != nil {
			return nil, 0, err
		}
		n := binary.BigEndian.Uint32(c)
		if uint64(n) > uint64(len(sub.b))+1024 {
			return nil, 0, decodeErr("count %d exceeds the %d bytes of the value", n, len(sub.b))
		}
		count = int(n)
	}
	return sub, count, nil
}

func (d *decoder) compound(code byte) (any, error) {
	sub, count, err := d.region(code)
	if err != nil {
		return nil, err
	}
	// Every element takes at least its constructor byte.
	if count > len(sub.b) {
		return nil, decodeErr("count %d exceeds the %d bytes of the value", count, len(sub.b))
	}
	isMap := code == codeMap8 || code == codeMap32
	if isMap {
		if count%2 != 0 {
			return nil, decodeErr("map with an odd number (%d) of elements", count)
		}
		m := make(Map, 0, count/2)
		for i := 0; i < count; i += 2 {
			k, err := sub.value()
			if err != nil {
				return nil, err
			}
			v, err := sub.value()
			if err != nil {
				return nil, err
			}
			m = append(m, MapEntry{Key: k, Value: v})
		}
		if len(sub.b) != 0 {
			return nil, decodeErr("%d stray bytes after a map's elements", len(sub.b))
		}
		return m, nil
	}
	l := make(List, 0, count)
	for i := 0; i < count; i++ {
		v, err := sub.value()
		if err != nil {
			return nil, err
		}
		l = append(l, v)
	}
	if len(sub.b) != 0 {
		return nil, decodeErr("%d stray bytes after a list's elements", len(sub.b))
	}
	return l, nil
}

// maxZeroWidthArray bounds arrays whose elements take no bytes (nulls,
// true…), whose count the size field cannot bound.
const maxZeroWidthArray = 1024

func (d *decoder) array(code byte) (any, error) {
	sub, count, err := d.region(code)
	if err != nil {
		return nil, err
	}
	elem, err := sub.byte1()
	if err != nil {
		return nil, err
	}
	var desc any
	if elem == codeDescribed {
		if desc, err = sub.value(); err != nil {
			return nil, err
		}
		switch desc.(type) {
		case uint64, Symbol:
		default:
			return nil, decodeErr("array descriptor of type %T", desc)
		}
		if elem, err = sub.byte1(); err != nil {
			return nil, err
		}
		if elem == codeDescribed {
			return nil, decodeErr("array element constructor is described twice")
		}
	}
	zeroWidth := elem>>4 == 0x4
	if (zeroWidth && count > maxZeroWidthArray) || (!zeroWidth && count > len(sub.b)) {
		return nil, decodeErr("array count %d exceeds the %d bytes of the value", count, len(sub.b))
	}
	a := make(Array, 0, count)
	for i := 0; i < count; i++ {
		v, err := sub.primitive(elem)
		if err != nil {
			return nil, err
		}
		if desc != nil {
			v = Described{Descriptor: desc, Value: v}
		}
		a = append(a, v)
	}
	if len(sub.b) != 0 {
		return nil, decodeErr("%d stray bytes after an array's elements", len(sub.b))
	}
	return a, nil
}

// Encoding.

// errEncode is returned for values the encoder does not support.
var errEncode = errors.New("iothub: AMQP encode error")

// appendValue appends the encoding of v to b, choosing the most compact
// encoding of each type.
func appendValue(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(b, codeNull), nil
	case bool:
		if v {
			return append(b, codeTrue), nil
		}
		return append(b, codeFalse), nil
	case uint8:
		return append(b, codeUbyte, v), nil
	case uint16:
		return binary.BigEndian.AppendUint16(append(b, codeUshort), v), nil
	case uint32:
		switch {
		case v == 0:
			return append(b, codeUint0), nil
		case v < 256:
			return append(b, codeSmallUint, byte(v)), nil
		}
		return binary.BigEndian.AppendUint32(append(b, codeUint), v), nil
	case uint64:
		switch {
		case v == 0:
			return append(b, codeUlong0), nil
		case v < 256:
			return append(b, codeSmallUlong, byte(v)), nil
		}
		return binary.BigEndian.AppendUint64(append(b, codeUlong), v), nil
	case int8:
		return append(b, codeByte, byte(v)), nil
	case int16:
		return binary.BigEndian.AppendUint16(append(b, codeShort), uint16(v)), nil
	case int32:
		if v >= -128 && v <= 127 {
			return append(b, codeSmallInt, byte(int8(v))), nil
		}
		return binary.BigEndian.AppendUint32(append(b, codeInt), uint32(v)), nil
	case int64:
		if v >= -128 && v <= 127 {
			return append(b, codeSmallLong, byte(int8(v))), nil
		}
		return binary.BigEndian.AppendUint64(append(b, codeLong), uint64(v)), nil
	case float32:
		return binary.BigEndian.AppendUint32(append(b, codeFloat), math.Float32bits(v)), nil
	case float64:
		return binary.BigEndian.AppendUint64(append(b, codeDouble), math.Float64bits(v)), nil
	case Char:
		return binary.BigEndian.AppendUint32(append(b, codeChar), uint32(v)), nil
	case time.Time:
		return binary.BigEndian.AppendUint64(append(b, codeTimestamp), uint64(v.UnixMilli())), nil
	case UUID:
		return append(append(b, codeUUID), v[:]...), nil
	case []byte:
		return appendVariable(b, codeVbin8, codeVbin32, v), nil
	case string:
		return appendVariable(b, codeStr8, codeStr32, []byte(v)), nil
	case Symbol:
		return appendVariable(b, codeSym8, codeSym32, []byte(v)), nil
	case List:
		if len(v) == 0 {
			return append(b, codeList0), nil
		}
		var body []byte
		var err error
		for _, e := range v {
			if body, err = appendValue(body, e); err != nil {
				return nil, err
			}
		}
		return appendCompound(b, codeList8, codeList32, len(v), body), nil
	case Map:
		var body []byte
		var err error
		for _, kv := range v {
			if body, err = appendValue(body, kv.Key); err != nil {
				return nil, err
			}
			if body, err = appendValue(body, kv.Value); err != nil {
				return nil, err
			}
		}
		return appendCompound(b, codeMap8, codeMap32, 2*len(v), body), nil
	case []Symbol:
		// Always sym32 elements in an array32: simple and valid.
		body := []byte{codeSym32}
		for _, s := range v {
			body = binary.BigEndian.AppendUint32(body, uint32(len(s)))
			body = append(body, s...)
		}
		b = append(b, codeArray32)
		b = binary.BigEndian.AppendUint32(b, uint32(4+len(body)))
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		return append(b, body...), nil
	case Described:
		b = append(b, codeDescribed)
		var err error
		if b, err = appendValue(b, v.Descriptor); err != nil {
			return nil, err
		}
		return appendValue(b, v.Value)
	case raw:
		return append(b, v...), nil
	}
	return nil, fmt.Errorf("%w: cannot encode %T", errEncode, v)
}

func appendVariable(b []byte, code8, code32 byte, v []byte) []byte {
	if len(v) < 256 {
		b = append(b, code8, byte(len(v)))
	} else {
		b = binary.BigEndian.AppendUint32(append(b, code32), uint32(len(v)))
	}
	return append(b, v...)
}

func appendCompound(b []byte, code8, code32 byte, count int, body []byte) []byte {
	if count < 256 && len(body)+1 < 256 {
		b = append(b, code8, byte(len(body)+1), byte(count))
	} else {
		b = append(b, code32)
		b = binary.BigEndian.AppendUint32(b, uint32(len(body)+4))
		b = binary.BigEndian.AppendUint32(b, uint32(count))
	}
	return append(b, body...)
}

// Conversions used when reading performative fields and properties.

// asUint returns v as a uint64 if it is a non-negative integer of any
// AMQP integer type.
func asUint(v any) (uint64, bool) {
	switch v := v.(type) {
	case uint8:
		return uint64(v), true
	case uint16:
		return uint64(v), true
	case uint32:
		return uint64(v), true
	case uint64:
		return v, true
	case int8:
		return uint64(v), v >= 0
	case int16:
		return uint64(v), v >= 0
	case int32:
		return uint64(v), v >= 0
	case int64:
		return uint64(v), v >= 0
	}
	return 0, false
}

// asInt returns v as an int64 if it is an integer of any AMQP integer
// type that fits.
func asInt(v any) (int64, bool) {
	switch v := v.(type) {
	case int8:
		return int64(v), true
	case int16:
		return int64(v), true
	case int32:
		return int64(v), true
	case int64:
		return v, true
	case uint8:
		return int64(v), true
	case uint16:
		return int64(v), true
	case uint32:
		return int64(v), true
	case uint64:
		if v > math.MaxInt64 {
			return 0, false
		}
		return int64(v), true
	}
	return 0, false
}

// asString returns a string or symbol value as a Go string.
func asString(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case Symbol:
		return string(v), true
	}
	return "", false
}

// equalFold compares ASCII strings case-insensitively.
func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}
