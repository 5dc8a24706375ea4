// Package transport is the contract between the device client and the
// protocols it speaks: a stateless [Transport] dials one authenticated
// connection, a [Conn], which carries direct methods, device twins and
// device-to-cloud messages until it ends. Reconnecting, token renewal and handler dispatch
// live once, above every transport, in package device.
//
// A device program chooses one of three implementations and passes it in
// device.ClientOptions; it never calls a Conn itself:
//
//   - transport/mqtt: MQTT 3.1.1 over TLS (port 8883), or over WebSocket
//     (port 443) with Options.WebSocket. Direct methods, twins and
//     telemetry.
//   - transport/amqp: AMQP 1.0 over TLS (port 5671), or over WebSocket
//     (port 443) with Options.WebSocket. Direct methods, twins and
//     telemetry; a SAS token is renewed on the live connection.
//   - transport/http: HTTPS (port 443). Telemetry only: IoT Hub never
//     delivers direct methods or twins to devices over HTTPS, so method
//     handlers and twin calls are refused with an error wrapping
//     [ErrUnsupported].
//
// # Errors
//
// Errors are tested with errors.Is against the sentinels of this package,
// which the three transports wrap alike: [ErrNotAuthorized] (credentials
// refused), [ErrUnsupported] (not possible over this protocol),
// [ErrMessageTooLarge] and [ErrInvalidProperty] (a message SendEvent
// refuses before sending anything, or that the hub refused), and, for the
// hub's HTTPS answers 429 and 503, [ErrThrottled] and
// [ErrServiceUnavailable] (send again later). A twin request the hub
// answers with an error status gives a [*HubError], which also matches the
// sentinel of its status. The text of an error is not part of the API.
//
// # Writing a transport
//
// [Transport] and [Conn] are public so that a program can bring its own
// protocol stack, such as a gateway or a test double. They are a contract
// that may grow in minor releases: device twins, cloud-to-device messages
// and a pooled AMQP transport will add methods to them. An implementation
// outside this module must therefore embed [UnimplementedConn] in its Conn
// and [UnimplementedTransport] in its Transport. A method added later is
// then answered by the embedded default, with an error wrapping
// ErrUnsupported, and the implementation keeps compiling. Existing methods
// keep their signatures and meaning within a major version.
package transport

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/iothub-go/iothub/auth"
)

// ErrNotAuthorized is wrapped by errors that mean the hub refused the
// credentials: Dial errors (MQTT CONNACK 4 or 5, AMQP 401) and, over HTTPS,
// SendEvent errors for a 401 answer. Retrying with the same credentials
// will not succeed.
var ErrNotAuthorized = errors.New("iothub: not authorized by the hub")

// ErrUnsupported is wrapped when a transport cannot do what was asked, e.g.
// receive direct methods over HTTPS. [UnimplementedConn] and
// [UnimplementedTransport] answer with it.
var ErrUnsupported = errors.New("iothub: not supported by this transport")

// ErrLockLost is wrapped by SettleMessage's error when the hub no longer
// holds the message under that lock token: the lock expired (after a
// minute), the message was settled already, or it expired (HTTPS 412,
// 412002 DeviceMessageLockLost). The message may be delivered again.
var ErrLockLost = errors.New("iothub: the message lock was lost")

// ErrMessageTooLarge is wrapped by SendEvent's error when the message is
// larger than [MaxMessageSize] (as [Message.Size] counts it): every
// transport checks before sending, and sends nothing then. The hub's own
// refusal of a message as too large (HTTP 413, AMQP
// amqp:link:message-size-exceeded) matches it too.
var ErrMessageTooLarge = errors.New("iothub: message too large")

// ErrInvalidProperty is wrapped by SendEvent's error when a message
// property cannot be sent over the transport: an empty name (every
// transport), a character HTTPS does not allow in a header
// (transport/http), or properties that do not fit in an MQTT topic
// (mqtt.ErrTopicTooLong). Nothing is sent then.
var ErrInvalidProperty = errors.New("iothub: invalid message property")

// ErrHubMessageTooLarge is wrapped by the error of a connection that the
// hub sent more than the transport accepts from it (mqtt.MaxPacketSize,
// amqp.MaxMessageSize), seen in the device client's connection status; the
// client then reconnects. It is about what the hub sends, unlike
// [ErrMessageTooLarge], which is about what the device sends.
var ErrHubMessageTooLarge = errors.New("iothub: the hub sent a message larger than the transport accepts")

// HubError is the hub's refusal, with a status, of a device request that
// the protocol answers with one: the twin operations over MQTT
// ($iothub/twin/res/{status}) and AMQP (the status annotation). Test for it
// with errors.As; errors.Is also matches the sentinel its status means (see
// Unwrap).
type HubError struct {
	Op      string // the operation: "GetTwin", "UpdateReported", "SubscribeDesired"
	Status  int    // the hub's status, e.g. 400 or 429
	Message string // the start of the hub's answer, if it sent text; may be empty
}

func (e *HubError) Error() string {
	msg := fmt.Sprintf("iothub: %s: the hub answered %d", e.Op, e.Status)
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Unwrap returns the sentinel the status means, so that errors.Is matches
// it: 401 ErrNotAuthorized, 413 ErrMessageTooLarge, 429 ErrThrottled, 503
// ErrServiceUnavailable; nil for other statuses.
func (e *HubError) Unwrap() error {
	switch e.Status {
	case 401:
		return ErrNotAuthorized
	case 413:
		return ErrMessageTooLarge
	case 429:
		return ErrThrottled
	case 503:
		return ErrServiceUnavailable
	}
	return nil
}

// ErrThrottled is wrapped by SendEvent's error when the hub throttles the
// device (HTTPS 429, e.g. 429001 ThrottlingException). Sending again later
// may succeed.
var ErrThrottled = errors.New("iothub: throttled by the hub")

// ErrServiceUnavailable is wrapped by SendEvent's error when the hub is
// unavailable or busy (HTTPS 503). Sending again later may succeed.
var ErrServiceUnavailable = errors.New("iothub: the hub is unavailable")

// Config is what a transport needs to open one connection.
type Config struct {
	// Identity is the device or module; Identity.HostName is the hub's host
	// name (the SAS audience and the MQTT username's host).
	Identity auth.Identity
	// Address is where to connect: "host" or "host:port". Without a port
	// the transport uses its standard one (8883, 5671 or 443).
	Address string
	// Token is the SAS token to present; "" when TLSConfig carries an X.509
	// client certificate.
	Token string
	// TLSConfig is the client TLS configuration (root CAs, client
	// certificate). Never nil; transports clone it before use.
	TLSConfig *tls.Config
	// ProductInfo names the client software, e.g. "iothub-go/0.1.0".
	ProductInfo string
	// Logger receives transport events; never nil.
	Logger *slog.Logger
	// Methods receives the direct method requests the connection carries.
	// It must be in place from the moment the connection opens: with a
	// persistent MQTT session the hub may deliver a request between
	// CONNACK and the SUBACK of SubscribeMethods. It is called from the
	// connection's read loop and must not block. nil drops requests.
	Methods func(*MethodRequest)
	// Desired receives the desired-property patches the hub pushes once
	// SubscribeDesired succeeded: each the JSON object the hub sent,
	// "$version" included. Like Methods it is in place from the moment the
	// connection opens, is called from the read loop in the order the hub
	// sent the patches, and must not block. nil drops them.
	Desired func(patch []byte)
	// Messages receives the cloud-to-device messages the hub pushes once
	// SubscribeMessages succeeded (MQTT, AMQP). The receiver settles each
	// with SettleMessage and its LockToken. Like Methods it is in place
	// from the moment the connection opens (a persistent MQTT session may
	// deliver before the SUBACK), is called from the read loop in the
	// order the hub sent the messages, and must not block. nil leaves them
	// unsettled: the hub delivers them again later.
	Messages func(*CloudMessage)
	// ModelID is the IoT Plug and Play model id (a DTMI such as
	// "dtmi:com:example:Thermostat;1") the device announces when it
	// connects, as the official SDKs do: in the MQTT user name
	// (model-id=...) and, over AMQP, as the attach property
	// com.microsoft:model-id of every link the device sends on. Empty
	// announces none.
	ModelID string
}

// String describes the configuration without its secrets: the SAS token
// and the TLS configuration (which may hold a client certificate's private
// key) show only whether they are set.
func (c Config) String() string {
	var b strings.Builder
	b.WriteString("transport.Config{Identity: ")
	b.WriteString(c.Identity.String())
	b.WriteString(", HostName: ")
	b.WriteString(c.Identity.HostName)
	b.WriteString(", Address: ")
	b.WriteString(strconv.Quote(c.Address))
	b.WriteString(", Token: ")
	if c.Token != "" {
		b.WriteString("<redacted>")
	} else {
		b.WriteString(`""`)
	}
	b.WriteString(", TLSConfig: ")
	switch {
	case c.TLSConfig == nil:
		b.WriteString("nil")
	case len(c.TLSConfig.Certificates) > 0 || c.TLSConfig.GetClientCertificate != nil:
		b.WriteString("set, with a client certificate <redacted>")
	default:
		b.WriteString("set")
	}
	b.WriteString(", ProductInfo: ")
	b.WriteString(strconv.Quote(c.ProductInfo))
	b.WriteString("}")
	return b.String()
}

// GoString is String, so %#v shows no secret either.
func (c Config) GoString() string { return c.String() }

// Format writes String for every verb and flag (%v, %+v, %#v, %s, …),
// so that no formatting of a Config, or of a struct holding one, prints
// the token or a private key.
func (c Config) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, c.String()) }

// Transport opens device connections. It holds no connection state and is
// safe for concurrent use.
//
// Transport may gain methods in minor releases; an implementation outside
// this module must embed [UnimplementedTransport] (see the package
// documentation).
type Transport interface {
	// Dial opens and authenticates one connection. It does not retry.
	Dial(ctx context.Context, cfg Config) (Conn, error)
	// Name names the protocol for logs and status, e.g. "mqtt" or "mqtt-ws".
	Name() string
	// MethodSupport returns nil if the protocol can receive direct
	// methods, or an error wrapping ErrUnsupported that says why not.
	MethodSupport() error
	// TwinSupport returns nil if the protocol carries device twins, or an
	// error wrapping ErrUnsupported that says why not.
	TwinSupport() error
}

// Conn is one live connection, owned by one device client, which calls its
// methods from several goroutines at once.
//
// Conn may gain methods in minor releases (device twins and
// cloud-to-device messages will add some); an implementation outside this
// module must embed [UnimplementedConn] (see the package documentation).
type Conn interface {
	// SubscribeMethods subscribes to direct methods, which then go to
	// Config.Methods, and returns once the hub has confirmed the
	// subscription (MQTT SUBACK, AMQP method links attached).
	SubscribeMethods(ctx context.Context) error
	// UnsubscribeMethods ends the subscription and returns once the hub has
	// confirmed (MQTT UNSUBACK, AMQP method links detached); the hub then
	// answers calls with 404103, device not online. It is a no-op on a
	// connection that is not subscribed.
	UnsubscribeMethods(ctx context.Context) error
	// RespondMethod sends the answer to request requestID. resp is the
	// caller's again once RespondMethod returns: keep nothing of it but
	// its Payload.
	RespondMethod(ctx context.Context, requestID string, resp *MethodResponse) error
	// SendEvent sends one device-to-cloud message and returns once the hub
	// has accepted it (MQTT PUBACK, AMQP accepted disposition, HTTP 204).
	// A message it refuses without sending gives an error wrapping
	// ErrMessageTooLarge or ErrInvalidProperty.
	SendEvent(ctx context.Context, msg *Message) error
	// GetTwin reads the twin as the device sees it and returns the hub's
	// JSON: {"desired":{...,"$version":n},"reported":{...,"$version":m}}.
	GetTwin(ctx context.Context) ([]byte, error)
	// UpdateReported sends a reported-properties patch (a JSON object;
	// null members delete) and returns the reported $version the hub
	// answered with.
	UpdateReported(ctx context.Context, patch []byte) (version int64, err error)
	// SubscribeDesired subscribes to desired-property patches, which then
	// go to Config.Desired, and returns once the hub has confirmed (MQTT
	// SUBACK, AMQP PUT on the twin links answered). The hub does not send
	// what changed before: the caller reads the twin afterwards.
	SubscribeDesired(ctx context.Context) error
	// SubscribeMessages subscribes to cloud-to-device messages, which then
	// go to Config.Messages, and returns once the hub has confirmed (MQTT
	// SUBACK, AMQP receiver link attached). Over HTTPS, where the device
	// polls with ReceiveMessage, it returns an error wrapping
	// ErrUnsupported.
	SubscribeMessages(ctx context.Context) error
	// ReceiveMessage polls the hub for the next cloud-to-device message
	// (HTTPS): it returns the message, locked for the device until it is
	// settled or the lock expires, or nil and no error when the queue is
	// empty. MQTT and AMQP, where the hub pushes, return an error wrapping
	// ErrUnsupported.
	ReceiveMessage(ctx context.Context) (*CloudMessage, error)
	// SettleMessage completes, rejects or abandons the message with that
	// lock token, and returns once the hub has confirmed where the
	// protocol confirms (HTTPS 204; AMQP and MQTT settle without an
	// answer). MQTT can only complete (PUBACK): Reject and Abandon return
	// an error wrapping ErrUnsupported and leave the message unsettled,
	// so that the hub delivers it again after a reconnect. A lock the hub
	// no longer holds gives an error wrapping ErrLockLost (HTTPS).
	SettleMessage(ctx context.Context, lockToken string, d Disposition) error
	// Done is closed when the connection has ended, by Close or by loss.
	Done() <-chan struct{}
	// Err says why the connection ended; nil before it ends and after Close.
	Err() error
	// Close ends the connection. It is safe to call more than once.
	Close() error
}

// UnimplementedConn must be embedded, by value, in every [Conn]
// implemented outside this module, so that the implementation keeps
// compiling when Conn gains methods. Each method it provides answers as a
// connection that can do nothing: SubscribeMethods, UnsubscribeMethods,
// RespondMethod, SendEvent, GetTwin, UpdateReported and SubscribeDesired
// return an error wrapping [ErrUnsupported]; Done returns a closed channel
// and Err such an error, so a Conn that leaves those two to it is seen as ended at once; Close returns nil. An
// implementation overrides what its protocol does, and always Done, Err
// and Close.
type UnimplementedConn struct{}

// SubscribeMethods returns an error wrapping ErrUnsupported.
func (UnimplementedConn) SubscribeMethods(context.Context) error {
	return unimplemented("SubscribeMethods")
}

// UnsubscribeMethods returns an error wrapping ErrUnsupported.
func (UnimplementedConn) UnsubscribeMethods(context.Context) error {
	return unimplemented("UnsubscribeMethods")
}

// RespondMethod returns an error wrapping ErrUnsupported.
func (UnimplementedConn) RespondMethod(context.Context, string, *MethodResponse) error {
	return unimplemented("RespondMethod")
}

// SendEvent returns an error wrapping ErrUnsupported.
func (UnimplementedConn) SendEvent(context.Context, *Message) error {
	return unimplemented("SendEvent")
}

// Done returns a closed channel.
func (UnimplementedConn) Done() <-chan struct{} { return closed }

// Err returns an error wrapping ErrUnsupported.
func (UnimplementedConn) Err() error { return unimplemented("Conn") }

// Close returns nil.
func (UnimplementedConn) Close() error { return nil }

// GetTwin returns an error wrapping ErrUnsupported.
func (UnimplementedConn) GetTwin(context.Context) ([]byte, error) {
	return nil, unimplemented("GetTwin")
}

// UpdateReported returns an error wrapping ErrUnsupported.
func (UnimplementedConn) UpdateReported(context.Context, []byte) (int64, error) {
	return 0, unimplemented("UpdateReported")
}

// SubscribeDesired returns an error wrapping ErrUnsupported.
func (UnimplementedConn) SubscribeDesired(context.Context) error {
	return unimplemented("SubscribeDesired")
}

// SubscribeMessages returns an error wrapping ErrUnsupported.
func (UnimplementedConn) SubscribeMessages(context.Context) error {
	return unimplemented("SubscribeMessages")
}

// ReceiveMessage returns an error wrapping ErrUnsupported.
func (UnimplementedConn) ReceiveMessage(context.Context) (*CloudMessage, error) {
	return nil, unimplemented("ReceiveMessage")
}

// SettleMessage returns an error wrapping ErrUnsupported.
func (UnimplementedConn) SettleMessage(context.Context, string, Disposition) error {
	return unimplemented("SettleMessage")
}

// UnimplementedTransport must be embedded, by value, in every [Transport]
// implemented outside this module, so that the implementation keeps
// compiling when Transport gains methods. Dial, MethodSupport and
// TwinSupport return an error wrapping [ErrUnsupported], and Name returns
// "unimplemented". An implementation overrides Dial and Name, and
// MethodSupport and TwinSupport for what it carries.
type UnimplementedTransport struct{}

// Dial returns an error wrapping ErrUnsupported.
func (UnimplementedTransport) Dial(context.Context, Config) (Conn, error) {
	return nil, unimplemented("Dial")
}

// Name returns "unimplemented".
func (UnimplementedTransport) Name() string { return "unimplemented" }

// MethodSupport returns an error wrapping ErrUnsupported.
func (UnimplementedTransport) MethodSupport() error { return unimplemented("direct methods") }

// TwinSupport returns an error wrapping ErrUnsupported.
func (UnimplementedTransport) TwinSupport() error { return unimplemented("device twins") }

var closed = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

func unimplemented(what string) error {
	return fmt.Errorf("%w: %s is not implemented", ErrUnsupported, what)
}

// TokenUpdater is implemented by connections that can present a renewed SAS
// token without reconnecting (AMQP's CBS put-token). Connections without it
// are renewed by reconnecting.
type TokenUpdater interface {
	UpdateToken(ctx context.Context, token string) error
}

// MethodRequest is one direct method call as the device receives it.
type MethodRequest struct {
	// Name is the method name.
	Name string
	// RequestID is the hub's id for this call; the answer must carry it.
	RequestID string
	// Payload is the JSON text of the caller's payload, byte for byte. A
	// caller that sent JSON null gives the four bytes "null" (the Go and
	// .NET service clients send null when no payload is set); a caller that
	// sent no payload member at all, as the Azure portal and the az CLI do,
	// gives an empty Payload.
	Payload json.RawMessage
}

// MethodResponse is a device's answer to a direct method call.
type MethodResponse struct {
	// Status is the status the device reports (any integer; not an HTTP
	// status of the hub).
	Status int
	// Payload is the JSON answer; empty means none (the caller sees null).
	Payload json.RawMessage
}

// Disposition is how a device settles a cloud-to-device message.
type Disposition int

// The dispositions of a cloud-to-device message, as IoT Hub defines them.
const (
	// Complete removes the message from the device's queue (and sends
	// positive feedback when the sender asked for it).
	Complete Disposition = iota + 1
	// Reject removes the message without processing it: it is dead-lettered
	// (negative feedback "Rejected" when asked for).
	Reject
	// Abandon puts the message back in the queue for another delivery;
	// its delivery count grows, and past the hub's maximum the message is
	// dead-lettered ("DeliveryCountExceeded").
	Abandon
)

// String returns "complete", "reject" or "abandon".
func (d Disposition) String() string {
	switch d {
	case Complete:
		return "complete"
	case Reject:
		return "reject"
	case Abandon:
		return "abandon"
	}
	return "Disposition(" + strconv.Itoa(int(d)) + ")"
}

// MaxCloudMessageSize is the largest cloud-to-device message IoT Hub
// accepts: 64 KB.
const MaxCloudMessageSize = 64 * 1024

// CloudMessage is a cloud-to-device message as the device receives it.
type CloudMessage struct {
	// Body is the payload, any bytes.
	Body []byte
	// MessageID, CorrelationID, UserID, To, ContentType and
	// ContentEncoding are the message's system properties; "" when absent.
	MessageID       string
	CorrelationID   string
	UserID          string
	To              string
	ContentType     string
	ContentEncoding string
	// Ack is the feedback the sender asked for: "none", "positive",
	// "negative" or "full"; "" when absent.
	Ack string
	// ExpiryTime is when the hub drops the message; zero when unknown.
	ExpiryTime time.Time
	// EnqueuedTime is when the hub queued it; zero when unknown.
	EnqueuedTime time.Time
	// DeliveryCount counts the earlier deliveries of this message.
	DeliveryCount int
	// Properties are the application properties.
	Properties map[string]string
	// LockToken names this delivery for SettleMessage.
	LockToken string
}

// MaxMessageSize is the largest device-to-cloud message IoT Hub accepts:
// 256 KB of body, property names and property values together, as
// [Message.Size] counts them. It is the same limit as device.MaxMessageSize.
// SendEvent refuses a larger message with [ErrMessageTooLarge].
const MaxMessageSize = 256 * 1024

// Message is a device-to-cloud message (telemetry).
type Message struct {
	// Body is the payload, any bytes.
	Body []byte
	// MessageID and CorrelationID are the message's system properties
	// message-id and correlation-id; "" omits them.
	MessageID     string
	CorrelationID string
	// ContentType and ContentEncoding describe the body (e.g.
	// "application/json" and "utf-8"); IoT Hub routing reads them.
	ContentType     string
	ContentEncoding string
	// Properties are application properties.
	Properties map[string]string
}

// Size returns the message's size as IoT Hub counts it against
// MaxMessageSize: the body plus every property name and value.
func (m *Message) Size() int {
	n := len(m.Body) + len(m.MessageID) + len(m.CorrelationID) + len(m.ContentType) + len(m.ContentEncoding)
	for k, v := range m.Properties {
		n += len(k) + len(v)
	}
	return n
}
