package device

import (
	"sync"
	"testing"
)

func TestGoid(t *testing.T) {
	g := goid()
	if g == 0 || goid() != g {
		t.Fatalf("goid() = %d, then %d", g, goid())
	}
	var wg sync.WaitGroup
	ids := make([]uint64, 8)
	for i := range ids {
		wg.Add(1)
		go func() { defer wg.Done(); ids[i] = goid() }()
	}
	wg.Wait()
	seen := map[uint64]bool{g: true}
	for _, id := range ids {
		if id == 0 || seen[id] {
			t.Fatalf("goroutine ids %v (this one %d): zero or repeated", ids, g)
		}
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
