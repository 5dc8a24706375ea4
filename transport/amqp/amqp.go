// Package amqp is the AMQP 1.0 device transport for Azure IoT Hub, over TLS
// (port 5671) or WebSocket (port 443, path /$iothub/websocket, subprotocol
// AMQPWSB10), built on github.com/Azure/go-amqp.
//
// SAS identities authenticate with a CBS put-token on the $cbs node and
// renew their token the same way, on the live connection. X.509 identities
// present their certificate in TLS and skip CBS. Direct methods use the two
// links on /devices/{id}/methods/devicebound; telemetry uses
// /devices/{id}/messages/events; twins use the two links on
// /devices/{id}/twin, attached by the first twin operation; cloud-to-device
// messages use the receiver link on /devices/{id}/messages/devicebound,
// attached by SubscribeMessages. Modules use the same paths below
// /devices/{id}/modules/{mid} (IoT Hub has no cloud-to-device messages for
// modules).
//
// A Plug and Play model id (transport.Config.ModelID) is announced as the
// .NET and Java SDKs do: as the attach property com.microsoft:model-id of
// every link the device sends on. The telemetry link is then attached when
// the connection opens, so that the hub learns the model id at once.
//
// [New] gives each device client a connection of its own. [NewPool] puts
// many device and module identities on a few shared connections (AMQP
// multiplexing), each identity with its own put-token and links.
package amqp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/amqpcbs"
	"github.com/iothub-go/iothub/internal/apiversion"
	"github.com/iothub-go/iothub/internal/netdial"
	"github.com/iothub-go/iothub/transport"
	"github.com/iothub-go/iothub/transport/internal/eventcheck"
)

// Options configures the AMQP transport. The zero value is AMQP over TLS.
type Options struct {
	// WebSocket selects AMQP over WebSocket (wss, port 443 unless the
	// address has one) instead of AMQP over TLS (port 5671).
	WebSocket bool
	// IdleTimeout is the AMQP idle time-out the client announces. Zero
	// means 120 s.
	IdleTimeout time.Duration
}

// Transport dials IoT Hub over AMQP. It is safe for concurrent use.
type Transport struct {
	ws   bool
	idle time.Duration
}

// New returns an AMQP transport. opts may be nil.
func New(opts *Options) *Transport {
	t := &Transport{idle: 120 * time.Second}
	if opts != nil {
		t.ws = opts.WebSocket
		if opts.IdleTimeout > 0 {
			t.idle = opts.IdleTimeout
		}
	}
	return t
}

// Name returns "amqp" or "amqp-ws".
func (t *Transport) Name() string {
	if t.ws {
		return "amqp-ws"
	}
	return "amqp"
}

// MethodSupport returns nil: AMQP carries direct methods.
func (t *Transport) MethodSupport() error { return nil }

// newUUID and toInt are the shared helpers, by their names in this package.
var (
	newUUID = amqpcbs.NewUUID
	toInt   = amqpcbs.ToInt
)

// dialNet opens the TLS or WebSocket byte stream.
func (t *Transport) dialNet(ctx context.Context, cfg transport.Config) (net.Conn, error) {
	port := "5671"
	if t.ws {
		port = "443"
	}
	hp, host, err := netdial.Endpoint(cfg.Address, port)
	if err != nil {
		return nil, fmt.Errorf("iothub: amqp: %w", err)
	}
	tlsConf := netdial.SharedClientTLS(cfg.TLSConfig, host)
	var nc net.Conn
	if t.ws {
		nc, err = netdial.WebSocket(ctx, hp, "AMQPWSB10", tlsConf, -1)
	} else {
		nc, err = netdial.TLS(ctx, hp, tlsConf)
	}
	if err != nil {
		return nil, fmt.Errorf("iothub: amqp: %w", err)
	}
	return nc, nil
}

// Dial connects, opens a session and, for SAS identities, authenticates
// with a CBS put-token. It uses no SASL layer, as the .NET and Node SDKs
// do.
func (t *Transport) Dial(ctx context.Context, cfg transport.Config) (transport.Conn, error) {
	nc, err := t.dialNet(ctx, cfg)
	if err != nil {
		return nil, err
	}
	c := newConn(cfg)
	w := newFrameWatch(nc, 0, c.hubDetached, c.hubEnded)
	opened := w.afterConnEnd(c.fail)
	ac, err := amqp.NewConn(ctx, w, &amqp.ConnOptions{
		ContainerID: newUUID().String(),
		HostName:    cfg.Identity.HostName,
		IdleTimeout: t.idle,
	})
	if err != nil {
		opened(nil)
		nc.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("iothub: amqp: open: %w", err)
	}
	c.ac = ac
	opened(ac)
	if c.session, err = ac.NewSession(ctx, nil); err != nil {
		c.Close()
		return nil, fmt.Errorf("iothub: amqp: begin: %w", err)
	}
	if cfg.Token != "" {
		if err := c.putToken(ctx, cfg.Token); err != nil {
			c.Close()
			return nil, err
		}
	}
	if c.modelID != "" {
		if _, err := c.eventsSender(ctx); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// newConn returns the device state of a connection, not yet on one.
func newConn(cfg transport.Config) *conn {
	c := &conn{
		id:       cfg.Identity,
		info:     cfg.ProductInfo,
		done:     make(chan struct{}),
		rids:     map[string]any{},
		methods:  cfg.Methods,
		desired:  cfg.Desired,
		messages: cfg.Messages,
		modelID:  cfg.ModelID,
		links:    map[string]linkKind{},
	}
	c.life, c.endLife = context.WithCancel(context.Background())
	return c
}

// linkKind says what a link of the connection is for.
type linkKind int

const (
	linkCBS linkKind = iota
	linkMethods
	linkEvents
	linkTwin
	linkC2D
)

type conn struct {
	id      auth.Identity
	ac      *amqp.Conn    // nil on a pooled connection
	car     *carrier      // the shared connection of a pooled device; nil otherwise
	session *amqp.Session // the device's own session, or the carrier's
	info    string
	done    chan struct{}
	// life ends with the connection (fail, Close); the receive loops run
	// under it.
	life    context.Context
	endLife context.CancelFunc
	methods func(*transport.MethodRequest)
	desired func(patch []byte)
	modelID string

	subMu sync.Mutex // one method (un)subscription at a time
	msgMu sync.Mutex // one cloud-to-device subscription at a time

	messages func(*transport.CloudMessage)

	cbsMu  sync.Mutex // one put-token at a time
	cbsOut *amqp.Sender
	cbsIn  *amqp.Receiver

	mu       sync.Mutex
	err      error
	ended    bool
	stopDone func() bool  // undoes the OnDone function's registration
	methodsS *amqp.Sender // device → hub method responses
	methodsR *amqp.Receiver
	stopRecv context.CancelFunc // ends the method receive loop
	recvDone chan struct{}
	events   *amqp.Sender
	rids     map[string]any // request id → correlation-id as received
	// links are the names of the connection's links that are attached or
	// attaching, and what they are for; closing names those this side is
	// detaching, whose detach by the hub is only the answer.
	links   map[string]linkKind
	closing map[string]bool
	// twin is the twin link pair, once the first twin operation has
	// started attaching it; twinWait the twin requests waiting for their
	// answer, by correlation-id (twin.go), made by the first.
	twin     *twinLinks
	twinWait map[string]chan twinAnswer
	// c2dR is the cloud-to-device link once attached; c2dLocks the
	// messages delivered and not settled, by lock token (c2d.go), made by
	// the first delivery.
	c2dR     *amqp.Receiver
	c2dLocks map[string]c2dDelivery
}

// sess returns the session the device's links attach on, or, once a
// pooled connection has ended and let go of it, the connection's error.
func (c *conn) sess(what string) (*amqp.Session, error) {
	c.mu.Lock()
	s := c.session
	c.mu.Unlock()
	if s == nil {
		return nil, c.lost(what)
	}
	return s, nil
}

// release lets go of the go-amqp objects of an ended pooled connection:
// the device client may hold the conn until its next one is up, and the
// links would keep the whole shared connection's memory (go-amqp's
// preallocated windows, some 150 KB per device) alive with it.
func (c *conn) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.session, c.methodsS, c.methodsR, c.events, c.twin, c.c2dR = nil, nil, nil, nil, nil, nil
}

// linkSeq numbers the links this process attaches.
var linkSeq atomic.Uint64

// linkName returns a new link name: prefix and a number no other link of
// this process has. A link's name need only be unique between its two
// containers (AMQP 1.0 section 2.6.1), and every connection has a
// container-id of its own, so a counter is enough, on a connection of its
// own or a pooled one. It is kept short because go-amqp and the frame
// watch each hold every link's name for as long as the link lives: a
// UUID would make each of those strings 64 bytes rather than 24.
func linkName(prefix string) string {
	return prefix + "-" + strconv.FormatUint(linkSeq.Add(1), 36)
}

// newLinkName returns a unique link name and records what the link is for.
func (c *conn) newLinkName(prefix string, kind linkKind) string {
	name := linkName(prefix)
	c.mu.Lock()
	c.links[name] = kind
	c.mu.Unlock()
	if c.car != nil {
		c.car.own(name, c)
	}
	return name
}

// closingLinks marks links this side is about to detach.
func (c *conn) closingLinks(names ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing == nil {
		c.closing = map[string]bool{}
	}
	for _, n := range names {
		c.closing[n] = true
	}
}

// hubDetached runs when the hub detaches a link. The method and $cbs links
// are the connection's reason to be: without them it can take no call, or
// renew no token, so it ends, and the device client reconnects. A detached
// telemetry link is attached again by the next SendEvent.
func (c *conn) hubDetached(name, cond, desc string) {
	c.mu.Lock()
	kind, known := c.links[name]
	delete(c.links, name)
	expected := c.closing[name]
	delete(c.closing, name)
	if known && kind == linkEvents && c.events != nil && c.events.LinkName() == name {
		c.events = nil
	}
	// A twin link the hub refuses is detached before its attach returns:
	// the twin operation that attached it reports that. Only the loss of
	// an attached twin link ends the connection.
	twinLive := kind == linkTwin && c.twin != nil && c.twin.has(name)
	// Likewise a refused cloud-to-device link fails SubscribeMessages only.
	c2dLive := kind == linkC2D && c.c2dR != nil && c.c2dR.LinkName() == name
	c.mu.Unlock()
	if !known || expected || kind == linkEvents || (kind == linkTwin && !twinLive) || (kind == linkC2D && !c2dLive) {
		return
	}
	what := "the $cbs link"
	switch {
	case kind == linkC2D:
		what = "the cloud-to-device link"
	case kind == linkTwin:
		what = "a twin link"
	case kind == linkMethods && strings.HasPrefix(name, "methods-sender"):
		what = "the method response link"
	case kind == linkMethods:
		what = "the method request link"
	}
	c.fail(fmt.Errorf("the hub detached %s%s", what, describe(cond, desc)))
}

// hubEnded runs when the hub ends the session that holds every link.
func (c *conn) hubEnded(names []string, cond, desc string) {
	c.mu.Lock()
	for _, n := range names {
		delete(c.links, n)
		delete(c.closing, n)
	}
	c.mu.Unlock()
	c.fail(fmt.Errorf("the hub ended the session%s", describe(cond, desc)))
}

func describe(cond, desc string) string {
	switch {
	case cond != "" && desc != "":
		return ": " + cond + ": " + desc
	case cond != "":
		return ": " + cond
	}
	return ""
}

func (c *conn) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return
	}
	c.ended = true
	if err == nil {
		err = errors.New("connection closed by the hub")
	}
	c.err = fmt.Errorf("iothub: amqp: connection lost: %w", err)
	close(c.done)
	c.endLife()
}

func (c *conn) Done() <-chan struct{} { return c.done }

// OnDone sets the function to run on a goroutine of its own once the
// connection has ended (Err is set by then), at once if it has; nil
// removes it. The connection holds one: a later call replaces the earlier
// function. The device client waits for the end of an idle connection this
// way, without a goroutine per device.
func (c *conn) OnDone(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopDone != nil {
		c.stopDone()
		c.stopDone = nil
	}
	if f != nil {
		c.stopDone = context.AfterFunc(c.life, f)
	}
}

func (c *conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *conn) Close() error {
	c.mu.Lock()
	if !c.ended {
		c.ended = true
		close(c.done)
	}
	c.mu.Unlock()
	c.endLife()
	if c.car != nil {
		c.car.leave(c)
		c.release()
		return nil
	}
	return c.ac.Close()
}

func (c *conn) resource() string { return c.id.Resource() }

func (c *conn) address(suffix string) string {
	a := "/devices/" + url.PathEscape(c.id.DeviceID)
	if c.id.ModuleID != "" {
		a += "/modules/" + url.PathEscape(c.id.ModuleID)
	}
	return a + suffix
}

// wrap adds what was being done to err, and the transport sentinel its
// AMQP condition means, if any.
func wrap(what string, err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch ae.Condition {
		case amqp.ErrCondUnauthorizedAccess:
			return fmt.Errorf("%w: amqp: %s: %v", transport.ErrNotAuthorized, what, err)
		case amqp.ErrCondMessageSizeExceeded:
			return fmt.Errorf("%w: amqp: %s: %v", transport.ErrMessageTooLarge, what, err)
		}
	}
	return fmt.Errorf("iothub: amqp: %s: %w", what, err)
}

// putToken presents a SAS token on the $cbs node and waits for status 200.
func (c *conn) putToken(ctx context.Context, token string) error {
	if c.car != nil {
		return c.car.putToken(ctx, c.resource(), token)
	}
	c.cbsMu.Lock()
	defer c.cbsMu.Unlock()
	if c.cbsOut == nil {
		s, err := c.session.NewSender(ctx, amqpcbs.Address, &amqp.SenderOptions{Name: c.newLinkName("cbs-sender", linkCBS)})
		if err != nil {
			return wrap("attaching $cbs", err)
		}
		r, err := c.session.NewReceiver(ctx, amqpcbs.Address, &amqp.ReceiverOptions{Name: c.newLinkName("cbs-receiver", linkCBS), Credit: 10, MaxMessageSize: MaxMessageSize})
		if err != nil {
			s.Close(ctx)
			return wrap("attaching $cbs", err)
		}
		c.cbsOut, c.cbsIn = s, r
	}
	req, id := amqpcbs.Request(amqpcbs.TokenType, c.resource(), token)
	if err := c.cbsOut.Send(ctx, req, nil); err != nil {
		return wrap("put-token", err)
	}
	code, desc, err := amqpcbs.Reply(ctx, c.cbsIn, id)
	if err != nil {
		return wrap("put-token reply", err)
	}
	return putTokenResult(code, desc)
}

// putTokenResult is the error a put-token reply's status means.
func putTokenResult(code int64, desc string) error {
	switch {
	case code == 200 || code == 202:
		return nil
	case code == 401 || code == 403:
		return fmt.Errorf("%w: amqp: put-token: %d %s", transport.ErrNotAuthorized, code, desc)
	default:
		return fmt.Errorf("iothub: amqp: put-token: %d %s", code, desc)
	}
}

// UpdateToken renews the connection's SAS token with another put-token.
func (c *conn) UpdateToken(ctx context.Context, token string) error { return c.putToken(ctx, token) }

// linkProperties returns the attach properties of a link pair: the same
// channel-correlation-id ("{prefix}:{uuid}") on both links.
func (c *conn) linkProperties(prefix string) map[string]any {
	return map[string]any{
		"com.microsoft:api-version":            apiversion.Current,
		"com.microsoft:channel-correlation-id": prefix + ":" + newUUID().String(),
		"com.microsoft:client-version":         c.info,
	}
}

// senderProperties returns props (which may be nil) plus, when the device
// announces one, the model id, which goes on every link the device sends on.
func (c *conn) senderProperties(props map[string]any) map[string]any {
	if c.modelID == "" {
		return props
	}
	out := make(map[string]any, len(props)+1)
	for k, v := range props {
		out[k] = v
	}
	out["com.microsoft:model-id"] = c.modelID
	return out
}

// SubscribeMethods attaches the method links; the hub counts the device as
// subscribed once both are attached. Requests go to Config.Methods.
func (c *conn) SubscribeMethods(ctx context.Context) error {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	c.mu.Lock()
	subscribed := c.methodsR != nil
	c.mu.Unlock()
	if subscribed {
		return nil
	}
	sess, err := c.sess("SubscribeMethods")
	if err != nil {
		return err
	}
	addr := c.address("/methods/devicebound")
	props := c.linkProperties("methods")
	// The settle modes of the .NET SDK's method links: requests and answers
	// both travel pre-settled, at most once, as over MQTT (QoS 0). A call
	// is then one transfer each way, with no disposition frames.
	settled, first := amqp.SenderSettleModeSettled, amqp.ReceiverSettleModeFirst
	sname, rname := c.newLinkName("methods-sender", linkMethods), c.newLinkName("methods-receiver", linkMethods)
	s, err := sess.NewSender(ctx, addr, &amqp.SenderOptions{Name: sname, Properties: c.senderProperties(props),
		SettlementMode: &settled, RequestedReceiverSettleMode: &first})
	if err != nil {
		return wrap("attaching the method response link", err)
	}
	r, err := sess.NewReceiver(ctx, addr, &amqp.ReceiverOptions{Name: rname, Properties: props, Credit: 50,
		SettlementMode: &first, RequestedSenderSettleMode: &settled, MaxMessageSize: MaxMessageSize})
	if err != nil {
		c.closingLinks(sname)
		s.Close(ctx)
		return wrap("attaching the method request link", err)
	}
	rctx, stop := context.WithCancel(c.life)
	done := make(chan struct{})
	c.mu.Lock()
	c.methodsS, c.methodsR, c.stopRecv, c.recvDone = s, r, stop, done
	c.mu.Unlock()
	go c.receiveMethods(rctx, stop, r, done)
	return nil
}

// UnsubscribeMethods detaches the method links and returns once the hub
// has answered both detaches.
func (c *conn) UnsubscribeMethods(ctx context.Context) error {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	c.mu.Lock()
	s, r, stop, done := c.methodsS, c.methodsR, c.stopRecv, c.recvDone
	c.methodsS, c.methodsR, c.stopRecv, c.recvDone = nil, nil, nil, nil
	clear(c.rids)
	c.mu.Unlock()
	if r == nil {
		return nil
	}
	stop()
	<-done
	c.closingLinks(s.LinkName(), r.LinkName())
	err := errors.Join(r.Close(ctx), s.Close(ctx))
	if err != nil {
		return wrap("detaching the method links", err)
	}
	return nil
}

// receiveMethods hands requests to Config.Methods until ctx ends (on
// unsubscribe, or with the connection) or the link fails.
func (c *conn) receiveMethods(ctx context.Context, stop context.CancelFunc, r *amqp.Receiver, done chan struct{}) {
	defer close(done)
	defer stop()
	for {
		msg, err := r.Receive(ctx, nil)
		if err != nil {
			if ctx.Err() != nil {
				return // unsubscribed or closed
			}
			// A detached link (e.g. an expired token) ends the connection
			// for the client, which then reconnects.
			c.fail(fmt.Errorf("method link: %w", err))
			return
		}
		_ = r.AcceptMessage(ctx, msg)
		var corr any
		if msg.Properties != nil {
			corr = msg.Properties.CorrelationID
		}
		rid := ""
		switch v := corr.(type) {
		case amqp.UUID:
			rid = v.String()
		case string:
			rid = v
		}
		name, _ := msg.ApplicationProperties["IoThub-methodname"].(string)
		if rid == "" || name == "" || c.methods == nil {
			continue // not a method request IoT Hub would send
		}
		var payload []byte
		if len(msg.Data) == 1 { // the usual: go-amqp decodes each data section into a slice of its own
			payload = msg.Data[0]
		} else {
			for _, d := range msg.Data {
				payload = append(payload, d...)
			}
		}
		if len(payload) == 0 {
			payload = nil
		}
		c.mu.Lock()
		c.rids[rid] = corr
		c.mu.Unlock()
		c.methods(&transport.MethodRequest{Name: name, RequestID: rid, Payload: payload})
	}
}

// RespondMethod sends the answer with the request's correlation-id. The
// method links are pre-settled (SubscribeMethods), so it returns once the
// answer is written: the hub sends no disposition, as over MQTT (QoS 0).
func (c *conn) RespondMethod(ctx context.Context, requestID string, resp *transport.MethodResponse) error {
	c.mu.Lock()
	corr, ok := c.rids[requestID]
	delete(c.rids, requestID)
	s := c.methodsS
	c.mu.Unlock()
	if !ok || s == nil {
		return fmt.Errorf("iothub: amqp: no pending method request %q", requestID)
	}
	a := &answer{props: amqp.MessageProperties{CorrelationID: corr}, data: [1][]byte{resp.Payload}}
	a.msg = amqp.Message{Properties: &a.props, ApplicationProperties: statusProperties(resp.Status), Data: a.data[:]}
	if err := s.Send(ctx, &a.msg, nil); err != nil {
		return wrap("sending method response", err)
	}
	return nil
}

// answer is a method response message and what it points to, in one
// allocation rather than three.
type answer struct {
	msg   amqp.Message
	props amqp.MessageProperties
	data  [1][]byte
}

// statusApps holds the application properties of method responses, one
// map per status from 0 to 999, made by the first response with it and
// shared by all later ones, at once too: nothing writes these maps, and
// go-amqp only reads them (Message.Marshal).
var statusApps [1000]atomic.Pointer[map[string]any]

// statusProperties returns the application properties of a method
// response with status: {"IoThub-status": status}.
func statusProperties(status int) map[string]any {
	if status < 0 || status >= len(statusApps) {
		return map[string]any{"IoThub-status": int32(status)}
	}
	if m := statusApps[status].Load(); m != nil {
		return *m
	}
	m := map[string]any{"IoThub-status": int32(status)}
	statusApps[status].Store(&m)
	return m
}

// SendEvent sends msg on the telemetry link and waits for the hub to
// accept it.
func (c *conn) SendEvent(ctx context.Context, msg *transport.Message) error {
	if err := eventcheck.Check(msg); err != nil {
		return err
	}
	s, err := c.eventsSender(ctx)
	if err != nil {
		return err
	}
	props := &amqp.MessageProperties{}
	if msg.MessageID != "" {
		props.MessageID = msg.MessageID
	}
	if msg.CorrelationID != "" {
		props.CorrelationID = msg.CorrelationID
	}
	if msg.ContentType != "" {
		props.ContentType = &msg.ContentType
	}
	if msg.ContentEncoding != "" {
		props.ContentEncoding = &msg.ContentEncoding
	}
	am := &amqp.Message{Properties: props, Data: [][]byte{msg.Body}}
	if len(msg.Properties) > 0 {
		am.ApplicationProperties = make(map[string]any, len(msg.Properties))
		for k, v := range msg.Properties {
			am.ApplicationProperties[k] = v
		}
	}
	if err := s.Send(ctx, am, nil); err != nil {
		return wrap("sending event", err)
	}
	return nil
}

// eventsSender returns the telemetry link, attaching it if needed.
func (c *conn) eventsSender(ctx context.Context) (*amqp.Sender, error) {
	c.mu.Lock()
	s := c.events
	c.mu.Unlock()
	if s != nil {
		return s, nil
	}
	sess, err := c.sess("SendEvent")
	if err != nil {
		return nil, err
	}
	s, err = sess.NewSender(ctx, c.address("/messages/events"), &amqp.SenderOptions{
		Name:       c.newLinkName("events", linkEvents),
		Properties: c.senderProperties(nil),
	})
	if err != nil {
		return nil, wrap("attaching the telemetry link", err)
	}
	c.mu.Lock()
	if c.events != nil {
		old := s
		s = c.events
		c.mu.Unlock()
		c.closingLinks(old.LinkName())
		old.Close(ctx)
		return s, nil
	}
	c.events = s
	c.mu.Unlock()
	return s, nil
}

var _ transport.TokenUpdater = (*conn)(nil)
