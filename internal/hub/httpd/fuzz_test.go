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
