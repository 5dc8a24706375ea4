package httpd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

// deviceToken signs a SAS token for an identity's resource with key.
func deviceToken(t *testing.T, id auth.Identity, key string, expiry time.Time) string {
	t.Helper()
	id.HostName = testHost
	tok, err := auth.SignSAS(id.Resource(), "", key, expiry)
	require.NoError(t, err, "sign a token for %v", id)
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
		require.Equal(t, http.StatusNoContent, res.status, "%s: body %s", tc.name, res.body)
		require.Empty(t, res.body, "%s: body", tc.name)
		evs := h.e.Events()
		require.Len(t, evs, i+1, "%s: events in the engine", tc.name)
		ev := evs[i]
		assert.Equal(t, tc.module, ev.Identity.ModuleID, "%s: module", tc.name)
		assert.Equal(t, "http", ev.Protocol, "%s: protocol", tc.name)
		assert.Equal(t, tc.body, string(ev.Body), "%s: body", tc.name)
		assert.Equal(t, tc.mid, ev.MessageID, "%s: message ID", tc.name)
		assert.Equal(t, tc.cid, ev.CorrelationID, "%s: correlation ID", tc.name)
		assert.Equal(t, tc.ct, ev.ContentType, "%s: content type", tc.name)
		assert.Equal(t, tc.ce, ev.ContentEncoding, "%s: content encoding", tc.name)
		assert.Len(t, ev.Properties, len(tc.props), "%s: properties", tc.name)
		if len(tc.props) > 0 {
			assert.Equal(t, tc.props, ev.Properties, "%s: properties", tc.name)
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
			assert.Equal(t, 405, res.status, "%s: status", tc.name)
			assert.Equal(t, "POST", res.header.Get("Allow"), "%s: Allow", tc.name)
			continue
		}
		t.Run(tc.name, func(t *testing.T) { wantError(t, res, tc.code) })
	}
	require.Zero(t, h.e.EventCount(), "events stored by refused requests")

	// A repeated application property.
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+path, strings.NewReader("x"))
	req.Header.Set("Authorization", devTok)
	req.Header.Add("iothub-app-a", "1")
	req.Header.Add("iothub-app-a", "2")
	res, err := h.srv.Client().Do(req)
	require.NoError(t, err, "post with a repeated property")
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	wantError(t, response{status: res.StatusCode, header: res.Header, body: b}, engine.CodeArgumentInvalid)

	// At exactly 256 KB the message is accepted.
	ok := h.postEvent(path, strings.Repeat("x", engine.MaxEventSize-2), devTok, map[string]string{"iothub-app-a": "b"})
	require.Equal(t, http.StatusNoContent, ok.status, "256 KB message: %s", ok.body)

	// An empty value is allowed.
	req, _ = http.NewRequest(http.MethodPost, h.srv.URL+path, strings.NewReader("x"))
	req.Header.Set("Authorization", devTok)
	req.Header["Iothub-App-Empty"] = []string{""}
	res, err = h.srv.Client().Do(req)
	require.NoError(t, err, "post with an empty property value")
	res.Body.Close()
	evs := h.e.Events()
	require.Equal(t, http.StatusNoContent, res.StatusCode, "empty property value")
	require.Equal(t, 2, len(evs), "events stored") // not Len: it would print 256 KB
	require.Equal(t, map[string]string{"empty": ""}, evs[1].Properties, "empty property value")
}

func TestEventsHTTPLastActivity(t *testing.T) {
	h := newTestHub(t)
	dev := h.createDevice("dev1")
	tok := deviceToken(t, auth.Identity{DeviceID: "dev1"}, *dev.Authentication.SymmetricKey.PrimaryKey, time.Now().Add(time.Hour))
	require.Equal(t, "0001-01-01T00:00:00", dev.LastActivityTime, "new device lastActivityTime")
	start := time.Now().UTC()
	res := h.postEvent("/devices/dev1/messages/events?"+apiVersion, "x", tok, nil)
	require.Equal(t, http.StatusNoContent, res.status, "body %s", res.body)
	after, _ := h.e.GetDevice("dev1")
	got, err := time.Parse("2006-01-02T15:04:05.0000000Z", after.LastActivityTime)
	require.NoError(t, err, "lastActivityTime %q", after.LastActivityTime)
	require.False(t, got.Before(start.Truncate(time.Microsecond)), "lastActivityTime %q, want about %v", after.LastActivityTime, start)
	require.False(t, got.After(time.Now()), "lastActivityTime %q, want about %v", after.LastActivityTime, start)
	require.Equal(t, dev.ETag, after.ETag, "telemetry changed the etag")
	require.Equal(t, "Disconnected", after.ConnectionState, "telemetry changed the connection state")
	res = h.registry(http.MethodGet, "/devices/dev1", "", nil)
	require.Contains(t, string(res.body), `"lastActivityTime":"`+after.LastActivityTime+`"`, "registry GET does not show the new lastActivityTime")
}

// clientCert returns a self-signed client certificate with CN = cn.
func clientCert(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
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
	require.Nil(t, herr, "register %v", id)
}

// X.509 devices over real mutual TLS (the handler reads r.TLS when the
// context carries no chain).
func TestEventsHTTPX509(t *testing.T) {
	e, err := engine.New(engine.Config{HostName: testHost})
	require.NoError(t, err, "new engine")
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

	post := func(t *testing.T, cert *tls.Certificate, path string) response {
		t.Helper()
		tr := srv.Client().Transport.(*http.Transport).Clone()
		if cert != nil {
			tr.TLSClientConfig.Certificates = []tls.Certificate{*cert}
		}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path+"?"+apiVersion, strings.NewReader("x509 body"))
		req.Header.Set("iothub-app-via", "cert")
		res, err := (&http.Client{Transport: tr}).Do(req)
		require.NoError(t, err, "post %s", path)
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return response{status: res.StatusCode, header: res.Header, body: b}
	}
	res := post(t, &good, "/devices/x509dev/messages/events")
	require.Equal(t, http.StatusNoContent, res.status, "X.509 device: %s", res.body)
	res = post(t, &good, "/devices/x509dev/modules/m/messages/events")
	require.Equal(t, http.StatusNoContent, res.status, "X.509 module: %s", res.body)
	evs := e.Events()
	require.Len(t, evs, 2, "events")
	require.Equal(t, "x509dev", evs[0].Identity.DeviceID, "first event's device")
	require.Equal(t, "m", evs[1].Identity.ModuleID, "second event's module")
	require.Equal(t, "cert", evs[0].Properties["via"], "first event's property via")
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
		path string
	}{
		{"wrong certificate", &other, "/devices/x509dev/messages/events"},
		{"no certificate", nil, "/devices/x509dev/messages/events"},
		{"certificate for a SAS device", &good, "/devices/sasdev/messages/events"},
	} {
		t.Run(tc.name, func(t *testing.T) { wantError(t, post(t, tc.cert, tc.path), engine.CodeUnauthorized) })
	}
	require.Equal(t, uint64(2), e.EventCount(), "refused requests stored events")
}

// The hub's front end terminates TLS itself and hands the chain over in
// the request context (engine.WithPeerCertificates).
func TestEventsHTTPPeerCertificatesContext(t *testing.T) {
	e, err := engine.New(engine.Config{HostName: testHost})
	require.NoError(t, err, "new engine")
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
		assert.Equal(t, tc.want, rec.Code, "%s: body %s", tc.name, rec.Body)
	}
	evs := e.Events()
	require.Len(t, evs, 1, "events")
	require.Equal(t, "ctx", string(evs[0].Body), "event body")
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
		assert.Equal(t, tc.ok, ok, "matchEventsRoute(%q) matches", tc.path)
		assert.Equal(t, tc.dev, id.DeviceID, "matchEventsRoute(%q) device", tc.path)
		assert.Equal(t, tc.mod, id.ModuleID, "matchEventsRoute(%q) module", tc.path)
	}
}

func TestValidPropertyText(t *testing.T) {
	for s, want := range map[string]bool{
		"": true, "abcXYZ019": true, "!#$%&'*+-.^_`|~": true,
		"a b": false, "a/b": false, "a:b": false, "a,b": false, "a;b": false, `a"b`: false,
		"a=b": false, "a?b": false, "(a)": false, "a@b": false, "é": false, "a\tb": false,
		"{}": false, "[]": false, `a\b`: false, "<>": false,
	} {
		assert.Equal(t, want, validPropertyText(s), "validPropertyText(%q)", s)
	}
}
