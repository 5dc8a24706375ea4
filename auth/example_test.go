package auth_test

import (
	"context"
	"fmt"
	"time"

	"github.com/iothub-go/iothub/auth"
)

// A module connection string. String redacts the key, so the parsed value
// is safe to log.
func ExampleParseDeviceConnectionString() {
	c, err := auth.ParseDeviceConnectionString(
		"HostName=myhub.azure-devices.net;DeviceId=dev1;ModuleId=mod1;" +
			"SharedAccessKey=aW90aHViLXRlc3Qta2V5LTAzLTAxMjM0NTY3ODlhYmNkZWY=")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c)
	fmt.Println(c.Identity())
	fmt.Println(c.Identity().Resource())
	// Output:
	// HostName=myhub.azure-devices.net;DeviceId=dev1;ModuleId=mod1;SharedAccessKey=<redacted>
	// dev1/mod1
	// myhub.azure-devices.net/devices/dev1/modules/mod1
}

// The token for the protocol's test-vector shape: device my_device of hub
// myiothub, expiring at Unix time 1578941692.
func ExampleSignSAS() {
	tok, err := auth.SignSAS(
		auth.DeviceResource("myiothub.azure-devices.net", "my_device"),
		"", // a device key: no skn
		"aW90aHViLXRlc3Qta2V5LTAzLTAxMjM0NTY3ODlhYmNkZWY=",
		time.Unix(1578941692, 0),
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(tok)
	// Output:
	// SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device&sig=FKtjLzE%2FvYEYCjrUKInBemmf7qXk%2B0v%2BSPHMB6HhppA%3D&se=1578941692
}

// Reading a token: what it covers, which policy signed it (none for a
// device key) and when it expires. The signature stays redacted; checking
// it needs the key, which is the hub's job.
func ExampleParseSAS() {
	tok, err := auth.ParseSAS("SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device" +
		"&sig=FKtjLzE%2FvYEYCjrUKInBemmf7qXk%2B0v%2BSPHMB6HhppA%3D&se=1578941692")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(tok)
	fmt.Println(tok.Resource)
	fmt.Printf("policy %q\n", tok.KeyName)
	fmt.Println(tok.Expiry.Format(time.RFC3339))
	// Output:
	// SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device&sig=<redacted>&se=1578941692
	// myiothub.azure-devices.net/devices/my_device
	// policy ""
	// 2020-01-13T18:54:52Z
}

// A provider mints a one-hour token and asks for renewal 9 minutes before
// it expires. Now is fixed here; leave it nil in real code.
func ExampleKeyTokenProvider() {
	now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	p, err := auth.NewKeyTokenProvider(
		auth.DeviceResource("myhub.azure-devices.net", "dev1"), "",
		"aW90aHViLXRlc3Qta2V5LTAzLTAxMjM0NTY3ODlhYmNkZWY=",
		&auth.TokenOptions{Now: func() time.Time { return now }},
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	tok, err := p.Token(context.Background())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(p)
	fmt.Println(tok)
	fmt.Println("renew at", tok.RenewAt.Format(time.RFC3339))
	fmt.Println("renew now?", tok.ShouldRenew(now))
	fmt.Println(tok.Value)
	// Output:
	// KeyTokenProvider(myhub.azure-devices.net/devices/dev1)
	// SAS token <redacted> expiring 2026-03-01T11:00:00Z
	// renew at 2026-03-01T10:51:00Z
	// renew now? false
	// SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1&sig=2M6%2F5BLZOAGoE%2F1vutyJ0TMn93ezB6vcLjzpmtKg9sU%3D&se=1772362800
}
