package amqpd

import (
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

var (
	errNotConnected  = errors.New("iothub: amqp connection is closed")
	errNotSubscribed = errors.New("iothub: amqp method request link is not attached")
	errBacklog       = errors.New("iothub: amqp device has no link credit and too many requests are waiting")
	errSendTimeout   = errors.New("iothub: amqp connection did not take the method request in time")
	errTooLarge      = errors.New("iothub: amqp method request exceeds the device's max-message-size")
)

// authVia says what authenticated an identity's links.
type authVia int

const (
	viaCBS      authVia = iota // a put-token naming the identity
	viaHubToken                // a hub-scoped policy token put on $cbs
	viaPlain                   // SASL PLAIN
	viaX509                    // the TLS client certificate
)

// unit is one identity's links on a connection (methods, twin,
// telemetry), and the engine session they make up: the engine.Conn (and
// engine.DesiredConn) the engine drives. A unit lives from the first link
// attach to its Close (token expired, kicked…) or the end of the
// connection; a later attach makes a new one.
type unit struct {
	c   *conn
	id  auth.Identity
	key string

	// Loop-owned.
	via    authVia
	sess   *engine.Session
	req    *link              // the hub sends requests
	resp   *link              // the hub receives responses
	events map[*link]struct{} // telemetry links
	closed bool

	// Twins (twins.go).
	c2d       *link  // the hub sends cloud-to-device messages (c2d.go)
	twinIn    *link  // the hub receives twin requests
	twinOut   *link  // the hub sends twin responses and desired patches
	desiredOn bool   // the device subscribed to desired patches (PUT answered)
	modelID   string // the model id last announced on an attach
}

// NewRequestID returns a random (version 4) uuid in canonical form.
func (u *unit) NewRequestID() string { return newUUID().String() }

func newUUID() UUID {
	var b UUID
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return b
}

// SendMethod queues a method request on the identity's request link. It
// waits for the connection loop at most sendTimeout; a request the device
// has no credit for waits in a short queue.
func (u *unit) SendMethod(rid, name string, payload []byte) error {
	corr, ok := parseUUID(rid)
	if !ok {
		return fmt.Errorf("iothub: amqp request id %q is not a uuid", rid)
	}
	msg := outMessage{
		correlationID: corr,
		appProps:      Map{{Key: "IoThub-methodname", Value: name}},
		data:          payload,
		hasData:       true, // an empty data section for an empty payload
	}
	enc, err := msg.encode()
	if err != nil {
		return err
	}
	res := make(chan error, 1)
	if !u.c.post(func() { res <- u.enqueue(enc) }) {
		return errNotConnected
	}
	t := time.NewTimer(sendTimeout)
	defer t.Stop()
	select {
	case err := <-res:
		return err
	case <-u.c.done:
		return errNotConnected
	case <-t.C:
		return errSendTimeout
	}
}

func (u *unit) enqueue(msg []byte) error { return u.enqueueOn(u.req, msg) }

// enqueueOn queues msg on one of the identity's links the hub sends on.
func (u *unit) enqueueOn(l *link, msg []byte) error {
	if u.closed {
		return errNotConnected
	}
	if l == nil || l.detaching {
		return errNotSubscribed
	}
	if l.peerMaxMsg != 0 && uint64(len(msg)) > l.peerMaxMsg {
		return errTooLarge
	}
	if len(l.queue) >= u.c.s.maxQueued {
		return errBacklog
	}
	l.queue = append(l.queue, msg)
	l.s.pump(l)
	return nil
}

// Close detaches the identity's links with an error that says why (or
// closes the whole connection, see closeUnit). It never blocks.
func (u *unit) Close(reason *engine.Error) {
	u.c.post(func() { u.c.closeUnit(u, reason) })
}

// DetachMethodLink detaches the identity's "request" or "response" method
// link with an error (engine.LinkFaulter).
func (u *unit) DetachMethodLink(which string) bool {
	return u.onLoop(func() bool {
		l := u.req
		if which == "response" {
			l = u.resp
		} else if which != "request" {
			return false
		}
		if u.closed || l == nil || l.detaching {
			return false
		}
		u.c.detachLink(l, &amqpError{condition: condDetachForced, description: "Injected fault: the method " + which + " link was detached"})
		return true
	})
}

// EndSession ends the session of the identity's method links with an error
// (engine.LinkFaulter).
func (u *unit) EndSession() bool {
	return u.onLoop(func() bool {
		l := u.req
		if l == nil {
			l = u.resp
		}
		if u.closed || l == nil || l.s.ending {
			return false
		}
		l.s.end(condDetachForced, "Injected fault: the session was ended")
		return true
	})
}

// onLoop runs f on the connection's loop and returns its result; false if
// the connection has ended.
func (u *unit) onLoop(f func() bool) bool {
	res := make(chan bool, 1)
	if !u.c.post(func() { res <- f() }) {
		return false
	}
	select {
	case ok := <-res:
		return ok
	case <-u.c.done:
		// The loop may have run f just before it ended (ending a session
		// can end the connection at once): its answer still counts.
		select {
		case ok := <-res:
			return ok
		default:
			return false
		}
	}
}

// Protocol returns "amqp" or "amqp-ws".
func (u *unit) Protocol() string { return u.c.info.Protocol }

func (u *unit) addLink(l *link) {
	l.unit = u
	switch l.kind {
	case linkEvents:
		if u.events == nil {
			u.events = map[*link]struct{}{}
		}
		u.events[l] = struct{}{}
		return
	case linkTwinIn, linkTwinOut:
		u.addTwinLink(l)
		return
	case linkC2D:
		if u.c2d != nil && u.c2d != l {
			u.c.detachLink(u.c2d, &amqpError{condition: condStolen, description: "A newer cloud-to-device link of the same identity replaced this one"})
		}
		u.c2d = l
		return
	}
	if l.hubSends {
		if u.req != nil && u.req != l {
			u.c.detachLink(u.req, &amqpError{condition: condStolen, description: "A newer method request link of the same identity replaced this one"})
		}
		u.req = l
	} else {
		if u.resp != nil && u.resp != l {
			u.c.detachLink(u.resp, &amqpError{condition: condStolen, description: "A newer method response link of the same identity replaced this one"})
		}
		u.resp = l
	}
	if u.req != nil && u.resp != nil {
		u.sess.SetSubscribed(true)
	}
}

func (u *unit) linkGone(l *link) {
	switch l.kind {
	case linkEvents:
		delete(u.events, l)
		return
	case linkTwinIn, linkTwinOut:
		u.twinLinkGone(l)
		return
	case linkC2D:
		if u.c2d == l {
			u.c2d = nil
		}
		return
	}
	if u.req == l {
		u.req = nil
	}
	if u.resp == l {
		u.resp = nil
	}
	if !u.closed {
		u.sess.SetSubscribed(false)
	}
}

// end ends the engine session (the connection is gone).
func (u *unit) end() {
	if u.closed {
		return
	}
	u.closed = true
	u.sess.Disconnect()
}

// methodUnit returns the identity's unit, creating it and its engine
// session (which closes an older connection of the identity) if needed.
func (c *conn) methodUnit(id auth.Identity, expiry time.Time, via authVia) *unit {
	id.HostName = c.s.e.HostName()
	key := id.String()
	if u := c.units[key]; u != nil {
		u.via = via
		u.sess.SetTokenExpiry(expiry)
		return u
	}
	u := &unit{c: c, id: id, key: key, via: via}
	c.units[key] = u
	u.sess = c.s.e.Connect(id, u, expiry)
	return u
}

// closeUnit carries out an engine Close: the identity's method links are
// detached with an error mapped from the reason. A hub shutdown (503) or
// the expiry of a SASL PLAIN token (which authenticates the whole
// connection) closes the connection with a close frame instead, and an
// injected network fault (500) drops the socket.
func (c *conn) closeUnit(u *unit, reason *engine.Error) {
	if u.closed {
		return
	}
	u.closed = true
	if c.units[u.key] == u {
		delete(c.units, u.key)
	}
	if reason == nil {
		reason = engine.NewError(engine.CodeServiceUnavailable, "The connection was closed")
	}
	cond := conditionFor(reason)
	switch {
	case reason.Status == 500:
		// An injected network fault (Engine.DropConnection): the socket
		// goes away without a close frame, as it would on a real one.
		c.log.Info("amqp connection dropped by the hub", "identity", u.key, "reason", reason.Message)
		c.finished = true
	case reason.Status == 503 || (u.via == viaPlain && reason.Code == engine.CodeUnauthorized):
		if reason.Status == 503 {
			cond = condForced
		}
		c.fail(cond, hubErrorJSON(reason))
	default:
		e := hubError(cond, reason)
		for _, l := range []*link{u.req, u.resp, u.twinIn, u.twinOut, u.c2d} {
			if l != nil {
				c.detachLink(l, e)
			}
		}
		for l := range u.events {
			c.detachLink(l, e)
		}
	}
	u.sess.Disconnect()
}

// authorize decides whether the connection may attach method links for
// id, and returns the expiry of the credential that allows it (zero for
// X.509). Tried in order: a put-token for the identity, a hub-scoped
// policy token put on $cbs, the SASL PLAIN credential, the TLS client
// certificate.
func (c *conn) authorize(id auth.Identity) (time.Time, authVia, *engine.Error) {
	e := c.s.e
	now := e.Now()
	var lastErr *engine.Error
	try := func(tokenValue string, expiry time.Time) (time.Time, bool) {
		if !expiry.After(now) {
			lastErr = engine.NewError(engine.CodeUnauthorized, "The SAS token for %s expired at %s", id, expiry.UTC().Format(time.RFC3339))
			return time.Time{}, false
		}
		exp, herr := e.AuthenticateSAS(id, tokenValue)
		if herr != nil {
			lastErr = herr
			return time.Time{}, false
		}
		return exp, true
	}
	if t := c.tokens[id.String()]; t != nil {
		if exp, ok := try(t.token, t.expiry); ok {
			return exp, viaCBS, nil
		}
	}
	if t := c.hubToken; t != nil {
		if exp, ok := try(t.token, t.expiry); ok {
			return exp, viaHubToken, nil
		}
	}
	if p := c.plain; p != nil && (p.policy || p.id.String() == id.String()) {
		if exp, ok := try(p.token, p.expiry); ok {
			return exp, viaPlain, nil
		}
	}
	if certs := c.info.PeerCertificates; len(certs) > 0 {
		herr := e.AuthenticateCert(id, certs)
		if herr == nil {
			return time.Time{}, viaX509, nil
		}
		if lastErr == nil {
			lastErr = herr
		}
	}
	if lastErr == nil {
		lastErr = engine.NewError(engine.CodeUnauthorized,
			"No valid token for %s: put a SAS token on $cbs (or connect with its X.509 certificate) before attaching its links", id)
	}
	return time.Time{}, 0, lastErr
}

// onMessage handles a complete message on a link the hub receives on,
// and returns the outcome for its disposition.
func (c *conn) onMessage(l *link, payload []byte) any {
	switch l.kind {
	case linkCBSIn:
		return c.onPutToken(l, payload)
	case linkMethodsResp:
		return c.onMethodResponse(l, payload)
	case linkEvents:
		return c.onEvent(l, payload)
	case linkTwinIn:
		return c.onTwinRequest(l, payload)
	case linkServiceSend:
		return c.onServiceSend(l, payload)
	}
	return rejected(condNotAllowed, "the hub does not accept messages on this link")
}

func accepted() any { return performative(descAccepted) }

func rejected(cond Symbol, desc string) any {
	return performative(descRejected, errorValue(&amqpError{condition: cond, description: desc}))
}

// onMethodResponse passes a device's answer to the engine: the request
// id from correlation-id (a uuid, or its string form), the status from
// IoThub-status (any integer type), the body from the data sections.
func (c *conn) onMethodResponse(l *link, payload []byte) any {
	m, err := decodeMessage(payload)
	if err != nil {
		return rejected(condDecodeError, trimErr(err))
	}
	var rid string
	switch v := m.correlationID.(type) {
	case UUID:
		rid = v.String()
	case string:
		rid = v
		if u, ok := parseUUID(v); ok {
			rid = u.String()
		}
	case []byte:
		if len(v) != 16 {
			return rejected(condDecodeError, "correlation-id must be the request's uuid")
		}
		rid = UUID(v).String()
	default:
		return rejected(condDecodeError, "correlation-id must be the request's uuid")
	}
	sv, ok := m.appProps.getFold("IoThub-status")
	if !ok {
		return rejected(condDecodeError, "application property IoThub-status is missing")
	}
	status, ok := asInt(sv)
	if !ok || status < -1<<31 || status > 1<<31-1 {
		return rejected(condDecodeError, "application property IoThub-status must be an integer")
	}
	var body []byte
	switch {
	case m.hasData:
		body = m.data
	case m.hasValue:
		switch v := m.value.(type) {
		case string:
			body = []byte(v)
		case []byte:
			body = v
		}
	}
	u := l.unit
	if u == nil || u.closed {
		return accepted()
	}
	if !u.sess.Respond(rid, int(status), body) {
		c.log.Debug("amqp method response for an unknown or late request dropped", "identity", u.key)
	}
	return accepted()
}
