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
	if err != nil {
		t.Fatal(err)
	}
	conn, err := amqp.NewConn(ctx, nc, &amqp.ConnOptions{HostName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s, err := conn.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	return putToken(ctx, t, s, name, tok)
}

// putToken sends one CBS put-token on s and returns the reply's status
// code; it checks that the reply correlates with the request.
func putToken(ctx context.Context, t *testing.T, s *amqp.Session, name, tok string) int32 {
	t.Helper()
	snd, err := s.NewSender(ctx, "$cbs", nil)
	if err != nil {
		t.Fatal(err)
	}
	rcv, err := s.NewReceiver(ctx, "$cbs", nil)
	if err != nil {
		t.Fatal(err)
	}
	err = snd.Send(ctx, &amqp.Message{
		Properties: &amqp.MessageProperties{MessageID: "put-1"},
		ApplicationProperties: map[string]any{"operation": "put-token",
			"type": "servicebus.windows.net:sastoken", "name": name},
		Value: tok,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	reply, err := rcv.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = rcv.AcceptMessage(ctx, reply)
	if reply.Properties == nil || reply.Properties.CorrelationID != "put-1" {
		t.Fatalf("put-token reply does not correlate: %+v", reply.Properties)
	}
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
			if err != nil {
				t.Fatal(err)
			}
			// HTTPS: device telemetry.
			req, _ := http.NewRequest("POST", "https://"+addr+"/devices/"+url.PathEscape(dev)+"/messages/events?api-version=2021-04-12", strings.NewReader("{}"))
			req.Header.Set("Authorization", tok)
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS(h)}}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			hc.CloseIdleConnections()
			if got := resp.StatusCode == http.StatusNoContent; got != tc.ok {
				t.Errorf("HTTPS: status %d, want accepted %v", resp.StatusCode, tc.ok)
			}
			// AMQP CBS, with the audience as Node sends it (encoded) and
			// as .NET and C send it (raw).
			for _, name := range []string{id.Resource(), "localhost/devices/" + dev} {
				if got := cbsPut(t, h, name, tok) == 200; got != tc.ok {
					t.Errorf("CBS put-token for %q: accepted %v, want %v", name, got, tc.ok)
				}
			}
			// MQTT: accepted, and still connected for a method call.
			c, err := pahodev.Dial(t, pahodev.Options{URL: "tls://" + addr, TLS: clientTLS(h), Identity: id, Password: tok})
			if (err == nil) != tc.ok {
				t.Fatalf("MQTT: connect error %v, want accepted %v", err, tc.ok)
			}
			if err != nil {
				return
			}
			pahodev.Echo(t, c, 200)
			if st, body := invoke(t, h, url.PathEscape(dev), `{"methodName":"m","payload":1}`); st != 200 || body != `{"status":200,"payload":1}` {
				t.Fatalf("MQTT device after connecting with the token: %d %s", st, body)
			}
			c.Disconnect(0)
		})
	}
}
