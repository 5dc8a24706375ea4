package hub

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"
	"github.com/coder/websocket"
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
	st, b := invokeNoFatal(h, deviceID, body)
	if st == 0 {
		t.Fatal(b)
	}
	return st, b
}

// invokeNoFatal is invoke for any goroutine: a transport failure gives
// status 0 and the error text.
func invokeNoFatal(h *Hub, deviceID, body string) (int, string) {
	owner, _ := h.Engine.Policy("iothubowner")
	tok, err := auth.SignSAS("localhost", owner.Name, owner.PrimaryKey, time.Now().Add(time.Hour))
	if err != nil {
		return 0, err.Error()
	}
	req, _ := http.NewRequest("POST", fmt.Sprintf("https://%s/twins/%s/methods?api-version=2021-04-12", h.Addrs()[0], deviceID), strings.NewReader(body))
	req.Header.Set("Authorization", tok)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS(h)}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err.Error()
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

// An AMQP 1.0 client (go-amqp) is served on the same port, over TLS and
// over WebSocket: no SASL, CBS put-token, method links, a call through
// the HTTPS service API.
func TestAMQPOnOnePort(t *testing.T) {
	h := startHub(t)
	addr := h.Addrs()[0].String()
	for _, tc := range []struct{ device, protocol string }{
		{"dev-amqp", "amqp"},
		{"dev-amqp-ws", "amqp-ws"},
	} {
		t.Run(tc.protocol, func(t *testing.T) {
			key := addDevice(t, h, tc.device)
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			var nc net.Conn
			if tc.protocol == "amqp" {
				c, err := tls.Dial("tcp", addr, clientTLS(h))
				if err != nil {
					t.Fatal(err)
				}
				nc = c
			} else {
				hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS(h)}}
				defer hc.CloseIdleConnections()
				ws, _, err := websocket.Dial(ctx, "wss://"+addr+WebSocketPath,
					&websocket.DialOptions{Subprotocols: []string{"AMQPWSB10"}, HTTPClient: hc})
				if err != nil {
					t.Fatal(err)
				}
				nc = websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
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
			id := auth.Identity{HostName: "localhost", DeviceID: tc.device}
			tok, err := auth.SignSAS(id.Resource(), "", key, time.Now().Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if code := putToken(ctx, t, s, id.Resource(), tok); code != 200 {
				t.Fatalf("put-token: status %d", code)
			}
			addrPath := "/devices/" + tc.device + "/methods/devicebound"
			resp, err := s.NewSender(ctx, addrPath, nil)
			if err != nil {
				t.Fatal(err)
			}
			req, err := s.NewReceiver(ctx, addrPath, &amqp.ReceiverOptions{Credit: 10})
			if err != nil {
				t.Fatal(err)
			}
			if err := h.Engine.WaitOnline(ctx, id); err != nil {
				t.Fatal(err)
			}
			go func() {
				m, err := req.Receive(ctx, nil)
				if err != nil {
					return
				}
				_ = req.AcceptMessage(ctx, m)
				_ = resp.Send(ctx, &amqp.Message{
					Properties:            &amqp.MessageProperties{CorrelationID: m.Properties.CorrelationID},
					ApplicationProperties: map[string]any{"IoThub-status": int32(200)},
					Data:                  m.Data,
				}, nil)
			}()
			status, body := invoke(t, h, tc.device, `{"methodName":"echo","payload":{"a":[1,"two"]},"responseTimeoutInSeconds":10}`)
			if status != 200 || body != `{"status":200,"payload":{"a":[1,"two"]}}` {
				t.Fatalf("invoke: %d %s", status, body)
			}
			calls := h.Engine.Calls()
			if last := calls[len(calls)-1]; last.Protocol != tc.protocol {
				t.Fatalf("call carried by %q, want %q", last.Protocol, tc.protocol)
			}
		})
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

// TestServerChainHasNoRoot checks that the hub presents its chain as IoT
// Hub and other public servers do: the leaf and its issuing CA, without
// the root. A client that does not trust the root then fails with an
// unknown issuer, not with a self-signed certificate in the chain.
func TestServerChainHasNoRoot(t *testing.T) {
	h := startHub(t)
	c, err := tls.Dial("tcp", h.Addrs()[0].String(), clientTLS(h))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	chain := c.ConnectionState().PeerCertificates
	if len(chain) != 2 {
		t.Fatalf("the hub presented %d certificates, want the leaf and its issuing CA", len(chain))
	}
	for i, cert := range chain {
		if err := cert.CheckSignatureFrom(cert); err == nil || bytes.Equal(cert.RawIssuer, cert.RawSubject) {
			t.Fatalf("certificate %d (%s) is self-signed: a root in the chain", i, cert.Subject)
		}
		if cert.Equal(h.CA.Cert) {
			t.Fatalf("certificate %d is the hub's root CA", i)
		}
	}
	if !chain[1].IsCA || chain[1].CheckSignatureFrom(h.CA.Cert) != nil || chain[0].CheckSignatureFrom(chain[1]) != nil {
		t.Fatalf("chain %s <- %s is not leaf <- issuing CA <- root", chain[0].Subject, chain[1].Subject)
	}

	// Without the root, verification fails for an unknown authority.
	_, err = tls.Dial("tcp", h.Addrs()[0].String(), &tls.Config{ServerName: "localhost", MinVersion: tls.VersionTLS12})
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("dial without the root: %v, want x509.UnknownAuthorityError", err)
	}
}

// TestMQTTUsernameGatewayHost: the .NET device SDK puts GatewayHostName in
// the MQTT user name; the hub accepts its own gateway names there (with or
// without a port) and refuses any other host. The SAS audience stays the
// hub's host name.
func TestMQTTUsernameGatewayHost(t *testing.T) {
	h, err := Start(Options{HostName: "myhub.example"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	key := addDevice(t, h, "dev1")
	tok, err := auth.SignSAS(auth.Identity{HostName: "myhub.example", DeviceID: "dev1"}.Resource(), "", key, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	addr := h.Addrs()[0].String()
	for _, tc := range []struct {
		host string
		ok   bool
	}{
		{"myhub.example", true},
		{"MyHub.Example", true},
		{"localhost", true},
		{addr, true}, // 127.0.0.1:port
		{"localhost:8883", true},
		{"other.example", false},
		{"myhub.example.evil", false},
	} {
		t.Run(tc.host, func(t *testing.T) {
			conf := clientTLS(h)
			c, err := pahodev.Dial(t, pahodev.Options{URL: "tls://" + addr, TLS: conf,
				Identity: auth.Identity{HostName: tc.host, DeviceID: "dev1"}, Password: tok})
			if tc.ok && err != nil {
				t.Fatalf("user name host %q refused: %v", tc.host, err)
			}
			if !tc.ok && err == nil {
				t.Fatalf("user name host %q accepted", tc.host)
			}
			if c != nil && err == nil {
				c.Disconnect(0)
			}
		})
	}
}
