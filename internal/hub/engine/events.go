package engine

import (
	"context"
	"time"

	"github.com/iothub-go/iothub/auth"
)

// MaxEventSize is the largest device-to-cloud message IoT Hub accepts:
// 256 KB, counted as IoT Hub counts it (see [Event.Size]).
const MaxEventSize = 256 * 1024

// MaxStoredEvents is how many device-to-cloud messages the engine keeps:
// the newest ones; older ones are forgotten (they stay counted by
// WaitEvents and EventsAfter). It bounds a long-running hub's memory.
const MaxStoredEvents = 10000

// MaxStoredEventBytes bounds the stored events by size too (bodies,
// properties and a fixed overhead each, see [Event.Size]): 10,000 events
// of 256 KB would be 2.6 GB, so the oldest go first once the kept ones
// pass 64 MiB.
const MaxStoredEventBytes = 64 << 20

// storedEventOverhead is what an Event costs besides its Size.
const storedEventOverhead = 256

// Event is one device-to-cloud message (telemetry) the hub accepted.
type Event struct {
	// Identity is the device or module that sent it.
	Identity auth.Identity
	// Protocol is the transport that carried it: "mqtt", "mqtt-ws",
	// "amqp", "amqp-ws" or "http".
	Protocol string
	// Body is the message body, any bytes.
	Body []byte
	// Properties are the application properties.
	Properties map[string]string
	// The system properties a device may set; "" when absent.
	MessageID, CorrelationID, ContentType, ContentEncoding string
	// EnqueuedTime is when the hub accepted the message (set by
	// ReceiveEvent).
	EnqueuedTime time.Time
}

// Size is the message's size as IoT Hub measures it against
// MaxEventSize, protocol-agnostically: the body, plus the values of the
// system properties, plus the names and values of the application
// properties (docs: "Create and read IoT Hub messages", message size).
func (ev *Event) Size() int {
	n := len(ev.Body) + len(ev.MessageID) + len(ev.CorrelationID) + len(ev.ContentType) + len(ev.ContentEncoding)
	for k, v := range ev.Properties {
		n += len(k) + len(v)
	}
	return n
}

// clone returns a deep copy of ev, so that neither the sender's buffers
// nor a reader's changes alias the stored event.
func (ev Event) clone() Event {
	ev.Body = append([]byte(nil), ev.Body...)
	if ev.Properties != nil {
		p := make(map[string]string, len(ev.Properties))
		for k, v := range ev.Properties {
			p[k] = v
		}
		ev.Properties = p
	}
	return ev
}

// eventLog is the engine's store of accepted events, guarded by Engine.mu.
type eventLog struct {
	events []Event       // the newest MaxStoredEvents, oldest first
	bytes  int           // their sizes plus storedEventOverhead each
	total  uint64        // events accepted since the engine started
	more   chan struct{} // closed and replaced at every accepted event
}

// eventsChangedLocked returns the channel closed at the next accepted
// event. e.mu must be held.
func (e *Engine) eventsChangedLocked() chan struct{} {
	if e.evlog.more == nil {
		e.evlog.more = make(chan struct{})
	}
	return e.evlog.more
}

// ReceiveEvent accepts a device-to-cloud message from an authenticated
// connection of ev.Identity: it checks the 256 KB limit (413001
// MessageTooLarge) and that the identity still exists and is enabled,
// stamps EnqueuedTime, stores a copy (the newest MaxStoredEvents are
// kept), moves the identity's lastActivityTime in the registry and wakes
// WaitEvents and EventsAfter callers. The caller owns ev's buffers again
// when ReceiveEvent returns.
func (e *Engine) ReceiveEvent(ev Event) *Error {
	if n := ev.Size(); n > MaxEventSize {
		return NewError(CodeMessageTooLarge,
			"Message size (%d bytes) exceeds the maximum allowed size of %d bytes for a device-to-cloud message.", n, MaxEventSize)
	}
	ev = ev.clone()
	ev.Identity.HostName = e.hostName
	now := e.now()
	ev.EnqueuedTime = now
	e.mu.Lock()
	rec, herr := e.lookupLocked(ev.Identity.DeviceID, ev.Identity.ModuleID)
	if herr != nil {
		e.mu.Unlock()
		return unauthorized("IotHub '%s' does not contain the specified device '%s'", e.hubName(), ev.Identity)
	}
	if herr := e.enabledLocked(ev.Identity); herr != nil {
		e.mu.Unlock()
		return herr
	}
	if rec.module != nil {
		rec.module.LastActivityTime = formatTime(now)
	} else {
		rec.device.LastActivityTime = formatTime(now)
	}
	l := &e.evlog
	l.events = append(l.events, ev)
	l.bytes += ev.Size() + storedEventOverhead
	for len(l.events) > MaxStoredEvents || (l.bytes > MaxStoredEventBytes && len(l.events) > 1) {
		// Re-slicing keeps memory bounded: append copies only the live
		// window when it grows the array.
		l.bytes -= l.events[0].Size() + storedEventOverhead
		l.events[0] = Event{}
		l.events = l.events[1:]
	}
	l.total++
	if l.more != nil {
		close(l.more)
		l.more = nil
	}
	e.mu.Unlock()
	e.log.Info("device-to-cloud message", "identity", ev.Identity.String(), "protocol", ev.Protocol, "size", ev.Size())
	return nil
}

// Events returns the stored device-to-cloud messages, oldest first (at
// most MaxStoredEvents: the newest ones).
func (e *Engine) Events() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return cloneEvents(e.evlog.events)
}

func cloneEvents(evs []Event) []Event {
	out := make([]Event, len(evs))
	for i, ev := range evs {
		out[i] = ev.clone()
	}
	return out
}

// WaitEvents blocks until at least n device-to-cloud messages have been
// accepted since the engine started, then returns the stored ones as
// Events does. If ctx ends first it returns the events stored so far and
// ctx's error.
func (e *Engine) WaitEvents(ctx context.Context, n int) ([]Event, error) {
	for {
		e.mu.Lock()
		if n <= 0 || e.evlog.total >= uint64(n) {
			out := cloneEvents(e.evlog.events)
			e.mu.Unlock()
			return out, nil
		}
		more := e.eventsChangedLocked()
		e.mu.Unlock()
		select {
		case <-more:
		case <-ctx.Done():
			return e.Events(), ctx.Err()
		}
	}
}

// EventsAfter blocks until more than seq device-to-cloud messages have
// been accepted, and returns the stored ones among those after the first
// seq (messages that were forgotten since are skipped) and the number
// accepted so far, the seq to pass next time. Start with seq 0 (every
// message) or with EventCount (messages from now on). If ctx ends first
// it returns nil, seq and ctx's error.
func (e *Engine) EventsAfter(ctx context.Context, seq uint64) ([]Event, uint64, error) {
	for {
		e.mu.Lock()
		l := &e.evlog
		if l.total > seq {
			newer := l.total - seq
			if newer > uint64(len(l.events)) {
				newer = uint64(len(l.events))
			}
			out := cloneEvents(l.events[uint64(len(l.events))-newer:])
			total := l.total
			e.mu.Unlock()
			return out, total, nil
		}
		more := e.eventsChangedLocked()
		e.mu.Unlock()
		select {
		case <-more:
		case <-ctx.Done():
			return nil, seq, ctx.Err()
		}
	}
}

// EventCount returns how many device-to-cloud messages have been accepted
// since the engine started (stored or already forgotten).
func (e *Engine) EventCount() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.evlog.total
}
