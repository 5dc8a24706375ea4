package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/internal/testutil/pahodev"
	"github.com/iothub-go/iothub/internal/testutil/syncbuf"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The hub command prints working connection strings, writes its CA, logs
// method calls and stops when its context ends (as on SIGINT).
func TestHubCommand(t *testing.T) {
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	key := "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq8w="
	cfg, err := parseHubFlags([]string{"--mqtt-addr", "127.0.0.1:0", "--amqp-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0",
		"--ca-file", caFile, "--owner-key", key, "--device", "dev1", "--device", "dev2"}, io.Discard)
	require.NoError(t, err)
	outR, outW := io.Pipe()
	var logs syncbuf.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- serveHub(ctx, cfg, outW, &logs)
		outW.Close()
	}()
	sc := bufio.NewScanner(outR)
	var lines []string
	for len(lines) < 3 && sc.Scan() {
		lines = append(lines, sc.Text())
	}
	go io.Copy(io.Discard, outR)
	require.Len(t, lines, 3, "hub printed %q; log:\n%s", lines, logs.String())
	svcCS, ok := strings.CutPrefix(lines[0], "IOTHUB_SERVICE_CONNECTION_STRING=")
	require.True(t, ok, "first line %q", lines[0])
	svc, err := auth.ParseServiceConnectionString(svcCS)
	require.NoError(t, err)
	assert.Equal(t, "localhost", svc.HostName, "service connection string HostName")
	assert.Equal(t, "iothubowner", svc.SharedAccessKeyName, "service connection string SharedAccessKeyName")
	assert.Equal(t, key, svc.SharedAccessKey, "service connection string SharedAccessKey")
	devCS, ok := strings.CutPrefix(lines[1], "IOTHUB_DEVICE_CONNECTION_STRING=")
	require.True(t, ok, "device line %q", lines[1])
	assert.Contains(t, lines[2], "DeviceId=dev2;", "second device line")
	dev, err := auth.ParseDeviceConnectionString(devCS)
	require.NoError(t, err)

	caPEM, err := os.ReadFile(caFile)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(caPEM), "--ca-file holds no certificate")
	conf := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}

	// A device connects with its printed connection string, unchanged.
	tp, err := dev.TokenProvider(nil)
	require.NoError(t, err)
	tok, err := tp.Token(context.Background())
	require.NoError(t, err)
	c, err := pahodev.Dial(t, pahodev.Options{URL: "tls://" + dev.Address(), TLS: conf, Identity: dev.Identity(), Password: tok.Value})
	require.NoError(t, err)
	pahodev.Echo(t, c, 201)

	// The back-end invokes it with the printed service connection string.
	st, body := invokeWith(t, svc, conf, "dev1", `{"methodName":"reboot","payload":"now"}`)
	assert.Equal(t, 200, st, "invoke: %s", body)
	assert.Equal(t, `{"status":201,"payload":"now"}`, body, "invoke")
	c.Disconnect(50)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		require.FailNow(t, "hub did not stop")
	}
	log := logs.String()
	for _, want := range []string{`msg="method call" identity=dev1 method=reboot status=201`, "latency=", `msg="hub shutting down"`} {
		assert.Contains(t, log, want, "log")
	}
	assert.NotContains(t, log, key, "log leaks a secret")
	assert.NotContains(t, log, "SharedAccessSignature", "log leaks a secret")
}

// invokeWith invokes a device method with a service connection string,
// over HTTPS trusting conf's roots.
func invokeWith(t *testing.T, svc auth.ConnectionString, conf *tls.Config, deviceID, body string) (int, string) {
	t.Helper()
	tp, err := svc.TokenProvider(nil)
	require.NoError(t, err)
	tok, err := tp.Token(context.Background())
	require.NoError(t, err)
	req, err := http.NewRequest("POST", "https://"+svc.Address()+"/twins/"+deviceID+"/methods?api-version=2021-04-12", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", tok.Value)
	req.Header.Set("Content-Type", "application/json")
	tr := &http.Transport{TLSClientConfig: conf}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestHubFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--device", "bad id"},
		{"--load-ca-cert", "x.pem"},
		{"extra"},
		{"--no-such-flag"},
		{"--output", "yaml"},
		{"--c2d-default-ttl", "1s"},
		{"--c2d-max-delivery-count", "101"},
		{"--max-active-jobs", "-1"},
	} {
		_, err := parseHubFlags(args, io.Discard)
		assert.Error(t, err, "parseHubFlags(%q) accepted", args)
	}
	cfg, err := parseHubFlags([]string{"--c2d-default-ttl", "10m", "--c2d-max-delivery-count", "3"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, 10*time.Minute, cfg.c2d.DefaultTTL)
	assert.Equal(t, 3, cfg.c2d.MaxDeliveryCount)
	assert.Equal(t, exitUsage, run([]string{"nope"}, io.Discard, io.Discard), "unknown command exit status")
}

// The exit statuses "iothub hub -h" documents: 2 for a configuration the
// hub refuses before it listens, 1 when it cannot run.
func TestHubExitStatus(t *testing.T) {
	dir := t.TempDir()
	ports := []string{"--mqtt-addr", "127.0.0.1:0", "--amqp-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0"}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"missing CA files", []string{"--load-ca-cert", filepath.Join(dir, "nope.pem"), "--load-ca-key", filepath.Join(dir, "nope.key")}, exitUsage, "nope.pem"},
		{"missing device CA", []string{"--device-ca", filepath.Join(dir, "nope.pem")}, exitUsage, "--device-ca"},
		{"bad flag", []string{"--device", "bad id"}, exitUsage, `--device "bad id"`},
		{"port taken", []string{"--https-addr", taken.Addr().String()}, exitFailure, "iothub"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(append(append([]string{"hub", "--quiet"}, ports...), tc.args...), &stdout, &stderr)
			assert.Equal(t, tc.code, code, "exit status; stderr %q", stderr.String())
			assert.Contains(t, stderr.String(), tc.want, "stderr")
			assert.Empty(t, stdout.String(), "stdout")
		})
	}
	var stderr bytes.Buffer
	assert.Equal(t, exitOK, run([]string{"hub", "-h"}, io.Discard, &stderr), "-h")
	for _, want := range []string{"usage: iothub hub", "-output format", `{"type":"hub","hostName":"localhost"`, `{"type":"event","deviceId":"dev1"`,
		"exit status:\n  0  success\n  1  failure", "\n  2  bad usage"} {
		assert.Contains(t, stderr.String(), want, "-h")
	}
}

// startedHub runs serveHub with args on random ports and returns its
// stdout lines as they come; the hub stops at the end of the test.
func startedHub(t *testing.T, args ...string) (next func() string, caFile string) {
	t.Helper()
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	cfg, err := parseHubFlags(append([]string{"--mqtt-addr", "127.0.0.1:0", "--amqp-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0",
		"--quiet", "--ca-file", caFile}, args...), io.Discard)
	require.NoError(t, err)
	outR, outW := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serveHub(ctx, cfg, outW, io.Discard)
		outW.Close()
	}()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, outR)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err, "the hub's end")
		case <-time.After(10 * time.Second):
			assert.Fail(t, "hub did not stop")
		}
		for range lines {
		}
	})
	next = func() string {
		t.Helper()
		select {
		case l, ok := <-lines:
			require.True(t, ok, "the hub's output ended")
			return l
		case <-time.After(15 * time.Second):
			require.FailNow(t, "no output line")
			return ""
		}
	}
	return next, caFile
}

// connectDevice connects a raw MQTT device with its connection string,
// trusting the CA in caFile.
func connectDevice(t *testing.T, devCS, caFile string) paho.Client {
	t.Helper()
	dev, err := auth.ParseDeviceConnectionString(devCS)
	require.NoError(t, err)
	tp, err := dev.TokenProvider(nil)
	require.NoError(t, err)
	tok, err := tp.Token(context.Background())
	require.NoError(t, err)
	caPEM, err := os.ReadFile(caFile)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(caPEM), "--ca-file holds no certificate")
	conf := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	c, err := pahodev.Dial(t, pahodev.Options{URL: "tls://" + dev.Address(), TLS: conf, Identity: dev.Identity(), Password: tok.Value})
	require.NoError(t, err)
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

// publish sends one device-to-cloud message at QoS 1.
func publish(t *testing.T, c paho.Client, topic, body string) {
	t.Helper()
	tk := c.Publish(topic, 1, false, body)
	require.True(t, tk.WaitTimeout(15*time.Second), "publish timed out")
	require.NoError(t, tk.Error(), "publish")
}

// --print-events prints one line per device-to-cloud message on stdout.
func TestHubPrintEvents(t *testing.T) {
	next, caFile := startedHub(t, "--print-events", "--device", "dev1")
	l := next()
	assert.True(t, strings.HasPrefix(l, "IOTHUB_SERVICE_CONNECTION_STRING="), "first line %q", l)
	devCS, ok := strings.CutPrefix(next(), "IOTHUB_DEVICE_CONNECTION_STRING=")
	require.True(t, ok, "no device connection string")
	c := connectDevice(t, devCS, caFile)
	long := strings.Repeat("é", 150) // 300 bytes: cut at 200
	publish(t, c, "devices/dev1/messages/events/%24.mid=m-1&%24.ct=application%2Fjson&site=b%2012", `{"temp":21.5}`)
	publish(t, c, "devices/dev1/messages/events/", long)
	assert.Equal(t, `EVENT dev1 mqtt {"messageId":"m-1","contentType":"application/json","properties":{"site":"b 12"}} "{\"temp\":21.5}"`, next(), "event line")
	assert.Equal(t, `EVENT dev1 mqtt {} `+strconv.Quote(long[:200])+`… (300 bytes)`, next(), "event line")
}

// --output json prints the hub's description, then one document per
// device-to-cloud message.
func TestHubOutputJSON(t *testing.T) {
	next, caFile := startedHub(t, "--print-events", "--output", "json", "--device", "dev1", "--device", "dev2")
	var info hubInfo
	dec := json.NewDecoder(strings.NewReader(next()))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&info), "the first line is the hub's document")
	assert.Equal(t, "hub", info.Type, "type")
	assert.Equal(t, "localhost", info.HostName, "hostName")
	assert.Equal(t, caFile, info.CAFile, "caFile")
	for _, a := range []string{info.MQTTAddr, info.AMQPAddr, info.HTTPSAddr} {
		_, port, err := net.SplitHostPort(a)
		assert.NoError(t, err, "address %q", a)
		assert.NotEqual(t, "0", port, "address %q", a)
	}
	svc, err := auth.ParseServiceConnectionString(info.ServiceConnectionString)
	require.NoError(t, err, "serviceConnectionString")
	assert.Equal(t, "iothubowner", svc.SharedAccessKeyName, "serviceConnectionString")
	require.Len(t, info.Devices, 2, "devices")
	for i, id := range []string{"dev1", "dev2"} {
		assert.Equal(t, id, info.Devices[i].DeviceID, "devices[%d].deviceId", i)
		dev, err := auth.ParseDeviceConnectionString(info.Devices[i].ConnectionString)
		if assert.NoError(t, err, "devices[%d].connectionString", i) {
			assert.Equal(t, id, dev.DeviceID, "devices[%d].connectionString", i)
		}
	}

	c := connectDevice(t, info.Devices[0].ConnectionString, caFile)
	publish(t, c, "devices/dev1/messages/events/%24.mid=m-1&%24.ct=application%2Fjson&site=b%2012", `{"temp":"<21.5>"}`)
	publish(t, c, "devices/dev1/messages/events/", "\xff\x00")
	for _, want := range []map[string]any{
		{"type": "event", "deviceId": "dev1", "protocol": "mqtt", "messageId": "m-1", "contentType": "application/json",
			"properties": map[string]any{"site": "b 12"}, "body": `{"temp":"<21.5>"}`},
		{"type": "event", "deviceId": "dev1", "protocol": "mqtt", "bodyBase64": base64.StdEncoding.EncodeToString([]byte("\xff\x00"))},
	} {
		line := next()
		assert.NotContains(t, line, `\u003c`, "< is printed as it is")
		var got map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &got), "event line %q", line)
		enq, ok := got["enqueuedTime"].(string)
		if assert.True(t, ok, "enqueuedTime in %q", line) {
			ts, err := time.Parse(time.RFC3339Nano, enq)
			assert.NoError(t, err, "enqueuedTime")
			assert.WithinDuration(t, time.Now(), ts, time.Minute, "enqueuedTime")
		}
		delete(got, "enqueuedTime")
		assert.Equal(t, want, got, "event document")
	}
}

func TestFormatEventLine(t *testing.T) {
	for _, tc := range []struct {
		ev   engine.Event
		want string
	}{
		{engine.Event{Identity: auth.Identity{HostName: "localhost", DeviceID: "dev1", ModuleID: "mod1"}, Protocol: "http",
			Body: []byte("a\"b\n\x00"), CorrelationID: "c&<>", ContentEncoding: "utf-8", Properties: map[string]string{"z": "1", "a": "2"}},
			`EVENT dev1/mod1 http {"correlationId":"c&<>","contentEncoding":"utf-8","properties":{"a":"2","z":"1"}} "a\"b\n\x00"`},
		{engine.Event{Identity: auth.Identity{DeviceID: "d"}, Protocol: "mqtt-ws", Body: bytes.Repeat([]byte("x"), 200)},
			`EVENT d mqtt-ws {} "` + strings.Repeat("x", 200) + `"`},
		{engine.Event{Identity: auth.Identity{DeviceID: "d"}, Protocol: "mqtt", Body: bytes.Repeat([]byte("x"), 201)},
			`EVENT d mqtt {} "` + strings.Repeat("x", 200) + `"… (201 bytes)`},
		{engine.Event{Identity: auth.Identity{DeviceID: "d"}, Protocol: "mqtt"}, `EVENT d mqtt {} ""`},
	} {
		assert.Equal(t, tc.want, formatEventLine(tc.ev), "formatEventLine")
	}
}

func TestEventJSON(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600))
	body := "a\"b\n\x00"
	got := eventJSON(engine.Event{Identity: auth.Identity{HostName: "localhost", DeviceID: "dev1", ModuleID: "mod1"}, Protocol: "http",
		Body: []byte(body), MessageID: "m", CorrelationID: "c&<>", ContentType: "text/plain", ContentEncoding: "utf-8",
		Properties: map[string]string{"z": "1", "a": "2"}, EnqueuedTime: at})
	assert.Equal(t, eventDoc{Type: "event", DeviceID: "dev1", ModuleID: "mod1", Protocol: "http", MessageID: "m", CorrelationID: "c&<>",
		ContentType: "text/plain", ContentEncoding: "utf-8", Properties: map[string]string{"z": "1", "a": "2"}, Body: &body,
		EnqueuedTime: at.UTC()}, got)
	var b bytes.Buffer
	require.NoError(t, writeJSON(&b, eventJSON(engine.Event{Identity: auth.Identity{DeviceID: "d"}, Protocol: "mqtt", EnqueuedTime: at})))
	assert.Equal(t, `{"type":"event","deviceId":"d","protocol":"mqtt","body":"","enqueuedTime":"2026-01-02T02:04:05.000000006Z"}`+"\n", b.String(),
		"an empty body is an empty string")
}
