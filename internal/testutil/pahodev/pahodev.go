// Package pahodev is a minimal IoT Hub MQTT device built directly on the
// eclipse/paho.mqtt.golang client, for tests of the local hub that must not
// depend on this SDK's own device code (the hub is an independent oracle).
package pahodev

import (
	"crypto/tls"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
)

// Options describes one device connection.
type Options struct {
	URL      string // tls://host:port or wss://host:port/$iothub/websocket
	TLS      *tls.Config
	Identity auth.Identity
	Password string // SAS token; "" for X.509 (put the certificate in TLS)
	Clean    bool
	// OnLost is called when the connection drops; nil ignores it.
	OnLost func(error)
}

// Username returns IoT Hub's MQTT username for id.
func Username(id auth.Identity) string {
	return id.HostName + "/" + id.String() + "/?api-version=2021-04-12"
}

// Dial connects and returns the client, or the CONNECT error. The client is
// disconnected at the end of the test.
func Dial(t testing.TB, o Options) (paho.Client, error) {
	t.Helper()
	po := paho.NewClientOptions().AddBroker(o.URL).SetClientID(o.Identity.String()).
		SetUsername(Username(o.Identity)).SetTLSConfig(o.TLS).SetAutoReconnect(false).
		SetConnectRetry(false).SetCleanSession(o.Clean).SetProtocolVersion(4).
		SetConnectTimeout(10 * time.Second).
		// A handler that publishes while the client disconnects would
		// otherwise wait 30 s for the stopped writer, and the test's
		// goroutines would outlive it.
		SetWriteTimeout(time.Second)
	if o.Password != "" {
		po.SetPassword(o.Password)
	}
	if o.OnLost != nil {
		po.SetConnectionLostHandler(func(_ paho.Client, err error) { o.OnLost(err) })
	}
	c := paho.NewClient(po)
	tk := c.Connect()
	if !tk.WaitTimeout(15 * time.Second) {
		c.Disconnect(0)
		return nil, errTimeout
	}
	if err := tk.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c, nil
}

type timeoutError struct{}

func (timeoutError) Error() string { return "pahodev: timed out" }

var errTimeout error = timeoutError{}

// Echo subscribes to direct methods and answers each with status and the
// request payload, failing the test if the subscription fails.
func Echo(t testing.TB, c paho.Client, status int) {
	t.Helper()
	Serve(t, c, func(payload []byte) (int, []byte) { return status, payload })
}

// Serve subscribes to direct methods and answers each with what answer
// returns for its payload (any bytes: a test may send a broken answer),
// failing the test if the subscription fails.
func Serve(t testing.TB, c paho.Client, answer func(payload []byte) (int, []byte)) {
	t.Helper()
	tk := c.Subscribe("$iothub/methods/POST/#", 0, func(c paho.Client, m paho.Message) {
		topic := m.Topic()
		i := strings.Index(topic, "?$rid=")
		if i < 0 {
			return
		}
		status, body := answer(m.Payload())
		c.Publish("$iothub/methods/res/"+strconv.Itoa(status)+"/?$rid="+topic[i+6:], 0, false, body)
	})
	require.True(t, tk.WaitTimeout(15*time.Second), "pahodev: subscribe timed out")
	require.NoError(t, tk.Error(), "pahodev: subscribe")
}
