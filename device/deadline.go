package device

import (
	"context"
	"sync/atomic"
	"time"
)

// coarseStep is how long one shared context of a coarseTimeout is handed
// out: the bound it gives is between d and d+coarseStep.
const coarseStep = time.Second

// coarseTimeout hands out contexts that end between d and d+coarseStep
// after they are asked for. Every caller within the same coarseStep shares
// one context, so a bound on a hot path (a method answer) costs an atomic
// load and a clock read rather than a timer per call: a timer made and
// stopped for every answer was a tenth of a device's CPU per method call
// under load (BENCHMARKS.md). The contexts are never cancelled early;
// each ends at its deadline, and at most d/coarseStep+1 are alive.
type coarseTimeout struct {
	d   time.Duration
	cur atomic.Pointer[coarseCtx]
}

type coarseCtx struct {
	ctx    context.Context
	cancel context.CancelFunc // kept for its deadline's sake; never called early
	until  monoTime           // handed out until then
}

// get returns a context that ends between d and d+coarseStep from now.
func (t *coarseTimeout) get() context.Context {
	now := monoNow()
	cur := t.cur.Load()
	if cur != nil && now < cur.until {
		return cur.ctx
	}
	ctx, cancel := context.WithTimeout(context.Background(), t.d+coarseStep)
	next := &coarseCtx{ctx: ctx, cancel: cancel, until: now + monoTime(coarseStep)}
	// Losing the race to another caller costs one more context, which
	// ends at its deadline like the others.
	t.cur.CompareAndSwap(cur, next)
	return ctx
}

// monoTime is a reading of the monotonic clock: the time since clockBase.
// Taking one reads one clock; time.Now reads the wall clock as well. The
// method call path reads the clock twice per call.
type monoTime time.Duration

// clockBase is the origin of monoTime.
var clockBase = time.Now()

// monoNow reads the monotonic clock.
func monoNow() monoTime { return monoTime(time.Since(clockBase)) }

// since returns the time elapsed since t.
func (t monoTime) since() time.Duration { return time.Duration(monoNow() - t) }
