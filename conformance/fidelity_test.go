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
	if err != nil {
		t.Fatal(err)
	}
	tok, err := auth.SignSAS(cs.HostName, cs.SharedAccessKeyName, cs.SharedAccessKey, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
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
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", tok)
	if body != "" {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Transport: tr, Timeout: time.Minute}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
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
		if code != 0 {
			t.Fatalf("invoke exit %d: %v", code, mustJSON(res))
		}
		if got, want := mustJSON(res), `{"payload":{"payload":null,"result":"ok"},"status":200}`; got != want {
			t.Fatalf("invoke result\n got %s\nwant %s", got, want)
		}
	})

	t.Run("no payload member", func(t *testing.T) {
		// The portal and the az CLI omit the member; the device gets an
		// empty body, which the Node device SDK cannot JSON.parse and
		// answers itself with 400 "Invalid request format".
		r := rawService(t, h, "POST", "/twins/dev-null/methods", `{"methodName":"reboot","responseTimeoutInSeconds":30}`, nil)
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		if !strings.HasPrefix(r.body, `{"status":400,"payload":"Invalid request format: `) {
			t.Fatalf("body %s; want the Node device's 400 answer to an empty body", r.body)
		}
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
			if strings.Contains(s, "self-signed certificate in certificate chain") || strings.Contains(s, "SELF_SIGNED_CERT_IN_CHAIN") {
				t.Fatalf("the hub sent its root: %s", s)
			}
			t.Logf("device.js: %s", s)
			if !strings.Contains(s, "unable to get local issuer certificate") {
				t.Fatalf("device.js output %q; want Node's unknown-issuer error", s)
			}
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
	if err == nil || strings.Contains(string(out), "READY") {
		t.Fatalf("device.js connected (%v):\n%s", err, out)
	}
	return string(out)
}

// writeDeviceCert writes a certificate for deviceID, issued by ca, and its
// key as PEM files, and returns their paths.
func writeDeviceCert(t *testing.T, ca *pki.CA, deviceID string) (certFile, keyFile string) {
	t.Helper()
	cert, err := ca.IssueClient(deviceID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var certPEM []byte
	for _, der := range cert.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, deviceID+".pem"), filepath.Join(dir, deviceID+".key")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestFidelityDeviceCA checks `iothub hub --device-ca` (issue 15, point 4):
// a Node device whose certificate a trusted CA signed connects with
// x509=true and answers a method; under a hub that does not trust its CA it
// is refused.
func TestFidelityDeviceCA(t *testing.T) {
	ca, err := pki.NewCA("conformance fleet CA")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "fleet-ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := writeDeviceCert(t, ca, "dev-ca")
	const deviceCS = "HostName=localhost;DeviceId=dev-ca;x509=true"
	register := func(t *testing.T, h *hubProc) {
		t.Helper()
		r := rawService(t, h, "PUT", "/devices/dev-ca", `{"deviceId":"dev-ca","authentication":{"type":"certificateAuthority"}}`, nil)
		if r.status != 200 {
			t.Fatalf("create dev-ca: %d %s", r.status, r.body)
		}
	}

	t.Run("trusted CA", func(t *testing.T) {
		h := startHubWith(t, []string{"--device-ca", caFile})
		if !strings.Contains(h.stderrDump.String(), `trusting device CA "CN=conformance fleet CA`) {
			t.Errorf("the hub did not print the trusted CA's subject; log:\n%s", h.stderrDump.String())
		}
		register(t, h)
		h.deviceCS["dev-ca"] = deviceCS
		for _, tr := range []string{"mqtt", "amqp"} {
			t.Run(tr, func(t *testing.T) {
				devicePeer(t, h, "dev-ca", tr, "CERT_FILE="+certFile, "KEY_FILE="+keyFile)
				res, code := invoke(t, h, "dev-ca", `{"x509":"ca"}`)
				if code != 0 {
					t.Fatalf("invoke exit %d: %v", code, mustJSON(res))
				}
				if got, want := mustJSON(res), `{"payload":{"payload":{"x509":"ca"},"result":"ok"},"status":200}`; got != want {
					t.Fatalf("invoke result\n got %s\nwant %s", got, want)
				}
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
	if code != 0 {
		t.Fatalf("registry_fidelity.js exit %d: %s", code, mustJSON(res))
	}
	field := func(k string) map[string]any { m, _ := res[k].(map[string]any); return m }
	for _, k := range []string{"getMissing", "deleteMissing"} {
		if e := field(k); e["name"] != "DeviceNotFoundError" || e["statusCode"] != float64(404) {
			t.Errorf("%s: %s, want DeviceNotFoundError 404", k, mustJSON(e))
		}
	}
	// The Node SDK maps only DeviceNotFound and IotHubNotFound to typed 404s.
	if e := field("getMissingModule"); e["statusCode"] != float64(404) {
		t.Errorf("getMissingModule: %s, want a 404", mustJSON(e))
	}
	edge, leaf, child := field("edge"), field("leaf"), field("child")
	scope, _ := edge["deviceScope"].(string)
	if scope != "ms-azure-iot-edge://fid-edge-"+edge["generationId"].(string) || mustJSON(edge["parentScopes"]) != "[]" {
		t.Errorf("edge device: %s", mustJSON(edge))
	}
	if leaf["deviceScope"] != scope || mustJSON(leaf["parentScopes"]) != mustJSON([]string{scope}) {
		t.Errorf("leaf device: %s, want scope and parentScopes %s", mustJSON(leaf), scope)
	}
	if child["deviceScope"] != "ms-azure-iot-edge://fid-child-"+child["generationId"].(string) || mustJSON(child["parentScopes"]) != mustJSON([]string{scope}) {
		t.Errorf("child edge device: %s", mustJSON(child))
	}
	for _, k := range []string{"unknownScope", "leafToUnknownScope"} {
		if e := field(k); e["name"] != "ArgumentError" || e["statusCode"] != float64(400) || !strings.Contains(e["message"].(string), "does not belong to an IoT Edge device") {
			t.Errorf("%s: %s, want ArgumentError 400 with the hub's text", k, mustJSON(e))
		}
	}
	if p := field("plain"); p["deviceScope"] != nil || mustJSON(p["parentScopes"]) != "[]" {
		t.Errorf("plain device: %s", mustJSON(p))
	}
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
		if err != nil {
			t.Fatal(err)
		}
		tp, err := cs.TokenProvider(nil)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := tp.Token(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		addr := cs.Address()
		if _, _, err := net.SplitHostPort(addr); err != nil {
			addr = net.JoinHostPort(addr, "8883")
		}
		c, err := pahodev.Dial(t, pahodev.Options{URL: "tls://" + addr, TLS: hubTLS(t, h),
			Identity: cs.Identity(), Password: tok.Value})
		if err != nil {
			t.Fatal(err)
		}
		pahodev.Serve(t, c, func([]byte) (int, []byte) { return 200, []byte(`{'filename': 'logs.zip'}`) })
		res, code := invoke(t, h, "dev-badjson", `{"x":1}`)
		e, _ := res["error"].(map[string]any)
		if code != 1 || e == nil || e["name"] != "BadDeviceResponseError" || e["statusCode"] != float64(502) {
			t.Fatalf("invoke: exit %d, %s; want BadDeviceResponseError 502", code, mustJSON(res))
		}
		if body, _ := e["responseBody"].(string); !strings.Contains(body, `502001`) {
			t.Fatalf("502 body %q does not carry errorCode 502001", body)
		}
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
				if code != 0 || mustJSON(res) != `{"payload":{"payload":{"via":"gateway"},"result":"ok"},"status":200}` {
					t.Fatalf("invoke exit %d: %s", code, mustJSON(res))
				}
			})
		}
	})

	t.Run("AMQP takeover", func(t *testing.T) {
		out := devicePeer(t, h, "dev-amqp", "amqp", "DEBUG=rhea:frames")
		goDevice(t, h, "dev-amqp", "amqp")
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(out(), "DISCONNECTED") && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		// The Node SDK logs only the condition; rhea's frame log shows the
		// detach it received, with IoT Hub's JSON error description.
		if s := out(); !strings.Contains(s, "409002") || !strings.Contains(s, "amqp:link:stolen") {
			t.Fatalf("the replaced Node device reported:\n%s\nwant amqp:link:stolen with 409002 LinkCreationConflict", s)
		}
	})
}
