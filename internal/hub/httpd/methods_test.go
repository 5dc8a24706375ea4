package httpd

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

func TestInvokePayloads(t *testing.T) {
	h := newTestHub(t)
	dev, _ := h.device("dev1", echo)
	tests := []struct {
		name        string
		body        string
		wantPayload string // exact bytes the device receives; "" means nil
		wantOut     string // "payload" in the answer
	}{
		{"object", `{"methodName":"reboot","payload":{"a": 1, "b":[true,null]}}`, `{"a": 1, "b":[true,null]}`, `{"a": 1, "b":[true,null]}`},
		{"array", `{"methodName":"m","payload":[1,"two",3.5]}`, `[1,"two",3.5]`, `[1,"two",3.5]`},
		{"string", `{"methodName":"m","payload":"hello \"x\""}`, `"hello \"x\""`, `"hello \"x\""`},
		{"number", `{"methodName":"m","payload":-12.5e3}`, `-12.5e3`, `-12.5e3`},
		{"bool", `{"methodName":"m","payload":false}`, `false`, `false`},
		{"null", `{"methodName":"m","payload":null}`, "null", "null"},
		{"null with spaces", `{"methodName":"m","payload": null }`, "null", "null"},
		{"absent", `{"methodName":"m"}`, "", "null"},
		{"all fields", `{"methodName":"m","payload":{},"responseTimeoutInSeconds":30,"connectTimeoutInSeconds":0}`, `{}`, `{}`},
		{"extra fields ignored", `{"methodName":"m","payload":1,"unknown":{"x":[1]},"other":null}`, `1`, `1`},
		{"field names case-insensitive", `{"MethodName":"m","Payload":2}`, `2`, `2`},
		{"integral float timeouts", `{"methodName":"m","payload":3,"responseTimeoutInSeconds":30.0,"connectTimeoutInSeconds":1e1}`, `3`, `3`},
		{"null timeouts", `{"methodName":"m","payload":4,"responseTimeoutInSeconds":null,"connectTimeoutInSeconds":null}`, `4`, `4`},
		{"timeout edges", `{"methodName":"m","payload":5,"responseTimeoutInSeconds":5,"connectTimeoutInSeconds":300}`, `5`, `5`},
		{"timeout edges 2", `{"methodName":"m","payload":6,"responseTimeoutInSeconds":300,"connectTimeoutInSeconds":0}`, `6`, `6`},
		{"100-character name", `{"methodName":"` + strings.Repeat("m", 100) + `"}`, "", "null"},
		{"unusual name chars", `{"methodName":"a.b-c_d~e!fgh*i%j'k|l^m` + "`" + `n&o"}`, "", "null"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := h.in(t)
			res := h.invoke("/twins/dev1/methods", tt.body)
			require.Equal(t, http.StatusOK, res.status, "body %s", res.body)
			assert.Equal(t, "application/json; charset=utf-8", res.header.Get("Content-Type"), "Content-Type")
			assert.Equal(t, `{"status":200,"payload":`+tt.wantOut+`}`, string(res.body), "body")
			c := dev.lastCall(t)
			if tt.wantPayload == "" {
				assert.Nil(t, c.payload, "device payload")
			} else {
				assert.Equal(t, tt.wantPayload, string(c.payload), "device payload")
			}
		})
	}
}

func TestInvokeDeviceAnswers(t *testing.T) {
	h := newTestHub(t)
	tests := []struct {
		name     string
		status   int
		body     string
		wantBody string // "" means an error is expected
		wantCode int
	}{
		{"empty body", 200, "", `{"status":200,"payload":null}`, 0},
		{"whitespace body", 201, " \n", `{"status":201,"payload":null}`, 0},
		{"status passthrough", 501, `{"error":"not implemented"}`, `{"status":501,"payload":{"error":"not implemented"}}`, 0},
		{"negative status", -3, `"x"`, `{"status":-3,"payload":"x"}`, 0},
		{"invalid JSON", 200, `{'filename': 1}`, "", engine.CodeInvalidResponseWhileProxying},
		{"too large", 200, `"` + strings.Repeat("a", engine.MaxPayload) + `"`, "", engine.CodeMessageTooLarge},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := h.in(t)
			id := "answers" + string(rune('a'+i))
			h.device(id, func(string, []byte) (int, []byte, bool) { return tt.status, []byte(tt.body), true })
			res := h.invoke("/twins/"+id+"/methods", `{"methodName":"m"}`)
			if tt.wantCode != 0 {
				wantError(t, res, tt.wantCode)
				return
			}
			require.Equal(t, http.StatusOK, res.status, "body %s", res.body)
			require.Equal(t, tt.wantBody, string(res.body), "body")
		})
	}
}

func TestInvokeModule(t *testing.T) {
	h := newTestHub(t)
	h.createDevice("edge1")
	h.createModule("edge1", "mod1")
	dev, _ := h.connect(auth.Identity{DeviceID: "edge1", ModuleID: "mod1"},
		func(name string, _ []byte) (int, []byte, bool) { return 200, []byte(`"` + name + `"`), true }, true)
	res := h.invoke("/twins/edge1/modules/mod1/methods", `{"methodName":"getState","payload":{"k":1}}`)
	require.Equal(t, http.StatusOK, res.status, "body %s", res.body)
	require.Equal(t, `{"status":200,"payload":"getState"}`, string(res.body), "body")
	c := dev.lastCall(t)
	assert.Equal(t, "getState", c.name, "method the device saw")
	assert.Equal(t, `{"k":1}`, string(c.payload), "payload the device saw")

	// The device itself is not online: its module's connection does not count.
	wantError(t, h.invoke("/twins/edge1/methods", `{"methodName":"m"}`), engine.CodeDeviceNotOnline)
	wantError(t, h.invoke("/twins/edge1/modules/nope/methods", `{"methodName":"m"}`), engine.CodeModuleNotFound)
	wantError(t, h.invoke("/twins/nope/modules/mod1/methods", `{"methodName":"m"}`), engine.CodeDeviceNotFound)
}

func TestInvokeSpecialCharacterIDs(t *testing.T) {
	h := newTestHub(t)
	const id = "dev#1?%x+y=z$'(a)"
	h.device(id, echo)
	escaped := "dev%231%3F%25x+y=z$'(a)"
	res := h.invoke("/twins/"+escaped+"/methods", `{"methodName":"m","payload":7}`)
	require.Equal(t, http.StatusOK, res.status, "body %s", res.body)
	require.Equal(t, `{"status":200,"payload":7}`, string(res.body), "body")
	// A different id that only differs by the escaping must not match.
	wantError(t, h.invoke("/twins/dev%231/methods", `{"methodName":"m"}`), engine.CodeDeviceNotFound)
}

func TestInvokeNotFoundAndOffline(t *testing.T) {
	h := newTestHub(t)
	h.createDevice("offline")
	h.createDevice("unsubscribed")
	h.connect(auth.Identity{DeviceID: "unsubscribed"}, echo, false)

	msg := wantError(t, h.invoke("/twins/unknown/methods", `{"methodName":"m"}`), engine.CodeDeviceNotFound)
	assert.Contains(t, msg, "unknown", "the message does not name the device")
	msg = wantError(t, h.invoke("/twins/offline/methods", `{"methodName":"m","connectTimeoutInSeconds":0}`), engine.CodeDeviceNotOnline)
	assert.Contains(t, msg, "aka.ms/iothub404103", "message")
	wantError(t, h.invoke("/twins/unsubscribed/methods", `{"methodName":"m"}`), engine.CodeDeviceNotOnline)
}

func TestInvokeDeviceComesOnlineDuringConnectTimeout(t *testing.T) {
	h := newTestHub(t)
	h.createDevice("late")
	done := make(chan response, 1)
	tok := h.token("service")
	go func() {
		// require must not run off the test goroutine: doNoFatal reports
		// failures through the response.
		done <- h.doNoFatal(request{method: http.MethodPost, path: "/twins/late/methods?" + apiVersion,
			body: `{"methodName":"m","payload":"hi","connectTimeoutInSeconds":20}`, auth: tok})
	}()
	time.Sleep(300 * time.Millisecond)
	h.connect(auth.Identity{DeviceID: "late"}, echo, true)
	select {
	case res := <-done:
		require.Equal(t, http.StatusOK, res.status, "body %s", res.body)
		require.Equal(t, `{"status":200,"payload":"hi"}`, string(res.body), "body")
	case <-time.After(25 * time.Second):
		require.FailNow(t, "the call did not finish")
	}
}

func TestInvokeGatewayTimeout(t *testing.T) {
	t.Parallel() // it takes the minimum response timeout, 5 s
	h := newTestHub(t)
	h.device("slow", func(string, []byte) (int, []byte, bool) { return 0, nil, false })
	res := h.invoke("/twins/slow/methods", `{"methodName":"m","responseTimeoutInSeconds":5}`)
	wantError(t, res, engine.CodeGatewayTimeout)
}

func TestInvokeDeviceDisconnectsMidCall(t *testing.T) {
	h := newTestHub(t)
	dev, sess := h.device("flaky", func(string, []byte) (int, []byte, bool) { return 0, nil, false })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan response, 1)
	tok := h.token("service")
	go func() {
		done <- h.doNoFatal(request{method: http.MethodPost, path: "/twins/flaky/methods?" + apiVersion,
			body: `{"methodName":"m","responseTimeoutInSeconds":300}`, auth: tok, ctx: ctx})
	}()
	select {
	case <-dev.calls:
	case <-ctx.Done():
		require.FailNow(t, "the device never received the call")
	}
	sess.Disconnect()
	select {
	case res := <-done:
		wantError(t, res, engine.CodeDeviceNotOnline)
	case <-ctx.Done():
		require.FailNow(t, "the call did not end when the device disconnected")
	}
}

func TestInvokeBadTimeouts(t *testing.T) {
	h := newTestHub(t)
	h.device("dev1", echo)
	for _, v := range []string{"4", "301", "-1", "0", "1.5", `"x"`, `"30"`, "true", "{}", "[]", "1e400", "99999999999999999999"} {
		t.Run("response "+v, func(t *testing.T) {
			h := h.in(t)
			res := h.invoke("/twins/dev1/methods", `{"methodName":"m","responseTimeoutInSeconds":`+v+`}`)
			assert.Equal(t, "responseTimeoutInSeconds must be within [5; 300].", wantError(t, res, engine.CodeArgumentInvalid), "message")
		})
	}
	for _, v := range []string{"-1", "301", "2.5", `"x"`, "false"} {
		t.Run("connect "+v, func(t *testing.T) {
			h := h.in(t)
			res := h.invoke("/twins/dev1/methods", `{"methodName":"m","connectTimeoutInSeconds":`+v+`}`)
			assert.Equal(t, "connectTimeoutInSeconds must be within [0; 300].", wantError(t, res, engine.CodeArgumentInvalid), "message")
		})
	}
}

func TestInvokeBadMethodNames(t *testing.T) {
	h := newTestHub(t)
	h.device("dev1", echo)
	tests := []struct {
		name string
		body string
		code int
	}{
		{"missing", `{"payload":1}`, engine.CodeArgumentInvalid},
		{"null", `{"methodName":null}`, engine.CodeArgumentInvalid},
		{"empty", `{"methodName":""}`, engine.CodeArgumentInvalid},
		{"dollar", `{"methodName":"a$b"}`, engine.CodeArgumentInvalid},
		{"space", `{"methodName":"a b"}`, engine.CodeArgumentInvalid},
		{"slash", `{"methodName":"a/b"}`, engine.CodeArgumentInvalid},
		// MQTT wildcards cannot travel in a topic name.
		{"plus", `{"methodName":"a+b"}`, engine.CodeArgumentInvalid},
		{"hash", `{"methodName":"a#"}`, engine.CodeArgumentInvalid},
		{"101 characters", `{"methodName":"` + strings.Repeat("m", 101) + `"}`, engine.CodeArgumentInvalid},
		{"65,636 characters", `{"methodName":"` + strings.Repeat("m", 65636) + `"}`, engine.CodeArgumentInvalid},
		{"non-ASCII", `{"methodName":"caf\u00e9"}`, engine.CodeArgumentInvalid},
		{"control", `{"methodName":"a\u0000b"}`, engine.CodeArgumentInvalid},
		{"number", `{"methodName":5}`, engine.CodeIotHubFormatError},
		{"object", `{"methodName":{}}`, engine.CodeIotHubFormatError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantError(t, h.in(t).invoke("/twins/dev1/methods", tt.body), tt.code)
		})
	}
}

func TestInvokePayloadLimits(t *testing.T) {
	h := newTestHub(t)
	dev, _ := h.device("dev1", func(string, []byte) (int, []byte, bool) { return 200, nil, true })

	// Exactly MaxPayload bytes of payload JSON text is accepted.
	exact := `"` + strings.Repeat("a", engine.MaxPayload-2) + `"`
	res := h.invoke("/twins/dev1/methods", `{"methodName":"m","payload":`+exact+`}`)
	require.Equal(t, http.StatusOK, res.status, "body %s", res.body)
	assert.Equal(t, engine.MaxPayload, len(dev.lastCall(t).payload), "bytes the device got")

	over := `"` + strings.Repeat("a", engine.MaxPayload-1) + `"`
	wantError(t, h.invoke("/twins/dev1/methods", `{"methodName":"m","payload":`+over+`}`), engine.CodeMessageTooLarge)

	// A body beyond the read limit is refused without reading it all.
	huge := `{"methodName":"m","payload":"` + strings.Repeat("b", 2*maxMethodBody) + `"}`
	wantError(t, h.invoke("/twins/dev1/methods", huge), engine.CodeMessageTooLarge)
	select {
	case c := <-dev.calls:
		assert.Failf(t, "oversized request reached the device", "method %q", c.name)
	default:
	}
}

func TestInvokeMalformedBodies(t *testing.T) {
	h := newTestHub(t)
	h.device("dev1", echo)
	for _, body := range []string{
		"", " ", "{", "not json", "[]", "null", `"str"`, "42",
		`{"methodName":"m"} trailing`, `{"methodName":"m",}`, `{"methodName":"m"}{}`,
	} {
		t.Run(body, func(t *testing.T) {
			wantError(t, h.in(t).invoke("/twins/dev1/methods", body), engine.CodeIotHubFormatError)
		})
	}
}

func TestInvokeContentTypes(t *testing.T) {
	h := newTestHub(t)
	h.device("dev1", echo)
	for _, ct := range []string{"application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8", ""} {
		t.Run(ct, func(t *testing.T) {
			h := h.in(t)
			res := h.do(request{method: http.MethodPost, path: "/twins/dev1/methods?" + apiVersion,
				body: `{"methodName":"m","payload":1}`, auth: h.token("service"),
				headers: map[string]string{"Content-Type": ct, "User-Agent": "", "Request-Id": ""}})
			require.Equal(t, http.StatusOK, res.status, "body %s", res.body)
		})
	}
	// .NET v1 headers: Accept, the odd "UserAgent" header, no Request-Id.
	res := h.do(request{method: http.MethodPost, path: "/twins/dev1/methods?" + apiVersion,
		body: `{"methodName":"m","payload":1}`, auth: h.token("service"),
		headers: map[string]string{"Accept": "application/json", "UserAgent": "Microsoft.Azure.Devices/1.0"}})
	require.Equal(t, http.StatusOK, res.status, "body %s", res.body)
}

func TestInvokeCallRecord(t *testing.T) {
	h := newTestHub(t)
	h.device("dev1", echo)
	h.invoke("/twins/dev1/methods", `{"methodName":"rec","payload":[1],"responseTimeoutInSeconds":42}`)
	calls := h.e.Calls()
	require.Len(t, calls, 1, "calls")
	require.Equal(t, "rec", calls[0].Method, "call record's method")
	require.Equal(t, "[1]", string(calls[0].Payload), "call record's payload")
	require.Equal(t, 200, calls[0].Status, "call record's status")
}

// doNoFatal is do for use off the test goroutine: failures come back as
// status 0 with the error text as body.
func (h *testHub) doNoFatal(rq request) response {
	ctx := rq.ctx
	if ctx == nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, rq.method, h.srv.URL+rq.path, strings.NewReader(rq.body))
	if err != nil {
		return response{body: []byte(err.Error())}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", rq.auth)
	res, err := h.srv.Client().Do(req)
	if err != nil {
		return response{body: []byte(err.Error())}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return response{body: []byte(err.Error())}
	}
	return response{status: res.StatusCode, header: res.Header, body: b}
}
