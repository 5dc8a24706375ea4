// Package twinrules holds the device twin document rules that the device
// and service clients check before they send a patch, so that a mistake is
// reported early, with the offending property named. The local hub
// enforces the same rules with its own code (internal/hub/engine), on
// purpose: it is the independent oracle the clients are tested against.
//
// The rules are IoT Hub's (device twin guide, "Tags and properties format"
// and "Twin size"): property names of 1 to 1,024 bytes of UTF-8 without
// '.', '$', spaces or control characters; string values of at most 4 KB;
// objects nested at most 10 levels below a section's root; no null inside
// arrays.
package twinrules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// The limits.
const (
	MaxDepth     = 10       // levels of objects below a section's root
	MaxKeyLen    = 1024     // bytes of a property name
	MaxStringLen = 4 * 1024 // bytes of a string value
)

// CheckSection checks the members of a section object (tags, desired or
// reported properties, or a patch of one). Errors name the property, never
// a value.
func CheckSection(m map[string]any) error { return checkObject(m, 0) }

// checkObject checks an object's members; depth is the number of objects
// it is nested in below the section's root (0 for the root).
func checkObject(m map[string]any, depth int) error {
	if depth > MaxDepth {
		return fmt.Errorf("objects nest deeper than %d levels", MaxDepth)
	}
	for k, v := range m {
		if err := CheckKey(k); err != nil {
			return err
		}
		if err := checkValue(k, v, depth); err != nil {
			return err
		}
	}
	return nil
}

func checkValue(key string, v any, depth int) error {
	switch v := v.(type) {
	case string:
		if len(v) > MaxStringLen {
			return fmt.Errorf("the value of %q is a string of %d bytes; the limit is %d", Clip(key), len(v), MaxStringLen)
		}
	case []any:
		for _, x := range v {
			if x == nil {
				return fmt.Errorf("the array value of %q holds null, which arrays cannot", Clip(key))
			}
			if err := checkValue(key, x, depth); err != nil {
				return err
			}
		}
	case map[string]any:
		return checkObject(v, depth+1)
	}
	return nil
}

// CheckKey applies the property name rules.
func CheckKey(k string) error {
	switch {
	case k == "":
		return errors.New("a property name is empty")
	case len(k) > MaxKeyLen:
		return fmt.Errorf("the property name %q is longer than %d bytes", Clip(k), MaxKeyLen)
	case !utf8.ValidString(k):
		return fmt.Errorf("the property name %q is not valid UTF-8", Clip(k))
	}
	for _, r := range k {
		switch {
		case r == '.' || r == '$' || r == ' ':
			return fmt.Errorf("the property name %q contains %q, which is not allowed", Clip(k), r)
		case isControl(r):
			return fmt.Errorf("the property name %q contains a control character", Clip(k))
		}
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || (r >= 0x7f && r <= 0x9f) }

// Clip shortens a name echoed in an error to 40 bytes, keeping it valid
// UTF-8.
func Clip(s string) string {
	if len(s) <= 40 {
		return s
	}
	s = s[:40]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

// Size measures a value as IoT Hub measures twin sections: the UTF-8 bytes
// of every key and string value (control characters not counted), 8 per
// number, 4 per boolean. Null members count nothing, since they delete.
func Size(v any) int {
	switch v := v.(type) {
	case string:
		n := 0
		for _, r := range v {
			if !isControl(r) {
				n += utf8.RuneLen(r)
			}
		}
		return n
	case json.Number, float64, int, int64:
		return 8
	case bool:
		return 4
	case []any:
		n := 0
		for _, x := range v {
			n += Size(x)
		}
		return n
	case map[string]any:
		n := 0
		for k, x := range v {
			if x != nil {
				n += Size(k) + Size(x)
			}
		}
		return n
	}
	return 0
}

// Decode decodes one JSON value into v, numbers as json.Number, and
// refuses data after it.
func Decode(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("data after the JSON value")
	}
	return nil
}
