package hub

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/internal/testutil/pahodev"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startHub(t *testing.T) *Hub {
	t.Helper()
	h, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func clientTLS(h *Hub) *tls.Config {
	return &tls.Config{RootCAs: h.CA.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

func addDevice(t *testing.T, h *Hub, id string) string {
	t.Helper()
	d, herr := h.Engine.PutDevice(id, engine.Device{}, "")
	if herr != nil {
		t.Fatal(herr)
	}
	return *d.Authentication.SymmetricKey.PrimaryKey
}

// echoDevice connects a paho device to url and answers every method with
// 200 and the request payload.
func echoDevice(t *testing.T, h *Hub, url, deviceID, key string) {
	t.Helper()
	id := auth.Identity{HostName: "localhost", DeviceID: deviceID}
	tok, err := auth.SignSAS(id.Resource(), "", key, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	c, err := pahodev.Dial(t, pahodev.Options{URL: url, TLS: clientTLS(h), Identity: id, Password: tok})
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	pahodev.Echo(t, c, 200)
}

func invoke(t *testing.T, h *Hub, deviceID, body string) (int, string) {
	t.Helper()
	owner, _ := h.Engine.Policy("iothubowner")
	tok, err := auth.SignSAS("localhost", owner.Name, owner.PrimaryKey, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", fmt.Sprintf("https://%s/twins/%s/methods?api-version=2021-04-12", h.Addrs()[0], deviceID), strings.NewReader(body))
	req.Header.Set("Authorization", tok)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS(h)}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// One port serves HTTPS, MQTT over TLS and MQTT over WebSocket.
func TestOnePortServesEveryProtocol(t *testing.T) {
	h := startHub(t)
	addr := h.Addrs()[0].String()
	for _, tc := range []struct{ device, url string }{
		{"dev-tls", "tls://" + addr},
		{"dev-ws", "wss://" + addr + WebSocketPath},
	} {
		t.Run(tc.device, func(t *testing.T) {
			key := addDevice(t, h, tc.device)
			echoDevice(t, h, tc.url, tc.device, key)
			status, body := invoke(t, h, tc.device, `{"methodName":"echo","payload":{"a":[1,"two"]},"responseTimeoutInSeconds":10}`)
			var got struct {
				Status  int
				Payload json.RawMessage
			}
			if err := json.Unmarshal([]byte(body), &got); err != nil || status != 200 {
				t.Fatalf("invoke: %d %s (%v)", status, body, err)
			}
			if got.Status != 200 || string(got.Payload) != `{"a":[1,"two"]}` {
				t.Fatalf("invoke result %s", body)
			}
			calls := h.Engine.Calls()
			last := calls[len(calls)-1]
			wantProto := map[string]string{"dev-tls": "mqtt", "dev-ws": "mqtt-ws"}[tc.device]
			if last.Protocol != wantProto {
				t.Fatalf("call carried by %q, want %q", last.Protocol, wantProto)
			}
		})
	}
}

// An AMQP client is refused (not served yet) without disturbing the hub.
func TestAMQPHeaderRefused(t *testing.T) {
	h := startHub(t)
	c, err := tls.Dial("tcp", h.Addrs()[0].String(), clientTLS(h))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("AMQP\x00\x01\x00\x00")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 8)); !errors.Is(err, io.EOF) {
		t.Fatalf("read after AMQP header: %v, want EOF", err)
	}
}

// A client that does not trust the hub's CA cannot connect; one that sends
// garbage after TLS is dropped.
func TestTLSRequired(t *testing.T) {
	h := startHub(t)
	if _, err := tls.Dial("tcp", h.Addrs()[0].String(), &tls.Config{ServerName: "localhost"}); err == nil {
		t.Fatal("TLS handshake succeeded without trusting the hub's CA")
	}
	c, err := tls.Dial("tcp", h.Addrs()[0].String(), clientTLS(h))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("\x00\x00garbage\r\n\r\n"))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(b), "HTTP/1.1 400") {
		t.Fatalf("garbage got %q, want an HTTP 400", b)
	}
}
