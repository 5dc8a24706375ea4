package mqttd

import (
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

var (
	errNotConnected = errors.New("iothub: mqtt connection is not established or already closed")
	errSendTimeout  = errors.New("iothub: mqtt device did not take a packet in time")
)

// link is one device connection: what the hooks know about it, and the
// engine.Conn the engine drives it through.
type link struct {
	s    *Server
	raw  net.Conn
	info ConnInfo
	done chan struct{} // closed when ServeConn has cleaned up

	closeOnce sync.Once
	closing   atomic.Bool // Close was called: the end is the hub's doing
	cl        atomic.Pointer[mqtt.Client]
	sess      atomic.Pointer[engine.Session]
	// ackGate is set when the engine session becomes subscribed, just
	// before the CONNACK (inherited session) or SUBACK that tells the
	// device so is written; it is closed and cleared once that packet is
	// on the wire. Until then SendMethod waits, so that no request
	// overtakes the acknowledgement.
	ackGate atomic.Pointer[chan struct{}]
	// c2d is the cloud-to-device delivery (c2d.go).
	c2d c2dState

	// Set while the CONNECT is processed; read only on the connection's
	// read goroutine (all hooks but OnPacketSent run there) and after.
	id        auth.Identity
	key       string // id.String() once the engine session exists
	expiry    time.Time
	connectOK bool
	modelID   string // the username's model-id, if the api-version has Plug and Play
}

// wireConn is the net.Conn handed to mochi; the hooks find the link
// through it (cl.Net.Conn).
type wireConn struct {
	net.Conn
	l *link
}

// Close closes the underlying connection once.
func (w *wireConn) Close() error {
	w.l.shut()
	return nil
}

func linkOf(cl *mqtt.Client) *link {
	if cl == nil {
		return nil
	}
	if w, ok := cl.Net.Conn.(*wireConn); ok {
		return w.l
	}
	return nil
}

// shut closes the network connection, once; later calls wait for the
// first to finish. The read loop then fails and ServeConn cleans up.
func (l *link) shut() {
	l.closeOnce.Do(func() { _ = l.raw.Close() })
}

// closeGate holds method requests back until openGate.
func (l *link) closeGate() {
	gate := make(chan struct{})
	if old := l.ackGate.Swap(&gate); old != nil {
		close(*old)
	}
}

// openGate releases method requests held back by closeGate.
func (l *link) openGate() {
	if g := l.ackGate.Swap(nil); g != nil {
		close(*g)
	}
}

// NewRequestID returns a hub-wide unique hexadecimal request id.
func (l *link) NewRequestID() string { return l.s.e.NextHexRequestID() }

// SendMethod writes $iothub/methods/POST/{name}/?$rid={rid} at QoS 0 to
// this connection only. A device that does not take the packet within
// sendTimeout is disconnected.
func (l *link) SendMethod(rid, name string, payload []byte) error {
	topic := methodRequestTopic(name, rid)
	if err := checkTopicName(topic); err != nil {
		return engine.NewError(engine.CodeArgumentInvalid, "The method cannot be sent over MQTT: %s", strings.TrimPrefix(err.Error(), "iothub: "))
	}
	return l.send(topic, payload, true, "method request")
}

// SendDesired writes a desired-property patch on
// $iothub/twin/PATCH/properties/desired/?$version={version} at QoS 0, as
// IoT Hub publishes every twin message (Azure/azure-sdk-for-c
// az_iot_hub_client.h: "Twin MQTT Publish messages will have QoS At most
// once (0)"). Like SendMethod it waits behind the link's gate, so no patch
// overtakes the SUBACK of the desired subscription, and disconnects a
// device that does not take the packet within sendTimeout.
func (l *link) SendDesired(version int64, body []byte) error {
	return l.send(desiredPatchTopic(version), body, true, "desired-property patch")
}

// send writes a QoS 0 PUBLISH of topic to this connection. With gated, it
// first waits for the CONNACK or SUBACK that the link's gate holds back.
// A device that does not take the packet within sendTimeout is
// disconnected; what names the packet in the reason.
func (l *link) send(topic string, payload []byte, gated bool, what string) error {
	cl := l.cl.Load()
	if cl == nil || l.closing.Load() || cl.Closed() {
		return errNotConnected
	}
	if payload == nil {
		payload = []byte{}
	}
	return l.sendPacket(cl, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   topic,
		Payload:     payload,
	}, gated, what)
}

// sendPacket writes pk to cl, this link's client, as send does: behind
// the gate when gated, and closing the connection when the device does
// not take the packet within sendTimeout.
func (l *link) sendPacket(cl *mqtt.Client, pk packets.Packet, gated bool, what string) error {
	t := time.NewTimer(sendTimeout)
	defer t.Stop()
	if g := l.ackGate.Load(); gated && g != nil {
		select {
		case <-*g:
		case <-l.done:
			return errNotConnected
		case <-t.C:
			l.Close(engine.NewError(engine.CodeServerError, "The CONNACK or SUBACK was not written within %s", sendTimeout))
			return errSendTimeout
		}
	}
	res := make(chan error, 1)
	go func() { res <- cl.WritePacket(pk) }()
	select {
	case err := <-res:
		return err
	case <-t.C:
		l.Close(engine.NewError(engine.CodeServerError, "The device did not read a %s within %s", what, sendTimeout))
		return errSendTimeout
	}
}

// Close drops the connection without blocking: MQTT 3.1.1 has no
// server-side DISCONNECT, IoT Hub just closes the socket.
func (l *link) Close(reason *engine.Error) {
	if !l.closing.CompareAndSwap(false, true) {
		return
	}
	if reason != nil {
		l.s.log.Debug("mqtt connection closed by the hub", "clientId", l.id.String(),
			"protocol", l.info.Protocol, "code", reason.Code, "reason", reason.Message)
	}
	go l.shut() // a TLS close_notify or WebSocket close may wait for the peer
}

// Protocol returns "mqtt" or "mqtt-ws".
func (l *link) Protocol() string { return l.info.Protocol }
