package httpd

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

// want4xx fails unless herr is a hub error with a 4xx status and a code
// that agrees with it.
func want4xx(t *testing.T, herr *engine.Error) {
	t.Helper()
	if herr.Status < 400 || herr.Status > 499 || herr.Code/1000 != herr.Status || herr.Message == "" {
		t.Fatalf("bad error %#v", herr)
	}
	if inner := parseMethodShape(t, methodErrorBodyBytes(herr, time.Now())); inner.ErrorCode != herr.Code || inner.Message != herr.Message {
		t.Fatalf("method error body does not round-trip: %+v", inner)
	}
	if name, text := parseRegistryShape(t, errorBodyBytes(herr, time.Now())); name != herr.Name || text != strings.ReplaceAll(herr.Message, ";", ",") {
		t.Fatalf("registry error body does not round-trip: %s;%s", name, text)
	}
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
		if !engine.ValidMethodName(call.Name) {
			t.Fatalf("accepted invalid name %q", call.Name)
		}
		if call.ResponseTimeout < 5*time.Second || call.ResponseTimeout > 300*time.Second || call.ResponseTimeout%time.Second != 0 {
			t.Fatalf("response timeout %v", call.ResponseTimeout)
		}
		if call.ConnectTimeout < 0 || call.ConnectTimeout > 300*time.Second || call.ConnectTimeout%time.Second != 0 {
			t.Fatalf("connect timeout %v", call.ConnectTimeout)
		}
		if call.Payload != nil {
			if len(call.Payload) == 0 || len(call.Payload) > engine.MaxPayload || !json.Valid(call.Payload) {
				t.Fatalf("payload %q", call.Payload)
			}
		}
		// The success body built from a device answer is valid JSON or a
		// 4xx hub error.
		out, herr := methodResponseBody(engine.MethodResult{Status: 200, Payload: call.Payload})
		if herr != nil {
			want4xx(t, herr)
		} else if !json.Valid(out) {
			t.Fatalf("response body %q is not JSON", out)
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
	if err != nil {
		f.Fatal(err)
	}
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
		if herr != nil || again.ETag != out.ETag || again.DeviceID != "fuzz" {
			t.Fatalf("stored device does not round-trip: %v %+v", herr, again)
		}
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
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(e.Close)
	p, _ := e.Policy("registryReadWrite")
	tok, err := auth.SignSAS(testHost, p.Name, p.PrimaryKey, time.Now().Add(24*time.Hour))
	if err != nil {
		f.Fatal(err)
	}
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
		if rec.Code != http.StatusOK && rec.Code != http.StatusBadRequest {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("body %q is not JSON", rec.Body)
		}
		var r bulkResult
		if rec.Header().Get("iothub-errorcode") == "" {
			if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil || r.IsSuccessful != (rec.Code == http.StatusOK) || r.Errors == nil {
				t.Fatalf("bulk result %s: %v", rec.Body, err)
			}
		}
	})
}
