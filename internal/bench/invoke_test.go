package bench

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRunInvokerFloor runs an invoker process's body with this SDK's
// service client and with the azcore floor (InvokeSpec.Invoker) against an
// HTTPS server that answers every method call at once: both post the
// method call with a SAS token and report a window of calls without
// errors. An invoker it does not know is refused.
func TestRunInvokerFloor(t *testing.T) {
	var calls, bad atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var m struct {
			MethodName string          `json:"methodName"`
			Payload    json.RawMessage `json:"payload"`
		}
		if r.Method != http.MethodPost || r.URL.Path != "/twins/d1/methods" ||
			!strings.HasPrefix(r.Header.Get("Authorization"), "SharedAccessSignature ") ||
			json.Unmarshal(body, &m) != nil || m.MethodName != Method || string(m.Payload) != `{"a":1}` {
			bad.Add(1)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_, _ = w.Write([]byte(`{"status":200,"payload":{"a":1}}`))
	}))
	t.Cleanup(srv.Close)
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	// example.com is the name in httptest's certificate.
	cs := "HostName=example.com;GatewayHostName=" + strings.TrimPrefix(srv.URL, "https://") + ";SharedAccessKeyName=service;SharedAccessKey=" + key
	run := func(invoker string) ([]invokeMsg, error) {
		spec, err := json.Marshal(InvokeSpec{Devices: []string{"d1"}, Method: Method, Payload: json.RawMessage(`{"a":1}`),
			Concurrency: 2, WarmupMs: 20, DurationMs: 200, ServiceCS: cs, CAPEM: caPEM, Invoker: invoker})
		require.NoError(t, err)
		var out bytes.Buffer
		err = RunInvoker(bytes.NewReader(append(spec, '\n')), &out)
		var msgs []invokeMsg
		sc := bufio.NewScanner(&out)
		sc.Buffer(nil, 1<<24)
		for sc.Scan() {
			var m invokeMsg
			require.NoError(t, json.Unmarshal(sc.Bytes(), &m), "%s", sc.Bytes())
			msgs = append(msgs, m)
		}
		return msgs, err
	}
	for _, inv := range []string{"", FloorAzcore} {
		before := calls.Load()
		msgs, err := run(inv)
		require.NoError(t, err, "invoker %q", inv)
		require.Len(t, msgs, 2, "invoker %q: window_start and result", inv)
		assert.Equal(t, "window_start", msgs[0].Type, "invoker %q", inv)
		res := msgs[1]
		assert.Equal(t, "result", res.Type, "invoker %q", inv)
		assert.Zero(t, res.Errors, "invoker %q: %s", inv, res.FirstError)
		assert.NotEmpty(t, res.Latencies, "invoker %q", inv)
		assert.Positive(t, res.CPUSeconds, "invoker %q", inv)
		assert.GreaterOrEqual(t, calls.Load()-before, int64(len(res.Latencies)), "invoker %q: the server saw the calls", inv)
	}
	assert.Zero(t, bad.Load(), "requests the server refused")
	_, err := run("grpc")
	require.ErrorContains(t, err, `unknown invoker "grpc"`)
}
