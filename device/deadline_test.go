package device

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCoarseTimeoutBounds checks that every context a coarseTimeout hands
// out, to callers at the same time and one after another, ends between d
// and d+coarseStep after it was asked for, and that callers share them.
func TestCoarseTimeoutBounds(t *testing.T) {
	ct := coarseTimeout{d: 30 * time.Second}
	type got struct {
		before, after, deadline time.Time
		ok                      bool
	}
	const n = 64
	res := make([]got, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			before := time.Now()
			ctx := ct.get()
			after := time.Now()
			dl, ok := ctx.Deadline()
			res[i] = got{before, after, dl, ok}
		}()
	}
	wg.Wait()
	distinct := map[time.Time]bool{}
	for _, r := range res {
		require.True(t, r.ok, "every context has a deadline")
		assert.False(t, r.deadline.Before(r.before.Add(ct.d)), "a context ends no sooner than d after it was asked for")
		assert.False(t, r.deadline.After(r.after.Add(ct.d+coarseStep)), "a context ends at most d+coarseStep after it was asked for")
		distinct[r.deadline] = true
	}
	assert.Less(t, len(distinct), n, "callers at the same time share contexts")
}
