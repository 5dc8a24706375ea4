package engine

// Read accessors for the dashboard (internal/hub/ui): the newest call
// records and events without copying the whole stores.

// RecentCalls returns the newest n finished invocations (fewer when fewer
// are stored), oldest first, like the tail of Calls.
func (e *Engine) RecentCalls(n int) []CallRecord {
	e.mu.Lock()
	defer e.mu.Unlock()
	if n < 0 {
		n = 0
	}
	if n > len(e.calls) {
		n = len(e.calls)
	}
	out := make([]CallRecord, n)
	for i, c := range e.calls[len(e.calls)-n:] {
		c.Payload = append([]byte(nil), c.Payload...)
		out[i] = c
	}
	return out
}

// RecentEvents returns the newest n stored device-to-cloud messages
// (fewer when fewer are stored), oldest first, like the tail of Events,
// and how many have been accepted since the engine started.
func (e *Engine) RecentEvents(n int) ([]Event, uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	evs := e.evlog.events
	if n < 0 {
		n = 0
	}
	if n > len(evs) {
		n = len(evs)
	}
	return cloneEvents(evs[len(evs)-n:]), e.evlog.total
}
