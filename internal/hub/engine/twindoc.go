package engine

// The twin document model: a JSON tree with IoT Hub's rules, merge patches
// with metadata, and rendering.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// Twin document limits, from the IoT Hub device twin guide
// (MicrosoftDocs/azure-docs articles/iot-hub/iot-hub-devguide-device-twins.md,
// "Tags and properties format" and "Device twin size"); docs/hub-fidelity.md
// section 7 lists each rule with its source.
const (
	// MaxTagsSize bounds tags, measured by twinSize.
	MaxTagsSize = 8 * 1024
	// MaxPropertiesSize bounds desired, and reported, each, measured by
	// twinSize ($version and $metadata excluded).
	MaxPropertiesSize = 32 * 1024
	// MaxTwinDepth is how deeply objects may nest in a section: a member
	// of the section's root is at depth 1, and an object may be the value
	// of a member at depth 1 to 10. The guide's valid example nests ten
	// objects ("one" … "ten") under "tags", the tenth holding a leaf; an
	// eleventh object is refused (edgeHub's ReportedPropertiesValidator,
	// which copies IoT Hub's rule, counts the same way).
	MaxTwinDepth = 10
	// MaxTwinKeyLength bounds a key, in bytes of UTF-8.
	MaxTwinKeyLength = 1024
	// MaxTwinStringLen bounds a string value, in bytes of UTF-8 (IoT Hub:
	// "Property or Tag value should be maximum 4096 bytes").
	MaxTwinStringLen = 4 * 1024
	// MaxTwinBodySize bounds any twin request body before it is parsed.
	// It is not an IoT Hub rule: it only keeps the hub's memory bounded.
	// It is generous because the .NET service SDK sends the whole twin it
	// read back, reported properties and $metadata included
	// (azure-iot-sdk-csharp shared/src/TwinJsonConverter.cs), and $metadata
	// can be several times larger than the properties it describes.
	MaxTwinBodySize = 512 * 1024
)

// Integers must lie in [-2^52, 2^52-1] (device twin guide, "Values").
const (
	minTwinInt = -4503599627370496
	maxTwinInt = 4503599627370495
)

// tnode is one node of a twin section: an object (kids != nil) or a leaf
// value (string, json.Number, bool or []any).
type tnode struct {
	val  any
	kids map[string]*tnode
	at   time.Time // $lastUpdated; zero renders as 0001-01-01T00:00:00Z
	ver  int64     // $lastUpdatedVersion (desired only); 0: never written
}

func newObject(at time.Time, ver int64) *tnode {
	return &tnode{kids: map[string]*tnode{}, at: at, ver: ver}
}

// decodeTwinJSON parses b as one JSON value, numbers kept as json.Number,
// and refuses trailing data.
func decodeTwinJSON(b []byte) (any, error) {
	if len(b) > MaxTwinBodySize {
		return nil, fmt.Errorf("the document is %d bytes, more than %d", len(b), MaxTwinBodySize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("the document is not valid JSON: %s", jsonErrText(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("the document is not valid JSON: data after the value")
	}
	return v, nil
}

func jsonErrText(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s at offset %d", se.Error(), se.Offset)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "unexpected end of input"
	}
	return err.Error()
}

// isControl reports whether r is a control character of the C0 or C1
// set (DEL included, as .NET's char.IsControl counts it).
func isControl(r rune) bool { return r < 0x20 || (r >= 0x7f && r <= 0x9f) }

// checkTwinKey applies IoT Hub's key rules: 1 to 1,024 bytes of UTF-8,
// no control characters (C0, C1), no '.', '$' or space.
func checkTwinKey(path, k string) error {
	if k == "" {
		return fmt.Errorf("%s has a member with an empty name", path)
	}
	if len(k) > MaxTwinKeyLength {
		return fmt.Errorf("the property name %q… in %s is %d bytes, more than %d", clipKey(k), path, len(k), MaxTwinKeyLength)
	}
	if !utf8.ValidString(k) {
		return fmt.Errorf("the property name %q in %s is not valid UTF-8", clipKey(k), path)
	}
	for _, r := range k {
		switch {
		case r == '.' || r == '$' || r == ' ':
			return fmt.Errorf("the property name %q in %s contains %q: names cannot contain '.', '$', space or control characters", clipKey(k), path, r)
		case isControl(r):
			return fmt.Errorf("the property name %q in %s contains a control character: names cannot contain '.', '$', space or control characters", clipKey(k), path)
		}
	}
	return nil
}

func clipKey(k string) string {
	if len(k) > 40 {
		k = k[:40]
		for !utf8.ValidString(k) && len(k) > 0 {
			k = k[:len(k)-1]
		}
	}
	return k
}

// isIntegerLiteral reports whether a JSON number has no fraction and no
// exponent: IoT Hub's integer range applies to it.
func isIntegerLiteral(n json.Number) bool {
	return !strings.ContainsAny(string(n), ".eE")
}

// checkTwinValue validates a decoded value v, the value of a member at
// depth (1 = a member of the section's root; see MaxTwinDepth).
// allowNull permits null object members (a patch deletes with them);
// nulls inside arrays are never allowed.
func checkTwinValue(path string, v any, depth int, allowNull bool) error {
	switch v := v.(type) {
	case nil:
		if !allowNull {
			return fmt.Errorf("%s is null, which only a patch may use (to delete)", path)
		}
	case string:
		if len(v) > MaxTwinStringLen {
			return fmt.Errorf("the string value of %s is %d bytes; a property or tag value can be at most %d bytes", path, len(v), MaxTwinStringLen)
		}
	case bool:
	case json.Number:
		if isIntegerLiteral(v) {
			i, err := v.Int64()
			if err != nil || i < minTwinInt || i > maxTwinInt {
				return fmt.Errorf("the integer value of %s is outside [%d, %d]", path, int64(minTwinInt), int64(maxTwinInt))
			}
		} else if _, err := v.Float64(); err != nil {
			return fmt.Errorf("the number value of %s is out of range", path)
		}
	case []any:
		for i, x := range v {
			p := fmt.Sprintf("%s[%d]", path, i)
			if x == nil {
				return fmt.Errorf("%s is null: arrays cannot contain null", p)
			}
			// An array is not a level: an object in it counts as the
			// array's member does.
			if err := checkTwinValue(p, x, depth, false); err != nil {
				return err
			}
		}
	case map[string]any:
		if depth > MaxTwinDepth {
			return fmt.Errorf("%s nests objects more than %d levels deep", path, MaxTwinDepth)
		}
		for k, x := range v {
			if err := checkTwinKey(path, k); err != nil {
				return err
			}
			if err := checkTwinValue(path+"."+clipKey(k), x, depth+1, allowNull); err != nil {
				return err
			}
		}
	}
	return nil
}

// sectionPatch validates a patch or replacement for a section (tags,
// desired, reported): a JSON object whose members follow the key and
// value rules. With dropReadOnly, "$version" and "$metadata" at its root
// are dropped, so that a twin read from the service can be sent back as
// it is (the .NET service SDK does so); without it (a device's reported
// patch) they break the key rules like any other '$' name.
func sectionPatch(name string, v any, allowNull, dropReadOnly bool) (map[string]any, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s must be a JSON object", name)
	}
	if dropReadOnly {
		delete(m, "$version")
		delete(m, "$metadata")
	}
	if err := checkTwinValue(name, m, 0, allowNull); err != nil {
		return nil, err
	}
	return m, nil
}

// merge applies a JSON merge patch to object node n, stamping every node it
// touches (n included) with at and ver.
func (n *tnode) merge(patch map[string]any, at time.Time, ver int64) {
	n.at, n.ver = at, ver
	for k, v := range patch {
		switch v := v.(type) {
		case nil:
			delete(n.kids, k)
		case map[string]any:
			child := n.kids[k]
			if child == nil || child.kids == nil {
				child = newObject(at, ver)
				n.kids[k] = child
			}
			child.merge(v, at, ver)
		default:
			n.kids[k] = &tnode{val: v, at: at, ver: ver}
		}
	}
}

// value returns the node as a plain JSON value (map, slice, …).
func (n *tnode) value() any {
	if n.kids == nil {
		return n.val
	}
	m := make(map[string]any, len(n.kids))
	for k, c := range n.kids {
		m[k] = c.value()
	}
	return m
}

// size is the node's size as IoT Hub measures it for its limits (device
// twin guide, "Device twin size"): for each property the length of its key
// plus the length of its value, where strings count as UTF-8 without
// control characters, numbers as 8 bytes, booleans as 4 and objects as
// the sum of their properties. The guide says strings are "considered as
// UTF8-encoded strings" and counted by "characters"; we count UTF-8 bytes,
// the unit of IoT Hub's own refusal ("size should be less than 32768
// bytes"). It does not say how arrays count: their elements add up like
// an object's values.
func (n *tnode) size() int {
	if n.kids == nil {
		return valueSize(n.val)
	}
	total := 0
	for k, c := range n.kids {
		total += stringSize(k) + c.size()
	}
	return total
}

// valueSize is size for a decoded JSON value.
func valueSize(v any) int {
	switch v := v.(type) {
	case string:
		return stringSize(v)
	case json.Number:
		return 8
	case bool:
		return 4
	case []any:
		total := 0
		for _, x := range v {
			total += valueSize(x)
		}
		return total
	case map[string]any:
		total := 0
		for k, x := range v {
			total += stringSize(k) + valueSize(x)
		}
		return total
	}
	return 0
}

// stringSize counts the UTF-8 bytes of s, control characters excluded.
func stringSize(s string) int {
	n := 0
	for _, r := range s {
		if !isControl(r) {
			n += utf8.RuneLen(r)
		}
	}
	return n
}

// metadataTime renders a $lastUpdated time; the zero time is IoT Hub's
// "0001-01-01T00:00:00Z" (as a new module twin shows it).
func metadataTime(t time.Time) string {
	if t.IsZero() {
		return "0001-01-01T00:00:00Z"
	}
	return formatTime(t)
}

// metadata renders the node's $metadata: $lastUpdated, $lastUpdatedVersion
// when withVer and the node was written by a desired update (a new twin's
// desired root has none), and a member per child object or leaf.
func (n *tnode) metadata(withVer bool) map[string]any {
	m := map[string]any{"$lastUpdated": metadataTime(n.at)}
	if withVer && n.ver > 0 {
		m["$lastUpdatedVersion"] = n.ver
	}
	for k, c := range n.kids {
		m[k] = c.metadata(withVer)
	}
	return m
}

// clone deep-copies a node.
func (n *tnode) clone() *tnode {
	c := *n
	if n.kids != nil {
		c.kids = make(map[string]*tnode, len(n.kids))
		for k, x := range n.kids {
			c.kids[k] = x.clone()
		}
	}
	return &c
}

// twinSection is desired or reported: a root object and its $version.
type twinSection struct {
	root    *tnode
	version int64
}

// render returns the section's JSON object: its properties, then, when
// meta, $metadata, and $version.
func (s *twinSection) render(meta, withVer bool) map[string]any {
	m := s.root.value().(map[string]any)
	if meta {
		m["$metadata"] = s.root.metadata(withVer)
	}
	m["$version"] = s.version
	return m
}

// marshalSorted encodes v; encoding/json sorts map keys, so equal twins
// render identically.
//
// '<', '>' and '&' are written as they are, as IoT Hub writes them, not as
// encoding/json's \u003c escapes.
func marshalSorted(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only decoded JSON values reach here.
		panic("iothub: twin value does not encode: " + err.Error())
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}
