package service_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/testutil/pahodev"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// attempts counts the HTTP attempts a client makes (it runs once per try,
// after the retry policy).
type attempts struct{ n atomic.Int32 }

func (a *attempts) Do(req *policy.Request) (*http.Response, error) {
	a.n.Add(1)
	return req.Next()
}

func (a *attempts) count() int { return int(a.n.Load()) }

// hubClient returns an HTTP client trusting the hub whose idle
// connections are closed at the end of the test.
func hubClient(t testing.TB, hub *iothubtest.Server) *http.Client {
	hc := hub.HTTPClient()
	t.Cleanup(hc.CloseIdleConnections)
	return hc
}

// testOptions are options for a client of hub: its transport, tiny retry
// delays and an attempt counter.
func testOptions(t testing.TB, hub *iothubtest.Server) (*service.ClientOptions, *attempts) {
	a := &attempts{}
	o := &service.ClientOptions{}
	o.Transport = hubClient(t, hub)
	o.Retry = policy.RetryOptions{RetryDelay: time.Millisecond, MaxRetryDelay: 5 * time.Millisecond}
	o.PerRetryPolicies = []policy.Policy{a}
	return o, a
}

// newClient returns a client for hub from connStr ("" means the iothubowner
// connection string); edit, when not nil, adjusts the options.
func newClient(t testing.TB, hub *iothubtest.Server, connStr string, edit func(*service.ClientOptions)) (*service.Client, *attempts) {
	t.Helper()
	if connStr == "" {
		connStr = hub.ServiceConnectionString()
	}
	o, a := testOptions(t, hub)
	if edit != nil {
		edit(o)
	}
	c, err := service.NewClientFromConnectionString(connStr, o)
	require.NoError(t, err, "NewClientFromConnectionString")
	return c, a
}

// connect dials the hub as a device with a connection string, unchanged:
// the address is its GatewayHostName, the password a token minted from it
// (or the certificate for x509=true).
func connect(t testing.TB, hub *iothubtest.Server, connStr string, cert *tls.Certificate) paho.Client {
	t.Helper()
	cs, err := auth.ParseDeviceConnectionString(connStr)
	require.NoError(t, err)
	conf := hub.TLSConfig()
	var password string
	if cert != nil {
		conf.Certificates = []tls.Certificate{*cert}
	} else {
		tp, err := cs.TokenProvider(nil)
		require.NoError(t, err)
		tok, err := tp.Token(context.Background())
		require.NoError(t, err)
		password = tok.Value
	}
	c, err := pahodev.Dial(t, pahodev.Options{URL: "tls://" + cs.Address(), TLS: conf, Identity: cs.Identity(), Password: password})
	require.NoError(t, err, "device connect")
	return c
}

// echoDevice connects a device that answers every method with status and
// the request payload, and waits until the hub sees it online.
func echoDevice(t testing.TB, hub *iothubtest.Server, connStr string, cert *tls.Certificate, status int) {
	t.Helper()
	c := connect(t, hub, connStr, cert)
	pahodev.Echo(t, c, status)
	cs, _ := auth.ParseDeviceConnectionString(connStr)
	waitOnline(t, hub, cs.Identity().String())
}

func waitOnline(t testing.TB, hub *iothubtest.Server, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, hub.WaitOnline(ctx, id), "%s never came online", id)
}

// callbackDevice connects a device whose method handler is f; it answers
// with f's status and payload.
func callbackDevice(t testing.TB, hub *iothubtest.Server, connStr string, f func(method string, payload []byte) (int, []byte)) {
	t.Helper()
	c := connect(t, hub, connStr, nil)
	tk := c.Subscribe("$iothub/methods/POST/#", 0, func(c paho.Client, m paho.Message) {
		topic := m.Topic()
		rest := strings.TrimPrefix(topic, "$iothub/methods/POST/")
		name, rid, ok := strings.Cut(rest, "/?$rid=")
		if !ok {
			return
		}
		status, payload := f(name, m.Payload())
		c.Publish("$iothub/methods/res/"+strconv.Itoa(status)+"/?$rid="+rid, 0, false, payload)
	})
	require.True(t, tk.WaitTimeout(15*time.Second), "subscribe timed out")
	require.NoError(t, tk.Error(), "subscribe")
	cs, _ := auth.ParseDeviceConnectionString(connStr)
	waitOnline(t, hub, cs.Identity().String())
}

var echo = service.CloudToDeviceMethod{MethodName: "echo", Payload: map[string]int{"n": 1}, ResponseTimeout: 5 * time.Second}
