package engine

import (
	"context"
	"crypto/x509"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hubauth"
)

// clock is a settable Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newEventEngine(t *testing.T) (*Engine, *clock) {
	t.Helper()
	c := &clock{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	e, err := New(Config{HostName: "h.azure-devices.net", Now: c.now})
	require.NoError(t, err)
	t.Cleanup(e.Close)
	_, herr := e.PutDevice("dev1", Device{}, "")
	require.Nil(t, herr, "put dev1")
	_, herr = e.PutModule("dev1", "mod1", Module{}, "")
	require.Nil(t, herr, "put dev1/mod1")
	return e, c
}

// assertCode checks that herr is a hub error with code. (herr is a
// *Error, so it is checked with Nil/NotNil: as an error interface a nil
// *Error is not nil.)
func assertCode(t *testing.T, code int, herr *Error, msgAndArgs ...any) bool {
	t.Helper()
	return assert.NotNil(t, herr, msgAndArgs...) && assert.Equal(t, code, herr.Code, msgAndArgs...)
}

func TestReceiveEvent(t *testing.T) {
	e, c := newEventEngine(t)
	dev := auth.Identity{DeviceID: "dev1"}
	body := []byte("hello")
	props := map[string]string{"a": "1"}
	require.Nil(t, e.ReceiveEvent(Event{Identity: dev, Protocol: "mqtt", Body: body, Properties: props, MessageID: "m", CorrelationID: "c",
		ContentType: "application/json", ContentEncoding: "utf-8"}))
	// The engine keeps its own copy.
	body[0], props["a"] = 'X', "changed"
	evs := e.Events()
	require.Len(t, evs, 1, "events")
	ev := evs[0]
	require.Equal(t, "hello", string(ev.Body), "event body")
	require.Equal(t, "1", ev.Properties["a"], "event property a")
	require.Equal(t, "h.azure-devices.net", ev.Identity.HostName, "event identity's host name")
	require.Equal(t, "m", ev.MessageID, "event message ID")
	require.Equal(t, "c", ev.CorrelationID, "event correlation ID")
	require.Equal(t, "application/json", ev.ContentType, "event content type")
	require.Equal(t, "utf-8", ev.ContentEncoding, "event content encoding")
	require.True(t, ev.EnqueuedTime.Equal(c.now()), "event enqueued at %v, want %v", ev.EnqueuedTime, c.now())
	require.Equal(t, "mqtt", ev.Protocol, "event protocol")
	evs[0].Body[0], evs[0].Properties["a"] = 'Y', "reader"
	again := e.Events()[0]
	require.Equal(t, "hello", string(again.Body), "a reader changed the stored event's body")
	require.Equal(t, "1", again.Properties["a"], "a reader changed the stored event's properties")

	for _, tc := range []struct {
		name string
		ev   Event
		code int
	}{
		{"body over 256 KB", Event{Identity: dev, Body: make([]byte, MaxEventSize+1)}, CodeMessageTooLarge},
		{"body and property over 256 KB", Event{Identity: dev, Body: make([]byte, MaxEventSize-1), Properties: map[string]string{"ab": ""}}, CodeMessageTooLarge},
		{"body and system property over 256 KB", Event{Identity: dev, Body: make([]byte, MaxEventSize), ContentType: "x"}, CodeMessageTooLarge},
		{"unknown device", Event{Identity: auth.Identity{DeviceID: "nobody"}}, CodeUnauthorized},
		{"unknown module", Event{Identity: auth.Identity{DeviceID: "dev1", ModuleID: "nobody"}}, CodeUnauthorized},
	} {
		assertCode(t, tc.code, e.ReceiveEvent(tc.ev), tc.name)
	}
	assert.Nil(t, e.ReceiveEvent(Event{Identity: dev, Body: make([]byte, MaxEventSize-2), Properties: map[string]string{"a": "b"}}), "exactly 256 KB")
	_, herr := e.PutDevice("dev1", Device{Status: "disabled"}, "*")
	require.Nil(t, herr, "disable dev1")
	assertCode(t, CodeUnauthorized, e.ReceiveEvent(Event{Identity: dev}), "disabled device")
	assert.Equal(t, uint64(2), e.EventCount(), "EventCount")
}

func TestEventLastActivity(t *testing.T) {
	e, c := newEventEngine(t)
	c.add(time.Minute)
	require.Nil(t, e.ReceiveEvent(Event{Identity: auth.Identity{DeviceID: "dev1", ModuleID: "mod1"}}))
	m, _ := e.GetModule("dev1", "mod1")
	d, _ := e.GetDevice("dev1")
	require.Equal(t, "2026-05-01T12:01:00.0000000Z", m.LastActivityTime, "module's last activity after a module event")
	require.Equal(t, zeroTime, d.LastActivityTime, "device's last activity after a module event")
	c.add(time.Minute)
	require.Nil(t, e.ReceiveEvent(Event{Identity: auth.Identity{DeviceID: "dev1"}}))
	d2, _ := e.GetDevice("dev1")
	require.Equal(t, "2026-05-01T12:02:00.0000000Z", d2.LastActivityTime, "device's last activity after a device event")
	require.Equal(t, d.ETag, d2.ETag, "a device event changed the device's etag")
}

func TestEventsBounded(t *testing.T) {
	e, _ := newEventEngine(t)
	dev := auth.Identity{DeviceID: "dev1"}
	const extra = 25
	for i := 0; i < MaxStoredEvents+extra; i++ {
		require.Nil(t, e.ReceiveEvent(Event{Identity: dev, Body: []byte{byte(i), byte(i >> 8)}}))
	}
	evs := e.Events()
	require.Len(t, evs, MaxStoredEvents, "stored events")
	first := int(evs[0].Body[0]) | int(evs[0].Body[1])<<8
	last := int(evs[len(evs)-1].Body[0]) | int(evs[len(evs)-1].Body[1])<<8
	require.Equal(t, extra, first, "first kept event")
	require.Equal(t, MaxStoredEvents+extra-1, last, "last kept event")
	require.Equal(t, uint64(MaxStoredEvents+extra), e.EventCount(), "EventCount")
	// WaitEvents counts every accepted event, stored or forgotten.
	got, err := e.WaitEvents(context.Background(), MaxStoredEvents+extra)
	require.NoError(t, err, "WaitEvents")
	require.Len(t, got, MaxStoredEvents, "WaitEvents")
	// EventsAfter skips the forgotten ones.
	got, seq, err := e.EventsAfter(context.Background(), 3)
	require.NoError(t, err, "EventsAfter(3)")
	require.Equal(t, uint64(MaxStoredEvents+extra), seq, "EventsAfter(3) seq")
	require.Len(t, got, MaxStoredEvents, "EventsAfter(3)")
	got, seq, err = e.EventsAfter(context.Background(), MaxStoredEvents+extra-2)
	require.NoError(t, err, "EventsAfter(n-2)")
	require.Equal(t, uint64(MaxStoredEvents+extra), seq, "EventsAfter(n-2) seq")
	require.Len(t, got, 2, "EventsAfter(n-2)")
	require.Equal(t, byte((MaxStoredEvents+extra-1)%256), got[1].Body[0], "EventsAfter(n-2) last event")
}

func TestWaitEvents(t *testing.T) {
	e, _ := newEventEngine(t)
	dev := auth.Identity{DeviceID: "dev1"}

	// Nothing yet: ctx ends the wait, with what there is.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	evs, err := e.WaitEvents(ctx, 1)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded, "WaitEvents on an empty hub")
	require.Empty(t, evs, "WaitEvents on an empty hub")
	evs, err = e.WaitEvents(context.Background(), 0)
	require.NoError(t, err, "WaitEvents(0)")
	require.Empty(t, evs, "WaitEvents(0)")

	type result struct {
		evs []Event
		err error
	}
	waiting := make(chan result, 1)
	go func() {
		evs, err := e.WaitEvents(context.Background(), 3)
		waiting <- result{evs, err}
	}()
	next := make(chan result, 1)
	go func() {
		evs, _, err := e.EventsAfter(context.Background(), 2)
		next <- result{evs, err}
	}()
	for i := 0; i < 3; i++ {
		select {
		case r := <-waiting:
			require.Failf(t, "early return", "WaitEvents(3) returned after %d events: %+v", i, r)
		case r := <-next:
			require.Failf(t, "early return", "EventsAfter(2) returned after %d events: %+v", i, r)
		default:
		}
		require.Nil(t, e.ReceiveEvent(Event{Identity: dev, Body: []byte{byte('a' + i)}}))
	}
	for _, ch := range []chan result{waiting, next} {
		select {
		case r := <-ch:
			require.NoError(t, r.err, "waiter")
			require.NotEmpty(t, r.evs, "waiter")
			require.Equal(t, byte('c'), r.evs[len(r.evs)-1].Body[0], "waiter's last event: %+v", r)
		case <-time.After(5 * time.Second):
			require.FailNow(t, "a waiter was not woken")
		}
	}
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	evs, seq, err := e.EventsAfter(ctx, 3)
	require.ErrorIs(t, err, context.Canceled, "EventsAfter with a cancelled ctx")
	require.Nil(t, evs, "EventsAfter with a cancelled ctx")
	require.Equal(t, uint64(3), seq, "EventsAfter with a cancelled ctx")
}

func TestPeerCertificatesContext(t *testing.T) {
	require.Nil(t, PeerCertificates(context.Background()), "empty context has certificates")
	chain := []*x509.Certificate{{Raw: []byte{1}}}
	got := PeerCertificates(WithPeerCertificates(context.Background(), chain))
	require.Len(t, got, 1, "PeerCertificates")
	require.Same(t, chain[0], got[0], "PeerCertificates")
}

// TestEventsBoundedByBytes: large events are forgotten by size, not only by
// count; the newest are kept and all are counted.
func TestEventsBoundedByBytes(t *testing.T) {
	e, _ := newEventEngine(t)
	dev := auth.Identity{DeviceID: "dev1"}
	body := make([]byte, 250*1024)
	const n = 300 // 75 MB of bodies
	for i := 0; i < n; i++ {
		body[0], body[1] = byte(i), byte(i>>8)
		require.Nil(t, e.ReceiveEvent(Event{Identity: dev, Body: body}))
	}
	evs := e.Events()
	total := 0
	for _, ev := range evs {
		total += ev.Size()
	}
	require.LessOrEqual(t, total, MaxStoredEventBytes, "bytes of the %d kept events", len(evs))
	require.GreaterOrEqual(t, len(evs), MaxStoredEventBytes/(len(body)+1024), "kept events (%d bytes in all)", total)
	last := evs[len(evs)-1]
	require.Equal(t, n-1, int(last.Body[0])|int(last.Body[1])<<8, "the newest event is not kept")
	require.Equal(t, uint64(n), e.EventCount(), "EventCount")
}

// TestBearerTokensForgotten: the engine remembers a bounded number of
// bearer tokens, dropping expired ones first.
func TestBearerTokensForgotten(t *testing.T) {
	e, c := newEventEngine(t)
	for i := 0; i < maxBearerTokens; i++ {
		e.AddBearerToken(fmt.Sprintf("old-%d", i), c.now().Add(time.Minute))
	}
	c.add(2 * time.Minute) // all of them expired
	e.AddBearerToken("fresh", c.now().Add(time.Hour))
	e.mu.Lock()
	n := len(e.bearer)
	e.mu.Unlock()
	require.Equal(t, 1, n, "bearer tokens remembered, want only the fresh one")
	for i := 0; i < 2*maxBearerTokens; i++ {
		e.AddBearerToken(fmt.Sprintf("live-%d", i), c.now().Add(time.Duration(i+2)*time.Hour))
	}
	e.mu.Lock()
	n = len(e.bearer)
	_, newest := e.bearer[fmt.Sprintf("live-%d", 2*maxBearerTokens-1)]
	e.mu.Unlock()
	require.LessOrEqual(t, n, maxBearerTokens, "bearer tokens remembered")
	require.True(t, newest, "the newest bearer token is not kept")
	herr := e.AuthorizeService("Bearer "+fmt.Sprintf("live-%d", 2*maxBearerTokens-1), "/devices", hubauth.RightsRegistryRead)
	require.Nil(t, herr, "the newest token is refused")
}

// TestCallsBoundedByBytes: call records with large payloads are forgotten
// by size, not only by count.
func TestCallsBoundedByBytes(t *testing.T) {
	e, _ := newEventEngine(t)
	payload := make([]byte, MaxPayload)
	const n = 600 // 77 MB of payloads
	e.mu.Lock()
	for i := 0; i < n; i++ {
		e.storeCallLocked(CallRecord{Method: fmt.Sprint(i), Payload: payload})
	}
	e.mu.Unlock()
	calls := e.Calls()
	total := 0
	for _, c := range calls {
		total += len(c.Payload)
	}
	require.LessOrEqual(t, total, MaxStoredCallBytes, "payload bytes of the %d kept calls", len(calls))
	require.GreaterOrEqual(t, len(calls), MaxStoredCallBytes/(MaxPayload+1024), "kept calls (%d payload bytes)", total)
	require.Equal(t, fmt.Sprint(n-1), calls[len(calls)-1].Method, "the newest call is not kept")
}
