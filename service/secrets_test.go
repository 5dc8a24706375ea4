package service_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	azlog "github.com/Azure/azure-sdk-for-go/sdk/azcore/log"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// authCapture records the Authorization header each attempt carried.
type authCapture struct {
	mu     sync.Mutex
	values []string
}

func (a *authCapture) Do(req *policy.Request) (*http.Response, error) {
	a.mu.Lock()
	a.values = append(a.values, req.Raw().Header.Get("Authorization"))
	a.mu.Unlock()
	return req.Next()
}

// Keys and tokens never appear in errors, in the client's %v, or in
// azcore's logs.
func TestSecretsStaySecret(t *testing.T) {
	var logMu sync.Mutex
	var logs strings.Builder
	azlog.SetListener(func(ev azlog.Event, msg string) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(&logs, "[%s] %s\n", ev, msg)
	})
	t.Cleanup(func() { azlog.SetListener(nil) })

	hub := iothubtest.NewServer(t, nil)
	echoDevice(t, hub, hub.AddDevice(t, "dev1"), nil, 200)
	owner, err := auth.ParseServiceConnectionString(hub.ServiceConnectionString())
	require.NoError(t, err)
	capture := &authCapture{}
	c, _ := newClient(t, hub, "", func(o *service.ClientOptions) {
		o.PerRetryPolicies = append(o.PerRetryPolicies, capture)
		o.Retry.MaxRetries = 1
	})
	ctx := context.Background()
	_, err = c.InvokeDeviceMethod(ctx, "dev1", echo)
	require.NoError(t, err)
	created, err := c.CreateDevice(ctx, &service.Device{DeviceID: "dev2"})
	require.NoError(t, err)
	require.NoError(t, hub.FailServiceRequests(503001, 1))
	_, notFound := c.InvokeDeviceMethod(ctx, "nobody", echo) // retried once after the 503

	// A client whose key the hub refuses.
	wrongKey := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	bad, _ := newClient(t, hub, "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey="+wrongKey+";GatewayHostName="+hub.Addr(), nil)
	_, unauthorized := bad.InvokeDeviceMethod(ctx, "dev1", echo)
	require.ErrorIs(t, unauthorized, service.ErrUnauthorized)
	require.ErrorIs(t, notFound, service.ErrDeviceNotFound)

	capture.mu.Lock()
	tokens := append([]string(nil), capture.values...)
	capture.mu.Unlock()
	require.GreaterOrEqual(t, len(tokens), 4, "Authorization headers captured")
	require.True(t, strings.HasPrefix(tokens[0], "SharedAccessSignature "), "the first Authorization header is a SAS token")
	secrets := []string{owner.SharedAccessKey, wrongKey, created.Authentication.SymmetricKey.PrimaryKey, created.Authentication.SymmetricKey.SecondaryKey}
	for _, tok := range tokens {
		secrets = append(secrets, tok)
		_, err := auth.ParseSAS(tok)
		require.NoError(t, err)
		// The signature, in both its encoded and decoded forms.
		q, _ := url.ParseQuery(strings.TrimPrefix(tok, "SharedAccessSignature "))
		secrets = append(secrets, q.Get("sig"), url.QueryEscape(q.Get("sig")))
	}

	logMu.Lock()
	logText := logs.String()
	logMu.Unlock()
	require.Contains(t, logText, "/twins/dev1/methods", "the listener saw no request logs")
	require.Contains(t, logText, "Authorization: REDACTED", "the listener saw no redacted Authorization header")
	outputs := map[string]string{
		"not found error":     notFound.Error(),
		"unauthorized error":  unauthorized.Error(),
		"%v of the error":     fmt.Sprintf("%v %+v", unauthorized, notFound),
		"%v of client":        fmt.Sprintf("%v", c),
		"%+v of client":       fmt.Sprintf("%+v %+v", c, bad),
		"%#v of client":       fmt.Sprintf("%#v %#v", c, bad),
		"%v of device":        fmt.Sprintf("%v", created),
		"%+v of device":       fmt.Sprintf("%+v", *created),
		"%#v of device":       fmt.Sprintf("%#v", created),
		"%v of auth":          fmt.Sprintf("%v %+v %#v", created.Authentication, created.Authentication.SymmetricKey, created.Authentication.SymmetricKey),
		"azcore logs":         logText,
		"azcore error string": fmt.Sprint(unwrapAll(unauthorized)),
	}
	for what, text := range outputs {
		for _, s := range secrets {
			if s != "" {
				// Not assert.NotContains: its message would print the secret.
				assert.False(t, strings.Contains(text, s), "%s contains a secret (%d chars)", what, len(s))
			}
		}
		assert.NotContains(t, text, "SharedAccessSignature sr=", "%s contains a token", what)
		assert.NotContains(t, text, "SharedAccessKey=", "%s contains a connection string", what)
	}
	assert.Equal(t, "service.Client{hub localhost at https://"+hub.Addr()+", policy iothubowner}", fmt.Sprint(c), "String()")
	assert.Contains(t, fmt.Sprintf("%+v", created.Authentication.SymmetricKey), "<redacted>", "how SymmetricKey prints")
}

// unwrapAll returns the innermost error of a chain (the azcore error).
func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok || u.Unwrap() == nil {
			return err
		}
		err = u.Unwrap()
	}
}
