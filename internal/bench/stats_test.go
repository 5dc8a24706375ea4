package bench

import (
	"encoding/json"
	"os"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	d := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5}, {0.9, 9}, {0.99, 10}, {1, 10}, {0.01, 1}} {
		if got := percentile(d, c.q); got != c.want {
			t.Errorf("percentile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if percentile(nil, 0.5) != 0 {
		t.Error("percentile of nothing")
	}
}

func TestMedian(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median = %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median = %v", m)
	}
	l := medianLatency([]*Latency{{Calls: 1, P50: 10}, {Calls: 2, P50: 30}, {Calls: 3, P50: 20}})
	if l.Calls != 6 || l.P50 != 20 {
		t.Errorf("medianLatency = %+v", l)
	}
}

func TestPayloadJSON(t *testing.T) {
	for _, n := range []int{0, 11, 100, 1000} {
		p := payloadJSON(n)
		if n >= 11 && len(p) != n {
			t.Errorf("payloadJSON(%d) is %d bytes", n, len(p))
		}
		if !json.Valid(p) || p[0] != '{' {
			t.Errorf("payloadJSON(%d) = %q", n, p)
		}
	}
}

func TestProcessSamples(t *testing.T) {
	if rss() <= 0 {
		t.Error("no VmRSS")
	}
	c, err := procCPUSeconds(os.Getpid())
	if err != nil || c < 0 {
		t.Errorf("procCPUSeconds: %v %v", c, err)
	}
	if statusKB([]byte("VmRSS:\t  1234 kB\n"), "VmRSS:") != 1234*1024 {
		t.Error("statusKB")
	}
}
