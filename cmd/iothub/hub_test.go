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
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/testutil/pahodev"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

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
	var logs syncBuffer
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
