package engine

// Cloud-to-device (C2D) messages: a queue per device and the hub-wide
// feedback queue, with IoT Hub's rules (MicrosoftDocs/azure-docs
// articles/iot-hub/iot-hub-devguide-messages-c2d.md, "C2D doc" below, and
// iot-hub-devguide-quotas-throttling.md, "quotas"):
//
//   - A device queue holds at most 50 messages ("Maximum pending messages
//     for delivery is 50 per device", quotas); one more is refused with
//     403004 DeviceMaximumQueueDepthExceeded.
//   - A message is at most 64 KB (quotas, "Other limits"): 413001.
//   - Every message expires: at the expiry the service set, capped at two
//     days after it was enqueued (the range of cloudToDevice.defaultTtl),
//     or one hour after (defaultTtlAsIso8601 PT1H). An expired message is
//     dead-lettered, locked or not, with feedback "Expired".
//   - A receive locks the message for one minute, not configurable (C2D
//     doc). When the lock expires the message is available again and its
//     delivery count does NOT increase: only an explicit abandon counts
//     ("Understanding delivery count behavior", C2D doc, 2026). Abandoned
//     maxDeliveryCount (10) times, it is dead-lettered with
//     "DeliveryCountExceeded". Reject dead-letters it ("Rejected"),
//     complete removes it ("Success").
//   - Feedback ("iothub-ack": none, positive, negative, full; C2D doc)
//     is batched hub-wide: a batch goes out when it has 64 records or 15 s
//     after the previous batch, whichever is first (C2D doc). Batches are
//     received and settled like C2D messages: lock 60 s
//     (feedback.lockDuration), abandoned 10 times (feedback.maxDeliveryCount)
//     they are dropped, and they are dropped 1 h after they were made
//     (feedback.ttl). [inf] A purge produces "Purged" records for
//     negative/full acks; a lock expiry of a batch does not count as a
//     delivery, as for messages.
//
// Delivery is at-least-once: a message is delivered again when its lock
// expires before it is settled, when the transport that took it ends
// (ReleaseC2D) or when it is abandoned. Messages keep their queue position:
// a message back from a lock is the first to be received again.
//
// Time runs on the hub clock (hubNow, the clock jobs use): AdvanceJobClock
// expires messages, locks and feedback at once. Every operation first
// applies what is due on its queue; one timer goroutine (c2dLoop) applies
// it when nobody asks, so that push transports waiting on C2DAvailable and
// feedback receivers waiting on FeedbackAvailable wake up.

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/iothub-go/iothub/auth"
)

// IoT Hub's C2D defaults (see the file comment for sources).
const (
	DefaultC2DTTL                       = time.Hour
	DefaultC2DMaxTTL                    = 48 * time.Hour
	DefaultC2DMaxDeliveryCount          = 10
	DefaultC2DMaxQueueDepth             = 50
	DefaultC2DLockTimeout               = time.Minute
	DefaultC2DMaxSize                   = 64 * 1024
	DefaultFeedbackBatchMax             = 64
	DefaultFeedbackBatchDelay           = 15 * time.Second
	DefaultFeedbackLockTimeout          = 60 * time.Second
	DefaultFeedbackMaxDelivery          = 10
	DefaultFeedbackTTL                  = time.Hour
	CodeDeviceMaximumQueueDepthExceeded = 403004
	CodeDeviceMessageLockLost           = 412002
)

// Feedback status codes (FeedbackRecord.StatusCode), as IoT Hub spells them.
const (
	FeedbackSuccess               = "Success"
	FeedbackExpired               = "Expired"
	FeedbackDeliveryCountExceeded = "DeliveryCountExceeded"
	FeedbackRejected              = "Rejected"
	FeedbackPurged                = "Purged"
)

// C2DConfig configures the cloud-to-device queues. Zero fields take IoT
// Hub's defaults.
type C2DConfig struct {
	DefaultTTL          time.Duration // 1 h
	MaxTTL              time.Duration // 48 h (a longer requested expiry is capped)
	MaxDeliveryCount    int           // 10
	MaxQueueDepth       int           // 50
	LockTimeout         time.Duration // 1 min
	MaxSize             int           // 64 KiB (body + properties, see c2dSize)
	FeedbackBatchMax    int           // 64 records per batch
	FeedbackBatchDelay  time.Duration // 15 s: a batch goes out at most this long after the previous one
	FeedbackLockTimeout time.Duration // 60 s
	FeedbackMaxDelivery int           // 10
	FeedbackTTL         time.Duration // 1 h
}

// CheckSettings checks the settings an IoT Hub resource lets its owner
// change against the ranges IoT Hub accepts (the C2D guide's table):
// DefaultTTL and FeedbackTTL 1 minute to 2 days, MaxDeliveryCount and
// FeedbackMaxDelivery 1 to 100, FeedbackLockTimeout 5 to 300 seconds;
// zero is the default. The error names the setting first, as
// "DefaultTTL 1s is out of range: ...".
func (c C2DConfig) CheckSettings() error {
	dur := func(name string, d, lo, hi time.Duration) error {
		if d != 0 && (d < lo || d > hi) {
			return fmt.Errorf("%s %v is out of range: want %v to %v, or 0 for the default", name, d, lo, hi)
		}
		return nil
	}
	count := func(name string, n int) error {
		if n != 0 && (n < 1 || n > 100) {
			return fmt.Errorf("%s %d is out of range: want 1 to 100, or 0 for the default", name, n)
		}
		return nil
	}
	for _, err := range []error{
		dur("DefaultTTL", c.DefaultTTL, time.Minute, 48*time.Hour),
		count("MaxDeliveryCount", c.MaxDeliveryCount),
		dur("FeedbackTTL", c.FeedbackTTL, time.Minute, 48*time.Hour),
		dur("FeedbackLockDuration", c.FeedbackLockTimeout, 5*time.Second, 300*time.Second),
		count("FeedbackMaxDeliveryCount", c.FeedbackMaxDelivery),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

func (c C2DConfig) withDefaults() C2DConfig {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defi := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.DefaultTTL, DefaultC2DTTL)
	def(&c.MaxTTL, DefaultC2DMaxTTL)
	defi(&c.MaxDeliveryCount, DefaultC2DMaxDeliveryCount)
	defi(&c.MaxQueueDepth, DefaultC2DMaxQueueDepth)
	def(&c.LockTimeout, DefaultC2DLockTimeout)
	defi(&c.MaxSize, DefaultC2DMaxSize)
	defi(&c.FeedbackBatchMax, DefaultFeedbackBatchMax)
	def(&c.FeedbackBatchDelay, DefaultFeedbackBatchDelay)
	def(&c.FeedbackLockTimeout, DefaultFeedbackLockTimeout)
	defi(&c.FeedbackMaxDelivery, DefaultFeedbackMaxDelivery)
	def(&c.FeedbackTTL, DefaultFeedbackTTL)
	return c
}

// C2DOutcome is how a device (or feedback receiver) settles a message.
type C2DOutcome int

// Settlement outcomes.
const (
	C2DComplete C2DOutcome = iota + 1
	C2DReject
	C2DAbandon
)

// C2DMessage is a cloud-to-device message.
type C2DMessage struct {
	MessageID, CorrelationID, UserID, To, ContentType, ContentEncoding string
	// Ack is the iothub-ack value as the service sent it: "", "none",
	// "positive", "negative" or "full", in any case.
	Ack string
	// ExpiryTime is when the message expires; zero means enqueue time +
	// DefaultTTL. It is capped at enqueue time + MaxTTL.
	ExpiryTime time.Time
	Properties map[string]string // application properties
	Body       []byte

	// Set by the hub:
	EnqueuedTime time.Time
	// DeliveryCount is how many times the message was abandoned (lock
	// expiries and releases do not count, as in IoT Hub).
	DeliveryCount  int
	SequenceNumber int64
	LockToken      string // set on the copy ReceiveC2D returns
}

// QueuedC2D is a message in a device's queue, as C2DQueue reports it.
type QueuedC2D struct {
	C2DMessage
	Locked bool // received and not yet settled, released or expired
}

// FeedbackRecord is one delivery outcome in a feedback batch.
type FeedbackRecord struct {
	OriginalMessageID, DeviceGenerationID, DeviceID string
	EnqueuedTime                                    time.Time // when the outcome happened ("enqueuedTimeUtc")
	StatusCode                                      string    // FeedbackSuccess, FeedbackExpired, ...
	Description                                     string
}

// FeedbackBatch is a batch of feedback records, as the service's feedback
// receiver gets it.
type FeedbackBatch struct {
	LockToken     string // set on the copy ReceiveFeedback returns
	EnqueuedTime  time.Time
	DeliveryCount int // how many times the batch was abandoned
	Records       []FeedbackRecord
}

// c2dState is the engine's C2D state, guarded by Engine.mu except for
// the loop's channels.
type c2dState struct {
	cfg    C2DConfig
	active map[string]*c2dQueue // device id -> queue holding messages (the loop scans these)
	fb     feedbackQueue

	wake     chan struct{} // nudges the loop (capacity 1)
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

type c2dQueue struct {
	msgs    []*c2dEntry // in enqueue order, locked ones included
	seq     int64
	changed chan struct{} // closed and replaced on every change (C2DAvailable)
}

type c2dEntry struct {
	msg         C2DMessage // LockToken unset
	lock        string     // "" when available
	lockedUntil time.Time
}

type feedbackQueue struct {
	pending  []FeedbackRecord // waiting to fill a batch
	lastSend time.Time        // when the last batch was made
	batches  []*fbBatch
	changed  chan struct{}
}

type fbBatch struct {
	b           FeedbackBatch // LockToken: the current lock, "" when available
	lockedUntil time.Time
	expires     time.Time
}

func (e *Engine) initC2D(cfg C2DConfig) {
	e.c2d = c2dState{
		cfg:    cfg.withDefaults(),
		active: map[string]*c2dQueue{},
		wake:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	e.c2d.fb.changed = make(chan struct{})
	go e.c2dLoop()
}

// closeC2D stops the timer goroutine and waits for it (Engine.Close).
func (e *Engine) closeC2D() {
	e.c2d.stopOnce.Do(func() { close(e.c2d.stop) })
	<-e.c2d.done
}

func (e *Engine) wakeC2D() {
	select {
	case e.c2d.wake <- struct{}{}:
	default:
	}
}

// c2dLoop applies due expiries, lock expiries and feedback batching,
// sleeping until the next deadline on the hub clock or a wake-up.
func (e *Engine) c2dLoop() {
	defer close(e.c2d.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := e.c2dTick()
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
		select {
		case <-e.c2d.stop:
			return
		case <-e.c2d.wake:
		case <-timer.C:
		}
	}
}

// c2dTick applies what is due and returns how long (real time) to sleep
// until the next deadline.
func (e *Engine) c2dTick() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.hubNow()
	next := now.Add(time.Hour)
	due := func(t time.Time) {
		if !t.IsZero() && t.Before(next) {
			next = t
		}
	}
	for id, q := range e.c2d.active {
		rec := e.devices[id]
		if rec == nil || rec.c2d != q {
			delete(e.c2d.active, id)
			continue
		}
		e.sweepC2DLocked(rec, now)
		for _, m := range q.msgs {
			due(m.msg.ExpiryTime)
			if m.lock != "" {
				due(m.lockedUntil)
			}
		}
	}
	e.sweepFeedbackLocked(now)
	fb := &e.c2d.fb
	if len(fb.pending) > 0 {
		due(fb.lastSend.Add(e.c2d.cfg.FeedbackBatchDelay))
	}
	for _, b := range fb.batches {
		due(b.expires)
		if b.b.LockToken != "" {
			due(b.lockedUntil)
		}
	}
	d := next.Sub(now)
	if d < time.Millisecond {
		d = time.Millisecond
	}
	return d
}

// queueLocked returns rec's queue, creating it.
func (rec *identityRecord) queueLocked() *c2dQueue {
	if rec.c2d == nil {
		rec.c2d = &c2dQueue{changed: make(chan struct{})}
	}
	return rec.c2d
}

func (q *c2dQueue) notify() {
	close(q.changed)
	q.changed = make(chan struct{})
}

// setCountLocked mirrors the queue length into the registry's
// cloudToDeviceMessageCount and the loop's active set.
func (e *Engine) setCountLocked(rec *identityRecord) {
	q := rec.c2d
	rec.device.CloudToDeviceMessageCount = len(q.msgs)
	if len(q.msgs) == 0 {
		delete(e.c2d.active, rec.device.DeviceID)
	} else {
		e.c2d.active[rec.device.DeviceID] = q
	}
}

// sweepC2DLocked dead-letters expired messages of rec and makes messages
// whose lock expired available again.
func (e *Engine) sweepC2DLocked(rec *identityRecord, now time.Time) {
	q := rec.c2d
	if q == nil || len(q.msgs) == 0 {
		return
	}
	changed := false
	kept := q.msgs[:0]
	for _, m := range q.msgs {
		if !now.Before(m.msg.ExpiryTime) {
			e.feedbackLocked(rec, &m.msg, FeedbackExpired, m.msg.ExpiryTime)
			changed = true
			continue
		}
		if m.lock != "" && !now.Before(m.lockedUntil) {
			m.lock, m.lockedUntil = "", time.Time{}
			changed = true
		}
		kept = append(kept, m)
	}
	clear(q.msgs[len(kept):])
	q.msgs = kept
	if changed {
		e.setCountLocked(rec)
		q.notify()
		e.flushFeedbackLocked(now)
	}
}

// ackWants reports whether a message with this iothub-ack gets a feedback
// record for status.
func ackWants(ack, status string) bool {
	switch strings.ToLower(ack) {
	case "full":
		return true
	case "positive":
		return status == FeedbackSuccess
	case "negative":
		return status != FeedbackSuccess
	}
	return false
}

func validAck(ack string) bool {
	switch strings.ToLower(ack) {
	case "", "none", "positive", "negative", "full":
		return true
	}
	return false
}

// feedbackLocked records the outcome of m, which happened at at, when its
// ack asks for it.
func (e *Engine) feedbackLocked(rec *identityRecord, m *C2DMessage, status string, at time.Time) {
	if !ackWants(m.Ack, status) {
		return
	}
	e.addFeedbackLocked(FeedbackRecord{
		OriginalMessageID:  m.MessageID,
		DeviceGenerationID: rec.device.GenerationID,
		DeviceID:           rec.device.DeviceID,
		EnqueuedTime:       at,
		StatusCode:         status,
		// [inf] IoT Hub's doc shows "Success" for Success; the other
		// descriptions are not documented: the status text is used.
		Description: status,
	})
}

// addFeedbackLocked appends r to the pending records; the caller then
// calls flushFeedbackLocked, once for all the records of one operation.
func (e *Engine) addFeedbackLocked(r FeedbackRecord) {
	e.c2d.fb.pending = append(e.c2d.fb.pending, r)
	e.wakeC2D()
}

// flushFeedbackLocked turns pending records into batches: whenever
// FeedbackBatchMax of them wait, and when FeedbackBatchDelay has passed
// since the previous batch.
func (e *Engine) flushFeedbackLocked(now time.Time) {
	fb := &e.c2d.fb
	cfg := &e.c2d.cfg
	made := false
	for len(fb.pending) > 0 &&
		(len(fb.pending) >= cfg.FeedbackBatchMax || !now.Before(fb.lastSend.Add(cfg.FeedbackBatchDelay))) {
		n := min(len(fb.pending), cfg.FeedbackBatchMax)
		recs := append([]FeedbackRecord(nil), fb.pending[:n]...)
		fb.pending = append(fb.pending[:0], fb.pending[n:]...)
		fb.batches = append(fb.batches, &fbBatch{
			b:       FeedbackBatch{EnqueuedTime: now, Records: recs},
			expires: now.Add(cfg.FeedbackTTL),
		})
		fb.lastSend = now
		made = true
	}
	if made {
		e.notifyFeedbackLocked()
	}
}

func (e *Engine) notifyFeedbackLocked() {
	close(e.c2d.fb.changed)
	e.c2d.fb.changed = make(chan struct{})
}

// sweepFeedbackLocked makes due batches, drops batches past their TTL and
// makes batches whose lock expired available again.
func (e *Engine) sweepFeedbackLocked(now time.Time) {
	e.flushFeedbackLocked(now)
	fb := &e.c2d.fb
	changed := false
	kept := fb.batches[:0]
	for _, b := range fb.batches {
		if !now.Before(b.expires) {
			changed = true
			continue
		}
		if b.b.LockToken != "" && !now.Before(b.lockedUntil) {
			b.b.LockToken, b.lockedUntil = "", time.Time{}
			changed = true
		}
		kept = append(kept, b)
	}
	clear(fb.batches[len(kept):])
	fb.batches = kept
	if changed {
		e.notifyFeedbackLocked()
	}
}

// dropC2DLocked forgets a deleted device's queue and its pending feedback
// ("Deleting the device deletes its pending feedback", C2D doc): records
// not yet in a batch, and records in batches no receiver holds.
func (e *Engine) dropC2DLocked(id string, rec *identityRecord) {
	delete(e.c2d.active, id)
	if rec.c2d != nil {
		rec.c2d.msgs = nil
		rec.c2d.notify()
	}
	fb := &e.c2d.fb
	gen := rec.device.GenerationID
	mine := func(r FeedbackRecord) bool { return r.DeviceID == id && r.DeviceGenerationID == gen }
	keep := fb.pending[:0]
	for _, r := range fb.pending {
		if !mine(r) {
			keep = append(keep, r)
		}
	}
	fb.pending = keep
	batches := fb.batches[:0]
	for _, b := range fb.batches {
		if b.b.LockToken == "" {
			recs := b.b.Records[:0]
			for _, r := range b.b.Records {
				if !mine(r) {
					recs = append(recs, r)
				}
			}
			b.b.Records = recs
			if len(recs) == 0 {
				continue
			}
		}
		batches = append(batches, b)
	}
	clear(fb.batches[len(batches):])
	fb.batches = batches
}

// c2dSize is a message's size as the hub counts it against MaxSize: the
// body plus the names and values of its system and application properties.
func c2dSize(m *C2DMessage) int {
	n := len(m.Body) + len(m.MessageID) + len(m.CorrelationID) + len(m.UserID) + len(m.To) +
		len(m.ContentType) + len(m.ContentEncoding) + len(m.Ack)
	for k, v := range m.Properties {
		n += len(k) + len(v)
	}
	return n
}

func cloneC2D(m C2DMessage) C2DMessage {
	if m.Properties != nil {
		p := make(map[string]string, len(m.Properties))
		for k, v := range m.Properties {
			p[k] = v
		}
		m.Properties = p
	}
	if m.Body != nil {
		m.Body = append([]byte{}, m.Body...)
	}
	return m
}

// newLockToken returns a random GUID in its canonical text form (the AMQP
// server sends its 16 bytes as the delivery tag).
func newLockToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// EnqueueC2D queues a message for a device. Modules have no C2D queue (IoT
// Hub does not support C2D to modules). Errors: 404001 DeviceNotFound (also
// for a disabled device [inf]), 403004 DeviceMaximumQueueDepthExceeded,
// 413001 MessageTooLarge, 400004 ArgumentInvalid for a bad ack value. It
// returns the message as queued: MessageID kept, EnqueuedTime, ExpiryTime
// and SequenceNumber set. An expiry already past is accepted and expires
// at once (feedback "Expired").
func (e *Engine) EnqueueC2D(deviceID string, m C2DMessage) (_ C2DMessage, herr *Error) {
	cfg := &e.c2d.cfg
	if !validAck(m.Ack) {
		return C2DMessage{}, NewError(CodeArgumentInvalid, "Invalid iothub-ack value %q: want none, positive, negative or full", m.Ack)
	}
	if n := c2dSize(&m); n > cfg.MaxSize {
		return C2DMessage{}, NewError(CodeMessageTooLarge, "Message size %d bytes exceeds the maximum of %d bytes", n, cfg.MaxSize)
	}
	var saved *pendingSave
	defer waitStore(&saved, &herr)
	e.mu.Lock()
	defer e.mu.Unlock()
	rec, ok := e.devices[deviceID]
	if !ok || rec.device.Status != "enabled" {
		return C2DMessage{}, NewError(CodeDeviceNotFound, "Device %s not registered.", deviceID)
	}
	now := e.hubNow()
	e.sweepC2DLocked(rec, now)
	q := rec.queueLocked()
	if len(q.msgs) >= cfg.MaxQueueDepth {
		return C2DMessage{}, NewError(CodeDeviceMaximumQueueDepthExceeded,
			"Total number of messages on the device queue of %s exceeds the maximum of %d", deviceID, cfg.MaxQueueDepth)
	}
	m = cloneC2D(m)
	m.EnqueuedTime = now
	if m.ExpiryTime.IsZero() {
		m.ExpiryTime = now.Add(cfg.DefaultTTL)
	} else if limit := now.Add(cfg.MaxTTL); m.ExpiryTime.After(limit) {
		m.ExpiryTime = limit
	}
	m.DeliveryCount = 0
	m.LockToken = ""
	q.seq++
	m.SequenceNumber = q.seq
	q.msgs = append(q.msgs, &c2dEntry{msg: m})
	e.setCountLocked(rec)
	q.notify()
	e.sweepC2DLocked(rec, now)
	e.wakeC2D()
	saved = e.saveIdentityLocked(deviceID)
	return cloneC2D(m), nil
}

// deviceQueueLocked returns the record of a device identity with its
// queue swept, or nil for modules and unknown devices.
func (e *Engine) deviceRecLocked(id auth.Identity, now time.Time) *identityRecord {
	if id.ModuleID != "" {
		return nil
	}
	rec, ok := e.devices[id.DeviceID]
	if !ok {
		return nil
	}
	e.sweepC2DLocked(rec, now)
	return rec
}

// ReceiveC2D locks the next available message of the identity for
// LockTimeout and returns a copy with LockToken set (a new token on every
// delivery). ok is false when none is available (always for modules).
func (e *Engine) ReceiveC2D(id auth.Identity) (m C2DMessage, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.hubNow()
	rec := e.deviceRecLocked(id, now)
	if rec == nil || rec.c2d == nil {
		return C2DMessage{}, false
	}
	for _, ent := range rec.c2d.msgs {
		if ent.lock != "" {
			continue
		}
		ent.lock = newLockToken()
		ent.lockedUntil = now.Add(e.c2d.cfg.LockTimeout)
		e.wakeC2D()
		out := cloneC2D(ent.msg)
		out.LockToken = ent.lock
		return out, true
	}
	return C2DMessage{}, false
}

// C2DAvailable returns a channel closed the next time the identity's queue
// changes (a message enqueued, a lock released or expired, a message
// settled, purged or expired, the device deleted). Call it before
// ReceiveC2D, then wait on it when ReceiveC2D found nothing. For a module
// or an unknown device the channel is never closed.
func (e *Engine) C2DAvailable(id auth.Identity) <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	if id.ModuleID != "" {
		return make(chan struct{})
	}
	rec, ok := e.devices[id.DeviceID]
	if !ok {
		return make(chan struct{})
	}
	return rec.queueLocked().changed
}

// lockedEntryLocked finds the message rec holds under lockToken.
func lockedEntryLocked(rec *identityRecord, lockToken string) (int, *c2dEntry) {
	if rec == nil || rec.c2d == nil || lockToken == "" {
		return -1, nil
	}
	for i, ent := range rec.c2d.msgs {
		if ent.lock == lockToken {
			return i, ent
		}
	}
	return -1, nil
}

func lockLost(lockToken string) *Error {
	return NewError(CodeDeviceMessageLockLost, "The lock %s is unknown, expired or already settled", lockToken)
}

// SettleC2D completes, rejects or abandons the locked message: complete
// removes it (feedback "Success" for ack positive/full), reject
// dead-letters it ("Rejected", negative/full), abandon makes it available
// again with DeliveryCount+1 and, when that reaches MaxDeliveryCount,
// dead-letters it ("DeliveryCountExceeded", negative/full). 412002
// DeviceMessageLockLost when the token is unknown, expired or already
// settled; 400004 for an unknown outcome.
func (e *Engine) SettleC2D(id auth.Identity, lockToken string, o C2DOutcome) (herr *Error) {
	if o < C2DComplete || o > C2DAbandon {
		return NewError(CodeArgumentInvalid, "Unknown settlement outcome %d", int(o))
	}
	var saved *pendingSave
	defer waitStore(&saved, &herr)
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.hubNow()
	rec := e.deviceRecLocked(id, now)
	i, ent := lockedEntryLocked(rec, lockToken)
	if ent == nil {
		return lockLost(lockToken)
	}
	q := rec.c2d
	status := ""
	switch o {
	case C2DComplete:
		status = FeedbackSuccess
	case C2DReject:
		status = FeedbackRejected
	case C2DAbandon:
		ent.msg.DeliveryCount++
		if ent.msg.DeliveryCount < e.c2d.cfg.MaxDeliveryCount {
			ent.lock, ent.lockedUntil = "", time.Time{}
			q.notify()
			saved = e.saveIdentityLocked(id.DeviceID)
			return nil
		}
		status = FeedbackDeliveryCountExceeded
	}
	q.msgs = append(q.msgs[:i], q.msgs[i+1:]...)
	e.feedbackLocked(rec, &ent.msg, status, now)
	e.flushFeedbackLocked(now)
	e.setCountLocked(rec)
	q.notify()
	saved = e.saveIdentityLocked(id.DeviceID)
	return nil
}

// ReleaseC2D returns a locked message to the queue without settling it
// (the connection that took it ended): its delivery count is unchanged,
// as when a lock expires. An unknown token is ignored.
func (e *Engine) ReleaseC2D(id auth.Identity, lockToken string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	rec := e.deviceRecLocked(id, e.hubNow())
	if _, ent := lockedEntryLocked(rec, lockToken); ent != nil {
		ent.lock, ent.lockedUntil = "", time.Time{}
		rec.c2d.notify()
	}
}

// PurgeC2D removes every queued message of a device, locked ones too, and
// returns how many (404001 for an unknown device). [inf] Each gets feedback
// "Purged" for ack negative/full.
func (e *Engine) PurgeC2D(deviceID string) (_ int, herr *Error) {
	var saved *pendingSave
	defer waitStore(&saved, &herr)
	e.mu.Lock()
	defer e.mu.Unlock()
	rec, ok := e.devices[deviceID]
	if !ok {
		return 0, NewError(CodeDeviceNotFound, "Device %s not registered.", deviceID)
	}
	now := e.hubNow()
	e.sweepC2DLocked(rec, now)
	q := rec.c2d
	if q == nil || len(q.msgs) == 0 {
		return 0, nil
	}
	n := len(q.msgs)
	for _, ent := range q.msgs {
		e.feedbackLocked(rec, &ent.msg, FeedbackPurged, now)
	}
	q.msgs = nil
	e.flushFeedbackLocked(now)
	e.setCountLocked(rec)
	q.notify()
	saved = e.saveIdentityLocked(deviceID)
	return n, nil
}

// C2DQueue returns a snapshot of a device's queue, in order (nil for an
// unknown device or an empty queue).
func (e *Engine) C2DQueue(deviceID string) []QueuedC2D {
	e.mu.Lock()
	defer e.mu.Unlock()
	rec := e.deviceRecLocked(auth.Identity{DeviceID: deviceID}, e.hubNow())
	if rec == nil || rec.c2d == nil {
		return nil
	}
	var out []QueuedC2D
	for _, ent := range rec.c2d.msgs {
		out = append(out, QueuedC2D{C2DMessage: cloneC2D(ent.msg), Locked: ent.lock != ""})
	}
	return out
}

// ReceiveFeedback locks the next ready feedback batch for
// FeedbackLockTimeout and returns a copy with LockToken set; ok is false
// when none is ready.
func (e *Engine) ReceiveFeedback() (FeedbackBatch, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.hubNow()
	e.sweepFeedbackLocked(now)
	for _, b := range e.c2d.fb.batches {
		if b.b.LockToken != "" {
			continue
		}
		b.b.LockToken = newLockToken()
		b.lockedUntil = now.Add(e.c2d.cfg.FeedbackLockTimeout)
		e.wakeC2D()
		out := b.b
		out.Records = append([]FeedbackRecord(nil), b.b.Records...)
		return out, true
	}
	return FeedbackBatch{}, false
}

// FeedbackAvailable returns a channel closed the next time the feedback
// queue changes (a batch made, a lock released or expired, a batch
// settled or dropped). Call it before ReceiveFeedback.
func (e *Engine) FeedbackAvailable() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.c2d.fb.changed
}

// SettleFeedback settles a locked batch: complete or reject removes it,
// abandon makes it available again with DeliveryCount+1 and drops it when
// that reaches FeedbackMaxDelivery. 412002 when the token is unknown,
// expired or already settled.
func (e *Engine) SettleFeedback(lockToken string, o C2DOutcome) *Error {
	if o < C2DComplete || o > C2DAbandon {
		return NewError(CodeArgumentInvalid, "Unknown settlement outcome %d", int(o))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.sweepFeedbackLocked(e.hubNow())
	fb := &e.c2d.fb
	for i, b := range fb.batches {
		if lockToken == "" || b.b.LockToken != lockToken {
			continue
		}
		if o == C2DAbandon {
			b.b.DeliveryCount++
			if b.b.DeliveryCount < e.c2d.cfg.FeedbackMaxDelivery {
				b.b.LockToken, b.lockedUntil = "", time.Time{}
				e.notifyFeedbackLocked()
				return nil
			}
		}
		fb.batches = append(fb.batches[:i], fb.batches[i+1:]...)
		e.notifyFeedbackLocked()
		return nil
	}
	return lockLost(lockToken)
}

// ReleaseFeedback returns a locked batch unsettled (the receiver went
// away): its delivery count is unchanged. An unknown token is ignored.
func (e *Engine) ReleaseFeedback(lockToken string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, b := range e.c2d.fb.batches {
		if lockToken != "" && b.b.LockToken == lockToken {
			b.b.LockToken, b.lockedUntil = "", time.Time{}
			e.notifyFeedbackLocked()
			return
		}
	}
}

// InjectFeedback adds a record as if an outcome happened (tests); a zero
// EnqueuedTime is set to the hub clock's now. It is batched like any other.
func (e *Engine) InjectFeedback(rec FeedbackRecord) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.hubNow()
	if rec.EnqueuedTime.IsZero() {
		rec.EnqueuedTime = now
	}
	e.addFeedbackLocked(rec)
	e.flushFeedbackLocked(now)
}
