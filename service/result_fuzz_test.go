package service

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// FuzzDecodeResult feeds the hub's answer to a method invocation to the
// client's decoder: it must give a result whose payload is one JSON value,
// or an "iothub: " error that quotes nothing from the body.
func FuzzDecodeResult(f *testing.F) {
	for _, s := range []string{
		`{"status":200,"payload":{"a":1}}`, `{"status":200,"payload":null}`, `{"status":200}`,
		`{"status":404,"payload":"x"}`, `{"payload":1}`, `{"status":"200"}`, `{"status":2.5}`,
		`{"status":200,"payload":[1,2,{"b":null}]}`, `{"Status":200,"Payload":true}`, ``, `null`, `[]`,
		`{"status":200,"payload":{"a":1}}trailing`, `{"status":1e400}`, "\xef\xbb\xbf{\"status\":200}",
		`{"status":200,"status":201,"payload":"canary-secret"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		resp := &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(body))}
		res, err := decodeResult(resp)
		if err != nil {
			if res != nil || !strings.HasPrefix(err.Error(), "iothub: ") {
				t.Fatalf("decodeResult: %v, %+v", err, res)
			}
			if len(body) >= 8 && strings.Contains(err.Error(), string(body)) {
				t.Fatalf("the error quotes the body: %v", err)
			}
			return
		}
		if res == nil || !json.Valid(res.Payload) {
			t.Fatalf("result %+v: payload is not one JSON value", res)
		}
	})
}
