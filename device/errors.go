package device

import (
	"errors"

	"github.com/iothub-go/iothub/transport"
)

// The errors of this package. Test for them with errors.Is (the message
// text is not part of the API): the client's methods return them or wrap
// them. The transport errors are the values of package transport, under the
// same names, so a device program need not import it; errors.Is matches
// either name.
var (
	// ErrClosed is returned by every method of a closed client but Close,
	// and by a Connect that Close ended.
	ErrClosed = errors.New("iothub: client closed")
	// ErrAlreadyConnected is returned by Connect on a client that is
	// connected, connecting or reconnecting.
	ErrAlreadyConnected = errors.New("iothub: the client is already connected")
	// ErrNotConnected is returned by SendEvent when the client is not
	// connected and will not be: Connect was not called, or the client
	// gave up reconnecting.
	ErrNotConnected = errors.New("iothub: the client is not connected")
	// ErrInvalidOptions is wrapped by the constructors' errors when
	// ClientOptions are invalid or do not fit the credentials (an option
	// set where it would have no effect, or a setting given twice with
	// different values), and by SetMethodHandler's when WrapHandler
	// returns nil. The rest of the message says which option.
	ErrInvalidOptions = errors.New("iothub: invalid client options")
	// ErrPayloadTooLarge is wrapped by JSONResponse's error when the
	// encoded payload exceeds MaxPayloadSize.
	ErrPayloadTooLarge = errors.New("iothub: method payload exceeds 128 KB")

	// ErrNotAuthorized is wrapped by Connect's error when the hub refused
	// the credentials three times (each time with a newly minted token),
	// and by SendEvent's over HTTPS. transport.ErrNotAuthorized.
	ErrNotAuthorized = transport.ErrNotAuthorized
	// ErrUnsupported is wrapped by SetMethodHandler's and
	// SetDefaultMethodHandler's errors on a transport that cannot receive
	// direct methods (HTTPS). transport.ErrUnsupported.
	ErrUnsupported = transport.ErrUnsupported
	// ErrMessageTooLarge is wrapped by SendEvent's error when the message
	// is larger than MaxMessageSize (nothing is sent), or the hub refused
	// it as too large. transport.ErrMessageTooLarge.
	ErrMessageTooLarge = transport.ErrMessageTooLarge
	// ErrInvalidProperty is wrapped by SendEvent's error when a property
	// cannot be sent: an empty name, a character HTTPS does not allow
	// (only ASCII letters, digits and !#$%&'*+-.^_`|~), or, over MQTT,
	// properties that make the topic longer than 65,535 bytes. Nothing is
	// sent. transport.ErrInvalidProperty.
	ErrInvalidProperty = transport.ErrInvalidProperty
	// ErrThrottled is wrapped by SendEvent's error when the hub throttles
	// the device (HTTPS 429); sending again later may succeed.
	// transport.ErrThrottled.
	ErrThrottled = transport.ErrThrottled
	// ErrServiceUnavailable is wrapped by SendEvent's error when the hub is
	// unavailable (HTTPS 503); sending again later may succeed.
	// transport.ErrServiceUnavailable.
	ErrServiceUnavailable = transport.ErrServiceUnavailable
	// ErrLockLost is wrapped by SettleMessage's error when the hub no
	// longer holds the message for the device: its one-minute lock
	// expired, it was settled already, or the connection it came on has
	// ended. The hub delivers it again (unless it expired).
	// transport.ErrLockLost.
	ErrLockLost = transport.ErrLockLost
)
