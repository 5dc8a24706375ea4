package hubauth_test

import (
	"fmt"
	"time"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hubauth"
)

// The hub's side: parse a presented token and check it for the identity it
// is used for, with the device's primary and secondary keys.
func ExampleSAS_Verify() {
	const primary = "aW90aHViLXRlc3Qta2V5LTAzLTAxMjM0NTY3ODlhYmNkZWY="
	const secondary = "c2Vjb25kYXJ5LWtleS1mb3ItaW90aHViLXRlc3RzISE="
	tok, err := hubauth.ParseSAS("SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device" +
		"&sig=FKtjLzE%2FvYEYCjrUKInBemmf7qXk%2B0v%2BSPHMB6HhppA%3D&se=1578941692")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(tok) // the signature is redacted
	now := time.Unix(1578941692, 0).Add(-time.Minute)
	fmt.Println(tok.Verify(auth.DeviceResource("myiothub.azure-devices.net", "my_device"), now, primary, secondary))
	fmt.Println(tok.Verify(auth.DeviceResource("myiothub.azure-devices.net", "my_device2"), now, primary, secondary))
	fmt.Println(tok.Verify(auth.DeviceResource("myiothub.azure-devices.net", "my_device"), now.Add(time.Hour), primary, secondary))
	// Output:
	// SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device&sig=<redacted>&se=1578941692
	// <nil>
	// iothub: SAS token is not valid for this resource: token is for "myiothub.azure-devices.net/devices/my_device", not "myiothub.azure-devices.net/devices/my_device2"
	// iothub: SAS token expired at 2020-01-13T18:54:52Z
}
