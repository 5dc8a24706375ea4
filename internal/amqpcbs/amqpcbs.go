// Package amqpcbs holds what the device AMQP transport and the service
// client's AMQP connection share: the CBS put-token exchange on the $cbs
// node, by which both authenticate an AMQP connection without SASL, and
// the small AMQP helpers it needs. Attaching the $cbs links, and what a
// refused token means, stay with each caller.
package amqpcbs

import (
	"context"
	"crypto/rand"
	"fmt"

	amqp "github.com/Azure/go-amqp"
)

// Address is the address of the CBS node, the target of put-token
// requests and the source of their replies.
const Address = "$cbs"

// TokenType is the put-token type the Node and C SDKs send, for SAS and
// bearer tokens alike.
const TokenType = "servicebus.windows.net:sastoken"

// Request returns a put-token request that presents token, of type typ,
// for audience name, and its message-id, which the reply carries as its
// correlation-id.
func Request(typ, name, token string) (req *amqp.Message, id string) {
	id = NewUUID().String()
	to, reply := Address, "cbs"
	return &amqp.Message{
		Properties:            &amqp.MessageProperties{MessageID: id, To: &to, ReplyTo: &reply},
		ApplicationProperties: map[string]any{"operation": "put-token", "type": typ, "name": name},
		Value:                 token,
	}, id
}

// Reply receives on in until the reply to the request with message-id id
// arrives, accepting every message and passing over replies to earlier
// requests, and returns its status-code and status-description (0 and ""
// when missing). The error is Receive's, as it is.
func Reply(ctx context.Context, in *amqp.Receiver, id string) (code int64, desc string, err error) {
	for {
		resp, err := in.Receive(ctx, nil)
		if err != nil {
			return 0, "", err
		}
		_ = in.AcceptMessage(ctx, resp)
		if resp.Properties == nil || fmt.Sprint(resp.Properties.CorrelationID) != id {
			continue // a reply to an earlier request
		}
		code, _ = ToInt(resp.ApplicationProperties["status-code"])
		desc, _ = resp.ApplicationProperties["status-description"].(string)
		return code, desc, nil
	}
}

// NewUUID returns a random (version 4) UUID.
func NewUUID() amqp.UUID {
	var u amqp.UUID
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

// ToInt returns an AMQP integer of any width as an int64 and true; it
// returns false for any other value, and for a uint64 above 2^62.
func ToInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int32:
		return int64(n), true
	case int64:
		return n, true
	case int:
		return int64(n), true
	case int16:
		return int64(n), true
	case int8:
		return int64(n), true
	case uint32:
		return int64(n), true
	case uint16:
		return int64(n), true
	case uint8:
		return int64(n), true
	case uint64:
		if n <= 1<<62 {
			return int64(n), true
		}
	}
	return 0, false
}
