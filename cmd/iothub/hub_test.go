package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iothub-go/iothub/internal/testutil/syncbuf"

	"go.uber.org/goleak"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/internal/testutil/pahodev"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The hub command prints working connection strings, writes its CA, logs
// method calls and stops when its context ends (as on SIGINT).
func TestHubCommand(t *testing.T) {
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	key := "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq8w="
	cfg, err := parseHubFlags([]string{"--mqtt-addr", "127.0.0.1:0", "--amqp-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0",
		"--ca-file", caFile, "--owner-key", key, "--device", "dev1", "--device", "dev2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	outR, outW := io.Pipe()
	var logs syncbuf.Buffer
	ctx, cancel := context.WithCancel(context.Background())
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
	if len(lines) != 3 {
		cancel()
		t.Fatalf("hub printed %q; log:\n%s", lines, logs.String())
	}
	svcCS, ok := strings.CutPrefix(lines[0], "IOTHUB_SERVICE_CONNECTION_STRING=")
	if !ok {
		t.Fatalf("first line %q", lines[0])
	}
	svc, err := auth.ParseServiceConnectionString(svcCS)
	if err != nil {
		t.Fatal(err)
	}
	if svc.HostName != "localhost" || svc.SharedAccessKeyName != "iothubowner" || svc.SharedAccessKey != key {
		t.Fatalf("service connection string %v", svc)
	}
	devCS, ok := strings.CutPrefix(lines[1], "IOTHUB_DEVICE_CONNECTION_STRING=")
	if !ok || !strings.Contains(lines[2], "DeviceId=dev2;") {
		t.Fatalf("device lines %q", lines[1:])
	}
	dev, err := auth.ParseDeviceConnectionString(devCS)
	if err != nil {
		t.Fatal(err)
	}

	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("--ca-file holds no certificate")
	}
	conf := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}

	// A device connects with its printed connection string, unchanged.
	tp, _ := dev.TokenProvider(nil)
	tok, _ := tp.Token(context.Background())
	c, err := pahodev.Dial(t, pahodev.Options{URL: "tls://" + dev.Address(), TLS: conf, Identity: dev.Identity(), Password: tok.Value})
	if err != nil {
		t.Fatal(err)
	}
	pahodev.Echo(t, c, 201)

	// The back-end invokes it with the printed service connection string.
	stp, _ := svc.TokenProvider(nil)
	stok, _ := stp.Token(context.Background())
	req, _ := http.NewRequest("POST", "https://"+svc.Address()+"/twins/dev1/methods?api-version=2021-04-12",
		strings.NewReader(`{"methodName":"reboot","payload":"now"}`))
	req.Header.Set("Authorization", stok.Value)
	req.Header.Set("Content-Type", "application/json")
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: conf}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	hc.CloseIdleConnections()
	if resp.StatusCode != 200 || string(body) != `{"status":201,"payload":"now"}` {
		t.Fatalf("invoke: %d %s", resp.StatusCode, body)
	}
	c.Disconnect(50)

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("hub did not stop")
	}
	log := logs.String()
	for _, want := range []string{`msg="method call" identity=dev1 method=reboot status=201`, "latency=", `msg="hub shutting down"`} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, key) || strings.Contains(log, "SharedAccessSignature") {
		t.Errorf("log leaks a secret:\n%s", log)
	}
}

func TestHubFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--device", "bad id"},
		{"--load-ca-cert", "x.pem"},
		{"extra"},
		{"--no-such-flag"},
	} {
		if _, err := parseHubFlags(args, io.Discard); err == nil {
			t.Errorf("parseHubFlags(%q) accepted", args)
		}
	}
	if code := run([]string{"nope"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("unknown command exit %d, want 2", code)
	}
}

// --print-events prints one line per device-to-cloud message on stdout.
func TestHubPrintEvents(t *testing.T) {
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	cfg, err := parseHubFlags([]string{"--mqtt-addr", "127.0.0.1:0", "--amqp-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0",
		"--quiet", "--print-events", "--device", "dev1", "--ca-file", caFile}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
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
	}()
	next := func() string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("the hub's output ended")
			}
			return l
		case <-time.After(15 * time.Second):
			t.Fatal("no output line")
			return ""
		}
	}
	if l := next(); !strings.HasPrefix(l, "IOTHUB_SERVICE_CONNECTION_STRING=") {
		t.Fatalf("first line %q", l)
	}
	devCS, ok := strings.CutPrefix(next(), "IOTHUB_DEVICE_CONNECTION_STRING=")
	if !ok {
		t.Fatal("no device connection string")
	}
	dev, err := auth.ParseDeviceConnectionString(devCS)
	if err != nil {
		t.Fatal(err)
	}
	tp, _ := dev.TokenProvider(nil)
	tok, _ := tp.Token(context.Background())
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	conf := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	c, err := pahodev.Dial(t, pahodev.Options{URL: "tls://" + dev.Address(), TLS: conf, Identity: dev.Identity(), Password: tok.Value})
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("é", 150) // 300 bytes: cut at 200
	for _, m := range []struct{ topic, body string }{
		{"devices/dev1/messages/events/%24.mid=m-1&%24.ct=application%2Fjson&site=b%2012", `{"temp":21.5}`},
		{"devices/dev1/messages/events/", long},
	} {
		if tk := c.Publish(m.topic, 1, false, m.body); !tk.WaitTimeout(15*time.Second) || tk.Error() != nil {
			t.Fatalf("publish: %v", tk.Error())
		}
	}
	for _, want := range []string{
		`EVENT dev1 mqtt {"messageId":"m-1","contentType":"application/json","properties":{"site":"b 12"}} "{\"temp\":21.5}"`,
		`EVENT dev1 mqtt {} ` + strconv.Quote(long[:200]) + `… (300 bytes)`,
	} {
		if got := next(); got != want {
			t.Errorf("event line\n got %s\nwant %s", got, want)
		}
	}
	c.Disconnect(50)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("hub did not stop")
	}
	for range lines {
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
		if got := formatEventLine(tc.ev); got != tc.want {
			t.Errorf("formatEventLine\n got %s\nwant %s", got, tc.want)
		}
	}
}
