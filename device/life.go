package device

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// lifeContext is a client's life as a context.Context: it ends, with
// context.Canceled, when Close calls end. It is a field of the Client rather
// than a context.WithCancel of its own, which would cost every client of a
// fleet two more objects (BENCHMARKS.md, "Where the MQTT RSS difference
// was"). Contexts derived from it learn of its end through its AfterFunc,
// as package context arranges for a parent with that method, without a
// goroutine.
type lifeContext struct {
	ended atomic.Bool

	mu     sync.Mutex
	done   chan struct{} // made by the first Done; closed by end
	afters *lifeAfter    // AfterFunc's functions waiting for end, a list; nil when none
}

// lifeAfter is a function registered with AfterFunc, in a list: a
// derived context registers one, and unregisters it when it ends.
type lifeAfter struct {
	f    func()
	next *lifeAfter
}

// Deadline reports no deadline: a life ends only by end.
func (l *lifeContext) Deadline() (time.Time, bool) { return time.Time{}, false }

// Value returns nil: a life carries no values.
func (l *lifeContext) Value(any) any { return nil }

// Err returns context.Canceled once end has been called, nil before.
func (l *lifeContext) Err() error {
	if l.ended.Load() {
		return context.Canceled
	}
	return nil
}

// Done returns a channel closed by end, made on first use.
func (l *lifeContext) Done() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done == nil {
		l.done = make(chan struct{})
		if l.ended.Load() {
			close(l.done)
		}
	}
	return l.done
}

// AfterFunc arranges for f to run on a goroutine of its own once the life
// has ended, at once if it has; stop undoes that if f has not started,
// like the stop of context.AfterFunc. Package context calls it for the
// contexts derived from l.
func (l *lifeContext) AfterFunc(f func()) (stop func() bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended.Load() {
		go f()
		return func() bool { return false }
	}
	a := &lifeAfter{f: f, next: l.afters}
	l.afters = a
	return func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for p := &l.afters; *p != nil; p = &(*p).next {
			if *p == a {
				*p = a.next
				return true
			}
		}
		return false
	}
}

// end ends the life: Err reports context.Canceled, Done's channel closes,
// and the AfterFunc functions run. Later calls do nothing.
func (l *lifeContext) end() {
	l.mu.Lock()
	if l.ended.Load() {
		l.mu.Unlock()
		return
	}
	l.ended.Store(true)
	if l.done != nil {
		close(l.done)
	}
	afters := l.afters
	l.afters = nil
	l.mu.Unlock()
	for ; afters != nil; afters = afters.next {
		go afters.f()
	}
}

// String names the context, as those of package context do.
func (l *lifeContext) String() string { return "device.Client life" }
