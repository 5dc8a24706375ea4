//go:build conformance

package conformance

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/pki"
	"github.com/iothub-go/iothub/internal/testutil/pahodev"
)

// rawResponse is an HTTP answer of the hub as it came off the wire.
type rawResponse struct {
	status int
	header http.Header
	body   string
}

// rawService sends one HTTPS request to the hub's service API, signed with
// the hub's service connection string, and returns the answer unparsed. It
// is for requests that no official client sends (a method call without a
// payload member, as the portal and the az CLI send it) and for reading
// error bodies byte for byte.
func rawService(t *testing.T, h *hubProc, method, path, body string, header map[string]string) rawResponse {
	t.Helper()
	cs, err := auth.ParseServiceConnectionString(h.serviceCS)
	require.NoError(t, err)
	tok, err := auth.SignSAS(cs.HostName, cs.SharedAccessKeyName, cs.SharedAccessKey, time.Now().Add(time.Hour))
	require.NoError(t, err)
	tr := &http.Transport{TLSClientConfig: hubTLS(t, h)}
	defer tr.CloseIdleConnections()
	if !strings.Contains(path, "api-version=") {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		path += sep + "api-version=2021-04-12"
	}
	req, err := http.NewRequest(method, "https://"+cs.HostName+path, bytes.NewReader([]byte(body)))
	require.NoError(t, err)
	req.Header.Set("Authorization", tok)
	if body != "" {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Transport: tr, Timeout: time.Minute}).Do(req)
	require.NoError(t, err, "%s %s", method, path)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return rawResponse{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// TestFidelityPayloads checks, with the official Node SDK on both ends,
// how the hub relays method payloads (issue 15, point 1): JSON null is
// relayed as null, and a request without a payload member reaches the
// device as an empty body.
func TestFidelityPayloads(t *testing.T) {
	h := startHub(t, "dev-null")
	devicePeer(t, h, "dev-null", "mqtt")

	t.Run("null payload", func(t *testing.T) {
		// The official SDKs' end-to-end tests send null to the real
		// service and expect the device to see null and answer 200.
		res, code := invoke(t, h, "dev-null", "null")
		require.Equal(t, 0, code, "invoke exit status: %v", mustJSON(res))
		require.Equal(t, `{"payload":{"payload":null,"result":"ok"},"status":200}`, mustJSON(res), "invoke result")
	})

	t.Run("no payload member", func(t *testing.T) {
		// The portal and the az CLI omit the member; the device gets an
		// empty body, which the Node device SDK cannot JSON.parse and
		// answers itself with 400 "Invalid request format".
		r := rawService(t, h, "POST", "/twins/dev-null/methods", `{"methodName":"reboot","responseTimeoutInSeconds":30}`, nil)
		require.Equal(t, 200, r.status, "status: %s", r.body)
		require.True(t, strings.HasPrefix(r.body, `{"status":400,"payload":"Invalid request format: `),
			"body %s; want the Node device's 400 answer to an empty body", r.body)
	})
}

// TestFidelityTLSChain checks the chain the hub presents (issue 15, point
// 5): a Node device that does not trust the hub's CA fails as it would
// against IoT Hub, for an unknown issuer, and not because the hub sent a
// self-signed root.
func TestFidelityTLSChain(t *testing.T) {
	h := startHub(t, "dev-untrusting")
	for _, tr := range []string{"mqtt", "mqttws"} {
		t.Run(tr, func(t *testing.T) {
			s := deviceFails(t, "DEVICE_CS="+h.deviceCS["dev-untrusting"], "TRANSPORT="+tr, "CA_FILE=")
			require.NotContains(t, s, "self-signed certificate in certificate chain", "the hub sent its root")
			require.NotContains(t, s, "SELF_SIGNED_CERT_IN_CHAIN", "the hub sent its root")
			t.Logf("device.js: %s", s)
			require.Contains(t, s, "unable to get local issuer certificate", "device.js output; want Node's unknown-issuer error")
		})
	}
}

// deviceFails runs device.js with env, expects it to fail to connect, and
// returns its output.
func deviceFails(t *testing.T, env ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "device.js")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	require.Error(t, err, "device.js connected:\n%s", out)
	require.NotContains(t, string(out), "READY", "device.js connected (%v)", err)
	return string(out)
}

// writeDeviceCert writes a certificate for deviceID, issued by ca, and its
// key as PEM files, and returns their paths.
func writeDeviceCert(t *testing.T, ca *pki.CA, deviceID string) (certFile, keyFile string) {
	t.Helper()
	cert, err := ca.IssueClient(deviceID, time.Hour)
	require.NoError(t, err)
	var certPEM []byte
	for _, der := range cert.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, deviceID+".pem"), filepath.Join(dir, deviceID+".key")
	require.NoError(t, os.WriteFile(certFile, certPEM, 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600))
	return certFile, keyFile
}

// TestFidelityDeviceCA checks `iothub hub --device-ca` (issue 15, point 4):
// a Node device whose certificate a trusted CA signed connects with
// x509=true and answers a method; under a hub that does not trust its CA it
// is refused.
func TestFidelityDeviceCA(t *testing.T) {
	ca, err := pki.NewCA("conformance fleet CA")
	require.NoError(t, err)
	caFile := filepath.Join(t.TempDir(), "fleet-ca.pem")
	require.NoError(t, os.WriteFile(caFile, ca.CertPEM(), 0o600))
	certFile, keyFile := writeDeviceCert(t, ca, "dev-ca")
	const deviceCS = "HostName=localhost;DeviceId=dev-ca;x509=true"
	register := func(t *testing.T, h *hubProc) {
		t.Helper()
		r := rawService(t, h, "PUT", "/devices/dev-ca", `{"deviceId":"dev-ca","authentication":{"type":"certificateAuthority"}}`, nil)
		require.Equal(t, 200, r.status, "create dev-ca: %s", r.body)
	}

	t.Run("trusted CA", func(t *testing.T) {
		h := startHubWith(t, []string{"--device-ca", caFile})
		// The hub's stderr and stdout are copied by different goroutines:
		// a line it wrote before its connection strings may still be on
		// its way.
		const trusting = `trusting device CA "CN=conformance fleet CA`
		assert.Eventually(t, func() bool { return strings.Contains(h.stderr.String(), trusting) }, 10*time.Second, 10*time.Millisecond,
			"the hub did not print the trusted CA's subject")
		register(t, h)
		h.deviceCS["dev-ca"] = deviceCS
		for _, tr := range []string{"mqtt", "amqp"} {
			t.Run(tr, func(t *testing.T) {
				devicePeer(t, h, "dev-ca", tr, "CERT_FILE="+certFile, "KEY_FILE="+keyFile)
				res, code := invoke(t, h, "dev-ca", `{"x509":"ca"}`)
				require.Equal(t, 0, code, "invoke exit status: %v", mustJSON(res))
				require.Equal(t, `{"payload":{"payload":{"x509":"ca"},"result":"ok"},"status":200}`, mustJSON(res), "invoke result")
			})
		}
	})

	t.Run("no trusted CA", func(t *testing.T) {
		h := startHub(t)
		register(t, h)
		deviceFails(t, "DEVICE_CS="+deviceCS, "TRANSPORT=mqtt", "CA_FILE="+h.caFile, "CERT_FILE="+certFile, "KEY_FILE="+keyFile)
	})
}

// TestFidelityRegistry checks, with the official Node service SDK, the
// registry's error bodies (issue 15, point 2: a 404 becomes
// DeviceNotFoundError only when the body says ErrorCode:DeviceNotFound) and
// IoT Edge device scopes (point 3).
func TestFidelityRegistry(t *testing.T) {
	h := startHub(t)
	res, code := nodeJSON(t, "registry_fidelity.js", "SERVICE_CS="+h.serviceCS, "PREFIX=fid", "CA_FILE="+h.caFile)
	require.Equal(t, 0, code, "registry_fidelity.js exit status: %s", mustJSON(res))
	field := func(k string) map[string]any { m, _ := res[k].(map[string]any); return m }
	for _, k := range []string{"getMissing", "deleteMissing"} {
		e := field(k)
		assert.Equal(t, "DeviceNotFoundError", e["name"], "%s: %s", k, mustJSON(e))
		assert.Equal(t, float64(404), e["statusCode"], "%s: %s", k, mustJSON(e))
	}
	// The Node SDK maps only DeviceNotFound and IotHubNotFound to typed 404s.
	e := field("getMissingModule")
	assert.Equal(t, float64(404), e["statusCode"], "getMissingModule: %s", mustJSON(e))
	edge, leaf, child := field("edge"), field("leaf"), field("child")
	scope, _ := edge["deviceScope"].(string)
	edgeGen, _ := edge["generationId"].(string)
	assert.Equal(t, "ms-azure-iot-edge://fid-edge-"+edgeGen, scope, "edge device: %s", mustJSON(edge))
	assert.Equal(t, "[]", mustJSON(edge["parentScopes"]), "edge device: %s", mustJSON(edge))
	assert.Equal(t, scope, leaf["deviceScope"], "leaf device: %s", mustJSON(leaf))
	assert.Equal(t, mustJSON([]string{scope}), mustJSON(leaf["parentScopes"]), "leaf device: %s", mustJSON(leaf))
	childGen, _ := child["generationId"].(string)
	assert.Equal(t, "ms-azure-iot-edge://fid-child-"+childGen, child["deviceScope"], "child edge device: %s", mustJSON(child))
	assert.Equal(t, mustJSON([]string{scope}), mustJSON(child["parentScopes"]), "child edge device: %s", mustJSON(child))
	for _, k := range []string{"unknownScope", "leafToUnknownScope"} {
		e := field(k)
		assert.Equal(t, "ArgumentError", e["name"], "%s: %s", k, mustJSON(e))
		assert.Equal(t, float64(400), e["statusCode"], "%s: %s", k, mustJSON(e))
		msg, _ := e["message"].(string)
		assert.Contains(t, msg, "does not belong to an IoT Edge device", "%s: the hub's text", k)
	}
	p := field("plain")
	assert.Nil(t, p["deviceScope"], "plain device: %s", mustJSON(p))
	assert.Equal(t, "[]", mustJSON(p["parentScopes"]), "plain device: %s", mustJSON(p))
}

// TestFidelityStatusCodes checks issue 15, point 6 with the official Node
// SDK: a device answer that is not JSON reaches the Node service client as
// a 502 BadDeviceResponseError (502001 InvalidResponseWhileProxying), a
// Node device reaches the hub through its gateway name, and a Node AMQP
// device that another connection of its identity replaces is told 409002
// LinkCreationConflict.
func TestFidelityStatusCodes(t *testing.T) {
	h := startHub(t, "dev-badjson", "dev-amqp", "dev-gateway")

	t.Run("device answers with invalid JSON", func(t *testing.T) {
		cs, err := auth.ParseDeviceConnectionString(h.deviceCS["dev-badjson"])
		require.NoError(t, err)
		tp, err := cs.TokenProvider(nil)
		require.NoError(t, err)
		tok, err := tp.Token(context.Background())
		require.NoError(t, err)
		addr := cs.Address()
		if _, _, err := net.SplitHostPort(addr); err != nil {
			addr = net.JoinHostPort(addr, "8883")
		}
		c, err := pahodev.Dial(t, pahodev.Options{URL: "tls://" + addr, TLS: hubTLS(t, h),
			Identity: cs.Identity(), Password: tok.Value})
		require.NoError(t, err)
		pahodev.Serve(t, c, func([]byte) (int, []byte) { return 200, []byte(`{'filename': 'logs.zip'}`) })
		res, code := invoke(t, h, "dev-badjson", `{"x":1}`)
		e, _ := res["error"].(map[string]any)
		require.Equal(t, 1, code, "invoke: %s", mustJSON(res))
		require.NotNil(t, e, "invoke: %s", mustJSON(res))
		require.Equal(t, "BadDeviceResponseError", e["name"], "invoke: %s", mustJSON(res))
		require.Equal(t, float64(502), e["statusCode"], "invoke: %s", mustJSON(res))
		body, _ := e["responseBody"].(string)
		require.Contains(t, body, `502001`, "the 502 body's errorCode")
	})

	t.Run("gateway host name", func(t *testing.T) {
		// A Node device whose connection string names the hub's gateway
		// name 127.0.0.1 dials it and keeps HostName in the MQTT user
		// name; .NET would put 127.0.0.1 there, which the hub accepts too
		// (internal/hub TestMQTTUsernameGatewayHost).
		for _, tr := range []string{"mqtt", "amqp"} {
			t.Run(tr, func(t *testing.T) {
				devicePeer(t, h, "dev-gateway", tr, "DEVICE_CS="+h.deviceCS["dev-gateway"]+";GatewayHostName=127.0.0.1")
				res, code := invoke(t, h, "dev-gateway", `{"via":"gateway"}`)
				require.Equal(t, 0, code, "invoke exit status: %s", mustJSON(res))
				require.Equal(t, `{"payload":{"payload":{"via":"gateway"},"result":"ok"},"status":200}`, mustJSON(res), "invoke result")
			})
		}
	})

	t.Run("AMQP takeover", func(t *testing.T) {
		out := devicePeer(t, h, "dev-amqp", "amqp", "DEBUG=rhea:frames")
		goDevice(t, h, "dev-amqp", "amqp")
		// The Node SDK logs only the condition; rhea's frame log shows the
		// detach it received, with IoT Hub's JSON error description. The
		// frame log is on the peer's stderr and DISCONNECTED on its stdout,
		// copied by different goroutines: wait for all of it.
		seen := func(s string) bool {
			return strings.Contains(s, "DISCONNECTED") && strings.Contains(s, "409002") && strings.Contains(s, "amqp:link:stolen")
		}
		deadline := time.Now().Add(30 * time.Second)
		for !seen(out()) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		s := out()
		require.Contains(t, s, "409002", "the replaced Node device's report: want amqp:link:stolen with 409002 LinkCreationConflict")
		require.Contains(t, s, "amqp:link:stolen", "the replaced Node device's report: want amqp:link:stolen with 409002 LinkCreationConflict")
	})
}
