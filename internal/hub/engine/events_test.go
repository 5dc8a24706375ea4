package engine

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/iothub-go/iothub/auth"
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
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	if _, herr := e.PutDevice("dev1", Device{}, ""); herr != nil {
		t.Fatal(herr)
	}
	if _, herr := e.PutModule("dev1", "mod1", Module{}, ""); herr != nil {
		t.Fatal(herr)
	}
	return e, c
}

func TestReceiveEvent(t *testing.T) {
	e, c := newEventEngine(t)
	dev := auth.Identity{DeviceID: "dev1"}
	body := []byte("hello")
	props := map[string]string{"a": "1"}
	if herr := e.ReceiveEvent(Event{Identity: dev, Protocol: "mqtt", Body: body, Properties: props, MessageID: "m", CorrelationID: "c",
		ContentType: "application/json", ContentEncoding: "utf-8"}); herr != nil {
		t.Fatal(herr)
	}
	// The engine keeps its own copy.
	body[0], props["a"] = 'X', "changed"
	evs := e.Events()
	if len(evs) != 1 {
		t.Fatalf("%d events", len(evs))
	}
	ev := evs[0]
	if string(ev.Body) != "hello" || ev.Properties["a"] != "1" || ev.Identity.HostName != "h.azure-devices.net" ||
		ev.MessageID != "m" || ev.CorrelationID != "c" || ev.ContentType != "application/json" || ev.ContentEncoding != "utf-8" ||
		!ev.EnqueuedTime.Equal(c.now()) || ev.Protocol != "mqtt" {
		t.Fatalf("event %+v", ev)
	}
	evs[0].Body[0], evs[0].Properties["a"] = 'Y', "reader"
	if again := e.Events()[0]; string(again.Body) != "hello" || again.Properties["a"] != "1" {
		t.Fatalf("a reader changed the stored event: %+v", again)
	}

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
		herr := e.ReceiveEvent(tc.ev)
		if herr == nil || herr.Code != tc.code {
			t.Errorf("%s: %v, want %d", tc.name, herr, tc.code)
		}
	}
	if herr := e.ReceiveEvent(Event{Identity: dev, Body: make([]byte, MaxEventSize-2), Properties: map[string]string{"a": "b"}}); herr != nil {
		t.Errorf("exactly 256 KB: %v", herr)
	}
	if _, herr := e.PutDevice("dev1", Device{Status: "disabled"}, "*"); herr != nil {
		t.Fatal(herr)
	}
	if herr := e.ReceiveEvent(Event{Identity: dev}); herr == nil || herr.Code != CodeUnauthorized {
		t.Errorf("disabled device: %v", herr)
	}
	if n := e.EventCount(); n != 2 {
		t.Errorf("EventCount = %d, want 2", n)
	}
}

func TestEventLastActivity(t *testing.T) {
	e, c := newEventEngine(t)
	c.add(time.Minute)
	if herr := e.ReceiveEvent(Event{Identity: auth.Identity{DeviceID: "dev1", ModuleID: "mod1"}}); herr != nil {
		t.Fatal(herr)
	}
	m, _ := e.GetModule("dev1", "mod1")
	d, _ := e.GetDevice("dev1")
	if m.LastActivityTime != "2026-05-01T12:01:00.0000000Z" || d.LastActivityTime != zeroTime {
		t.Fatalf("after a module event: module %s, device %s", m.LastActivityTime, d.LastActivityTime)
	}
	c.add(time.Minute)
	if herr := e.ReceiveEvent(Event{Identity: auth.Identity{DeviceID: "dev1"}}); herr != nil {
		t.Fatal(herr)
	}
	d2, _ := e.GetDevice("dev1")
	if d2.LastActivityTime != "2026-05-01T12:02:00.0000000Z" || d2.ETag != d.ETag {
		t.Fatalf("after a device event: %s (etag %s→%s)", d2.LastActivityTime, d.ETag, d2.ETag)
	}
}

func TestEventsBounded(t *testing.T) {
	e, _ := newEventEngine(t)
	dev := auth.Identity{DeviceID: "dev1"}
	const extra = 25
	for i := 0; i < MaxStoredEvents+extra; i++ {
		if herr := e.ReceiveEvent(Event{Identity: dev, Body: []byte{byte(i), byte(i >> 8)}}); herr != nil {
			t.Fatal(herr)
		}
	}
	evs := e.Events()
	if len(evs) != MaxStoredEvents {
		t.Fatalf("stored %d events, want %d", len(evs), MaxStoredEvents)
	}
	first := int(evs[0].Body[0]) | int(evs[0].Body[1])<<8
	last := int(evs[len(evs)-1].Body[0]) | int(evs[len(evs)-1].Body[1])<<8
	if first != extra || last != MaxStoredEvents+extra-1 {
		t.Fatalf("kept events %d..%d, want %d..%d", first, last, extra, MaxStoredEvents+extra-1)
	}
	if n := e.EventCount(); n != MaxStoredEvents+extra {
		t.Fatalf("EventCount = %d", n)
	}
	// WaitEvents counts every accepted event, stored or forgotten.
	got, err := e.WaitEvents(context.Background(), MaxStoredEvents+extra)
	if err != nil || len(got) != MaxStoredEvents {
		t.Fatalf("WaitEvents: %d, %v", len(got), err)
	}
	// EventsAfter skips the forgotten ones.
	got, seq, err := e.EventsAfter(context.Background(), 3)
	if err != nil || seq != MaxStoredEvents+extra || len(got) != MaxStoredEvents {
		t.Fatalf("EventsAfter(3) = %d events, seq %d, %v", len(got), seq, err)
	}
	got, seq, err = e.EventsAfter(context.Background(), MaxStoredEvents+extra-2)
	if err != nil || seq != MaxStoredEvents+extra || len(got) != 2 || got[1].Body[0] != byte((MaxStoredEvents+extra-1)%256) {
		t.Fatalf("EventsAfter(n-2) = %d events, seq %d, %v", len(got), seq, err)
	}
}

func TestWaitEvents(t *testing.T) {
	e, _ := newEventEngine(t)
	dev := auth.Identity{DeviceID: "dev1"}

	// Nothing yet: ctx ends the wait, with what there is.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	evs, err := e.WaitEvents(ctx, 1)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || len(evs) != 0 {
		t.Fatalf("WaitEvents on an empty hub: %d, %v", len(evs), err)
	}
	if evs, err := e.WaitEvents(context.Background(), 0); err != nil || len(evs) != 0 {
		t.Fatalf("WaitEvents(0): %d, %v", len(evs), err)
	}

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
			t.Fatalf("WaitEvents(3) returned after %d events: %+v", i, r)
		case r := <-next:
			t.Fatalf("EventsAfter(2) returned after %d events: %+v", i, r)
		default:
		}
		if herr := e.ReceiveEvent(Event{Identity: dev, Body: []byte{byte('a' + i)}}); herr != nil {
			t.Fatal(herr)
		}
	}
	for _, ch := range []chan result{waiting, next} {
		select {
		case r := <-ch:
			if r.err != nil || len(r.evs) == 0 || r.evs[len(r.evs)-1].Body[0] != 'c' {
				t.Fatalf("waiter got %+v", r)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a waiter was not woken")
		}
	}
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if evs, seq, err := e.EventsAfter(ctx, 3); !errors.Is(err, context.Canceled) || evs != nil || seq != 3 {
		t.Fatalf("EventsAfter with a cancelled ctx: %v %d %v", evs, seq, err)
	}
}

func TestPeerCertificatesContext(t *testing.T) {
	if PeerCertificates(context.Background()) != nil {
		t.Fatal("empty context has certificates")
	}
	chain := []*x509.Certificate{{Raw: []byte{1}}}
	got := PeerCertificates(WithPeerCertificates(context.Background(), chain))
	if len(got) != 1 || got[0] != chain[0] {
		t.Fatalf("PeerCertificates = %v", got)
	}
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
		if herr := e.ReceiveEvent(Event{Identity: dev, Body: body}); herr != nil {
			t.Fatal(herr)
		}
	}
	evs := e.Events()
	total := 0
	for _, ev := range evs {
		total += ev.Size()
	}
	if total > MaxStoredEventBytes || len(evs) < MaxStoredEventBytes/(len(body)+1024) {
		t.Fatalf("kept %d events of %d bytes in all; want the newest ones within %d bytes", len(evs), total, MaxStoredEventBytes)
	}
	if last := evs[len(evs)-1]; int(last.Body[0])|int(last.Body[1])<<8 != n-1 {
		t.Fatal("the newest event is not kept")
	}
	if c := e.EventCount(); c != n {
		t.Fatalf("EventCount = %d, want %d", c, n)
	}
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
	if n != 1 {
		t.Fatalf("%d bearer tokens remembered, want only the fresh one", n)
	}
	for i := 0; i < 2*maxBearerTokens; i++ {
		e.AddBearerToken(fmt.Sprintf("live-%d", i), c.now().Add(time.Duration(i+2)*time.Hour))
	}
	e.mu.Lock()
	n = len(e.bearer)
	_, newest := e.bearer[fmt.Sprintf("live-%d", 2*maxBearerTokens-1)]
	e.mu.Unlock()
	if n > maxBearerTokens || !newest {
		t.Fatalf("%d bearer tokens remembered (newest kept: %v), want at most %d", n, newest, maxBearerTokens)
	}
	if herr := e.AuthorizeService("Bearer "+fmt.Sprintf("live-%d", 2*maxBearerTokens-1), "/devices", auth.RightsRegistryRead); herr != nil {
		t.Fatalf("the newest token is refused: %v", herr)
	}
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
	if total > MaxStoredCallBytes || len(calls) < MaxStoredCallBytes/(MaxPayload+1024) || calls[len(calls)-1].Method != fmt.Sprint(n-1) {
		t.Fatalf("kept %d calls of %d payload bytes; want the newest within %d bytes", len(calls), total, MaxStoredCallBytes)
	}
}
