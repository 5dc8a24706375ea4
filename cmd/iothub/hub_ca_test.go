package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/pki"
	"github.com/iothub-go/iothub/internal/testutil/pahodev"
	"github.com/iothub-go/iothub/internal/testutil/syncbuf"
)

// runningHub is serveHub on random ports, with what it printed.
type runningHub struct {
	svc      auth.ConnectionString
	mqttAddr string
	conf     *tls.Config // trusts the hub's CA
	logs     *syncbuf.Buffer
}

// startTestHub starts serveHub with args (plus random ports and a CA file) and
// stops it at the end of the test.
func startTestHub(t *testing.T, args ...string) *runningHub {
	t.Helper()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	args = append([]string{"--mqtt-addr", "127.0.0.1:0", "--amqp-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0", "--ca-file", caFile, "--device", "probe"}, args...)
	cfg, err := parseHubFlags(args, io.Discard)
	require.NoError(t, err)
	outR, outW := io.Pipe()
	h := &runningHub{logs: &syncbuf.Buffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serveHub(ctx, cfg, outW, h.logs)
		outW.Close()
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			assert.Fail(t, "hub did not stop")
		}
	})
	sc := bufio.NewScanner(outR)
	var lines []string
	for len(lines) < 2 && sc.Scan() {
		lines = append(lines, sc.Text())
	}
	go io.Copy(io.Discard, outR)
	require.Len(t, lines, 2, "log:\n%s", h.logs.String())
	svcCS, ok := strings.CutPrefix(lines[0], "IOTHUB_SERVICE_CONNECTION_STRING=")
	require.True(t, ok, lines[0])
	h.svc, err = auth.ParseServiceConnectionString(svcCS)
	require.NoError(t, err)
	devCS, ok := strings.CutPrefix(lines[1], "IOTHUB_DEVICE_CONNECTION_STRING=")
	require.True(t, ok, lines[1])
	dev, err := auth.ParseDeviceConnectionString(devCS)
	require.NoError(t, err)
	h.mqttAddr = dev.Address()
	caPEM, err := os.ReadFile(caFile)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(caPEM))
	h.conf = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return h
}

// do sends one service API request signed with the owner policy.
func (h *runningHub) do(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	tp, err := h.svc.TokenProvider(nil)
	require.NoError(t, err)
	tok, err := tp.Token(context.Background())
	require.NoError(t, err)
	req, err := http.NewRequest(method, "https://"+h.svc.Address()+path+"?api-version=2021-04-12", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", tok.Value)
	req.Header.Set("Content-Type", "application/json")
	tr := &http.Transport{TLSClientConfig: h.conf}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// writeCA writes a fresh CA's certificate to a PEM file.
func writeCA(t *testing.T, name string) (*pki.CA, string) {
	t.Helper()
	ca, err := pki.NewCA(name)
	require.NoError(t, err)
	f := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(f, ca.CertPEM(), 0o600))
	return ca, f
}

// TestHubDeviceCA: --device-ca trusts a CA for certificateAuthority
// devices, prints its subject, and without it such devices are refused.
func TestHubDeviceCA(t *testing.T) {
	ca, caFile := writeCA(t, "fleet CA")
	cert, err := ca.IssueClient("dev-ca", time.Hour)
	require.NoError(t, err)

	connect := func(t *testing.T, h *runningHub) error {
		t.Helper()
		st, body := h.do(t, "PUT", "/devices/dev-ca", `{"deviceId":"dev-ca","authentication":{"type":"certificateAuthority"}}`)
		require.Equal(t, 200, st, body)
		conf := h.conf.Clone()
		conf.Certificates = []tls.Certificate{cert}
		_, err := pahodev.Dial(t, pahodev.Options{URL: "tls://" + h.mqttAddr, TLS: conf,
			Identity: auth.Identity{HostName: "localhost", DeviceID: "dev-ca"}})
		return err
	}

	t.Run("trusted", func(t *testing.T) {
		h := startTestHub(t, "--device-ca", caFile)
		require.Contains(t, h.logs.String(), `trusting device CA "CN=fleet CA,O=iothub local hub"`)
		require.NoError(t, connect(t, h))
	})
	t.Run("not trusted", func(t *testing.T) {
		_, other := writeCA(t, "other CA")
		h := startTestHub(t, "--device-ca", other)
		require.Error(t, connect(t, h), "a device under an untrusted CA connected")
	})
	t.Run("no CA", func(t *testing.T) {
		h := startTestHub(t)
		require.Error(t, connect(t, h), "a CA-signed device connected to a hub with no trusted CA")
	})
}

// TestHubDeviceCAFiles: bad --device-ca files fail the start with a clear
// error.
func TestHubDeviceCAFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		f := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(f, b, 0o600))
		return f
	}
	ca, err := pki.NewCA("a CA")
	require.NoError(t, err)
	leaf, err := ca.IssueClient("dev1", time.Hour)
	require.NoError(t, err)
	leafPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Certificate[0]})
	for name, tc := range map[string]struct{ file, want string }{
		"missing": {filepath.Join(dir, "nope.pem"), "no such file"},
		"not PEM": {write("junk.pem", []byte("hello")), "no PEM certificate found"},
		"a leaf":  {write("leaf.pem", leafPEM), "is not a CA certificate"},
		"garbage": {write("bad.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}})), "certificate 1"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := loadDeviceCAs([]string{tc.file}, io.Discard)
			require.ErrorContains(t, err, tc.want)
			require.True(t, strings.HasPrefix(err.Error(), "iothub: "), err.Error())
		})
	}
}
