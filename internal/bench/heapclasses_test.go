package bench

import (
	"bytes"
	"encoding/binary"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A heap dump of this process shows the objects it keeps, in their size
// class, with the pages that hold them.
func TestHeapClasses(t *testing.T) {
	const n = 3000
	keep := make([]*[200]byte, n) // 200 bytes: the 208-byte class
	for i := range keep {
		keep[i] = new([200]byte)
		keep[i][0] = byte(i)
	}
	f, err := os.CreateTemp(t.TempDir(), "dump")
	require.NoError(t, err)
	defer f.Close()
	runtime.GC()
	debug.WriteHeapDump(f.Fd())
	runtime.KeepAlive(keep)
	_, err = f.Seek(0, 0)
	require.NoError(t, err)
	classes, err := heapClasses(f)
	require.NoError(t, err)
	var c208 HeapClass
	for _, c := range classes {
		if c.Size == 208 {
			c208 = c
		}
	}
	require.GreaterOrEqual(t, c208.Objects, n, "objects of 208 bytes: %+v", classes)
	// 39 objects of 208 bytes fill a page; the pages hold at least that.
	assert.GreaterOrEqual(t, c208.Pages, n/39, "pages of the 208-byte class: %+v", c208)
	assert.LessOrEqual(t, c208.Pages, c208.Objects, "pages of the 208-byte class: %+v", c208)

	var out strings.Builder
	writeHeapClassTable(&out, classes, n)
	assert.Regexp(t, `(?m)^ +208 +1\.[0-9]{2} +2[0-9]{2}\.[0-9] +[0-9.]+ +[0-9.]+ *$`, out.String(), "the 208-byte row, per device")
}

// A malformed dump is an error, never a panic or a hang.
func TestHeapClassesMalformed(t *testing.T) {
	for name, dump := range map[string][]byte{
		"empty":           nil,
		"no header":       []byte("go1.6 heap dump\n\x00"),
		"cut varint":      []byte("go1.7 heap dump\n\x01\x80"),
		"cut object":      []byte("go1.7 heap dump\n\x01\x10\x40ab"),
		"zero size":       []byte("go1.7 heap dump\n\x01\x10\x00\x00\x04"),
		"long varint":     append([]byte("go1.7 heap dump\n"), bytes.Repeat([]byte{0xff}, 12)...),
		"cut string":      []byte("go1.7 heap dump\n\x03\x01\x02\x7fabc"),
		"wrapping object": append([]byte("go1.7 heap dump\n\x01"), binary.AppendUvarint(binary.AppendUvarint(nil, ^uint64(0)-1), 8)...),
	} {
		_, err := heapClasses(bytes.NewReader(dump))
		assert.ErrorIs(t, err, errHeapDump, name)
	}
}

func FuzzHeapClasses(f *testing.F) {
	f.Add([]byte("go1.7 heap dump\n\x01\x10\x02ab\x01\x00\x00\x04"))
	f.Add([]byte("go1.7 heap dump\n\x06\x00\x08\x01\x02\x05amd64\x02go\x02\x04"))
	f.Add([]byte("go1.7 heap dump\n\x03\x01\x02\x03abc\x01\x08\x01\x02\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		classes, err := heapClasses(bytes.NewReader(b))
		if err != nil {
			require.ErrorIs(t, err, errHeapDump)
			return
		}
		for _, c := range classes {
			require.Positive(t, c.Size)
			require.LessOrEqual(t, c.Pages, c.Objects*int(c.Size/pageSize+2))
		}
	})
}
