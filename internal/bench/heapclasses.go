package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"text/tabwriter"
)

// Heap size classes. What a process's heap costs in RSS is the pages its
// spans hold, not the bytes its live objects use: an object that lands in
// a size class where a connection attempt also makes many short-lived
// objects keeps a mostly free page in use. The heap profile shows the
// live bytes only; this report, from a heap dump (runtime/debug.WriteHeapDump),
// shows the pages each size class holds. It is how the MQTT device client's
// RSS over paho's was found to be in a few size classes (BENCHMARKS.md).

// pageSize is the unit the runtime's spans are made of.
const pageSize = 8192

// HeapClass is the live heap of one object size in a heap dump: its
// objects, their bytes, and the bytes of the pages holding them.
type HeapClass struct {
	Size    uint64
	Objects int
	Pages   int
}

// errHeapDump is wrapped by the errors of a malformed heap dump.
var errHeapDump = errors.New("bench: malformed heap dump")

// heapDumpReader reads the records of a heap dump (the format of
// runtime/heapdump.go, "go1.7 heap dump").
type heapDumpReader struct {
	r *bufio.Reader
}

func (d heapDumpReader) uvarint() (uint64, error) {
	var v uint64
	for shift := uint(0); shift < 64; shift += 7 {
		b, err := d.r.ReadByte()
		if err != nil {
			return 0, fmt.Errorf("%w: %v", errHeapDump, err)
		}
		v |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return v, nil
		}
	}
	return 0, fmt.Errorf("%w: a varint longer than 64 bits", errHeapDump)
}

func (d heapDumpReader) skip(n uint64) error {
	if _, err := io.CopyN(io.Discard, d.r, int64(min(n, 1<<40))); err != nil {
		return fmt.Errorf("%w: %v", errHeapDump, err)
	}
	return nil
}

// fields reads a record's fields, one per kind: 'n' a varint, 's' a
// string (a varint length and that many bytes, skipped).
func (d heapDumpReader) fields(kinds ...byte) error {
	for _, k := range kinds {
		v, err := d.uvarint()
		if err != nil {
			return err
		}
		if k == 's' {
			if err := d.skip(v); err != nil {
				return err
			}
		}
	}
	return nil
}

// heapClasses reads a heap dump up to the end of its objects and returns
// the live objects by size, with the pages they touch.
func heapClasses(r io.Reader) ([]HeapClass, error) {
	d := heapDumpReader{bufio.NewReaderSize(r, 1<<20)}
	hdr, err := d.r.ReadString('\n')
	if err != nil || hdr != "go1.7 heap dump\n" {
		return nil, fmt.Errorf("%w: no go1.7 header", errHeapDump)
	}
	type class struct {
		objects int
		pages   map[uint64]struct{}
	}
	by := map[uint64]*class{}
	for {
		tag, err := d.uvarint()
		if err != nil {
			return nil, err
		}
		switch tag {
		case 6: // params: big-endian, pointer size, arena start and end, arch, version, CPUs
			err = d.fields('n', 'n', 'n', 'n', 's', 's', 'n')
		case 3: // type: address, size, name, indirect
			err = d.fields('n', 'n', 's', 'n')
		case 8: // itab: address, type
			err = d.fields('n', 'n')
		case 1: // object: address, contents, pointer fields
			var addr, size uint64
			if addr, err = d.uvarint(); err != nil {
				return nil, err
			}
			if size, err = d.uvarint(); err != nil {
				return nil, err
			}
			if err := d.skip(size); err != nil {
				return nil, err
			}
			for {
				kind, err := d.uvarint()
				if err != nil {
					return nil, err
				}
				if kind == 0 {
					break
				}
				if _, err := d.uvarint(); err != nil { // the field's offset
					return nil, err
				}
			}
			if size == 0 || addr+size < addr {
				return nil, fmt.Errorf("%w: an object of %d bytes at %#x", errHeapDump, size, addr)
			}
			c := by[size]
			if c == nil {
				c = &class{pages: map[uint64]struct{}{}}
				by[size] = c
			}
			c.objects++
			for p := addr / pageSize; p <= (addr+size-1)/pageSize; p++ {
				c.pages[p] = struct{}{}
			}
		default: // the objects end where the goroutines (or anything else) begin
			out := make([]HeapClass, 0, len(by))
			for size, c := range by {
				out = append(out, HeapClass{Size: size, Objects: c.objects, Pages: len(c.pages)})
			}
			slices.SortFunc(out, func(a, b HeapClass) int { return int(a.Size) - int(b.Size) })
			return out, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// writeHeapClasses writes a heap dump of this process to a temporary file,
// reads its size classes back, and writes them to file as a table, per
// device (perDevice, or per process if 0). A diagnostic: it fails
// silently, like writeHeapProfile.
func writeHeapClasses(file string, perDevice int) {
	tmp, err := os.CreateTemp("", "iothub-heapdump-*")
	if err != nil {
		return
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	// A dump lists every object not yet found dead: collect first, or what
	// the profiles just written left behind would count as live.
	runtime.GC()
	debug.WriteHeapDump(tmp.Fd())
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return
	}
	classes, err := heapClasses(tmp)
	if err != nil {
		return
	}
	out, err := os.Create(file)
	if err != nil {
		return
	}
	defer out.Close()
	writeHeapClassTable(out, classes, perDevice)
}

// writeHeapClassTable writes classes as a table: objects, their bytes and
// the bytes of the pages holding them, per device, and how full those
// pages are.
func writeHeapClassTable(w io.Writer, classes []HeapClass, perDevice int) {
	n := float64(max(perDevice, 1))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "size\tobjects/device\tlive B/device\tpage B/device\tpages used\t\n")
	var live, pages float64
	for _, c := range classes {
		l, p := float64(c.Objects)*float64(c.Size), float64(c.Pages)*pageSize
		live, pages = live+l, pages+p
		fmt.Fprintf(tw, "%d\t%.2f\t%.1f\t%.1f\t%.2f\t\n", c.Size, float64(c.Objects)/n, l/n, p/n, l/p)
	}
	fmt.Fprintf(tw, "all\t\t%.1f\t%.1f\t%.2f\t\n", live/n, pages/n, live/max(pages, 1))
	tw.Flush()
}
