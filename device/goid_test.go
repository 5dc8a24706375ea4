package device

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestGoid(t *testing.T) {
	g := goid()
	require.NotZero(t, g, "goid()")
	require.Equal(t, g, goid(), "goid() twice on one goroutine")
	var wg sync.WaitGroup
	ids := make([]uint64, 8)
	for i := range ids {
		wg.Add(1)
		go func() { defer wg.Done(); ids[i] = goid() }()
	}
	wg.Wait()
	seen := map[uint64]bool{g: true}
	for _, id := range ids {
		require.NotZero(t, id, "goroutine ids %v (this one %d)", ids, g)
		require.False(t, seen[id], "goroutine ids %v (this one %d): %d repeated", ids, g, id)
		seen[id] = true
	}
}

// BenchmarkGoid is what a status delivery goroutine's start and a Close
// pay to compare goroutines.
func BenchmarkGoid(b *testing.B) {
	for b.Loop() {
		goid()
	}
}
