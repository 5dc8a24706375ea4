// Package statuslog records a device client's connection statuses for
// tests, and waits for them and checks their sequence. The device and
// reliability tests share it.
package statuslog

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/device"
)

// Log records connection statuses with the time each arrived. Record is
// its OnConnectionStatus callback; the other methods are for the test's
// goroutine.
type Log struct {
	mu   sync.Mutex
	all  []device.ConnectionStatus
	at   []time.Time
	read int // statuses consumed by WaitFor
	wake chan struct{}
}

// New returns an empty log.
func New() *Log { return &Log{wake: make(chan struct{}, 1)} }

// Record appends s; it never blocks.
func (l *Log) Record(s device.ConnectionStatus) {
	l.mu.Lock()
	l.all = append(l.all, s)
	l.at = append(l.at, time.Now())
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// All returns every status so far.
func (l *Log) All() []device.ConnectionStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]device.ConnectionStatus(nil), l.all...)
}

// Between returns the statuses that arrived after from and before to.
func (l *Log) Between(from, to time.Time) []device.ConnectionStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []device.ConnectionStatus
	for i, s := range l.all {
		if l.at[i].After(from) && l.at[i].Before(to) {
			out = append(out, s)
		}
	}
	return out
}

// WaitFor consumes statuses until one in state st arrives and returns it;
// the test fails if none does within 90 s.
func (l *Log) WaitFor(t testing.TB, st device.ConnectionState) device.ConnectionStatus {
	t.Helper()
	timeout := time.NewTimer(90 * time.Second)
	defer timeout.Stop()
	for {
		l.mu.Lock()
		for l.read < len(l.all) {
			s := l.all[l.read]
			l.read++
			if s.State == st {
				l.mu.Unlock()
				return s
			}
		}
		l.mu.Unlock()
		select {
		case <-l.wake:
		case <-timeout.C:
			require.FailNowf(t, "status timeout", "no %v status within 90 s; statuses so far: %v", st, l.All())
		}
	}
}

// Skip marks every status so far as consumed.
func (l *Log) Skip() {
	l.mu.Lock()
	l.read = len(l.all)
	l.mu.Unlock()
}

// Reconnected waits for the client to report that it lost the connection,
// with a reason, after what, and then that it is connected again.
func (l *Log) Reconnected(t testing.TB, what string) {
	t.Helper()
	s := l.WaitFor(t, device.ConnectionStateConnecting)
	require.Error(t, s.Err, "the status after %s gives no reason", what)
	l.WaitFor(t, device.ConnectionStateConnected)
}

// Check checks that the statuses told a consistent story: the client
// started connecting, never reported connected twice without a loss in
// between, ended closed, and reported nothing after closed.
func (l *Log) Check(t testing.TB, who string) {
	t.Helper()
	all := l.All()
	if !assert.NotEmpty(t, all, "%s: no status reported", who) {
		return
	}
	assert.Equal(t, device.ConnectionStateConnecting, all[0].State, "%s: first status", who)
	assert.Equal(t, device.ConnectionStateClosed, all[len(all)-1].State, "%s: last status; all: %v", who, all)
	for i := 1; i < len(all); i++ {
		prev, cur := all[i-1], all[i]
		assert.False(t, prev.State == device.ConnectionStateConnected && cur.State == device.ConnectionStateConnected,
			"%s: connected reported twice in a row (status %d)", who, i)
		assert.NotEqual(t, device.ConnectionStateClosed, prev.State, "%s: status %v after closed", who, cur.State)
	}
}

// CountLosses returns how many statuses report a lost or failed connection.
func CountLosses(all []device.ConnectionStatus) int {
	n := 0
	for _, s := range all {
		if s.State == device.ConnectionStateConnecting && s.Err != nil {
			n++
		}
	}
	return n
}
