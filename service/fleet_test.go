package service_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
	require.Len(t, res, len(ids), "results, one per device")
	for i, r := range res {
		require.Equal(t, ids[i], r.DeviceID, "result %d (input order)", i)
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
			assert.Nil(t, r.Result, "%s: result", r.DeviceID)
			assert.ErrorIs(t, r.Err, wantErr, r.DeviceID)
			continue
		}
		assert.NoError(t, r.Err, r.DeviceID)
		if assert.NotNil(t, r.Result, r.DeviceID) {
			assert.Equal(t, 200, r.Result.Status, "%s: status", r.DeviceID)
			assert.Equal(t, `"done"`, string(r.Result.Payload), "%s: payload", r.DeviceID)
		}
	}
	assert.LessOrEqual(t, maxInFlight.Load(), int32(3), "calls in flight at once, the bound is 3")
	assert.Len(t, hub.Calls(), 7, "calls the hub handled (5 online, offline, unknown)")
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
	require.Len(t, res, len(ids))
	for i, r := range res {
		require.Equal(t, ids[i], r.DeviceID, "result %d", i)
		if i == 0 {
			// Cancelled while in flight, or answered just before: either
			// way the caller sees one of the two, never another error.
			if r.Err != nil {
				assert.Same(t, context.Canceled, r.Err, "first")
			}
			continue
		}
		assert.Same(t, context.Canceled, r.Err, "%s was dispatched after ctx ended", r.DeviceID)
		assert.Nil(t, r.Result, "%s was dispatched after ctx ended", r.DeviceID)
	}
	assert.Equal(t, 1, tries.count(), "requests sent")

	// Already cancelled: nothing is sent.
	res = c.InvokeDeviceMethods(ctx, ids, echo, nil)
	for _, r := range res {
		assert.Same(t, context.Canceled, r.Err, "%s with a cancelled context", r.DeviceID)
	}
	// An invalid method: every entry fails the same way, nothing is sent.
	res = c.InvokeDeviceMethods(context.Background(), ids, service.CloudToDeviceMethod{MethodName: "a b"}, nil)
	for _, r := range res {
		assert.ErrorIs(t, r.Err, service.ErrArgumentInvalid, "%s with an invalid method", r.DeviceID)
	}
	assert.Equal(t, 1, tries.count(), "requests sent in all")
	assert.Empty(t, c.InvokeDeviceMethods(context.Background(), nil, echo, nil), "results for no devices")
}
