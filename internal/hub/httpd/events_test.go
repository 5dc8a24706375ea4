package httpd

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"maps"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

// deviceToken signs a SAS token for an identity's resource with key.
func deviceToken(t *testing.T, id auth.Identity, key string, expiry time.Time) string {
	t.Helper()
	id.HostName = testHost
	tok, err := auth.SignSAS(id.Resource(), "", key, expiry)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// postEvent sends a telemetry request.
func (h *testHub) postEvent(path, body, authz string, headers map[string]string) response {
	h.t.Helper()
	return h.do(request{method: http.MethodPost, path: path, body: body, auth: authz, headers: headers})
}

func TestEventsHTTP(t *testing.T) {
	h := newTestHub(t)
	dev := h.createDevice("dev1")
	h.createDevice("dev2")
	mod := h.createModule("dev1", "mod1")
	devKey := *dev.Authentication.SymmetricKey.PrimaryKey
	modKey := *mod.Authentication.SymmetricKey.PrimaryKey
	devTok := deviceToken(t, auth.Identity{DeviceID: "dev1"}, devKey, time.Now().Add(time.Hour))
	modTok := deviceToken(t, auth.Identity{DeviceID: "dev1", ModuleID: "mod1"}, modKey, time.Now().Add(time.Hour))

	for i, tc := range []struct {
		name    string
		path    string
		authz   string
		headers map[string]string
		body    string
		module  string
		props   map[string]string
		mid     string
		cid     string
		ct, ce  string
	}{
		{name: "system and application properties", path: "/devices/dev1/messages/events?" + apiVersion, authz: devTok,
			headers: map[string]string{
				"iothub-messageid": "m-1", "IoTHub-CorrelationId": "c/1 x", "iothub-contenttype": "application/json",
				"iothub-contentencoding": "utf-8", "iothub-app-Alert": "true", "iothub-app-site": "b-12",
				"iothub-app-odd": "!#$%&'*+-.^_`|~", "iothub-to": "/devices/dev1/messages/events",
				"Content-Type": "text/plain", "User-Agent": "test"},
			body:  `{"temp":21.5}`,
			props: map[string]string{"alert": "true", "site": "b-12", "odd": "!#$%&'*+-.^_`|~"},
			mid:   "m-1", cid: "c/1 x", ct: "application/json", ce: "utf-8"},
		{name: "no properties, empty body", path: "/devices/dev1/messages/events?" + apiVersion, authz: devTok},
		{name: "escaped path, case-insensitive literals, trailing slash", path: "/Devices/%64ev1/Messages/Events/?" + apiVersion,
			authz: devTok, body: "x"},
		{name: "module", path: "/devices/dev1/modules/mod1/messages/events?" + apiVersion, authz: modTok, module: "mod1",
			headers: map[string]string{"iothub-app-k": "v"}, body: "from a module", props: map[string]string{"k": "v"}},
		{name: "policy token with DeviceConnect", path: "/devices/dev2/messages/events?" + apiVersion,
			authz: h.tokenAt("device", testHost, time.Now().Add(time.Hour)), body: "policy"},
		{name: "policy token for the devices path", path: "/devices/dev2/messages/events?" + apiVersion,
			authz: h.tokenAt("iothubowner", testHost+"/devices", time.Now().Add(time.Hour)), body: "owner"},
	} {
		res := h.postEvent(tc.path, tc.body, tc.authz, tc.headers)
		if res.status != http.StatusNoContent || len(res.body) != 0 {
			t.Fatalf("%s: %d %s", tc.name, res.status, res.body)
		}
		evs := h.e.Events()
		if len(evs) != i+1 {
			t.Fatalf("%s: engine holds %d events, want %d", tc.name, len(evs), i+1)
		}
		ev := evs[i]
		if ev.Identity.ModuleID != tc.module || ev.Protocol != "http" || string(ev.Body) != tc.body ||
			ev.MessageID != tc.mid || ev.CorrelationID != tc.cid || ev.ContentType != tc.ct || ev.ContentEncoding != tc.ce {
			t.Errorf("%s: event %+v", tc.name, ev)
		}
		if len(ev.Properties) != len(tc.props) || (len(tc.props) > 0 && !maps.Equal(ev.Properties, tc.props)) {
			t.Errorf("%s: properties %q, want %q", tc.name, ev.Properties, tc.props)
		}
	}
}

func TestEventsHTTPRefused(t *testing.T) {
	h := newTestHub(t)
	dev := h.createDevice("dev1")
	dev2 := h.createDevice("dev2")
	h.createModule("dev1", "mod1")
	devKey := *dev.Authentication.SymmetricKey.PrimaryKey
	devTok := deviceToken(t, auth.Identity{DeviceID: "dev1"}, devKey, time.Now().Add(time.Hour))
	path := "/devices/dev1/messages/events?" + apiVersion

	for _, tc := range []struct {
		name    string
		method  string
		path    string
		authz   string
		headers map[string]string
		body    string
		code    int // hub error code; 405 for the plain method error
	}{
		{name: "no token", path: path, code: engine.CodeUnauthorized},
		{name: "another device's token", path: path, code: engine.CodeUnauthorized,
			authz: deviceToken(t, auth.Identity{DeviceID: "dev2"}, *dev2.Authentication.SymmetricKey.PrimaryKey, time.Now().Add(time.Hour))},
		{name: "device token signed with another key", path: path, code: engine.CodeUnauthorized,
			authz: deviceToken(t, auth.Identity{DeviceID: "dev1"}, *dev2.Authentication.SymmetricKey.PrimaryKey, time.Now().Add(time.Hour))},
		{name: "expired token", path: path, code: engine.CodeUnauthorized,
			authz: deviceToken(t, auth.Identity{DeviceID: "dev1"}, devKey, time.Now().Add(-time.Hour))},
		{name: "device token on its module's path", path: "/devices/dev1/modules/mod1/messages/events?" + apiVersion,
			authz: devTok, code: engine.CodeUnauthorized},
		{name: "policy without DeviceConnect", path: path, code: engine.CodeUnauthorized,
			authz: h.tokenAt("service", testHost, time.Now().Add(time.Hour))},
		{name: "bearer token", path: path, authz: "Bearer abc", code: engine.CodeUnauthorized},
		{name: "unknown device", path: "/devices/nobody/messages/events?" + apiVersion, code: engine.CodeUnauthorized,
			authz: deviceToken(t, auth.Identity{DeviceID: "nobody"}, devKey, time.Now().Add(time.Hour))},
		{name: "no api-version", path: "/devices/dev1/messages/events", authz: devTok, code: engine.CodeInvalidProtocolVersion},
		{name: "GET", method: http.MethodGet, path: path, authz: devTok, code: 405},
		{name: "space in a value", path: path, authz: devTok, code: engine.CodeArgumentInvalid,
			headers: map[string]string{"iothub-app-a": "x y"}},
		{name: "slash in a value", path: path, authz: devTok, code: engine.CodeArgumentInvalid,
			headers: map[string]string{"iothub-app-a": "x/y"}},
		{name: "non-ASCII value", path: path, authz: devTok, code: engine.CodeArgumentInvalid,
			headers: map[string]string{"iothub-app-a": "é"}},
		{name: "empty name", path: path, authz: devTok, code: engine.CodeArgumentInvalid,
			headers: map[string]string{"iothub-app-": "x"}},
		{name: "batch", path: path, authz: devTok, code: engine.CodeArgumentInvalid, body: "[]",
			headers: map[string]string{"Content-Type": "application/vnd.microsoft.iothub.json"}},
		{name: "body over 256 KB", path: path, authz: devTok, code: engine.CodeMessageTooLarge,
			body: strings.Repeat("x", engine.MaxEventSize+1)},
		{name: "body and properties over 256 KB", path: path, authz: devTok, code: engine.CodeMessageTooLarge,
			body: strings.Repeat("x", engine.MaxEventSize-3), headers: map[string]string{"iothub-app-ab": "cd"}},
		{name: "body and system properties over 256 KB", path: path, authz: devTok, code: engine.CodeMessageTooLarge,
			body: strings.Repeat("x", engine.MaxEventSize), headers: map[string]string{"iothub-messageid": "1"}},
	} {
		method := tc.method
		if method == "" {
			method = http.MethodPost
		}
		res := h.do(request{method: method, path: tc.path, auth: tc.authz, headers: tc.headers, body: tc.body})
		if tc.code == 405 {
			if res.status != 405 || res.header.Get("Allow") != "POST" {
				t.Errorf("%s: %d Allow=%q", tc.name, res.status, res.header.Get("Allow"))
			}
			continue
		}
		t.Run(tc.name, func(t *testing.T) { wantError(t, res, tc.code) })
	}
	if n := h.e.EventCount(); n != 0 {
		t.Fatalf("refused requests stored %d events", n)
	}

	// A repeated application property.
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+path, strings.NewReader("x"))
	req.Header.Set("Authorization", devTok)
	req.Header.Add("iothub-app-a", "1")
	req.Header.Add("iothub-app-a", "2")
	res, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	wantError(t, response{status: res.StatusCode, header: res.Header, body: b}, engine.CodeArgumentInvalid)

	// At exactly 256 KB the message is accepted.
	ok := h.postEvent(path, strings.Repeat("x", engine.MaxEventSize-2), devTok, map[string]string{"iothub-app-a": "b"})
	if ok.status != http.StatusNoContent {
		t.Fatalf("256 KB message: %d %s", ok.status, ok.body)
	}

	// An empty value is allowed.
	req, _ = http.NewRequest(http.MethodPost, h.srv.URL+path, strings.NewReader("x"))
	req.Header.Set("Authorization", devTok)
	req.Header["Iothub-App-Empty"] = []string{""}
	res, err = h.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	evs := h.e.Events()
	if res.StatusCode != http.StatusNoContent || len(evs) != 2 || evs[1].Properties["empty"] != "" || len(evs[1].Properties) != 1 {
		t.Fatalf("empty property value: %d, events %+v", res.StatusCode, evs)
	}
}

func TestEventsHTTPLastActivity(t *testing.T) {
	h := newTestHub(t)
	dev := h.createDevice("dev1")
	tok := deviceToken(t, auth.Identity{DeviceID: "dev1"}, *dev.Authentication.SymmetricKey.PrimaryKey, time.Now().Add(time.Hour))
	if dev.LastActivityTime != "0001-01-01T00:00:00" {
		t.Fatalf("new device lastActivityTime %q", dev.LastActivityTime)
	}
	start := time.Now().UTC()
	if res := h.postEvent("/devices/dev1/messages/events?"+apiVersion, "x", tok, nil); res.status != http.StatusNoContent {
		t.Fatalf("%d %s", res.status, res.body)
	}
	after, _ := h.e.GetDevice("dev1")
	got, err := time.Parse("2006-01-02T15:04:05.0000000Z", after.LastActivityTime)
	if err != nil || got.Before(start.Truncate(time.Microsecond)) || got.After(time.Now()) {
		t.Fatalf("lastActivityTime %q (%v), want about %v", after.LastActivityTime, err, start)
	}
	if after.ETag != dev.ETag || after.ConnectionState != "Disconnected" {
		t.Fatalf("telemetry changed etag %q→%q or connection state %q", dev.ETag, after.ETag, after.ConnectionState)
	}
	res := h.registry(http.MethodGet, "/devices/dev1", "", nil)
	if !bytes.Contains(res.body, []byte(`"lastActivityTime":"`+after.LastActivityTime+`"`)) {
		t.Fatalf("registry GET does not show the new lastActivityTime: %s", res.body)
	}
}

// clientCert returns a self-signed client certificate with CN = cn.
func clientCert(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// addX509 registers a selfSigned identity for cert's thumbprint.
func addX509(t *testing.T, e *engine.Engine, id auth.Identity, cert tls.Certificate) {
	t.Helper()
	tp := auth.ComputeThumbprints(cert.Leaf.Raw).SHA256
	a := engine.Authentication{Type: engine.AuthSelfSigned, X509Thumbprint: engine.X509Thumbprint{PrimaryThumbprint: &tp}}
	var herr *engine.Error
	if id.ModuleID == "" {
		_, herr = e.PutDevice(id.DeviceID, engine.Device{Authentication: a}, "")
	} else {
		_, herr = e.PutModule(id.DeviceID, id.ModuleID, engine.Module{Authentication: a}, "")
	}
	if herr != nil {
		t.Fatal(herr)
	}
}

// X.509 devices over real mutual TLS (the handler reads r.TLS when the
// context carries no chain).
func TestEventsHTTPX509(t *testing.T) {
	e, err := engine.New(engine.Config{HostName: testHost})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(NewHandler(e))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	t.Cleanup(e.Close)

	good := clientCert(t, "x509dev")
	other := clientCert(t, "x509dev")
	addX509(t, e, auth.Identity{DeviceID: "x509dev"}, good)
	addX509(t, e, auth.Identity{DeviceID: "x509dev", ModuleID: "m"}, good)
	e.PutDevice("sasdev", engine.Device{}, "")

	post := func(cert *tls.Certificate, path string) response {
		t.Helper()
		tr := srv.Client().Transport.(*http.Transport).Clone()
		if cert != nil {
			tr.TLSClientConfig.Certificates = []tls.Certificate{*cert}
		}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path+"?"+apiVersion, strings.NewReader("x509 body"))
		req.Header.Set("iothub-app-via", "cert")
		res, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return response{status: res.StatusCode, header: res.Header, body: b}
	}
	if res := post(&good, "/devices/x509dev/messages/events"); res.status != http.StatusNoContent {
		t.Fatalf("X.509 device: %d %s", res.status, res.body)
	}
	if res := post(&good, "/devices/x509dev/modules/m/messages/events"); res.status != http.StatusNoContent {
		t.Fatalf("X.509 module: %d %s", res.status, res.body)
	}
	evs := e.Events()
	if len(evs) != 2 || evs[0].Identity.DeviceID != "x509dev" || evs[1].Identity.ModuleID != "m" || evs[0].Properties["via"] != "cert" {
		t.Fatalf("events %+v", evs)
	}
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
		path string
	}{
		{"wrong certificate", &other, "/devices/x509dev/messages/events"},
		{"no certificate", nil, "/devices/x509dev/messages/events"},
		{"certificate for a SAS device", &good, "/devices/sasdev/messages/events"},
	} {
		t.Run(tc.name, func(t *testing.T) { wantError(t, post(tc.cert, tc.path), engine.CodeUnauthorized) })
	}
	if n := e.EventCount(); n != 2 {
		t.Fatalf("refused requests stored events: %d", n)
	}
}

// The hub's front end terminates TLS itself and hands the chain over in
// the request context (engine.WithPeerCertificates).
func TestEventsHTTPPeerCertificatesContext(t *testing.T) {
	e, err := engine.New(engine.Config{HostName: testHost})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	cert := clientCert(t, "ctxdev")
	addX509(t, e, auth.Identity{DeviceID: "ctxdev"}, cert)
	handler := NewHandler(e)
	for _, tc := range []struct {
		name  string
		chain []*x509.Certificate
		want  int
	}{
		{"chain in the context", []*x509.Certificate{cert.Leaf}, http.StatusNoContent},
		{"other chain", []*x509.Certificate{clientCert(t, "ctxdev").Leaf}, http.StatusUnauthorized},
		{"no chain", nil, http.StatusUnauthorized},
	} {
		req := httptest.NewRequest(http.MethodPost, "https://"+testHost+"/devices/ctxdev/messages/events?"+apiVersion, strings.NewReader("ctx"))
		req = req.WithContext(engine.WithPeerCertificates(req.Context(), tc.chain))
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s: %d %s", tc.name, rec.Code, rec.Body)
		}
	}
	if evs := e.Events(); len(evs) != 1 || string(evs[0].Body) != "ctx" {
		t.Fatalf("events %+v", evs)
	}
}

func TestMatchEventsRoute(t *testing.T) {
	for _, tc := range []struct {
		path     string
		dev, mod string
		ok       bool
	}{
		{"/devices/d1/messages/events", "d1", "", true},
		{"/devices/d%2F1/messages/events/", "d/1", "", true},
		{"/DEVICES/d1/MODULES/m1/MESSAGES/EVENTS", "d1", "m1", true},
		{"/devices/d1/messages/devicebound", "", "", false},
		{"/devices//messages/events", "", "", false},
		{"/devices/d1/modules//messages/events", "", "", false},
		{"/devices/%zz/messages/events", "", "", false},
		{"/devices/d1", "", "", false},
		{"/devices/d1/modules/m1", "", "", false},
		{"/twins/d1/messages/events", "", "", false},
	} {
		id, ok := matchEventsRoute(tc.path)
		if ok != tc.ok || id.DeviceID != tc.dev || id.ModuleID != tc.mod {
			t.Errorf("matchEventsRoute(%q) = %+v %v", tc.path, id, ok)
		}
	}
}

func TestValidPropertyText(t *testing.T) {
	for s, want := range map[string]bool{
		"": true, "abcXYZ019": true, "!#$%&'*+-.^_`|~": true,
		"a b": false, "a/b": false, "a:b": false, "a,b": false, "a;b": false, `a"b`: false,
		"a=b": false, "a?b": false, "(a)": false, "a@b": false, "é": false, "a\tb": false,
		"{}": false, "[]": false, `a\b`: false, "<>": false,
	} {
		if got := validPropertyText(s); got != want {
			t.Errorf("validPropertyText(%q) = %v", s, got)
		}
	}
}
