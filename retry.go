package iothub

import (
	"math/rand/v2"
	"time"
)

// RetryOptions configures how a client retries: exponential backoff with
// full jitter. Field names and meanings follow azcore's policy.RetryOptions,
// so a setting learned for the service client means the same here. The zero
// value gives the defaults.
type RetryOptions struct {
	// MaxRetries is how many times a failed attempt is retried before the
	// operation fails. Zero means the client's default (documented where the
	// options are used); a negative value means a single try.
	MaxRetries int32
	// RetryDelay is the base of the backoff: attempt n waits a random time
	// in [0, min(MaxRetryDelay, RetryDelay·2ⁿ)]. Zero means 1 s.
	RetryDelay time.Duration
	// MaxRetryDelay caps a single wait. Zero means 60 s; negative means no
	// cap.
	MaxRetryDelay time.Duration
}

// Delay returns the wait before retry number attempt (0 for the first
// retry): a uniformly random duration in [0, cap], where cap is
// RetryDelay·2^attempt bounded by MaxRetryDelay ("full jitter").
func (o RetryOptions) Delay(attempt int) time.Duration {
	base := o.RetryDelay
	if base <= 0 {
		base = time.Second
	}
	limit := o.MaxRetryDelay
	if limit == 0 {
		limit = 60 * time.Second
	}
	ceiling := base
	for i := 0; i < attempt && (limit < 0 || ceiling < limit); i++ {
		if ceiling > time.Duration(1<<62)/2 {
			break
		}
		ceiling *= 2
	}
	if limit > 0 && ceiling > limit {
		ceiling = limit
	}
	return time.Duration(rand.Int64N(int64(ceiling) + 1))
}
