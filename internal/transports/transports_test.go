package transports

import (
	"strings"
	"testing"
)

func TestByName(t *testing.T) {
	for _, n := range Names {
		tr, err := ByName(n)
		if err != nil || tr == nil || tr.Name() != n {
			t.Errorf("%s: %v, %v", n, tr, err)
		}
	}
	if _, err := ByName("carrier-pigeon"); err == nil || !strings.Contains(err.Error(), `"carrier-pigeon"`) {
		t.Errorf("unknown name: %v", err)
	}
}
