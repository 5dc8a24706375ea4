package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/testutil/pahodev"
	"github.com/iothub-go/iothub/iothubtest"
)

// invokeEchoDevice connects a device with its connection string, unchanged,
// and answers every method with status and the request payload.
func invokeEchoDevice(t *testing.T, hub *iothubtest.Server, connStr string, status int) {
	t.Helper()
	cs, err := auth.ParseDeviceConnectionString(connStr)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := cs.TokenProvider(nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tp.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c, err := pahodev.Dial(t, pahodev.Options{URL: "tls://" + cs.Address(), TLS: hub.TLSConfig(), Identity: cs.Identity(), Password: tok.Value})
	if err != nil {
		t.Fatal(err)
	}
	pahodev.Echo(t, c, status)
	if err := hub.WaitOnline(context.Background(), cs.Identity().String()); err != nil {
		t.Fatal(err)
	}
}

func TestInvokeCommand(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	invokeEchoDevice(t, hub, hub.AddDevice(t, "dev1"), 200)
	hub.AddDevice(t, "sleepy")
	invokeEchoDevice(t, hub, hub.AddModule(t, "dev1", "mod1"), 202)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, hub.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	svcCS := hub.ServiceConnectionString()
	svc, err := auth.ParseServiceConnectionString(svcCS)
	if err != nil {
		t.Fatal(err)
	}
	wrongKey := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	wrongCS := "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=" + wrongKey + ";GatewayHostName=" + hub.Addr()
	base := []string{"--connection-string", svcCS, "--ca-file", caFile}

	for _, tc := range []struct {
		name       string
		env        string // $IOTHUB_SERVICE_CONNECTION_STRING
		args       []string
		code       int
		stdout     string
		stderrHas  []string
		noBaseArgs bool
	}{
		{name: "object payload", args: []string{"--device", "dev1", "--method", "reboot", "--payload", `{"a": [1, 2]}`, "--response-timeout", "5"},
			stdout: `{"status":200,"payload":{"a": [1, 2]}}` + "\n"},
		{name: "no payload", args: []string{"--device", "dev1", "--method", "reboot"},
			stdout: `{"status":200,"payload":null}` + "\n"},
		{name: "string payload, durations", args: []string{"--device", "dev1", "--method", "reboot", "--payload", `"now"`, "--response-timeout", "10s", "--connect-timeout", "1"},
			stdout: `{"status":200,"payload":"now"}` + "\n"},
		{name: "module", args: []string{"--device", "dev1", "--module", "mod1", "--method", "m", "--payload", "7"},
			stdout: `{"status":202,"payload":7}` + "\n"},
		{name: "connection string from the environment", env: svcCS, noBaseArgs: true,
			args:   []string{"--ca-file", caFile, "--device", "dev1", "--method", "reboot", "--payload", "[true]"},
			stdout: `{"status":200,"payload":[true]}` + "\n"},
		{name: "offline device", args: []string{"--device", "sleepy", "--method", "reboot"}, code: 1,
			stderrHas: []string{"iothub: 404103 DeviceNotOnline: ", "iothub: tracking ID "}},
		{name: "unknown device", args: []string{"--device", "nobody", "--method", "reboot"}, code: 1,
			stderrHas: []string{"iothub: 404001 DeviceNotFound: "}},
		{name: "unknown module", args: []string{"--device", "dev1", "--module", "nomod", "--method", "reboot"}, code: 1,
			stderrHas: []string{"iothub: 404010 ModuleNotFound: "}},
		{name: "wrong key", noBaseArgs: true, args: []string{"--connection-string", wrongCS, "--ca-file", caFile, "--device", "dev1", "--method", "reboot"}, code: 1,
			stderrHas: []string{"iothub: 401002 IotHubUnauthorizedAccess: "}},
		{name: "untrusted hub without --ca-file", noBaseArgs: true, args: []string{"--connection-string", svcCS, "--device", "dev1", "--method", "reboot"}, code: 1,
			stderrHas: []string{"iothub: ", "certificate"}},
		{name: "missing device", args: []string{"--method", "reboot"}, code: 2, stderrHas: []string{"--device is required"}},
		{name: "missing method", args: []string{"--device", "dev1"}, code: 2, stderrHas: []string{"--method is required"}},
		{name: "missing connection string", noBaseArgs: true, args: []string{"--device", "dev1", "--method", "m"}, code: 2,
			stderrHas: []string{"IOTHUB_SERVICE_CONNECTION_STRING is required"}},
		{name: "payload not JSON", args: []string{"--device", "dev1", "--method", "m", "--payload", "{oops"}, code: 2, stderrHas: []string{"--payload is not valid JSON"}},
		{name: "bad duration", args: []string{"--device", "dev1", "--method", "m", "--response-timeout", "soon"}, code: 2, stderrHas: []string{"want a duration"}},
		{name: "timeout out of range", args: []string{"--device", "dev1", "--method", "m", "--response-timeout", "3"}, code: 2, stderrHas: []string{"ResponseTimeout 3s is invalid"}},
		{name: "bad method name", args: []string{"--device", "dev1", "--method", "re boot"}, code: 2, stderrHas: []string{`MethodName "re boot" is invalid`}},
		{name: "bad connection string", noBaseArgs: true, args: []string{"--connection-string", "SharedAccessKey=" + svc.SharedAccessKey, "--device", "d", "--method", "m"}, code: 2,
			stderrHas: []string{"iothub: invalid connection string"}},
		{name: "missing CA file", args: []string{"--device", "dev1", "--method", "m", "--ca-file", filepath.Join(t.TempDir(), "nope.pem")}, code: 2, stderrHas: []string{"--ca-file"}},
		{name: "CA file not PEM", args: []string{"--device", "dev1", "--method", "m", "--ca-file", notPEM}, code: 2, stderrHas: []string{"holds no PEM certificate"}},
		{name: "extra argument", args: []string{"--device", "dev1", "--method", "m", "extra"}, code: 2, stderrHas: []string{`unexpected argument "extra"`}},
		{name: "help", noBaseArgs: true, args: []string{"-h"}, code: 0, stderrHas: []string{"usage: iothub invoke", "-response-timeout duration"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("IOTHUB_SERVICE_CONNECTION_STRING", tc.env)
			args := tc.args
			if !tc.noBaseArgs {
				args = append(append([]string(nil), base...), args...)
			}
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"invoke"}, args...), &stdout, &stderr)
			if code != tc.code || stdout.String() != tc.stdout {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, stdout %q", code, stdout.String(), stderr.String(), tc.code, tc.stdout)
			}
			for _, want := range tc.stderrHas {
				if !strings.Contains(stderr.String(), want) {
					t.Fatalf("stderr %q does not contain %q", stderr.String(), want)
				}
			}
			if tc.code == 0 && tc.stdout != "" && stderr.Len() != 0 {
				t.Fatalf("stderr on success: %q", stderr.String())
			}
			for _, secret := range []string{svc.SharedAccessKey, wrongKey} {
				if strings.Contains(stdout.String()+stderr.String(), secret) {
					t.Fatalf("the output shows a key:\n%s%s", stdout.String(), stderr.String())
				}
			}
		})
	}
}
