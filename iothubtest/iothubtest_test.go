package iothubtest_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/internal/testutil/hubcall"
	"github.com/iothub-go/iothub/internal/testutil/pahodev"
	"github.com/iothub-go/iothub/iothubtest"
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
	if err != nil {
		t.Fatal(err)
	}
	conf := s.TLSConfig()
	var password string
	if cert != nil {
		conf.Certificates = []tls.Certificate{*cert}
	} else {
		tp, err := cs.TokenProvider(nil)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := tp.Token(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		password = tok.Value
	}
	return pahodev.Dial(t, pahodev.Options{URL: "tls://" + cs.Address(), TLS: conf, Identity: cs.Identity(), Password: password, OnLost: onLost})
}

func mustConnect(t *testing.T, s *iothubtest.Server, connStr string, cert *tls.Certificate) paho.Client {
	t.Helper()
	c, err := connect(t, s, connStr, cert, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	pahodev.Echo(t, c, 200)
	return c
}

const echoCall = `{"methodName":"echo","payload":{"n":1},"responseTimeoutInSeconds":5}`

func wantEcho(t *testing.T, status int, body string) {
	t.Helper()
	if status != 200 || body != `{"status":200,"payload":{"n":1}}` {
		t.Fatalf("invoke: %d %s", status, body)
	}
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
	if err := json.Unmarshal([]byte(body), &outer); err != nil {
		t.Fatalf("error body %q is not IoT Hub's error shape", body)
	}
	if rest, ok := strings.CutPrefix(outer.Message, "ErrorCode:"); ok {
		name, _, _ := strings.Cut(rest, ";")
		if name != engine.CodeName(wantCode) {
			t.Fatalf("got %d %s (%s), want %d/%d", status, name, body, wantStatus, wantCode)
		}
		inner.ErrorCode = wantCode
	} else if json.Unmarshal([]byte(outer.Message), &inner) != nil {
		t.Fatalf("error body %q is not IoT Hub's error shape", body)
	}
	if status != wantStatus || inner.ErrorCode != wantCode {
		t.Fatalf("got %d/%d (%s), want %d/%d", status, inner.ErrorCode, body, wantStatus, wantCode)
	}
}

func TestConnectionStringsWorkUnchanged(t *testing.T) {
	s := iothubtest.NewServer(t, nil)
	devCS := s.AddDevice(t, "dev1")
	cs, err := auth.ParseDeviceConnectionString(devCS)
	if err != nil {
		t.Fatal(err)
	}
	if cs.HostName != "localhost" || cs.Address() != s.Addr() {
		t.Fatalf("connection string %v: want HostName localhost and GatewayHostName %s", cs, s.Addr())
	}
	if _, err := auth.ParseServiceConnectionString(s.ServiceConnectionString()); err != nil {
		t.Fatal(err)
	}
	mustConnect(t, s, devCS, nil)
	echo(t, s, "dev1")

	calls := s.Calls()
	if len(calls) != 1 || calls[0].DeviceID != "dev1" || calls[0].Method != "echo" || calls[0].Status != 200 ||
		string(calls[0].Payload) != `{"n":1}` || calls[0].Protocol != "mqtt" || calls[0].ErrorCode != 0 {
		t.Fatalf("calls = %+v", calls)
	}
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
	if _, err := connect(t, s, otherCS, &wrongCN, nil); err == nil || !strings.Contains(err.Error(), "not Authorized") {
		t.Fatalf("certificate with the wrong CN: %v, want CONNACK 5 (not authorized)", err)
	}
	// The self-signed device's certificate does not match another identity.
	if _, err := connect(t, s, otherCS, &ssCert, nil); err == nil {
		t.Fatal("a certificate of another device was accepted")
	}
}

func TestCredential(t *testing.T) {
	s := iothubtest.NewServer(t, nil)
	s.AddDevice(t, "dev1")
	cred := s.Credential()
	good, err := cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{iothubtest.EntraScope}})
	if err != nil {
		t.Fatal(err)
	}
	if st, body := do(t, s, "GET", "/devices/dev1?api-version=2021-04-12", "", "Bearer "+good.Token); st != 200 || !strings.Contains(body, `"deviceId":"dev1"`) {
		t.Fatalf("GET with bearer token: %d %s", st, body)
	}
	other, err := cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{"https://management.azure.com/.default"}})
	if err != nil {
		t.Fatal(err)
	}
	st, body := do(t, s, "GET", "/devices/dev1?api-version=2021-04-12", "", "Bearer "+other.Token)
	wantError(t, st, body, 401, 401002)
}

func TestFaults(t *testing.T) {
	t.Run("FailServiceRequests", func(t *testing.T) {
		s := iothubtest.NewServer(t, nil)
		mustConnect(t, s, s.AddDevice(t, "dev1"), nil)
		if err := s.FailServiceRequests(429001, 1); err != nil {
			t.Fatal(err)
		}
		st, body := invoke(t, s, "dev1", echoCall)
		wantError(t, st, body, 429, 429001)
		echo(t, s, "dev1")
		if err := s.FailServiceRequests(123, 1); err == nil {
			t.Fatal("unknown error code accepted")
		}
	})
	t.Run("DropConnection", func(t *testing.T) {
		s := iothubtest.NewServer(t, nil)
		lost := make(chan error, 1)
		c, err := connect(t, s, s.AddDevice(t, "dev1"), nil, func(err error) { lost <- err })
		if err != nil {
			t.Fatal(err)
		}
		pahodev.Echo(t, c, 200)
		if !s.DropConnection("dev1") {
			t.Fatal("DropConnection found no connection")
		}
		select {
		case <-lost:
		case <-time.After(10 * time.Second):
			t.Fatal("the device did not see its connection drop")
		}
		st, body := invoke(t, s, "dev1", echoCall)
		wantError(t, st, body, 404, 404103)
		if s.DropConnection("dev1") {
			t.Fatal("DropConnection reported a connection after the drop")
		}
	})
	t.Run("ExpireTokens", func(t *testing.T) {
		s := iothubtest.NewServer(t, nil)
		cs := s.AddDevice(t, "dev1")
		parsed, _ := auth.ParseDeviceConnectionString(cs)
		lost := make(chan error, 1)
		// Sign the token by hand, 10 minutes before the expiry a fresh
		// provider would use, so that a new token is certainly later.
		tok, err := auth.SignSAS(parsed.Identity().Resource(), "", parsed.SharedAccessKey, time.Now().Add(50*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		opts := pahodev.Options{URL: "tls://" + s.Addr(), TLS: s.TLSConfig(), Identity: parsed.Identity(), Password: tok,
			OnLost: func(err error) { lost <- err }}
		if _, err := pahodev.Dial(t, opts); err != nil {
			t.Fatal(err)
		}
		s.ExpireTokens("dev1")
		select {
		case <-lost:
		case <-time.After(10 * time.Second):
			t.Fatal("the connection survived ExpireTokens")
		}
		opts.OnLost = nil
		if _, err := pahodev.Dial(t, opts); err == nil || !strings.Contains(err.Error(), "not Authorized") {
			t.Fatalf("reconnect with the expired token: %v, want CONNACK 5", err)
		}
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
	if err := s.WaitOnline(ctx, "dev1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitOnline of an offline device: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		done <- s.WaitOnline(ctx, "dev1")
	}()
	mustConnect(t, s, cs, nil)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A device that comes online within connectTimeoutInSeconds gets the call.
func TestConnectTimeoutWaitsForDevice(t *testing.T) {
	s := iothubtest.NewServer(t, nil)
	cs := s.AddDevice(t, "dev1")
	type result struct {
		status int
		body   string
	}
	res := make(chan result, 1)
	go func() {
		st, body := invoke(t, s, "dev1", `{"methodName":"echo","payload":{"n":1},"responseTimeoutInSeconds":5,"connectTimeoutInSeconds":30}`)
		res <- result{st, body}
	}()
	// Give the call time to reach the hub before the device exists there;
	// should it arrive later, the test still checks delivery, only less.
	time.Sleep(500 * time.Millisecond)
	mustConnect(t, s, cs, nil)
	r := <-res
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
