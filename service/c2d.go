package service

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	amqp "github.com/Azure/go-amqp"
)

// MaxC2DMessageSize is the largest cloud-to-device message IoT Hub
// accepts: 64 KB. Send counts, as the local hub does, the body, the
// system properties (the ids, the content type and encoding, the "to"
// address /devices/{id}/messages/devicebound and the iothub-ack value)
// and every application property name and value; IoT Hub documents the
// limit, not how it counts.
const MaxC2DMessageSize = 64 * 1024

// maxIDLength is IoT Hub's limit on message and correlation ids.
const maxIDLength = 128

// AckType is the feedback a cloud-to-device message asks for: the
// message's iothub-ack property. Feedback arrives in batches on a
// FeedbackReceiver.
type AckType int

// The feedback kinds IoT Hub knows.
const (
	// AckNone asks for no feedback (IoT Hub's default; no iothub-ack
	// property is sent).
	AckNone AckType = iota
	// AckPositive asks for a Success record when the device completes
	// the message.
	AckPositive
	// AckNegative asks for a record when the message is dead-lettered:
	// Expired, DeliveryCountExceeded, Rejected or Purged.
	AckNegative
	// AckFull asks for both.
	AckFull
)

// String returns the iothub-ack value: "none", "positive", "negative" or
// "full" (or "AckType(N)" for an invalid value).
func (a AckType) String() string {
	switch a {
	case AckNone:
		return "none"
	case AckPositive:
		return "positive"
	case AckNegative:
		return "negative"
	case AckFull:
		return "full"
	}
	return "AckType(" + strconv.Itoa(int(a)) + ")"
}

// C2DMessage is a cloud-to-device message. Only Body is needed; every
// other field is optional.
//
// IoT Hub delivers cloud-to-device messages at least once: a device may
// receive a message again when its lock (one minute) expires before the
// device settles it, when the connection drops before the hub has the
// settlement, or when the device abandons it. Give each message a
// MessageID so that devices can recognise repeats, and so that feedback
// can be matched to it.
type C2DMessage struct {
	// Body is the payload, any bytes (may be empty).
	Body []byte
	// MessageID identifies the message: it is what the device sees as the
	// message id and what feedback records carry as OriginalMessageID. At
	// most 128 characters of ASCII letters, digits and
	// - : . + % _ # * ? ! ( ) , = @ ; $ '. "" sends none (the client does
	// not make one up, as the .NET and Node SDKs by default do not): the
	// feedback for the message then cannot be told apart from others'.
	MessageID string
	// CorrelationID is passed to the device as is; same rules as
	// MessageID.
	CorrelationID string
	// UserID is the AMQP user-id passed to the device; "" for none.
	UserID string
	// ContentType and ContentEncoding describe Body (e.g.
	// "application/json", "utf-8"); "" for none.
	ContentType     string
	ContentEncoding string
	// Properties are application properties passed to the device. Names
	// must be non-empty, must not start with '$' (the MQTT form of system
	// properties) and must not be iothub-ack (set Ack); names and values
	// must be valid UTF-8 without control characters.
	Properties map[string]string
	// TTL is how long the message may wait for the device, from the time
	// of Send: the message expires then (feedback Expired with AckNegative
	// or AckFull). Zero means the hub's default (cloudToDevice.defaultTtl,
	// one hour unless configured; IoT Hub allows up to two days).
	// Negative TTLs are refused.
	TTL time.Duration
	// ExpiresAt is an absolute expiry time instead of TTL; set at most
	// one of the two. The zero time means none.
	ExpiresAt time.Time
	// Ack is the feedback to ask for; AckNone (the zero value) asks for
	// none.
	Ack AckType
}

// size returns the message's size as counted against
// MaxC2DMessageSize, for "to" address to.
func (m *C2DMessage) size(to string) int {
	n := len(m.Body) + len(m.MessageID) + len(m.CorrelationID) + len(m.UserID) + len(m.ContentType) + len(m.ContentEncoding) + len(to)
	if m.Ack != AckNone {
		n += len(m.Ack.String())
	}
	for k, v := range m.Properties {
		n += len(k) + len(v)
	}
	return n
}

// c2dAddress is the "to" of a message for deviceID.
func c2dAddress(deviceID string) string {
	return "/devices/" + pathSegment(deviceID) + "/messages/devicebound"
}

// validMessageID reports whether s follows IoT Hub's rule for message
// and correlation ids (at most 128 characters of ASCII alphanumerics and
// - : . + % _ # * ? ! ( ) , = @ ; $ ').
func validMessageID(s string) bool {
	if len(s) > maxIDLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("-:.+%_#*?!(),=@;$'", rune(c)) {
			return false
		}
	}
	return true
}

// printable reports whether s is valid UTF-8 without control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// check validates msg for deviceID before anything is sent.
func (m *C2DMessage) check(deviceID string) error {
	switch {
	case m.MessageID != "" && !validMessageID(m.MessageID):
		return argErr(fmt.Sprintf("invalid message id %q: want at most 128 characters of ASCII letters, digits and -:.+%%_#*?!(),=@;$'", clipID(m.MessageID)))
	case m.CorrelationID != "" && !validMessageID(m.CorrelationID):
		return argErr(fmt.Sprintf("invalid correlation id %q: want at most 128 characters of ASCII letters, digits and -:.+%%_#*?!(),=@;$'", clipID(m.CorrelationID)))
	case !printable(m.UserID):
		return argErr("the user id must be valid UTF-8 without control characters")
	case !printable(m.ContentType) || !printable(m.ContentEncoding):
		return argErr("the content type and encoding must be valid UTF-8 without control characters")
	case m.TTL < 0:
		return argErr(fmt.Sprintf("negative TTL %v", m.TTL))
	case m.TTL != 0 && !m.ExpiresAt.IsZero():
		return argErr("set TTL or ExpiresAt, not both")
	case m.Ack < AckNone || m.Ack > AckFull:
		return argErr(fmt.Sprintf("invalid Ack %v: want AckNone, AckPositive, AckNegative or AckFull", m.Ack))
	}
	for k, v := range m.Properties {
		switch {
		case k == "":
			return argErr("a property has an empty name")
		case !printable(k) || !printable(v):
			return argErr(fmt.Sprintf("property %q: names and values must be valid UTF-8 without control characters", clipID(strings.ToValidUTF8(k, "?"))))
		case k[0] == '$':
			return argErr(fmt.Sprintf("property %q: names starting with '$' are reserved for system properties", clipID(k)))
		case strings.EqualFold(k, "iothub-ack"):
			return argErr("property iothub-ack: set C2DMessage.Ack instead")
		}
	}
	if n := m.size(c2dAddress(deviceID)); n > MaxC2DMessageSize {
		return &argumentError{
			msg:  fmt.Sprintf("iothub: the message is %d bytes (body and properties); IoT Hub accepts cloud-to-device messages of at most %d", n, MaxC2DMessageSize),
			also: ErrMessageTooLarge,
		}
	}
	return nil
}

// amqpMessage builds the AMQP message for deviceID, as the .NET and Node
// service SDKs do (c2d-facts §2.2): "to" names the device's queue, one
// data section holds the body, the expiry is absolute-expiry-time.
func (m *C2DMessage) amqpMessage(deviceID string, now time.Time) *amqp.Message {
	to := c2dAddress(deviceID)
	props := &amqp.MessageProperties{To: &to}
	if m.MessageID != "" {
		props.MessageID = m.MessageID
	}
	if m.CorrelationID != "" {
		props.CorrelationID = m.CorrelationID
	}
	if m.UserID != "" {
		props.UserID = []byte(m.UserID)
	}
	if m.ContentType != "" {
		ct := m.ContentType
		props.ContentType = &ct
	}
	if m.ContentEncoding != "" {
		ce := m.ContentEncoding
		props.ContentEncoding = &ce
	}
	switch {
	case m.TTL > 0:
		exp := now.Add(m.TTL).UTC()
		props.AbsoluteExpiryTime = &exp
	case !m.ExpiresAt.IsZero():
		exp := m.ExpiresAt.UTC()
		props.AbsoluteExpiryTime = &exp
	}
	var app map[string]any
	if len(m.Properties) > 0 || m.Ack != AckNone {
		app = make(map[string]any, len(m.Properties)+1)
		for k, v := range m.Properties {
			app[k] = v
		}
		if m.Ack != AckNone {
			app["iothub-ack"] = m.Ack.String()
		}
	}
	body := m.Body
	if body == nil {
		body = []byte{} // AMQP needs a body section
	}
	return &amqp.Message{Properties: props, ApplicationProperties: app, Data: [][]byte{body}}
}

// Send sends a cloud-to-device message to a device: it returns nil once
// the hub has enqueued the message in the device's queue, whether or not
// the device is connected. The device receives it when it next listens
// (at least once: see C2DMessage); ask for feedback with msg.Ack and read
// it with a FeedbackReceiver. IoT Hub does not deliver cloud-to-device
// messages to modules, so there is no module variant. It needs the
// ServiceConnect permission.
//
// Send uses the client's AMQP connection (dialled on first use, see
// ClientOptions.AMQPOverWebSockets and TLSConfig); concurrent Sends share
// it. It returns
//   - an error matching ErrArgumentInvalid when deviceID or msg is
//     invalid, also matching ErrMessageTooLarge when msg is larger than
//     MaxC2DMessageSize (nothing is sent then);
//   - a *ResponseError when the hub refuses the message: errors.Is with
//     ErrDeviceNotFound (no such device, or disabled), ErrDeviceQueueFull
//     (50 messages already wait), ErrMessageTooLarge, ErrThrottled,
//     ErrUnauthorized (also for a refused token), …;
//   - an error matching ErrConnectionLost when the connection failed
//     while the message was on its way: it may or may not have been
//     enqueued. The next Send dials again;
//   - ErrClosed after Close; ctx.Err() as is when ctx ends first (the
//     message may then have been enqueued too).
//
// Send is retried only when nothing was sent: if the connection it
// reuses turns out to be dead when the message link is attached, it dials
// a new one once.
func (c *Client) Send(ctx context.Context, deviceID string, msg *C2DMessage) error {
	var err error
	ctx, end := c.startSpan(ctx, "Client.Send")
	defer func() { end(err) }()
	err = c.sendC2D(ctx, deviceID, msg)
	return err
}

func (c *Client) sendC2D(ctx context.Context, deviceID string, msg *C2DMessage) error {
	if err := checkID("device", deviceID); err != nil {
		return err
	}
	if msg == nil {
		return argErr("Send needs a message")
	}
	if err := msg.check(deviceID); err != nil {
		return err
	}
	m := msg.amqpMessage(deviceID, time.Now())
	for attempt := 0; ; attempt++ {
		conn, fresh, err := c.amqpConn(ctx)
		if err != nil {
			return err
		}
		s, err := conn.c2dSender(ctx)
		if err != nil {
			if !fresh && attempt == 0 && errors.Is(err, ErrConnectionLost) {
				c.forget(conn)
				continue // nothing was sent: dial again, once
			}
			return err
		}
		return conn.send(ctx, s, m)
	}
}

// c2dSender returns the connection's sender link on /messages/devicebound,
// attaching it on first use (or after the hub detached it).
func (a *amqpConn) c2dSender(ctx context.Context) (*amqp.Sender, error) {
	a.sendMu.Lock()
	defer a.sendMu.Unlock()
	if a.sender != nil {
		return a.sender, nil
	}
	unsettled := amqp.SenderSettleModeUnsettled
	first := amqp.ReceiverSettleModeFirst
	s, err := a.sess.NewSender(ctx, "/messages/devicebound", &amqp.SenderOptions{
		Name:                        "c2d-sender-" + newUUID().String(),
		SettlementMode:              &unsettled,
		RequestedReceiverSettleMode: &first,
	})
	if err != nil {
		return nil, a.opErr(ctx, "attaching the cloud-to-device link", err)
	}
	a.sender = s
	return s, nil
}

// dropSender forgets s after the hub detached it, so that the next Send
// attaches a new link.
func (a *amqpConn) dropSender(s *amqp.Sender) {
	a.sendMu.Lock()
	if a.sender == s {
		a.sender = nil
	}
	a.sendMu.Unlock()
	ctx, cancel := context.WithTimeout(a.bg, 5*time.Second)
	defer cancel()
	_ = s.Close(ctx)
}

// send transfers m and waits for the hub's outcome.
func (a *amqpConn) send(ctx context.Context, s *amqp.Sender, m *amqp.Message) error {
	receipt, err := s.SendWithReceipt(ctx, m, nil)
	var state amqp.DeliveryState
	if err == nil {
		state, err = receipt.Wait(ctx)
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var le *amqp.LinkError
		if errors.As(err, &le) && a.alive() {
			a.dropSender(s)
			if le.RemoteErr != nil {
				return fmt.Errorf("iothub: the hub detached the cloud-to-device link: %w", amqpResponseError(le.RemoteErr))
			}
		}
		var ae *amqp.Error
		if errors.As(err, &ae) && a.alive() {
			return amqpResponseError(ae)
		}
		return a.opErr(ctx, "sending", err)
	}
	switch st := state.(type) {
	case *amqp.StateAccepted:
		return nil
	case *amqp.StateRejected:
		if st.Error == nil {
			return &ResponseError{StatusCode: http.StatusBadRequest, Message: "the hub rejected the message without saying why"}
		}
		return amqpResponseError(st.Error)
	case *amqp.StateReleased, *amqp.StateModified:
		// .NET reports a released delivery as cancelled: the hub did not
		// take the message.
		return &ResponseError{StatusCode: http.StatusServiceUnavailable, Message: "the hub released the message without enqueuing it; it can be sent again"}
	}
	return fmt.Errorf("iothub: the hub answered the message with the unexpected outcome %T", state)
}

// conditionCodes are the IoT Hub codes of the AMQP error conditions the
// hub uses, for errors whose description carries none (c2d-facts §2.2;
// Azure/azure-iot-sdk-csharp AmqpErrorMapper.cs, Node
// amqp_service_errors.ts).
var conditionCodes = map[amqp.ErrCond]int{
	amqp.ErrCondNotFound:                       404001,
	amqp.ErrCondResourceLimitExceeded:          403004,
	amqp.ErrCondMessageSizeExceeded:            413001,
	amqp.ErrCondUnauthorizedAccess:             401002,
	"com.microsoft:argument-error":             400004,
	"com.microsoft:argument-out-of-range":      400004,
	"com.microsoft:device-container-throttled": 429001,
	"com.microsoft:quota-exceeded":             403002,
	"com.microsoft:message-lock-lost":          412002,
	amqp.ErrCondInternalError:                  500001,
	"com.microsoft:timeout":                    504101,
}

// conditionStatus gives a status to conditions without a code.
var conditionStatus = map[amqp.ErrCond]int{
	amqp.ErrCondNotAllowed:         http.StatusBadRequest,
	amqp.ErrCondInvalidField:       http.StatusBadRequest,
	amqp.ErrCondDecodeError:        http.StatusBadRequest,
	amqp.ErrCondNotImplemented:     http.StatusNotImplemented,
	amqp.ErrCondPreconditionFailed: http.StatusPreconditionFailed,
}

// amqpResponseError turns the hub's AMQP error into a *ResponseError. The
// description is IoT Hub's JSON error object when the hub sends one
// ({"errorCode":404001,"message":…,"trackingId":…}); the tracking id may
// also be in the info map (com.microsoft:tracking-id).
func amqpResponseError(ae *amqp.Error) *ResponseError {
	info := parseErrorBody([]byte(ae.Description))
	e := &ResponseError{Condition: string(ae.Condition), Message: info.message, TrackingID: info.trackingID}
	switch {
	case info.code != 0:
		e.Code, e.ErrorCode = info.code, codeNames[info.code]
	case info.name != "":
		e.ErrorCode, e.Code = info.name, codeNumbers[info.name]
	default:
		if n, ok := conditionCodes[ae.Condition]; ok {
			e.Code, e.ErrorCode = n, codeNames[n]
		}
	}
	if e.Code != 0 {
		e.StatusCode = e.Code / 1000
	} else if st, ok := conditionStatus[ae.Condition]; ok {
		e.StatusCode = st
	} else {
		e.StatusCode = http.StatusInternalServerError
	}
	if e.TrackingID == "" {
		if s, ok := ae.Info["com.microsoft:tracking-id"].(string); ok {
			e.TrackingID = clip(s)
		}
	}
	if e.Message == "" && e.Code == 0 {
		e.Message = string(ae.Condition)
	}
	return e
}

// PurgeResult is the answer to PurgeMessageQueue.
type PurgeResult struct {
	// DeviceID is the device whose queue was purged.
	DeviceID string `json:"deviceId"`
	// TotalMessagesPurged is how many messages the queue held.
	TotalMessagesPurged int `json:"totalMessagesPurged"`
}

// PurgeMessageQueue deletes every cloud-to-device message waiting in a
// device's queue (DELETE /devices/{id}/commands over HTTPS), including
// messages a device has received but not yet settled. It fails with
// ErrDeviceNotFound for an unknown device. Messages that asked for
// negative or full feedback get a Purged feedback record from the local
// hub; IoT Hub documents the Purged status, not when it sends it. Needs
// ServiceConnect. Like other writes it is retried only when the request
// provably was not dispatched.
func (c *Client) PurgeMessageQueue(ctx context.Context, deviceID string) (*PurgeResult, error) {
	var err error
	ctx, end := c.startSpan(ctx, "Client.PurgeMessageQueue")
	defer func() { end(err) }()
	if err = checkID("device", deviceID); err != nil {
		return nil, err
	}
	req, err := c.newRequest(policy.WithRetryOptions(ctx, c.writeRetry), http.MethodDelete, "/devices/"+pathSegment(deviceID)+"/commands", "")
	if err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, req, http.StatusOK)
	if err != nil {
		err = wrapTransport(err)
		return nil, err
	}
	var out PurgeResult
	if err = decodeBody(resp, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
