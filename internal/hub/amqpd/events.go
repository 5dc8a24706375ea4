package amqpd

import (
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

// onEvent passes a device-to-cloud message from a telemetry link
// (/devices/{id}[/modules/{mid}]/messages/events) to the engine. A
// message the engine refuses (too large, identity gone) is rejected with
// the matching AMQP condition; the link stays attached.
func (c *conn) onEvent(l *link, payload []byte) any {
	m, err := decodeMessage(payload)
	if err != nil {
		return rejected(condDecodeError, trimErr(err))
	}
	u := l.unit
	if u == nil || u.closed {
		return rejected(condUnauthorized, "the identity's links are closed")
	}
	ev := engine.Event{
		Identity:        u.id,
		Protocol:        c.info.Protocol,
		MessageID:       idString(m.messageID),
		CorrelationID:   idString(m.correlationID),
		ContentType:     m.contentType,
		ContentEncoding: m.contentEnc,
	}
	switch {
	case m.hasData:
		ev.Body = m.data
	case m.hasValue:
		switch v := m.value.(type) {
		case string:
			ev.Body = []byte(v)
		case []byte:
			ev.Body = v
		}
	}
	if len(m.appProps) > 0 {
		ev.Properties = make(map[string]string, len(m.appProps))
		for _, kv := range m.appProps {
			k, ok := asString(kv.Key)
			if !ok {
				continue
			}
			// IoT Hub application properties are strings; other types
			// are kept in their text form [inf].
			switch v := kv.Value.(type) {
			case string:
				ev.Properties[k] = v
			case Symbol:
				ev.Properties[k] = string(v)
			case nil:
				ev.Properties[k] = ""
			default:
				ev.Properties[k] = fmt.Sprint(v)
			}
		}
	}
	if herr := c.s.e.ReceiveEvent(ev); herr != nil {
		c.log.Info("amqp device-to-cloud message refused", "identity", u.key, "code", herr.Code, "reason", herr.Message)
		return performative(descRejected, errorValue(hubError(conditionFor(herr), herr)))
	}
	return accepted()
}

// idString renders a message-id or correlation-id as text.
func idString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case UUID:
		return v.String()
	case uint64:
		return strconv.FormatUint(v, 10)
	case []byte:
		return hex.EncodeToString(v)
	}
	return ""
}
