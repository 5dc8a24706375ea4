package device

import (
	"context"
	"sync"
)

// ConnectionState is the state of a Client's own connection to its hub, as
// Client.ConnectionState returns it and OnConnectionStatus reports its
// changes. (The registry's view of a device, connected or not, is
// service.DeviceConnectionState.)
type ConnectionState int

// Connection states.
const (
	// ConnectionStateDisconnected: not connected (before Connect, or after
	// the client gave up reconnecting).
	ConnectionStateDisconnected ConnectionState = iota
	// ConnectionStateConnecting: connecting or reconnecting.
	ConnectionStateConnecting
	// ConnectionStateConnected: connected, and, while a method handler is
	// registered, the method subscription confirmed by the hub.
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

// ConnectionStatus is one change of a client's connection, as
// ClientOptions.OnConnectionStatus receives it.
type ConnectionStatus struct {
	// State is the state the connection is now in.
	State ConnectionState
	// Err says why the connection dropped or an attempt failed; nil
	// otherwise.
	Err error
}

// statusQueue delivers statuses to a callback (a nil queue, that of a
// client without one, drops them), in order, one at a time,
// without ever blocking the client. A delivery goroutine runs only while
// statuses are queued: the first push (made by Connect, or by Close on a
// client never connected) starts it, and it ends when the queue is empty.
type statusQueue struct {
	fn func(ConnectionStatus)

	mu      sync.Mutex
	q       []ConnectionStatus
	running bool
	runner  uint64        // the delivery goroutine's id
	idle    chan struct{} // closed when the delivery goroutine ends
}

func (s *statusQueue) push(st ConnectionStatus) {
	if s == nil || s.fn == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.q = append(s.q, st)
	if !s.running {
		s.running = true
		s.idle = make(chan struct{})
		go s.run()
	}
}

func (s *statusQueue) run() {
	g := goid()
	s.mu.Lock()
	s.runner = g
	for len(s.q) > 0 {
		q := s.q
		s.q = nil
		s.mu.Unlock()
		for _, st := range q {
			s.fn(st)
		}
		s.mu.Lock()
	}
	s.running, s.runner = false, 0
	close(s.idle)
	s.mu.Unlock()
}

// drain waits until the queued statuses have been delivered, or ctx ends.
// Called from the callback itself it returns at once: the rest is
// delivered once the callback returns.
func (s *statusQueue) drain(ctx context.Context) {
	if s == nil || s.fn == nil {
		return
	}
	g := goid()
	s.mu.Lock()
	running, idle, self := s.running, s.idle, s.runner == g
	s.mu.Unlock()
	if !running || self {
		return
	}
	select {
	case <-idle:
	case <-ctx.Done():
	}
}
