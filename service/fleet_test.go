package service_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

func TestInvokeDeviceMethods(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	var inFlight, maxInFlight atomic.Int32
	var mu sync.Mutex
	release := make(chan struct{})
	var waiting int
	// Devices hold each call until three are in flight at once (or a
	// generous time passed), so the concurrency bound is exercised.
	handler := func(string, []byte) (int, []byte) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := maxInFlight.Load()
			if n <= m || maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		mu.Lock()
		waiting++
		if waiting == 3 {
			close(release)
		}
		mu.Unlock()
		select {
		case <-release:
		case <-time.After(3 * time.Second):
		}
		return 200, []byte(`"done"`)
	}
	var ids []string
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("dev%d", i)
		callbackDevice(t, hub, hub.AddDevice(t, id), handler)
		ids = append(ids, id)
	}
	hub.AddDevice(t, "offline")
	ids = append(ids[:2], append([]string{"offline", "unknown", "bad id"}, ids[2:]...)...)
	c, _ := newClient(t, hub, "", nil)

	res := c.InvokeDeviceMethods(context.Background(), ids, service.CloudToDeviceMethod{MethodName: "m", ResponseTimeout: 10 * time.Second},
		&service.InvokeManyOptions{MaxConcurrency: 3})
	if len(res) != len(ids) {
		t.Fatalf("%d results for %d devices", len(res), len(ids))
	}
	for i, r := range res {
		if r.DeviceID != ids[i] {
			t.Fatalf("result %d is for %q, want %q (input order)", i, r.DeviceID, ids[i])
		}
		var wantErr error
		switch r.DeviceID {
		case "offline":
			wantErr = service.ErrDeviceNotOnline
		case "unknown":
			wantErr = service.ErrDeviceNotFound
		case "bad id":
			wantErr = service.ErrArgumentInvalid
		}
		if wantErr != nil {
			if r.Result != nil || !errors.Is(r.Err, wantErr) {
				t.Fatalf("%s: %v %v, want %v", r.DeviceID, r.Result, r.Err, wantErr)
			}
			continue
		}
		if r.Err != nil || r.Result == nil || r.Result.Status != 200 || string(r.Result.Payload) != `"done"` {
			t.Fatalf("%s: %+v %v", r.DeviceID, r.Result, r.Err)
		}
	}
	if m := maxInFlight.Load(); m > 3 {
		t.Fatalf("%d calls were in flight at once, the bound is 3", m)
	}
	if n := len(hub.Calls()); n != 7 {
		t.Fatalf("the hub handled %d calls, want 7 (5 online, offline, unknown)", n)
	}
}

func TestInvokeDeviceMethodsContext(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The first device cancels the whole run as soon as it gets its call.
	callbackDevice(t, hub, hub.AddDevice(t, "first"), func(string, []byte) (int, []byte) {
		cancel()
		return 200, nil
	})
	ids := []string{"first"}
	for i := 0; i < 4; i++ {
		id := fmt.Sprintf("later%d", i)
		echoDevice(t, hub, hub.AddDevice(t, id), nil, 200)
		ids = append(ids, id)
	}
	c, tries := newClient(t, hub, "", nil)
	res := c.InvokeDeviceMethods(ctx, ids, echo, &service.InvokeManyOptions{MaxConcurrency: 1})
	for i, r := range res {
		if r.DeviceID != ids[i] {
			t.Fatalf("result %d is for %q", i, r.DeviceID)
		}
		if i == 0 {
			// Cancelled while in flight, or answered just before: either
			// way the caller sees one of the two, never another error.
			if r.Err != nil && r.Err != context.Canceled {
				t.Fatalf("first: %v", r.Err)
			}
			continue
		}
		if r.Err != context.Canceled || r.Result != nil {
			t.Fatalf("%s was dispatched after ctx ended: %+v %v", r.DeviceID, r.Result, r.Err)
		}
	}
	if tries.count() != 1 {
		t.Fatalf("%d requests sent, want 1", tries.count())
	}

	// Already cancelled: nothing is sent.
	res = c.InvokeDeviceMethods(ctx, ids, echo, nil)
	for _, r := range res {
		if r.Err != context.Canceled {
			t.Fatalf("%s with a cancelled context: %v", r.DeviceID, r.Err)
		}
	}
	// An invalid method: every entry fails the same way, nothing is sent.
	res = c.InvokeDeviceMethods(context.Background(), ids, service.CloudToDeviceMethod{MethodName: "a b"}, nil)
	for _, r := range res {
		if !errors.Is(r.Err, service.ErrArgumentInvalid) {
			t.Fatalf("%s with an invalid method: %v", r.DeviceID, r.Err)
		}
	}
	if tries.count() != 1 {
		t.Fatalf("%d requests sent in all, want 1", tries.count())
	}
	if res := c.InvokeDeviceMethods(context.Background(), nil, echo, nil); len(res) != 0 {
		t.Fatalf("no devices gave %d results", len(res))
	}
}
