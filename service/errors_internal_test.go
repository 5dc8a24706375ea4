package service

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
)

// Bodies in the shapes of protocol.md §5.3 and what they say.
var errorBodies = []struct {
	name string
	body string
	want errorInfo
}{
	{"shape A", `{"Message":"{\"errorCode\":404103,\"trackingId\":\"0123abcd-G:0-TimeStamp:10/19/2022 16:47:22\",\"message\":\"The operation failed because the requested device isn't online.\",\"timestampUtc\":\"2022-10-19T16:47:22.0203257Z\"}","ExceptionMessage":""}`,
		errorInfo{code: 404103, message: "The operation failed because the requested device isn't online.", trackingID: "0123abcd-G:0-TimeStamp:10/19/2022 16:47:22"}},
	{"shape A, code as string", `{"Message":"{\"errorCode\":\"504101\",\"trackingId\":\"t\",\"message\":\"Timed out\"}","ExceptionMessage":""}`,
		errorInfo{code: 504101, message: "Timed out", trackingID: "t"}},
	{"shape B", `{"Message":"ErrorCode:IotHubUnauthorizedAccess;Unauthorized","ExceptionMessage":"Tracking ID:9f3c-G:4-TimeStamp:09/23/2019 16:17:08"}`,
		errorInfo{name: "IotHubUnauthorizedAccess", message: "Unauthorized", trackingID: "9f3c-G:4-TimeStamp:09/23/2019 16:17:08"}},
	{"shape B, not a code name", `{"Message":"ErrorCode:!;x"}`, errorInfo{message: "ErrorCode:!;x"}},
	{"shape B, no text", `{"Message":"ErrorCode:DeviceNotFound","ExceptionMessage":""}`,
		errorInfo{name: "DeviceNotFound"}},
	{"shape C", `{"Message":{"errorCode":"404103","trackingId":"abc","message":"offline","timestampUtc":"2022-10-19T16:47:22Z"},"ExceptionMessage":""}`,
		errorInfo{code: 404103, message: "offline", trackingID: "abc"}},
	{"shape C, numeric code", `{"Message":{"errorCode":409001,"message":"exists"}}`,
		errorInfo{code: 409001, message: "exists"}},
	{"inner object alone", `{"errorCode":412001,"trackingId":"x","message":"etag"}`,
		errorInfo{code: 412001, message: "etag", trackingID: "x"}},
	{"name as errorCode", `{"Message":"{\"errorCode\":\"GatewayTimeout\",\"message\":\"slow\"}"}`,
		errorInfo{name: "GatewayTimeout", message: "slow"}},
	{"plain ASP.NET", `{"Message":"No HTTP resource was found that matches the request URI 'https://h/x'.","ExceptionMessage":""}`,
		errorInfo{message: "No HTTP resource was found that matches the request URI 'https://h/x'."}},
	{"lower-case keys", `{"message":"{\"errorcode\":429001,\"message\":\"slow down\"}"}`,
		errorInfo{code: 429001, message: "slow down"}},
	{"BOM and spaces", "\xef\xbb\xbf  {\"Message\":\"ErrorCode:ServerError;boom\"} ",
		errorInfo{name: "ServerError", message: "boom"}},
	{"empty", ``, errorInfo{}},
	{"not JSON", `<html>Bad Gateway</html>`, errorInfo{message: "<html>Bad Gateway</html>"}},
	{"truncated JSON", `{"Message":"{\"errorCode\":404`, errorInfo{message: `{"Message":"{\"errorCode\":404`}},
	{"Message inner is broken JSON", `{"Message":"{\"errorCode\":404"}`, errorInfo{message: `{"errorCode":404`}},
	{"unknown object", `{"error":{"code":"X"}}`, errorInfo{message: `{"error":{"code":"X"}}`}},
	{"array", `[1,2]`, errorInfo{message: `[1,2]`}},
	{"code out of range", `{"errorCode":42,"message":"m"}`, errorInfo{message: "m"}},
	{"code is garbage", `{"errorCode":"not a name!","message":"m"}`, errorInfo{message: "m"}},
	{"null everything", `{"Message":null,"ExceptionMessage":null,"errorCode":null}`, errorInfo{message: `{"Message":null,"ExceptionMessage":null,"errorCode":null}`}},
}

func TestParseErrorBody(t *testing.T) {
	for _, tc := range errorBodies {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, parseErrorBody([]byte(tc.body)), "parseErrorBody(%s)", tc.body)
		})
	}
	long := parseErrorBody([]byte(`{"Message":"` + strings.Repeat("é", 5000) + `"}`))
	assert.LessOrEqual(t, len(long.message), maxMessageLen+len("…"), "bytes of a clipped 10000-byte message")
	assert.True(t, utf8.ValidString(long.message), "a clipped message is valid UTF-8")
}

func FuzzParseErrorBody(f *testing.F) {
	for _, tc := range errorBodies {
		f.Add([]byte(tc.body), "")
	}
	f.Add([]byte(`{"Message":"{\"errorCode\":404103}"}`), "DeviceNotFound")
	f.Add([]byte(`{"Message":{"errorCode":{"x":1}}}`), "bad header!")
	f.Fuzz(func(t *testing.T, body []byte, header string) {
		info := parseErrorBody(body)
		require.LessOrEqual(t, len(info.message), maxMessageLen+len("…"), "bytes of the message")
		require.LessOrEqual(t, len(info.trackingID), maxMessageLen+len("…"), "bytes of the tracking id")
		if info.code != 0 {
			require.True(t, info.code >= 100000 && info.code <= 999999, "code %d", info.code)
		}
		if info.name != "" {
			require.True(t, validName(string(info.name)), "name %q", info.name)
		}
		resp := &http.Response{StatusCode: 404, Header: http.Header{"Iothub-Errorcode": {header}}, Body: io.NopCloser(bytes.NewReader(body))}
		err := newResponseError(resp)
		var re *ResponseError
		require.ErrorAs(t, err, &re)
		require.Equal(t, 404, re.StatusCode)
		require.True(t, strings.HasPrefix(re.Error(), "iothub: "), "message %q", re.Error())
		if re.Code != 0 && codeNames[re.Code] != "" {
			require.Equal(t, codeNames[re.Code], re.ErrorCode, "code %d and name disagree", re.Code)
		}
		_ = errors.Is(err, ErrDeviceNotFound)
	})
}

func response(status int, header string, body string) *http.Response {
	h := http.Header{}
	if header != "" {
		h.Set("iothub-errorcode", header)
	}
	u, _ := url.Parse("https://localhost/twins/d/methods?api-version=2021-04-12")
	return &http.Response{StatusCode: status, Status: fmt.Sprint(status), Header: h, Body: io.NopCloser(strings.NewReader(body)),
		Request: &http.Request{Method: "POST", URL: u, Header: http.Header{"Authorization": {"SharedAccessSignature sr=x&sig=SECRET&se=1"}}}}
}

// The header names the code first; the body's number is kept only when it
// agrees.
func TestNewResponseError(t *testing.T) {
	shapeA := func(code int) string {
		return fmt.Sprintf(`{"Message":"{\"errorCode\":%d,\"trackingId\":\"tid\",\"message\":\"msg\"}","ExceptionMessage":""}`, code)
	}
	for _, tc := range []struct {
		name     string
		status   int
		header   string
		body     string
		wantCode int
		wantName ErrorCode
		wantText string
		is       error
	}{
		{"agree", 404, "DeviceNotOnline", shapeA(404103), 404103, ErrorCodeDeviceNotOnline, "iothub: 404103 DeviceNotOnline: msg", ErrDeviceNotOnline},
		{"header only", 404, "DeviceNotFound", `garbage`, 404001, ErrorCodeDeviceNotFound, "iothub: 404001 DeviceNotFound: garbage", ErrDeviceNotFound},
		{"body only", 404, "", shapeA(404010), 404010, ErrorCodeModuleNotFound, "iothub: 404010 ModuleNotFound: msg", ErrModuleNotFound},
		{"disagree: header wins", 404, "DeviceNotFound", shapeA(404103), 404001, ErrorCodeDeviceNotFound, "iothub: 404001 DeviceNotFound: msg", ErrDeviceNotFound},
		{"unknown name, unknown number", 403, "DeviceMaximumInflightMethodExceeded", shapeA(403800), 403800, "DeviceMaximumInflightMethodExceeded", "iothub: 403800 DeviceMaximumInflightMethodExceeded: msg", nil},
		{"unknown name, known number", 429, "SomethingNew", shapeA(429001), 0, "SomethingNew", "iothub: SomethingNew: msg", ErrThrottled},
		{"unknown throttling code", 429, "", shapeA(429005), 429005, "", "iothub: 429005: msg", ErrThrottled},
		{"shape B name", 401, "", `{"Message":"ErrorCode:IotHubUnauthorizedAccess;Unauthorized","ExceptionMessage":"Tracking ID:t1"}`, 401002, ErrorCodeIotHubUnauthorizedAccess, "iothub: 401002 IotHubUnauthorizedAccess: Unauthorized", ErrUnauthorized},
		{"bad header ignored", 404, "Device Not;Online", shapeA(404103), 404103, ErrorCodeDeviceNotOnline, "iothub: 404103 DeviceNotOnline: msg", ErrDeviceNotOnline},
		{"no code, 504", 504, "", ``, 0, "", "iothub: HTTP 504 Gateway Timeout", ErrGatewayTimeout},
		{"no code, 400", 400, "", `{"Message":"bad"}`, 0, "", "iothub: HTTP 400 Bad Request: bad", ErrArgumentInvalid},
		{"400006 is an invalid argument", 400, "IotHubFormatError", shapeA(400006), 400006, ErrorCodeIotHubFormatError, "iothub: 400006 IotHubFormatError: msg", ErrArgumentInvalid},
		{"400005 too", 400, "", shapeA(400005), 400005, ErrorCodeArgumentNull, "iothub: 400005 ArgumentNull: msg", ErrArgumentInvalid},
		{"no code, 413", 413, "", ``, 0, "", "iothub: HTTP 413 Request Entity Too Large", ErrMessageTooLarge},
		{"no code, 412", 412, "", ``, 0, "", "iothub: HTTP 412 Precondition Failed", ErrPreconditionFailed},
		{"no code, 401", 401, "", ``, 0, "", "iothub: HTTP 401 Unauthorized", ErrUnauthorized},
		{"no code, 503", 503, "", ``, 0, "", "iothub: HTTP 503 Service Unavailable", ErrServiceUnavailable},
		{"unknown status", 599, "", ``, 0, "", "iothub: HTTP 599", nil},
		// The registry shape as IoT Hub and the local hub send it.
		{"registry shape 404", 404, "DeviceNotFound", `{"Message":"ErrorCode:DeviceNotFound;Device dev1 not registered.","ExceptionMessage":"Tracking ID:0123456789abcdef0123456789abcdef-G:0-TimeStamp:12/05/2026 10:11:12"}`,
			404001, ErrorCodeDeviceNotFound, "iothub: 404001 DeviceNotFound: Device dev1 not registered.", ErrDeviceNotFound},
		{"registry shape 400028", 400, "InvalidDeviceScope", `{"Message":"ErrorCode:InvalidDeviceScope;bad scope","ExceptionMessage":"Tracking ID:t"}`,
			400028, ErrorCodeInvalidDeviceScope, "iothub: 400028 InvalidDeviceScope: bad scope", ErrArgumentInvalid},
		{"registry shape, number only", 429, "", `{"Message":"ErrorCode:429099;slow down","ExceptionMessage":"Tracking ID:t"}`,
			429099, "", "iothub: 429099: slow down", ErrThrottled},
		{"bad device response", 502, "InvalidResponseWhileProxying", shapeA(502001), 502001, ErrorCodeInvalidResponseWhileProxying,
			"iothub: 502001 InvalidResponseWhileProxying: msg", ErrBadDeviceResponse},
		{"no code, 502", 502, "", ``, 0, "", "iothub: HTTP 502 Bad Gateway", ErrBadDeviceResponse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := newResponseError(response(tc.status, tc.header, tc.body))
			var re *ResponseError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, tc.wantCode, re.Code, "Code")
			assert.Equal(t, tc.wantName, re.ErrorCode, "ErrorCode")
			assert.Equal(t, tc.wantText, re.Error(), "Error()")
			all := []error{ErrDeviceNotOnline, ErrDeviceNotFound, ErrModuleNotFound, ErrGatewayTimeout, ErrThrottled, ErrUnauthorized,
				ErrArgumentInvalid, ErrMessageTooLarge, ErrPreconditionFailed, ErrDeviceAlreadyExists, ErrModuleAlreadyExists, ErrServiceUnavailable,
				ErrBadDeviceResponse}
			for _, s := range all {
				assert.Equal(t, s == tc.is, errors.Is(err, s), "errors.Is(%v, %v)", err, s)
			}
			var az *azcore.ResponseError
			require.ErrorAs(t, err, &az)
			assert.Equal(t, tc.status, az.StatusCode, "azcore error's status")
			assert.Equal(t, string(tc.wantName), az.ErrorCode, "azcore error's code")
			assert.NotContains(t, err.Error(), "SECRET", "the error shows the request's Authorization header")
			assert.NotContains(t, fmt.Sprint(az), "SECRET", "the azcore error shows the request's Authorization header")
		})
	}
	// A sentinel is not matched by unrelated errors, and its text is clear.
	assert.NotErrorIs(t, errors.New("x"), ErrThrottled)
	assert.Equal(t, "iothub: throttled", ErrThrottled.Error())
}

// A fixed token that has expired stops requests with a clear error and no
// retries.
func TestSASPolicyExpiredStaticToken(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	tok, err := auth.SignSAS("localhost", "iothubowner", key, time.Now().Add(-time.Minute))
	require.NoError(t, err)
	st, err := auth.NewStaticToken(tok)
	require.NoError(t, err)
	var sent int
	transport := transportFunc(func(*http.Request) (*http.Response, error) { sent++; return nil, errors.New("unreachable") })
	o := ClientOptions{}
	o.Transport = transport
	o.Retry.MaxRetries = 3
	c, err := newClient("localhost", "", "https://localhost", "test", &sasPolicy{tokens: st}, o)
	require.NoError(t, err)
	_, err = c.GetDevice(context.Background(), "dev1")
	require.ErrorIs(t, err, auth.ErrSASExpired)
	assert.ErrorContains(t, err, "SharedAccessSignature has expired and cannot be renewed")
	assert.True(t, strings.HasPrefix(err.Error(), "iothub: the connection string's"), "one iothub: prefix: %v", err)
	assert.NotContains(t, err.Error(), "sig=", "the error shows the token")
	assert.Equal(t, 0, sent, "requests sent with an expired token")
	// And plain HTTP is refused before a token is put on the wire.
	c, err = newClient("localhost", "", "http://localhost", "test", &sasPolicy{tokens: st}, o)
	require.NoError(t, err)
	_, err = c.GetDevice(context.Background(), "dev1")
	require.ErrorIs(t, err, ErrArgumentInvalid, "plain HTTP")
	assert.ErrorContains(t, err, "plain http")
	assert.Equal(t, 0, sent, "requests sent over plain HTTP")
}

type transportFunc func(*http.Request) (*http.Response, error)

func (f transportFunc) Do(r *http.Request) (*http.Response, error) { return f(r) }

// When the hub does not answer within the method's timeouts plus the
// margin, the call ends with an error wrapping context.DeadlineExceeded
// (here with a short deadline standing in for the derived one).
func TestInvokeClientDeadline(t *testing.T) {
	done := make(chan struct{})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-done:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(done) })
	hc := srv.Client()
	t.Cleanup(hc.CloseIdleConnections)
	o := ClientOptions{}
	o.Transport = hc
	key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	tp, err := auth.NewKeyTokenProvider("localhost", "iothubowner", key, nil)
	require.NoError(t, err)
	c, err := newClient("localhost", "", srv.URL, "test", &sasPolicy{tokens: tp}, o)
	require.NoError(t, err)
	body, timeout, err := CloudToDeviceMethod{MethodName: "m"}.encode()
	require.NoError(t, err)
	require.Equal(t, 45*time.Second, timeout, "deadline for the defaults: 30s + 0s + 15s")
	ctx := context.Background()
	_, err = c.send(ctx, "/twins/d/methods", body, 200*time.Millisecond)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotEqual(t, context.DeadlineExceeded, err, "the client's own deadline error, not the context's")
	assert.True(t, strings.HasPrefix(err.Error(), "iothub: no answer from the hub within 200ms"), "message %q", err)
	assert.NoError(t, ctx.Err(), "the caller's context ended")
}

func TestMethodDeadline(t *testing.T) {
	for _, tc := range []struct {
		m    CloudToDeviceMethod
		want time.Duration
	}{
		{CloudToDeviceMethod{MethodName: "m"}, 45 * time.Second},
		{CloudToDeviceMethod{MethodName: "m", ResponseTimeout: 5 * time.Second}, 20 * time.Second},
		{CloudToDeviceMethod{MethodName: "m", ResponseTimeout: 300 * time.Second, ConnectTimeout: 300 * time.Second}, 615 * time.Second},
		{CloudToDeviceMethod{MethodName: "m", ConnectTimeout: 60 * time.Second}, 105 * time.Second},
	} {
		body, got, err := tc.m.encode()
		require.NoError(t, err, "%+v", tc.m)
		assert.Equal(t, tc.want, got, "deadline of %+v", tc.m)
		want := fmt.Sprintf(`{"methodName":"m","responseTimeoutInSeconds":%d,"connectTimeoutInSeconds":%d,"payload":null}`,
			(tc.want-tc.m.ConnectTimeout-deadlineMargin)/time.Second, tc.m.ConnectTimeout/time.Second)
		assert.Equal(t, want, string(body), "body of %+v", tc.m)
	}
}

func TestRetryClassification(t *testing.T) {
	o := dispatchSafeRetry(policy.RetryOptions{})
	dial := &url.Error{Op: "Post", URL: "https://h", Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
	read := &url.Error{Op: "Post", URL: "https://h", Err: &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}}
	for _, tc := range []struct {
		name   string
		status int
		err    error
		want   bool
	}{
		{"dial error", 0, dial, true},
		{"reset after writing", 0, read, false},
		{"EOF", 0, io.ErrUnexpectedEOF, false},
		{"deadline", 0, context.DeadlineExceeded, false},
		{"429", 429, nil, true},
		{"503", 503, nil, true},
		{"504", 504, nil, false},
		{"500", 500, nil, false},
		{"502", 502, nil, false},
		{"408", 408, nil, false},
		{"404", 404, nil, false},
		{"200", 200, nil, false},
	} {
		var resp *http.Response
		if tc.err == nil {
			resp = &http.Response{StatusCode: tc.status}
		}
		assert.Equal(t, tc.want, o.ShouldRetry(resp, tc.err), "%s: ShouldRetry", tc.name)
	}
	// The caller's status codes restrict; an empty list allows none.
	none := dispatchSafeRetry(policy.RetryOptions{StatusCodes: []int{}})
	assert.False(t, none.ShouldRetry(&http.Response{StatusCode: 429}, nil), "StatusCodes [] must stop status retries")
	assert.True(t, none.ShouldRetry(nil, dial), "StatusCodes [] must not stop dial retries")
	// The caller's ShouldRetry is kept.
	mine := func(*http.Response, error) bool { return true }
	got := dispatchSafeRetry(policy.RetryOptions{ShouldRetry: mine})
	assert.True(t, got.ShouldRetry(&http.Response{StatusCode: 504}, nil), "the caller's ShouldRetry was replaced")
	require.True(t, runtime.HasStatusCode(&http.Response{StatusCode: 504}, 504), "sanity")
}
