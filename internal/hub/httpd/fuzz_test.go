package httpd

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

// want4xx fails unless herr is a hub error with a 4xx status and a code
// that agrees with it.
func want4xx(t *testing.T, herr *engine.Error) {
	t.Helper()
	require.NotNil(t, herr)
	require.GreaterOrEqual(t, herr.Status, 400, "bad error %#v", herr)
	require.LessOrEqual(t, herr.Status, 499, "bad error %#v", herr)
	require.Equal(t, herr.Status, herr.Code/1000, "bad error %#v", herr)
	require.NotEmpty(t, herr.Message, "bad error %#v", herr)
	inner := parseMethodShape(t, methodErrorBodyBytes(herr, time.Now()))
	require.Equal(t, herr.Code, inner.ErrorCode, "method error body does not round-trip: %+v", inner)
	require.Equal(t, herr.Message, inner.Message, "method error body does not round-trip: %+v", inner)
	name, text := parseRegistryShape(t, errorBodyBytes(herr, time.Now()))
	require.Equal(t, herr.Name, name, "registry error body does not round-trip: %s;%s", name, text)
	require.Equal(t, strings.ReplaceAll(herr.Message, ";", ","), text, "registry error body does not round-trip: %s;%s", name, text)
}

func FuzzMethodRequestBody(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `null`, `[]`, `"x"`, `{"methodName":"reboot"}`,
		`{"methodName":"reboot","payload":{"a":[1,2,{"b":null}]},"responseTimeoutInSeconds":30,"connectTimeoutInSeconds":0}`,
		`{"methodName":"m","payload":null}`, `{"methodName":"m","payload":"str"}`, `{"methodName":"m","payload":1e3}`,
		`{"methodName":"m","responseTimeoutInSeconds":4}`, `{"methodName":"m","responseTimeoutInSeconds":301}`,
		`{"methodName":"m","responseTimeoutInSeconds":1.5}`, `{"methodName":"m","responseTimeoutInSeconds":"x"}`,
		`{"methodName":"m","responseTimeoutInSeconds":5.0}`, `{"methodName":"m","connectTimeoutInSeconds":-0}`,
		`{"methodName":"m","connectTimeoutInSeconds":300e0}`, `{"methodName":"m","connectTimeoutInSeconds":-1e-400}`,
		`{"methodName":"a$b"}`, `{"methodName":"a b"}`, `{"methodName":""}`, `{"methodName":5}`,
		`{"methodName":"m"} x`, `{"methodName":"m",}`, `{"METHODNAME":"m","PAYLOAD":[]}`,
		"\xef\xbb\xbf{\"methodName\":\"m\"}", `{"methodName":"\ud800"}`, `{"methodName":"m","payload":"\xff"}`,
		`{"methodName":"m","payload":` + `"` + strings.Repeat("a", engine.MaxPayload) + `"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		call, herr := parseMethodRequest(body)
		if herr != nil {
			want4xx(t, herr)
			return
		}
		require.True(t, engine.ValidMethodName(call.Name), "accepted invalid name %q", call.Name)
		require.GreaterOrEqual(t, call.ResponseTimeout, 5*time.Second, "response timeout")
		require.LessOrEqual(t, call.ResponseTimeout, 300*time.Second, "response timeout")
		require.Zero(t, call.ResponseTimeout%time.Second, "response timeout %v is not whole seconds", call.ResponseTimeout)
		require.GreaterOrEqual(t, call.ConnectTimeout, time.Duration(0), "connect timeout")
		require.LessOrEqual(t, call.ConnectTimeout, 300*time.Second, "connect timeout")
		require.Zero(t, call.ConnectTimeout%time.Second, "connect timeout %v is not whole seconds", call.ConnectTimeout)
		if call.Payload != nil {
			require.NotEmpty(t, call.Payload, "payload %q", call.Payload)
			require.LessOrEqual(t, len(call.Payload), engine.MaxPayload, "payload length")
			require.True(t, json.Valid(call.Payload), "payload %q is not JSON", call.Payload)
		}
		// The success body built from a device answer is valid JSON or a
		// 4xx hub error.
		out, herr := methodResponseBody(engine.MethodResult{Status: 200, Payload: call.Payload})
		if herr != nil {
			want4xx(t, herr)
		} else {
			require.True(t, json.Valid(out), "response body %q is not JSON", out)
		}
	})
}

func FuzzRegistryDeviceBody(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `null`, `[]`, `{"deviceId":"d"}`, `{"status":"disabled","statusReason":"x"}`,
		`{"authentication":{"type":"sas","symmetricKey":{"primaryKey":"AAAAAAAAAAAAAAAAAAAAAA==","secondaryKey":""}}}`,
		`{"authentication":{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"0123456789abcdef0123456789abcdef01234567"}}}`,
		`{"authentication":{"type":"certificateAuthority"}}`, `{"authentication":{"type":"none"}}`,
		`{"authentication":{"type":"nope"}}`, `{"status":5}`, `{"capabilities":{"iotEdge":true}}`,
		`{"parentScopes":["a"],"deviceScope":"s","etag":"e","generationId":"1"}`, `{"deviceId":"d"}{}`,
		`{"authentication":null,"statusReason":null}`, "\xef\xbb\xbf{}",
	} {
		f.Add([]byte(s))
	}
	e, err := engine.New(engine.Config{HostName: testHost})
	require.NoError(f, err, "new engine")
	f.Cleanup(e.Close)
	f.Fuzz(func(t *testing.T, body []byte) {
		d, herr := decodeDevice(body)
		if herr != nil {
			want4xx(t, herr)
			return
		}
		// What the decoder accepts the engine either stores or refuses
		// with a 4xx error; a stored device round-trips through JSON.
		out, herr := e.PutDevice("fuzz", d, "")
		if herr != nil {
			want4xx(t, herr)
			return
		}
		defer func() { _ = e.DeleteDevice("fuzz", "") }()
		again, herr := decodeDevice(marshal(out))
		require.Nil(t, herr, "stored device does not round-trip")
		require.Equal(t, out.ETag, again.ETag, "stored device does not round-trip: %+v", again)
		require.Equal(t, "fuzz", again.DeviceID, "stored device does not round-trip: %+v", again)
	})
}

func FuzzBulkRegistryBody(f *testing.F) {
	for _, s := range []string{
		``, `[]`, `{}`, `null`, `[null]`, `[{}]`, `[{"id":"a","importMode":"create"}]`,
		`[{"id":"a","importMode":"create"},{"id":"a","importMode":"delete"}]`,
		`[{"id":"b","importMode":"createOrUpdate","status":"disabled","statusReason":"x"}]`,
		`[{"id":"c","importMode":"updateIfMatchETag","eTag":"\"x\""}]`, `[{"id":"d","importMode":"deleteIfMatchETag"}]`,
		`[{"id":"e","importMode":"create","authentication":{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"zz"}}}]`,
		`[{"id":"bad id/","importMode":"create"}]`, `[{"id":5,"importMode":"create"}]`, `[{"id":"f","importMode":"Update"}]`,
		`[{"id":"g","importMode":"create"}]]`, "\xef\xbb\xbf[]", `[{"id":"h"}]`,
		`[{"id":"i","importMode":"createOrUpdateIfMatchETag","eTag":"*"}]`, `[{"id":"j","moduleId":"m","importMode":"delete"}]`,
	} {
		f.Add([]byte(s))
	}
	e, err := engine.New(engine.Config{HostName: testHost})
	require.NoError(f, err, "new engine")
	f.Cleanup(e.Close)
	p, _ := e.Policy("registryReadWrite")
	tok, err := auth.SignSAS(testHost, p.Name, p.PrimaryKey, time.Now().Add(24*time.Hour))
	require.NoError(f, err)
	h := NewHandler(e)
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "https://"+testHost+"/devices?api-version=2021-04-12", bytes.NewReader(body))
		req.Header.Set("Authorization", tok)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		defer func() {
			for _, d := range e.ListDevices(0) {
				_ = e.DeleteDevice(d.DeviceID, "*")
			}
		}()
		// Every answer is 200 or 400 with JSON: a bulk result, or a hub
		// error for a request refused as a whole.
		require.Contains(t, []int{http.StatusOK, http.StatusBadRequest}, rec.Code, "status; body %s", rec.Body)
		require.True(t, json.Valid(rec.Body.Bytes()), "body %q is not JSON", rec.Body)
		var r bulkResult
		if rec.Header().Get("iothub-errorcode") == "" {
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &r), "bulk result %s", rec.Body)
			require.Equal(t, rec.Code == http.StatusOK, r.IsSuccessful, "bulk result %s", rec.Body)
			require.NotNil(t, r.Errors, "bulk result %s", rec.Body)
		}
	})
}

// FuzzTwinRequestBody drives PATCH and PUT /twins/{id} with arbitrary
// bodies through the handler. Every answer is a twin (200) or a hub error
// in the registry shape (4xx); a refused request leaves the twin as it
// was; an accepted one is what GET then reads, and its versions never go
// backwards.
func FuzzTwinRequestBody(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `null`, `[]`, `"x"`, `{"tags":{}}`, `{"tags":null,"properties":null}`,
		`{"tags":{"a":1,"b":{"c":[1,"two",true,{"d":null}]}}}`,
		`{"properties":{"desired":{"fw":{"version":"1.2","url":null}}}}`,
		`{"properties":{"desired":{"$version":9,"$metadata":{},"x":1},"reported":{"$version":3}}}`,
		`{"properties":{"reported":{"x":1}}}`, `{"properties":{"desired":[1]}}`, `{"properties":1}`,
		`{"tags":{"a.b":1}}`, `{"tags":{"$a":1}}`, `{"tags":{"a b":1}}`, `{"tags":{"":1}}`, `{"tags":{"\u0000":1}}`,
		`{"tags":{"a":[null]}}`, `{"tags":{"n":1e400}}`, `{"tags":{"n":9007199254740993}}`, `{"tags":{"n":-0.5e-3}}`,
		`{"deviceId":"other"}`, `{"deviceId":"dev1","moduleId":"m"}`, `{"etag":"x","version":99,"status":"disabled"}`,
		`{"tags":` + strings.Repeat(`{"a":`, 11) + `1` + strings.Repeat(`}`, 11) + `}`,
		`{"tags":{"s":"` + strings.Repeat("x", 4097) + `"}}`, `{} {}`, `{"tags":{"a":1},}`, "\xef\xbb\xbf{}",
		`{"tags":{"\xff":1}}`, `{"tags":{"a":"\ud800"}}`,
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	e, err := engine.New(engine.Config{HostName: testHost})
	require.NoError(f, err, "new engine")
	f.Cleanup(e.Close)
	p, _ := e.Policy("service")
	tok, err := auth.SignSAS(testHost, p.Name, p.PrimaryKey, time.Now().Add(24*time.Hour))
	require.NoError(f, err)
	h := NewHandler(e)
	serve := func(method string, body []byte) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, "https://"+testHost+"/twins/dev1?api-version=2021-04-12", bytes.NewReader(body))
		req.Header.Set("Authorization", tok)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	type versions struct {
		ETag       string `json:"etag"`
		Version    int64  `json:"version"`
		Properties struct {
			Desired struct {
				Version int64 `json:"$version"`
			} `json:"desired"`
			Reported struct {
				Version int64 `json:"$version"`
			} `json:"reported"`
		} `json:"properties"`
	}
	read := func(t *testing.T, b []byte) versions {
		var v versions
		require.NoError(t, json.Unmarshal(b, &v), "twin %s", b)
		require.NotEmpty(t, v.ETag, "twin %s", b)
		require.Positive(t, v.Version, "twin %s", b)
		require.Positive(t, v.Properties.Desired.Version, "twin %s", b)
		require.Positive(t, v.Properties.Reported.Version, "twin %s", b)
		return v
	}
	f.Fuzz(func(t *testing.T, body []byte, put bool) {
		method := http.MethodPatch
		if put {
			method = http.MethodPut
		}
		// Each input starts from a new twin with tags and properties.
		_ = e.DeleteDevice("dev1", "*")
		_, herr := e.PutDevice("dev1", engine.Device{}, "")
		require.Nil(t, herr, "create device")
		_, herr = e.UpdateTwin("dev1", "", []byte(`{"tags":{"t":{"u":1}},"properties":{"desired":{"d":{"e":"f"}}}}`), "")
		require.Nil(t, herr, "seed the twin")
		before := serve(http.MethodGet, nil)
		require.Equal(t, http.StatusOK, before.Code, "GET: %s", before.Body)
		old := read(t, before.Body.Bytes())
		rec := serve(method, body)
		after := serve(http.MethodGet, nil)
		require.Equal(t, http.StatusOK, after.Code, "GET: %s", after.Body)
		if rec.Code != http.StatusOK {
			require.GreaterOrEqual(t, rec.Code, 400, "status; body %s", rec.Body)
			require.Less(t, rec.Code, 500, "status; body %s", rec.Body)
			require.NotEmpty(t, rec.Header().Get("iothub-errorcode"), "error code header; body %s", rec.Body)
			parseRegistryShape(t, rec.Body.Bytes())
			require.Equal(t, before.Body.String(), after.Body.String(), "a refused request changed the twin")
			return
		}
		require.True(t, json.Valid(rec.Body.Bytes()), "answer %q is not JSON", rec.Body)
		require.Equal(t, rec.Body.String(), after.Body.String(), "GET differs from the write's answer")
		v := read(t, rec.Body.Bytes())
		require.Equal(t, `"`+v.ETag+`"`, rec.Header().Get("ETag"), "ETag header")
		require.Greater(t, v.Version, old.Version, "twin version")
		require.NotEqual(t, old.ETag, v.ETag, "etag")
		require.GreaterOrEqual(t, v.Properties.Desired.Version, old.Properties.Desired.Version, "desired $version")
		require.Equal(t, old.Properties.Reported.Version, v.Properties.Reported.Version, "reported $version")
		// What was stored is a valid twin: sent back as a replacement it
		// is accepted.
		back := serve(http.MethodPut, rec.Body.Bytes())
		require.Equal(t, http.StatusOK, back.Code, "the stored twin sent back: %s", back.Body)
	})
}
