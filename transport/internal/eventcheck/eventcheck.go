// Package eventcheck holds the checks every device transport makes on a
// device-to-cloud message before it sends anything, so that the three
// refuse the same messages with the same sentinels.
package eventcheck

import (
	"fmt"

	"github.com/iothub-go/iothub/transport"
)

// Check returns an error wrapping transport.ErrMessageTooLarge when msg is
// larger than transport.MaxMessageSize, or transport.ErrInvalidProperty
// when a property has an empty name; nil otherwise.
func Check(msg *transport.Message) error {
	if n := msg.Size(); n > transport.MaxMessageSize {
		return fmt.Errorf("%w: the message is %d bytes; the limit is %d", transport.ErrMessageTooLarge, n, transport.MaxMessageSize)
	}
	if _, ok := msg.Properties[""]; ok {
		return fmt.Errorf("%w: empty property name", transport.ErrInvalidProperty)
	}
	return nil
}
