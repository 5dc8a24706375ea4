package engine

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
)

var c2dT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// newC2DEngine returns an engine whose clock stands still at c2dT0 (only
// AdvanceJobClock moves it) with the given devices.
func newC2DEngine(t *testing.T, cfg C2DConfig, devices ...string) *Engine {
	t.Helper()
	return newJobEngine(t, Config{Now: func() time.Time { return c2dT0 }, C2D: cfg}, devices...)
}

func devID(id string) auth.Identity {
	return auth.Identity{HostName: "h.azure-devices.net", DeviceID: id}
}

func enqueue(t *testing.T, e *Engine, dev, mid, ack string) C2DMessage {
	t.Helper()
	m, herr := e.EnqueueC2D(dev, C2DMessage{MessageID: mid, Ack: ack, Body: []byte("b-" + mid)})
	require.Nil(t, herr)
	return m
}

// allFeedback receives and completes every ready batch.
func allFeedback(t *testing.T, e *Engine) []FeedbackRecord {
	t.Helper()
	var out []FeedbackRecord
	for {
		b, ok := e.ReceiveFeedback()
		if !ok {
			return out
		}
		out = append(out, b.Records...)
		require.Nil(t, e.SettleFeedback(b.LockToken, C2DComplete))
	}
}

func statuses(recs []FeedbackRecord) []string {
	var s []string
	for _, r := range recs {
		s = append(s, r.OriginalMessageID+":"+r.StatusCode)
	}
	return s
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: channel not closed", what)
	}
}

func TestC2DEnqueueReceiveComplete(t *testing.T) {
	e := newC2DEngine(t, C2DConfig{}, "d1")
	dev, _ := e.GetDevice("d1")
	in := C2DMessage{MessageID: "m1", CorrelationID: "c1", UserID: "u", To: "/devices/d1/messages/deviceBound",
		ContentType: "text/plain", ContentEncoding: "utf-8", Ack: "Full",
		Properties: map[string]string{"k": "v"}, Body: []byte("hello")}
	q, herr := e.EnqueueC2D("d1", in)
	require.Nil(t, herr)
	assert.Equal(t, c2dT0, q.EnqueuedTime)
	assert.Equal(t, c2dT0.Add(time.Hour), q.ExpiryTime, "default TTL 1 h")
	assert.Equal(t, int64(1), q.SequenceNumber)
	assert.Equal(t, "Full", q.Ack, "ack echoed as sent")
	in.Properties["k"] = "changed"
	in.Body[0] = 'X'

	d, _ := e.GetDevice("d1")
	assert.Equal(t, 1, d.CloudToDeviceMessageCount)
	tw, _ := e.GetTwin("d1", "")
	assert.Equal(t, 1, tw.CloudToDeviceMessageCount)

	m, ok := e.ReceiveC2D(devID("d1"))
	require.True(t, ok)
	assert.Equal(t, "m1", m.MessageID)
	assert.Equal(t, "hello", string(m.Body), "the queue keeps its own copy")
	assert.Equal(t, "v", m.Properties["k"])
	assert.Len(t, m.LockToken, 36)
	assert.Equal(t, 0, m.DeliveryCount)
	_, ok = e.ReceiveC2D(devID("d1"))
	assert.False(t, ok, "the only message is locked")
	qs := e.C2DQueue("d1")
	require.Len(t, qs, 1)
	assert.True(t, qs[0].Locked)

	require.Nil(t, e.SettleC2D(devID("d1"), m.LockToken, C2DComplete))
	assert.Empty(t, e.C2DQueue("d1"))
	d, _ = e.GetDevice("d1")
	assert.Equal(t, 0, d.CloudToDeviceMessageCount)
	herr = e.SettleC2D(devID("d1"), m.LockToken, C2DComplete)
	require.NotNil(t, herr)
	assert.Equal(t, CodeDeviceMessageLockLost, herr.Code)
	assert.Equal(t, 412, herr.Status)
	assert.Equal(t, "DeviceMessageLockLost", herr.Name)

	recs := allFeedback(t, e)
	require.Len(t, recs, 1)
	assert.Equal(t, FeedbackRecord{OriginalMessageID: "m1", DeviceGenerationID: dev.GenerationID, DeviceID: "d1",
		EnqueuedTime: c2dT0, StatusCode: "Success", Description: "Success"}, recs[0])
}

func TestC2DEnqueueErrors(t *testing.T) {
	e := newC2DEngine(t, C2DConfig{}, "d1")
	_, herr := e.EnqueueC2D("nope", C2DMessage{})
	require.NotNil(t, herr)
	assert.Equal(t, CodeDeviceNotFound, herr.Code)

	_, herr = e.EnqueueC2D("d1", C2DMessage{Ack: "sometimes"})
	require.NotNil(t, herr)
	assert.Equal(t, CodeArgumentInvalid, herr.Code)

	_, herr = e.EnqueueC2D("d1", C2DMessage{Body: make([]byte, 64*1024)})
	require.Nil(t, herr, "exactly 64 KiB")
	_, herr = e.EnqueueC2D("d1", C2DMessage{Body: make([]byte, 64*1024-1), Properties: map[string]string{"k": "v"}})
	require.NotNil(t, herr)
	assert.Equal(t, CodeMessageTooLarge, herr.Code)
	assert.Equal(t, 413, herr.Status)

	// Depth 50, locked messages included.
	for i := 1; i < 50; i++ {
		enqueue(t, e, "d1", fmt.Sprint(i), "")
	}
	_, ok := e.ReceiveC2D(devID("d1"))
	require.True(t, ok)
	_, herr = e.EnqueueC2D("d1", C2DMessage{})
	require.NotNil(t, herr)
	assert.Equal(t, CodeDeviceMaximumQueueDepthExceeded, herr.Code)
	assert.Equal(t, 403, herr.Status)
	assert.Equal(t, "DeviceMaximumQueueDepthExceeded", herr.Name)
	d, _ := e.GetDevice("d1")
	assert.Equal(t, 50, d.CloudToDeviceMessageCount)

	// Disabled devices are not sent to; modules have no queue.
	_, herr = e.PutDevice("d2", Device{Status: "disabled"}, "")
	require.Nil(t, herr)
	_, herr = e.EnqueueC2D("d2", C2DMessage{})
	require.NotNil(t, herr)
	assert.Equal(t, CodeDeviceNotFound, herr.Code)
	_, herr = e.PutModule("d1", "m", Module{}, "")
	require.Nil(t, herr)
	_, ok = e.ReceiveC2D(auth.Identity{DeviceID: "d1", ModuleID: "m"})
	assert.False(t, ok)
}

func TestC2DExpiry(t *testing.T) {
	e := newC2DEngine(t, C2DConfig{}, "d1")
	enqueue(t, e, "d1", "default", "negative")
	short, herr := e.EnqueueC2D("d1", C2DMessage{MessageID: "short", Ack: "full", ExpiryTime: c2dT0.Add(time.Minute)})
	require.Nil(t, herr)
	assert.Equal(t, c2dT0.Add(time.Minute), short.ExpiryTime)
	long, herr := e.EnqueueC2D("d1", C2DMessage{MessageID: "long", Ack: "full", ExpiryTime: c2dT0.Add(100 * time.Hour)})
	require.Nil(t, herr)
	assert.Equal(t, c2dT0.Add(48*time.Hour), long.ExpiryTime, "capped at 2 days")
	_, herr = e.EnqueueC2D("d1", C2DMessage{MessageID: "past", Ack: "full", ExpiryTime: c2dT0.Add(-time.Second)})
	require.Nil(t, herr)
	assert.Equal(t, []string{"past:Expired"}, statuses(allFeedback(t, e)), "an expiry in the past expires at once")
	assert.Len(t, e.C2DQueue("d1"), 3)

	// A locked message expires too; its lock is then lost.
	m, ok := e.ReceiveC2D(devID("d1"))
	require.True(t, ok)
	require.Equal(t, "default", m.MessageID)
	e.AdvanceJobClock(time.Hour)
	assert.Equal(t, []string{"long"}, ids(e.C2DQueue("d1")))
	herr = e.SettleC2D(devID("d1"), m.LockToken, C2DComplete)
	require.NotNil(t, herr)
	assert.Equal(t, CodeDeviceMessageLockLost, herr.Code)

	recs := allFeedback(t, e)
	assert.Equal(t, []string{"default:Expired", "short:Expired"}, statuses(recs))
	assert.Equal(t, c2dT0.Add(time.Hour), recs[0].EnqueuedTime, "feedback time = expiry time")
	assert.Equal(t, c2dT0.Add(time.Minute), recs[1].EnqueuedTime)
	e.AdvanceJobClock(47 * time.Hour)
	assert.Empty(t, e.C2DQueue("d1"))
	d, _ := e.GetDevice("d1")
	assert.Equal(t, 0, d.CloudToDeviceMessageCount)
}

func ids(q []QueuedC2D) []string {
	var s []string
	for _, m := range q {
		s = append(s, m.MessageID)
	}
	return s
}

func TestC2DLockExpiryRedelivers(t *testing.T) {
	e := newC2DEngine(t, C2DConfig{}, "d1")
	enqueue(t, e, "d1", "a", "")
	enqueue(t, e, "d1", "b", "")
	m1, ok := e.ReceiveC2D(devID("d1"))
	require.True(t, ok)
	require.Equal(t, "a", m1.MessageID)

	avail := e.C2DAvailable(devID("d1"))
	e.AdvanceJobClock(59 * time.Second)
	m2, ok := e.ReceiveC2D(devID("d1"))
	require.True(t, ok)
	assert.Equal(t, "b", m2.MessageID, "a is still locked")
	e.AdvanceJobClock(time.Second)
	waitClosed(t, avail, "the timer announces the lock expiry")

	m3, ok := e.ReceiveC2D(devID("d1"))
	require.True(t, ok)
	assert.Equal(t, "a", m3.MessageID, "redelivered after its lock expired")
	assert.Equal(t, 0, m3.DeliveryCount, "a lock expiry does not count")
	assert.NotEqual(t, m1.LockToken, m3.LockToken)
	herr := e.SettleC2D(devID("d1"), m1.LockToken, C2DComplete)
	require.NotNil(t, herr, "the first delivery's token is stale")
	assert.Equal(t, CodeDeviceMessageLockLost, herr.Code)
	require.Nil(t, e.SettleC2D(devID("d1"), m3.LockToken, C2DComplete))

	// Release: back at once, count unchanged; a wrong identity cannot settle.
	herr = e.SettleC2D(devID("other"), m2.LockToken, C2DComplete)
	require.NotNil(t, herr)
	e.ReleaseC2D(devID("d1"), m2.LockToken)
	m4, ok := e.ReceiveC2D(devID("d1"))
	require.True(t, ok)
	assert.Equal(t, "b", m4.MessageID)
	assert.Equal(t, 0, m4.DeliveryCount)
}

func TestC2DAbandonAndDeliveryCount(t *testing.T) {
	e := newC2DEngine(t, C2DConfig{}, "d1")
	enqueue(t, e, "d1", "a", "negative")
	for i := 0; i < 10; i++ {
		m, ok := e.ReceiveC2D(devID("d1"))
		require.True(t, ok, "delivery %d", i+1)
		assert.Equal(t, i, m.DeliveryCount)
		require.Nil(t, e.SettleC2D(devID("d1"), m.LockToken, C2DAbandon))
	}
	assert.Empty(t, e.C2DQueue("d1"), "abandoned 10 times: dead-lettered")
	assert.Equal(t, []string{"a:DeliveryCountExceeded"}, statuses(allFeedback(t, e)))

	e2 := newC2DEngine(t, C2DConfig{MaxDeliveryCount: 2}, "d1")
	enqueue(t, e2, "d1", "a", "positive")
	m, _ := e2.ReceiveC2D(devID("d1"))
	require.Nil(t, e2.SettleC2D(devID("d1"), m.LockToken, C2DAbandon))
	assert.Equal(t, 1, e2.C2DQueue("d1")[0].DeliveryCount)
	m, _ = e2.ReceiveC2D(devID("d1"))
	require.Nil(t, e2.SettleC2D(devID("d1"), m.LockToken, C2DAbandon))
	assert.Empty(t, e2.C2DQueue("d1"))
	assert.Empty(t, allFeedback(t, e2), "positive ack: no feedback for a dead letter")
}

func TestC2DRejectAndAckValues(t *testing.T) {
	e := newC2DEngine(t, C2DConfig{FeedbackBatchDelay: time.Nanosecond}, "d1")
	for _, ack := range []string{"", "none", "positive", "negative", "full", "NEGATIVE"} {
		enqueue(t, e, "d1", "rej-"+ack, ack)
		m, ok := e.ReceiveC2D(devID("d1"))
		require.True(t, ok)
		require.Nil(t, e.SettleC2D(devID("d1"), m.LockToken, C2DReject))
		enqueue(t, e, "d1", "ok-"+ack, ack)
		m, ok = e.ReceiveC2D(devID("d1"))
		require.True(t, ok)
		require.Nil(t, e.SettleC2D(devID("d1"), m.LockToken, C2DComplete))
		e.AdvanceJobClock(time.Millisecond)
	}
	assert.Equal(t, []string{
		"ok-positive:Success", "rej-negative:Rejected", "rej-full:Rejected", "ok-full:Success", "rej-NEGATIVE:Rejected",
	}, statuses(allFeedback(t, e)))
	assert.NotNil(t, e.SettleC2D(devID("d1"), "x", C2DOutcome(9)))
}

func TestC2DPurge(t *testing.T) {
	e := newC2DEngine(t, C2DConfig{}, "d1")
	_, herr := e.PurgeC2D("nope")
	require.NotNil(t, herr)
	assert.Equal(t, CodeDeviceNotFound, herr.Code)
	n, herr := e.PurgeC2D("d1")
	require.Nil(t, herr)
	assert.Zero(t, n)

	enqueue(t, e, "d1", "a", "full")
	enqueue(t, e, "d1", "b", "positive")
	enqueue(t, e, "d1", "c", "")
	m, _ := e.ReceiveC2D(devID("d1"))
	avail := e.C2DAvailable(devID("d1"))
	n, herr = e.PurgeC2D("d1")
	require.Nil(t, herr)
	assert.Equal(t, 3, n)
	waitClosed(t, avail, "purge")
	assert.Empty(t, e.C2DQueue("d1"))
	d, _ := e.GetDevice("d1")
	assert.Zero(t, d.CloudToDeviceMessageCount)
	assert.NotNil(t, e.SettleC2D(devID("d1"), m.LockToken, C2DComplete))
	assert.Equal(t, []string{"a:Purged"}, statuses(allFeedback(t, e)))
}

func TestC2DDeleteDeviceDropsQueueAndFeedback(t *testing.T) {
	e := newC2DEngine(t, C2DConfig{}, "d1", "d2")
	e.InjectFeedback(FeedbackRecord{OriginalMessageID: "first", DeviceID: "x", StatusCode: "Success"}) // starts the 15 s window
	enqueue(t, e, "d1", "a", "full")
	enqueue(t, e, "d1", "b", "full")
	enqueue(t, e, "d2", "c", "full")
	for _, d := range []string{"d1", "d2"} {
		m, _ := e.ReceiveC2D(devID(d))
		require.Nil(t, e.SettleC2D(devID(d), m.LockToken, C2DComplete))
	}
	avail := e.C2DAvailable(devID("d1"))
	require.Nil(t, e.DeleteDevice("d1", ""))
	waitClosed(t, avail, "delete")
	_, ok := e.ReceiveC2D(devID("d1"))
	assert.False(t, ok)
	_, herr := e.PutDevice("d1", Device{}, "")
	require.Nil(t, herr)
	assert.Empty(t, e.C2DQueue("d1"), "a re-created device starts empty")
	d, _ := e.GetDevice("d1")
	assert.Zero(t, d.CloudToDeviceMessageCount)

	e.AdvanceJobClock(15 * time.Second)
	assert.Equal(t, []string{"first:Success", "c:Success"}, statuses(allFeedback(t, e)),
		"d1's pending feedback went with it")
}

func TestC2DFeedbackBatching(t *testing.T) {
	e := newC2DEngine(t, C2DConfig{}, "d1")
	fa := e.FeedbackAvailable()
	e.InjectFeedback(FeedbackRecord{OriginalMessageID: "r0", StatusCode: "Success"})
	waitClosed(t, fa, "first batch")
	b, ok := e.ReceiveFeedback()
	require.True(t, ok, "the first record goes out at once")
	assert.Equal(t, c2dT0, b.EnqueuedTime)
	assert.Equal(t, []string{"r0:Success"}, statuses(b.Records))
	require.Nil(t, e.SettleFeedback(b.LockToken, C2DComplete))
	herr := e.SettleFeedback(b.LockToken, C2DComplete)
	require.NotNil(t, herr)
	assert.Equal(t, CodeDeviceMessageLockLost, herr.Code)

	// Within 15 s of the last batch, records wait until 64 are there.
	for i := 1; i <= 70; i++ {
		e.InjectFeedback(FeedbackRecord{OriginalMessageID: fmt.Sprint("r", i), StatusCode: "Expired"})
	}
	b, ok = e.ReceiveFeedback()
	require.True(t, ok)
	assert.Len(t, b.Records, 64)
	_, ok = e.ReceiveFeedback()
	assert.False(t, ok, "6 records wait")
	fa = e.FeedbackAvailable()
	e.AdvanceJobClock(15 * time.Second)
	waitClosed(t, fa, "the timer makes the late batch")
	b2, ok := e.ReceiveFeedback()
	require.True(t, ok)
	assert.Len(t, b2.Records, 6)
	assert.Equal(t, "r65", b2.Records[0].OriginalMessageID)

	// Abandon: back with DeliveryCount+1; lock expiry: back, count unchanged.
	require.Nil(t, e.SettleFeedback(b.LockToken, C2DAbandon))
	require.Nil(t, e.SettleFeedback(b2.LockToken, C2DReject))
	b, ok = e.ReceiveFeedback()
	require.True(t, ok)
	assert.Equal(t, 1, b.DeliveryCount)
	fa = e.FeedbackAvailable()
	e.AdvanceJobClock(60 * time.Second)
	waitClosed(t, fa, "feedback lock expiry")
	assert.NotNil(t, e.SettleFeedback(b.LockToken, C2DComplete))
	b, ok = e.ReceiveFeedback()
	require.True(t, ok)
	assert.Equal(t, 1, b.DeliveryCount)
	e.ReleaseFeedback(b.LockToken)
	for i := 1; i < 10; i++ {
		b, ok = e.ReceiveFeedback()
		require.True(t, ok)
		require.Nil(t, e.SettleFeedback(b.LockToken, C2DAbandon))
	}
	_, ok = e.ReceiveFeedback()
	assert.False(t, ok, "abandoned 10 times: dropped")

	// TTL: a batch nobody takes is dropped after 1 h.
	e.InjectFeedback(FeedbackRecord{OriginalMessageID: "old"})
	e.AdvanceJobClock(15 * time.Second)
	e.AdvanceJobClock(time.Hour)
	_, ok = e.ReceiveFeedback()
	assert.False(t, ok)
}

func TestC2DAvailableOnEnqueue(t *testing.T) {
	e := newC2DEngine(t, C2DConfig{}, "d1")
	ch := e.C2DAvailable(devID("d1"))
	enqueue(t, e, "d1", "a", "")
	waitClosed(t, ch, "enqueue")
	mod := e.C2DAvailable(auth.Identity{DeviceID: "d1", ModuleID: "m"})
	select {
	case <-mod:
		t.Fatal("a module's channel closed")
	default:
	}
}

func TestC2DConcurrent(t *testing.T) {
	e := newC2DEngine(t, C2DConfig{MaxQueueDepth: 1000}, "d1")
	const n = 200
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n/4; i++ {
				_, _ = e.EnqueueC2D("d1", C2DMessage{MessageID: fmt.Sprint(w, "-", i), Ack: "positive"})
			}
		}()
	}
	var mu sync.Mutex
	got := map[string]bool{}
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				done := len(got) == n
				mu.Unlock()
				if done {
					return
				}
				ch := e.C2DAvailable(devID("d1"))
				m, ok := e.ReceiveC2D(devID("d1"))
				if !ok {
					select {
					case <-ch:
					case <-time.After(50 * time.Millisecond):
					}
					continue
				}
				if e.SettleC2D(devID("d1"), m.LockToken, C2DComplete) == nil {
					mu.Lock()
					got[m.MessageID] = true
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	assert.Len(t, got, n)
	e.AdvanceJobClock(time.Minute)
	total := 0
	for _, r := range allFeedback(t, e) {
		total++
		assert.True(t, strings.Contains(r.OriginalMessageID, "-"))
	}
	assert.Equal(t, n, total)
}
