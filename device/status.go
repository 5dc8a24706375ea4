package device

import "sync"

// ConnectionState is the state of a client's connection to the hub.
type ConnectionState int

// Connection states.
const (
	// ConnectionStateDisconnected: not connected (before Connect, or after
	// the client gave up reconnecting).
	ConnectionStateDisconnected ConnectionState = iota
	// ConnectionStateConnecting: connecting or reconnecting.
	ConnectionStateConnecting
	// ConnectionStateConnected: connected, and the method subscription is
	// confirmed by the hub.
	ConnectionStateConnected
	// ConnectionStateClosed: Close was called; the client is done.
	ConnectionStateClosed
)

// String returns "disconnected", "connecting", "connected" or "closed".
func (s ConnectionState) String() string {
	switch s {
	case ConnectionStateDisconnected:
		return "disconnected"
	case ConnectionStateConnecting:
		return "connecting"
	case ConnectionStateConnected:
		return "connected"
	case ConnectionStateClosed:
		return "closed"
	}
	return "unknown"
}

// ConnectionStatus is one change of a client's connection.
type ConnectionStatus struct {
	State ConnectionState
	// Err says why the connection dropped or an attempt failed; nil
	// otherwise.
	Err error
}

// statusQueue delivers statuses to a callback, in order, on one goroutine,
// without ever blocking the client.
type statusQueue struct {
	fn   func(ConnectionStatus)
	mu   sync.Mutex
	q    []ConnectionStatus
	wake chan struct{}
	done chan struct{}
	shut bool
}

func newStatusQueue(fn func(ConnectionStatus)) *statusQueue {
	s := &statusQueue{fn: fn, wake: make(chan struct{}, 1), done: make(chan struct{})}
	if fn == nil {
		close(s.done)
		return s
	}
	go s.run()
	return s
}

func (s *statusQueue) push(st ConnectionStatus) {
	if s.fn == nil {
		return
	}
	s.mu.Lock()
	if !s.shut {
		s.q = append(s.q, st)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *statusQueue) run() {
	defer close(s.done)
	for {
		s.mu.Lock()
		q, shut := s.q, s.shut
		s.q = nil
		s.mu.Unlock()
		for _, st := range q {
			s.fn(st)
		}
		if shut && len(q) == 0 {
			return
		}
		if len(q) == 0 {
			<-s.wake
		}
	}
}

// close stops accepting statuses and waits until the queued ones are
// delivered.
func (s *statusQueue) close() {
	s.mu.Lock()
	s.shut = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	<-s.done
}
