package mqtt

// Cloud-to-device messages over MQTT: SUBSCRIBE to
// devices/{deviceId}/messages/devicebound/# at QoS 1; the hub publishes
// each message on devices/{deviceId}/messages/devicebound/{bag}, and the
// PUBACK completes it.

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iothub-go/iothub/transport"
)

// cloudFilter is the cloud-to-device filter of a device.
func cloudFilter(deviceID string) string {
	return "devices/" + deviceID + "/messages/devicebound/#"
}

// underCloud reports whether topic matches cloudFilter(deviceID), without
// building the filter.
func underCloud(topic, deviceID string) bool {
	rest, ok := strings.CutPrefix(topic, "devices/")
	if !ok {
		return false
	}
	if rest, ok = strings.CutPrefix(rest, deviceID); !ok {
		return false
	}
	return strings.HasPrefix(rest, "/messages/devicebound/") || rest == "/messages/devicebound"
}

// SubscribeMessages subscribes to devices/{deviceId}/messages/devicebound/#
// at QoS 1, as every official SDK does, and waits for the SUBACK. Messages
// then go to Config.Messages, from paho's ordered delivery (the read
// loop's router goroutine), in the order the hub sent them. It works on
// every new connection; the route is in place from Dial on, so a
// persistent session that still holds the subscription delivers before
// the SUBACK as well.
//
// Modules have no cloud-to-device messages in IoT Hub (the hub closes the
// connection of a module that subscribes): for a module identity it
// returns an error wrapping transport.ErrUnsupported and sends nothing.
func (c *conn) SubscribeMessages(ctx context.Context) error {
	if c.id.ModuleID != "" {
		return fmt.Errorf("%w: mqtt: IoT Hub has no cloud-to-device messages for modules", transport.ErrUnsupported)
	}
	if err := c.subscribeQoS(ctx, cloudFilter(c.id.DeviceID), 1); err != nil {
		return fmt.Errorf("iothub: mqtt: subscribing to cloud-to-device messages: %w", err)
	}
	return nil
}

// ReceiveMessage returns an error wrapping transport.ErrUnsupported: over
// MQTT the hub pushes messages (SubscribeMessages).
func (c *conn) ReceiveMessage(context.Context) (*transport.CloudMessage, error) {
	return nil, fmt.Errorf("%w: mqtt: the hub pushes cloud-to-device messages; use SubscribeMessages", transport.ErrUnsupported)
}

// SettleMessage settles the message delivered on this connection with
// lockToken.
//
// Complete sends the message's PUBACK, which is how MQTT completes it
// (IoT Hub's MQTT dialect has no other settlement). It returns once paho
// has queued the PUBACK for writing: MQTT has no answer to a PUBACK, so a
// connection lost right then still leaves the message to be delivered
// again. PUBACKs go out in the order SettleMessage is called; MQTT
// 3.1.1 (4.6.0-2) wants the order of the PUBLISHes, so a caller completes
// messages in the order they arrived (a hub that enforces it may close the
// connection otherwise [inf: IoT Hub's check is not documented]).
//
// Reject and Abandon return an error wrapping transport.ErrUnsupported and
// leave the message unacknowledged: the hub delivers it again on a later
// connection (and, after the message's lock expires, keeps it from other
// deliveries until then), and it can still be completed on this
// connection. This is a choice: the Node SDK throws for both, the .NET SDK
// refuses both, the C SDK turns reject into a PUBACK (a complete) and
// abandon into no PUBACK.
//
// A lock token this connection did not deliver (one from an earlier
// connection, one already completed), and any token once the connection
// has ended, gives an error wrapping transport.ErrLockLost: the hub
// delivers the message again.
func (c *conn) SettleMessage(ctx context.Context, lockToken string, d transport.Disposition) error {
	switch d {
	case transport.Complete:
	case transport.Reject, transport.Abandon:
		return fmt.Errorf("%w: mqtt: IoT Hub's MQTT dialect can only complete a cloud-to-device message (PUBACK), not %s it; "+
			"it stays unacknowledged and is delivered again after a reconnect", transport.ErrUnsupported, d)
	default:
		return fmt.Errorf("iothub: mqtt: unknown disposition %s", d)
	}
	select {
	case <-c.done:
		return fmt.Errorf("%w: mqtt: the connection that delivered the message has ended: %v", transport.ErrLockLost, c.endedErr())
	default:
	}
	c.mu.Lock()
	m, ok := c.unacked[lockToken]
	delete(c.unacked, lockToken)
	c.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: mqtt: no unacknowledged message with that lock token on this connection", transport.ErrLockLost)
	}
	// paho's Ack hands the PUBACK to the connection's writer and may wait
	// for it; it never waits past the connection's end.
	acked := make(chan struct{})
	go func() {
		defer close(acked)
		m.Ack()
	}()
	select {
	case <-acked:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return fmt.Errorf("%w: mqtt: the connection ended before the PUBACK was sent: %v", transport.ErrLockLost, c.endedErr())
	}
}

// onCloudMessage handles cloud-to-device messages (route, in place before
// CONNECT). Auto-acknowledgement is off (Dial): the message stays
// unacknowledged until SettleMessage completes it. With no
// Config.Messages it is left unacknowledged.
func (c *conn) onCloudMessage(_ paho.Client, m paho.Message) {
	if c.messages == nil {
		return
	}
	cm, ok := parseCloudTopic(m.Topic())
	if !ok {
		c.log.Debug("mqtt: ignoring a cloud-to-device message with a malformed topic")
		return
	}
	if p := m.Payload(); len(p) > 0 {
		cm.Body = append([]byte(nil), p...)
	}
	c.mu.Lock()
	if c.unacked == nil {
		c.unacked = map[string]paho.Message{}
	}
	for {
		cm.LockToken = newLockToken()
		if _, dup := c.unacked[cm.LockToken]; !dup {
			break
		}
	}
	c.unacked[cm.LockToken] = m
	c.mu.Unlock()
	c.messages(&cm)
}

// newLockToken returns 32 random hex digits, so that a token from an
// earlier connection matches nothing on a new one.
func newLockToken() string {
	var b [16]byte
	for i := 0; i < len(b); i += 8 {
		v := rand.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return hex.EncodeToString(b[:])
}

// parseCloudTopic reads a cloud-to-device topic,
// "devices/{deviceId}/messages/devicebound/{bag}" (no bag, an empty bag,
// a "?" before it or a "/" after it are accepted as well). The bag is
// key=value pairs joined by "&", keys and values percent-encoded; a pair
// without "=" has an empty value; an invalid escape is kept as it came.
// Keys, once decoded, map as the Node SDK maps them: $.mid, $.cid, $.uid,
// $.to, $.ct, $.ce and iothub-ack to the system properties, $.exp to
// ExpiryTime (RFC 3339, which includes .NET's round-trip format; a value
// that does not parse is dropped), everything else to Properties (the
// last of repeated keys wins). ok is false only when the topic is not a
// cloud-to-device topic. It never panics.
func parseCloudTopic(topic string) (msg transport.CloudMessage, ok bool) {
	const marker = "/messages/devicebound"
	rest, found := strings.CutPrefix(topic, "devices/")
	if !found {
		return transport.CloudMessage{}, false
	}
	i := strings.Index(rest, marker)
	if i <= 0 || strings.Contains(rest[:i], "/") {
		return transport.CloudMessage{}, false
	}
	bag := rest[i+len(marker):]
	if bag != "" && bag[0] != '/' {
		return transport.CloudMessage{}, false
	}
	bag = strings.TrimPrefix(bag, "/")
	bag = strings.TrimPrefix(bag, "?")
	if j := strings.IndexByte(bag, '/'); j >= 0 {
		bag = bag[:j] // a trailing "/" (the .NET SDK's comment shows one)
	}
	for _, kv := range strings.Split(bag, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		k, v = pctDecode(k), pctDecode(v)
		switch k {
		case "$.mid":
			msg.MessageID = v
		case "$.cid":
			msg.CorrelationID = v
		case "$.uid":
			msg.UserID = v
		case "$.to":
			msg.To = v
		case "$.ct":
			msg.ContentType = v
		case "$.ce":
			msg.ContentEncoding = v
		case "iothub-ack":
			msg.Ack = v
		case "$.exp":
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
				msg.ExpiryTime = t
			}
		default:
			if msg.Properties == nil {
				msg.Properties = map[string]string{}
			}
			msg.Properties[k] = v
		}
	}
	return msg, true
}

// pctDecode decodes percent escapes ("+" stays "+", as JavaScript's
// decodeURIComponent, which the Node SDK uses, leaves it); s is kept as
// it is when an escape is invalid.
func pctDecode(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}
