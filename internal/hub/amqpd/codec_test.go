package amqpd

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCodecRoundTrip(t *testing.T) {
	ts := time.UnixMilli(1700000000123).UTC()
	for _, v := range []any{
		nil, true, false,
		uint8(0), uint8(255), uint16(65535),
		uint32(0), uint32(7), uint32(255), uint32(256), uint32(math.MaxUint32),
		uint64(0), uint64(9), uint64(1 << 40),
		int8(-5), int16(-300), int32(-128), int32(127), int32(200), int32(math.MinInt32),
		int64(-1), int64(1 << 50),
		float32(1.5), float64(-2.25), Char('é'), ts, UUID(newUUID()),
		[]byte{}, []byte("bin"), bytes.Repeat([]byte{1}, 300),
		"", "héllo", strings.Repeat("s", 300),
		Symbol("sym"), Symbol(strings.Repeat("y", 300)),
		List{}, List{uint32(1), "two", List{Symbol("three")}},
		List{strings.Repeat("x", 300)},
		Map{{Key: Symbol("k"), Value: int32(1)}, {Key: "s", Value: nil}, {Key: uint64(3), Value: Map{}}},
		Described{Descriptor: uint64(0x24), Value: List{}},
		Described{Descriptor: Symbol("com.example:x"), Value: "v"},
	} {
		b, err := appendValue(nil, v)
		require.NoError(t, err, "encode %#v", v)
		got, rest, err := decodeValue(b)
		require.NoError(t, err, "decode %#v (% x)", v, b)
		require.Empty(t, rest, "decode %#v (% x): bytes left", v, b)
		if l, ok := v.(List); ok && len(l) == 0 {
			v = List{}
		}
		if m, ok := v.(Map); ok && len(m) == 0 {
			v = Map{}
		}
		require.Equal(t, v, got, "round trip of %#v", v)
	}
	b, _ := appendValue(nil, []Symbol{"MSSBCBS", "PLAIN"})
	got, _, err := decodeValue(b)
	require.NoError(t, err, "symbol array")
	assert.Equal(t, Array{Symbol("MSSBCBS"), Symbol("PLAIN")}, got, "symbol array")
}

// Encodings other implementations use that the hub never writes.
func TestDecodeEncodings(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		want any
	}{
		{"bool octet", []byte{0x56, 0x01}, true},
		{"uint full", []byte{0x70, 0, 0, 0, 5}, uint32(5)},
		{"ulong full", []byte{0x80, 0, 0, 0, 0, 0, 0, 0, 5}, uint64(5)},
		{"int full", []byte{0x71, 0xff, 0xff, 0xff, 0xfe}, int32(-2)},
		{"smalllong", []byte{0x55, 0xff}, int64(-1)},
		{"str32", []byte{0xb1, 0, 0, 0, 2, 'h', 'i'}, "hi"},
		{"sym32", []byte{0xb3, 0, 0, 0, 1, 'x'}, Symbol("x")},
		{"vbin32", []byte{0xb0, 0, 0, 0, 1, 9}, []byte{9}},
		{"list32", []byte{0xd0, 0, 0, 0, 5, 0, 0, 0, 1, 0x40}, List{nil}},
		{"map32", []byte{0xd1, 0, 0, 0, 7, 0, 0, 0, 2, 0xa1, 0, 0x40}, Map{{Key: "", Value: nil}}},
		{"array8 sym8", []byte{0xe0, 6, 2, 0xa3, 1, 'a', 1, 'b'}, Array{Symbol("a"), Symbol("b")}},
		{"array of described", []byte{0xe0, 5, 2, 0x00, 0x53, 0x24, 0x45}, Array{Described{uint64(0x24), List{}}, Described{uint64(0x24), List{}}}},
		{"array of true", []byte{0xe0, 2, 3, 0x41}, Array{true, true, true}},
		{"decimal64", []byte{0x84, 1, 2, 3, 4, 5, 6, 7, 8}, Decimal{1, 2, 3, 4, 5, 6, 7, 8}},
		{"timestamp", []byte{0x83, 0, 0, 0, 0, 0, 0, 0x03, 0xe8}, time.UnixMilli(1000).UTC()},
		{"described symbol descriptor", []byte{0x00, 0xa3, 1, 'd', 0x40}, Described{Symbol("d"), nil}},
	} {
		got, rest, err := decodeValue(tc.b)
		assert.NoError(t, err, tc.name)
		assert.Empty(t, rest, "%s: bytes left", tc.name)
		assert.Equal(t, tc.want, got, tc.name)
	}
}

func TestDecodeErrors(t *testing.T) {
	deep := bytes.Repeat([]byte{0x00, 0x53, 0x01}, maxDepth+1)
	deep = append(deep, 0x40)
	nestedLists := []byte{}
	for i := 0; i < maxDepth+2; i++ {
		nestedLists = append(nestedLists, 0xd0)
	}
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"truncated uint", []byte{0x70, 0, 0}},
		{"truncated uuid", []byte{0x98, 1, 2}},
		{"bad bool octet", []byte{0x56, 2}},
		{"unknown code", []byte{0x46}},
		{"reserved code", []byte{0x99}},
		{"invalid utf-8", []byte{0xa1, 1, 0xff}},
		{"non-ascii symbol", []byte{0xa3, 1, 0xc3}},
		{"size beyond input", []byte{0xb0, 0xff, 0xff, 0xff, 0xff}},
		{"list count beyond size", []byte{0xc0, 2, 200, 0x40}},
		{"list32 huge count", []byte{0xd0, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff}},
		{"odd map", []byte{0xc1, 2, 1, 0x40}},
		{"stray bytes in list", []byte{0xc0, 3, 1, 0x40, 0x40}},
		{"deep descriptors", deep},
		{"deep lists", nestedLists},
		{"huge zero-width array", []byte{0xf0, 0, 0, 0, 5, 0x00, 0x10, 0x00, 0x00, 0x40}},
		{"array count beyond size", []byte{0xe0, 2, 100, 0x50}},
		{"descriptor of bad type", []byte{0x00, 0xa1, 1, 'x', 0x40}},
		{"double-described array", []byte{0xe0, 5, 1, 0x00, 0x53, 1, 0x00}},
	} {
		v, _, err := decodeValue(tc.b)
		assert.ErrorIs(t, err, errDecode, "%s: decoded %#v; want a decode error", tc.name, v)
	}
}

// Messages encoded by go-amqp decode here, and the hub's messages decode
// in go-amqp.
func TestMessageInterop(t *testing.T) {
	corr := amqp.UUID(newUUID())
	m := &amqp.Message{
		Header:                &amqp.MessageHeader{Durable: true},
		Annotations:           amqp.Annotations{"x-opt": "a"},
		Properties:            &amqp.MessageProperties{MessageID: "mid", CorrelationID: corr, ReplyTo: ptr("cbs"), To: ptr("$cbs")},
		ApplicationProperties: map[string]any{"IoThub-status": int32(201), "operation": "put-token"},
		Data:                  [][]byte{[]byte("ab"), []byte("cd")},
	}
	b, err := m.MarshalBinary()
	require.NoError(t, err)
	got, err := decodeMessage(b)
	require.NoError(t, err)
	assert.Equal(t, "mid", got.messageID, "decoded message-id")
	assert.Equal(t, UUID(corr), got.correlationID, "decoded correlation-id")
	assert.Equal(t, "cbs", got.replyTo, "decoded reply-to")
	assert.Equal(t, "$cbs", got.to, "decoded to")
	assert.Equal(t, "abcd", string(got.data), "decoded data")
	v, _ := got.appProps.getFold("iothub-STATUS")
	assert.Equal(t, int32(201), v, "IoThub-status")

	out := outMessage{correlationID: UUID(corr), appProps: Map{{Key: "IoThub-methodname", Value: "reboot"}}, data: []byte(`{}`), hasData: true}
	enc, err := out.encode()
	require.NoError(t, err)
	var back amqp.Message
	require.NoError(t, back.UnmarshalBinary(enc))
	require.NotNil(t, back.Properties, "go-amqp decoded %+v", back)
	assert.Equal(t, corr, back.Properties.CorrelationID, "go-amqp decoded correlation-id")
	assert.Equal(t, "reboot", back.ApplicationProperties["IoThub-methodname"], "go-amqp decoded IoThub-methodname")
	assert.Equal(t, [][]byte{[]byte(`{}`)}, back.Data, "go-amqp decoded data")
	// An empty payload is one empty data section.
	out.data = nil
	enc, _ = out.encode()
	back = amqp.Message{}
	require.NoError(t, back.UnmarshalBinary(enc), "empty payload")
	require.Len(t, back.Data, 1, "empty payload: data sections")
	assert.Empty(t, back.Data[0], "empty payload")
}

func ptr[T any](v T) *T { return &v }

func TestUUIDFormat(t *testing.T) {
	u := UUID{0x7c, 0x4a, 0x52, 0xbb, 0x01, 0x02, 0x43, 0x04, 0x85, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0xff}
	assert.Equal(t, "7c4a52bb-0102-4304-8506-0708090a0bff", u.String(), "String")
	p, ok := parseUUID("7C4A52BB-0102-4304-8506-0708090A0BFF")
	assert.True(t, ok, "parseUUID of the upper-case form")
	assert.Equal(t, u, p, "parseUUID of the upper-case form")
	for _, bad := range []string{"", "7c4a52bb01024304850607080900bff", "7c4a52bb-0102-4304-8506-0708090a0bfg", "7c4a52bb-0102-4304-8506_0708090a0bff"} {
		_, ok := parseUUID(bad)
		assert.False(t, ok, "parseUUID(%q) succeeded", bad)
	}
	n := newUUID()
	assert.Equal(t, byte(4), n[6]>>4, "newUUID %s is not version 4", n)
	assert.Equal(t, byte(2), n[8]>>6, "newUUID %s is not an RFC 4122 variant", n)
}

// seedFrames returns valid frames of every kind, for tests and fuzzing.
func seedFrames(tb testing.TB) [][]byte {
	tb.Helper()
	var out [][]byte
	add := func(typ byte, body any, payload []byte) {
		b, err := appendFrame(nil, typ, 1, body, payload)
		require.NoError(tb, err)
		out = append(out, b)
	}
	msg, _ := (&outMessage{correlationID: newUUID(), appProps: Map{{Key: "IoThub-methodname", Value: "m"}}, data: []byte(`{"a":1}`), hasData: true}).encode()
	add(frameTypeAMQP, performative(descOpen, "c", "localhost", uint32(65536), uint16(255), uint32(120000)), nil)
	add(frameTypeAMQP, performative(descBegin, nil, uint32(0), uint32(2048), uint32(0xffffffff), uint32(255)), nil)
	add(frameTypeAMQP, performative(descAttach, "l", uint32(0), true, nil, uint8(0),
		performative(descSource, "/devices/d/methods/devicebound"), performative(descTarget, "t"), nil, nil, nil, nil, nil, nil,
		Map{{Key: Symbol("com.microsoft:api-version"), Value: "2021-04-12"}}), nil)
	add(frameTypeAMQP, performative(descFlow, uint32(0), uint32(10), uint32(0), uint32(10), uint32(0), uint32(0), uint32(100), nil, true, true), nil)
	add(frameTypeAMQP, performative(descTransfer, uint32(0), uint32(3), []byte{0, 0, 0, 3}, uint32(0), true, true), msg)
	add(frameTypeAMQP, performative(descDisposition, true, uint32(0), uint32(4), true, performative(descAccepted)), nil)
	add(frameTypeAMQP, performative(descDetach, uint32(0), true, errorValue(&amqpError{condition: condNotFound, description: "x",
		info: Map{{Key: Symbol("k"), Value: "v"}}})), nil)
	add(frameTypeAMQP, performative(descEnd), nil)
	add(frameTypeAMQP, performative(descClose, errorValue(&amqpError{condition: condDecodeError})), nil)
	add(frameTypeSASL, performative(descSASLInit, Symbol("PLAIN"), []byte("\x00u\x00p")), nil)
	add(frameTypeSASL, performative(descSASLMechanisms, []Symbol{"PLAIN"}), nil)
	out = append(out, []byte{0, 0, 0, 8, 2, 0, 0, 0}) // heartbeat
	return out
}

func TestDecodeFrames(t *testing.T) {
	for i, b := range seedFrames(t) {
		f, err := decodeFrame(b, MaxFrameSize)
		require.NoError(t, err, "seed %d", i)
		if a, ok := f.body.(*attach); ok {
			require.NotNil(t, a.source, "attach %+v: source", a)
			require.NotNil(t, a.target, "attach %+v: target", a)
			assert.Equal(t, "/devices/d/methods/devicebound", a.source.address, "attach source address")
			assert.NotEmpty(t, a.source.raw, "attach raw source")
			assert.Equal(t, "t", a.target.address, "attach target address")
			assert.Len(t, a.properties, 1, "attach properties")
			// The raw terminus re-decodes to the same source.
			v, rest, err := decodeValue(a.source.raw)
			assert.NoError(t, err, "raw source %v", v)
			assert.Empty(t, rest, "raw source %v: bytes left", v)
		}
		if tr, ok := f.body.(*transfer); ok {
			m, err := decodeMessage(f.payload)
			require.NoError(t, err, "transfer %+v: message", tr)
			assert.True(t, tr.more, "transfer %+v: more", tr)
			assert.True(t, tr.settled, "transfer %+v: settled", tr)
			assert.Equal(t, `{"a":1}`, string(m.data), "transfer message data")
		}
	}
}

// FuzzDecodeValue: no input may make the type decoder panic or allocate
// beyond what its length fields can justify (the race detector and the
// fuzzer's memory limit would catch runaway allocations).
func FuzzDecodeValue(f *testing.F) {
	for _, b := range seedFrames(f) {
		f.Add(b[8:])
	}
	for _, s := range [][]byte{
		{0x40}, {0xd0, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff}, {0xf0, 0, 0, 0, 5, 0, 0, 4, 0, 0x40},
		{0xe0, 5, 2, 0x00, 0x53, 0x24, 0x45}, {0xb1, 0, 0, 0, 2, 'h', 'i'},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, rest, err := decodeValue(b)
		if err != nil {
			require.ErrorIs(t, err, errDecode)
			return
		}
		require.LessOrEqual(t, len(rest), len(b), "rest longer than input")
		// Whatever decodes and can be encoded decodes again.
		if enc, err := appendValue(nil, v); err == nil {
			_, _, err := decodeValue(enc)
			require.NoError(t, err, "re-decoding %#v", v)
		}
		_, _ = decodeMessage(b)
	})
}

// FuzzDecodeFrame: a malformed frame is an error, never a panic.
func FuzzDecodeFrame(f *testing.F) {
	for _, b := range seedFrames(f) {
		f.Add(b)
	}
	f.Add([]byte{0, 0, 0, 12, 2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x7f, 0, 0, 0, 2, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decodeFrame(b, MaxFrameSize)
		if err != nil {
			require.True(t, errors.Is(err, errDecode) || errors.Is(err, errFraming),
				"error %v is neither a decode nor a framing error", err)
			return
		}
		if a, ok := fr.body.(*attach); ok {
			for _, term := range []*terminus{a.source, a.target} {
				if term != nil {
					_, _, err := decodeValue(term.raw)
					require.NoError(t, err, "raw terminus does not decode")
				}
			}
		}
		if fr.payload != nil {
			_, _ = decodeMessage(fr.payload)
		}
		// The same bytes read as a stream give the same result.
		_, err = readFrame(bytes.NewReader(b), MaxFrameSize)
		require.NoError(t, err, "readFrame fails where decodeFrame succeeded")
	})
}
