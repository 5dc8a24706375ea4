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
	if err != nil {
		t.Fatal(err)
	}
	capture := &authCapture{}
	c, _ := newClient(t, hub, "", func(o *service.ClientOptions) {
		o.PerRetryPolicies = append(o.PerRetryPolicies, capture)
		o.Retry.MaxRetries = 1
	})
	ctx := context.Background()
	if _, err := c.InvokeDeviceMethod(ctx, "dev1", echo); err != nil {
		t.Fatal(err)
	}
	created, err := c.CreateDevice(ctx, &service.Device{DeviceID: "dev2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := hub.FailServiceRequests(503001, 1); err != nil {
		t.Fatal(err)
	}
	_, notFound := c.InvokeDeviceMethod(ctx, "nobody", echo) // retried once after the 503

	// A client whose key the hub refuses.
	wrongKey := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	bad, _ := newClient(t, hub, "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey="+wrongKey+";GatewayHostName="+hub.Addr(), nil)
	_, unauthorized := bad.InvokeDeviceMethod(ctx, "dev1", echo)
	if unauthorized == nil || notFound == nil {
		t.Fatalf("want two errors, got %v and %v", unauthorized, notFound)
	}

	capture.mu.Lock()
	tokens := append([]string(nil), capture.values...)
	capture.mu.Unlock()
	if len(tokens) < 4 || !strings.HasPrefix(tokens[0], "SharedAccessSignature ") {
		t.Fatalf("captured %d Authorization headers", len(tokens))
	}
	secrets := []string{owner.SharedAccessKey, wrongKey, created.Authentication.SymmetricKey.PrimaryKey, created.Authentication.SymmetricKey.SecondaryKey}
	for _, tok := range tokens {
		secrets = append(secrets, tok)
		if _, err := auth.ParseSAS(tok); err != nil {
			t.Fatal(err)
		}
		// The signature, in both its encoded and decoded forms.
		q, _ := url.ParseQuery(strings.TrimPrefix(tok, "SharedAccessSignature "))
		secrets = append(secrets, q.Get("sig"), url.QueryEscape(q.Get("sig")))
	}

	logMu.Lock()
	logText := logs.String()
	logMu.Unlock()
	if !strings.Contains(logText, "/twins/dev1/methods") || !strings.Contains(logText, "Authorization: REDACTED") {
		t.Fatalf("the listener saw no request logs with a redacted Authorization header:\n%s", logText)
	}
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
			if s != "" && strings.Contains(text, s) {
				t.Errorf("%s contains a secret (%d chars):\n%s", what, len(s), text)
			}
		}
		if strings.Contains(text, "SharedAccessSignature sr=") || strings.Contains(text, "SharedAccessKey=") {
			t.Errorf("%s contains a token or a connection string:\n%s", what, text)
		}
	}
	if got := fmt.Sprint(c); got != "service.Client{hub localhost at https://"+hub.Addr()+", policy iothubowner}" {
		t.Errorf("String() = %q", got)
	}
	if got := fmt.Sprintf("%+v", created.Authentication.SymmetricKey); !strings.Contains(got, "<redacted>") {
		t.Errorf("SymmetricKey prints as %q", got)
	}
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
