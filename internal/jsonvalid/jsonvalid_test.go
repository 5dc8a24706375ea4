package jsonvalid

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// seeds are the corpus FuzzValid starts from, and the cases TestValid
// compares with encoding/json.Valid.
var seeds = []string{
	``, ` `, `null`, `true`, `false`, `nul`, `nulll`, `tru`, `True`, `0`, `-0`, `01`, `-`, `1.`, `1.5`, `.5`,
	`1e5`, `1E+5`, `1e-5`, `1e`, `1e+`, `-1.25e10`, `123456789012345678901234567890`, `"a"`, `"`, `"\"`,
	`"\u00e9"`, `"\u00g9"`, `"\u00e"`, `"\x"`, `"\/\b\f\n\r\t\\\""`, "\"\x01\"", "\"\x7f\"", "\"\xff\xfe\"",
	`{}`, `[]`, `{ }`, `[ ]`, `{"a":1}`, `{"a":1,}`, `{"a" 1}`, `{a:1}`, `{"a":1,"b":[true,false,null]}`,
	`[1,2,3]`, `[1,]`, `[,1]`, `[1 2]`, `[`, `]`, `{`, `}`, `[}`, `{]`, `{"a":[}`, `[{"a":{}}]`,
	` {"a" : [ 1 , { "b" : "c" } ] } `, "\t\r\n[1]\n", `{"status":200,"payload":{"x":1}}`, `{"":""}`,
	`{"a":1}{"b":2}`, `[][]`, `1 2`, `"a" "b"`, `{"a":1 "b":2}`, `[1]]`, `{"a":{"b":{"c":[[[]]]}}}`,
}

func TestValid(t *testing.T) {
	for _, s := range seeds {
		assert.Equal(t, json.Valid([]byte(s)), Valid([]byte(s)), "%q", s)
	}
}

// TestValidStringWords puts each byte str treats apart at every place of
// a string long enough for its eight-byte steps.
func TestValidStringWords(t *testing.T) {
	for _, c := range []byte{'"', '\\', 0x00, 0x1f, 0x20, 0x7f, 0x80, 0xff, '!', '#', '[', ']'} {
		for i := range 24 {
			b := []byte(`"` + strings.Repeat("a", 24) + `"`)
			b[1+i] = c
			assert.Equal(t, json.Valid(b), Valid(b), "%q", b)
			e := append([]byte(nil), b...)
			if i < 23 {
				e[2+i] = 'n' // an escape when c is a backslash
				assert.Equal(t, json.Valid(e), Valid(e), "%q", e)
			}
		}
	}
}

func TestValidDepth(t *testing.T) {
	for _, n := range []int{maxDepth - 1, maxDepth, maxDepth + 1, 3 * maxDepth} {
		for _, open := range []string{"[", `{"a":`} {
			close := "]"
			if open != "[" {
				close = "}"
			}
			s := []byte(strings.Repeat(open, n) + "1" + strings.Repeat(close, n))
			assert.Equal(t, json.Valid(s), Valid(s), "%d deep %s", n, open)
		}
	}
}

// FuzzValid checks that Valid agrees with encoding/json.Valid.
func FuzzValid(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if want, got := json.Valid(b), Valid(b); want != got {
			t.Fatalf("Valid(%q) = %v, encoding/json.Valid %v", b, got, want)
		}
	})
}

// BenchmarkValid compares Valid with encoding/json.Valid on a method
// payload of about 100 bytes:
//
//	go test -run '^$' -bench Valid -benchmem ./internal/jsonvalid
func BenchmarkValid(b *testing.B) {
	p := []byte(`{"data":"` + strings.Repeat("x", 60) + `","n":[1,2.5,-3e4],"ok":true,"none":null,"s":"\u00e9\n"}`)
	b.Run("jsonvalid", func(b *testing.B) {
		b.SetBytes(int64(len(p)))
		for b.Loop() {
			if !Valid(p) {
				b.Fatal("not valid")
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(p)))
		for b.Loop() {
			if !json.Valid(p) {
				b.Fatal("not valid")
			}
		}
	})
}
