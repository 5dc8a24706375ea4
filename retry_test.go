package iothub_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub"
)

func TestRetryDelayBounds(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    iothub.RetryOptions
		attempt int
		max     time.Duration
	}{
		{"defaults first", iothub.RetryOptions{}, 0, time.Second},
		{"defaults grow", iothub.RetryOptions{}, 3, 8 * time.Second},
		{"defaults capped", iothub.RetryOptions{}, 20, 60 * time.Second},
		{"custom", iothub.RetryOptions{RetryDelay: 10 * time.Millisecond, MaxRetryDelay: 50 * time.Millisecond}, 10, 50 * time.Millisecond},
		{"no cap", iothub.RetryOptions{RetryDelay: time.Millisecond, MaxRetryDelay: -1}, 10, 1024 * time.Millisecond},
		{"huge attempt", iothub.RetryOptions{MaxRetryDelay: -1}, 1000, time.Duration(1 << 62)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var maxSeen time.Duration
			for i := 0; i < 2000; i++ {
				d := tc.opts.Delay(tc.attempt)
				require.GreaterOrEqual(t, d, time.Duration(0), "Delay(%d)", tc.attempt)
				require.LessOrEqual(t, d, tc.max, "Delay(%d)", tc.attempt)
				maxSeen = max(maxSeen, d)
			}
			// Full jitter spreads over the whole range: the largest of 2000
			// draws is almost surely above half the ceiling.
			require.GreaterOrEqual(t, maxSeen, tc.max/2, "largest Delay(%d) of 2000, want near %v", tc.attempt, tc.max)
		})
	}
}
