package service_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// attemptLog records when each HTTP attempt started and its status (0 for
// a transport error), after the retry policy.
type attemptLog struct {
	mu  sync.Mutex
	at  []time.Time
	sts []int
}

func (l *attemptLog) Do(req *policy.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := req.Next()
	st := 0
	if err == nil {
		st = resp.StatusCode
	}
	l.mu.Lock()
	l.at = append(l.at, start)
	l.sts = append(l.sts, st)
	l.mu.Unlock()
	return resp, err
}

func (l *attemptLog) take() ([]time.Time, []int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	at, sts := l.at, l.sts
	l.at, l.sts = nil, nil
	return at, sts
}

// onlineFleet connects n echo devices dev0… and returns their ids.
func onlineFleet(t *testing.T, hub *iothubtest.Server, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		id := fmt.Sprintf("dev%d", i)
		echoDevice(t, hub, hub.AddDevice(t, id), nil, 200)
		ids = append(ids, id)
	}
	return ids
}

// warm makes one request so that the measured calls reuse a connection.
func warm(t *testing.T, c *service.Client) {
	t.Helper()
	_, err := c.GetDevice(context.Background(), "dev0")
	require.NoError(t, err, "warm-up")
}

func TestInvokeDeviceMethodsRateLimit(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	online := onlineFleet(t, hub, 4)
	var ids []string
	for range 5 {
		ids = append(ids, online...) // 20 calls, each device five times
	}
	log := &attemptLog{}
	c, tries := newClient(t, hub, "", func(o *service.ClientOptions) {
		o.PerRetryPolicies = append(o.PerRetryPolicies, log)
	})
	warm(t, c)
	log.take()
	before := tries.count()

	start := time.Now()
	res := c.InvokeDeviceMethods(context.Background(), ids, echo, &service.InvokeManyOptions{MaxConcurrency: 20, RateLimit: 50})
	elapsed := time.Since(start)
	for _, r := range res {
		require.NoError(t, r.Err, r.DeviceID)
	}
	assert.Equal(t, 20, tries.count()-before, "attempts")
	// 20 starts at most 50 a second: the last starts 19 × 20 ms = 380 ms
	// after the first, whatever the concurrency allows.
	assert.GreaterOrEqual(t, elapsed, 300*time.Millisecond, "20 calls at 50/s")
	at, _ := log.take()
	require.Len(t, at, 20)
	first, last := at[0], at[0]
	for _, a := range at {
		if a.Before(first) {
			first = a
		}
		if a.After(last) {
			last = a
		}
	}
	assert.GreaterOrEqual(t, last.Sub(first), 300*time.Millisecond, "first to last start")

	// Without a limit the same run is not paced (no timing asserted: only
	// that it works the same).
	res = c.InvokeDeviceMethods(context.Background(), ids, echo, &service.InvokeManyOptions{RateLimit: -1})
	for _, r := range res {
		require.NoError(t, r.Err, r.DeviceID)
	}
}

// A slow rate gives way to ctx at once: the devices not started get
// ctx.Err() without waiting for their turn.
func TestInvokeDeviceMethodsRateLimitContext(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	callbackDevice(t, hub, hub.AddDevice(t, "first"), func(string, []byte) (int, []byte) {
		cancel()
		return 200, nil
	})
	ids := []string{"first", "second", "third"}
	c, tries := newClient(t, hub, "", nil)
	start := time.Now()
	res := c.InvokeDeviceMethods(ctx, ids, echo, &service.InvokeManyOptions{RateLimit: 0.01}) // one start per 100 s
	assert.Less(t, time.Since(start), 50*time.Second, "the run waited for the rate after ctx ended")
	for _, r := range res[1:] {
		assert.Same(t, context.Canceled, r.Err, r.DeviceID)
	}
	assert.Equal(t, 1, tries.count(), "attempts")
}

// A 429 with Retry-After pauses every start, not just the throttled
// device's, and the device's call is retried after the pause.
func TestInvokeDeviceMethodsRetryAfter(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	ids := onlineFleet(t, hub, 3)
	log := &attemptLog{}
	c, tries := newClient(t, hub, "", func(o *service.ClientOptions) {
		o.Retry.MaxRetryDelay = 10 * time.Second
		o.PerRetryPolicies = append(o.PerRetryPolicies, log)
	})
	warm(t, c)
	log.take()
	before := tries.count()
	const pause = 800 * time.Millisecond
	require.NoError(t, hub.FailServiceRequestsRetryAfter(429001, 1, pause))

	// Starts 250 ms apart: dev0 at 0 (429, so everything waits 800 ms),
	// then dev0 again, dev1 and dev2. Without the shared pause dev1 would
	// start at 250 ms.
	res := c.InvokeDeviceMethods(context.Background(), ids, echo, &service.InvokeManyOptions{RateLimit: 4})
	for _, r := range res {
		require.NoError(t, r.Err, r.DeviceID)
		assert.Equal(t, 200, r.Result.Status, r.DeviceID)
	}
	assert.Equal(t, 4, tries.count()-before, "attempts: one 429, then three calls")
	assert.Len(t, hub.Calls(), 3, "calls dispatched")
	at, sts := log.take()
	require.Len(t, at, 4)
	assert.Equal(t, []int{429, 200, 200, 200}, sts, "statuses in start order")
	assert.GreaterOrEqual(t, at[1].Sub(at[0]), pause-100*time.Millisecond, "the next start after the 429 waited for Retry-After")
}

// The 429s of a fleet run are retried by the run, not also by the
// pipeline, with the client's MaxRetries, backoff and classification.
func TestInvokeDeviceMethodsThrottled(t *testing.T) {
	ctx := context.Background()
	hub := iothubtest.NewServer(t, nil)
	echoDevice(t, hub, hub.AddDevice(t, "dev0"), nil, 200)
	one := []string{"dev0"}
	run := func(t *testing.T, edit func(*service.ClientOptions), inject func()) (service.DeviceMethodResult, int) {
		t.Helper()
		c, tries := newClient(t, hub, "", edit)
		inject()
		before := tries.count()
		res := c.InvokeDeviceMethods(ctx, one, echo, nil)
		require.Len(t, res, 1)
		n := tries.count() - before
		// Leave no injected fault to the next case.
		for i := 0; ; i++ {
			require.Less(t, i, 10, "injected faults left")
			if _, err := c.GetDevice(ctx, "dev0"); err == nil {
				break
			}
		}
		return res[0], n
	}
	fail := func(n int, retryAfter time.Duration) func() {
		return func() { require.NoError(t, hub.FailServiceRequestsRetryAfter(429001, n, retryAfter)) }
	}

	t.Run("backoff without Retry-After", func(t *testing.T) {
		r, n := run(t, func(o *service.ClientOptions) { o.Retry.MaxRetries = 2 }, fail(2, 0))
		require.NoError(t, r.Err)
		assert.Equal(t, 3, n, "attempts")
	})
	t.Run("retries exhausted", func(t *testing.T) {
		// The pipeline would make 2 attempts per call if it retried 429s too.
		r, n := run(t, func(o *service.ClientOptions) { o.Retry.MaxRetries = 1 }, fail(3, 0))
		require.ErrorIs(t, r.Err, service.ErrThrottled)
		assert.Nil(t, r.Result)
		assert.Equal(t, 2, n, "attempts")
	})
	t.Run("no retries", func(t *testing.T) {
		r, n := run(t, func(o *service.ClientOptions) { o.Retry.MaxRetries = -1 }, fail(1, 0))
		require.ErrorIs(t, r.Err, service.ErrThrottled)
		assert.Equal(t, 1, n, "attempts")
	})
	t.Run("429 not in StatusCodes", func(t *testing.T) {
		r, n := run(t, func(o *service.ClientOptions) { o.Retry.StatusCodes = []int{503} }, fail(1, 0))
		require.ErrorIs(t, r.Err, service.ErrThrottled)
		assert.Equal(t, 1, n, "attempts")
	})
	t.Run("Retry-After over MaxRetryDelay", func(t *testing.T) {
		// The test options cap delays at 5 ms: a 200 ms Retry-After is not
		// waited for, as azcore does not wait for it.
		r, n := run(t, nil, fail(1, 200*time.Millisecond))
		require.ErrorIs(t, r.Err, service.ErrThrottled)
		assert.Equal(t, 1, n, "attempts")
		var re *service.ResponseError
		require.True(t, errors.As(r.Err, &re))
		assert.Equal(t, "1", re.RawResponse.Header.Get("Retry-After"), "whole seconds, rounded up")
		assert.Equal(t, "200", re.RawResponse.Header.Get("Retry-After-Ms"))
	})
	t.Run("503 still retried per call", func(t *testing.T) {
		r, n := run(t, func(o *service.ClientOptions) { o.Retry.MaxRetries = 2 }, func() {
			require.NoError(t, hub.FailServiceRequests(503001, 2))
		})
		require.NoError(t, r.Err)
		assert.Equal(t, 3, n, "attempts")
	})
}

func TestInvokeDeviceMethodsWhere(t *testing.T) {
	ctx := context.Background()
	hub := iothubtest.NewServer(t, nil)
	c, tries := newClient(t, hub, "", nil)
	for _, d := range []struct {
		id, site string
		online   bool
	}{{"b1", "berlin", true}, {"p1", "paris", true}, {"b2", "berlin", true}, {"b3", "berlin", false}} {
		cs := hub.AddDevice(t, d.id)
		_, err := c.UpdateTwin(ctx, d.id, &service.TwinPatch{Tags: map[string]any{"site": d.site}}, nil)
		require.NoError(t, err)
		if d.online {
			echoDevice(t, hub, cs, nil, 200)
		}
	}
	ids := func(res []service.DeviceMethodResult) []string {
		var out []string
		for _, r := range res {
			out = append(out, r.DeviceID)
		}
		return out
	}

	res, err := c.InvokeDeviceMethodsWhere(ctx, "tags.site = 'berlin'", echo, &service.InvokeManyOptions{MaxConcurrency: 2})
	require.NoError(t, err)
	require.Equal(t, []string{"b1", "b2", "b3"}, ids(res), "the query's order")
	for _, r := range res[:2] {
		require.NoError(t, r.Err, r.DeviceID)
		assert.Equal(t, 200, r.Result.Status, r.DeviceID)
		assert.JSONEq(t, `{"n":1}`, string(r.Result.Payload), r.DeviceID)
	}
	assert.ErrorIs(t, res[2].Err, service.ErrDeviceNotOnline, "b3")
	assert.Len(t, hub.Calls(), 3, "calls dispatched")

	res, err = c.InvokeDeviceMethodsWhere(ctx, "tags.site = 'berlin' AND connectionState = 'Connected'", echo, nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"b1", "b2"}, ids(res), "connected devices in Berlin")

	res, err = c.InvokeDeviceMethodsWhere(ctx, "  ", echo, nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"b1", "b2", "b3", "p1"}, ids(res), "a blank condition: every device")

	res, err = c.InvokeDeviceMethodsWhere(ctx, "tags.site = 'tokyo'", echo, nil)
	require.NoError(t, err)
	assert.Empty(t, res, "no device matches")

	// Refusals: no results, no call.
	calls, sent := len(hub.Calls()), tries.count()
	res, err = c.InvokeDeviceMethodsWhere(ctx, "tags.site = ", echo, nil)
	require.ErrorIs(t, err, service.ErrArgumentInvalid, "a condition the hub cannot parse")
	assert.Nil(t, res)
	res, err = c.InvokeDeviceMethodsWhere(ctx, "", service.CloudToDeviceMethod{MethodName: "a b"}, nil)
	require.ErrorIs(t, err, service.ErrArgumentInvalid, "an invalid method")
	assert.Nil(t, res)
	assert.Equal(t, sent+1, tries.count(), "requests: the refused query only")
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	res, err = c.InvokeDeviceMethodsWhere(cctx, "", echo, nil)
	require.ErrorIs(t, err, context.Canceled)
	assert.Nil(t, res)
	assert.Len(t, hub.Calls(), calls, "calls dispatched by refused runs")
}

// Many devices: every page of the query is read, and every page of the
// device list.
func TestListDevicesPagerManyDevices(t *testing.T) {
	ctx := context.Background()
	hub := iothubtest.NewServer(t, nil)
	const n = 1100
	for i := range n {
		hub.AddDevice(t, fmt.Sprintf("dev%04d", i))
	}
	c, _ := newClient(t, hub, "", nil)

	for _, tc := range []struct {
		size, pages int
	}{{service.MaxQueryPageSize, 2}} {
		pager := c.NewListDevicesPager(&service.ListDevicesOptions{PageSize: tc.size})
		seen := map[string]bool{}
		pages := 0
		for pager.More() {
			page, err := pager.NextPage(ctx)
			require.NoError(t, err, "page %d", pages+1)
			pages++
			require.LessOrEqual(t, pages, 20, "the pager does not end")
			assert.Equal(t, pager.More(), page.ContinuationToken != "")
			for _, d := range page.Devices {
				assert.False(t, seen[d.DeviceID], "%s listed twice", d.DeviceID)
				seen[d.DeviceID] = true
				assert.NotEmpty(t, d.ETag, d.DeviceID)
				assert.Equal(t, service.DeviceStatusEnabled, d.Status, d.DeviceID)
			}
		}
		assert.Len(t, seen, n, "devices listed with page size %d", tc.size)
		assert.Equal(t, tc.pages, pages, "pages of %d", tc.size)
	}

	// A saved continuation token resumes the list.
	first, err := c.NewListDevicesPager(&service.ListDevicesOptions{PageSize: 1000}).NextPage(ctx)
	require.NoError(t, err)
	rest, err := c.NewListDevicesPager(&service.ListDevicesOptions{PageSize: 1000, ContinuationToken: first.ContinuationToken}).NextPage(ctx)
	require.NoError(t, err)
	require.Len(t, rest.Devices, n-1000)
	assert.Equal(t, "dev1000", rest.Devices[0].DeviceID)
	assert.Empty(t, rest.ContinuationToken)

	// InvokeDeviceMethodsWhere reads every page too. The query goes to the
	// hub; the 1100 calls are answered in the client's pipeline, to keep
	// the test fast.
	local, _ := newClient(t, hub, "", func(o *service.ClientOptions) {
		o.PerCallPolicies = append(o.PerCallPolicies, answerMethods{})
	})
	res, err := local.InvokeDeviceMethodsWhere(ctx, "", echo, &service.InvokeManyOptions{MaxConcurrency: 64})
	require.NoError(t, err)
	require.Len(t, res, n)
	for i, r := range res {
		require.Equal(t, fmt.Sprintf("dev%04d", i), r.DeviceID)
		require.NoError(t, r.Err, r.DeviceID)
	}
}

// answerMethods answers every method invocation with status 200 without
// sending it; other requests go on.
type answerMethods struct{}

func (answerMethods) Do(req *policy.Request) (*http.Response, error) {
	if !strings.HasSuffix(req.Raw().URL.Path, "/methods") {
		return req.Next()
	}
	return &http.Response{
		StatusCode: http.StatusOK,
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       io.NopCloser(strings.NewReader(`{"status":200,"payload":null}`)),
		Request:    req.Raw(),
	}, nil
}

// A listed device has the registry's fields that a twin carries.
func TestListDevicesPagerFields(t *testing.T) {
	ctx := context.Background()
	hub := iothubtest.NewServer(t, nil)
	c, _ := newClient(t, hub, "", nil)
	echoDevice(t, hub, hub.AddDevice(t, "online"), nil, 200)
	hub.AddX509Device(t, "x509")
	hub.AddCADevice(t, "ca")
	edge, err := c.CreateDevice(ctx, &service.Device{DeviceID: "edge", Capabilities: service.DeviceCapabilities{IoTEdge: true}})
	require.NoError(t, err)
	_, err = c.CreateDevice(ctx, &service.Device{DeviceID: "leaf", DeviceScope: edge.DeviceScope})
	require.NoError(t, err)
	_, err = c.CreateDevice(ctx, &service.Device{DeviceID: "off", Status: service.DeviceStatusDisabled, StatusReason: "maintenance"})
	require.NoError(t, err)
	_, err = c.InvokeDeviceMethod(ctx, "online", echo)
	require.NoError(t, err)

	page, err := c.NewListDevicesPager(nil).NextPage(ctx)
	require.NoError(t, err)
	require.Empty(t, page.ContinuationToken)
	require.Len(t, page.Devices, 6)
	for _, listed := range page.Devices {
		want, err := c.GetDevice(ctx, listed.DeviceID)
		require.NoError(t, err)
		// What a twin does not carry.
		want.Authentication.SymmetricKey = service.SymmetricKey{}
		want.GenerationID = ""
		want.ConnectionStateUpdatedTime = time.Time{}
		if !listed.LastActivityTime.After(want.LastActivityTime) {
			// Activity between the list and the get moves it on.
			want.LastActivityTime = listed.LastActivityTime
		}
		if len(want.ParentScopes) == 0 && len(listed.ParentScopes) == 0 {
			want.ParentScopes, listed.ParentScopes = nil, nil
		}
		assert.Equal(t, want, listed, listed.DeviceID)
	}
	byID := map[string]*service.Device{}
	for _, d := range page.Devices {
		byID[d.DeviceID] = d
	}
	assert.Equal(t, service.DeviceConnectionStateConnected, byID["online"].ConnectionState)
	assert.False(t, byID["online"].LastActivityTime.IsZero(), "online: last activity")
	assert.Equal(t, service.AuthenticationTypeSelfSigned, byID["x509"].Authentication.Type)
	assert.NotEmpty(t, byID["x509"].Authentication.X509Thumbprint.PrimaryThumbprint)
	assert.Equal(t, service.AuthenticationTypeCertificateAuthority, byID["ca"].Authentication.Type)
	assert.True(t, byID["edge"].Capabilities.IoTEdge)
	assert.Equal(t, edge.DeviceScope, byID["leaf"].DeviceScope)
	assert.Equal(t, "maintenance", byID["off"].StatusReason)

	// The listed ETag is the identity's: a delete conditioned on it works.
	require.NoError(t, c.DeleteDevice(ctx, "off", &service.DeleteOptions{IfMatch: byID["off"].ETag}))
}
