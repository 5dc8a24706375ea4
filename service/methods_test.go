package service_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

func TestInvokePayloads(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	echoDevice(t, hub, hub.AddDevice(t, "dev1"), nil, 200)
	c, _ := newClient(t, hub, "", nil)

	type point struct {
		X int    `json:"x"`
		Y string `json:"y,omitempty"`
	}
	for _, tc := range []struct {
		name      string
		payload   any
		want      string // the device's echo
		wantSent  string // what the hub recorded and relayed to the device
		wantState int
	}{
		// nil sends "payload":null, as .NET's CloudToDeviceMethod does, and
		// the device receives null.
		{"nil", nil, "null", "null", 200},
		{"object", map[string]any{"a": 1, "b": []int{2}}, `{"a":1,"b":[2]}`, `{"a":1,"b":[2]}`, 200},
		{"struct", point{X: 3}, `{"x":3}`, `{"x":3}`, 200},
		{"array", []any{1, "two", nil, true}, `[1,"two",null,true]`, `[1,"two",null,true]`, 200},
		{"string", "a <b> & c", `"a <b> & c"`, `"a <b> & c"`, 200},
		{"number", 42.5, `42.5`, `42.5`, 200},
		{"bool", false, `false`, `false`, 200},
		{"raw verbatim", json.RawMessage(`{"k": [1, 2.50]}`), `{"k": [1, 2.50]}`, `{"k": [1, 2.50]}`, 200},
		{"raw empty", json.RawMessage(nil), "null", "null", 200},
		{"bytes are base64", []byte("hi"), `"aGk="`, `"aGk="`, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(hub.Calls())
			res, err := c.InvokeDeviceMethod(context.Background(), "dev1", service.CloudToDeviceMethod{MethodName: "echo", Payload: tc.payload})
			require.NoError(t, err, "InvokeDeviceMethod")
			assert.Equal(t, tc.wantState, res.Status, "status")
			assert.Equal(t, tc.want, string(res.Payload), "the device's echo")
			calls := hub.Calls()
			require.Len(t, calls, before+1, "calls the hub saw")
			assert.Equal(t, "echo", calls[before].Method, "method the hub got")
			assert.Equal(t, tc.wantSent, string(calls[before].Payload), "payload the hub got")
		})
	}
}

func TestInvokeDeviceStatusIsData(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	callbackDevice(t, hub, hub.AddDevice(t, "dev1"), func(method string, payload []byte) (int, []byte) {
		switch method {
		case "fail":
			return 500, []byte(`{"error":"disk full"}`)
		case "missing":
			return 404, nil
		}
		return 200, []byte(`"ok"`)
	})
	c, _ := newClient(t, hub, "", nil)
	for _, tc := range []struct {
		method string
		status int
		body   string
	}{
		{"fail", 500, `{"error":"disk full"}`},
		{"missing", 404, "null"},
		{"ok", 200, `"ok"`},
	} {
		res, err := c.InvokeDeviceMethod(context.Background(), "dev1", service.CloudToDeviceMethod{MethodName: tc.method})
		require.NoError(t, err, "%s: a device's status must be data", tc.method)
		assert.Equal(t, tc.status, res.Status, "%s: status", tc.method)
		assert.Equal(t, tc.body, string(res.Payload), "%s: payload", tc.method)
	}
}

func TestInvokeModuleMethod(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	hub.AddDevice(t, "dev1")
	echoDevice(t, hub, hub.AddModule(t, "dev1", "mod1"), nil, 201)
	c, _ := newClient(t, hub, "", nil)
	res, err := c.InvokeModuleMethod(context.Background(), "dev1", "mod1", echo)
	require.NoError(t, err)
	assert.Equal(t, 201, res.Status, "module result")
	assert.Equal(t, `{"n":1}`, string(res.Payload), "module result")
	calls := hub.Calls()
	require.Len(t, calls, 1, "calls %+v", calls)
	assert.Equal(t, "dev1", calls[0].DeviceID)
	assert.Equal(t, "mod1", calls[0].ModuleID)
	// The module's connection does not make the device itself online.
	_, err = c.InvokeDeviceMethod(context.Background(), "dev1", echo)
	assert.ErrorIs(t, err, service.ErrDeviceNotOnline, "device method with only the module online")
}

// Ids are escaped in the path: ids with characters that mean something in
// a URL reach the right device.
func TestInvokeEscapedIDs(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c, _ := newClient(t, hub, "", nil)
	for _, id := range []string{"dev#1", "a?b=c", "50%off", "x+y", "it's(1)!", "a:b@c,d=e$*"} {
		echoDevice(t, hub, hub.AddDevice(t, id), nil, 200)
		res, err := c.InvokeDeviceMethod(context.Background(), id, echo)
		require.NoError(t, err, "%q", id)
		assert.Equal(t, 200, res.Status, "%q: status", id)
		calls := hub.Calls()
		assert.Equal(t, id, calls[len(calls)-1].DeviceID, "the device the hub invoked")
	}
}

// checkResponseError checks the typed error, the sentinel, the azcore error
// underneath and the message.
func checkResponseError(t *testing.T, err error, status, code int, name service.ErrorCode, sentinel error) *service.ResponseError {
	t.Helper()
	require.Error(t, err, "want %d %s", code, name)
	var re *service.ResponseError
	require.ErrorAs(t, err, &re)
	require.Equal(t, status, re.StatusCode, "StatusCode of %v", err)
	require.Equal(t, code, re.Code, "Code of %v", err)
	require.Equal(t, name, re.ErrorCode, "ErrorCode of %v", err)
	if sentinel != nil {
		require.ErrorIs(t, err, sentinel)
	}
	assert.NotEmpty(t, re.Message, "Message")
	assert.NotEmpty(t, re.TrackingID, "TrackingID")
	assert.NotNil(t, re.RawResponse, "RawResponse")
	want := "iothub: " + strconv.Itoa(code) + " " + string(name) + ": "
	assert.True(t, strings.HasPrefix(err.Error(), want), "Error() = %q, want prefix %q", err.Error(), want)
	var az *azcore.ResponseError
	require.ErrorAs(t, err, &az, "no *azcore.ResponseError underneath")
	assert.Equal(t, status, az.StatusCode, "azcore error's status")
	assert.Equal(t, string(name), az.ErrorCode, "azcore error's code")
	// A sentinel of another code does not match.
	for _, other := range []error{service.ErrDeviceNotOnline, service.ErrDeviceNotFound, service.ErrModuleNotFound,
		service.ErrGatewayTimeout, service.ErrThrottled, service.ErrUnauthorized, service.ErrServiceUnavailable,
		service.ErrArgumentInvalid, service.ErrMessageTooLarge, service.ErrPreconditionFailed,
		service.ErrDeviceAlreadyExists, service.ErrModuleAlreadyExists, service.ErrBadDeviceResponse} {
		if other != sentinel {
			assert.NotErrorIs(t, err, other, "matches another sentinel")
		}
	}
	return re
}

// parseCS parses a service connection string.
func parseCS(t *testing.T, s string) auth.ConnectionString {
	t.Helper()
	cs, err := auth.ParseServiceConnectionString(s)
	require.NoError(t, err)
	return cs
}

func TestInvokeErrors(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	hub.AddDevice(t, "offline")
	echoDevice(t, hub, hub.AddDevice(t, "online"), nil, 200)
	owner, ownerTries := newClient(t, hub, "", func(o *service.ClientOptions) { o.Retry.MaxRetries = 3 })
	wrongKey := strings.Replace(hub.ServiceConnectionString(), "SharedAccessKey=", "SharedAccessKey=AAAA", 1)
	wrongKey = wrongKey[:strings.Index(wrongKey, "SharedAccessKey=")] + "SharedAccessKey=" +
		base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")) + wrongKey[strings.Index(wrongKey, ";GatewayHostName"):]
	badKey, _ := newClient(t, hub, wrongKey, nil)
	reader, _ := newClient(t, hub, hub.PolicyConnectionString("registryRead"), nil)
	ctx := context.Background()

	for _, tc := range []struct {
		name     string
		call     func() error
		status   int
		code     int
		errName  service.ErrorCode
		sentinel error
	}{
		{"unknown device", func() error { _, err := owner.InvokeDeviceMethod(ctx, "nobody", echo); return err },
			404, 404001, service.ErrorCodeDeviceNotFound, service.ErrDeviceNotFound},
		{"unknown module", func() error { _, err := owner.InvokeModuleMethod(ctx, "online", "nomod", echo); return err },
			404, 404010, service.ErrorCodeModuleNotFound, service.ErrModuleNotFound},
		{"offline device", func() error { _, err := owner.InvokeDeviceMethod(ctx, "offline", echo); return err },
			404, 404103, service.ErrorCodeDeviceNotOnline, service.ErrDeviceNotOnline},
		{"wrong key", func() error { _, err := badKey.InvokeDeviceMethod(ctx, "online", echo); return err },
			401, 401002, service.ErrorCodeIotHubUnauthorizedAccess, service.ErrUnauthorized},
		{"registryRead cannot invoke", func() error { _, err := reader.InvokeDeviceMethod(ctx, "online", echo); return err },
			401, 401002, service.ErrorCodeIotHubUnauthorizedAccess, service.ErrUnauthorized},
		{"registryRead cannot create", func() error {
			_, err := reader.CreateDevice(ctx, &service.Device{DeviceID: "new"})
			return err
		}, 401, 401002, service.ErrorCodeIotHubUnauthorizedAccess, service.ErrUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkResponseError(t, tc.call(), tc.status, tc.code, tc.errName, tc.sentinel)
		})
	}

	// Neither a 404103 nor a 404001 was retried: each reached the hub once.
	var offline, unknown int
	for _, call := range hub.Calls() {
		switch call.ErrorCode {
		case 404103:
			offline++
		case 404001:
			unknown++
		}
	}
	assert.Equal(t, 1, offline, "DeviceNotOnline calls the hub saw (no retries)")
	assert.Equal(t, 1, unknown, "DeviceNotFound calls the hub saw (no retries)")
	assert.Equal(t, 3, ownerTries.count(), "attempts of the owner's 3 calls")
}

// Throttling and unavailability injected at the hub, with retries off.
func TestInvokeInjectedFaults(t *testing.T) {
	for _, tc := range []struct {
		code     int
		status   int
		name     service.ErrorCode
		sentinel error
	}{
		{429001, 429, service.ErrorCodeThrottlingException, service.ErrThrottled},
		{429002, 429, service.ErrorCodeThrottleBacklogLimitExceeded, service.ErrThrottled},
		{503001, 503, service.ErrorCodeServiceUnavailable, service.ErrServiceUnavailable},
	} {
		t.Run(string(tc.name), func(t *testing.T) {
			hub := iothubtest.NewServer(t, nil)
			echoDevice(t, hub, hub.AddDevice(t, "dev1"), nil, 200)
			c, tries := newClient(t, hub, "", func(o *service.ClientOptions) { o.Retry.MaxRetries = -1 })
			require.NoError(t, hub.FailServiceRequests(tc.code, 1))
			_, err := c.InvokeDeviceMethod(context.Background(), "dev1", echo)
			checkResponseError(t, err, tc.status, tc.code, tc.name, tc.sentinel)
			assert.Equal(t, 1, tries.count(), "attempts")
			assert.Empty(t, hub.Calls(), "calls dispatched")
		})
	}
}

func TestInvokeGatewayTimeoutIsNotRetried(t *testing.T) {
	t.Parallel() // waits out a 5 s response timeout
	hub := iothubtest.NewServer(t, nil)
	echoDevice(t, hub, hub.AddDevice(t, "slow"), nil, 200)
	hub.DelayResponses("slow", 10*time.Second)
	c, tries := newClient(t, hub, "", func(o *service.ClientOptions) { o.Retry.MaxRetries = 3 })
	_, err := c.InvokeDeviceMethod(context.Background(), "slow", service.CloudToDeviceMethod{MethodName: "echo", ResponseTimeout: 5 * time.Second})
	checkResponseError(t, err, 504, 504101, service.ErrorCodeGatewayTimeout, service.ErrGatewayTimeout)
	calls := hub.Calls()
	require.Len(t, calls, 1, "hub calls: want exactly one (a 504 may have reached the device)")
	assert.Equal(t, 504101, calls[0].ErrorCode)
	assert.Equal(t, 1, tries.count(), "attempts (a 504 may have reached the device)")
}

func TestInvokeRetries(t *testing.T) {
	ctx := context.Background()
	setup := func(t *testing.T, edit func(*service.ClientOptions)) (*iothubtest.Server, *service.Client, *attempts) {
		hub := iothubtest.NewServer(t, nil)
		echoDevice(t, hub, hub.AddDevice(t, "dev1"), nil, 200)
		c, tries := newClient(t, hub, "", edit)
		return hub, c, tries
	}
	fail := func(t *testing.T, hub *iothubtest.Server, code, n int) {
		require.NoError(t, hub.FailServiceRequests(code, n))
	}
	for _, code := range []int{429001, 503001} {
		t.Run("retried "+strconv.Itoa(code), func(t *testing.T) {
			hub, c, tries := setup(t, func(o *service.ClientOptions) { o.Retry.MaxRetries = 2 })
			fail(t, hub, code, 2)
			res, err := c.InvokeDeviceMethod(ctx, "dev1", echo)
			require.NoError(t, err, "after 2 injected %d", code)
			assert.Equal(t, 200, res.Status, "after 2 injected %d", code)
			assert.Equal(t, 3, tries.count(), "attempts")
			assert.Len(t, hub.Calls(), 1, "dispatched calls")
		})
	}
	t.Run("retries exhausted", func(t *testing.T) {
		hub, c, tries := setup(t, func(o *service.ClientOptions) { o.Retry.MaxRetries = 1 })
		fail(t, hub, 429001, 2)
		_, err := c.InvokeDeviceMethod(ctx, "dev1", echo)
		checkResponseError(t, err, 429, 429001, service.ErrorCodeThrottlingException, service.ErrThrottled)
		assert.Equal(t, 2, tries.count(), "attempts")
	})
	t.Run("500 is not retried for a method but is for a read", func(t *testing.T) {
		hub, c, tries := setup(t, func(o *service.ClientOptions) { o.Retry.MaxRetries = 3 })
		fail(t, hub, 500001, 1)
		_, err := c.InvokeDeviceMethod(ctx, "dev1", echo)
		checkResponseError(t, err, 500, 500001, service.ErrorCodeServerError, nil)
		require.Equal(t, 1, tries.count(), "attempts for a method that got a 500")
		fail(t, hub, 500001, 1)
		_, err = c.GetDevice(ctx, "dev1")
		require.NoError(t, err, "GetDevice after one 500")
		assert.Equal(t, 3, tries.count(), "attempts in all: 1 + 2 (the read retried)")
	})
	t.Run("StatusCodes restricts", func(t *testing.T) {
		hub, c, tries := setup(t, func(o *service.ClientOptions) { o.Retry.MaxRetries = 3; o.Retry.StatusCodes = []int{503} })
		fail(t, hub, 429001, 1)
		_, err := c.InvokeDeviceMethod(ctx, "dev1", echo)
		require.ErrorIs(t, err, service.ErrThrottled, "429 with StatusCodes [503]")
		require.Equal(t, 1, tries.count(), "attempts of a 429 with StatusCodes [503]")
		fail(t, hub, 503001, 1)
		_, err = c.InvokeDeviceMethod(ctx, "dev1", echo)
		require.NoError(t, err, "503 with StatusCodes [503]")
		assert.Equal(t, 3, tries.count(), "attempts in all: 1 + 2")
	})
	t.Run("ShouldRetry overrides", func(t *testing.T) {
		var asked atomic.Int32
		hub, c, tries := setup(t, func(o *service.ClientOptions) {
			o.Retry.MaxRetries = 3
			o.Retry.ShouldRetry = func(resp *http.Response, err error) bool {
				asked.Add(1)
				return resp != nil && resp.StatusCode == http.StatusInternalServerError
			}
		})
		fail(t, hub, 429001, 1)
		_, err := c.InvokeDeviceMethod(ctx, "dev1", echo)
		require.ErrorIs(t, err, service.ErrThrottled, "429 with a ShouldRetry refusing it")
		require.Equal(t, 1, tries.count(), "attempts of a 429 with a ShouldRetry refusing it")
		fail(t, hub, 500001, 1)
		_, err = c.InvokeDeviceMethod(ctx, "dev1", echo)
		require.NoError(t, err, "500 with a ShouldRetry accepting it")
		assert.Equal(t, 3, tries.count(), "attempts in all")
		assert.GreaterOrEqual(t, asked.Load(), int32(2), "times ShouldRetry was asked")
	})
}

// A closed port: the connection is refused, so the call certainly was not
// dispatched and is retried.
func TestInvokeRetriesConnectionRefused(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	c, tries := newClient(t, hub, "", func(o *service.ClientOptions) {
		o.Retry.MaxRetries = 2
		o.Endpoint = "https://" + addr
	})
	_, err = c.InvokeDeviceMethod(context.Background(), "dev1", echo)
	require.Error(t, err)
	var re *service.ResponseError
	assert.False(t, errors.As(err, &re), "a transport error is a *ResponseError: %v", err)
	assert.True(t, strings.HasPrefix(err.Error(), "iothub: "), "message %q", err)
	var op *net.OpError
	require.ErrorAs(t, err, &op, "the dial error")
	assert.Equal(t, "dial", op.Op)
	assert.Equal(t, 3, tries.count(), "attempts (refused connections are retried)")
}

// A server that reads the whole request and then drops the connection: the
// call may have reached the device, so it is not retried; a read is.
func TestInvokeDoesNotRetryAfterRequestWritten(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	t.Cleanup(srv.Close)
	hc := srv.Client()
	t.Cleanup(hc.CloseIdleConnections)
	o := &service.ClientOptions{Endpoint: srv.URL}
	o.Transport = hc
	o.Retry = policy.RetryOptions{MaxRetries: 3, RetryDelay: time.Millisecond}
	cs := "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=" + base64.StdEncoding.EncodeToString(make([]byte, 32))
	c, err := service.NewClientFromConnectionString(cs, o)
	require.NoError(t, err)
	_, err = c.InvokeDeviceMethod(context.Background(), "dev1", echo)
	require.Error(t, err, "a transport error")
	assert.True(t, strings.HasPrefix(err.Error(), "iothub: "), "message %q", err)
	assert.Equal(t, int32(1), requests.Load(), "requests for one invocation")
	_, err = c.CreateDevice(context.Background(), &service.Device{DeviceID: "d"})
	require.Error(t, err, "CreateDevice against a server that drops connections")
	assert.Equal(t, int32(2), requests.Load(), "requests after a create (writes are not retried either)")
	_, err = c.GetDevice(context.Background(), "dev1")
	require.Error(t, err, "GetDevice against a server that drops connections")
	assert.Equal(t, int32(6), requests.Load(), "requests in all: 2 + 4 (a read is retried 3 times)")
}

func TestInvokeContext(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	echoDevice(t, hub, hub.AddDevice(t, "slow"), nil, 200)
	hub.DelayResponses("slow", 10*time.Second)
	c, tries := newClient(t, hub, "", func(o *service.ClientOptions) { o.Retry.MaxRetries = 3 })

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.InvokeDeviceMethod(ctx, "slow", echo)
	require.Same(t, context.Canceled, err, "cancelled context: context.Canceled as is")
	require.Equal(t, 0, tries.count(), "attempts with a cancelled context")

	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = c.InvokeDeviceMethod(ctx, "slow", service.CloudToDeviceMethod{MethodName: "echo", ResponseTimeout: 30 * time.Second})
	require.Equal(t, context.DeadlineExceeded, err, "context deadline during the call: context.DeadlineExceeded as is")
	require.Equal(t, 1, tries.count(), "attempts (cancellation is never retried)")

	// Cancelled while the hub waits for the device.
	ctx, cancel = context.WithCancel(context.Background())
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if tries.count() == 2 {
					cancel()
					return
				}
			}
		}
	}()
	_, err = c.InvokeDeviceMethod(ctx, "slow", echo)
	require.Same(t, context.Canceled, err, "cancelled during the call: context.Canceled as is")
	assert.Equal(t, 2, tries.count(), "attempts in all")
}

func TestInvokeValidation(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c, tries := newClient(t, hub, "", nil)
	ctx := context.Background()
	big := strings.Repeat("x", service.MaxPayloadSize-1) // with quotes: one byte too many
	for _, tc := range []struct {
		name     string
		device   string
		module   string
		m        service.CloudToDeviceMethod
		want     string
		tooLarge bool
	}{
		{"empty name", "dev1", "", service.CloudToDeviceMethod{}, "MethodName is empty", false},
		{"space", "dev1", "", service.CloudToDeviceMethod{MethodName: "re boot"}, `MethodName "re boot" is invalid at byte 3`, false},
		{"dollar", "dev1", "", service.CloudToDeviceMethod{MethodName: "$reboot"}, "is invalid at byte 1", false},
		{"slash", "dev1", "", service.CloudToDeviceMethod{MethodName: "a/b"}, "invalid", false},
		{"plus", "dev1", "", service.CloudToDeviceMethod{MethodName: "a+b"}, "invalid at byte 2", false},
		{"hash", "dev1", "", service.CloudToDeviceMethod{MethodName: "a#"}, "invalid at byte 2", false},
		{"101 characters", "dev1", "", service.CloudToDeviceMethod{MethodName: strings.Repeat("m", 101)}, "the most is 100", false},
		{"non-ASCII", "dev1", "", service.CloudToDeviceMethod{MethodName: "redémarrer"}, `"red\u00e9marrer" is invalid`, false},
		{"control", "dev1", "", service.CloudToDeviceMethod{MethodName: "a\x00"}, "invalid at byte 2", false},
		{"response timeout too short", "dev1", "", service.CloudToDeviceMethod{MethodName: "m", ResponseTimeout: 4 * time.Second}, "ResponseTimeout 4s is invalid", false},
		{"response timeout too long", "dev1", "", service.CloudToDeviceMethod{MethodName: "m", ResponseTimeout: 301 * time.Second}, "ResponseTimeout 5m1s is invalid", false},
		{"response timeout fraction", "dev1", "", service.CloudToDeviceMethod{MethodName: "m", ResponseTimeout: 5500 * time.Millisecond}, "whole number of seconds", false},
		{"response timeout negative", "dev1", "", service.CloudToDeviceMethod{MethodName: "m", ResponseTimeout: -time.Second}, "ResponseTimeout -1s is invalid", false},
		{"connect timeout negative", "dev1", "", service.CloudToDeviceMethod{MethodName: "m", ConnectTimeout: -time.Second}, "ConnectTimeout -1s is invalid", false},
		{"connect timeout too long", "dev1", "", service.CloudToDeviceMethod{MethodName: "m", ConnectTimeout: 301 * time.Second}, "ConnectTimeout 5m1s is invalid", false},
		{"connect timeout fraction", "dev1", "", service.CloudToDeviceMethod{MethodName: "m", ConnectTimeout: time.Millisecond}, "ConnectTimeout 1ms is invalid", false},
		{"raw payload not JSON", "dev1", "", service.CloudToDeviceMethod{MethodName: "m", Payload: json.RawMessage(`{"a":`)}, "not valid JSON", false},
		{"payload not encodable", "dev1", "", service.CloudToDeviceMethod{MethodName: "m", Payload: make(chan int)}, "cannot be encoded as JSON", false},
		{"payload too large", "dev1", "", service.CloudToDeviceMethod{MethodName: "m", Payload: big}, "Payload is 131073 bytes of JSON", true},
		{"raw payload too large", "dev1", "", service.CloudToDeviceMethod{MethodName: "m", Payload: json.RawMessage(`"` + big + `"`)}, "at most 131072", true},
		{"empty device id", "", "", echo, "device id is empty", false},
		{"bad device id", "a/b", "", echo, `invalid device id "a/b"`, false},
		{"long device id", strings.Repeat("d", 129), "", echo, "limit is 128", false},
		{"empty module id", "dev1", "-", echo, "module id is empty", false},
		{"bad module id", "dev1", "m m", echo, `invalid module id "m m"`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			switch tc.module {
			case "":
				_, err = c.InvokeDeviceMethod(ctx, tc.device, tc.m)
			case "-":
				_, err = c.InvokeModuleMethod(ctx, tc.device, "", tc.m)
			default:
				_, err = c.InvokeModuleMethod(ctx, tc.device, tc.module, tc.m)
			}
			require.ErrorIs(t, err, service.ErrArgumentInvalid)
			assert.True(t, strings.HasPrefix(err.Error(), "iothub: "), "message %q", err)
			assert.ErrorContains(t, err, tc.want)
			assert.Equal(t, tc.tooLarge, errors.Is(err, service.ErrMessageTooLarge), "errors.Is(%v, ErrMessageTooLarge)", err)
			var re *service.ResponseError
			assert.False(t, errors.As(err, &re), "a client-side error is a *ResponseError: %v", err)
		})
	}
	assert.Equal(t, 0, tries.count(), "requests sent for invalid calls")
	var ute *json.UnsupportedTypeError
	_, err := c.InvokeDeviceMethod(ctx, "dev1", service.CloudToDeviceMethod{MethodName: "m", Payload: func() {}})
	assert.ErrorAs(t, err, &ute, "the encoding error is reachable")
}

// The largest payload IoT Hub takes goes through, there and back, and the
// method names IoT Hub allows are accepted.
func TestInvokeLimits(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	echoDevice(t, hub, hub.AddDevice(t, "dev1"), nil, 200)
	c, _ := newClient(t, hub, "", nil)
	ctx := context.Background()
	big := strings.Repeat("x", service.MaxPayloadSize-2)
	res, err := c.InvokeDeviceMethod(ctx, "dev1", service.CloudToDeviceMethod{MethodName: "echo", Payload: big,
		ResponseTimeout: 300 * time.Second, ConnectTimeout: 300 * time.Second})
	require.NoError(t, err, "a payload of exactly %d bytes", service.MaxPayloadSize)
	assert.Len(t, res.Payload, service.MaxPayloadSize, "bytes echoed")
	for _, name := range []string{"a", "reboot", "Reboot.Now-1_2~3", "!%&'*^`|", strings.Repeat("m", 100)} {
		res, err := c.InvokeDeviceMethod(ctx, "dev1", service.CloudToDeviceMethod{MethodName: name, ResponseTimeout: 5 * time.Second})
		require.NoError(t, err, "method name %q", name)
		assert.Equal(t, 200, res.Status, "method name %q", name)
		calls := hub.Calls()
		assert.Equal(t, name, calls[len(calls)-1].Method, "the method the hub got")
	}
}

// recordingCredential forwards to cred with the given scopes, recording the
// scopes the client asked for.
type recordingCredential struct {
	cred   azcore.TokenCredential
	scopes []string // nil: forward the client's
	asked  atomic.Value
}

func (r *recordingCredential) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	r.asked.Store(append([]string(nil), o.Scopes...))
	if r.scopes != nil {
		o.Scopes = r.scopes
	}
	return r.cred.GetToken(ctx, o)
}

func TestEntra(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	echoDevice(t, hub, hub.AddDevice(t, "dev1"), nil, 200)
	ctx := context.Background()
	entra := func(t *testing.T, cred azcore.TokenCredential) *service.Client {
		o, _ := testOptions(t, hub)
		o.Endpoint = "https://" + hub.Addr()
		c, err := service.NewClient("localhost", cred, o)
		require.NoError(t, err)
		return c
	}

	good := &recordingCredential{cred: hub.Credential()}
	c := entra(t, good)
	res, err := c.InvokeDeviceMethod(ctx, "dev1", echo)
	require.NoError(t, err, "invoke with an Entra token")
	assert.Equal(t, 200, res.Status, "invoke with an Entra token")
	d, err := c.GetDevice(ctx, "dev1")
	require.NoError(t, err, "GetDevice with an Entra token")
	assert.Equal(t, "dev1", d.DeviceID, "GetDevice with an Entra token")
	got, _ := good.asked.Load().([]string)
	assert.Equal(t, []string{"https://iothubs.azure.net/.default"}, got, "the scopes the client asked for")
	assert.Equal(t, []string{service.EntraScope}, got, "the scopes the client asked for")

	wrong := entra(t, &recordingCredential{cred: hub.Credential(), scopes: []string{"https://management.azure.com/.default"}})
	_, err = wrong.InvokeDeviceMethod(ctx, "dev1", echo)
	checkResponseError(t, err, 401, 401002, service.ErrorCodeIotHubUnauthorizedAccess, service.ErrUnauthorized)

	_, err = service.NewClient("localhost", nil, nil)
	assert.ErrorIs(t, err, service.ErrArgumentInvalid, "NewClient without a credential")
}

func TestFixedSAS(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	echoDevice(t, hub, hub.AddDevice(t, "dev1"), nil, 200)
	withToken := func(expiry time.Time) string {
		t.Helper()
		owner := parseCS(t, hub.ServiceConnectionString())
		tok, err := auth.SignSAS(owner.HostName, owner.SharedAccessKeyName, owner.SharedAccessKey, expiry)
		require.NoError(t, err)
		return "HostName=" + owner.HostName + ";SharedAccessKeyName=" + owner.SharedAccessKeyName +
			";SharedAccessSignature=" + tok + ";GatewayHostName=" + owner.GatewayHostName
	}
	c, tries := newClient(t, hub, withToken(time.Now().Add(time.Hour)), nil)
	for i := 0; i < 2; i++ {
		res, err := c.InvokeDeviceMethod(context.Background(), "dev1", echo)
		require.NoError(t, err, "invoke with a fixed token")
		require.Equal(t, 200, res.Status, "invoke with a fixed token")
	}
	assert.Equal(t, 2, tries.count(), "attempts")
	o, _ := testOptions(t, hub)
	_, err := service.NewClientFromConnectionString(withToken(time.Now().Add(-time.Minute)), o)
	assert.ErrorIs(t, err, service.ErrArgumentInvalid, "an expired fixed token")
	assert.ErrorIs(t, err, auth.ErrSASExpired, "an expired fixed token")
	assert.ErrorContains(t, err, "expired")
}

// GatewayHostName and Endpoint change where the client connects, never
// the token's audience.
func TestEndpoint(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	echoDevice(t, hub, hub.AddDevice(t, "dev1"), nil, 200)
	owner := parseCS(t, hub.ServiceConnectionString())
	require.Equal(t, hub.Addr(), owner.GatewayHostName)
	plain := "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=" + owner.SharedAccessKey
	_, port, _ := net.SplitHostPort(hub.Addr())
	for _, endpoint := range []string{"https://" + hub.Addr(), "https://localhost:" + port + "/"} {
		c, _ := newClient(t, hub, plain, func(o *service.ClientOptions) { o.Endpoint = endpoint })
		res, err := c.InvokeDeviceMethod(context.Background(), "dev1", echo)
		require.NoError(t, err, "Endpoint %s", endpoint)
		assert.Equal(t, 200, res.Status, "Endpoint %s", endpoint)
		assert.Equal(t, "localhost", c.HostName())
	}

	// The token names HostName: another HostName is refused by the hub.
	other := "HostName=otherhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + owner.SharedAccessKey
	c, _ := newClient(t, hub, other, func(o *service.ClientOptions) { o.Endpoint = "https://" + hub.Addr() })
	_, err := c.InvokeDeviceMethod(context.Background(), "dev1", echo)
	require.ErrorIs(t, err, service.ErrUnauthorized, "a token for another hub")

	for _, bad := range []string{"http://" + hub.Addr(), "ftp://x", "https://", "https://h/path", "https://h?q=1", "https://u:p@h", "://", "localhost:443"} {
		o := &service.ClientOptions{Endpoint: bad}
		_, err := service.NewClientFromConnectionString(plain, o)
		assert.ErrorIs(t, err, service.ErrArgumentInvalid, "Endpoint %q", bad)
		assert.ErrorContains(t, err, "invalid endpoint", "Endpoint %q", bad)
		_, err = service.NewClient("localhost", hub.Credential(), o)
		assert.ErrorIs(t, err, service.ErrArgumentInvalid, "NewClient with Endpoint %q", bad)
	}
	o := &service.ClientOptions{Endpoint: "http://" + hub.Addr()}
	o.InsecureAllowCredentialWithHTTP = true
	_, err = service.NewClientFromConnectionString(plain, o)
	assert.NoError(t, err, "http with InsecureAllowCredentialWithHTTP")
	for _, host := range []string{"", "host:443", "https://h", "a b", "h/x"} {
		_, err := service.NewClient(host, hub.Credential(), nil)
		assert.ErrorIs(t, err, service.ErrArgumentInvalid, "NewClient(%q)", host)
	}
	for _, cs := range []string{"", "HostName=h", "HostName=h;DeviceId=d;SharedAccessKey=" + owner.SharedAccessKey, "garbage"} {
		_, err := service.NewClientFromConnectionString(cs, nil)
		assert.ErrorIs(t, err, service.ErrArgumentInvalid, "connection string %q", cs)
		assert.ErrorIs(t, err, auth.ErrInvalidConnectionString, "connection string %q", cs)
	}
}

// ClientOptions.APIVersion replaces the default api-version (the hub
// refuses versions it does not know with 400001).
func TestAPIVersion(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	echoDevice(t, hub, hub.AddDevice(t, "dev1"), nil, 200)
	var seen []string
	record := policyFunc(func(req *policy.Request) (*http.Response, error) {
		seen = append(seen, req.Raw().URL.Query().Get("api-version"))
		return req.Next()
	})
	for _, tc := range []struct {
		version string
		want    string
		ok      bool
	}{
		{"", service.DefaultAPIVersion, true},
		{"2018-06-30", "2018-06-30", true},
		{"1999-01-01", "1999-01-01", false},
	} {
		c, _ := newClient(t, hub, "", func(o *service.ClientOptions) {
			o.APIVersion = tc.version
			o.PerRetryPolicies = append(o.PerRetryPolicies, record)
		})
		_, err := c.InvokeDeviceMethod(context.Background(), "dev1", echo)
		if tc.ok {
			require.NoError(t, err, "api-version %q", tc.version)
		} else {
			var re *service.ResponseError
			require.ErrorAs(t, err, &re, "api-version %q", tc.version)
			assert.Equal(t, 400001, re.Code, "api-version %q", tc.version)
			assert.Equal(t, service.ErrorCodeInvalidProtocolVersion, re.ErrorCode, "api-version %q", tc.version)
		}
		require.NotEmpty(t, seen)
		assert.Equal(t, tc.want, seen[len(seen)-1], "the api-version sent")
	}
}

type policyFunc func(*policy.Request) (*http.Response, error)

func (f policyFunc) Do(req *policy.Request) (*http.Response, error) { return f(req) }
