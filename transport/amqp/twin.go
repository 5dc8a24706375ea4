package amqp

// Device and module twins over AMQP. The first twin operation of a
// connection attaches the twin link pair on /devices/{id}/twin (a sender
// and a receiver sharing one com.microsoft:channel-correlation-id
// "twin:{uuid}", both settled / first, as the Node, C and .NET SDKs attach
// them). A request is a message with the annotations operation (GET,
// PATCH, PUT, DELETE) and resource, and a fresh uuid as its
// correlation-id; the hub answers on the receiver with the same
// correlation-id and a status annotation (and, after a PATCH, a version
// annotation). Messages without a correlation-id are desired-property
// patches.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	amqp "github.com/Azure/go-amqp"

	"github.com/iothub-go/iothub/transport"
)

// Twin request annotations and resources.
const (
	twinResourceReported      = "/properties/reported"
	twinResourceNotifications = "/notifications/twin/properties/desired"
)

// TwinSupport returns nil: AMQP carries device and module twins.
func (t *Transport) TwinSupport() error { return nil }

// twinLinks is a connection's twin link pair.
type twinLinks struct {
	ready chan struct{} // closed when attaching has finished
	err   error         // why attaching failed; set before ready is closed
	s     *amqp.Sender  // set before ready is closed, under conn.mu
	r     *amqp.Receiver
}

// has reports whether name is one of the attached pair's links. Called
// with conn.mu held.
func (t *twinLinks) has(name string) bool {
	return t.s != nil && (t.s.LinkName() == name || t.r.LinkName() == name)
}

// twinAnswer is the hub's answer to a twin request.
type twinAnswer struct {
	status     int
	hasStatus  bool
	version    int64
	hasVersion bool
	body       []byte
}

// GetTwin sends GET and returns the twin the hub answered with:
// {"desired":{...},"reported":{...}}.
func (c *conn) GetTwin(ctx context.Context) ([]byte, error) {
	a, err := c.twinRequest(ctx, "GetTwin", "GET", "", nil)
	if err != nil {
		return nil, err
	}
	return a.body, nil
}

// UpdateReported sends PATCH /properties/reported with the patch and
// returns the version annotation of the answer, the reported $version
// after the update (0 if the hub sent none).
func (c *conn) UpdateReported(ctx context.Context, patch []byte) (int64, error) {
	a, err := c.twinRequest(ctx, "UpdateReported", "PATCH", twinResourceReported, patch)
	if err != nil {
		return 0, err
	}
	return a.version, nil
}

// SubscribeDesired sends PUT /notifications/twin/properties/desired and
// returns once the hub has answered it with a 2xx status; desired patches
// then go to Config.Desired. Sending it again is harmless (the .NET SDK
// sends it before every twin operation).
func (c *conn) SubscribeDesired(ctx context.Context) error {
	_, err := c.twinRequest(ctx, "SubscribeDesired", "PUT", twinResourceNotifications, nil)
	return err
}

// lost returns the error for an operation cut short by the connection's
// end.
func (c *conn) lost(what string) error {
	if err := c.Err(); err != nil {
		return fmt.Errorf("iothub: amqp: %s: %w", what, err)
	}
	return fmt.Errorf("iothub: amqp: %s: the connection is closed", what)
}

// twinRequest sends one twin request and waits for its answer, for ctx
// and for the connection's end. A non-2xx status is a *transport.HubError.
func (c *conn) twinRequest(ctx context.Context, what, op, resource string, body []byte) (twinAnswer, error) {
	t, err := c.twinPair(ctx)
	if err != nil {
		return twinAnswer{}, err
	}
	id := newUUID().String()
	ch := make(chan twinAnswer, 1)
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return twinAnswer{}, c.lost(what)
	}
	if c.twinWait == nil {
		c.twinWait = map[string]chan twinAnswer{}
	}
	c.twinWait[id] = ch
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.twinWait, id)
		c.mu.Unlock()
	}
	ann := amqp.Annotations{"operation": op}
	if resource != "" {
		ann["resource"] = resource
	}
	msg := &amqp.Message{Annotations: ann, Properties: &amqp.MessageProperties{CorrelationID: id}}
	if body != nil {
		msg.Data = [][]byte{body}
	}
	if err := t.s.Send(ctx, msg, nil); err != nil {
		forget()
		if ctx.Err() != nil {
			return twinAnswer{}, ctx.Err()
		}
		return twinAnswer{}, wrap(what, err)
	}
	var a twinAnswer
	select {
	case a = <-ch:
	case <-ctx.Done():
		forget()
		return twinAnswer{}, ctx.Err()
	case <-c.done:
		forget()
		return twinAnswer{}, c.lost(what)
	}
	switch {
	case !a.hasStatus:
		return twinAnswer{}, fmt.Errorf("iothub: amqp: %s: the hub's answer has no status", what)
	case a.status < 200 || a.status > 299:
		return twinAnswer{}, &transport.HubError{Op: what, Status: a.status, Message: hubMessage(a.body)}
	}
	return a, nil
}

// twinPair returns the twin link pair, attaching it on first use. Callers
// that come while another attaches wait for it; if that one gave up (its
// ctx ended), the next caller attaches.
func (c *conn) twinPair(ctx context.Context) (*twinLinks, error) {
	for {
		c.mu.Lock()
		if c.ended {
			c.mu.Unlock()
			return nil, c.lost("attaching the twin links")
		}
		t := c.twin
		if t == nil {
			t = &twinLinks{ready: make(chan struct{})}
			c.twin = t
			c.mu.Unlock()
			c.attachTwin(ctx, t)
			if t.err != nil {
				return nil, t.err
			}
			return t, nil
		}
		c.mu.Unlock()
		select {
		case <-t.ready:
			if t.err == nil {
				return t, nil
			}
			if errors.Is(t.err, context.Canceled) || errors.Is(t.err, context.DeadlineExceeded) {
				continue // the caller that attached gave up; try with this ctx
			}
			return nil, t.err
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.done:
			return nil, c.lost("attaching the twin links")
		}
	}
}

// attachTwin attaches the twin links into t and starts their receive
// loop. On failure it records the error in t and forgets t, so that a
// later operation tries again.
func (c *conn) attachTwin(ctx context.Context, t *twinLinks) {
	defer close(t.ready)
	fail := func(err error) {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		t.err = err
		c.mu.Lock()
		if c.twin == t {
			c.twin = nil
		}
		c.mu.Unlock()
	}
	addr := c.address("/twin")
	props := c.linkProperties("twin")
	settled, first := amqp.SenderSettleModeSettled, amqp.ReceiverSettleModeFirst
	sess, err := c.sess("attaching the twin links")
	if err != nil {
		fail(err)
		return
	}
	sname, rname := c.newLinkName("twin-sender", linkTwin), c.newLinkName("twin-receiver", linkTwin)
	s, err := sess.NewSender(ctx, addr, &amqp.SenderOptions{
		Name:                        sname,
		Properties:                  c.senderProperties(props),
		SettlementMode:              &settled,
		RequestedReceiverSettleMode: &first,
	})
	if err != nil {
		c.forgetLinks(sname, rname)
		fail(wrap("attaching the twin sender link", err))
		return
	}
	r, err := sess.NewReceiver(ctx, addr, &amqp.ReceiverOptions{
		Name:                      rname,
		Properties:                props,
		Credit:                    50,
		SettlementMode:            &first,
		RequestedSenderSettleMode: &settled,
		MaxMessageSize:            MaxMessageSize,
	})
	if err != nil {
		c.forgetLinks(rname)
		c.closingLinks(sname)
		_ = s.Close(ctx)
		fail(wrap("attaching the twin receiver link", err))
		return
	}
	c.mu.Lock()
	t.s, t.r = s, r
	c.mu.Unlock()
	go c.receiveTwin(r)
}

// forgetLinks forgets the names of links that never attached.
func (c *conn) forgetLinks(names ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range names {
		delete(c.links, n)
	}
}

// receiveTwin reads the twin receiver until the connection ends: answers
// go to the request waiting for their correlation-id, messages without
// one (desired patches) to Config.Desired, in the order they arrive. A
// failed link ends the connection.
func (c *conn) receiveTwin(r *amqp.Receiver) {
	ctx, stop := context.WithCancel(c.life)
	defer stop()
	for {
		msg, err := r.Receive(ctx, nil)
		if err != nil {
			if ctx.Err() == nil {
				c.fail(fmt.Errorf("twin link: %w", err))
			}
			return
		}
		_ = r.AcceptMessage(ctx, msg) // a no-op: the hub sends them settled
		c.onTwinMessage(msg)
	}
}

// onTwinMessage dispatches one message from the twin receiver.
func (c *conn) onTwinMessage(msg *amqp.Message) {
	var body []byte
	for _, d := range msg.Data {
		body = append(body, d...)
	}
	if len(msg.Data) == 0 {
		switch v := msg.Value.(type) {
		case string:
			body = []byte(v)
		case []byte:
			body = v
		}
	}
	var corr any
	if msg.Properties != nil {
		corr = msg.Properties.CorrelationID
	}
	if corr == nil {
		if c.desired != nil && len(body) > 0 {
			c.desired(body)
		}
		return
	}
	key := ""
	switch v := corr.(type) {
	case string:
		key = v
	case amqp.UUID:
		key = v.String()
	default:
		return // not an id this client sent
	}
	c.mu.Lock()
	ch := c.twinWait[key]
	delete(c.twinWait, key)
	c.mu.Unlock()
	if ch == nil {
		return // an answer to a request whose caller gave up
	}
	a := twinAnswer{body: body}
	if v, ok := annotation(msg, "status"); ok {
		if n, ok := toInt(v); ok && n >= -1<<31 && n < 1<<31 {
			a.status, a.hasStatus = int(n), true
		}
	}
	if v, ok := annotation(msg, "version"); ok {
		a.version, a.hasVersion = toInt(v)
	}
	ch <- a
}

// annotation returns a message annotation whose key is the symbol (or
// string) name.
func annotation(msg *amqp.Message, name string) (any, bool) {
	if msg.Annotations == nil {
		return nil, false
	}
	if v, ok := msg.Annotations[amqp.Symbol(name)]; ok {
		return v, true
	}
	v, ok := msg.Annotations[name]
	return v, ok
}

// hubMessage returns the text of a hub's error body for HubError.Message:
// the "message" of IoT Hub's JSON error ({"errorCode":…,"message":…}),
// else the body itself; at most 200 bytes, without control characters.
func hubMessage(body []byte) string {
	var e struct {
		Message string `json:"message"`
	}
	s := string(body)
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		s = e.Message
	}
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(strings.TrimSpace(s), "\uFFFD"))
	const max = 200
	if len(s) > max {
		s = s[:max]
		for len(s) > 0 && !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		s += "…"
	}
	return s
}
