package device

import (
	"errors"
	"time"
)

// SetRenewTimeout shortens the renewal time limit for a test and returns
// the function that restores it.
func SetRenewTimeout(d time.Duration) (restore func()) {
	old := renewTimeout
	renewTimeout = d
	return func() { renewTimeout = old }
}

// SetStaleAfter shortens the time a method call may wait for a handler
// slot, and returns the function that restores it.
func SetStaleAfter(d time.Duration) (restore func()) {
	old := staleAfter
	staleAfter = d
	return func() { staleAfter = old }
}

// IsShortLived reports whether err says that the hub ended a connection
// soon after it was established.
func IsShortLived(err error) bool {
	var sl *shortLivedError
	return errors.As(err, &sl)
}
