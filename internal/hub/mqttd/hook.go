package mqttd

import (
	"bytes"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/iothub-go/iothub/auth"
)

// hook is the single mochi hook that turns the broker into IoT Hub's
// device endpoint. Mochi calls every method but OnPacketSent on the
// connection's own read goroutine.
type hook struct {
	mqtt.HookBase
	s *Server
}

func (h *hook) ID() string { return "iothub" }

func (h *hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnPacketRead, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck,
		mqtt.OnSessionEstablish, mqtt.OnSessionEstablished,
		mqtt.OnSubscribed, mqtt.OnUnsubscribed, mqtt.OnPublish, mqtt.OnPacketSent:
		return true
	}
	return false
}

// refuse answers a CONNECT with a 3.1.1 CONNACK return code and makes
// mochi close the connection. It runs before mochi has parsed the CONNECT
// into the client, so the client still has protocol version 4 and mochi
// writes a 3.1.1 CONNACK even to MQTT 3.1 and 5 clients: code maps
// ErrUnsupportedProtocolVersion to 1, ErrClientIdentifierNotValid to 2 and
// ErrBadUsernameOrPassword to 5.
func (h *hook) refuse(l *link, cl *mqtt.Client, pk packets.Packet, code packets.Code, why string) (packets.Packet, error) {
	h.s.log.Info("mqtt connect refused", "clientId", pk.Connect.ClientIdentifier,
		"protocol", l.info.Protocol, "code", packets.V5CodesToV3[code].Code, "reason", strings.TrimPrefix(why, "iothub: "))
	_ = h.s.mq.SendConnack(cl, code, false, nil)
	return pk, packets.ErrRejectPacket
}

// violation makes mochi close the connection, as IoT Hub does for
// anything it does not support.
func (h *hook) violation(l *link, pk packets.Packet, why string) (packets.Packet, error) {
	h.s.log.Info("mqtt connection closed: unsupported by IoT Hub", "clientId", l.id.String(),
		"protocol", l.info.Protocol, "reason", why)
	return pk, packets.ErrRejectPacket
}

// OnPacketRead runs on every packet before mochi validates and processes
// it: the CONNECT rules, and the checks that close the connection.
func (h *hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	l := linkOf(cl)
	if l == nil {
		return pk, packets.ErrRejectPacket
	}
	switch pk.FixedHeader.Type {
	case packets.Connect:
		return h.onConnect(l, cl, pk)
	case packets.Publish:
		if pk.FixedHeader.Qos == 2 {
			return h.violation(l, pk, "PUBLISH with QoS 2")
		}
		if classifyTopic(pk.TopicName, l.id) == topicForbidden {
			return h.violation(l, pk, "PUBLISH to an unsupported topic: "+pk.TopicName)
		}
		if why := checkEventPacket(pk, l.id); why != "" {
			return h.violation(l, pk, why)
		}
	case packets.Puback:
		l.onPuback(pk.PacketID)
	case packets.Subscribe:
		for _, f := range pk.Filters {
			if classifyFilter(f.Filter, l.id) == filterForbidden {
				// IoT Hub closes the connection rather than answer with a
				// SUBACK failure code.
				return h.violation(l, pk, "SUBSCRIBE to an unsupported filter: "+f.Filter)
			}
		}
	}
	return pk, nil
}

// onConnect applies IoT Hub's CONNECT rules except the credentials.
//
// Return codes: protocol level other than 4 (MQTT 3.1, MQTT 5) → 1;
// empty or malformed ClientId → 2, as MQTT 3.1.1 §3.1.3 prescribes for a
// ClientId the server rejects; a missing or malformed username, a
// username naming another hub or identity than the ClientId, or no
// api-version → 5 [inf: IoT Hub parses the username while authenticating,
// and SDK logs show 5 for credential problems; protocol.md §11 lists the
// code as open]. A will must use the identity's own telemetry topic, or
// the connection is closed without CONNACK [inf]; an accepted will is
// dropped (IoT Hub would send it as telemetry on an unexpected disconnect;
// not implemented).
func (h *hook) onConnect(l *link, cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if l.connectOK || l.cl.Load() != nil {
		return h.violation(l, pk, "second CONNECT")
	}
	l.cl.Store(cl)
	if l.closing.Load() {
		return pk, packets.ErrRejectPacket
	}
	if pk.ProtocolVersion != 4 || !bytes.Equal(pk.Connect.ProtocolName, []byte("MQTT")) {
		return h.refuse(l, cl, pk, packets.ErrUnsupportedProtocolVersion, "IoT Hub speaks MQTT 3.1.1 (protocol level 4) only")
	}
	// Mochi's check refuses a will with an empty message, which MQTT 3.1.1
	// allows; wills are checked below instead.
	if pk.Connect.WillQos > 2 || (!pk.Connect.WillFlag && (pk.Connect.WillRetain || pk.Connect.WillQos != 0)) {
		return h.violation(l, pk, "malformed CONNECT: will flags")
	}
	noWill := pk
	noWill.Connect.WillFlag, noWill.Connect.WillRetain, noWill.Connect.WillQos = false, false, 0
	if code := noWill.ConnectValidate(); code != packets.CodeSuccess {
		return h.violation(l, pk, "malformed CONNECT: "+code.Reason)
	}
	clientID := pk.Connect.ClientIdentifier
	id, err := parseClientID(clientID)
	if err != nil {
		return h.refuse(l, cl, pk, packets.ErrClientIdentifierNotValid, err.Error())
	}
	if !pk.Connect.UsernameFlag {
		return h.refuse(l, cl, pk, packets.ErrBadUsernameOrPassword, "no username")
	}
	u, err := parseUsername(string(pk.Connect.Username), clientID)
	if err != nil {
		return h.refuse(l, cl, pk, packets.ErrBadUsernameOrPassword, err.Error())
	}
	// The user name names the hub (or, as .NET does with a
	// GatewayHostName, one of the hub's gateway names); the SAS audience
	// is checked against the hub's host name separately.
	if !h.s.e.AcceptsHostName(u.Host) {
		return h.refuse(l, cl, pk, packets.ErrBadUsernameOrPassword, "username names host "+u.Host+", which is not "+h.s.e.HostName()+" or one of its gateway names")
	}
	if pk.Connect.WillFlag {
		if classifyTopic(pk.Connect.WillTopic, id) != topicTelemetry {
			return h.violation(l, pk, "will topic is not the identity's telemetry topic")
		}
		pk.Connect.WillFlag, pk.Connect.WillRetain, pk.Connect.WillQos = false, false, 0
		pk.Connect.WillTopic, pk.Connect.WillPayload = "", nil
	}
	l.id = auth.Identity{HostName: h.s.e.HostName(), DeviceID: id.DeviceID, ModuleID: id.ModuleID}
	l.modelID = modelIDOf(u)
	l.connectOK = true
	return pk, nil
}

// OnConnectAuthenticate checks the credentials: a password is a SAS token,
// no password means X.509 with the TLS client certificate. A refusal
// makes mochi answer CONNACK 5.
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	l := linkOf(cl)
	if l == nil || !l.connectOK {
		return false
	}
	if pk.Connect.PasswordFlag {
		expiry, herr := h.s.e.AuthenticateSAS(l.id, string(pk.Connect.Password))
		if herr != nil {
			h.s.log.Info("mqtt connect refused", "clientId", l.id.String(), "protocol", l.info.Protocol,
				"code", 5, "reason", herr.Message)
			return false
		}
		l.expiry = expiry
		return true
	}
	if herr := h.s.e.AuthenticateCert(l.id, l.info.PeerCertificates); herr != nil {
		h.s.log.Info("mqtt connect refused", "clientId", l.id.String(), "protocol", l.info.Protocol,
			"code", 5, "reason", herr.Message)
		return false
	}
	return true
}

// OnSessionEstablish runs after authentication, before mochi looks for a
// previous session of the ClientId and sends the CONNACK. The engine
// session starts here; the engine kicks the identity's previous
// connection, and we wait for that connection to wind down so that mochi
// hands its session (clean=false) to this one instead of racing with its
// clean-up.
func (h *hook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	l := linkOf(cl)
	if l == nil || !l.connectOK {
		return
	}
	if cl.State.Keepalive == 0 || cl.State.Keepalive > maxKeepalive {
		cl.State.Keepalive = maxKeepalive
	}
	s := h.s
	key := l.id.String()
	s.mu.Lock()
	// Under s.mu so that the engine's order of sessions and ours agree.
	// Connect calls the previous link's Close, which never takes s.mu.
	sess := s.e.Connect(l.id, l, l.expiry)
	if l.modelID != "" {
		// The model id the twin shows is the one the device announced
		// when it last connected with one [inf].
		sess.SetModelID(l.modelID)
	}
	l.sess.Store(sess)
	l.key = key
	prev := s.live[key]
	s.live[key] = l
	s.mu.Unlock()
	if prev != nil && prev != l {
		prev.Close(nil)
		t := time.NewTimer(takeoverWait)
		select {
		case <-prev.done:
		case <-t.C:
		}
		t.Stop()
	}
	s.dropStaleSessions(cl.ID, l.id)
	// Mochi is about to hand this connection the previous session of the
	// ClientId if both connections use clean=false. If that session holds
	// the methods filter, the device is online from the CONNACK on; if it
	// holds the desired filter, desired patches flow from then on.
	if !pk.Connect.Clean {
		if old, ok := s.mq.Clients.Get(cl.ID); ok && old != cl && !old.Properties.Clean {
			_, methods := old.State.Subscriptions.Get(methodsFilter)
			_, desired := old.State.Subscriptions.Get(twinDesiredFilter)
			if methods || desired {
				l.closeGate()
			}
			if methods {
				sess.SetSubscribed(true)
			}
			if desired {
				sess.SetDesiredSubscribed(true)
			}
		}
	}
}

// OnSessionEstablished runs after the CONNACK, when mochi has settled
// the session: a session inherited with clean=false may hold the methods
// subscription (the Node SDK reconnects that way at token renewal and
// does not subscribe again). This confirms or corrects what
// OnSessionEstablish predicted. Such a session may also hold the
// desired-properties subscription, which then counts for this connection
// from here on (IoT Hub keeps MQTT subscriptions across connections of
// a persistent session: Azure/azure-iot-sdk-java #777).
func (h *hook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	l := linkOf(cl)
	if l == nil {
		return
	}
	sess := l.sess.Load()
	if sess == nil {
		return
	}
	_, has := cl.State.Subscriptions.Get(methodsFilter)
	_, desired := cl.State.Subscriptions.Get(twinDesiredFilter)
	sess.SetSubscribed(has)
	sess.SetDesiredSubscribed(desired)
	if !has && !desired {
		l.openGate()
	}
	// An inherited cloud-to-device subscription delivers from here on,
	// after the CONNACK (c2d.go).
	if qos, ok := c2dFilterQoS(cl, l); ok {
		l.startC2D(qos)
	}
}

// OnSubscribed runs just before mochi writes the SUBACK. A granted
// methods filter marks the engine session subscribed at once (so that a
// device holding its SUBACK is online for the engine), a granted desired
// filter makes the engine send desired-property patches, a granted
// cloud-to-device filter starts the delivery of the device's queue; all
// behind the link's gate: SendMethod, SendDesired and the
// cloud-to-device loop hold their packets back until OnPacketSent sees
// the SUBACK written, so none overtakes it.
func (h *hook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	l := linkOf(cl)
	if l == nil {
		return
	}
	sess := l.sess.Load()
	gated := false
	for i, f := range pk.Filters {
		if i >= len(reasonCodes) || reasonCodes[i] > 2 {
			continue
		}
		c2d := classifyFilter(f.Filter, l.id) == filterCloudToDevice
		if !c2d && f.Filter != methodsFilter && f.Filter != twinDesiredFilter {
			continue
		}
		if !gated {
			l.closeGate()
			gated = true
		}
		if c2d {
			// Delivery starts now; its first PUBLISH waits behind the
			// gate for the SUBACK (c2d.go).
			l.startC2D(min(reasonCodes[i], 1))
			continue
		}
		if sess == nil {
			continue
		}
		if f.Filter == methodsFilter {
			sess.SetSubscribed(true)
		} else {
			sess.SetDesiredSubscribed(true)
		}
	}
}

// OnPacketSent opens the link's gate once a CONNACK or SUBACK is on the
// wire. It runs on whichever goroutine wrote the packet.
func (h *hook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, b []byte) {
	if pk.FixedHeader.Type != packets.Suback && pk.FixedHeader.Type != packets.Connack {
		return
	}
	if l := linkOf(cl); l != nil {
		l.openGate()
	}
}

// OnUnsubscribed runs for UNSUBSCRIBE packets and when mochi drops a
// session's subscriptions.
func (h *hook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	l := linkOf(cl)
	if l == nil {
		return
	}
	for _, f := range pk.Filters {
		if l.id.ModuleID == "" && l.id.DeviceID != "" && f.Filter == c2dFilter(l.id.DeviceID) {
			l.stopC2D() // the unacknowledged messages go back to the queue
		}
	}
	sess := l.sess.Load()
	if sess == nil {
		return
	}
	for _, f := range pk.Filters {
		switch f.Filter {
		case methodsFilter:
			sess.SetSubscribed(false)
		case twinDesiredFilter:
			sess.SetDesiredSubscribed(false)
		}
	}
}

// OnPublish consumes every device PUBLISH: method responses go to the
// connection's own engine session (so a device can only answer requests
// sent to it), telemetry goes to the engine as the connection's identity.
// Returning CodeSuccessIgnore makes mochi PUBACK a QoS 1 message and never
// fan it out; telemetry the engine refuses is not acknowledged, and the
// connection is closed.
//
// A method response whose topic is malformed (status not a decimal
// integer, no "/?", no $rid) is acknowledged and dropped, as is one for an
// unknown or late $rid; the connection stays up [inf]. Twin requests are
// answered on the read goroutine (twinRequest, twin.go) and then
// acknowledged.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	l := linkOf(cl)
	if l == nil {
		return pk, packets.ErrRejectPacket
	}
	switch classifyTopic(pk.TopicName, l.id) {
	case topicMethodResponse:
		status, rid, ok := parseMethodResponseTopic(pk.TopicName)
		if !ok {
			h.s.log.Debug("mqtt method response dropped: malformed topic", "clientId", l.id.String(), "topic", pk.TopicName)
			return pk, packets.CodeSuccessIgnore
		}
		if sess := l.sess.Load(); sess == nil || !sess.Respond(rid, status, pk.Payload) {
			h.s.log.Debug("mqtt method response dropped: no call waits for it", "clientId", l.id.String(), "rid", rid)
		}
		return pk, packets.CodeSuccessIgnore
	case topicTwinGet, topicTwinReported:
		l.twinRequest(cl, pk)
		return pk, packets.CodeSuccessIgnore
	case topicTelemetry:
		if herr := l.receiveEvent(pk); herr != nil {
			h.s.log.Info("mqtt connection closed: device-to-cloud message refused", "clientId", l.id.String(),
				"protocol", l.info.Protocol, "code", herr.Code, "reason", herr.Message)
			l.Close(herr)
			return pk, packets.ErrRejectPacket
		}
		return pk, packets.CodeSuccessIgnore
	}
	return pk, packets.ErrRejectPacket // not reached: OnPacketRead closed the connection
}

// OnACLCheck allows what OnPacketRead let through, and refuses every
// delivery through mochi's fan-out (a topic name is never an allowed
// filter), so nothing a device publishes reaches another device.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	l := linkOf(cl)
	if l == nil || !l.connectOK {
		return false
	}
	if write {
		return classifyTopic(topic, l.id) != topicForbidden
	}
	return classifyFilter(topic, l.id) != filterForbidden
}
