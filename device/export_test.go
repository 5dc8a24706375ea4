package device

import "time"

// SetRenewTimeout shortens the renewal time limit for a test and returns
// the function that restores it.
func SetRenewTimeout(d time.Duration) (restore func()) {
	old := renewTimeout
	renewTimeout = d
	return func() { renewTimeout = old }
}
