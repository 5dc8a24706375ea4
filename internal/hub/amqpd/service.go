package amqpd

// Cloud-to-device messages, service side: the sender link a back end
// attaches on /messages/devicebound to send C2D messages, and the
// receiver link on /messages/servicebound/feedback on which the hub sends
// feedback batches. Both need a hub token of a policy with ServiceConnect
// (or a bearer token) put on $cbs. Wire facts: /work/notes/c2d-facts.md §2
// (sources there).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/internal/hubauth"
)

// The service nodes, as paths the hub authorizes service tokens for.
const (
	serviceSendPath     = "/messages/devicebound"
	serviceFeedbackPath = "/messages/servicebound/feedback"

	// feedbackContentType is the content-type of a feedback batch; the
	// .NET service SDK refuses any other.
	feedbackContentType = "application/vnd.microsoft.iothub.feedback.json"
)

// The service nodes.
const (
	serviceNone = iota
	serviceSend
	serviceFeedback
)

// serviceNodeOf names the service node of a link address:
// "/messages/devicebound" (Node) or "/messages/deviceBound" (.NET, as
// "amqps://{host}:5671/messages/deviceBound"), and
// "/messages/serviceBound/feedback"; any case, with or without
// "amqps://host[:port]".
func serviceNodeOf(addr string) int {
	segs := strings.Split(strings.TrimPrefix(pathOf(addr), "/"), "/")
	switch {
	case len(segs) == 2 && equalFold(segs[0], "messages") && equalFold(segs[1], "devicebound"):
		return serviceSend
	case len(segs) == 3 && equalFold(segs[0], "messages") && equalFold(segs[1], "servicebound") && equalFold(segs[2], "feedback"):
		return serviceFeedback
	}
	return serviceNone
}

// attachService checks a service link: its direction and the
// connection's service token.
func (c *conn) attachService(l *link) (linkKind, *amqpError) {
	kind, path := linkServiceSend, serviceSendPath
	if serviceNodeOf(l.address) == serviceFeedback {
		kind, path = linkFeedback, serviceFeedbackPath
	}
	switch {
	case kind == linkServiceSend && l.hubSends:
		return linkRefused, &amqpError{condition: condNotAllowed,
			description: fmt.Sprintf("The link address %q only receives cloud-to-device messages from the service", l.address)}
	case kind == linkFeedback && !l.hubSends:
		return linkRefused, &amqpError{condition: condNotAllowed,
			description: fmt.Sprintf("The link address %q only sends feedback to the service", l.address)}
	}
	if herr := c.authorizeService(path); herr != nil {
		return linkRefused, hubError(condUnauthorized, herr)
	}
	return kind, nil
}

// authorizeService checks that the connection holds a service token
// (ServiceConnect) that is still valid for path.
func (c *conn) authorizeService(path string) *engine.Error {
	t := c.serviceToken
	if t == nil {
		return engine.NewError(engine.CodeUnauthorized,
			"No service token: put a token of a shared access policy with ServiceConnect on $cbs (audience: the hub's host name) before attaching %s", path)
	}
	return c.s.e.AuthorizeService(t.token, path, hubauth.RightsServiceConnect)
}

// onServiceSend queues a cloud-to-device message a service sent, and
// answers accepted, or rejected with the condition IoT Hub uses (facts
// §2.2): amqp:not-found (404001), amqp:resource-limit-exceeded (403004,
// queue full), amqp:link:message-size-exceeded (413001),
// com.microsoft:argument-error (a bad "to" or ack), amqp:not-implemented
// (a module).
func (c *conn) onServiceSend(l *link, payload []byte) any {
	m, err := decodeMessage(payload)
	if err != nil {
		return rejected(condDecodeError, trimErr(err))
	}
	if herr := c.authorizeService(serviceSendPath); herr != nil {
		return performative(descRejected, errorValue(hubError(condUnauthorized, herr)))
	}
	dev, msg, aerr := c2dFromService(m, c.s.e.Now())
	if aerr != nil {
		c.log.Info("amqp cloud-to-device message refused", "to", m.to, "condition", string(aerr.condition))
		return performative(descRejected, errorValue(aerr))
	}
	q, herr := c.s.e.EnqueueC2D(dev, msg)
	if herr != nil {
		c.log.Info("amqp cloud-to-device message refused", "device", dev, "code", herr.Code, "reason", herr.Message)
		return performative(descRejected, errorValue(hubError(conditionFor(herr), herr)))
	}
	c.log.Debug("amqp cloud-to-device message queued", "device", dev, "messageId", q.MessageID, "sequenceNumber", q.SequenceNumber)
	return accepted()
}

// c2dFromService reads a message a service sent on /messages/devicebound:
// the device from "to" (/devices/{id}/messages/devicebound, any case, id
// percent-decoded), message-id and correlation-id (any AMQP id type, as
// text), user-id, content-type and content-encoding, the expiry from
// absolute-expiry-time or else the header's ttl, the iothub-ack
// application property, the other application properties (as text) and
// the body (data sections; an amqp-value string or binary is taken as
// the body too). An error is the AMQP error to reject the message with.
func c2dFromService(m *message, now time.Time) (string, engine.C2DMessage, *amqpError) {
	argErr := func(format string, args ...any) *amqpError {
		return hubError(condArgumentError, engine.NewError(engine.CodeArgumentInvalid, format, args...))
	}
	if m.to == "" {
		return "", engine.C2DMessage{}, argErr("The message has no 'to' property: it must be /devices/{deviceId}/messages/devicebound")
	}
	id, node := parseIdentityAddress(m.to)
	if node != nodeC2D {
		return "", engine.C2DMessage{}, argErr("The 'to' property %q is not /devices/{deviceId}/messages/devicebound", m.to)
	}
	if id.ModuleID != "" {
		return "", engine.C2DMessage{}, &amqpError{condition: condNotImplemented,
			description: "Modules do not support cloud-to-device messages"}
	}
	msg := engine.C2DMessage{
		MessageID:       idString(m.messageID),
		CorrelationID:   idString(m.correlationID),
		UserID:          string(m.userID),
		To:              m.to,
		ContentType:     m.contentType,
		ContentEncoding: m.contentEnc,
	}
	switch {
	case !m.absExpiry.IsZero():
		msg.ExpiryTime = m.absExpiry
	case m.hasTTL:
		msg.ExpiryTime = now.Add(time.Duration(m.ttl) * time.Millisecond)
	}
	for _, kv := range m.appProps {
		k, ok := asString(kv.Key)
		if !ok {
			continue
		}
		v := propText(kv.Value)
		if equalFold(k, propAck) {
			msg.Ack = v
			continue
		}
		if msg.Properties == nil {
			msg.Properties = map[string]string{}
		}
		msg.Properties[k] = v
	}
	switch {
	case m.hasData:
		msg.Body = m.data
	case m.hasValue:
		switch v := m.value.(type) {
		case string:
			msg.Body = []byte(v)
		case []byte:
			msg.Body = v
		}
	}
	return id.DeviceID, msg, nil
}

// propText renders an application property value as text: IoT Hub's
// properties are strings, other types keep their text form [inf].
func propText(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case Symbol:
		return string(v)
	case nil:
		return ""
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano)
	case UUID:
		return v.String()
	}
	return fmt.Sprint(v)
}

// feedbackRecord is a feedback record as the service SDKs read it (.NET
// FeedbackRecord, facts §2.3).
type feedbackRecord struct {
	OriginalMessageID  string `json:"originalMessageId"`
	DeviceGenerationID string `json:"deviceGenerationId"`
	DeviceID           string `json:"deviceId"`
	EnqueuedTimeUTC    string `json:"enqueuedTimeUtc"`
	StatusCode         string `json:"statusCode"`
	Description        string `json:"description"`
}

// encodeFeedback encodes a feedback batch: user-id = the hub name,
// content-type application/vnd.microsoft.iothub.feedback.json, the
// annotation iothub-enqueuedtime, and a data section holding the JSON
// array of records. These are what the .NET service SDK requires.
func encodeFeedback(b engine.FeedbackBatch, hub string) ([]byte, error) {
	recs := make([]feedbackRecord, len(b.Records))
	for i, r := range b.Records {
		recs[i] = feedbackRecord{
			OriginalMessageID:  r.OriginalMessageID,
			DeviceGenerationID: r.DeviceGenerationID,
			DeviceID:           r.DeviceID,
			EnqueuedTimeUTC:    r.EnqueuedTime.UTC().Format(time.RFC3339Nano),
			StatusCode:         r.StatusCode,
			Description:        r.Description,
		}
	}
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(recs); err != nil {
		return nil, err
	}
	enqueued := b.EnqueuedTime
	if enqueued.IsZero() {
		enqueued = time.Now()
	}
	sections := []any{
		Described{Descriptor: uint64(descMessageAnnotations), Value: Map{{Key: Symbol(annEnqueuedTime), Value: enqueued}}},
		performative(descProperties, optString(b.LockToken), []byte(hub), nil, nil, nil, nil, Symbol(feedbackContentType)),
		Described{Descriptor: uint64(descData), Value: bytes.TrimSuffix(body.Bytes(), []byte("\n"))},
	}
	var out []byte
	for _, s := range sections {
		var err error
		if out, err = appendValue(out, s); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// deviceBoundTo returns the "to" of a message for a device, as the Node
// service SDK writes it.
func deviceBoundTo(deviceID string) string {
	return "/devices/" + url.PathEscape(deviceID) + "/messages/devicebound"
}
