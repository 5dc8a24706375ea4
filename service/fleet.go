package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// defaultMaxConcurrency is how many calls InvokeDeviceMethods runs at once
// unless InvokeManyOptions says otherwise.
const defaultMaxConcurrency = 16

// Defaults of azcore's policy.RetryOptions, which InvokeDeviceMethods
// applies to the 429s it retries itself.
const (
	defaultMaxRetries    = 3
	defaultRetryDelay    = 800 * time.Millisecond
	defaultMaxRetryDelay = 60 * time.Second
)

// InvokeManyOptions configures InvokeDeviceMethods and
// InvokeDeviceMethodsWhere. A nil *InvokeManyOptions gives the defaults.
type InvokeManyOptions struct {
	// MaxConcurrency bounds the calls in flight at once. Zero or negative
	// means 16. Mind the hub's method throttle (about 40 small calls per
	// second per unit on S1).
	MaxConcurrency int
	// RateLimit is the most calls started per second, retries included:
	// starts are spaced at least 1/RateLimit apart (no bursts). Zero or
	// negative (the default) means no limit beyond MaxConcurrency. Set it
	// below the hub's method throttle to avoid 429s in the first place.
	RateLimit float64
}

// DeviceMethodResult is the outcome of one call of InvokeDeviceMethods:
// exactly one of Result and Err is set.
type DeviceMethodResult struct {
	DeviceID string
	Result   *MethodResult
	Err      error
}

// InvokeDeviceMethods invokes the same method on many devices, at most
// opts.MaxConcurrency at a time and at most opts.RateLimit starts per
// second, and returns one entry per device id in the order given (a
// repeated id is invoked again). Each call behaves as InvokeDeviceMethod;
// a failure of one device does not stop the others. Once ctx ends no new
// call starts: the devices not yet invoked (or waiting to be retried) get
// ctx.Err(), and calls in flight end as InvokeDeviceMethod's do. An
// invalid m fails every entry with the same error, and nothing is sent.
//
// Throttling. IoT Hub's method throttle is per hub, so a 429 answer
// (ErrThrottled) to one call pauses the starts of all of them, and that
// device's call is retried once the pause is over:
//   - With a Retry-After header (or retry-after-ms, x-ms-retry-after-ms,
//     read as azcore does) the pause lasts that long. A delay longer than
//     the client's Retry.MaxRetryDelay (default 60 s) is not waited for:
//     the pause lasts MaxRetryDelay and that device fails with the 429.
//   - Without one, the pause is azcore's exponential backoff: (2^n − 1) ×
//     Retry.RetryDelay (default 800 ms) for the device's n-th retry, with
//     jitter, at most Retry.MaxRetryDelay.
//
// A device's call is retried after a 429 at most Retry.MaxRetries times
// (default 3; negative means never) and only when the client retries 429s
// at all (see ClientOptions: Retry.StatusCodes, Retry.ShouldRetry); the
// last 429 is then its Err. These are the client's own retry rules, with
// the wait shared by the whole fleet: azcore's pipeline, which would wait
// per call, does not also retry the 429s of these calls. Other retries
// (dial errors, 503) happen per call, as for InvokeDeviceMethod.
//
// Traced, each call it makes is a span like InvokeDeviceMethod's,
// "Client.InvokeDeviceMethod", under ctx's span if it has one: the calls
// are independent operations that run concurrently, and the run has no
// span of its own. A call's span includes its 429 retries.
func (c *Client) InvokeDeviceMethods(ctx context.Context, deviceIDs []string, m CloudToDeviceMethod, opts *InvokeManyOptions) []DeviceMethodResult {
	out := make([]DeviceMethodResult, len(deviceIDs))
	for i, id := range deviceIDs {
		out[i].DeviceID = id
	}
	body, timeout, err := m.encode()
	if err != nil {
		for i := range out {
			out[i].Err = err
		}
		return out
	}
	c.invokeMany(ctx, out, body, timeout, opts)
	return out
}

// InvokeDeviceMethodsWhere invokes the same method on every device whose
// twin matches condition, a WHERE condition of IoT Hub's query language
// as scheduled jobs take it ("tags.site = 'berlin'",
// "properties.reported.firmware < '2.0'"). The devices are found with the
// query "SELECT deviceId FROM devices WHERE " + condition, read to its
// last page, then invoked as InvokeDeviceMethods does (opts likewise), with
// one entry per device in the query's order. An empty (or blank)
// condition means every device. Needs ServiceConnect, or RegistryRead for
// the query.
//
// The error is set, and there are no results, when nothing was invoked:
// m is invalid (nothing is sent), the hub refuses the query
// (ErrArgumentInvalid with the hub's message), a page fails, or ctx ends
// during the query. Failures of single calls are in the results.
//
// Devices that start matching after their page was read are not invoked;
// disconnected devices are (and fail with ErrDeviceNotOnline unless
// m.ConnectTimeout gives them time): add "AND connectionState =
// 'Connected'" to the condition to skip them.
func (c *Client) InvokeDeviceMethodsWhere(ctx context.Context, condition string, m CloudToDeviceMethod, opts *InvokeManyOptions) ([]DeviceMethodResult, error) {
	body, timeout, err := m.encode()
	if err != nil {
		return nil, err
	}
	ids, err := c.queryDeviceIDs(ctx, condition)
	if err != nil {
		return nil, err
	}
	out := make([]DeviceMethodResult, len(ids))
	for i, id := range ids {
		out[i].DeviceID = id
	}
	c.invokeMany(ctx, out, body, timeout, opts)
	return out, nil
}

// queryDeviceIDs returns the ids of the devices matching a WHERE
// condition, every page read.
func (c *Client) queryDeviceIDs(ctx context.Context, condition string) ([]string, error) {
	q := "SELECT deviceId FROM devices"
	if strings.TrimSpace(condition) != "" {
		q += " WHERE " + condition
	}
	ids := []string{}
	pager := c.NewQueryPager(q, &QueryOptions{PageSize: MaxQueryPageSize})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for i, raw := range page.Items {
			var item struct {
				DeviceID string `json:"deviceId"`
			}
			if err := json.Unmarshal(raw, &item); err != nil || item.DeviceID == "" {
				return nil, fmt.Errorf("%w: query item %d has no device id", ErrMalformedResponse, len(ids)+i)
			}
			ids = append(ids, item.DeviceID)
		}
	}
	return ids, nil
}

// invokeMany runs the calls of out (DeviceID set) with an encoded method.
func (c *Client) invokeMany(ctx context.Context, out []DeviceMethodResult, body []byte, timeout time.Duration, opts *InvokeManyOptions) {
	n := defaultMaxConcurrency
	var rate float64
	if opts != nil {
		if opts.MaxConcurrency > 0 {
			n = opts.MaxConcurrency
		}
		rate = opts.RateLimit
	}
	f := c.newFleet(rate)
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	for i := range out {
		r := &out[i]
		if err := ctx.Err(); err != nil {
			r.Err = err
			continue
		}
		if err := checkID("device", r.DeviceID); err != nil {
			// Refused before anything is sent: no slot, no start.
			_, end := c.startSpan(ctx, "Client.InvokeDeviceMethod")
			r.Err = err
			end(err)
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			r.Err = ctx.Err()
			continue
		}
		if err := f.gate.wait(ctx); err != nil {
			<-sem
			r.Err = err
			continue
		}
		if err := ctx.Err(); err != nil {
			// Both were ready: do not start a call after ctx ended.
			<-sem
			r.Err = err
			continue
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			ctx, end := c.startSpan(ctx, "Client.InvokeDeviceMethod")
			defer func() { end(r.Err) }()
			r.Result, r.Err = f.call(ctx, deviceMethodsPath(r.DeviceID), body, timeout)
		}()
	}
	wg.Wait()
}

// fleet is the shared state of one InvokeDeviceMethods run.
type fleet struct {
	c    *Client
	gate *startGate
	// retry is the client's invocation retry options without 429, which
	// the fleet retries itself; shouldRetry is the client's own
	// classification, which decides whether a 429 may be retried.
	retry         policy.RetryOptions
	shouldRetry   func(*http.Response, error) bool
	maxRetries    int
	retryDelay    time.Duration
	maxRetryDelay time.Duration
}

func (c *Client) newFleet(rate float64) *fleet {
	f := &fleet{c: c, gate: &startGate{}, retry: c.invokeRetry, shouldRetry: c.invokeRetry.ShouldRetry}
	if rate > 0 {
		iv := float64(time.Second) / rate
		if iv > float64(math.MaxInt64) {
			iv = float64(math.MaxInt64)
		}
		f.gate.interval = time.Duration(iv)
	}
	inner := f.shouldRetry
	f.retry.ShouldRetry = func(resp *http.Response, err error) bool {
		if err == nil && resp != nil && resp.StatusCode == http.StatusTooManyRequests {
			return false
		}
		return inner == nil || inner(resp, err)
	}
	o := c.invokeRetry
	switch {
	case o.MaxRetries == 0:
		f.maxRetries = defaultMaxRetries
	case o.MaxRetries > 0:
		f.maxRetries = int(o.MaxRetries)
	}
	switch {
	case o.RetryDelay == 0:
		f.retryDelay = defaultRetryDelay
	case o.RetryDelay > 0:
		f.retryDelay = o.RetryDelay
	}
	switch {
	case o.MaxRetryDelay == 0:
		f.maxRetryDelay = defaultMaxRetryDelay
	case o.MaxRetryDelay > 0:
		f.maxRetryDelay = o.MaxRetryDelay
	default:
		f.maxRetryDelay = math.MaxInt64
	}
	return f
}

// call makes one device's call, retrying it after a 429 once the fleet's
// pause is over.
func (f *fleet) call(ctx context.Context, path string, body []byte, timeout time.Duration) (*MethodResult, error) {
	for try := 1; ; try++ {
		res, err := f.c.sendRetry(ctx, path, body, timeout, f.retry)
		var re *ResponseError
		if err == nil || !errors.As(err, &re) || re.StatusCode != http.StatusTooManyRequests {
			return res, err
		}
		delay := retryAfter(re.RawResponse)
		tooLong := delay > f.maxRetryDelay
		if delay <= 0 {
			delay = backoff(try, f.retryDelay, f.maxRetryDelay)
		}
		f.gate.pause(min(delay, f.maxRetryDelay))
		if tooLong || try > f.maxRetries || (f.shouldRetry != nil && !f.shouldRetry(re.RawResponse, nil)) {
			return nil, err
		}
		if werr := f.gate.wait(ctx); werr != nil {
			return nil, werr
		}
	}
}

// backoff is azcore's retry delay: (2^try − 1) × delay, times a jitter
// in [0.8, 1.3), at most maxDelay.
func backoff(try int, delay, maxDelay time.Duration) time.Duration {
	d := float64(delay) * (math.Exp2(float64(min(try, 62))) - 1) * (0.8 + rand.Float64()/2)
	if d >= float64(maxDelay) {
		return maxDelay
	}
	return time.Duration(d)
}

// retryAfter reads the delay a 429 asks for, in azcore's order of
// preference: retry-after-ms, x-ms-retry-after-ms, then Retry-After (in
// seconds or as an HTTP date). 0 when there is none.
func retryAfter(resp *http.Response) time.Duration {
	if resp == nil {
		return 0
	}
	for _, h := range []string{"Retry-After-Ms", "X-Ms-Retry-After-Ms"} {
		if v := resp.Header.Get(h); v != "" {
			if ms, err := strconv.ParseInt(v, 10, 64); err == nil && ms > 0 && ms < math.MaxInt64/int64(time.Millisecond) {
				return time.Duration(ms) * time.Millisecond
			}
		}
	}
	v := resp.Header.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		if s >= math.MaxInt64/int64(time.Second) {
			return math.MaxInt64
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// startGate paces the starts of a fleet run: one start every interval at
// most, and none before resume (the end of a pause after a 429).
type startGate struct {
	interval time.Duration
	mu       sync.Mutex
	next     time.Time // earliest next start allowed by the rate
	resume   time.Time
}

// wait blocks until a call may start, and counts the start; it returns
// ctx.Err() if ctx ends first.
func (g *startGate) wait(ctx context.Context) error {
	for {
		g.mu.Lock()
		now := time.Now()
		at := g.next
		if g.resume.After(at) {
			at = g.resume
		}
		if !at.After(now) {
			if g.interval > 0 {
				g.next = now.Add(g.interval)
			}
			g.mu.Unlock()
			return nil
		}
		g.mu.Unlock()
		// Another start or a new pause may come first: look again then.
		t := time.NewTimer(at.Sub(now))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// pause holds every start for d from now (a longer pause already set
// stays).
func (g *startGate) pause(d time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if until := time.Now().Add(d); until.After(g.resume) {
		g.resume = until
	}
}
