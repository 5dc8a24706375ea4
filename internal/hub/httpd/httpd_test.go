package httpd

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

// tamper flips one character of a token's signature.
func tamper(tok string) string {
	i := strings.Index(tok, "sig=") + len("sig=")
	c := byte('A')
	if tok[i] == 'A' {
		c = 'B'
	}
	return tok[:i] + string(c) + tok[i+1:]
}

func TestAuthorization(t *testing.T) {
	h := newTestHub(t)
	h.device("dev1", echo)
	devKey := func() string {
		d, _ := h.e.GetDevice("dev1")
		return *d.Authentication.SymmetricKey.PrimaryKey
	}()
	deviceToken, err := auth.SignSAS(auth.DeviceResource(testHost, "dev1"), "", devKey, time.Now().Add(time.Hour))
	require.NoError(t, err)
	owner, _ := h.e.Policy("iothubowner")
	secondary, err := auth.SignSAS(testHost, "iothubowner", owner.SecondaryKey, time.Now().Add(time.Hour))
	require.NoError(t, err)
	unknownPolicy, err := auth.SignSAS(testHost, "nosuchpolicy", owner.PrimaryKey, time.Now().Add(time.Hour))
	require.NoError(t, err)
	h.e.AddBearerToken("good-bearer", time.Now().Add(time.Hour))
	h.e.AddBearerToken("old-bearer", time.Now().Add(-time.Minute))

	const (
		invoke = "invoke"
		get    = "get"
		put    = "put"
		del    = "delete"
	)
	tests := []struct {
		name   string
		op     string
		header string
		ok     bool
	}{
		{"no header", invoke, "", false},
		{"garbage", invoke, "garbage", false},
		{"garbage SAS", invoke, "SharedAccessSignature garbage", false},
		{"expired beyond skew", invoke, h.tokenAt("service", testHost, time.Now().Add(-10*time.Minute)), false},
		{"expired within skew", invoke, h.tokenAt("service", testHost, time.Now().Add(-2*time.Minute)), true},
		{"tampered signature", invoke, tamper(h.token("service")), false},
		{"secondary key", invoke, secondary, true},
		{"unknown policy", invoke, unknownPolicy, false},
		{"registryRead invokes", invoke, h.token("registryRead"), false},
		{"registryReadWrite invokes", invoke, h.token("registryReadWrite"), false},
		{"device policy invokes", invoke, h.token("device"), false},
		{"service invokes", invoke, h.token("service"), true},
		{"owner invokes", invoke, h.token("iothubowner"), true},
		{"device key token", invoke, deviceToken, false},
		{"other hub", invoke, h.tokenAt("service", "other-hub.azure-devices.net", time.Now().Add(time.Hour)), false},
		{"hub name prefix", invoke, h.tokenAt("service", "test-hub.azure-devices.ne", time.Now().Add(time.Hour)), false},
		{"scoped to /devices, invoking", invoke, h.tokenAt("iothubowner", testHost+"/devices", time.Now().Add(time.Hour)), false},
		{"scoped to /devices, reading", get, h.tokenAt("iothubowner", testHost+"/devices", time.Now().Add(time.Hour)), true},
		{"bearer invokes", invoke, "Bearer good-bearer", true},
		{"bearer reads", get, "Bearer good-bearer", true},
		{"bearer unknown", invoke, "Bearer nope", false},
		{"bearer expired", invoke, "Bearer old-bearer", false},
		{"bearer empty", get, "Bearer ", false},
		{"registryRead reads", get, h.token("registryRead"), true},
		{"service reads", get, h.token("service"), false},
		{"registryRead writes", put, h.token("registryRead"), false},
		{"registryRead deletes", del, h.token("registryRead"), false},
		{"registryReadWrite writes", put, h.token("registryReadWrite"), true},
		{"registryReadWrite deletes", del, h.token("registryReadWrite"), true},
		{"service writes", put, h.token("service"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := h.in(t)
			var rq request
			switch tt.op {
			case invoke:
				rq = request{method: http.MethodPost, path: "/twins/dev1/methods?" + apiVersion, body: `{"methodName":"m"}`}
			case get:
				rq = request{method: http.MethodGet, path: "/devices/dev1?" + apiVersion}
			case put:
				rq = request{method: http.MethodPut, path: "/devices/victim?" + apiVersion, body: `{}`}
			case del:
				h.createDevice("victim")
				rq = request{method: http.MethodDelete, path: "/devices/victim?" + apiVersion}
			}
			t.Cleanup(func() { _ = h.e.DeleteDevice("victim", "") })
			rq.auth = tt.header
			res := h.do(rq)
			if tt.ok {
				require.Less(t, res.status, 300, "status; body %s", res.body)
				return
			}
			wantError(t, res, engine.CodeUnauthorized)
			// The answer never echoes the credential.
			secret := strings.TrimPrefix(tt.header, "Bearer ")
			if i := strings.Index(tt.header, "sig="); i >= 0 {
				secret, _, _ = strings.Cut(tt.header[i+4:], "&")
			}
			if len(secret) > 4 {
				assert.NotContains(t, string(res.body), secret, "error body echoes the credential")
			}
			assert.NotContains(t, string(res.body), owner.PrimaryKey, "error body echoes a key")
		})
	}
}

func TestAPIVersion(t *testing.T) {
	h := newTestHub(t)
	h.createDevice("dev1")
	tok := h.token("registryRead")
	for _, q := range []string{
		"api-version=2018-06-30", "api-version=2019-03-30", "api-version=2020-03-13",
		"api-version=2020-05-31-preview", "api-version=2020-09-30", "api-version=2021-04-12",
		"api-version=2021-11-30", "api-version=2035-01-31", "api-version=2031-07-01-preview",
		"api-version=2016-11-14", "api-version=2017-06-30",
		"API-Version=2021-04-12", "foo=bar&api-version=2021-04-12&x=%zz",
		"api-version=2021-04-12&api-version=garbage",
	} {
		t.Run(q, func(t *testing.T) {
			res := h.in(t).do(request{method: http.MethodGet, path: "/devices/dev1?" + q, auth: tok})
			require.Equal(t, http.StatusOK, res.status, "body %s", res.body)
		})
	}
	for _, q := range []string{
		"", "api-version=", "api-version=garbage", "api-version=2018-06-29", "api-version=2017-01-01",
		"api-version=2021-02-30", "api-version=2021-04-12x", "api-version=2021-04-12-beta",
		"api-version=21-04-12", "apiversion=2021-04-12", "api-version=%202021-04-12",
		"api-version=2021-13-01", "api-version=2021-04-1a", "api-version=2021/04/12", "api-version=-preview",
	} {
		t.Run("bad "+q, func(t *testing.T) {
			wantError(t, h.in(t).do(request{method: http.MethodGet, path: "/devices/dev1?" + q, auth: tok}), engine.CodeInvalidProtocolVersion)
		})
	}
	// The api-version is checked before authorization.
	wantError(t, h.do(request{method: http.MethodPost, path: "/twins/dev1/methods", body: `{}`}), engine.CodeInvalidProtocolVersion)
}

func TestServiceFaults(t *testing.T) {
	h := newTestHub(t)
	h.device("dev1", echo)

	h.e.FailServiceRequests(engine.CodeThrottling, 1)
	res := h.invoke("/twins/dev1/methods", `{"methodName":"m"}`)
	wantError(t, res, engine.CodeThrottling)
	assert.Equal(t, "ThrottlingException", res.header.Get("iothub-errorcode"), "iothub-errorcode")
	assert.Empty(t, res.header.Get("Retry-After"), "Retry-After: IoT Hub is not known to send one")
	res = h.invoke("/twins/dev1/methods", `{"methodName":"m"}`)
	require.Equal(t, http.StatusOK, res.status, "after the fault: %s", res.body)

	// An injected Retry-After: whole seconds rounded up, and milliseconds.
	h.e.FailServiceRequestsRetryAfter(engine.CodeThrottling, 1, 1500*time.Millisecond)
	res = h.invoke("/twins/dev1/methods", `{"methodName":"m"}`)
	wantError(t, res, engine.CodeThrottling)
	assert.Equal(t, "2", res.header.Get("Retry-After"), "Retry-After")
	assert.Equal(t, "1500", res.header.Get("Retry-After-Ms"), "Retry-After-Ms")

	// Faults are taken only by authorized requests, once each, on any route.
	h.e.FailServiceRequests(engine.CodeServiceUnavailable, 2)
	wantError(t, h.do(request{method: http.MethodGet, path: "/devices?" + apiVersion}), engine.CodeUnauthorized)
	wantError(t, h.registry(http.MethodGet, "/devices", "", nil), engine.CodeServiceUnavailable)
	wantError(t, h.registry(http.MethodPut, "/devices/new", `{}`, nil), engine.CodeServiceUnavailable)
	_, herr := h.e.GetDevice("new")
	assert.NotNil(t, herr, "a faulted PUT created the device")
	wantOK(t, h.registry(http.MethodPut, "/devices/new", `{}`, nil))

	// A code without a name: no iothub-errorcode header, status from the code.
	h.e.FailServiceRequests(429099, 1)
	res = h.registry(http.MethodGet, "/devices", "", nil)
	require.Equal(t, http.StatusTooManyRequests, res.status, "body %s", res.body)
	require.Empty(t, res.header.Get("iothub-errorcode"), "iothub-errorcode")
	name, _ := parseRegistryShape(t, res.body)
	assert.Equal(t, "429099", name, "ErrorCode")

	// A code outside IoT Hub's scheme still gives a valid HTTP answer.
	h.e.FailServiceRequests(42, 1)
	res = h.registry(http.MethodGet, "/devices", "", nil)
	require.Equal(t, http.StatusInternalServerError, res.status, "status for code 42")
}

func TestUnknownPathsAndMethods(t *testing.T) {
	h := newTestHub(t)
	h.createDevice("dev1")
	for _, p := range []string{"/", "/foo", "/twins", "/twins/dev1/x", "/twins/dev1/methods/x", "/twins//methods",
		"/devices//modules", "/devices/dev1/modules/m1/x", "/twins/dev1/modules", "/twins/dev1/modules/m1/x",
		"/devices/dev1/twin/x/y"} {
		t.Run("404 "+p, func(t *testing.T) {
			h := h.in(t)
			res := h.do(request{method: http.MethodGet, path: p + "?" + apiVersion, auth: h.token("iothubowner")})
			require.Equal(t, http.StatusNotFound, res.status, "body %s", res.body)
			assert.Empty(t, res.header.Get("iothub-errorcode"), "iothub-errorcode")
			var body map[string]string
			require.NoError(t, json.Unmarshal(res.body, &body), "body %s", res.body)
			require.NotEmpty(t, body["Message"], "body %s", res.body)
			require.Len(t, body, 2, "body %s", res.body)
			assert.Contains(t, body, "ExceptionMessage", "body %s lacks ExceptionMessage", res.body)
		})
	}
	for _, c := range []struct{ method, path, allow string }{
		{http.MethodGet, "/twins/dev1/methods", "POST"},
		{http.MethodPut, "/twins/dev1/modules/m/methods", "POST"},
		{http.MethodPost, "/devices/dev1", "GET, PUT, DELETE"},
		{http.MethodPatch, "/devices", "GET, POST"},
		{http.MethodDelete, "/devices/dev1/modules", "GET"},
		{http.MethodHead, "/devices", "GET, POST"},
		{http.MethodPost, "/statistics/service", "GET"},
	} {
		t.Run("405 "+c.method+" "+c.path, func(t *testing.T) {
			h := h.in(t)
			res := h.do(request{method: c.method, path: c.path + "?" + apiVersion, auth: h.token("iothubowner")})
			require.Equal(t, http.StatusMethodNotAllowed, res.status, "body %s", res.body)
			require.Equal(t, c.allow, res.header.Get("Allow"), "Allow")
		})
	}
	// Literal path segments are case-insensitive; one trailing slash is ignored.
	wantOK(t, h.registry(http.MethodGet, "/Devices/dev1", "", nil))
	wantOK(t, h.registry(http.MethodGet, "/devices/", "", nil))
	wantOK(t, h.registry(http.MethodGet, "/devices/dev1/", "", nil))
}

func TestRegistryErrorBodyShape(t *testing.T) {
	herr := engine.NewError(engine.CodeDeviceNotFound, `Device "a;b" <x> & not registered.`)
	now := time.Date(2019, 9, 23, 16, 17, 8, 0, time.UTC)
	body := errorBodyBytes(herr, now)
	name, text := parseRegistryShape(t, body)
	assert.Equal(t, "DeviceNotFound", name, "ErrorCode")
	assert.Equal(t, `Device "a,b" <x> & not registered.`, text, "error text")
	assert.True(t, strings.HasSuffix(string(body), `-G:0-TimeStamp:09/23/2019 16:17:08"}`), "body = %s", body)
	assert.NotContains(t, string(body), `\u003c`, "body escapes HTML")
}

func TestMethodErrorBodyShape(t *testing.T) {
	herr := engine.NewError(engine.CodeDeviceNotOnline, `quote " backslash \ <tag> & done`)
	now := time.Date(2022, 10, 19, 16, 47, 22, 20325700, time.UTC)
	body := methodErrorBodyBytes(herr, now)
	inner := parseMethodShape(t, body)
	assert.Equal(t, herr.Message, inner.Message, "inner message")
	assert.Equal(t, 404103, inner.ErrorCode, "inner errorCode")
	assert.Equal(t, "2022-10-19T16:47:22.0203257Z", inner.TimestampUTC, "timestampUtc")
	assert.True(t, strings.HasSuffix(inner.TrackingID, "-G:0-TimeStamp:10/19/2022 16:47:22"), "trackingId = %q", inner.TrackingID)
	prefix := `{"Message":"{\"errorCode\":404103,\"trackingId\":\"`
	assert.True(t, strings.HasPrefix(string(body), prefix), "body = %s", body)
	assert.True(t, strings.HasSuffix(string(body), `Z\"}","ExceptionMessage":""}`), "body = %s", body)
	assert.NotContains(t, string(body), `\u003c`, "body escapes HTML")
}

func TestMatchRoute(t *testing.T) {
	tests := []struct {
		path string
		want route
		err  bool
	}{
		{"/twins/d/methods", route{kind: routeDeviceMethod, deviceID: "d"}, false},
		{"/TWINS/d%2Fx/Modules/m%20n/METHODS", route{kind: routeModuleMethod, deviceID: "d/x", moduleID: "m n"}, false},
		{"/devices", route{kind: routeDevices}, false},
		{"/devices/%2E%2E", route{kind: routeDevice, deviceID: ".."}, false},
		{"/devices/a+b/modules", route{kind: routeModules, deviceID: "a+b"}, false},
		{"/devices/a/modules/b/", route{kind: routeModule, deviceID: "a", moduleID: "b"}, false},
		{"/devices/%zz", route{}, true},
		{"/devices//", route{}, false},
		{"", route{}, false},
		{"/twins/d/methods//", route{}, false},
		{"/twins/d", route{kind: routeTwin, deviceID: "d"}, false},
		{"/Twins/d%2Fx/", route{kind: routeTwin, deviceID: "d/x"}, false},
		{"/twins/methods", route{kind: routeTwin, deviceID: "methods"}, false},
		{"/twins/d/modules/m", route{kind: routeModuleTwin, deviceID: "d", moduleID: "m"}, false},
		{"/twins/d/MODULES/methods", route{kind: routeModuleTwin, deviceID: "d", moduleID: "methods"}, false},
		{"/twins/d/modules", route{}, false},
	}
	for _, tt := range tests {
		got, err := matchRoute(tt.path)
		if tt.err {
			assert.Error(t, err, "matchRoute(%q)", tt.path)
		} else {
			assert.NoError(t, err, "matchRoute(%q)", tt.path)
		}
		assert.Equal(t, tt.want, got, "matchRoute(%q)", tt.path)
	}
}

func TestLongValuesAreTruncatedInMessages(t *testing.T) {
	h := newTestHub(t)
	long := strings.Repeat("x", 300)
	res := h.do(request{method: http.MethodGet, path: "/devices/dev1?api-version=" + long, auth: h.token("iothubowner")})
	msg := wantError(t, res, engine.CodeInvalidProtocolVersion)
	assert.NotContains(t, msg, long, "message")
	assert.Contains(t, msg, "…", "message")
}

// TestErrorShapesPerEndpoint: each endpoint family answers errors in the
// shape IoT Hub uses for it, so that the official SDKs read them: the
// registry shape (ErrorCode:<name>;<text>) for the registry, statistics,
// authorization and api-version failures; the method shape (JSON in
// Message) for direct method calls.
func TestErrorShapesPerEndpoint(t *testing.T) {
	h := newTestHub(t)
	h.createDevice("dev1")
	h.device("online", func(string, []byte) (int, []byte, bool) { return 200, []byte("{'bad': json}"), true })

	for name, tc := range map[string]struct {
		res  response
		code int
	}{
		"get missing device":    {h.registry(http.MethodGet, "/devices/nope", "", nil), engine.CodeDeviceNotFound},
		"delete missing device": {h.registry(http.MethodDelete, "/devices/nope", "", map[string]string{"If-Match": "*"}), engine.CodeDeviceNotFound},
		"get missing module":    {h.registry(http.MethodGet, "/devices/dev1/modules/nope", "", nil), engine.CodeModuleNotFound},
		"create existing":       {h.registry(http.MethodPut, "/devices/dev1", `{"deviceId":"dev1"}`, nil), engine.CodeDeviceAlreadyExists},
		"stale etag":            {h.registry(http.MethodPut, "/devices/dev1", `{"deviceId":"dev1"}`, map[string]string{"If-Match": `"xyz"`}), engine.CodePreconditionFailed},
		"bulk not a list":       {h.registry(http.MethodPost, "/devices", `{}`, nil), engine.CodeIotHubFormatError},
		"statistics no auth":    {h.do(request{method: http.MethodGet, path: "/statistics/devices?" + apiVersion}), engine.CodeUnauthorized},
		"method no auth":        {h.do(request{method: http.MethodPost, path: "/twins/dev1/methods?" + apiVersion, body: `{"methodName":"m"}`}), engine.CodeUnauthorized},
		"method bad version":    {h.do(request{method: http.MethodPost, path: "/twins/dev1/methods?api-version=1999-01-01", body: `{"methodName":"m"}`, auth: h.token("iothubowner")}), engine.CodeInvalidProtocolVersion},
	} {
		t.Run(name, func(t *testing.T) { wantRegistryError(t, tc.res, tc.code) })
	}
	for name, tc := range map[string]struct {
		res  response
		code int
	}{
		"offline device":     {h.invoke("/twins/dev1/methods", `{"methodName":"m"}`), engine.CodeDeviceNotOnline},
		"missing device":     {h.invoke("/twins/nope/methods", `{"methodName":"m"}`), engine.CodeDeviceNotFound},
		"missing module":     {h.invoke("/twins/dev1/modules/nope/methods", `{"methodName":"m"}`), engine.CodeModuleNotFound},
		"bad timeout":        {h.invoke("/twins/dev1/methods", `{"methodName":"m","responseTimeoutInSeconds":1}`), engine.CodeArgumentInvalid},
		"device answers bad": {h.invoke("/twins/online/methods", `{"methodName":"m"}`), engine.CodeInvalidResponseWhileProxying},
	} {
		t.Run(name, func(t *testing.T) { wantMethodError(t, tc.res, tc.code) })
	}
}
