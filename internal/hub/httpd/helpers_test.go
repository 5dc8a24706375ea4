package httpd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testHost   = "test-hub.azure-devices.net"
	apiVersion = "api-version=2021-04-12"
)

// testHub is an engine behind a real TLS server on loopback.
type testHub struct {
	t   *testing.T
	e   *engine.Engine
	srv *httptest.Server
}

func newTestHub(t *testing.T) *testHub {
	t.Helper()
	e, err := engine.New(engine.Config{HostName: testHost})
	require.NoError(t, err, "new engine")
	srv := httptest.NewTLSServer(NewHandler(e))
	// Cleanups run last-in first-out: the engine closes first (ending
	// device sessions and pending calls), then the server.
	t.Cleanup(srv.Close)
	t.Cleanup(e.Close)
	return &testHub{t: t, e: e, srv: srv}
}

// in returns h failing t (a subtest's) instead of the test that made h:
// a subtest runs on its own goroutine, where the parent must not fail now.
// Cleanups the copy registers run when t ends.
func (h *testHub) in(t *testing.T) *testHub {
	c := *h
	c.t = t
	return &c
}

// token signs a one-hour SAS token with a hub policy's primary key.
func (h *testHub) token(policy string) string {
	h.t.Helper()
	return h.tokenAt(policy, testHost, time.Now().Add(time.Hour))
}

func (h *testHub) tokenAt(policy, resource string, expiry time.Time) string {
	h.t.Helper()
	p, ok := h.e.Policy(policy)
	require.True(h.t, ok, "no policy %q", policy)
	tok, err := auth.SignSAS(resource, p.Name, p.PrimaryKey, expiry)
	require.NoError(h.t, err, "sign a token for %s", policy)
	return tok
}

// response is a finished HTTP exchange.
type response struct {
	status int
	header http.Header
	body   []byte
}

// request is one HTTP call; zero fields take defaults.
type request struct {
	method  string
	path    string // with query
	body    string
	auth    string // Authorization header; "" sends none
	headers map[string]string
	ctx     context.Context
}

func (h *testHub) do(rq request) response {
	h.t.Helper()
	ctx := rq.ctx
	if ctx == nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
	}
	var body io.Reader
	if rq.body != "" {
		body = bytes.NewBufferString(rq.body)
	}
	req, err := http.NewRequestWithContext(ctx, rq.method, h.srv.URL+rq.path, body)
	require.NoError(h.t, err, "new request")
	if rq.body != "" {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	if rq.auth != "" {
		req.Header.Set("Authorization", rq.auth)
	}
	for k, v := range rq.headers {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	res, err := h.srv.Client().Do(req)
	require.NoError(h.t, err, "%s %s", rq.method, rq.path)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(h.t, err, "read the body of %s %s", rq.method, rq.path)
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// invoke calls a method with the owner policy and the given JSON body.
func (h *testHub) invoke(path, body string) response {
	h.t.Helper()
	return h.do(request{method: http.MethodPost, path: path + "?" + apiVersion, body: body, auth: h.token("iothubowner")})
}

// registry runs a registry call with the owner policy.
func (h *testHub) registry(method, path, body string, headers map[string]string) response {
	h.t.Helper()
	return h.do(request{method: method, path: path + "?" + apiVersion, body: body, auth: h.token("iothubowner"), headers: headers})
}

func (h *testHub) createDevice(id string) engine.Device {
	h.t.Helper()
	d, herr := h.e.PutDevice(id, engine.Device{}, "")
	require.Nil(h.t, herr, "create device %s", id)
	return d
}

func (h *testHub) createModule(deviceID, moduleID string) engine.Module {
	h.t.Helper()
	m, herr := h.e.PutModule(deviceID, moduleID, engine.Module{}, "")
	require.Nil(h.t, herr, "create module %s/%s", deviceID, moduleID)
	return m
}

var (
	trackingIDPattern = regexp.MustCompile(`^[0-9a-f]{32}-G:0-TimeStamp:[01][0-9]/[0-3][0-9]/[0-9]{4} [0-2][0-9]:[0-5][0-9]:[0-5][0-9]$`)
	timestampPattern  = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{7}Z$`)
)

// wantError checks a hub error answer: status, iothub-errorcode header,
// content type and a shape A body. It returns the inner message.
func wantError(t *testing.T, res response, code int) string {
	t.Helper()
	require.Equal(t, code/1000, res.status, "status; body %s", res.body)
	assert.Equal(t, engine.CodeName(code), res.header.Get("iothub-errorcode"), "iothub-errorcode")
	assert.Equal(t, "application/json; charset=utf-8", res.header.Get("Content-Type"), "Content-Type")
	if bytes.Contains(res.body, []byte(`"Message":"ErrorCode:`)) {
		name, msg := parseRegistryShape(t, res.body)
		assert.Contains(t, []string{engine.CodeName(code), strconv.Itoa(code)}, name, "ErrorCode; body %s", res.body)
		return msg
	}
	inner := parseMethodShape(t, res.body)
	assert.Equal(t, code, inner.ErrorCode, "errorCode; body %s", res.body)
	return inner.Message
}

// wantRegistryError is wantError for an answer that must have the
// registry shape; it returns the message text.
func wantRegistryError(t *testing.T, res response, code int) string {
	t.Helper()
	msg := wantError(t, res, code)
	parseRegistryShape(t, res.body)
	return msg
}

// wantMethodError is wantError for an answer that must have the method
// shape; it returns the message.
func wantMethodError(t *testing.T, res response, code int) string {
	t.Helper()
	msg := wantError(t, res, code)
	parseMethodShape(t, res.body)
	return msg
}

// legacyTrackingPattern is the ExceptionMessage of a registry-shape body.
var legacyTrackingPattern = regexp.MustCompile(`^Tracking ID:[0-9a-f]{32}-G:0-TimeStamp:[0-9]{2}/[0-9]{2}/[0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2}$`)

// parseRegistryShape decodes
// {"Message":"ErrorCode:<name>;<text>","ExceptionMessage":"Tracking ID:…"}
// strictly, reading Message as the official Node service client does
// (split on ';', then the first part on ':'): the text must be exactly
// the second part, non-empty.
func parseRegistryShape(t *testing.T, body []byte) (name, text string) {
	t.Helper()
	var outer map[string]string
	require.NoError(t, json.Unmarshal(body, &outer), "error body is not a JSON object of strings: %s", body)
	require.Len(t, outer, 2, "error body has wrong fields: %s", body)
	require.Regexp(t, legacyTrackingPattern, outer["ExceptionMessage"], "error body's ExceptionMessage: %s", body)
	parts := strings.Split(outer["Message"], ";")
	head := strings.Split(parts[0], ":")
	notForm := fmt.Sprintf("Message %q is not ErrorCode:<name>;<text>", outer["Message"])
	require.Len(t, parts, 2, notForm)
	require.Len(t, head, 2, notForm)
	require.Equal(t, "ErrorCode", head[0], notForm)
	require.NotEmpty(t, head[1], notForm)
	require.NotEmpty(t, parts[1], notForm)
	return head[1], parts[1]
}

// parseMethodShape decodes {"Message":"<json>","ExceptionMessage":""} strictly:
// the outer Message is a string whose content is the inner JSON object.
func parseMethodShape(t *testing.T, body []byte) errorPayload {
	t.Helper()
	var outer map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(body, &outer), "error body is not JSON: %s", body)
	require.Len(t, outer, 2, "outer error body has wrong fields: %s", body)
	require.Equal(t, `""`, string(outer["ExceptionMessage"]), "outer error body's ExceptionMessage: %s", body)
	var msg string
	require.NoError(t, json.Unmarshal(outer["Message"], &msg), "outer Message is not a string: %s", body)
	var fields map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(msg), &fields), "inner Message is not JSON: %s", msg)
	for _, k := range []string{"errorCode", "trackingId", "message", "timestampUtc"} {
		require.Contains(t, fields, k, "inner error lacks %s: %s", k, msg)
	}
	require.NotEmpty(t, fields["errorCode"], "errorCode is not a number: %s", msg)
	require.NotEqual(t, byte('"'), fields["errorCode"][0], "errorCode is not a number: %s", msg)
	var inner errorPayload
	require.NoError(t, json.Unmarshal([]byte(msg), &inner), "inner error: %s", msg)
	assert.Regexp(t, trackingIDPattern, inner.TrackingID, "trackingId has the wrong form")
	assert.Regexp(t, timestampPattern, inner.TimestampUTC, "timestampUtc has the wrong form")
	assert.NotEmpty(t, inner.Message, "empty message")
	return inner
}

// fakeCall is a method request as the fake device saw it.
type fakeCall struct {
	name    string
	payload []byte
}

// answerFunc decides a fake device's answer; ok false means never answer.
type answerFunc func(name string, payload []byte) (status int, body []byte, ok bool)

// fakeDevice is a protocol-side connection: it records method requests and
// answers them through Session.Respond from a goroutine.
type fakeDevice struct {
	sess   atomic.Pointer[engine.Session]
	answer answerFunc
	calls  chan fakeCall
	wg     sync.WaitGroup

	mu     sync.Mutex
	seq    int
	closed bool
}

func (d *fakeDevice) NewRequestID() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seq++
	return strconv.FormatInt(int64(d.seq), 16)
}

func (d *fakeDevice) SendMethod(rid, name string, payload []byte) error {
	select {
	case d.calls <- fakeCall{name: name, payload: append([]byte(nil), payload...)}:
	default:
	}
	if d.answer == nil {
		return nil
	}
	status, body, ok := d.answer(name, payload)
	if !ok {
		return nil
	}
	s := d.sess.Load()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		s.Respond(rid, status, body)
	}()
	return nil
}

func (d *fakeDevice) Close(*engine.Error) {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
}

func (d *fakeDevice) Protocol() string { return "fake" }

// echo answers 200 with the request payload.
func echo(_ string, payload []byte) (int, []byte, bool) { return 200, payload, true }

// connect connects id (registered already) with a fake device that is
// subscribed to methods when subscribe is set.
func (h *testHub) connect(id auth.Identity, answer answerFunc, subscribe bool) (*fakeDevice, *engine.Session) {
	h.t.Helper()
	d := &fakeDevice{answer: answer, calls: make(chan fakeCall, 16)}
	s := h.e.Connect(id, d, time.Time{})
	d.sess.Store(s)
	if subscribe {
		s.SetSubscribed(true)
	}
	h.t.Cleanup(func() {
		s.Disconnect()
		d.wg.Wait()
	})
	return d, s
}

// device registers deviceID and connects it with answer, subscribed.
func (h *testHub) device(deviceID string, answer answerFunc) (*fakeDevice, *engine.Session) {
	h.t.Helper()
	h.createDevice(deviceID)
	return h.connect(auth.Identity{DeviceID: deviceID}, answer, true)
}

func (d *fakeDevice) lastCall(t *testing.T) fakeCall {
	t.Helper()
	select {
	case c := <-d.calls:
		return c
	default:
		require.FailNow(t, "the device received no method call")
		return fakeCall{}
	}
}
