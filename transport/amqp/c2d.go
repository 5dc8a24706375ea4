package amqp

// Cloud-to-device messages. SubscribeMessages attaches a receiver link on
// /devices/{id}/messages/devicebound in rcv-settle-mode second, as the
// .NET SDK does: the hub then answers each settlement, so a settlement
// the hub can no longer honour (the lock expired, the message was
// redelivered) comes back as an error instead of being lost. Messages go
// to Config.Messages unsettled; SettleMessage sends accepted (complete),
// rejected (reject) or released (abandon), the outcomes every official
// SDK sends.

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/iothub-go/iothub/transport"
)

// c2dCredit is the link credit of the cloud-to-device link: at most this
// many messages are delivered and not yet settled.
const c2dCredit = 10

// condLockLost is the condition IoT Hub rejects a settlement with when it
// no longer holds the message's lock.
const condLockLost amqp.ErrCond = "com.microsoft:message-lock-lost"

// c2dDelivery is a message delivered to Config.Messages and not settled.
type c2dDelivery struct {
	r   *amqp.Receiver
	msg *amqp.Message
}

// SubscribeMessages attaches the cloud-to-device link and returns once the
// hub has answered the attach; messages then go to Config.Messages. A
// second call does nothing. Modules cannot receive cloud-to-device
// messages: IoT Hub refuses the link.
func (c *conn) SubscribeMessages(ctx context.Context) error {
	c.msgMu.Lock()
	defer c.msgMu.Unlock()
	c.mu.Lock()
	subscribed, ended := c.c2dR != nil, c.ended
	c.mu.Unlock()
	if ended {
		return c.lost("SubscribeMessages")
	}
	if subscribed {
		return nil
	}
	sess, err := c.sess("SubscribeMessages")
	if err != nil {
		return err
	}
	second := amqp.ReceiverSettleModeSecond
	name := c.newLinkName("c2d-receiver", linkC2D)
	r, err := sess.NewReceiver(ctx, c.address("/messages/devicebound"), &amqp.ReceiverOptions{
		Name:           name,
		Properties:     c.linkProperties("c2d"),
		Credit:         c2dCredit,
		SettlementMode: &second,
		MaxMessageSize: MaxMessageSize,
	})
	if err != nil {
		c.mu.Lock()
		delete(c.links, name)
		c.mu.Unlock()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return wrap("attaching the cloud-to-device link", err)
	}
	rctx, stop := context.WithCancel(c.life)
	c.mu.Lock()
	c.c2dR = r
	c.mu.Unlock()
	go c.receiveMessages(rctx, stop, r)
	return nil
}

// receiveMessages hands messages to Config.Messages until the connection
// ends or the link fails (which ends the connection: the client
// reconnects and subscribes again, and the hub delivers the unsettled
// messages again).
func (c *conn) receiveMessages(ctx context.Context, stop context.CancelFunc, r *amqp.Receiver) {
	defer stop()
	defer func() {
		c.mu.Lock()
		clear(c.c2dLocks)
		c.mu.Unlock()
	}()
	for {
		msg, err := r.Receive(ctx, nil)
		if err != nil {
			if ctx.Err() == nil {
				c.fail(fmt.Errorf("cloud-to-device link: %w", err))
			}
			return
		}
		if c.messages == nil {
			continue // left unsettled: the hub delivers it again later
		}
		cm := cloudMessage(msg)
		cm.LockToken = newUUID().String()
		c.mu.Lock()
		if c.ended {
			c.mu.Unlock()
			return
		}
		if c.c2dLocks == nil {
			c.c2dLocks = map[string]c2dDelivery{}
		}
		c.c2dLocks[cm.LockToken] = c2dDelivery{r: r, msg: msg}
		c.mu.Unlock()
		c.messages(cm)
	}
}

// ReceiveMessage returns an error wrapping transport.ErrUnsupported: over
// AMQP the hub pushes messages (SubscribeMessages).
func (c *conn) ReceiveMessage(context.Context) (*transport.CloudMessage, error) {
	return nil, fmt.Errorf("%w: amqp: the hub pushes cloud-to-device messages (SubscribeMessages); polling is HTTPS only", transport.ErrUnsupported)
}

// SettleMessage completes (accepted), rejects (rejected) or abandons
// (released) the message delivered with lockToken, and waits for the
// hub's answer. A token this connection did not deliver, or settled
// already, and a message the hub no longer holds (its lock expired, the
// link or connection it came on ended) give an error wrapping
// transport.ErrLockLost.
func (c *conn) SettleMessage(ctx context.Context, lockToken string, d transport.Disposition) error {
	if d != transport.Complete && d != transport.Reject && d != transport.Abandon {
		return fmt.Errorf("iothub: amqp: SettleMessage: unknown disposition %v", d)
	}
	c.mu.Lock()
	del, ok := c.c2dLocks[lockToken]
	delete(c.c2dLocks, lockToken)
	c.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: amqp: no unsettled cloud-to-device message has lock token %q", transport.ErrLockLost, lockToken)
	}
	var err error
	switch d {
	case transport.Complete:
		err = del.r.AcceptMessage(ctx, del.msg)
	case transport.Reject:
		err = del.r.RejectMessage(ctx, del.msg, nil)
	default:
		err = del.r.ReleaseMessage(ctx, del.msg)
	}
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ae *amqp.Error
	var le *amqp.LinkError
	var ce *amqp.ConnError
	switch {
	case errors.As(err, &ae) && ae.Condition == condLockLost,
		errors.As(err, &le), errors.As(err, &ce):
		// The hub released the message when the link ended.
		return fmt.Errorf("%w: amqp: %s: %v", transport.ErrLockLost, d, err)
	}
	return wrap(d.String()+" cloud-to-device message", err)
}

// cloudMessage converts a delivered message: the properties as the
// service sent them, iothub-ack, the hub's annotations
// (iothub-enqueuedtime, iothub-deliverycount) and the other application
// properties, as text.
func cloudMessage(msg *amqp.Message) *transport.CloudMessage {
	cm := &transport.CloudMessage{}
	for _, d := range msg.Data {
		cm.Body = append(cm.Body, d...)
	}
	if cm.Body == nil {
		switch v := msg.Value.(type) {
		case string:
			cm.Body = []byte(v)
		case []byte:
			cm.Body = v
		}
	}
	if p := msg.Properties; p != nil {
		cm.MessageID = idText(p.MessageID)
		cm.CorrelationID = idText(p.CorrelationID)
		cm.UserID = string(p.UserID)
		cm.To = deref(p.To)
		cm.ContentType = deref(p.ContentType)
		cm.ContentEncoding = deref(p.ContentEncoding)
		if p.AbsoluteExpiryTime != nil {
			cm.ExpiryTime = *p.AbsoluteExpiryTime
		}
	}
	if v, ok := annotation(msg, "iothub-enqueuedtime"); ok {
		if t, ok := v.(time.Time); ok {
			cm.EnqueuedTime = t
		}
	}
	if v, ok := annotation(msg, "iothub-deliverycount"); ok {
		if n, ok := toInt(v); ok {
			cm.DeliveryCount = int(n)
		}
	} else if msg.Header != nil {
		cm.DeliveryCount = int(msg.Header.DeliveryCount)
	}
	for k, v := range msg.ApplicationProperties {
		s := propText(v)
		if k == "iothub-ack" {
			cm.Ack = s
			continue
		}
		if cm.Properties == nil {
			cm.Properties = make(map[string]string, len(msg.ApplicationProperties))
		}
		cm.Properties[k] = s
	}
	return cm
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// idText renders a message-id or correlation-id as text.
func idText(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case amqp.UUID:
		return v.String()
	case uint64:
		return strconv.FormatUint(v, 10)
	case []byte:
		return hex.EncodeToString(v)
	}
	return fmt.Sprint(v)
}

// propText renders an application property value as text.
func propText(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case amqp.Symbol:
		return string(v)
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprint(v)
}
