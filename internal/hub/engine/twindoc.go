package engine

// The twin document model: a JSON tree with IoT Hub's rules, merge patches
// with metadata, and rendering.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"
)

// Twin document limits (IoT Hub device twin guide, "Tags and properties
// format" and "Twin size"; see docs/hub-fidelity.md).
const (
	MaxTagsSize       = 8 * 1024  // tags, excluding read-only elements
	MaxPropertiesSize = 32 * 1024 // desired, and reported, each
	MaxTwinDepth      = 10        // nesting of objects below the section root
	MaxTwinKeyLength  = 1024      // bytes of a key
	MaxTwinStringLen  = 4 * 1024  // bytes of a string value
	// MaxTwinBodySize bounds any twin request body before it is parsed.
	MaxTwinBodySize = 128 * 1024
)

// Integer values outside ±2^53-1 lose precision in the service (it keeps
// numbers as doubles or longs); IoT Hub's documented range for integers.
const (
	minTwinInt = -4503599627370496
	maxTwinInt = 4503599627370495
)

// tnode is one node of a twin section: an object (kids != nil) or a leaf
// value (string, json.Number, bool or []any).
type tnode struct {
	val  any
	kids map[string]*tnode
	at   time.Time // $lastUpdated
	ver  int64     // $lastUpdatedVersion (desired only)
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

// checkTwinKey applies IoT Hub's key rules: 1 to 1,024 bytes of UTF-8,
// no control characters (C0, C1), no '.', '$' or space.
func checkTwinKey(k string) error {
	if k == "" {
		return errors.New("a property name is empty")
	}
	if len(k) > MaxTwinKeyLength {
		return fmt.Errorf("the property name %q… is longer than %d bytes", clipKey(k), MaxTwinKeyLength)
	}
	if !utf8.ValidString(k) {
		return fmt.Errorf("the property name %q is not valid UTF-8", clipKey(k))
	}
	for _, r := range k {
		switch {
		case r == '.' || r == '$' || r == ' ':
			return fmt.Errorf("the property name %q contains %q, which is not allowed", clipKey(k), r)
		case r < 0x20 || (r >= 0x7f && r <= 0x9f):
			return fmt.Errorf("the property name %q contains a control character", clipKey(k))
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

// checkTwinValue validates a decoded value at depth (1 = a property of the
// section root). allowNull permits null object members (a patch deletes
// with them); nulls inside arrays are never allowed.
func checkTwinValue(path string, v any, depth int, allowNull bool) error {
	switch v := v.(type) {
	case nil:
		if !allowNull {
			return fmt.Errorf("%s is null, which is only allowed in a patch", path)
		}
	case string:
		if len(v) > MaxTwinStringLen {
			return fmt.Errorf("the string value of %s is %d bytes, more than %d", path, len(v), MaxTwinStringLen)
		}
	case bool:
	case json.Number:
		if i, err := v.Int64(); err == nil {
			if i < minTwinInt || i > maxTwinInt {
				return fmt.Errorf("the integer value of %s is outside [%d, %d]", path, int64(minTwinInt), int64(maxTwinInt))
			}
		} else if _, err := v.Float64(); err != nil {
			return fmt.Errorf("the number value of %s is out of range", path)
		}
	case []any:
		for i, x := range v {
			if x == nil {
				return fmt.Errorf("%s[%d] is null: arrays cannot contain null", path, i)
			}
			if err := checkTwinValue(fmt.Sprintf("%s[%d]", path, i), x, depth, false); err != nil {
				return err
			}
		}
	case map[string]any:
		if depth > MaxTwinDepth {
			return fmt.Errorf("%s nests objects deeper than %d levels", path, MaxTwinDepth)
		}
		for k, x := range v {
			if err := checkTwinKey(k); err != nil {
				return err
			}
			if err := checkTwinValue(path+"."+k, x, depth+1, allowNull); err != nil {
				return err
			}
		}
	}
	return nil
}

// sectionPatch validates a patch or replacement for a section (tags,
// desired, reported): a JSON object whose members follow the key and value
// rules. "$version" and "$metadata" at its root are read-only and dropped,
// so a twin read from the service can be sent back as it is.
func sectionPatch(name string, v any, allowNull bool) (map[string]any, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s must be a JSON object", name)
	}
	delete(m, "$version")
	delete(m, "$metadata")
	for k, x := range m {
		if err := checkTwinKey(k); err != nil {
			return nil, err
		}
		if err := checkTwinValue(name+"."+k, x, 2, allowNull); err != nil {
			return nil, err
		}
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

// size is the node's compact JSON length, the measure of IoT Hub's size
// limits (read-only elements excluded).
func (n *tnode) size() int {
	b, _ := json.Marshal(n.value())
	return len(b)
}

// metadata renders the node's $metadata: $lastUpdated (and, when withVer,
// $lastUpdatedVersion), and a member per child object or leaf.
func (n *tnode) metadata(withVer bool) map[string]any {
	m := map[string]any{"$lastUpdated": formatTime(n.at)}
	if withVer {
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
func marshalSorted(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only decoded JSON values reach here.
		panic("iothub: twin value does not encode: " + err.Error())
	}
	return b
}
