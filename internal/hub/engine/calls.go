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

// MaxStoredCallBytes bounds the stored calls by size too: each record
// costs its payload, method name and storedCallOverhead. 10,000 calls with
// 128 KB payloads would be 1.3 GB; past 64 MiB the oldest go first.
const MaxStoredCallBytes = 64 << 20

const storedCallOverhead = 256

func (r *CallRecord) size() int { return len(r.Payload) + len(r.Method) + storedCallOverhead }

// storeCallLocked keeps rec, forgetting the oldest records beyond
// MaxStoredCalls or MaxStoredCallBytes. e.mu must be held.
func (e *Engine) storeCallLocked(rec CallRecord) {
	e.calls = append(e.calls, rec)
	e.callBytes += rec.size()
	for len(e.calls) > MaxStoredCalls || (e.callBytes > MaxStoredCallBytes && len(e.calls) > 1) {
		// Re-slicing keeps memory bounded: append copies only the live
		// window when it grows the array.
		e.callBytes -= e.calls[0].size()
		e.calls[0] = CallRecord{}
		e.calls = e.calls[1:]
	}
}

// Calls returns the invocations finished so far (the newest
// MaxStoredCalls), oldest first.
func (e *Engine) Calls() []CallRecord {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]CallRecord(nil), e.calls...)
}
