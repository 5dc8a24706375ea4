package amqpd

// Device and module twins over AMQP: the twin link pair on
// /devices/{id}[/modules/{mid}]/twin, the requests a device sends on it
// (GET, PATCH, PUT, DELETE), the hub's answers and its desired-property
// notifications. Wire facts: docs/hub-fidelity.md, "Twins over AMQP".

import (
	"time"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

// Twin request annotations and their values (message-annotations, symbol
// keys, string values), as the Node, C, .NET and Java SDKs send them.
const (
	annOperation = "operation"
	annResource  = "resource"
	annStatus    = "status"  // int, on every answer
	annVersion   = "version" // long: the new reported $version after a PATCH, the desired $version on a notification

	opGet    = "GET"
	opPatch  = "PATCH"
	opPut    = "PUT"
	opDelete = "DELETE"

	resourceReported      = "/properties/reported"
	resourceNotifications = "/notifications/twin/properties/desired"
	// resourceDesired marks a desired-property notification, as the Java
	// SDK expects it [inf: no hub trace; the other SDKs only look for the
	// missing correlation-id].
	resourceDesired = "/properties/desired"

	// propModelID is the attach property in which the .NET and Java SDKs
	// announce the Plug and Play model id, on every link they send on.
	propModelID = "com.microsoft:model-id"
)

// twinRequest is a twin request as a device sent it.
type twinRequest struct {
	op   string // opGet, opPatch, opPut or opDelete
	corr any    // the correlation-id, echoed in the answer as it came; nil if absent
	body []byte // the data sections (or a string/binary amqp-value)
}

// parseTwinRequest reads a decoded twin request: the operation and
// resource annotations (strings or symbols; the operation in any case),
// the correlation-id and the body. A request IoT Hub would refuse gives an
// error to answer with (status 400); the body is left to the engine,
// which owns the document rules. GET takes any resource, and a body is
// ignored for GET, PUT and DELETE: SDKs send none (.NET), " " (Node, C)
// or nothing at all.
func parseTwinRequest(m *message) (twinRequest, *engine.Error) {
	req := twinRequest{corr: m.correlationID}
	switch {
	case m.hasData:
		req.body = m.data
	case m.hasValue:
		switch v := m.value.(type) {
		case string:
			req.body = []byte(v)
		case []byte:
			req.body = v
		}
	}
	opv, ok := m.annotations.getFold(annOperation)
	if !ok {
		return req, engine.NewError(engine.CodeArgumentInvalid, "The twin request has no %q message annotation", annOperation)
	}
	op, ok := asString(opv)
	if !ok {
		return req, engine.NewError(engine.CodeArgumentInvalid, "The twin request's %q annotation is not a string", annOperation)
	}
	var resource string
	if rv, ok := m.annotations.getFold(annResource); ok && rv != nil {
		if resource, ok = asString(rv); !ok {
			return req, engine.NewError(engine.CodeArgumentInvalid, "The twin request's %q annotation is not a string", annResource)
		}
	}
	switch {
	case equalFold(op, opGet):
		req.op = opGet
	case equalFold(op, opPatch):
		req.op = opPatch
		if !equalFold(resource, resourceReported) {
			return req, engine.NewError(engine.CodeArgumentInvalid, "A twin PATCH must name the resource %s, not %q", resourceReported, clipText(resource))
		}
	case equalFold(op, opPut), equalFold(op, opDelete):
		req.op = opPut
		if equalFold(op, opDelete) {
			req.op = opDelete
		}
		if !equalFold(resource, resourceNotifications) {
			return req, engine.NewError(engine.CodeArgumentInvalid, "A twin %s must name the resource %s, not %q", req.op, resourceNotifications, clipText(resource))
		}
	default:
		return req, engine.NewError(engine.CodeArgumentInvalid, "Unknown twin operation %q: want GET, PATCH, PUT or DELETE", clipText(op))
	}
	return req, nil
}

// clipText shortens device-supplied text quoted in an answer.
func clipText(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

// onTwinRequest serves a request from a twin sender link and answers it
// on the identity's twin receiver link, with the request's
// correlation-id and a status annotation: GET 200 with the twin
// ({"desired":…,"reported":…}), PATCH 204 with the new reported version
// in a version annotation, PUT and DELETE 200 (subscribe to and
// unsubscribe from desired patches). A refusal carries the hub's status
// and its JSON error as the body. A request without a correlation-id
// cannot be answered and is not carried out [inf].
func (c *conn) onTwinRequest(l *link, payload []byte) any {
	m, err := decodeMessage(payload)
	if err != nil {
		return rejected(condDecodeError, trimErr(err))
	}
	u := l.unit
	if u == nil || u.closed {
		return rejected(condUnauthorized, "the identity's links are closed")
	}
	req, herr := parseTwinRequest(m)
	if req.corr == nil {
		c.log.Info("amqp twin request without a correlation-id dropped", "identity", u.key)
		return rejected(condInvalidField, "A twin request needs a correlation-id to be answered")
	}
	ans := outMessage{correlationID: req.corr}
	status := 200
	if herr == nil {
		switch req.op {
		case opGet:
			var twin []byte
			if twin, herr = u.sess.GetTwin(); herr == nil {
				ans.data, ans.hasData = twin, true
			}
		case opPatch:
			var version int64
			if version, herr = u.sess.UpdateReported(req.body); herr == nil {
				status = 204
				ans.annotations = append(ans.annotations, MapEntry{Key: Symbol(annVersion), Value: version})
			}
		case opPut:
			u.sess.SetDesiredSubscribed(true)
			u.desiredOn = true
		case opDelete:
			u.sess.SetDesiredSubscribed(false)
			u.desiredOn = false
		}
	}
	if herr != nil {
		status = herr.Status
		ans.data, ans.hasData = twinErrorJSON(herr), true
		c.log.Info("amqp twin request refused", "identity", u.key, "operation", req.op, "code", herr.Code, "reason", herr.Message)
	}
	ans.annotations = append(Map{{Key: Symbol(annStatus), Value: int32(status)}}, ans.annotations...)
	enc, err := ans.encode()
	if err != nil {
		// Only the request's correlation-id comes from the device, and
		// decodeMessage admits only the id types that encode.
		c.log.Error("amqp: cannot encode a twin answer", "error", err)
		return accepted()
	}
	if err := u.enqueueOn(u.twinOut, enc); err != nil {
		c.log.Info("amqp twin answer dropped", "identity", u.key, "operation", req.op, "reason", trimErr(err))
	}
	return accepted()
}

// SendDesired sends a desired-property patch on the identity's twin
// receiver link (engine.DesiredConn): no correlation-id, the annotations
// resource=/properties/desired and version (long), and the patch as the
// body, "$version" included. Like SendMethod it waits for the connection
// loop at most sendTimeout.
func (u *unit) SendDesired(version int64, body []byte) error {
	msg := outMessage{
		annotations: Map{
			{Key: Symbol(annResource), Value: resourceDesired},
			{Key: Symbol(annVersion), Value: version},
		},
		data:    body,
		hasData: true,
	}
	enc, err := msg.encode()
	if err != nil {
		return err
	}
	res := make(chan error, 1)
	if !u.c.post(func() {
		if !u.desiredOn {
			res <- errNotSubscribed
			return
		}
		res <- u.enqueueOn(u.twinOut, enc)
	}) {
		return errNotConnected
	}
	t := time.NewTimer(sendTimeout)
	defer t.Stop()
	select {
	case err := <-res:
		if err != nil {
			u.c.log.Info("amqp desired-property patch not sent", "identity", u.key, "version", version, "reason", trimErr(err))
		}
		return err
	case <-u.c.done:
		return errNotConnected
	case <-t.C:
		return errSendTimeout
	}
}

// addTwinLink makes l the identity's twin link of its direction; an older
// one is detached with amqp:link:stolen, as for method links.
func (u *unit) addTwinLink(l *link) {
	slot := &u.twinIn
	if l.kind == linkTwinOut {
		slot = &u.twinOut
	}
	if old := *slot; old != nil && old != l {
		u.c.detachLink(old, &amqpError{condition: condStolen, description: "A newer twin link of the same identity replaced this one"})
	}
	*slot = l
}

// twinLinkGone forgets a twin link. The desired-patch subscription goes
// with either link of the pair [inf]: the device subscribes again (PUT)
// on the links it attaches next, as every SDK does.
func (u *unit) twinLinkGone(l *link) {
	if u.twinIn == l {
		u.twinIn = nil
	}
	if u.twinOut == l {
		u.twinOut = nil
	}
	if u.desiredOn && !u.closed {
		u.desiredOn = false
		u.sess.SetDesiredSubscribed(false)
	}
}

// announceModel records the Plug and Play model id a device link's attach
// properties carry (com.microsoft:model-id); links without one leave the
// twin's model id as it is.
func (u *unit) announceModel(props Map) {
	v, ok := props.getFold(propModelID)
	if !ok {
		return
	}
	id, ok := asString(v)
	if !ok || id == "" || id == u.modelID {
		return
	}
	u.modelID = id
	u.sess.SetModelID(id)
	u.c.log.Debug("amqp model id announced", "identity", u.key, "modelId", clipText(id))
}

var _ engine.DesiredConn = (*unit)(nil)
