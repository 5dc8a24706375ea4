package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/testutil/pahodev"
	"github.com/iothub-go/iothub/iothubtest"
)

// invokeEchoDevice connects a device with its connection string, unchanged,
// and answers every method with status and the request payload.
func invokeEchoDevice(t *testing.T, hub *iothubtest.Server, connStr string, status int) {
	t.Helper()
	cs, err := auth.ParseDeviceConnectionString(connStr)
	require.NoError(t, err)
	tp, err := cs.TokenProvider(nil)
	require.NoError(t, err)
	tok, err := tp.Token(context.Background())
	require.NoError(t, err)
	c, err := pahodev.Dial(t, pahodev.Options{URL: "tls://" + cs.Address(), TLS: hub.TLSConfig(), Identity: cs.Identity(), Password: tok.Value})
	require.NoError(t, err)
	pahodev.Echo(t, c, status)
	require.NoError(t, hub.WaitOnline(context.Background(), cs.Identity().String()))
}

func TestInvokeCommand(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	invokeEchoDevice(t, hub, hub.AddDevice(t, "dev1"), 200)
	hub.AddDevice(t, "sleepy")
	invokeEchoDevice(t, hub, hub.AddModule(t, "dev1", "mod1"), 202)
	invokeEchoDevice(t, hub, hub.AddDevice(t, "grumpy"), 500)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, hub.CACertPEM(), 0o600))
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("hello"), 0o600))
	svcCS := hub.ServiceConnectionString()
	svc, err := auth.ParseServiceConnectionString(svcCS)
	require.NoError(t, err)
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
			stdout: "status 200\n{\n  \"a\": [\n    1,\n    2\n  ]\n}\n"},
		{name: "no payload", args: []string{"--device", "dev1", "--method", "reboot"},
			stdout: "status 200\nnull\n"},
		{name: "string payload, durations", args: []string{"--device", "dev1", "--method", "reboot", "--payload", `"now"`, "--response-timeout", "10s", "--connect-timeout", "1"},
			stdout: "status 200\n\"now\"\n"},
		{name: "module", args: []string{"--device", "dev1", "--module", "mod1", "--method", "m", "--payload", "7"},
			stdout: "status 202\n7\n"},
		{name: "connection string from the environment", env: svcCS, noBaseArgs: true,
			args:   []string{"--ca-file", caFile, "--device", "dev1", "--method", "reboot", "--payload", "[true]", "--output", "text"},
			stdout: "status 200\n[\n  true\n]\n"},
		{name: "json", args: []string{"--device", "dev1", "--method", "reboot", "--payload", `{"a": [1, 2], "b": "<&>"}`, "--output", "json"},
			stdout: `{"status":200,"payload":{"a":[1,2],"b":"<&>"}}` + "\n"},
		{name: "json, no payload", args: []string{"--device", "dev1", "--module", "mod1", "--method", "reboot", "--output", "json"},
			stdout: `{"status":202,"payload":null}` + "\n"},
		{name: "device answers 500", args: []string{"--device", "grumpy", "--method", "reboot", "--payload", `"x"`}, code: exitDeviceStatus,
			stdout: "status 500\n\"x\"\n"},
		{name: "device answers 500, json", args: []string{"--device", "grumpy", "--method", "reboot", "--payload", `"x"`, "--output", "json"}, code: exitDeviceStatus,
			stdout: `{"status":500,"payload":"x"}` + "\n"},
		{name: "offline device", args: []string{"--device", "sleepy", "--method", "reboot"}, code: exitDeviceUnreachable,
			stderrHas: []string{"iothub: 404103 DeviceNotOnline: ", "iothub: tracking ID "}},
		{name: "unknown device", args: []string{"--device", "nobody", "--method", "reboot"}, code: exitFailure,
			stderrHas: []string{"iothub: 404001 DeviceNotFound: "}},
		{name: "unknown module", args: []string{"--device", "dev1", "--module", "nomod", "--method", "reboot"}, code: exitFailure,
			stderrHas: []string{"iothub: 404010 ModuleNotFound: "}},
		{name: "wrong key", noBaseArgs: true, args: []string{"--connection-string", wrongCS, "--ca-file", caFile, "--device", "dev1", "--method", "reboot"}, code: exitFailure,
			stderrHas: []string{"iothub: 401002 IotHubUnauthorizedAccess: "}},
		{name: "untrusted hub without --ca-file", noBaseArgs: true, args: []string{"--connection-string", svcCS, "--device", "dev1", "--method", "reboot"}, code: exitFailure,
			stderrHas: []string{"iothub: ", "certificate"}},
		{name: "missing device", args: []string{"--method", "reboot"}, code: exitUsage, stderrHas: []string{"--device is required"}},
		{name: "missing method", args: []string{"--device", "dev1"}, code: exitUsage, stderrHas: []string{"--method is required"}},
		{name: "missing connection string", noBaseArgs: true, args: []string{"--device", "dev1", "--method", "m"}, code: exitUsage,
			stderrHas: []string{"IOTHUB_SERVICE_CONNECTION_STRING is required"}},
		{name: "payload not JSON", args: []string{"--device", "dev1", "--method", "m", "--payload", "{oops"}, code: exitUsage, stderrHas: []string{"--payload is not valid JSON"}},
		{name: "bad duration", args: []string{"--device", "dev1", "--method", "m", "--response-timeout", "soon"}, code: exitUsage, stderrHas: []string{"want a duration"}},
		{name: "timeout out of range", args: []string{"--device", "dev1", "--method", "m", "--response-timeout", "3"}, code: exitUsage, stderrHas: []string{"ResponseTimeout 3s is invalid"}},
		{name: "bad method name", args: []string{"--device", "dev1", "--method", "re boot"}, code: exitUsage, stderrHas: []string{`MethodName "re boot" is invalid`}},
		{name: "bad method name, json", args: []string{"--device", "dev1", "--method", "re boot", "--output", "json"}, code: exitUsage, stderrHas: []string{`MethodName "re boot" is invalid`}},
		{name: "bad connection string", noBaseArgs: true, args: []string{"--connection-string", "SharedAccessKey=" + svc.SharedAccessKey, "--device", "d", "--method", "m"}, code: exitUsage,
			stderrHas: []string{"iothub: invalid connection string"}},
		{name: "missing CA file", args: []string{"--device", "dev1", "--method", "m", "--ca-file", filepath.Join(t.TempDir(), "nope.pem")}, code: exitUsage, stderrHas: []string{"--ca-file"}},
		{name: "CA file not PEM", args: []string{"--device", "dev1", "--method", "m", "--ca-file", notPEM}, code: exitUsage, stderrHas: []string{"holds no PEM certificate"}},
		{name: "extra argument", args: []string{"--device", "dev1", "--method", "m", "extra"}, code: exitUsage, stderrHas: []string{`unexpected argument "extra"`}},
		{name: "bad output", args: []string{"--device", "dev1", "--method", "m", "--output", "yaml"}, code: exitUsage, stderrHas: []string{`invalid value "yaml" for flag -output: want text or json`}},
		{name: "help", noBaseArgs: true, args: []string{"-h"}, code: exitOK, stderrHas: []string{"usage: iothub invoke", "-response-timeout duration",
			"-output format", `{"status":200,"payload":{"rebooting":true}}`,
			"exit status:\n  0  success\n  1  failure", "\n  2  bad usage", "\n  3  the device answered with a status outside 200-299", "\n  4  the device was not online (404103)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("IOTHUB_SERVICE_CONNECTION_STRING", tc.env)
			args := tc.args
			if !tc.noBaseArgs {
				args = append(append([]string(nil), base...), args...)
			}
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"invoke"}, args...), &stdout, &stderr)
			assert.Equal(t, tc.code, code, "exit status; stderr %q", stderr.String())
			assert.Equal(t, tc.stdout, stdout.String(), "stdout; stderr %q", stderr.String())
			for _, want := range tc.stderrHas {
				assert.Contains(t, stderr.String(), want, "stderr")
			}
			if tc.stdout != "" && tc.code != exitDeviceStatus {
				assert.Empty(t, stderr.String(), "stderr on success")
			}
			for _, secret := range []string{svc.SharedAccessKey, wrongKey} {
				assert.NotContains(t, stdout.String()+stderr.String(), secret, "the output shows a key")
			}
		})
	}
}

// With --output json, a failure at the hub is one JSON document on stdout
// as well as the message on stderr.
func TestInvokeCommandJSONErrors(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	hub.AddDevice(t, "sleepy")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, hub.CACertPEM(), 0o600))
	svcCS := hub.ServiceConnectionString()
	svc, err := auth.ParseServiceConnectionString(svcCS)
	require.NoError(t, err)
	for _, tc := range []struct {
		device    string
		code      int
		errorCode int
		name      string
	}{
		{"sleepy", exitDeviceUnreachable, 404103, "DeviceNotOnline"},
		{"nobody", exitFailure, 404001, "DeviceNotFound"},
	} {
		t.Run(tc.device, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run([]string{"invoke", "--connection-string", svcCS, "--ca-file", caFile, "--output", "json",
				"--device", tc.device, "--method", "reboot"}, &stdout, &stderr)
			assert.Equal(t, tc.code, code, "exit status; stderr %q", stderr.String())
			assert.Contains(t, stderr.String(), "iothub: ", "the message on stderr")
			require.Equal(t, 1, strings.Count(stdout.String(), "\n"), "one line on stdout: %q", stdout.String())
			var doc struct {
				Error invokeError `json:"error"`
			}
			dec := json.NewDecoder(&stdout)
			dec.DisallowUnknownFields()
			require.NoError(t, dec.Decode(&doc), "stdout is the documented error document")
			assert.Equal(t, tc.errorCode, doc.Error.Code, "code")
			assert.Equal(t, tc.name, doc.Error.ErrorCode, "errorCode")
			assert.True(t, strings.HasPrefix(doc.Error.Message, "iothub: "), "message %q", doc.Error.Message)
			assert.NotEmpty(t, doc.Error.TrackingID, "trackingId")
			assert.NotContains(t, stdout.String()+stderr.String(), svc.SharedAccessKey, "the output shows a key")
		})
	}
}

// A device that does not answer within --response-timeout gets 504101 and
// exit status 4, as an offline one does.
func TestInvokeCommandTimeout(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	invokeEchoDevice(t, hub, hub.AddDevice(t, "mute"), 200)
	hub.DropResponses("mute", true)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, hub.CACertPEM(), 0o600))
	var stdout, stderr bytes.Buffer
	code := run([]string{"invoke", "--connection-string", hub.ServiceConnectionString(), "--ca-file", caFile,
		"--device", "mute", "--method", "reboot", "--response-timeout", "5s"}, &stdout, &stderr)
	assert.Equal(t, exitDeviceUnreachable, code, "exit status; stderr %q", stderr.String())
	assert.Contains(t, stderr.String(), "iothub: 504101 GatewayTimeout: ")
	assert.Empty(t, stdout.String(), "stdout")
}
