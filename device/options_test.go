package device_test

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/iothubtest"
)

// Each option has one meaning: an option that would have no effect, or a
// setting given twice with different values, is refused with
// ErrInvalidOptions instead of being ignored.
func TestOptionsRefused(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	sasCS := "HostName=hub.example;DeviceId=dev1;SharedAccessKey=" + key
	x509CS, cert := hub.AddX509Device(t, "x1")
	cred, err := authX509(cert)
	require.NoError(t, err)
	kp, err := auth.NewKeyTokenProvider("hub.example/devices/dev1", "", key, nil)
	require.NoError(t, err)
	tok, err := kp.Token(context.Background())
	require.NoError(t, err)
	fixedCS := "HostName=hub.example;DeviceId=dev1;SharedAccessSignature=" + tok.Value
	id := auth.Identity{HostName: "hub.example", DeviceID: "dev1"}
	sas := auth.TokenOptions{TTL: time.Hour}
	nilWrap := func(device.MethodHandler) device.MethodHandler { return nil }

	for _, tc := range []struct {
		name string
		new  func() (*device.Client, error)
	}{
		{"X509 with a SAS connection string", func() (*device.Client, error) {
			return device.NewClientFromConnectionString(sasCS, &device.ClientOptions{X509: cred})
		}},
		{"x509=true without X509", func() (*device.Client, error) {
			return device.NewClientFromConnectionString(x509CS, nil)
		}},
		{"SAS with an x509=true connection string", func() (*device.Client, error) {
			return device.NewClientFromConnectionString(x509CS, &device.ClientOptions{X509: cred, SAS: sas})
		}},
		{"SAS with a SharedAccessSignature connection string", func() (*device.Client, error) {
			return device.NewClientFromConnectionString(fixedCS, &device.ClientOptions{SAS: sas})
		}},
		{"GatewayHostName differing from the connection string's", func() (*device.Client, error) {
			return device.NewClientFromConnectionString(sasCS+";GatewayHostName=gw-a.example", &device.ClientOptions{GatewayHostName: "gw-b.example"})
		}},
		{"X509 with NewClient", func() (*device.Client, error) {
			return device.NewClient(id, kp, &device.ClientOptions{X509: cred})
		}},
		{"SAS with NewClient", func() (*device.Client, error) {
			return device.NewClient(id, kp, &device.ClientOptions{SAS: sas})
		}},
		{"X509 with NewClientWithX509", func() (*device.Client, error) {
			return device.NewClientWithX509(id, cred, &device.ClientOptions{X509: cred})
		}},
		{"SAS with NewClientWithX509", func() (*device.Client, error) {
			return device.NewClientWithX509(id, cred, &device.ClientOptions{SAS: sas})
		}},
		{"negative MaxConcurrentHandlers", func() (*device.Client, error) {
			return device.NewClientFromConnectionString(sasCS, &device.ClientOptions{MaxConcurrentHandlers: -1})
		}},
		{"WrapHandler returning nil", func() (*device.Client, error) {
			return device.NewClientFromConnectionString(sasCS, &device.ClientOptions{WrapHandler: nilWrap})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.new()
			require.ErrorIs(t, err, device.ErrInvalidOptions)
			assert.Nil(t, c)
			assert.True(t, strings.HasPrefix(err.Error(), "iothub: "), "error text %q", err)
		})
	}

	// The combinations that are meant to work.
	for _, tc := range []struct {
		name string
		new  func() (*device.Client, error)
	}{
		{"x509=true with X509", func() (*device.Client, error) {
			return device.NewClientFromConnectionString(x509CS, &device.ClientOptions{X509: cred})
		}},
		{"SAS with a SharedAccessKey connection string", func() (*device.Client, error) {
			return device.NewClientFromConnectionString(sasCS, &device.ClientOptions{SAS: sas})
		}},
		{"a SharedAccessSignature connection string", func() (*device.Client, error) {
			return device.NewClientFromConnectionString(fixedCS, nil)
		}},
		{"GatewayHostName equal to the connection string's, but for case", func() (*device.Client, error) {
			return device.NewClientFromConnectionString(sasCS+";GatewayHostName=GW.example", &device.ClientOptions{GatewayHostName: "gw.example"})
		}},
		{"NewClient with GatewayHostName", func() (*device.Client, error) {
			return device.NewClient(id, kp, &device.ClientOptions{GatewayHostName: "gw.example"})
		}},
		{"NewClientWithX509", func() (*device.Client, error) {
			return device.NewClientWithX509(id, cred, nil)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.new()
			require.NoError(t, err)
			require.NoError(t, c.Close(context.Background()))
		})
	}
}

// A GatewayHostName in the options is where a client from a connection
// string without one connects.
func TestGatewayHostNameOption(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	cs := hub.AddDevice(t, "dev1")
	bare := strings.Replace(cs, ";GatewayHostName="+hub.Addr(), "", 1)
	require.NotEqual(t, cs, bare, "the local hub's connection string carries GatewayHostName")
	newClient(t, hub, bare, &device.ClientOptions{GatewayHostName: hub.Addr()}, func(c *device.Client) {
		require.NoError(t, c.SetMethodHandler("echo", echo))
	})
	r := call(t, hub, "dev1", "echo", `"via the option"`)
	require.Equal(t, 200, r.Status, "%v", r)
	require.Equal(t, `"via the option"`, string(r.Payload))
}
