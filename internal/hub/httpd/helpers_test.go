package httpd

import (
	"bytes"
	"context"
	"encoding/json"
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
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(NewHandler(e))
	// Cleanups run last-in first-out: the engine closes first (ending
	// device sessions and pending calls), then the server.
	t.Cleanup(srv.Close)
	t.Cleanup(e.Close)
	return &testHub{t: t, e: e, srv: srv}
}

// token signs a one-hour SAS token with a hub policy's primary key.
func (h *testHub) token(policy string) string {
	h.t.Helper()
	return h.tokenAt(policy, testHost, time.Now().Add(time.Hour))
}

func (h *testHub) tokenAt(policy, resource string, expiry time.Time) string {
	h.t.Helper()
	p, ok := h.e.Policy(policy)
	if !ok {
		h.t.Fatalf("no policy %q", policy)
	}
	tok, err := auth.SignSAS(resource, p.Name, p.PrimaryKey, expiry)
	if err != nil {
		h.t.Fatal(err)
	}
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
	if err != nil {
		h.t.Fatal(err)
	}
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
	if err != nil {
		h.t.Fatalf("%s %s: %v", rq.method, rq.path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		h.t.Fatal(err)
	}
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
	if herr != nil {
		h.t.Fatal(herr)
	}
	return d
}

func (h *testHub) createModule(deviceID, moduleID string) engine.Module {
	h.t.Helper()
	m, herr := h.e.PutModule(deviceID, moduleID, engine.Module{}, "")
	if herr != nil {
		h.t.Fatal(herr)
	}
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
	if want := code / 1000; res.status != want {
		t.Fatalf("status = %d, want %d; body %s", res.status, want, res.body)
	}
	if name := engine.CodeName(code); res.header.Get("iothub-errorcode") != name {
		t.Errorf("iothub-errorcode = %q, want %q", res.header.Get("iothub-errorcode"), name)
	}
	if ct := res.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	if bytes.Contains(res.body, []byte(`"Message":"ErrorCode:`)) {
		name, msg := parseRegistryShape(t, res.body)
		if want := engine.CodeName(code); name != want && name != strconv.Itoa(code) {
			t.Errorf("ErrorCode:%s, want %s; body %s", name, want, res.body)
		}
		return msg
	}
	inner := parseMethodShape(t, res.body)
	if inner.ErrorCode != code {
		t.Errorf("errorCode = %d, want %d; body %s", inner.ErrorCode, code, res.body)
	}
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
	if err := json.Unmarshal(body, &outer); err != nil {
		t.Fatalf("error body is not a JSON object of strings: %v: %s", err, body)
	}
	if len(outer) != 2 || !legacyTrackingPattern.MatchString(outer["ExceptionMessage"]) {
		t.Fatalf("error body has wrong fields or ExceptionMessage: %s", body)
	}
	parts := strings.Split(outer["Message"], ";")
	head := strings.Split(parts[0], ":")
	if len(parts) != 2 || len(head) != 2 || head[0] != "ErrorCode" || head[1] == "" || parts[1] == "" {
		t.Fatalf("Message %q is not ErrorCode:<name>;<text>", outer["Message"])
	}
	return head[1], parts[1]
}

// parseMethodShape decodes {"Message":"<json>","ExceptionMessage":""} strictly:
// the outer Message is a string whose content is the inner JSON object.
func parseMethodShape(t *testing.T, body []byte) errorPayload {
	t.Helper()
	var outer map[string]json.RawMessage
	if err := json.Unmarshal(body, &outer); err != nil {
		t.Fatalf("error body is not JSON: %v: %s", err, body)
	}
	if len(outer) != 2 || string(outer["ExceptionMessage"]) != `""` {
		t.Fatalf("outer error body has wrong fields: %s", body)
	}
	var msg string
	if err := json.Unmarshal(outer["Message"], &msg); err != nil {
		t.Fatalf("outer Message is not a string: %s", body)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(msg), &fields); err != nil {
		t.Fatalf("inner Message is not JSON: %v: %s", err, msg)
	}
	for _, k := range []string{"errorCode", "trackingId", "message", "timestampUtc"} {
		if _, ok := fields[k]; !ok {
			t.Fatalf("inner error lacks %s: %s", k, msg)
		}
	}
	if len(fields["errorCode"]) == 0 || fields["errorCode"][0] == '"' {
		t.Fatalf("errorCode is not a number: %s", msg)
	}
	var inner errorPayload
	if err := json.Unmarshal([]byte(msg), &inner); err != nil {
		t.Fatalf("inner error: %v: %s", err, msg)
	}
	if !trackingIDPattern.MatchString(inner.TrackingID) {
		t.Errorf("trackingId %q has the wrong form", inner.TrackingID)
	}
	if !timestampPattern.MatchString(inner.TimestampUTC) {
		t.Errorf("timestampUtc %q has the wrong form", inner.TimestampUTC)
	}
	if inner.Message == "" {
		t.Errorf("empty message")
	}
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
		t.Fatal("the device received no method call")
		return fakeCall{}
	}
}
