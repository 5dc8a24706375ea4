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
			if err != nil {
				t.Fatalf("InvokeDeviceMethod: %v", err)
			}
			if res.Status != tc.wantState || string(res.Payload) != tc.want {
				t.Fatalf("result = %d %s, want %d %s", res.Status, res.Payload, tc.wantState, tc.want)
			}
			calls := hub.Calls()
			if len(calls) != before+1 {
				t.Fatalf("hub saw %d calls, want 1", len(calls)-before)
			}
			if got := string(calls[before].Payload); got != tc.wantSent || calls[before].Method != "echo" {
				t.Fatalf("hub got method %q payload %q, want echo %q", calls[before].Method, got, tc.wantSent)
			}
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
		if err != nil {
			t.Fatalf("%s: a device's status must be data, got error %v", tc.method, err)
		}
		if res.Status != tc.status || string(res.Payload) != tc.body {
			t.Fatalf("%s: got %d %s, want %d %s", tc.method, res.Status, res.Payload, tc.status, tc.body)
		}
	}
}

func TestInvokeModuleMethod(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	hub.AddDevice(t, "dev1")
	echoDevice(t, hub, hub.AddModule(t, "dev1", "mod1"), nil, 201)
	c, _ := newClient(t, hub, "", nil)
	res, err := c.InvokeModuleMethod(context.Background(), "dev1", "mod1", echo)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 201 || string(res.Payload) != `{"n":1}` {
		t.Fatalf("module result %d %s", res.Status, res.Payload)
	}
	calls := hub.Calls()
	if len(calls) != 1 || calls[0].DeviceID != "dev1" || calls[0].ModuleID != "mod1" {
		t.Fatalf("calls = %+v", calls)
	}
	// The module's connection does not make the device itself online.
	if _, err := c.InvokeDeviceMethod(context.Background(), "dev1", echo); !errors.Is(err, service.ErrDeviceNotOnline) {
		t.Fatalf("device method with only the module online: %v, want ErrDeviceNotOnline", err)
	}
}

// Ids are escaped in the path: ids with characters that mean something in
// a URL reach the right device.
func TestInvokeEscapedIDs(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c, _ := newClient(t, hub, "", nil)
	for _, id := range []string{"dev#1", "a?b=c", "50%off", "x+y", "it's(1)!", "a:b@c,d=e$*"} {
		echoDevice(t, hub, hub.AddDevice(t, id), nil, 200)
		res, err := c.InvokeDeviceMethod(context.Background(), id, echo)
		if err != nil {
			t.Fatalf("%q: %v", id, err)
		}
		if res.Status != 200 {
			t.Fatalf("%q: status %d", id, res.Status)
		}
		if calls := hub.Calls(); calls[len(calls)-1].DeviceID != id {
			t.Fatalf("%q: the hub invoked %q", id, calls[len(calls)-1].DeviceID)
		}
	}
}

// checkResponseError checks the typed error, the sentinel, the azcore error
// underneath and the message.
func checkResponseError(t *testing.T, err error, status, code int, name service.ErrorCode, sentinel error) *service.ResponseError {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %d %s", code, name)
	}
	var re *service.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T) is not a *service.ResponseError", err, err)
	}
	if re.StatusCode != status || re.Code != code || re.ErrorCode != name {
		t.Fatalf("got %d/%d/%s, want %d/%d/%s (%v)", re.StatusCode, re.Code, re.ErrorCode, status, code, name, err)
	}
	if sentinel != nil && !errors.Is(err, sentinel) {
		t.Fatalf("errors.Is(%v, %v) = false", err, sentinel)
	}
	if re.Message == "" || re.TrackingID == "" || re.RawResponse == nil {
		t.Fatalf("message %q, tracking id %q, raw response %v: want all set", re.Message, re.TrackingID, re.RawResponse)
	}
	if want := "iothub: " + strconv.Itoa(code) + " " + string(name) + ": "; !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Error() = %q, want prefix %q", err.Error(), want)
	}
	var az *azcore.ResponseError
	if !errors.As(err, &az) || az.StatusCode != status || az.ErrorCode != string(name) {
		t.Fatalf("no *azcore.ResponseError with %d %s underneath: %#v", status, name, az)
	}
	// A sentinel of another code does not match.
	for _, other := range []error{service.ErrDeviceNotOnline, service.ErrDeviceNotFound, service.ErrModuleNotFound,
		service.ErrGatewayTimeout, service.ErrThrottled, service.ErrUnauthorized, service.ErrServiceUnavailable,
		service.ErrArgumentInvalid, service.ErrMessageTooLarge, service.ErrPreconditionFailed,
		service.ErrDeviceAlreadyExists, service.ErrModuleAlreadyExists, service.ErrBadDeviceResponse} {
		if other != sentinel && errors.Is(err, other) {
			t.Fatalf("%v also matches %v", err, other)
		}
	}
	return re
}

// parseCS parses a service connection string.
func parseCS(t *testing.T, s string) auth.ConnectionString {
	t.Helper()
	cs, err := auth.ParseServiceConnectionString(s)
	if err != nil {
		t.Fatal(err)
	}
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
	if offline != 1 || unknown != 1 {
		t.Fatalf("the hub saw %d DeviceNotOnline and %d DeviceNotFound calls, want 1 each (no retries)", offline, unknown)
	}
	if n := ownerTries.count(); n != 3 {
		t.Fatalf("owner made %d attempts for its 3 calls, want 3", n)
	}
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
			if err := hub.FailServiceRequests(tc.code, 1); err != nil {
				t.Fatal(err)
			}
			_, err := c.InvokeDeviceMethod(context.Background(), "dev1", echo)
			checkResponseError(t, err, tc.status, tc.code, tc.name, tc.sentinel)
			if tries.count() != 1 || len(hub.Calls()) != 0 {
				t.Fatalf("%d attempts, %d calls dispatched; want 1 and 0", tries.count(), len(hub.Calls()))
			}
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
	if len(calls) != 1 || calls[0].ErrorCode != 504101 || tries.count() != 1 {
		t.Fatalf("%d attempts, hub calls %+v: want exactly one call (a 504 may have reached the device)", tries.count(), calls)
	}
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
		if err := hub.FailServiceRequests(code, n); err != nil {
			t.Fatal(err)
		}
	}
	for _, code := range []int{429001, 503001} {
		t.Run("retried "+strconv.Itoa(code), func(t *testing.T) {
			hub, c, tries := setup(t, func(o *service.ClientOptions) { o.Retry.MaxRetries = 2 })
			fail(t, hub, code, 2)
			res, err := c.InvokeDeviceMethod(ctx, "dev1", echo)
			if err != nil || res.Status != 200 {
				t.Fatalf("after 2 injected %d: %v %v", code, res, err)
			}
			if tries.count() != 3 || len(hub.Calls()) != 1 {
				t.Fatalf("%d attempts, %d dispatched calls; want 3 and 1", tries.count(), len(hub.Calls()))
			}
		})
	}
	t.Run("retries exhausted", func(t *testing.T) {
		hub, c, tries := setup(t, func(o *service.ClientOptions) { o.Retry.MaxRetries = 1 })
		fail(t, hub, 429001, 2)
		_, err := c.InvokeDeviceMethod(ctx, "dev1", echo)
		checkResponseError(t, err, 429, 429001, service.ErrorCodeThrottlingException, service.ErrThrottled)
		if tries.count() != 2 {
			t.Fatalf("%d attempts, want 2", tries.count())
		}
	})
	t.Run("500 is not retried for a method but is for a read", func(t *testing.T) {
		hub, c, tries := setup(t, func(o *service.ClientOptions) { o.Retry.MaxRetries = 3 })
		fail(t, hub, 500001, 1)
		_, err := c.InvokeDeviceMethod(ctx, "dev1", echo)
		checkResponseError(t, err, 500, 500001, service.ErrorCodeServerError, nil)
		if tries.count() != 1 {
			t.Fatalf("%d attempts for a method that got a 500, want 1", tries.count())
		}
		fail(t, hub, 500001, 1)
		if _, err := c.GetDevice(ctx, "dev1"); err != nil {
			t.Fatalf("GetDevice after one 500: %v", err)
		}
		if tries.count() != 3 {
			t.Fatalf("%d attempts in all, want 1 + 2 (the read retried)", tries.count())
		}
	})
	t.Run("StatusCodes restricts", func(t *testing.T) {
		hub, c, tries := setup(t, func(o *service.ClientOptions) { o.Retry.MaxRetries = 3; o.Retry.StatusCodes = []int{503} })
		fail(t, hub, 429001, 1)
		if _, err := c.InvokeDeviceMethod(ctx, "dev1", echo); !errors.Is(err, service.ErrThrottled) || tries.count() != 1 {
			t.Fatalf("429 with StatusCodes [503]: %v after %d attempts; want ErrThrottled after 1", err, tries.count())
		}
		fail(t, hub, 503001, 1)
		if _, err := c.InvokeDeviceMethod(ctx, "dev1", echo); err != nil || tries.count() != 3 {
			t.Fatalf("503 with StatusCodes [503]: %v after %d attempts in all; want success after 1+2", err, tries.count())
		}
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
		if _, err := c.InvokeDeviceMethod(ctx, "dev1", echo); !errors.Is(err, service.ErrThrottled) || tries.count() != 1 {
			t.Fatalf("429 with a ShouldRetry refusing it: %v after %d attempts", err, tries.count())
		}
		fail(t, hub, 500001, 1)
		if _, err := c.InvokeDeviceMethod(ctx, "dev1", echo); err != nil || tries.count() != 3 {
			t.Fatalf("500 with a ShouldRetry accepting it: %v after %d attempts in all", err, tries.count())
		}
		if asked.Load() < 2 {
			t.Fatalf("ShouldRetry was asked %d times", asked.Load())
		}
	})
}

// A closed port: the connection is refused, so the call certainly was not
// dispatched and is retried.
func TestInvokeRetriesConnectionRefused(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, tries := newClient(t, hub, "", func(o *service.ClientOptions) {
		o.Retry.MaxRetries = 2
		o.Endpoint = "https://" + addr
	})
	_, err = c.InvokeDeviceMethod(context.Background(), "dev1", echo)
	var re *service.ResponseError
	if err == nil || errors.As(err, &re) || !strings.HasPrefix(err.Error(), "iothub: ") {
		t.Fatalf("got %v, want an iothub: transport error", err)
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		t.Fatalf("error %v does not hold the dial error", err)
	}
	if tries.count() != 3 {
		t.Fatalf("%d attempts, want 3 (refused connections are retried)", tries.count())
	}
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
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.InvokeDeviceMethod(context.Background(), "dev1", echo); err == nil || !strings.HasPrefix(err.Error(), "iothub: ") {
		t.Fatalf("got %v, want a transport error", err)
	}
	if n := requests.Load(); n != 1 {
		t.Fatalf("the server got %d requests for one invocation, want 1", n)
	}
	if _, err := c.CreateDevice(context.Background(), &service.Device{DeviceID: "d"}); err == nil {
		t.Fatal("CreateDevice succeeded against a server that drops connections")
	}
	if n := requests.Load(); n != 2 {
		t.Fatalf("the server got %d requests after a create, want 2 (writes are not retried either)", n)
	}
	if _, err := c.GetDevice(context.Background(), "dev1"); err == nil {
		t.Fatal("GetDevice succeeded against a server that drops connections")
	}
	if n := requests.Load(); n != 6 {
		t.Fatalf("the server got %d requests in all, want 2 + 4 (a read is retried 3 times)", n)
	}
}

func TestInvokeContext(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	echoDevice(t, hub, hub.AddDevice(t, "slow"), nil, 200)
	hub.DelayResponses("slow", 10*time.Second)
	c, tries := newClient(t, hub, "", func(o *service.ClientOptions) { o.Retry.MaxRetries = 3 })

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.InvokeDeviceMethod(ctx, "slow", echo); err != context.Canceled {
		t.Fatalf("cancelled context: got %v, want context.Canceled as is", err)
	}
	if tries.count() != 0 {
		t.Fatalf("%d attempts with a cancelled context", tries.count())
	}

	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := c.InvokeDeviceMethod(ctx, "slow", service.CloudToDeviceMethod{MethodName: "echo", ResponseTimeout: 30 * time.Second}); err != context.DeadlineExceeded {
		t.Fatalf("context deadline during the call: got %v, want context.DeadlineExceeded as is", err)
	}
	if tries.count() != 1 {
		t.Fatalf("%d attempts, want 1 (cancellation is never retried)", tries.count())
	}

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
	if _, err := c.InvokeDeviceMethod(ctx, "slow", echo); err != context.Canceled {
		t.Fatalf("cancelled during the call: got %v, want context.Canceled as is", err)
	}
	if tries.count() != 2 {
		t.Fatalf("%d attempts in all, want 2", tries.count())
	}
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
			if !errors.Is(err, service.ErrArgumentInvalid) {
				t.Fatalf("got %v, want ErrArgumentInvalid", err)
			}
			if !strings.HasPrefix(err.Error(), "iothub: ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("message %q does not start with iothub: and say %q", err, tc.want)
			}
			if errors.Is(err, service.ErrMessageTooLarge) != tc.tooLarge {
				t.Fatalf("errors.Is(%v, ErrMessageTooLarge) = %v", err, !tc.tooLarge)
			}
			var re *service.ResponseError
			if errors.As(err, &re) {
				t.Fatalf("a client-side error is a *ResponseError: %v", err)
			}
		})
	}
	if tries.count() != 0 {
		t.Fatalf("%d requests were sent for invalid calls", tries.count())
	}
	var ute *json.UnsupportedTypeError
	if _, err := c.InvokeDeviceMethod(ctx, "dev1", service.CloudToDeviceMethod{MethodName: "m", Payload: func() {}}); !errors.As(err, &ute) {
		t.Fatalf("the encoding error is not reachable: %v", err)
	}
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
	if err != nil {
		t.Fatalf("a payload of exactly %d bytes: %v", service.MaxPayloadSize, err)
	}
	if len(res.Payload) != service.MaxPayloadSize {
		t.Fatalf("echoed %d bytes", len(res.Payload))
	}
	for _, name := range []string{"a", "reboot", "Reboot.Now-1_2~3", "!%&'*^`|", strings.Repeat("m", 100)} {
		res, err := c.InvokeDeviceMethod(ctx, "dev1", service.CloudToDeviceMethod{MethodName: name, ResponseTimeout: 5 * time.Second})
		if err != nil || res.Status != 200 {
			t.Fatalf("method name %q: %v", name, err)
		}
		if calls := hub.Calls(); calls[len(calls)-1].Method != name {
			t.Fatalf("the hub got method %q, want %q", calls[len(calls)-1].Method, name)
		}
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
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	good := &recordingCredential{cred: hub.Credential()}
	c := entra(t, good)
	res, err := c.InvokeDeviceMethod(ctx, "dev1", echo)
	if err != nil || res.Status != 200 {
		t.Fatalf("invoke with an Entra token: %v %v", res, err)
	}
	if d, err := c.GetDevice(ctx, "dev1"); err != nil || d.DeviceID != "dev1" {
		t.Fatalf("GetDevice with an Entra token: %v %v", d, err)
	}
	if got, _ := good.asked.Load().([]string); len(got) != 1 || got[0] != "https://iothubs.azure.net/.default" {
		t.Fatalf("the client asked for scopes %q", got)
	}

	wrong := entra(t, &recordingCredential{cred: hub.Credential(), scopes: []string{"https://management.azure.com/.default"}})
	_, err = wrong.InvokeDeviceMethod(ctx, "dev1", echo)
	checkResponseError(t, err, 401, 401002, service.ErrorCodeIotHubUnauthorizedAccess, service.ErrUnauthorized)

	if _, err := service.NewClient("localhost", nil, nil); !errors.Is(err, service.ErrArgumentInvalid) {
		t.Fatalf("NewClient without a credential: %v", err)
	}
}

func TestFixedSAS(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	echoDevice(t, hub, hub.AddDevice(t, "dev1"), nil, 200)
	withToken := func(expiry time.Time) string {
		t.Helper()
		owner := parseCS(t, hub.ServiceConnectionString())
		tok, err := auth.SignSAS(owner.HostName, owner.SharedAccessKeyName, owner.SharedAccessKey, expiry)
		if err != nil {
			t.Fatal(err)
		}
		return "HostName=" + owner.HostName + ";SharedAccessKeyName=" + owner.SharedAccessKeyName +
			";SharedAccessSignature=" + tok + ";GatewayHostName=" + owner.GatewayHostName
	}
	c, tries := newClient(t, hub, withToken(time.Now().Add(time.Hour)), nil)
	for i := 0; i < 2; i++ {
		if res, err := c.InvokeDeviceMethod(context.Background(), "dev1", echo); err != nil || res.Status != 200 {
			t.Fatalf("invoke with a fixed token: %v %v", res, err)
		}
	}
	if tries.count() != 2 {
		t.Fatalf("%d attempts", tries.count())
	}
	o, _ := testOptions(t, hub)
	_, err := service.NewClientFromConnectionString(withToken(time.Now().Add(-time.Minute)), o)
	if !errors.Is(err, service.ErrArgumentInvalid) || !errors.Is(err, auth.ErrSASExpired) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("an expired fixed token: %v", err)
	}
}

// GatewayHostName and Endpoint change where the client connects, never
// the token's audience.
func TestEndpoint(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	echoDevice(t, hub, hub.AddDevice(t, "dev1"), nil, 200)
	owner := parseCS(t, hub.ServiceConnectionString())
	if owner.GatewayHostName != hub.Addr() {
		t.Fatalf("GatewayHostName %q, want %q", owner.GatewayHostName, hub.Addr())
	}
	plain := "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=" + owner.SharedAccessKey
	_, port, _ := net.SplitHostPort(hub.Addr())
	for _, endpoint := range []string{"https://" + hub.Addr(), "https://localhost:" + port + "/"} {
		c, _ := newClient(t, hub, plain, func(o *service.ClientOptions) { o.Endpoint = endpoint })
		if res, err := c.InvokeDeviceMethod(context.Background(), "dev1", echo); err != nil || res.Status != 200 {
			t.Fatalf("Endpoint %s: %v %v", endpoint, res, err)
		}
		if got := c.HostName(); got != "localhost" {
			t.Fatalf("HostName() = %q", got)
		}
	}

	// The token names HostName: another HostName is refused by the hub.
	other := "HostName=otherhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + owner.SharedAccessKey
	c, _ := newClient(t, hub, other, func(o *service.ClientOptions) { o.Endpoint = "https://" + hub.Addr() })
	if _, err := c.InvokeDeviceMethod(context.Background(), "dev1", echo); !errors.Is(err, service.ErrUnauthorized) {
		t.Fatalf("a token for another hub: %v, want ErrUnauthorized", err)
	}

	for _, bad := range []string{"http://" + hub.Addr(), "ftp://x", "https://", "https://h/path", "https://h?q=1", "https://u:p@h", "://", "localhost:443"} {
		o := &service.ClientOptions{Endpoint: bad}
		if _, err := service.NewClientFromConnectionString(plain, o); !errors.Is(err, service.ErrArgumentInvalid) || !strings.Contains(err.Error(), "invalid endpoint") {
			t.Errorf("Endpoint %q: %v, want an invalid endpoint error", bad, err)
		}
		if _, err := service.NewClient("localhost", hub.Credential(), o); !errors.Is(err, service.ErrArgumentInvalid) {
			t.Errorf("NewClient with Endpoint %q: %v", bad, err)
		}
	}
	o := &service.ClientOptions{Endpoint: "http://" + hub.Addr()}
	o.InsecureAllowCredentialWithHTTP = true
	if _, err := service.NewClientFromConnectionString(plain, o); err != nil {
		t.Errorf("http with InsecureAllowCredentialWithHTTP: %v", err)
	}
	for _, host := range []string{"", "host:443", "https://h", "a b", "h/x"} {
		if _, err := service.NewClient(host, hub.Credential(), nil); !errors.Is(err, service.ErrArgumentInvalid) {
			t.Errorf("NewClient(%q): %v, want ErrArgumentInvalid", host, err)
		}
	}
	for _, cs := range []string{"", "HostName=h", "HostName=h;DeviceId=d;SharedAccessKey=" + owner.SharedAccessKey, "garbage"} {
		_, err := service.NewClientFromConnectionString(cs, nil)
		if !errors.Is(err, service.ErrArgumentInvalid) || !errors.Is(err, auth.ErrInvalidConnectionString) {
			t.Errorf("connection string %q: %v", cs, err)
		}
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
		if tc.ok && err != nil {
			t.Fatalf("api-version %q: %v", tc.version, err)
		}
		if !tc.ok {
			var re *service.ResponseError
			if !errors.As(err, &re) || re.Code != 400001 || re.ErrorCode != service.ErrorCodeInvalidProtocolVersion {
				t.Fatalf("api-version %q: %v, want 400001 InvalidProtocolVersion", tc.version, err)
			}
		}
		if got := seen[len(seen)-1]; got != tc.want {
			t.Fatalf("sent api-version %q, want %q", got, tc.want)
		}
	}
}

type policyFunc func(*policy.Request) (*http.Response, error)

func (f policyFunc) Do(req *policy.Request) (*http.Response, error) { return f(req) }
