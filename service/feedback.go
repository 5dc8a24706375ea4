package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	amqp "github.com/Azure/go-amqp"
)

// feedbackAddress is the hub's feedback node (docs:
// /messages/servicebound/feedback; both SDKs spell it with a capital B).
const feedbackAddress = "/messages/serviceBound/feedback"

// FeedbackStatus is the outcome a feedback record reports, as IoT Hub
// spells it. Values other than the five below are kept as the hub sent
// them.
type FeedbackStatus string

// The outcomes IoT Hub reports.
const (
	// FeedbackSuccess: the device completed the message.
	FeedbackSuccess FeedbackStatus = "Success"
	// FeedbackExpired: the message expired before the device completed it.
	FeedbackExpired FeedbackStatus = "Expired"
	// FeedbackDeliveryCountExceeded: the device abandoned it as many
	// times as the hub allows (cloudToDevice.maxDeliveryCount, 10 by
	// default).
	FeedbackDeliveryCountExceeded FeedbackStatus = "DeliveryCountExceeded"
	// FeedbackRejected: the device rejected it.
	FeedbackRejected FeedbackStatus = "Rejected"
	// FeedbackPurged: PurgeMessageQueue removed it.
	FeedbackPurged FeedbackStatus = "Purged"
)

// feedbackStatusNames are the statuses by their number in the .NET
// SDK's FeedbackStatusCode enum, for a hub that sends numbers.
var feedbackStatusNames = []FeedbackStatus{FeedbackSuccess, FeedbackExpired, FeedbackDeliveryCountExceeded, FeedbackRejected, FeedbackPurged}

// FeedbackRecord is the outcome of one cloud-to-device message that asked
// for feedback (C2DMessage.Ack).
type FeedbackRecord struct {
	// OriginalMessageID is the message's MessageID ("" if it had none).
	OriginalMessageID string
	// DeviceID and DeviceGenerationID name the device the message was
	// for.
	DeviceID           string
	DeviceGenerationID string
	// EnqueuedTime is when the outcome happened (UTC); zero when the hub
	// sent none or an unreadable one.
	EnqueuedTime time.Time
	// Status is the outcome.
	Status FeedbackStatus
	// Description is the hub's text for the outcome (e.g. "Success").
	Description string
}

// FeedbackBatch is one batch of feedback records. IoT Hub sends a batch
// when 64 records have gathered or 15 seconds after its last one. Settle
// each batch with Complete, or with Abandon to have it delivered again; a
// batch settled by neither is delivered again when its lock expires
// (60 s by default) or its receiver's connection ends.
type FeedbackBatch struct {
	// EnqueuedTime is when the hub made the batch; zero if it did not say.
	EnqueuedTime time.Time
	// UserID is the batch's AMQP user-id (the hub's name).
	UserID string
	// Records are the batch's records.
	Records []FeedbackRecord

	r       *FeedbackReceiver
	rcv     *amqp.Receiver
	msg     *amqp.Message
	mu      sync.Mutex
	settled bool
}

// FeedbackReceiver receives the hub's feedback batches, over the client's
// AMQP connection. Feedback is hub-wide: every receiver of the hub takes
// batches from the same queue, each batch going to one of them. Its
// methods are safe for concurrent use.
type FeedbackReceiver struct {
	c   *Client
	sem chan struct{} // one Receive at a time

	mu       sync.Mutex
	closed   bool
	conn     *amqpConn
	rcv      *amqp.Receiver
	credited bool // a credit of rcv is outstanding
}

// NewFeedbackReceiver attaches a receiver to the hub's feedback node
// (/messages/serviceBound/feedback), dialling the client's AMQP connection
// if needed. Needs ServiceConnect. If the connection drops, the next
// Receive attaches again on a new one. Close it when done.
func (c *Client) NewFeedbackReceiver(ctx context.Context) (*FeedbackReceiver, error) {
	r := &FeedbackReceiver{c: c, sem: make(chan struct{}, 1)}
	if _, _, err := r.link(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// link returns the receiver's live link, attaching one (on a new
// connection if the old one has ended).
func (r *FeedbackReceiver) link(ctx context.Context) (*amqpConn, *amqp.Receiver, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, nil, ErrClosed
	}
	if r.rcv != nil && r.conn.alive() {
		conn, rcv := r.conn, r.rcv
		r.mu.Unlock()
		return conn, rcv, nil
	}
	r.conn, r.rcv, r.credited = nil, nil, false
	r.mu.Unlock()

	for attempt := 0; ; attempt++ {
		conn, fresh, err := r.c.amqpConn(ctx)
		if err != nil {
			return nil, nil, err
		}
		first := amqp.ReceiverSettleModeFirst
		rcv, err := conn.sess.NewReceiver(ctx, feedbackAddress, &amqp.ReceiverOptions{
			Name:           "feedback-receiver-" + newUUID().String(),
			Credit:         -1, // one credit per Receive, as .NET does
			SettlementMode: &first,
			MaxMessageSize: maxFeedbackSize,
		})
		if err != nil {
			err = conn.opErr(ctx, "attaching the feedback link", err)
			if !fresh && attempt == 0 && errors.Is(err, ErrConnectionLost) {
				r.c.forget(conn)
				continue
			}
			return nil, nil, err
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			closeLink(conn, rcv)
			return nil, nil, ErrClosed
		}
		r.conn, r.rcv = conn, rcv
		r.mu.Unlock()
		return conn, rcv, nil
	}
}

func closeLink(conn *amqpConn, rcv *amqp.Receiver) {
	ctx, cancel := context.WithTimeout(conn.bg, 5*time.Second)
	defer cancel()
	_ = rcv.Close(ctx)
}

// Receive waits for the next feedback batch, until ctx ends (then it
// returns ctx.Err()). It returns an error matching ErrConnectionLost when
// the connection fails (the next Receive dials again), ErrClosed after
// Close, and an error matching ErrMalformedResponse for a batch whose
// body is not feedback JSON; that batch is rejected (dropped by the hub),
// since no receiver could read it. Receive asks the hub for one batch at
// a time.
func (r *FeedbackReceiver) Receive(ctx context.Context) (*FeedbackBatch, error) {
	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-r.sem }()
	conn, rcv, err := r.link(ctx)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	credit := !r.credited && r.rcv == rcv
	if credit {
		r.credited = true
	}
	r.mu.Unlock()
	if credit {
		if err := rcv.IssueCredit(1); err != nil {
			return nil, r.linkErr(ctx, conn, rcv, err)
		}
	}
	msg, err := rcv.Receive(ctx, nil)
	if err != nil {
		return nil, r.linkErr(ctx, conn, rcv, err)
	}
	r.mu.Lock()
	if r.rcv == rcv {
		r.credited = false
	}
	r.mu.Unlock()
	b := &FeedbackBatch{r: r, rcv: rcv, msg: msg}
	if ann, ok := msg.Annotations["iothub-enqueuedtime"].(time.Time); ok {
		b.EnqueuedTime = ann.UTC()
	}
	if msg.Properties != nil && len(msg.Properties.UserID) > 0 {
		b.UserID = strings.ToValidUTF8(string(msg.Properties.UserID), "\uFFFD")
	}
	b.Records, err = decodeFeedback(msg.GetData())
	if err != nil {
		_ = rcv.RejectMessage(ctx, msg, &amqp.Error{Condition: amqp.ErrCondDecodeError, Description: "not a feedback batch"})
		return nil, err
	}
	return b, nil
}

// linkErr classifies an error of the feedback link; a dead link is
// forgotten so that the next Receive attaches again.
func (r *FeedbackReceiver) linkErr(ctx context.Context, conn *amqpConn, rcv *amqp.Receiver, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	r.mu.Lock()
	closed := r.closed
	if r.rcv == rcv {
		r.conn, r.rcv, r.credited = nil, nil, false
	}
	r.mu.Unlock()
	if closed {
		return ErrClosed
	}
	var le *amqp.LinkError
	if errors.As(err, &le) && conn.alive() {
		closeLink(conn, rcv)
		if le.RemoteErr != nil {
			return fmt.Errorf("iothub: the hub detached the feedback link: %w", amqpResponseError(le.RemoteErr))
		}
		return fmt.Errorf("iothub: the feedback link ended: %w", err)
	}
	return conn.opErr(ctx, "receiving feedback", err)
}

// Close detaches the receiver; batches it received but did not settle go
// back to the hub, which delivers them again. A Receive in progress
// returns ErrClosed. Close is safe to call more than once and from any
// goroutine.
func (r *FeedbackReceiver) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	conn, rcv := r.conn, r.rcv
	r.conn, r.rcv = nil, nil
	r.mu.Unlock()
	if rcv == nil || !conn.alive() {
		return nil
	}
	err := rcv.Close(ctx)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var le *amqp.LinkError
	if err != nil && !(errors.As(err, &le) && le.RemoteErr == nil) && conn.alive() {
		return fmt.Errorf("iothub: closing the feedback link: %w", err)
	}
	return nil
}

// Complete tells the hub the batch was processed: it is removed from the
// feedback queue. It fails with an error matching ErrLockLost when the
// batch's connection has ended (the hub delivers the batch again), and
// when the batch was already settled.
func (b *FeedbackBatch) Complete(ctx context.Context) error {
	return b.settle(ctx, "complete", b.rcv.AcceptMessage)
}

// Abandon gives the batch back to the hub, which delivers it again (up to
// feedback.maxDeliveryCount times, 10 by default). It fails like
// Complete.
func (b *FeedbackBatch) Abandon(ctx context.Context) error {
	return b.settle(ctx, "abandon", b.rcv.ReleaseMessage)
}

func (b *FeedbackBatch) settle(ctx context.Context, what string, f func(context.Context, *amqp.Message) error) error {
	if b.rcv == nil {
		return argErr("the batch did not come from a FeedbackReceiver")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.settled {
		return &lockLostError{msg: "iothub: the feedback batch was already settled"}
	}
	b.r.mu.Lock()
	current := b.r.rcv == b.rcv && b.r.conn != nil && b.r.conn.alive()
	b.r.mu.Unlock()
	if !current {
		return &lockLostError{msg: "iothub: cannot " + what + " the feedback batch: its link or connection has ended; the hub delivers it again"}
	}
	if err := f(ctx, b.msg); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &lockLostError{msg: "iothub: cannot " + what + " the feedback batch: " + err.Error(), cause: err}
	}
	b.settled = true
	return nil
}

// lockLostError matches ErrLockLost.
type lockLostError struct {
	msg   string
	cause error
}

func (e *lockLostError) Error() string        { return e.msg }
func (e *lockLostError) Is(target error) bool { return target == ErrLockLost }
func (e *lockLostError) Unwrap() error        { return e.cause }

// feedbackJSON is one record as IoT Hub encodes it.
type feedbackJSON struct {
	OriginalMessageID  json.RawMessage `json:"originalMessageId"`
	DeviceGenerationID json.RawMessage `json:"deviceGenerationId"`
	DeviceID           json.RawMessage `json:"deviceId"`
	EnqueuedTimeUTC    json.RawMessage `json:"enqueuedTimeUtc"`
	StatusCode         json.RawMessage `json:"statusCode"`
	Description        json.RawMessage `json:"description"`
}

// maxFeedbackRecords bounds the records of one batch (IoT Hub sends at
// most 64).
const maxFeedbackRecords = 10000

// decodeFeedback decodes a batch body: a JSON array of records (a UTF-8
// BOM and null are accepted). Unknown fields are ignored; a field of the
// wrong type is left empty rather than failing the batch. Only a body that
// is not a JSON array of objects fails, with ErrMalformedResponse.
func decodeFeedback(body []byte) ([]FeedbackRecord, error) {
	body = bytes.TrimSpace(bytes.TrimPrefix(bytes.TrimSpace(body), []byte("\xef\xbb\xbf")))
	if len(body) == 0 || string(body) == "null" {
		return nil, nil
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, fmt.Errorf("%w: a feedback batch that is not a JSON array: %w", ErrMalformedResponse, err)
	}
	if len(raw) > maxFeedbackRecords {
		return nil, fmt.Errorf("%w: a feedback batch of %d records", ErrMalformedResponse, len(raw))
	}
	out := make([]FeedbackRecord, 0, len(raw))
	for i, item := range raw {
		var j feedbackJSON
		if err := json.Unmarshal(item, &j); err != nil || bytes.Equal(bytes.TrimSpace(item), []byte("null")) {
			return nil, fmt.Errorf("%w: feedback record %d is not a JSON object", ErrMalformedResponse, i)
		}
		out = append(out, FeedbackRecord{
			OriginalMessageID:  jsonText(j.OriginalMessageID),
			DeviceGenerationID: jsonText(j.DeviceGenerationID),
			DeviceID:           jsonText(j.DeviceID),
			EnqueuedTime:       parseFeedbackTime(jsonText(j.EnqueuedTimeUTC)),
			Status:             feedbackStatus(j.StatusCode),
			Description:        jsonText(j.Description),
		})
	}
	return out, nil
}

// jsonText returns a JSON string's value, a number's text, else "".
func jsonText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return clip(s)
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}

// feedbackStatus reads statusCode: a name (any case, returned in IoT
// Hub's spelling), or the .NET enum's number.
func feedbackStatus(raw json.RawMessage) FeedbackStatus {
	s := jsonText(raw)
	if n, err := strconv.Atoi(s); err == nil && n >= 0 && n < len(feedbackStatusNames) {
		return feedbackStatusNames[n]
	}
	for _, st := range feedbackStatusNames {
		if strings.EqualFold(s, string(st)) {
			return st
		}
	}
	return FeedbackStatus(s)
}

// parseFeedbackTime reads an ISO 8601 time; one without a zone is UTC
// (.NET writes DateTime values that way). Unreadable times give zero.
func parseFeedbackTime(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC()
		}
	}
	return time.Time{}
}
