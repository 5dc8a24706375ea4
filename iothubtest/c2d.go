package iothubtest

import (
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"time"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

// Cloud-to-device messages. The hub keeps a queue per device with IoT
// Hub's rules: at most 50 messages, 64 KB each, a one-hour default
// time-to-live (two days at most), a one-minute lock per delivery, and
// dead-lettering after ten abandons. Expiry, locks and feedback batching
// run on the hub clock that [Server.AdvanceClock] moves, so a test can
// expire a message or a lock at once.

// QueuedMessage is a message in a device's cloud-to-device queue.
type QueuedMessage struct {
	MessageID     string
	CorrelationID string
	Ack           string // iothub-ack as sent: "", none, positive, negative, full
	Body          []byte
	Properties    map[string]string // application properties
	// DeliveryCount is how many times the device abandoned the message
	// (lock expiries do not count, as in IoT Hub).
	DeliveryCount int
	EnqueuedTime  time.Time
	ExpiryTime    time.Time
	// Locked is true while a device holds the message: received and not
	// yet completed, rejected, abandoned, or past its one-minute lock.
	Locked bool
}

// C2DQueue returns the messages queued for a device, oldest first (nil for
// an empty queue or an unknown device). Expired messages are gone.
func (s *Server) C2DQueue(deviceID string) []QueuedMessage {
	q := s.h.Engine.C2DQueue(deviceID)
	if len(q) == 0 {
		return nil
	}
	out := make([]QueuedMessage, len(q))
	for i, m := range q {
		out[i] = QueuedMessage{
			MessageID: m.MessageID, CorrelationID: m.CorrelationID, Ack: m.Ack,
			Body: m.Body, Properties: m.Properties, DeliveryCount: m.DeliveryCount,
			EnqueuedTime: m.EnqueuedTime, ExpiryTime: m.ExpiryTime, Locked: m.Locked,
		}
	}
	return out
}

// SendC2D queues a message for a device without a service client, with a
// random message id and no feedback requested. props are its application
// properties. The errors are the hub's: the device is unknown or
// disabled (404001), its queue holds 50 messages already (403004), or the
// message is larger than 64 KB (413001).
func (s *Server) SendC2D(deviceID string, body []byte, props map[string]string) error {
	_, err := s.SendC2DMessage(deviceID, C2DMessage{Body: body, Properties: props})
	return err
}

// C2DMessage is a message to queue with [Server.SendC2DMessage].
type C2DMessage struct {
	MessageID     string // random when empty
	CorrelationID string
	// Ack asks for feedback: "none" (or ""), "positive", "negative", "full".
	Ack        string
	TTL        time.Duration // 0: the hub's default, one hour; capped at two days
	Body       []byte
	Properties map[string]string
}

// SendC2DMessage queues m for a device, as a service client would, and
// returns it as queued. Errors as for SendC2D, and 400004 for a bad Ack.
func (s *Server) SendC2DMessage(deviceID string, m C2DMessage) (QueuedMessage, error) {
	if m.MessageID == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		m.MessageID = hex.EncodeToString(b[:])
	}
	em := engine.C2DMessage{
		MessageID: m.MessageID, CorrelationID: m.CorrelationID, Ack: m.Ack,
		To: "/devices/" + url.PathEscape(deviceID) + "/messages/deviceBound", Properties: m.Properties, Body: m.Body,
	}
	if m.TTL > 0 {
		em.ExpiryTime = s.h.Engine.JobClock().Add(m.TTL)
	}
	q, herr := s.h.Engine.EnqueueC2D(deviceID, em)
	if herr != nil {
		return QueuedMessage{}, herr
	}
	return QueuedMessage{
		MessageID: q.MessageID, CorrelationID: q.CorrelationID, Ack: q.Ack, Body: q.Body,
		Properties: q.Properties, EnqueuedTime: q.EnqueuedTime, ExpiryTime: q.ExpiryTime,
	}, nil
}

// FeedbackRecord is a delivery outcome for the service's feedback
// receiver.
type FeedbackRecord struct {
	OriginalMessageID  string
	DeviceID           string
	DeviceGenerationID string
	// StatusCode is "Success", "Expired", "DeliveryCountExceeded",
	// "Rejected" or "Purged".
	StatusCode  string
	Description string
	// EnqueuedTime is when the outcome happened; zero means now on the
	// hub clock.
	EnqueuedTime time.Time
}

// InjectFeedback adds a feedback record as if a delivery outcome had
// happened. It is batched like the hub's own records: a batch goes out
// when it holds 64 records or 15 seconds (on the hub clock) after the
// previous batch, so the first record after a quiet spell goes out at
// once and later ones may need [Server.AdvanceClock].
func (s *Server) InjectFeedback(rec FeedbackRecord) {
	s.h.Engine.InjectFeedback(engine.FeedbackRecord{
		OriginalMessageID: rec.OriginalMessageID, DeviceID: rec.DeviceID, DeviceGenerationID: rec.DeviceGenerationID,
		StatusCode: rec.StatusCode, Description: rec.Description, EnqueuedTime: rec.EnqueuedTime,
	})
}
