package amqpd

import "time"

// Message sections (AMQP 1.0 part 3.2): a transfer's payload is a
// sequence of described sections.

const (
	descHeader                = 0x70
	descDeliveryAnnotations   = 0x71
	descMessageAnnotations    = 0x72
	descProperties            = 0x73
	descApplicationProperties = 0x74
	descData                  = 0x75
	descAMQPSequence          = 0x76
	descAMQPValue             = 0x77
	descFooter                = 0x78
)

// message is the part of a received message the hub reads.
type message struct {
	messageID     any // string, uint64, UUID, []byte or nil
	to            string
	replyTo       string
	correlationID any
	contentType   string
	contentEnc    string
	userID        []byte    // binary, or a string's bytes
	absExpiry     time.Time // absolute-expiry-time; zero when absent
	ttl           uint32    // the header's ttl in milliseconds, when hasTTL
	hasTTL        bool
	annotations   Map // the message-annotations section
	appProps      Map
	data          []byte // the data sections, concatenated
	hasData       bool
	value         any // the amqp-value section
	hasValue      bool
}

// decodeMessage decodes the sections of a message payload.
func decodeMessage(b []byte) (*message, error) {
	m := &message{}
	d := decoder{b: b}
	for len(d.b) > 0 {
		v, err := d.value()
		if err != nil {
			return nil, err
		}
		sec, ok := v.(Described)
		if !ok {
			return nil, decodeErr("message section is %T, not a described value", v)
		}
		code, ok := descriptorCode(sec.Descriptor)
		if !ok {
			return nil, decodeErr("unknown message section %v", sec.Descriptor)
		}
		switch code {
		case descHeader:
			// Only the ttl is read (cloud-to-device sends); a malformed
			// header is ignored, as it was before the hub read it.
			if l, ok := sec.Value.(List); ok {
				if ttl, ok := fields(l).get(2).(uint32); ok {
					m.ttl, m.hasTTL = ttl, true
				}
			}
		case descDeliveryAnnotations, descFooter, descAMQPSequence:
			// Not used by the hub.
		case descMessageAnnotations:
			// Read by twin requests; a section that is not a map is
			// ignored, as it was before the hub read any.
			if mp, ok := sec.Value.(Map); ok {
				m.annotations = mp
			}
		case descProperties:
			l, ok := sec.Value.(List)
			if !ok {
				return nil, decodeErr("properties section is %T, not a list", sec.Value)
			}
			fs := fields(l)
			m.messageID = fs.get(0)
			switch v := fs.get(1).(type) {
			case []byte:
				m.userID = v
			case string:
				m.userID = []byte(v)
			}
			if t, ok := fs.get(8).(time.Time); ok {
				m.absExpiry = t
			}
			if m.to, err = fs.string(2, "to", false); err != nil {
				return nil, err
			}
			if m.replyTo, err = fs.string(4, "reply-to", false); err != nil {
				return nil, err
			}
			m.correlationID = fs.get(5)
			if m.contentType, err = fs.string(6, "content-type", false); err != nil {
				return nil, err
			}
			if m.contentEnc, err = fs.string(7, "content-encoding", false); err != nil {
				return nil, err
			}
			for _, id := range []any{m.messageID, m.correlationID} {
				switch id.(type) {
				case nil, string, uint64, UUID, []byte:
				default:
					return nil, decodeErr("message id of type %T", id)
				}
			}
		case descApplicationProperties:
			mp, ok := sec.Value.(Map)
			if !ok {
				return nil, decodeErr("application-properties section is %T, not a map", sec.Value)
			}
			m.appProps = mp
		case descData:
			b, ok := sec.Value.([]byte)
			if !ok {
				return nil, decodeErr("data section is %T, not binary", sec.Value)
			}
			m.data = append(m.data, b...)
			m.hasData = true
		case descAMQPValue:
			m.value = sec.Value
			m.hasValue = true
		default:
			return nil, decodeErr("0x%02x is not a message section", code)
		}
	}
	return m, nil
}

// outMessage is a message the hub sends.
type outMessage struct {
	annotations   Map // message-annotations, symbol keys
	correlationID any
	appProps      Map
	data          []byte // sent as one data section when hasData
	hasData       bool
}

func (m *outMessage) encode() ([]byte, error) {
	var b []byte
	var err error
	if len(m.annotations) > 0 {
		if b, err = appendValue(b, Described{Descriptor: uint64(descMessageAnnotations), Value: m.annotations}); err != nil {
			return nil, err
		}
	}
	if m.correlationID != nil {
		props := performative(descProperties, nil, nil, nil, nil, nil, m.correlationID)
		if b, err = appendValue(b, props); err != nil {
			return nil, err
		}
	}
	if len(m.appProps) > 0 {
		if b, err = appendValue(b, Described{Descriptor: uint64(descApplicationProperties), Value: m.appProps}); err != nil {
			return nil, err
		}
	}
	if m.hasData {
		data := m.data
		if data == nil {
			data = []byte{}
		}
		if b, err = appendValue(b, Described{Descriptor: uint64(descData), Value: data}); err != nil {
			return nil, err
		}
	}
	return b, nil
}
