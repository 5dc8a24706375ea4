package iothubtest_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/internal/testutil/hubcall"
	"github.com/iothub-go/iothub/internal/testutil/pahodev"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func do(t *testing.T, s *iothubtest.Server, method, path, body, authorization string) (int, string) {
	t.Helper()
	return hubcall.Do(t, s, method, path, body, authorization)
}

func invoke(t *testing.T, s *iothubtest.Server, id, body string) (int, string) {
	t.Helper()
	return hubcall.Invoke(t, s, id, body)
}

// connect dials the hub with a connection string it handed out, unchanged:
// the address is its GatewayHostName, the password a token minted from it.
func connect(t *testing.T, s *iothubtest.Server, connStr string, cert *tls.Certificate, onLost func(error)) (paho.Client, error) {
	t.Helper()
	cs, err := auth.ParseDeviceConnectionString(connStr)
	require.NoError(t, err)
	conf := s.TLSConfig()
	var password string
	if cert != nil {
		conf.Certificates = []tls.Certificate{*cert}
	} else {
		tp, err := cs.TokenProvider(nil)
		require.NoError(t, err)
		tok, err := tp.Token(context.Background())
		require.NoError(t, err)
		password = tok.Value
	}
	return pahodev.Dial(t, pahodev.Options{URL: "tls://" + cs.Address(), TLS: conf, Identity: cs.Identity(), Password: password, OnLost: onLost})
}

func mustConnect(t *testing.T, s *iothubtest.Server, connStr string, cert *tls.Certificate) paho.Client {
	t.Helper()
	c, err := connect(t, s, connStr, cert, nil)
	require.NoError(t, err, "connect")
	pahodev.Echo(t, c, 200)
	return c
}

const echoCall = `{"methodName":"echo","payload":{"n":1},"responseTimeoutInSeconds":5}`

func wantEcho(t *testing.T, status int, body string) {
	t.Helper()
	require.Equal(t, 200, status, "invoke: %s", body)
	require.Equal(t, `{"status":200,"payload":{"n":1}}`, body, "invoke")
}

// echo invokes the echo method on id and checks its answer.
func echo(t *testing.T, s *iothubtest.Server, id string) {
	t.Helper()
	st, body := invoke(t, s, id, echoCall)
	wantEcho(t, st, body)
}

func wantError(t *testing.T, status int, body string, wantStatus, wantCode int) {
	t.Helper()
	// Registry shape ("ErrorCode:<name>;<text>") or method shape (the
	// JSON error object in Message).
	var outer struct{ Message string }
	var inner struct{ ErrorCode int }
	require.NoError(t, json.Unmarshal([]byte(body), &outer), "error body %q is not IoT Hub's error shape", body)
	if rest, ok := strings.CutPrefix(outer.Message, "ErrorCode:"); ok {
		name, _, _ := strings.Cut(rest, ";")
		require.Equal(t, engine.CodeName(wantCode), name, "error code name (%d %s)", status, body)
		inner.ErrorCode = wantCode
	} else {
		require.NoError(t, json.Unmarshal([]byte(outer.Message), &inner), "error body %q is not IoT Hub's error shape", body)
	}
	require.Equal(t, wantStatus, status, "status (%s)", body)
	require.Equal(t, wantCode, inner.ErrorCode, "error code (%s)", body)
}

func TestConnectionStringsWorkUnchanged(t *testing.T) {
	s := iothubtest.NewServer(t, nil)
	devCS := s.AddDevice(t, "dev1")
	cs, err := auth.ParseDeviceConnectionString(devCS)
	require.NoError(t, err)
	require.Equal(t, "localhost", cs.HostName, "connection string HostName")
	require.Equal(t, s.Addr(), cs.Address(), "connection string GatewayHostName")
	_, err = auth.ParseServiceConnectionString(s.ServiceConnectionString())
	require.NoError(t, err)
	mustConnect(t, s, devCS, nil)
	echo(t, s, "dev1")

	calls := s.Calls()
	require.Len(t, calls, 1, "calls")
	latency := calls[0].Latency
	assert.Equal(t, iothubtest.MethodCall{DeviceID: "dev1", Method: "echo", Payload: json.RawMessage(`{"n":1}`), Status: 200,
		Protocol: "mqtt", Latency: latency}, calls[0], "calls")
}

func TestModule(t *testing.T) {
	s := iothubtest.NewServer(t, nil)
	s.AddDevice(t, "dev1")
	mustConnect(t, s, s.AddModule(t, "dev1", "mod1"), nil)
	echo(t, s, "dev1/mod1")
	// The device itself is not connected: its methods are not the module's.
	st, body := invoke(t, s, "dev1", echoCall)
	wantError(t, st, body, 404, 404103)
}

func TestX509Devices(t *testing.T) {
	s := iothubtest.NewServer(t, nil)
	ssCS, ssCert := s.AddX509Device(t, "self-signed")
	caCS, caCert := s.AddCADevice(t, "ca-signed")
	mustConnect(t, s, ssCS, &ssCert)
	mustConnect(t, s, caCS, &caCert)
	modCS, modCert := s.AddX509Module(t, "self-signed", "m1")
	mustConnect(t, s, modCS, &modCert)
	caModCS, caModCert := s.AddCAModule(t, "ca-signed", "m2")
	mustConnect(t, s, caModCS, &caModCert)
	echo(t, s, "self-signed/m1")
	echo(t, s, "ca-signed/m2")
	echo(t, s, "self-signed")
	echo(t, s, "ca-signed")

	s.AddCADevice(t, "other")
	wrongCN := s.IssueCertificate(t, "not-other", time.Hour)
	otherCS := strings.Replace(caCS, "DeviceId=ca-signed", "DeviceId=other", 1)
	_, err := connect(t, s, otherCS, &wrongCN, nil)
	require.ErrorIs(t, err, packets.ErrorRefusedNotAuthorised, "certificate with the wrong CN: want CONNACK 5 (not authorized)")
	// The self-signed device's certificate does not match another identity.
	_, err = connect(t, s, otherCS, &ssCert, nil)
	require.Error(t, err, "a certificate of another device was accepted")
}

func TestCredential(t *testing.T) {
	s := iothubtest.NewServer(t, nil)
	s.AddDevice(t, "dev1")
	cred := s.Credential()
	good, err := cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{service.EntraScope}})
	require.NoError(t, err)
	st, body := do(t, s, "GET", "/devices/dev1?api-version=2021-04-12", "", "Bearer "+good.Token)
	require.Equal(t, 200, st, "GET with bearer token: %s", body)
	require.Contains(t, body, `"deviceId":"dev1"`, "GET with bearer token")
	other, err := cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{"https://management.azure.com/.default"}})
	require.NoError(t, err)
	st, body = do(t, s, "GET", "/devices/dev1?api-version=2021-04-12", "", "Bearer "+other.Token)
	wantError(t, st, body, 401, 401002)
}

func TestFaults(t *testing.T) {
	t.Run("FailServiceRequests", func(t *testing.T) {
		s := iothubtest.NewServer(t, nil)
		mustConnect(t, s, s.AddDevice(t, "dev1"), nil)
		require.NoError(t, s.FailServiceRequests(429001, 1))
		st, body := invoke(t, s, "dev1", echoCall)
		wantError(t, st, body, 429, 429001)
		echo(t, s, "dev1")
		require.Error(t, s.FailServiceRequests(123, 1), "unknown error code accepted")
	})
	t.Run("FailServiceRequestsRetryAfter", func(t *testing.T) {
		// The headers are checked by the service client's tests.
		s := iothubtest.NewServer(t, nil)
		mustConnect(t, s, s.AddDevice(t, "dev1"), nil)
		require.NoError(t, s.FailServiceRequestsRetryAfter(429001, 1, 1500*time.Millisecond))
		st, body := invoke(t, s, "dev1", echoCall)
		wantError(t, st, body, 429, 429001)
		echo(t, s, "dev1")
		require.Error(t, s.FailServiceRequestsRetryAfter(123, 1, time.Second), "unknown error code accepted")
	})
	t.Run("DropConnection", func(t *testing.T) {
		s := iothubtest.NewServer(t, nil)
		lost := make(chan error, 1)
		c, err := connect(t, s, s.AddDevice(t, "dev1"), nil, func(err error) { lost <- err })
		require.NoError(t, err)
		pahodev.Echo(t, c, 200)
		require.True(t, s.DropConnection("dev1"), "DropConnection found no connection")
		select {
		case <-lost:
		case <-time.After(10 * time.Second):
			require.FailNow(t, "the device did not see its connection drop")
		}
		st, body := invoke(t, s, "dev1", echoCall)
		wantError(t, st, body, 404, 404103)
		require.False(t, s.DropConnection("dev1"), "DropConnection reported a connection after the drop")
	})
	t.Run("ExpireTokens", func(t *testing.T) {
		s := iothubtest.NewServer(t, nil)
		cs := s.AddDevice(t, "dev1")
		parsed, err := auth.ParseDeviceConnectionString(cs)
		require.NoError(t, err)
		lost := make(chan error, 1)
		// Sign the token by hand, 10 minutes before the expiry a fresh
		// provider would use, so that a new token is certainly later.
		tok, err := auth.SignSAS(parsed.Identity().Resource(), "", parsed.SharedAccessKey, time.Now().Add(50*time.Minute))
		require.NoError(t, err)
		opts := pahodev.Options{URL: "tls://" + s.Addr(), TLS: s.TLSConfig(), Identity: parsed.Identity(), Password: tok,
			OnLost: func(err error) { lost <- err }}
		_, err = pahodev.Dial(t, opts)
		require.NoError(t, err)
		s.ExpireTokens("dev1")
		select {
		case <-lost:
		case <-time.After(10 * time.Second):
			require.FailNow(t, "the connection survived ExpireTokens")
		}
		opts.OnLost = nil
		_, err = pahodev.Dial(t, opts)
		require.ErrorIs(t, err, packets.ErrorRefusedNotAuthorised, "reconnect with the expired token: want CONNACK 5")
		mustConnect(t, s, cs, nil) // a newly minted token is accepted
		echo(t, s, "dev1")
	})
	t.Run("DelayAndDropResponses", func(t *testing.T) {
		t.Parallel() // waits out a 5 s response timeout
		s := iothubtest.NewServer(t, nil)
		mustConnect(t, s, s.AddDevice(t, "dev1"), nil)
		s.DropResponses("dev1", true)
		st, body := invoke(t, s, "dev1", echoCall)
		wantError(t, st, body, 504, 504101)
		s.DropResponses("dev1", false)
		s.DelayResponses("dev1", 10*time.Second)
		st, body = invoke(t, s, "dev1", echoCall)
		wantError(t, st, body, 504, 504101)
		s.DelayResponses("dev1", 0)
		echo(t, s, "dev1")
	})
}

func TestWaitOnline(t *testing.T) {
	s := iothubtest.NewServer(t, nil)
	cs := s.AddDevice(t, "dev1")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, s.WaitOnline(ctx, "dev1"), context.DeadlineExceeded, "WaitOnline of an offline device")
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		done <- s.WaitOnline(ctx, "dev1")
	}()
	mustConnect(t, s, cs, nil)
	require.NoError(t, <-done)
}

// A device that comes online within connectTimeoutInSeconds gets the call.
func TestConnectTimeoutWaitsForDevice(t *testing.T) {
	s := iothubtest.NewServer(t, nil)
	cs := s.AddDevice(t, "dev1")
	type result struct {
		status int
		body   string
		err    error
	}
	res := make(chan result, 1)
	go func() {
		st, body, err := hubcall.TryInvoke(s, "dev1", `{"methodName":"echo","payload":{"n":1},"responseTimeoutInSeconds":5,"connectTimeoutInSeconds":30}`)
		res <- result{st, body, err}
	}()
	// Give the call time to reach the hub before the device exists there;
	// should it arrive later, the test still checks delivery, only less.
	time.Sleep(500 * time.Millisecond)
	mustConnect(t, s, cs, nil)
	r := <-res
	require.NoError(t, r.err, "invoke")
	wantEcho(t, r.status, r.body)
}

func ExampleServer_AddDevice() {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		panic(err)
	}
	defer hub.Close()
	cs, _ := auth.ParseDeviceConnectionString(hub.AddDevice(exampleT{}, "thermostat-1"))
	fmt.Println(cs.HostName, cs.DeviceID, cs.Address() == hub.Addr())
	// Output: localhost thermostat-1 true
}

// exampleT satisfies iothubtest.TB outside of a test.
type exampleT struct{}

func (exampleT) Helper()                   {}
func (exampleT) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
func (exampleT) Cleanup(func())            {}
