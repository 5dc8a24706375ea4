package http

import (
	"context"
	"errors"
	"fmt"
	nethttp "net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/apiversion"
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
		err := checkProperty(tc.name, tc.value)
		if tc.ok {
			assert.NoError(t, err, "checkProperty(%q, %q)", tc.name, tc.value)
		} else {
			assert.ErrorIs(t, err, transport.ErrInvalidProperty, "checkProperty(%q, %q)", tc.name, tc.value)
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
	require.NoError(t, err)
	defer c.Close()
	msg := &transport.Message{Body: []byte("b"), MessageID: "m", CorrelationID: "c", ContentType: "application/json",
		ContentEncoding: "utf-8", Properties: map[string]string{"k": "v"}}
	require.NoError(t, c.SendEvent(context.Background(), msg))
	assert.Equal(t, "/devices/dev%231/modules/m1/messages/events", got.URL.EscapedPath(), "request path")
	assert.Equal(t, apiversion.Current, got.URL.Query().Get("api-version"), "request api-version")
	for k, v := range map[string]string{"Authorization": cfg.Token, "Iothub-Messageid": "m", "Iothub-Correlationid": "c",
		"Iothub-Contenttype": "application/json", "Iothub-Contentencoding": "utf-8", "Iothub-App-K": "v"} {
		assert.Equal(t, v, got.Header.Get(k), "header %s", k)
	}
	status = nethttp.StatusRequestEntityTooLarge
	err = c.SendEvent(context.Background(), msg)
	var se *StatusError
	require.ErrorAs(t, err, &se, "413 answer")
	assert.Equal(t, 413, se.StatusCode, "413 answer")
	assert.Equal(t, "MessageTooLarge", se.ErrorCode, "413 answer")
	require.ErrorIs(t, err, transport.ErrMessageTooLarge, "413 answer")
	status = nethttp.StatusUnauthorized
	require.ErrorIs(t, c.SendEvent(context.Background(), msg), transport.ErrNotAuthorized, "401 answer")
	require.ErrorIs(t, c.SubscribeMethods(context.Background()), transport.ErrUnsupported, "SubscribeMethods")
}

// A StatusError matches the transport sentinel its status means, and no
// other; a 403 (IoT Hub's quota and tier refusals) is not a credentials
// error.
func TestStatusErrorIs(t *testing.T) {
	sentinels := []error{transport.ErrNotAuthorized, transport.ErrMessageTooLarge, transport.ErrThrottled, transport.ErrServiceUnavailable}
	for _, tc := range []struct {
		status int
		want   error
	}{
		{401, transport.ErrNotAuthorized},
		{403, nil},
		{413, transport.ErrMessageTooLarge},
		{429, transport.ErrThrottled},
		{503, transport.ErrServiceUnavailable},
		{400, nil},
		{500, nil},
	} {
		err := fmt.Errorf("wrapped: %w", &StatusError{StatusCode: tc.status})
		for _, s := range sentinels {
			assert.Equal(t, s == tc.want, errors.Is(err, s), "errors.Is(%d, %v)", tc.status, s)
		}
		var se *StatusError
		require.ErrorAs(t, err, &se, "status %d", tc.status)
		assert.Equal(t, tc.status, se.StatusCode)
	}
}

// SendEvent refuses, before any request, messages IoT Hub would refuse, and
// says why with a sentinel.
func TestSendEventRefusals(t *testing.T) {
	var posts atomic.Int32
	srv := httptest.NewTLSServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		posts.Add(1)
		w.WriteHeader(nethttp.StatusNoContent)
	}))
	defer srv.Close()
	c, err := New(nil).Dial(context.Background(), transport.Config{
		Identity:  auth.Identity{HostName: "h", DeviceID: "d"},
		Address:   strings.TrimPrefix(srv.URL, "https://"),
		TLSConfig: srv.Client().Transport.(*nethttp.Transport).TLSClientConfig,
	})
	require.NoError(t, err)
	defer c.Close()
	for _, tc := range []struct {
		name string
		msg  *transport.Message
		want error
	}{
		{"too large", &transport.Message{Body: make([]byte, transport.MaxMessageSize+1)}, transport.ErrMessageTooLarge},
		{"empty property name", &transport.Message{Properties: map[string]string{"": "v"}}, transport.ErrInvalidProperty},
		{"space in a name", &transport.Message{Properties: map[string]string{"a b": "v"}}, transport.ErrInvalidProperty},
		{"non-ASCII value", &transport.Message{Properties: map[string]string{"a": "é"}}, transport.ErrInvalidProperty},
	} {
		assert.ErrorIs(t, c.SendEvent(context.Background(), tc.msg), tc.want, tc.name)
	}
	assert.Zero(t, posts.Load(), "requests sent for refused messages")
	require.NoError(t, c.SendEvent(context.Background(), &transport.Message{Body: make([]byte, transport.MaxMessageSize)}), "a message at the limit")
	assert.Equal(t, int32(1), posts.Load(), "requests")
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
