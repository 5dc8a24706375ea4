package service

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
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
		`{"status":-0,"payload": {"a":[1,"}"]} }`, `{"status":007,"payload":1}`, `{"status":200,"payload":1,"status":500}`,
		`{"status":200,"payload":{"a":1},"payload":2}`, `{"status":1234567890,"payload":1}`, `{"status":200,"payload":"\u0041"}` + "\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		resp := &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(body))}
		res, err := decodeResult(resp)
		if err != nil {
			require.Nil(t, res, "a result with the error %v", err)
			require.ErrorIs(t, err, ErrMalformedResponse)
			require.True(t, strings.HasPrefix(err.Error(), "iothub: "), "message %q", err)
			if len(body) >= 8 {
				require.NotContains(t, err.Error(), string(body), "the error quotes the body")
			}
			return
		}
		require.NotNil(t, res)
		require.True(t, json.Valid(res.Payload), "result %+v: payload is not one JSON value", res)
		// The quick path agrees with json.Unmarshal wherever it applies.
		if q, ok := quickResult(body); ok {
			var wire struct {
				Status  *int            `json:"status"`
				Payload json.RawMessage `json:"payload"`
			}
			require.NoError(t, json.Unmarshal(body, &wire), "quickResult took %q", body)
			require.NotNil(t, wire.Status, "quickResult took %q", body)
			require.Equal(t, *wire.Status, q.Status, "status of %q", body)
			require.Equal(t, string(wire.Payload), string(q.Payload), "payload of %q", body)
		}
	})
}
