package mqttd

// Cloud-to-device messages over MQTT: a device subscribed to
// devices/{deviceId}/messages/devicebound/# receives the messages of its
// queue as PUBLISHes on devices/{deviceId}/messages/devicebound/{bag},
// and a PUBACK completes one. /work/notes/c2d-facts.md §3.1 and
// docs/hub-fidelity.md have the sources.
//
//   - Delivery runs on one goroutine per subscribed connection
//     (c2dLoop). It keeps at most c2dWindow messages unacknowledged,
//     takes the next one with engine.ReceiveC2D (which locks it for the
//     lock timeout) and otherwise waits on engine.C2DAvailable.
//   - A message is sent at the QoS the subscription was granted (1 for
//     every SDK). A PUBACK completes it (engine.SettleC2D, Complete).
//     MQTT has no way to reject or abandon.
//   - On a QoS 0 subscription a message is completed once written: it
//     is delivered at most once [inf: IoT Hub's behaviour with a QoS 0
//     subscription is not documented].
//   - The unacknowledged messages go back to the queue, their delivery
//     count unchanged (engine.ReleaseC2D), when the connection ends or
//     the device unsubscribes; the next subscription gets them again,
//     with new packet ids and DUP=0 [inf: MQTT 3.1.1 allows a resend
//     only on a new connection; IoT Hub's choice is not documented].
//   - A message whose lock expired while its PUBLISH is unacknowledged
//     is not sent again on the same connection (the packet id is still
//     outstanding): the connection takes the new lock over, and a late
//     PUBACK completes the message [inf].
//   - Modules have no cloud-to-device messages: their SUBSCRIBE to the
//     filter closes the connection (classifyFilter).

import (
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

// c2dWindow is how many cloud-to-device messages a connection may hold
// unacknowledged: more arrive only as PUBACKs come back [inf: IoT Hub's
// in-flight limit is not documented; the .NET SDK's complaint about
// out-of-order PUBACKs shows that it sends more than one].
const c2dWindow = 5

// c2dPrefix starts the topic of every cloud-to-device message; the
// device id follows.
const c2dPrefix = "devices/"

// c2dExpiryLayout is the format of $.exp: .NET's round-trip ("o") format,
// which its MQTT transport parses with DateTime.ParseExact (seven
// fractional digits, "Z") [code CS MqttIotHubAdapter.cs
// ConvertToSystemProperty; the value IoT Hub sends is UNCONFIRMED].
const c2dExpiryLayout = "2006-01-02T15:04:05.0000000Z07:00"

// c2dSystemKeys are the property names the hub writes for system
// properties; an application property with one of these names is not
// sent, as it would be read as the system property.
var c2dSystemKeys = map[string]bool{
	"$.mid": true, "$.cid": true, "$.uid": true, "$.to": true,
	"$.ct": true, "$.ce": true, "$.exp": true, "iothub-ack": true,
}

// FormatC2DTopic returns the topic the hub publishes m on to device
// deviceID: "devices/{deviceId}/messages/devicebound/" and a property
// bag without "?": $.mid, $.cid, $.uid, $.to, $.ct, $.ce, iothub-ack and
// $.exp when set, then the application properties by name, as
// key=value pairs joined by "&", keys and values percent-encoded (every
// byte but RFC 3986 unreserved characters: "$" is %24, space %20, "/"
// %2F). $.to is the message's "to", or /devices/{deviceId}/messages/devicebound
// when it has none [inf]. $.exp is the expiry time in .NET's round-trip
// format, UTC [inf]. An application property named like a system
// property is left out.
//
// Sources: real hub traces such as
// devices/MySmartDevice/messages/devicebound/%24.to=%2Fdevices%2FMySmartDevice%2Fmessages%2FdeviceBound&foo=bar
// (facts §3.1), the IoT Hub MQTT doc's property table, and the C SDK,
// which matches "%24.mid" before decoding.
func FormatC2DTopic(deviceID string, m engine.C2DMessage) string {
	var b strings.Builder
	b.WriteString(c2dPrefix + deviceID + "/messages/devicebound/")
	first := true
	add := func(k, v string) {
		if !first {
			b.WriteByte('&')
		}
		first = false
		b.WriteString(c2dEscape(k))
		b.WriteByte('=')
		b.WriteString(c2dEscape(v))
	}
	to := m.To
	if to == "" {
		to = "/devices/" + url.PathEscape(deviceID) + "/messages/devicebound"
	}
	for _, p := range [][2]string{
		{"$.mid", m.MessageID}, {"$.cid", m.CorrelationID}, {"$.uid", m.UserID}, {"$.to", to},
		{"$.ct", m.ContentType}, {"$.ce", m.ContentEncoding}, {"iothub-ack", m.Ack},
	} {
		if p[1] != "" {
			add(p[0], p[1])
		}
	}
	if !m.ExpiryTime.IsZero() {
		add("$.exp", m.ExpiryTime.UTC().Format(c2dExpiryLayout))
	}
	names := make([]string, 0, len(m.Properties))
	for k := range m.Properties {
		if !c2dSystemKeys[k] {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		add(k, m.Properties[k])
	}
	return b.String()
}

// c2dEscape percent-encodes everything but RFC 3986 unreserved
// characters; a space becomes %20, never "+".
func c2dEscape(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}

// c2dInflight is a message written at QoS 1 and not yet acknowledged.
type c2dInflight struct {
	lock string // the engine's lock token
	seq  int64  // the message's sequence number
}

// c2dState is a link's cloud-to-device delivery. Its zero value is
// ready: no subscription, nothing in flight.
type c2dState struct {
	mu       sync.Mutex
	qos      byte
	stop     chan struct{} // non-nil while a loop runs; closed to stop it
	loopDone chan struct{} // closed when that loop has returned
	inflight map[uint16]c2dInflight
	nextID   uint16
	room     chan struct{} // signalled when a PUBACK frees a slot
}

// startC2D starts delivering cloud-to-device messages at qos, once the
// subscription is granted (OnSubscribed) or inherited with a persistent
// session (OnSessionEstablished). A second SUBSCRIBE only changes the
// QoS of later messages. It never blocks.
func (l *link) startC2D(qos byte) {
	c := &l.c2d
	c.mu.Lock()
	defer c.mu.Unlock()
	c.qos = qos
	if c.stop != nil || l.closing.Load() {
		return
	}
	if c.inflight == nil {
		c.inflight = map[uint16]c2dInflight{}
		c.room = make(chan struct{}, 1)
	}
	c.stop, c.loopDone = make(chan struct{}), make(chan struct{})
	go l.c2dLoop(c.stop, c.loopDone)
}

// stopC2D stops the delivery loop, if one runs, and returns the
// unacknowledged messages to the queue. It does not wait for the loop;
// the returned channel is closed once the loop has returned (nil when no
// loop ran).
func (l *link) stopC2D() <-chan struct{} {
	c := &l.c2d
	c.mu.Lock()
	done := c.loopDone
	if c.stop != nil {
		close(c.stop)
		c.stop, c.loopDone = nil, nil
	}
	locks := make([]string, 0, len(c.inflight))
	for id, m := range c.inflight {
		locks = append(locks, m.lock)
		delete(c.inflight, id)
	}
	c.mu.Unlock()
	for _, lock := range locks {
		l.s.e.ReleaseC2D(l.id, lock)
	}
	return done
}

// onPuback completes the message written with packet id, if this link
// has it in flight; other PUBACKs are mochi's business (it ignores
// unknown ids). It runs on the read goroutine and does not block.
func (l *link) onPuback(id uint16) {
	c := &l.c2d
	c.mu.Lock()
	m, ok := c.inflight[id]
	if ok {
		delete(c.inflight, id)
	}
	room := c.room
	c.mu.Unlock()
	if !ok {
		return
	}
	select {
	case room <- struct{}{}:
	default:
	}
	if herr := l.s.e.SettleC2D(l.id, m.lock, engine.C2DComplete); herr != nil {
		// The lock expired, or the message expired, before the PUBACK:
		// the message is delivered again or gone already.
		l.s.log.Debug("mqtt cloud-to-device PUBACK came too late", "clientId", l.id.String(),
			"code", herr.Code, "reason", herr.Message)
	}
}

// c2dLoop delivers messages until stop is closed.
func (l *link) c2dLoop(stop, done chan struct{}) {
	defer close(done)
	c := &l.c2d
	for {
		select {
		case <-stop:
			return
		default:
		}
		c.mu.Lock()
		full := len(c.inflight) >= c2dWindow
		room := c.room
		c.mu.Unlock()
		if full {
			select {
			case <-room:
			case <-stop:
				return
			case <-l.done:
				return
			}
			continue
		}
		// Take the channel before looking, so that a message enqueued in
		// between is not missed.
		avail := l.s.e.C2DAvailable(l.id)
		m, ok := l.s.e.ReceiveC2D(l.id)
		if !ok {
			select {
			case <-avail:
			case <-room:
			case <-stop:
				return
			case <-l.done:
				return
			}
			continue
		}
		if !l.deliverC2D(stop, m) {
			return
		}
	}
}

// deliverC2D writes one locked message; false means the loop must end.
func (l *link) deliverC2D(stop chan struct{}, m engine.C2DMessage) bool {
	c := &l.c2d
	cl := l.cl.Load()
	topic := FormatC2DTopic(l.id.DeviceID, m)
	if err := checkTopicName(topic); err != nil {
		// Its properties do not fit in an MQTT topic: it stays locked
		// until the lock expires, and expires in the end [inf].
		l.s.log.Info("mqtt cloud-to-device message not sent: "+strings.TrimPrefix(err.Error(), "iothub: "),
			"clientId", l.id.String(), "messageId", m.MessageID)
		return true
	}
	c.mu.Lock()
	select {
	case <-stop:
		c.mu.Unlock()
		l.s.e.ReleaseC2D(l.id, m.LockToken)
		return false
	default:
	}
	qos := c.qos
	var id uint16
	if qos > 0 {
		for pid, f := range c.inflight {
			if f.seq == m.SequenceNumber {
				// Its lock expired while its PUBLISH is unacknowledged:
				// keep the new lock for that PUBLISH's PUBACK.
				c.inflight[pid] = c2dInflight{lock: m.LockToken, seq: m.SequenceNumber}
				c.mu.Unlock()
				return true
			}
		}
		id = c.nextPacketID()
		c.inflight[id] = c2dInflight{lock: m.LockToken, seq: m.SequenceNumber}
	}
	c.mu.Unlock()

	body := m.Body
	if body == nil {
		body = []byte{}
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic,
		PacketID:    id,
		Payload:     body,
		Created:     time.Now().Unix(),
	}
	if cl == nil || l.closing.Load() || cl.Closed() {
		l.abortC2D(id, m.LockToken)
		return false
	}
	if err := l.sendPacket(cl, pk, true, "cloud-to-device message"); err != nil {
		l.abortC2D(id, m.LockToken)
		return false
	}
	if qos == 0 {
		if herr := l.s.e.SettleC2D(l.id, m.LockToken, engine.C2DComplete); herr != nil {
			l.s.log.Debug("mqtt cloud-to-device message sent at QoS 0 could not be completed", "clientId", l.id.String(),
				"code", herr.Code, "reason", herr.Message)
		}
	}
	return true
}

// abortC2D returns a message whose PUBLISH could not be written.
func (l *link) abortC2D(id uint16, lock string) {
	c := &l.c2d
	c.mu.Lock()
	if f, ok := c.inflight[id]; ok && f.lock == lock {
		delete(c.inflight, id)
	}
	c.mu.Unlock()
	l.s.e.ReleaseC2D(l.id, lock)
}

// nextPacketID returns a packet id (1..65535) no message in flight
// uses; c.mu is held. Mochi itself never sends a QoS 1 PUBLISH here (no
// fan-out, no retained messages), so the ids are this link's alone.
func (c *c2dState) nextPacketID() uint16 {
	for {
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		if _, used := c.inflight[c.nextID]; !used {
			return c.nextID
		}
	}
}

// c2dFilterQoS returns the QoS of the cloud-to-device subscription in
// cl's session, and whether there is one.
func c2dFilterQoS(cl *mqtt.Client, l *link) (byte, bool) {
	if l.id.ModuleID != "" || l.id.DeviceID == "" {
		return 0, false
	}
	sub, ok := cl.State.Subscriptions.Get(c2dFilter(l.id.DeviceID))
	if !ok {
		return 0, false
	}
	return min(sub.Qos, 1), true
}

// c2dFilter is the cloud-to-device filter of a device.
func c2dFilter(deviceID string) string {
	return c2dPrefix + deviceID + "/messages/devicebound/#"
}
