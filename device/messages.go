package device

// Cloud-to-device messages: one delivery goroutine per client hands the
// handler each message, one at a time, in the order the hub sent them, and
// settles it with the handler's answer on the connection it came from.
//
// Over MQTT and AMQP the hub pushes messages to a connection that
// subscribed; the client subscribes on every new connection while a
// handler is registered, before Connect returns or the connection is
// reported. Over HTTPS the device polls: the goroutine asks for the next
// message every MessagePollInterval, and again at once after each one.
//
// IoT Hub delivers at least once. A message is delivered again when the
// device does not settle it within the hub's one-minute lock, when the
// connection ends before the settlement reached the hub, or after an
// abandon. A handler that must not act twice keeps the MessageIDs it has
// handled.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/iothub-go/iothub/transport"
)

// Disposition is the handler's verdict on a cloud-to-device message: how
// the client settles it with the hub.
type Disposition int

// The dispositions of a cloud-to-device message.
const (
	// Complete: the message was handled; the hub removes it (and sends
	// positive feedback if the sender asked for it).
	Complete Disposition = iota + 1
	// Reject: the message will never be handled; the hub dead-letters it
	// (negative feedback "Rejected"). MQTT cannot reject: see
	// SetMessageHandler.
	Reject
	// Abandon: not now; the hub delivers the message again, up to its
	// maximum delivery count (10 by default), then dead-letters it. MQTT
	// cannot abandon: see SetMessageHandler.
	Abandon
)

// String returns "complete", "reject" or "abandon".
func (d Disposition) String() string { return transport.Disposition(d).String() }

// CloudMessage is a cloud-to-device message as the device receives it.
type CloudMessage struct {
	// Body is the payload, any bytes.
	Body []byte
	// MessageID is the sender's id for the message (the id its feedback
	// names); CorrelationID, UserID, To, ContentType and ContentEncoding
	// are the other system properties. "" when absent.
	MessageID       string
	CorrelationID   string
	UserID          string
	To              string
	ContentType     string
	ContentEncoding string
	// Ack is the feedback the sender asked for: "none", "positive",
	// "negative" or "full"; "" when the transport does not say.
	Ack string
	// ExpiryTime is when the hub drops the message unsettled; EnqueuedTime
	// when it queued it. Zero when the transport does not say.
	ExpiryTime   time.Time
	EnqueuedTime time.Time
	// DeliveryCount counts the earlier deliveries of the message (abandons
	// and lost locks); 0 when the transport does not say.
	DeliveryCount int
	// Properties are the application properties.
	Properties map[string]string

	lockToken string
	cn        *connection // the connection it came on; settled there
}

// MessageHandler handles a cloud-to-device message and says how to settle
// it. ctx ends when the client closes.
type MessageHandler func(ctx context.Context, msg *CloudMessage) Disposition

// maxQueuedMessages bounds the messages waiting for a slow handler. The
// hub's window (MQTT in-flight messages, AMQP link credit) keeps it far
// lower; beyond it a message is left unsettled, and the hub delivers it
// again once its lock expires.
const maxQueuedMessages = 1000

// settleTimeout bounds one settlement.
const settleTimeout = 30 * time.Second

// defaultPollInterval is ClientOptions.MessagePollInterval's default.
const defaultPollInterval = 10 * time.Second

// maxSettling bounds the settlements in flight at once over MQTT and AMQP:
// the next message goes to the handler while the hub confirms the last
// one's disposition (an AMQP round trip), so that a confirmation does not
// hold up delivery.
const maxSettling = 16

// messageState is the client's cloud-to-device delivery, made by the first
// use that needs it (Client.messageState): a client that never handles
// messages does not carry it.
type messageState struct {
	mu      sync.Mutex
	handler MessageHandler
	queue   []*CloudMessage
	wake    chan struct{}
	done    chan struct{} // closed when the goroutine returns; nil before it starts
	closed  bool
	// settling counts the settlements in flight; settleSlots bounds them.
	settling    sync.WaitGroup
	settleSlots chan struct{}
}

// SetMessageHandler registers h to receive cloud-to-device messages; nil
// removes it. h is called on one goroutine of the client, one message at
// a time, in the order the hub delivered them, and its Disposition
// settles the message on the connection it came from. A panic in h
// abandons the message (MQTT: leaves it unsettled).
//
// Over MQTT and AMQP, registering h on a connected client subscribes and
// returns once the hub has confirmed; every later connection subscribes
// again before it is reported connected, so messages queued while the
// device was offline arrive once it is back. Over HTTPS the client polls
// every ClientOptions.MessagePollInterval (and at once after a message)
// while h is registered; ReceiveMessage and SettleMessage poll by hand.
//
// MQTT can only complete: it acknowledges a message (PUBACK) and has no
// way to refuse one. Reject and Abandon over MQTT leave the message
// unacknowledged and log why; the hub delivers it again after the next
// reconnect or when its lock expires, until it expires. Use AMQP or HTTPS
// to reject or abandon.
//
// Removing h stops delivery to it: messages that arrive meanwhile are left
// unsettled and delivered again later. h may call any method of the
// client, Close included.
func (c *Client) SetMessageHandler(h MessageHandler) error {
	m := c.messageState()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	m.handler = h
	if h == nil {
		m.queue = nil
		m.mu.Unlock()
		return nil
	}
	start := m.done == nil
	if start {
		m.done = make(chan struct{})
		m.wake = make(chan struct{}, 1)
		m.settleSlots = make(chan struct{}, maxSettling)
	}
	m.mu.Unlock()
	if start {
		go c.messageLoop()
	}
	return c.syncMessages()
}

// messageState returns the client's cloud-to-device state, making it on
// first use.
func (c *Client) messageState() *messageState { return loadOrMake(&c.messages) }

// wantMessages reports whether a message handler is registered.
func (c *Client) wantMessages() bool {
	m := c.messages.Load()
	if m == nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.handler != nil
}

// subscribeMessages subscribes cn to cloud-to-device messages if a
// handler wants them. Over HTTPS, where the client polls, it only wakes
// the poller. Called with c.subMu held.
func (c *Client) subscribeMessages(ctx context.Context, cn *connection) error {
	if cn.messagesSub || !c.wantMessages() {
		return nil
	}
	err := cn.SubscribeMessages(ctx)
	if errors.Is(err, transport.ErrUnsupported) {
		cn.polled.Store(true) // HTTPS: the delivery goroutine polls
		err = nil
	}
	if err != nil {
		return err
	}
	cn.messagesSub = true
	c.wakeMessages()
	return nil
}

// syncMessages gives the live connection the subscription a newly
// registered handler needs.
func (c *Client) syncMessages() error {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	c.mu.Lock()
	cn, closed := c.conn, c.closed
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if cn == nil {
		return nil // the next connection subscribes
	}
	ctx, cancel := context.WithTimeout(&c.life, subscribeTimeout)
	defer cancel()
	err := c.subscribeMessages(ctx, cn)
	if err == nil {
		return nil
	}
	select {
	case <-cn.Done():
		return nil // the next connection subscribes
	default:
	}
	if c.life.Err() != nil {
		return nil
	}
	cn.Close() // deaf to messages otherwise: reconnect and try again
	return fmt.Errorf("iothub: subscribing to cloud-to-device messages: %w", err)
}

// postMessage takes a message from a connection's read loop.
func (c *Client) postMessage(cn *connection, tm *transport.CloudMessage) {
	m := c.messages.Load()
	if m == nil {
		return // no handler: unsettled, the hub delivers it again
	}
	m.mu.Lock()
	if m.handler == nil || m.closed || m.done == nil || len(m.queue) >= maxQueuedMessages {
		m.mu.Unlock()
		return // unsettled: the hub delivers it again
	}
	m.queue = append(m.queue, fromCloudMessage(cn, tm))
	m.mu.Unlock()
	c.wakeMessages()
}

func (c *Client) wakeMessages() {
	m := c.messages.Load()
	if m == nil {
		return
	}
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// fromCloudMessage converts a message at the transport boundary.
func fromCloudMessage(cn *connection, tm *transport.CloudMessage) *CloudMessage {
	return &CloudMessage{
		Body: tm.Body, MessageID: tm.MessageID, CorrelationID: tm.CorrelationID, UserID: tm.UserID, To: tm.To,
		ContentType: tm.ContentType, ContentEncoding: tm.ContentEncoding, Ack: tm.Ack,
		ExpiryTime: tm.ExpiryTime, EnqueuedTime: tm.EnqueuedTime, DeliveryCount: tm.DeliveryCount,
		Properties: tm.Properties, lockToken: tm.LockToken, cn: cn,
	}
}

// messageLoop delivers queued messages, and polls over HTTPS, until Close.
func (c *Client) messageLoop() {
	m := c.messages.Load() // made by SetMessageHandler, which starts the loop
	defer close(m.done)
	poll := time.NewTimer(c.pollInterval)
	defer poll.Stop()
	for {
		for c.life.Err() == nil {
			m.mu.Lock()
			if len(m.queue) == 0 || m.handler == nil {
				m.mu.Unlock()
				break
			}
			msg := m.queue[0]
			m.queue = m.queue[1:]
			h := m.handler
			m.mu.Unlock()
			c.handleMessage(msg, h)
		}
		if c.pollOnce() {
			continue // a message came: ask again at once
		}
		if !poll.Stop() {
			select {
			case <-poll.C:
			default:
			}
		}
		poll.Reset(c.pollInterval)
		select {
		case <-m.wake:
		case <-poll.C:
		case <-c.life.Done():
			return
		}
	}
}

// pollOnce asks an HTTPS connection for the next message while a handler
// is registered, and hands it over; it reports whether one came.
func (c *Client) pollOnce() bool {
	if !c.wantMessages() || c.life.Err() != nil {
		return false
	}
	c.mu.Lock()
	cn := c.conn
	c.mu.Unlock()
	if cn == nil || !cn.polled.Load() {
		return false
	}
	ctx, cancel := context.WithTimeout(&c.life, settleTimeout)
	defer cancel()
	tm, err := cn.ReceiveMessage(ctx)
	if errors.Is(err, transport.ErrUnsupported) {
		// A transport that neither pushes nor polls: say so once.
		cn.polled.Store(false)
		c.log.Warn("the transport cannot receive cloud-to-device messages", "error", err)
		return false
	}
	if err != nil {
		if c.life.Err() == nil {
			c.log.Warn("polling for cloud-to-device messages failed", "error", err)
		}
		return false
	}
	if tm == nil {
		return false
	}
	msg := fromCloudMessage(cn, tm)
	m := c.messages.Load() // the loop that polls made it
	m.mu.Lock()
	h := m.handler
	m.mu.Unlock()
	if h == nil {
		return false // unsettled: the lock expires and the hub delivers it again
	}
	c.handleMessage(msg, h)
	return true
}

// handleMessage runs the handler on one message and settles it.
func (c *Client) handleMessage(msg *CloudMessage, h MessageHandler) {
	d := c.runMessage(h, msg)
	if d == 0 {
		return // MQTT after a panic: leave it unsettled
	}
	settle := func() {
		ctx, cancel := context.WithTimeout(&c.life, settleTimeout)
		defer cancel()
		if err := c.settle(ctx, msg, d); err != nil && c.life.Err() == nil {
			c.log.Warn("cloud-to-device message not settled", "disposition", d, "messageId", msg.MessageID, "error", err)
		}
	}
	if msg.cn.polled.Load() {
		settle() // HTTPS: settle before asking for the next message
		return
	}
	m := c.messages.Load() // the message came through the handler it holds
	select {
	case m.settleSlots <- struct{}{}:
	case <-c.life.Done():
		return // closing: the hub delivers it again
	}
	m.settling.Add(1)
	go func() {
		defer func() { <-m.settleSlots; m.settling.Done() }()
		settle()
	}()
}

// runMessage calls the handler, turning a panic into Abandon (or into no
// settlement over MQTT, which cannot abandon). Close recognises this frame
// on its caller's stack (see inMessageHandler).
func (c *Client) runMessage(h MessageHandler, msg *CloudMessage) (d Disposition) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("the cloud-to-device message handler panicked; abandoning the message", "panic", fmt.Sprint(r))
			d = Abandon
		}
	}()
	d = h(c.handlersContext(), msg)
	if d < Complete || d > Abandon {
		c.log.Warn("the message handler returned an unknown disposition; abandoning the message", "disposition", int(d))
		d = Abandon
	}
	return d
}

// messageFrame is the function the message handler runs under.
const messageFrame = "github.com/iothub-go/iothub/device.(*Client).runMessage"

// inMessageHandler reports whether the calling goroutine runs the message
// handler.
func (c *Client) inMessageHandler() bool {
	m := c.messages.Load()
	if m == nil {
		return false
	}
	m.mu.Lock()
	started := m.done != nil
	m.mu.Unlock()
	return started && onStack(messageFrame)
}

// stopMessages ends the delivery goroutine: it waits for it unless called
// from the handler, or until ctx ends.
func (c *Client) stopMessages(ctx context.Context, fromHandler bool) error {
	m := c.messageState() // marked closed even if never used, for a later SetMessageHandler
	m.mu.Lock()
	m.closed = true
	m.queue = nil
	done := m.done
	m.mu.Unlock()
	if done == nil || fromHandler {
		return nil
	}
	if err := waitClosed(ctx, done); err != nil {
		return err
	}
	settled := make(chan struct{})
	go func() { m.settling.Wait(); close(settled) }() // life has ended: every settlement ends soon
	return waitClosed(ctx, settled)
}

// ReceiveMessage polls the hub for the next cloud-to-device message, over
// HTTPS, where the device asks for its messages; it returns nil and no
// error when none is waiting. The message stays locked for the device
// for one minute: settle it with SettleMessage before then, or the hub
// delivers it again. While the client is reconnecting it waits for the
// connection, as long as ctx allows. Over MQTT and AMQP, where the hub
// pushes, it returns an error wrapping ErrUnsupported: use
// SetMessageHandler.
func (c *Client) ReceiveMessage(ctx context.Context) (*CloudMessage, error) {
	cn, err := c.liveConn(ctx)
	if err != nil {
		return nil, err
	}
	tm, err := cn.ReceiveMessage(ctx)
	if err != nil || tm == nil {
		return nil, err
	}
	return fromCloudMessage(cn, tm), nil
}

// SettleMessage completes, rejects or abandons a message that
// ReceiveMessage returned. It fails with an error wrapping ErrLockLost
// when the hub no longer holds the message for this device (the lock
// expired, or the connection it came on has ended), and over MQTT, for
// Reject and Abandon, with one wrapping ErrUnsupported.
func (c *Client) SettleMessage(ctx context.Context, msg *CloudMessage, d Disposition) error {
	if msg == nil || msg.cn == nil {
		return fmt.Errorf("%w: the message did not come from this client", ErrInvalidOptions)
	}
	if d < Complete || d > Abandon {
		return fmt.Errorf("%w: unknown disposition %d", ErrInvalidOptions, int(d))
	}
	return c.settle(ctx, msg, d)
}

// settle settles msg on its connection.
func (c *Client) settle(ctx context.Context, msg *CloudMessage, d Disposition) error {
	// A message can arrive while its connection is still being dialed
	// (a resumed MQTT session delivers before the SUBACK).
	select {
	case <-msg.cn.ready():
	case <-ctx.Done():
		return ctx.Err()
	}
	if msg.cn.Conn == nil {
		return fmt.Errorf("%w: the connection the message came on failed to open; the hub delivers it again", ErrLockLost)
	}
	select {
	case <-msg.cn.Done():
		return fmt.Errorf("%w: the connection the message came on has ended; the hub delivers it again", ErrLockLost)
	default:
	}
	return msg.cn.SettleMessage(ctx, msg.lockToken, transport.Disposition(d))
}
