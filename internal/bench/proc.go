package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"
)

// The fleet protocol: the parent writes a FleetSpec as one JSON line on
// the fleet's stdin; the fleet connects its devices and writes a
// "connected" fleetMsg. Then, for every "stats" line it reads, it writes a
// "stats" fleetMsg (its CPU time so far and its memory); on "close" or end
// of input it disconnects, writes "closed" and exits. A "twin" line runs
// the twin phase, and a "twin-step" line one more update (see TwinSpec).
// Go fleets are "iothub bench --fleet" (RunFleet); Node fleets are
// conformance/bench_device.js.

// RunFleet serves the fleet protocol on in and out: it is the body of
// "iothub bench --fleet".
func RunFleet(in io.Reader, out io.Writer) error {
	br := bufio.NewReaderSize(in, 1<<20)
	line, err := br.ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return fmt.Errorf("bench: reading the fleet spec: %w", err)
	}
	var spec FleetSpec
	if err := json.Unmarshal(line, &spec); err != nil {
		return fmt.Errorf("bench: fleet spec: %w", err)
	}
	line = nil
	if spec.MemProfile != "" {
		runtime.MemProfileRate = 4096 // set before the devices allocate: a finer profile than the default 512 KB
	}
	enc := json.NewEncoder(out)
	f, msg := startGoFleet(context.Background(), spec)
	spec.ConnStrings = nil
	if spec.CPUProfile != "" {
		if pf, err := os.Create(spec.CPUProfile); err == nil {
			if pprof.StartCPUProfile(pf) == nil {
				defer func() {
					pprof.StopCPUProfile()
					pf.Close()
				}()
			}
		}
	}
	if err := enc.Encode(msg); err != nil {
		f.close()
		return err
	}
	for {
		cmd, err := br.ReadString('\n')
		cmd = strings.TrimSpace(cmd)
		if cmd == "stats" {
			m := sampleMem()
			if spec.MemProfile != "" {
				writeHeapProfile(spec.MemProfile, msg.Connected)
			}
			if err := enc.Encode(fleetMsg{Type: "stats", CPUSeconds: cpuSeconds(), Mem: &m}); err != nil {
				break
			}
			continue
		}
		if cmd == "gc" {
			if err := enc.Encode(gcMsg()); err != nil {
				break
			}
			continue
		}
		if cmd == "cut" {
			if err := enc.Encode(f.mux.cut(10*time.Minute, f.sdk)); err != nil {
				break
			}
			continue
		}
		if cmd == "twin-step" {
			if err := serveTwinStep(f, enc); err != nil {
				break
			}
			continue
		}
		if arg, ok := strings.CutPrefix(cmd, "twin "); ok {
			if err := serveTwin(f, arg, enc); err != nil {
				break
			}
			continue
		}
		if cmd == "close" || err != nil {
			break
		}
	}
	f.close()
	return enc.Encode(fleetMsg{Type: "closed"})
}

// writeHeapProfile writes this process's heap profile to file, and to
// file + ".txt" as text, which ends with the runtime's MemStats (the
// space free inside spans in use, HeapInuse − HeapAlloc, among them), and
// the pages each object size holds, per device of the fleet's devices, to
// file + ".classes.txt" (writeHeapClasses). A profile is a diagnostic:
// failing to write one does not fail the fleet.
func writeHeapProfile(file string, devices int) {
	for debug, name := range []string{file, file + ".txt"} {
		f, err := os.Create(name)
		if err != nil {
			return
		}
		_ = pprof.Lookup("heap").WriteTo(f, debug)
		f.Close()
	}
	writeHeapClasses(file+".classes.txt", devices)
}

// fleet is the parent's handle on a population of devices.
type fleet interface {
	// report is the "connected" message.
	report() fleetMsg
	// stats asks for CPU time and memory (after forced collections).
	stats() (fleetMsg, error)
	// gc asks for CPU time and the collector's counters, forcing nothing.
	gc() (fleetMsg, error)
	// pid is the fleet's process, 0 when it runs in this process.
	pid() int
	// twin runs the twin phase on the fleet's first device; twinStep
	// then makes one more update and returns its round trip.
	twin(ctx context.Context, spec TwinSpec) (window, error)
	twinStep(ctx context.Context) (time.Duration, error)
	close() error
}

// localFleet runs a Go fleet in this process (--inproc). Its memory and
// CPU numbers are the whole process's, hub and invoker included.
type localFleet struct {
	f   *goFleet
	msg fleetMsg
}

func startLocalFleet(ctx context.Context, spec FleetSpec) (fleet, error) {
	f, msg := startGoFleet(ctx, spec)
	return &localFleet{f: f, msg: msg}, nil
}

func (l *localFleet) report() fleetMsg { return l.msg }
func (l *localFleet) pid() int         { return 0 }
func (l *localFleet) stats() (fleetMsg, error) {
	m := sampleMem()
	return fleetMsg{Type: "stats", CPUSeconds: cpuSeconds(), Mem: &m}, nil
}
func (l *localFleet) gc() (fleetMsg, error) { return gcMsg(), nil }
func (l *localFleet) close() error          { l.f.close(); return nil }
func (l *localFleet) cut() (fleetMsg, error) {
	return l.f.mux.cut(10*time.Minute, l.f.sdk), nil
}

// procFleet is a fleet in a child process.
type procFleet struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan []byte
	stderr *tailBuffer
	msg    fleetMsg
	done   chan struct{}
}

// startProcFleet runs argv with spec on its stdin and waits (up to
// timeout) for the fleet to report its devices connected.
func startProcFleet(ctx context.Context, argv []string, env []string, spec FleetSpec, timeout time.Duration) (fleet, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p := &procFleet{cmd: cmd, stdin: stdin, lines: make(chan []byte, 16), stderr: &tailBuffer{max: 8 << 10}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: starting %s: %w", argv[0], err)
	}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			b := append([]byte(nil), sc.Bytes()...)
			if len(b) == 0 || b[0] != '{' {
				continue // not a protocol line (e.g. a Node warning)
			}
			p.lines <- b
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	b, err := json.Marshal(spec)
	if err != nil {
		p.kill()
		return nil, err
	}
	if _, err := p.stdin.Write(append(b, '\n')); err != nil {
		p.kill()
		return nil, fmt.Errorf("bench: writing the fleet spec: %w (%s)", err, p.stderr.String())
	}
	m, err := p.read(ctx, "connected", timeout)
	if err != nil {
		p.kill()
		return nil, err
	}
	p.msg = m
	return p, nil
}

func (p *procFleet) read(ctx context.Context, want string, timeout time.Duration) (fleetMsg, error) {
	return p.readOneOf(ctx, timeout, want)
}

// readOneOf returns the next message whose type is one of wants.
func (p *procFleet) readOneOf(ctx context.Context, timeout time.Duration, wants ...string) (fleetMsg, error) {
	want := strings.Join(wants, `" or "`)
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case b, ok := <-p.lines:
			if !ok {
				<-p.done
				return fleetMsg{}, fmt.Errorf("bench: the fleet process ended (%v) before %q: %s", p.cmd.ProcessState, want, p.stderr.String())
			}
			var m fleetMsg
			if err := json.Unmarshal(b, &m); err != nil {
				return fleetMsg{}, fmt.Errorf("bench: fleet said %q: %w", b, err)
			}
			if slices.Contains(wants, m.Type) {
				return m, nil
			}
		case <-t.C:
			return fleetMsg{}, fmt.Errorf("bench: no %q from the fleet process within %v: %s", want, timeout, p.stderr.String())
		case <-ctx.Done():
			return fleetMsg{}, ctx.Err()
		}
	}
}

func (p *procFleet) report() fleetMsg { return p.msg }
func (p *procFleet) pid() int         { return p.cmd.Process.Pid }

func (p *procFleet) stats() (fleetMsg, error) {
	if _, err := io.WriteString(p.stdin, "stats\n"); err != nil {
		return fleetMsg{}, err
	}
	return p.read(context.Background(), "stats", time.Minute)
}

func (p *procFleet) gc() (fleetMsg, error) {
	if _, err := io.WriteString(p.stdin, "gc\n"); err != nil {
		return fleetMsg{}, err
	}
	return p.read(context.Background(), "gc", time.Minute)
}

// cut asks a multiplexed fleet to cut its pooled connections and waits for
// its "recovered" answer.
func (p *procFleet) cut() (fleetMsg, error) {
	if _, err := io.WriteString(p.stdin, "cut\n"); err != nil {
		return fleetMsg{}, err
	}
	return p.read(context.Background(), "recovered", 11*time.Minute)
}

func (p *procFleet) close() error {
	_, _ = io.WriteString(p.stdin, "close\n")
	p.stdin.Close()
	select {
	case <-p.done:
		return nil
	case <-time.After(2 * time.Minute):
		p.kill()
		return errors.New("bench: the fleet process did not exit; killed")
	}
}

func (p *procFleet) kill() {
	_ = p.cmd.Process.Kill()
	p.stdin.Close()
	<-p.done
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b.Write(p)
	if t.b.Len() > t.max {
		rest := append([]byte(nil), t.b.Bytes()[t.b.Len()-t.max:]...)
		t.b.Reset()
		t.b.Write(rest)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(t.b.String())
}
