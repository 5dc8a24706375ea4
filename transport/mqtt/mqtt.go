// Package mqtt is the MQTT 3.1.1 device transport for Azure IoT Hub, over
// TLS (port 8883) or WebSocket (port 443, path /$iothub/websocket,
// subprotocol "mqtt"), built on github.com/eclipse/paho.mqtt.golang.
//
// Use it through package device:
//
//	device.NewClientFromConnectionString(cs, &device.ClientOptions{Transport: mqtt.New(&mqtt.Options{WebSocket: true})})
//
// WebSocket connections honour the HTTPS_PROXY and NO_PROXY environment
// variables.
package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/apiversion"
	"github.com/iothub-go/iothub/internal/netdial"
	"github.com/iothub-go/iothub/transport"
	"github.com/iothub-go/iothub/transport/internal/eventcheck"
)

const (
	defaultTLSPort = "8883"
	defaultWSPort  = "443"
	methodsFilter  = "$iothub/methods/POST/#"
)

// Options configures the MQTT transport. The zero value is MQTT over TLS.
type Options struct {
	// WebSocket selects MQTT over WebSocket (wss, port 443 unless the
	// address has one) instead of MQTT over TLS (port 8883).
	WebSocket bool
	// KeepAlive is the MQTT keep-alive interval. Zero means 120 s. IoT Hub
	// drops a connection silent for 1.5 × KeepAlive and caps it at 1177 s.
	KeepAlive time.Duration
}

// Transport dials IoT Hub over MQTT. It is safe for concurrent use.
type Transport struct {
	ws        bool
	keepAlive time.Duration
}

// New returns an MQTT transport. opts may be nil.
func New(opts *Options) *Transport {
	t := &Transport{keepAlive: 120 * time.Second}
	if opts != nil {
		t.ws = opts.WebSocket
		if opts.KeepAlive > 0 {
			t.keepAlive = min(opts.KeepAlive, 1177*time.Second)
		}
	}
	return t
}

// Name returns "mqtt" or "mqtt-ws".
func (t *Transport) Name() string {
	if t.ws {
		return "mqtt-ws"
	}
	return "mqtt"
}

// MethodSupport returns nil: MQTT carries direct methods.
func (t *Transport) MethodSupport() error { return nil }

// username returns IoT Hub's MQTT username for cfg:
// "{host}/{deviceId}[/{moduleId}]/?api-version=…&DeviceClientType=…",
// and "&model-id=…" (percent-encoded) when cfg announces a Plug and Play
// model, last, as the C# and C SDKs send it. IoT Hub reads model-id from
// api-version 2020-09-30 on; apiversion.Current is later.
func username(cfg transport.Config) string {
	u := cfg.Identity.HostName + "/" + cfg.Identity.String() + "/?api-version=" + apiversion.Current +
		"&DeviceClientType=" + url.QueryEscape(cfg.ProductInfo)
	if cfg.ModelID != "" {
		u += "&model-id=" + escape(cfg.ModelID)
	}
	return u
}

// brokerURL returns the paho broker URL for addr, the "host:port" to dial
// and the TLS server name.
func (t *Transport) brokerURL(addr string) (broker, hostport, host string, err error) {
	port := defaultTLSPort
	if t.ws {
		port = defaultWSPort
	}
	hostport, host, err = netdial.Endpoint(addr, port)
	if err != nil {
		return "", "", "", fmt.Errorf("iothub: mqtt: %w", err)
	}
	if t.ws {
		return "wss://" + hostport + netdial.WebSocketPath, hostport, host, nil
	}
	return "tls://" + hostport, hostport, host, nil
}

// wsReadLimit bounds one WebSocket message from the hub; MaxPacketSize
// bounds the MQTT packets in them.
const wsReadLimit = 1 << 20

// Dial connects, authenticates and returns the connection. The session is
// persistent (clean session off, as the official SDKs do); subscriptions
// are nevertheless made again by SubscribeMethods on every connection. The
// route for method requests is in place before CONNECT, so a request the
// hub delivers on the persistent session before the SUBACK is not lost.
// Dial ends as soon as ctx does, whatever stage the attempt is in.
func (t *Transport) Dial(ctx context.Context, cfg transport.Config) (transport.Conn, error) {
	broker, hp, host, err := t.brokerURL(cfg.Address)
	if err != nil {
		return nil, err
	}
	tlsConf := netdial.SharedClientTLS(cfg.TLSConfig, host)
	c := &conn{
		id: cfg.Identity, done: make(chan struct{}), log: cfg.Logger,
		methods: cfg.Methods, desired: cfg.Desired, messages: cfg.Messages,
	}
	connectTimeout := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		connectTimeout = max(time.Until(dl), time.Millisecond)
	}
	op := &opener{ws: t.ws, hostport: hp, tls: tlsConf, ctx: ctx, lc: &c.lc}
	// paho keeps its open function for the life of the client: it reaches
	// op through c.opener, cleared once connected.
	c.opener.Store(op)
	o := paho.NewClientOptions().
		AddBroker(broker).
		SetClientID(cfg.Identity.String()).
		SetUsername(username(cfg)).
		SetProtocolVersion(4). // MQTT 3.1.1 only: never fall back to 3.1
		SetCleanSession(false).
		SetAutoReconnect(false). // package device reconnects, with its policy
		SetConnectRetry(false).
		SetKeepAlive(t.keepAlive).
		SetPingTimeout(30 * time.Second).
		SetConnectTimeout(connectTimeout).
		// No paho write timeout: the write watch bounds every write
		// (writewatch.go), and paho's waits to hand a packet to its writer
		// stay 30 s without it.
		SetOrderMatters(true). // our callbacks only hand requests over
		// Every route acknowledges its messages itself: cloud-to-device
		// messages only when SettleMessage completes them (c2d.go).
		SetAutoAckDisabled(true).
		SetCustomOpenConnectionFn(c.open).
		// Every PUBLISH goes to route, from the start: a persistent
		// session may hold subscriptions of an earlier connection.
		SetDefaultPublishHandler(c.route).
		SetConnectionLostHandler(func(_ paho.Client, err error) { c.lost(err) })
	if cfg.Token != "" {
		o.SetPassword(cfg.Token)
	}
	c.client = paho.NewClient(o)
	tok := c.client.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		// Closing the socket, if open, ends paho's attempt at once.
		op.abort()
		t := time.NewTimer(5 * time.Second)
		select {
		case <-tok.Done():
		case <-t.C:
		}
		t.Stop()
		c.client.Disconnect(0)
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil || ctx.Err() != nil {
		c.client.Disconnect(0)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, classify(err)
	}
	c.opener.Store(nil) // the connection does not hold on to ctx, its timer and its parents
	if ct, ok := tok.(*paho.ConnectToken); ok {
		c.sessionPresent = ct.SessionPresent()
	}
	return c, nil
}

// opener opens the socket for paho (SetCustomOpenConnectionFn) rather than
// letting paho open it, so that the dial and the TLS or WebSocket
// handshake end with ctx. Until CONNACK, Dial closes the socket when ctx
// ends (abort), which ends paho's wait for it.
type opener struct {
	ws       bool
	hostport string
	tls      *tls.Config
	ctx      context.Context

	// lc is where the socket's limitConn goes: a field of the connection,
	// so that it costs no allocation of its own; open uses it once.
	lc *limitConn

	mu      sync.Mutex
	nc      net.Conn // the socket opened
	aborted bool     // what open opens from now on is closed at once
}

// open opens the socket for paho, through the connection's opener until
// Dial has connected.
func (c *conn) open(u *url.URL, o paho.ClientOptions) (net.Conn, error) {
	if op := c.opener.Load(); op != nil {
		return op.open(u, o)
	}
	return nil, errors.New("iothub: mqtt: the connection cannot be reopened")
}

func (o *opener) open(*url.URL, paho.ClientOptions) (net.Conn, error) {
	ctx := o.ctx
	var nc net.Conn
	var err error
	if o.ws {
		nc, err = netdial.WebSocket(ctx, o.hostport, "mqtt", o.tls, wsReadLimit)
	} else {
		nc, err = netdial.TLS(ctx, o.hostport, o.tls)
	}
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.aborted || ctx.Err() != nil {
		nc.Close()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return nil, errors.New("iothub: mqtt: the connection attempt was abandoned")
	}
	o.nc = nc
	if lc := o.lc; lc != nil {
		o.lc = nil
		lc.init(nc, MaxPacketSize)
		return lc, nil
	}
	return newLimitConn(nc, MaxPacketSize), nil
}

// abort closes the socket if open has opened it, and any socket open
// opens later.
func (o *opener) abort() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.aborted = true
	if o.nc != nil {
		o.nc.Close()
	}
}

// classify marks CONNACK refusals that retrying cannot fix.
func classify(err error) error {
	switch {
	case errors.Is(err, packets.ErrorRefusedNotAuthorised), errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword),
		errors.Is(err, packets.ErrorRefusedIDRejected):
		return fmt.Errorf("%w: mqtt: %v", transport.ErrNotAuthorized, err)
	case errors.Is(err, packets.ErrorRefusedBadProtocolVersion):
		return fmt.Errorf("iothub: mqtt: the hub refused MQTT 3.1.1: %w", err)
	}
	return fmt.Errorf("iothub: mqtt: connect: %w", err)
}

type conn struct {
	id       auth.Identity
	client   paho.Client
	log      interface{ Debug(string, ...any) }
	done     chan struct{}
	methods  func(*transport.MethodRequest)
	desired  func([]byte)
	messages func(*transport.CloudMessage)
	// twinSub holds one token while a twin request subscribes to
	// twinResponseFilter, so that a connection subscribes once. It is made
	// by the first twin request (subscribeTwin), under mu.
	twinSub chan struct{}
	// sessionPresent: the hub resumed a persistent session, which may hold
	// a method subscription of an earlier connection.
	sessionPresent bool
	// opener opens the socket until Dial has connected; nil after.
	opener atomic.Pointer[opener]
	// lc is the socket as paho uses it. Held here rather than allocated
	// on its own: an object of its size lands among the many short-lived
	// ones a connection attempt makes, and would keep their memory in use
	// (BENCHMARKS.md, "Where the MQTT RSS difference was").
	lc limitConn

	mu         sync.Mutex
	err        error
	closed     bool
	subscribed bool
	// twinSubscribed: twinResponseFilter was granted on this connection.
	twinSubscribed bool
	// pending are the twin requests waiting for their answer, by $rid;
	// nil until the first.
	pending map[string]chan twinResponse
	// unacked are the cloud-to-device messages delivered on this
	// connection and not yet completed, by lock token (c2d.go).
	unacked map[string]paho.Message
	// onDone is the function to run once the connection has ended
	// (OnDone); nil if none.
	onDone func()
}

// OnDone sets the function to run on a goroutine of its own once the
// connection has ended (lost or closed), at once if it has; nil removes
// it. The connection holds one: a later call replaces the earlier
// function. Package device uses it to wait for an idle connection without
// a goroutine.
func (c *conn) OnDone(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		if f != nil {
			go f()
		}
		return
	}
	c.onDone = f
}

// endLocked marks the connection ended and runs the OnDone function.
// c.mu is held.
func (c *conn) endLocked() {
	c.closed = true
	close(c.done)
	if f := c.onDone; f != nil {
		c.onDone = nil
		go f()
	}
}

func (c *conn) lost(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.err = fmt.Errorf("iothub: mqtt: connection lost: %w", err)
	c.endLocked()
}

func (c *conn) Done() <-chan struct{} { return c.done }

func (c *conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.client.Disconnect(0) // idempotent in paho; frees resources after a loss
		return nil
	}
	c.endLocked()
	c.mu.Unlock()
	c.client.Disconnect(250)
	return nil
}

// wait waits for tok, for ctx, or for the connection to end: paho never
// completes the token of a packet it stored while the connection was going
// down, so without the last case a response or event racing a connection
// loss would hang until ctx ends (and hold up Client.Close).
func (c *conn) wait(ctx context.Context, tok paho.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		select {
		case <-tok.Done():
			return tok.Error()
		default:
		}
		return c.endedErr()
	}
}

func (c *conn) endedErr() error {
	if err := c.Err(); err != nil {
		return err
	}
	return errors.New("iothub: mqtt: connection closed")
}

// errSubscriptionRefused is returned by subscribe when the SUBACK refuses
// the filter (return code 0x80).
var errSubscriptionRefused = errors.New("iothub: mqtt: the hub refused the subscription")

// subscribe subscribes to filter at QoS 0 and waits for the SUBACK like
// wait; what the subscription brings goes to route. paho's Subscribe, like
// its Publish, may block up to its 30 s hand-over timeout when the
// connection is going down, so it runs on a goroutine of its own.
func (c *conn) subscribe(ctx context.Context, filter string) error {
	return c.subscribeQoS(ctx, filter, 0)
}

// subscribeQoS is subscribe at the given QoS.
func (c *conn) subscribeQoS(ctx context.Context, filter string, qos byte) error {
	ch := make(chan paho.Token, 1)
	go func() { ch <- c.client.Subscribe(filter, qos, nil) }() // nil: no route of its own
	var tok paho.Token
	select {
	case tok = <-ch:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return c.endedErr()
	}
	if err := c.wait(ctx, tok); err != nil {
		return err
	}
	if st, ok := tok.(*paho.SubscribeToken); ok {
		if q, ok := st.Result()[filter]; !ok || q == 0x80 {
			return errSubscriptionRefused
		}
	}
	return nil
}

// publish hands a PUBLISH to paho and waits for it like wait. paho's
// Publish itself blocks, up to its 30 s hand-over timeout, when the connection
// is lost between its status check and the hand-over to its writer, so it
// runs on a goroutine of its own, which ends by that timeout at the latest.
// That goroutine also waits for the token, and wakes the caller only once
// the packet is written: waking it between the hand-over and the write
// would make paho's writer wait for the caller's turn on the processor.
// Method answers go to paho directly instead (RespondMethod).
func (c *conn) publish(ctx context.Context, topic string, qos byte, payload []byte) error {
	if err := checkTopic(topic); err != nil {
		return err
	}
	ch := make(chan error, 1)
	go func() { ch <- c.wait(ctx, c.client.Publish(topic, qos, false, payload)) }()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		// The goroutine's wait sees it too; an answer it already has wins.
		select {
		case err := <-ch:
			return err
		default:
		}
		return c.endedErr()
	}
}

// route is paho's only handler of incoming PUBLISH packets (its default
// handler, in place before CONNECT): it hands each to the handler of the
// filter its topic falls under, on paho's ordered delivery goroutine. A
// topic under none is dropped unacknowledged, as paho drops a PUBLISH
// without a route. One handler rather than a paho route per filter saves
// each connection a route, a list element and a closure per filter.
func (c *conn) route(cl paho.Client, m paho.Message) {
	t := m.Topic()
	switch {
	case under(t, methodsFilter):
		c.onMethod(cl, m)
	case under(t, twinResponseFilter):
		c.onTwinResponse(cl, m)
	case under(t, desiredFilter):
		c.onDesired(cl, m)
	case c.id.ModuleID == "" && underCloud(t, c.id.DeviceID):
		c.onCloudMessage(cl, m)
	}
}

// under reports whether topic matches filter, a "level/.../#" filter
// without other wildcards: whether it is the filter's parent level or
// below it (MQTT 3.1.1 section 4.7.1.2).
func under(topic, filter string) bool {
	prefix := filter[:len(filter)-1] // "level/.../"
	return strings.HasPrefix(topic, prefix) || topic == prefix[:len(prefix)-1]
}

// onMethod handles method requests (route).
func (c *conn) onMethod(_ paho.Client, m paho.Message) {
	defer m.Ack() // auto-ack is off (Dial); a QoS 0 request needs none
	name, rid, ok := parseMethodTopic(m.Topic())
	if !ok {
		c.log.Debug("mqtt: ignoring a malformed method topic")
		return
	}
	if c.methods == nil {
		return
	}
	// The payload is the handler's to keep, without a copy: paho reads
	// every packet into a buffer of its own (packets.ReadPacket), and the
	// PUBLISH's payload into a slice of its own (PublishPacket.Unpack),
	// which it never reuses or writes to.
	payload := m.Payload()
	if len(payload) == 0 {
		payload = nil
	}
	c.methods(&transport.MethodRequest{Name: name, RequestID: rid, Payload: payload})
}

func (c *conn) SubscribeMethods(ctx context.Context) error {
	if err := c.subscribe(ctx, methodsFilter); err != nil {
		return fmt.Errorf("iothub: mqtt: subscribing to methods: %w", err)
	}
	c.mu.Lock()
	c.subscribed = true
	c.mu.Unlock()
	return nil
}

// UnsubscribeMethods unsubscribes from methods if this connection
// subscribed, or resumed a session that may have.
func (c *conn) UnsubscribeMethods(ctx context.Context) error {
	c.mu.Lock()
	needed := c.subscribed || c.sessionPresent
	c.mu.Unlock()
	if !needed {
		return nil
	}
	// route still hands over a request the hub sent before it saw the
	// UNSUBSCRIBE.
	tok := c.client.Unsubscribe(methodsFilter)
	if err := c.wait(ctx, tok); err != nil {
		return fmt.Errorf("iothub: mqtt: unsubscribing from methods: %w", err)
	}
	c.mu.Lock()
	c.subscribed, c.sessionPresent = false, false
	c.mu.Unlock()
	return nil
}

// RespondMethod hands a method answer (QoS 0) to paho on the caller's
// goroutine. It spares each call a goroutine of its own, at a price: if
// the connection is lost between paho's status check and the hand-over to
// its writer, paho's Publish holds the caller until its hand-over timeout
// (30 s), ctx or no ctx, so it does not take one. Package device allows
// for that: it never waits for an answer on a connection that has ended
// (Client.Close returns; the answer's goroutine ends by the timeout).
//
// It returns once paho has the packet, without waiting for the write: a
// QoS 0 packet has no acknowledgement, paho writes what it has been handed
// before a DISCONNECT asked for later (Close), and a loss before the write
// ends the connection, which the client reports. Waiting would wake the
// call's goroutine once more per call only to end it, which cost the
// device process about a tenth of its CPU under load (BENCHMARKS.md).
//
// Package device calls it on a fresh goroutine, whose stack paho's
// Publish, with the allocations it makes, nearly fills: what is not needed
// on the way there (building the topic, wrapping an error) is in functions
// of their own, so that this frame stays small (device's call.serve).
func (c *conn) RespondMethod(_ context.Context, requestID string, resp *transport.MethodResponse) error {
	topic, err := c.checkedAnswerTopic(resp.Status, requestID)
	if err != nil {
		return err
	}
	return handedOver(c.client.Publish(topic, 0, false, []byte(resp.Payload))) // a []byte: paho refuses other types
}

// checkedAnswerTopic returns the topic of the answer to request
// requestID, or RespondMethod's error: the topic does not fit in a packet, or the
// connection has ended.
//
//go:noinline
func (c *conn) checkedAnswerTopic(status int, requestID string) (string, error) {
	topic := answerTopic(status, requestID)
	if err := checkTopic(topic); err != nil {
		return "", answerError(err)
	}
	select {
	case <-c.done:
		return "", answerError(c.endedErr())
	default:
	}
	return topic, nil
}

// handedOver is RespondMethod's error once paho's Publish has returned
// tok: paho refused the packet at once (not connected) or failed to write
// it already; else nil.
//
//go:noinline
func handedOver(tok paho.Token) error {
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return answerError(err)
		}
	default:
	}
	return nil
}

// answerTopic is the topic of the answer to request requestID.
//
//go:noinline
func answerTopic(status int, requestID string) string {
	var topic strings.Builder // one allocation: the topic
	var num [20]byte
	topic.Grow(len("$iothub/methods/res/") + len(num) + len("/?$rid=") + len(requestID))
	topic.WriteString("$iothub/methods/res/")
	topic.Write(strconv.AppendInt(num[:0], int64(status), 10))
	topic.WriteString("/?$rid=")
	topic.WriteString(requestID)
	return topic.String()
}

// answerError wraps the error of an answer not sent (RespondMethod).
//
//go:noinline
func answerError(err error) error {
	return fmt.Errorf("iothub: mqtt: sending method response: %w", err)
}

// maxTopicLength is the longest topic an MQTT packet can carry: 65,535
// bytes (a UTF-8 string with a 2-byte length, MQTT 3.1.1 section 1.5.3).
const maxTopicLength = 65535

// checkTopic refuses a topic paho would cut to fit its length field.
func checkTopic(topic string) error {
	if len(topic) > maxTopicLength {
		return fmt.Errorf("a topic of %d bytes does not fit in an MQTT packet", len(topic))
	}
	return nil
}

// ErrTopicTooLong is wrapped by SendEvent's error when the message's
// properties, URL-encoded into the topic as IoT Hub's MQTT dialect wants,
// make the topic longer than the 65,535 bytes an MQTT packet can carry.
// Nothing is sent then: the MQTT library would cut the topic, shortening
// one property and losing the following ones. Percent-encoding makes a
// property up to three times (a non-ASCII character up to six times) its
// length in the topic; send large values in the body, or over AMQP.
//
// It wraps transport.ErrInvalidProperty, so errors.Is matches either.
var ErrTopicTooLong = fmt.Errorf("%w: mqtt: the message's properties make the MQTT topic longer than 65,535 bytes", transport.ErrInvalidProperty)

// SendEvent publishes msg at QoS 1 on the identity's events topic, with
// its properties URL-encoded in the topic, and waits for the PUBACK. It
// refuses a message over transport.MaxMessageSize or with an empty property
// name (see package transport), and one whose topic would not fit in a
// packet, with ErrTopicTooLong.
func (c *conn) SendEvent(ctx context.Context, msg *transport.Message) error {
	if err := eventcheck.Check(msg); err != nil {
		return err
	}
	topic := eventTopic(c.id, msg)
	if len(topic) > maxTopicLength {
		return fmt.Errorf("%w: it would be %d bytes", ErrTopicTooLong, len(topic))
	}
	if err := c.publish(ctx, topic, 1, msg.Body); err != nil {
		return fmt.Errorf("iothub: mqtt: sending event: %w", err)
	}
	return nil
}

// eventTopic returns the MQTT topic for a device-to-cloud message:
// "devices/{id}[/modules/{mid}]/messages/events/" and the property bag,
// system properties ($.mid, $.cid, $.ct, $.ce) first, then application
// properties in name order, each URL-encoded.
func eventTopic(id auth.Identity, msg *transport.Message) string {
	var b strings.Builder
	b.WriteString("devices/" + id.DeviceID)
	if id.ModuleID != "" {
		b.WriteString("/modules/" + id.ModuleID)
	}
	b.WriteString("/messages/events/")
	first := true
	add := func(k, v string) {
		if !first {
			b.WriteByte('&')
		}
		first = false
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(escape(v))
	}
	// System property names are written as the docs show them ("$.ct").
	for _, p := range [][2]string{{"$.mid", msg.MessageID}, {"$.cid", msg.CorrelationID}, {"$.ct", msg.ContentType}, {"$.ce", msg.ContentEncoding}} {
		if p[1] != "" {
			add(p[0], p[1])
		}
	}
	names := make([]string, 0, len(msg.Properties))
	for k := range msg.Properties {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		add(escape(k), msg.Properties[k])
	}
	return b.String()
}

// escape percent-encodes everything but RFC 3986 unreserved characters;
// spaces become %20, never "+".
func escape(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}

// parseMethodTopic splits a method request topic,
// "$iothub/methods/POST/{name}/?$rid={rid}" (the "/" before "?" is
// optional), into the method name and request id.
func parseMethodTopic(topic string) (name, rid string, ok bool) {
	rest, found := strings.CutPrefix(topic, "$iothub/methods/POST/")
	if !found {
		return "", "", false
	}
	name, query, found := strings.Cut(rest, "?")
	if !found {
		return "", "", false
	}
	name = strings.TrimSuffix(name, "/")
	if name == "" || strings.Contains(name, "/") {
		return "", "", false
	}
	for query != "" {
		var kv string
		kv, query, _ = strings.Cut(query, "&")
		if v, isRID := strings.CutPrefix(kv, "$rid="); isRID && v != "" {
			return name, v, true
		}
	}
	return "", "", false
}
