package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"
	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/internal/testutil/pahodev"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startHub(t *testing.T) *Hub {
	t.Helper()
	h, err := Start(Options{})
	require.NoError(t, err, "start the hub")
	t.Cleanup(func() { h.Close() })
	return h
}

func clientTLS(h *Hub) *tls.Config {
	return &tls.Config{RootCAs: h.CA.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

func addDevice(t *testing.T, h *Hub, id string) string {
	t.Helper()
	d, herr := h.Engine.PutDevice(id, engine.Device{}, "")
	require.Nil(t, herr, "put device %s", id)
	return *d.Authentication.SymmetricKey.PrimaryKey
}

// echoDevice connects a paho device to url and answers every method with
// 200 and the request payload.
func echoDevice(t *testing.T, h *Hub, url, deviceID, key string) {
	t.Helper()
	id := auth.Identity{HostName: "localhost", DeviceID: deviceID}
	tok, err := auth.SignSAS(id.Resource(), "", key, time.Now().Add(time.Hour))
	require.NoError(t, err)
	c, err := pahodev.Dial(t, pahodev.Options{URL: url, TLS: clientTLS(h), Identity: id, Password: tok})
	require.NoError(t, err, "connect %s", url)
	pahodev.Echo(t, c, 200)
}

func invoke(t *testing.T, h *Hub, deviceID, body string) (int, string) {
	t.Helper()
	st, b := invokeNoFatal(h, deviceID, body)
	require.NotZero(t, st, b)
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
			require.Equal(t, 200, status, "invoke: %s", body)
			require.NoError(t, json.Unmarshal([]byte(body), &got), "invoke: %s", body)
			require.Equal(t, 200, got.Status, "invoke result %s", body)
			require.Equal(t, `{"a":[1,"two"]}`, string(got.Payload), "invoke result %s", body)
			calls := h.Engine.Calls()
			require.NotEmpty(t, calls, "no call recorded")
			last := calls[len(calls)-1]
			wantProto := map[string]string{"dev-tls": "mqtt", "dev-ws": "mqtt-ws"}[tc.device]
			require.Equal(t, wantProto, last.Protocol, "call carried by")
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
				require.NoError(t, err, "dial TLS")
				nc = c
			} else {
				hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS(h)}}
				defer hc.CloseIdleConnections()
				ws, _, err := websocket.Dial(ctx, "wss://"+addr+WebSocketPath,
					&websocket.DialOptions{Subprotocols: []string{"AMQPWSB10"}, HTTPClient: hc})
				require.NoError(t, err, "dial WebSocket")
				nc = websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
			}
			conn, err := amqp.NewConn(ctx, nc, &amqp.ConnOptions{HostName: "localhost"})
			require.NoError(t, err, "AMQP connection")
			defer conn.Close()
			s, err := conn.NewSession(ctx, nil)
			require.NoError(t, err, "AMQP session")
			id := auth.Identity{HostName: "localhost", DeviceID: tc.device}
			tok, err := auth.SignSAS(id.Resource(), "", key, time.Now().Add(time.Hour))
			require.NoError(t, err)
			require.Equal(t, int32(200), putToken(ctx, t, s, id.Resource(), tok), "put-token status")
			addrPath := "/devices/" + tc.device + "/methods/devicebound"
			resp, err := s.NewSender(ctx, addrPath, nil)
			require.NoError(t, err, "method response sender")
			req, err := s.NewReceiver(ctx, addrPath, &amqp.ReceiverOptions{Credit: 10})
			require.NoError(t, err, "method request receiver")
			require.NoError(t, h.Engine.WaitOnline(ctx, id), "wait for the device to be online")
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
			require.Equal(t, 200, status, "invoke: %s", body)
			require.Equal(t, `{"status":200,"payload":{"a":[1,"two"]}}`, body, "invoke")
			calls := h.Engine.Calls()
			require.NotEmpty(t, calls, "no call recorded")
			require.Equal(t, tc.protocol, calls[len(calls)-1].Protocol, "call carried by")
		})
	}
}

// A client that does not trust the hub's CA cannot connect; one that sends
// garbage after TLS is dropped.
func TestTLSRequired(t *testing.T) {
	h := startHub(t)
	_, err := tls.Dial("tcp", h.Addrs()[0].String(), &tls.Config{ServerName: "localhost"})
	require.Error(t, err, "TLS handshake succeeded without trusting the hub's CA")
	c, err := tls.Dial("tcp", h.Addrs()[0].String(), clientTLS(h))
	require.NoError(t, err, "dial TLS")
	defer c.Close()
	_, _ = c.Write([]byte("\x00\x00garbage\r\n\r\n"))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(c)
	require.True(t, strings.HasPrefix(string(b), "HTTP/1.1 400"), "garbage got %q, want an HTTP 400", b)
}

// TestServerChainHasNoRoot checks that the hub presents its chain as IoT
// Hub and other public servers do: the leaf and its issuing CA, without
// the root. A client that does not trust the root then fails with an
// unknown issuer, not with a self-signed certificate in the chain.
func TestServerChainHasNoRoot(t *testing.T) {
	h := startHub(t)
	c, err := tls.Dial("tcp", h.Addrs()[0].String(), clientTLS(h))
	require.NoError(t, err, "dial TLS")
	defer c.Close()
	chain := c.ConnectionState().PeerCertificates
	require.Len(t, chain, 2, "the hub should present the leaf and its issuing CA")
	for i, cert := range chain {
		require.Error(t, cert.CheckSignatureFrom(cert), "certificate %d (%s) is self-signed: a root in the chain", i, cert.Subject)
		require.NotEqual(t, cert.RawSubject, cert.RawIssuer, "certificate %d (%s) is self-issued: a root in the chain", i, cert.Subject)
		require.False(t, cert.Equal(h.CA.Cert), "certificate %d is the hub's root CA", i)
	}
	notChain := fmt.Sprintf("chain %s <- %s is not leaf <- issuing CA <- root", chain[0].Subject, chain[1].Subject)
	require.True(t, chain[1].IsCA, notChain)
	require.NoError(t, chain[1].CheckSignatureFrom(h.CA.Cert), notChain)
	require.NoError(t, chain[0].CheckSignatureFrom(chain[1]), notChain)

	// Without the root, verification fails for an unknown authority.
	_, err = tls.Dial("tcp", h.Addrs()[0].String(), &tls.Config{ServerName: "localhost", MinVersion: tls.VersionTLS12})
	var unknown x509.UnknownAuthorityError
	require.ErrorAs(t, err, &unknown, "dial without the root")
}

// TestMQTTUsernameGatewayHost: the .NET device SDK puts GatewayHostName in
// the MQTT user name; the hub accepts its own gateway names there (with or
// without a port) and refuses any other host. The SAS audience stays the
// hub's host name.
func TestMQTTUsernameGatewayHost(t *testing.T) {
	h, err := Start(Options{HostName: "myhub.example"})
	require.NoError(t, err, "start the hub")
	t.Cleanup(func() { h.Close() })
	key := addDevice(t, h, "dev1")
	tok, err := auth.SignSAS(auth.Identity{HostName: "myhub.example", DeviceID: "dev1"}.Resource(), "", key, time.Now().Add(time.Hour))
	require.NoError(t, err)
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
			if tc.ok {
				require.NoError(t, err, "user name host %q refused", tc.host)
			} else {
				require.Error(t, err, "user name host %q accepted", tc.host)
			}
			if c != nil && err == nil {
				c.Disconnect(0)
			}
		})
	}
}
