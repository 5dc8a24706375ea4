package twinrules

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func nest(levels int) map[string]any {
	m := map[string]any{"leaf": 1}
	for i := 1; i < levels; i++ {
		m = map[string]any{"n": m}
	}
	return m
}

func TestCheckSection(t *testing.T) {
	ok := []map[string]any{
		{},
		{"a": 1, "b": "x", "c": true, "d": []any{1, "y", map[string]any{"e": false}}, "f": nil},
		{"k": strings.Repeat("x", MaxStringLen)},
		{strings.Repeat("k", MaxKeyLen): 1},
		{"ünïcode-ключ": 1},
		{"top": nest(MaxDepth)}, // the guide's example: ten levels below the root
	}
	for i, m := range ok {
		assert.NoError(t, CheckSection(m), "case %d", i)
	}
	for name, m := range map[string]map[string]any{
		"empty key":      {"": 1},
		"dot":            {"a.b": 1},
		"dollar":         {"$a": 1},
		"space":          {"a b": 1},
		"C0":             {"a\x00": 1},
		"C1":             {"a\u0085": 1},
		"DEL":            {"a\x7f": 1},
		"bad UTF-8":      {"a\xff": 1},
		"long key":       {strings.Repeat("k", MaxKeyLen+1): 1},
		"long string":    {"k": strings.Repeat("x", MaxStringLen+1)},
		"null in array":  {"k": []any{1, nil}},
		"nested bad key": {"a": map[string]any{"b": map[string]any{"c.d": 1}}},
		"in array":       {"a": []any{map[string]any{"$x": 1}}},
		"too deep":       {"top": nest(MaxDepth + 1)},
	} {
		err := CheckSection(m)
		assert.Error(t, err, name)
	}
	// Errors name the property, never the value.
	err := CheckSection(map[string]any{"k": strings.Repeat("secret", 1000)})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"k"`)
	assert.NotContains(t, err.Error(), "secret")
}

func TestSize(t *testing.T) {
	var v any
	require.NoError(t, Decode([]byte(`{"ab":"xyz","n":12345678901,"b":true,"arr":[1,"é"],"o":{"k":false},"gone":null}`), &v))
	// ab 2 + xyz 3; n 1 + 8; b 1 + 4; arr 3 + 8 + 2; o 1 + (k 1 + 4); gone nothing.
	assert.Equal(t, 2+3+1+8+1+4+3+8+2+1+1+4, Size(v))
	assert.Equal(t, 3, Size("a\nbc"), "control characters do not count")
}

func TestDecode(t *testing.T) {
	var v any
	require.NoError(t, Decode([]byte(` {"n": 1.50} `), &v))
	assert.Equal(t, json.Number("1.50"), v.(map[string]any)["n"], "numbers stay as sent")
	assert.Error(t, Decode([]byte(`{} {}`), &v), "data after the value")
	assert.Error(t, Decode([]byte(`{`), &v))
	assert.Equal(t, "abc", Clip("abc"))
	assert.Equal(t, strings.Repeat("é", 20)+"…", Clip(strings.Repeat("é", 30)))
	assert.Equal(t, strings.Repeat("x", 39)+"…", Clip(strings.Repeat("x", 39)+"é"+"yyyy"), "a cut rune is dropped")
}
