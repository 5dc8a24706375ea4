package engine

// Call records: the finished invocations kept for tests and the CLI.

import (
	"time"

	"github.com/iothub-go/iothub/auth"
)

// CallRecord describes one finished invocation, for assertions in tests.
type CallRecord struct {
	Identity  auth.Identity
	Method    string
	Payload   []byte // request payload
	Status    int    // device status; 0 when the call failed
	ErrorCode int    // hub error code; 0 on success
	Protocol  string // the transport that carried the call; "" if never dispatched
	Start     time.Time
	Latency   time.Duration
}

// MaxStoredCalls is how many finished invocations the engine keeps for
// Calls: the newest ones. It bounds a long-running hub's memory (a
// benchmark makes millions of calls; each record holds its payload).
const MaxStoredCalls = 10000

// Calls returns the invocations finished so far (the newest
// MaxStoredCalls), oldest first.
func (e *Engine) Calls() []CallRecord {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]CallRecord(nil), e.calls...)
}
