package http

import (
	"context"
	"errors"
	nethttp "net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCheckProperty(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		ok          bool
	}{
		{"alert", "false", true},
		{"a!#$%&'*+-.^_`|~z", "0-9", true},
		{"", "x", false},
		{"a b", "x", false},
		{"a", "x/y", false},
		{"a", "é", false},
		{"a", "", true},
	} {
		if err := CheckProperty(tc.name, tc.value); (err == nil) != tc.ok {
			t.Errorf("CheckProperty(%q, %q) = %v, want ok=%v", tc.name, tc.value, err, tc.ok)
		}
	}
}

// Requests carry IoT Hub's headers, and the hub's refusals come back typed.
func TestSendEventRequestAndErrors(t *testing.T) {
	var got *nethttp.Request
	status := nethttp.StatusNoContent
	srv := httptest.NewTLSServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		got = r.Clone(context.Background())
		if status != nethttp.StatusNoContent {
			w.Header().Set("iothub-errorcode", "MessageTooLarge")
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	cfg := transport.Config{
		Identity:  auth.Identity{HostName: "h", DeviceID: "dev#1", ModuleID: "m1"},
		Address:   strings.TrimPrefix(srv.URL, "https://"),
		Token:     "SharedAccessSignature sr=x&sig=y&se=1",
		TLSConfig: srv.Client().Transport.(*nethttp.Transport).TLSClientConfig,
	}
	c, err := New(nil).Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := &transport.Message{Body: []byte("b"), MessageID: "m", CorrelationID: "c", ContentType: "application/json",
		ContentEncoding: "utf-8", Properties: map[string]string{"k": "v"}}
	if err := c.SendEvent(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	if got.URL.EscapedPath() != "/devices/dev%231/modules/m1/messages/events" || got.URL.Query().Get("api-version") != APIVersion {
		t.Errorf("request URL %s", got.URL)
	}
	for k, v := range map[string]string{"Authorization": cfg.Token, "Iothub-Messageid": "m", "Iothub-Correlationid": "c",
		"Iothub-Contenttype": "application/json", "Iothub-Contentencoding": "utf-8", "Iothub-App-K": "v"} {
		if got.Header.Get(k) != v {
			t.Errorf("header %s = %q, want %q", k, got.Header.Get(k), v)
		}
	}
	status = nethttp.StatusRequestEntityTooLarge
	var se *StatusError
	if err := c.SendEvent(context.Background(), msg); !errors.As(err, &se) || se.StatusCode != 413 || se.ErrorCode != "MessageTooLarge" {
		t.Fatalf("413 answer: %v", err)
	}
	status = nethttp.StatusUnauthorized
	if err := c.SendEvent(context.Background(), msg); !errors.Is(err, transport.ErrNotAuthorized) {
		t.Fatalf("401 answer: %v", err)
	}
	if err := c.SubscribeMethods(context.Background()); !errors.Is(err, transport.ErrUnsupported) {
		t.Fatalf("SubscribeMethods: %v", err)
	}
}

// Issue 16.2: a 307 from the hub's https address to plain http is not
// followed: the SAS token never goes to the http server, the message is
// posted once, and SendEvent fails with ErrRedirect.
func TestSendEventRefusesRedirects(t *testing.T) {
	var plain atomic.Int32
	target := httptest.NewServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		plain.Add(1)
		w.WriteHeader(nethttp.StatusNoContent)
	}))
	defer target.Close()
	var posts atomic.Int32
	hub := httptest.NewTLSServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		posts.Add(1)
		nethttp.Redirect(w, r, target.URL+r.URL.RequestURI(), nethttp.StatusTemporaryRedirect)
	}))
	defer hub.Close()
	c, err := New(nil).Dial(context.Background(), transport.Config{
		Identity:  auth.Identity{HostName: "h", DeviceID: "d"},
		Address:   strings.TrimPrefix(hub.URL, "https://"),
		Token:     "SharedAccessSignature sr=h%2Fdevices%2Fd&sig=secret&se=1",
		TLSConfig: hub.Client().Transport.(*nethttp.Transport).TLSClientConfig,
	})
	require.NoError(t, err)
	defer c.Close()
	err = c.SendEvent(context.Background(), &transport.Message{Body: []byte("once")})
	require.ErrorIs(t, err, ErrRedirect)
	assert.Equal(t, int32(1), posts.Load(), "requests to the hub")
	assert.Zero(t, plain.Load(), "requests that followed the redirect to plain http")
}
