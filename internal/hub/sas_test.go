package hub

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/testutil/pahodev"
)

// cbsPut sends one CBS put-token on a fresh AMQP connection and returns
// the status code of the reply.
func cbsPut(t *testing.T, h *Hub, name, tok string) int32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	nc, err := tls.Dial("tcp", h.Addrs()[0].String(), clientTLS(h))
	require.NoError(t, err, "dial TLS")
	conn, err := amqp.NewConn(ctx, nc, &amqp.ConnOptions{HostName: "localhost"})
	require.NoError(t, err, "AMQP connection")
	defer conn.Close()
	s, err := conn.NewSession(ctx, nil)
	require.NoError(t, err, "AMQP session")
	return putToken(ctx, t, s, name, tok)
}

// putToken sends one CBS put-token on s and returns the reply's status
// code; it checks that the reply correlates with the request.
func putToken(ctx context.Context, t *testing.T, s *amqp.Session, name, tok string) int32 {
	t.Helper()
	snd, err := s.NewSender(ctx, "$cbs", nil)
	require.NoError(t, err, "CBS sender")
	rcv, err := s.NewReceiver(ctx, "$cbs", nil)
	require.NoError(t, err, "CBS receiver")
	err = snd.Send(ctx, &amqp.Message{
		Properties: &amqp.MessageProperties{MessageID: "put-1"},
		ApplicationProperties: map[string]any{"operation": "put-token",
			"type": "servicebus.windows.net:sastoken", "name": name},
		Value: tok,
	}, nil)
	require.NoError(t, err, "send put-token")
	reply, err := rcv.Receive(ctx, nil)
	require.NoError(t, err, "receive the put-token reply")
	_ = rcv.AcceptMessage(ctx, reply)
	require.NotNil(t, reply.Properties, "put-token reply has no properties")
	require.Equal(t, "put-1", reply.Properties.CorrelationID, "put-token reply does not correlate: %+v", reply.Properties)
	code, _ := reply.ApplicationProperties["status-code"].(int32)
	return code
}

// TestOneSASDecision: one device token gets the same answer over HTTPS,
// MQTT and AMQP CBS: 60 s past its se it is accepted everywhere (IoT Hub
// allows five minutes of skew) and the MQTT connection stays up; six
// minutes past se it is refused everywhere. The device id holds '+', a
// legal character that CBS must not decode into a space.
func TestOneSASDecision(t *testing.T) {
	h := startHub(t)
	addr := h.Addrs()[0].String()
	const dev = "dev+1"
	key := addDevice(t, h, dev)
	id := auth.Identity{HostName: "localhost", DeviceID: dev}
	for _, tc := range []struct {
		name string
		age  time.Duration
		ok   bool
	}{
		{"60 s past se", time.Minute, true},
		{"6 min past se", 6 * time.Minute, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := auth.SignSAS(id.Resource(), "", key, time.Now().Add(-tc.age))
			require.NoError(t, err)
			// HTTPS: device telemetry.
			req, _ := http.NewRequest("POST", "https://"+addr+"/devices/"+url.PathEscape(dev)+"/messages/events?api-version=2021-04-12", strings.NewReader("{}"))
			req.Header.Set("Authorization", tok)
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS(h)}}
			resp, err := hc.Do(req)
			require.NoError(t, err, "HTTPS telemetry")
			resp.Body.Close()
			hc.CloseIdleConnections()
			assert.Equal(t, tc.ok, resp.StatusCode == http.StatusNoContent, "HTTPS: status %d, want accepted %v", resp.StatusCode, tc.ok)
			// AMQP CBS, with the audience as Node sends it (encoded) and
			// as .NET and C send it (raw).
			for _, name := range []string{id.Resource(), "localhost/devices/" + dev} {
				assert.Equal(t, tc.ok, cbsPut(t, h, name, tok) == 200, "CBS put-token for %q accepted", name)
			}
			// MQTT: accepted, and still connected for a method call.
			c, err := pahodev.Dial(t, pahodev.Options{URL: "tls://" + addr, TLS: clientTLS(h), Identity: id, Password: tok})
			if !tc.ok {
				require.Error(t, err, "MQTT: connect accepted")
				return
			}
			require.NoError(t, err, "MQTT: connect refused")
			pahodev.Echo(t, c, 200)
			st, body := invoke(t, h, url.PathEscape(dev), `{"methodName":"m","payload":1}`)
			require.Equal(t, 200, st, "MQTT device after connecting with the token: %s", body)
			require.Equal(t, `{"status":200,"payload":1}`, body, "MQTT device after connecting with the token")
			c.Disconnect(0)
		})
	}
}
