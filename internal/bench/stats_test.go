package bench

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestPercentile(t *testing.T) {
	d := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5}, {0.9, 9}, {0.99, 10}, {1, 10}, {0.01, 1}} {
		assert.Equal(t, c.want, percentile(d, c.q), "percentile(%v)", c.q)
	}
	assert.Zero(t, percentile(nil, 0.5), "percentile of nothing")
}

func TestMedian(t *testing.T) {
	assert.Equal(t, 2.0, median([]float64{3, 1, 2}), "median of three")
	assert.Equal(t, 2.5, median([]float64{4, 1, 3, 2}), "median of four")
	l := medianLatency([]*Latency{{Calls: 1, P50: 10}, {Calls: 2, P50: 30}, {Calls: 3, P50: 20}})
	assert.Equal(t, 6, l.Calls, "medianLatency calls: %+v", l)
	assert.Equal(t, 20.0, l.P50, "medianLatency p50: %+v", l)
}

func TestPayloadJSON(t *testing.T) {
	for _, n := range []int{0, 11, 100, 1000} {
		p := payloadJSON(n)
		if n >= 11 {
			assert.Len(t, p, n, "payloadJSON(%d)", n)
		}
		assert.True(t, json.Valid(p), "payloadJSON(%d) = %q is not JSON", n, p)
		if assert.NotEmpty(t, p, "payloadJSON(%d)", n) {
			assert.Equal(t, byte('{'), p[0], "payloadJSON(%d) = %q", n, p)
		}
	}
}

func TestProcessSamples(t *testing.T) {
	assert.Positive(t, rss(), "VmRSS")
	c, err := procCPUSeconds(os.Getpid())
	if assert.NoError(t, err, "procCPUSeconds") {
		assert.GreaterOrEqual(t, c, 0.0, "procCPUSeconds")
	}
	assert.Equal(t, int64(1234*1024), statusKB([]byte("VmRSS:\t  1234 kB\n"), "VmRSS:"), "statusKB")
}
