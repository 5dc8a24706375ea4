//go:build conformance

// Package conformance checks the local hub against the official Azure IoT
// Node.js SDK: the npm packages in package.json act as independent peers.
//
// It needs Node.js, `npm ci` in this folder, and the right to bind
// 127.0.0.1:443, :8883 and :5671 (the Node SDK cannot use other ports for
// WebSockets and the service API). Run it with:
//
//	(cd conformance && npm ci) && go test -tags conformance -count=1 ./conformance
package conformance

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/internal/testutil/syncbuf"
)

// hubProc is a running `iothub hub`.
type hubProc struct {
	bin       string // the iothub binary
	caFile    string
	serviceCS string
	deviceCS  map[string]string
	cmd       *exec.Cmd
	stderr    *syncbuf.Buffer // the hub's log
	// lines receives the hub's stdout lines after the connection strings
	// (e.g. EVENT lines with --print-events); lines nobody takes are
	// dropped once 1024 are buffered.
	lines chan string
}

// startHub builds cmd/iothub and runs `iothub hub` on the standard ports
// with the given devices pre-registered.
func startHub(t *testing.T, devices ...string) *hubProc {
	t.Helper()
	return startHubWith(t, nil, devices...)
}

// startHubWith is startHub with extra `iothub hub` flags.
func startHubWith(t *testing.T, extraArgs []string, devices ...string) *hubProc {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "iothub")
	build := exec.Command("go", "build", "-o", bin, "../cmd/iothub")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build ./cmd/iothub:\n%s", out)
	h := &hubProc{bin: bin, caFile: filepath.Join(dir, "ca.pem"), deviceCS: map[string]string{}, stderr: &syncbuf.Buffer{},
		lines: make(chan string, 1024)}
	args := append([]string{"hub", "--ca-file", h.caFile}, extraArgs...)
	for _, d := range devices {
		args = append(args, "--device", d)
	}
	h.cmd = exec.Command(bin, args...)
	h.cmd.Stderr = h.stderr
	stdout, err := h.cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, h.cmd.Start())
	t.Cleanup(func() {
		_ = h.cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- h.cmd.Wait() }()
		select {
		case err := <-done:
			assert.NoError(t, err, "iothub hub did not exit cleanly on SIGINT")
		case <-time.After(10 * time.Second):
			_ = h.cmd.Process.Kill()
			assert.Fail(t, "iothub hub did not exit within 10 s of SIGINT")
		}
		if t.Failed() {
			t.Logf("hub log:\n%s", h.stderr.String())
		}
	})
	sc := bufio.NewScanner(stdout)
	want := 1 + len(devices)
	for i := 0; i < want && sc.Scan(); i++ {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "IOTHUB_SERVICE_CONNECTION_STRING":
			h.serviceCS = v
		case "IOTHUB_DEVICE_CONNECTION_STRING":
			h.deviceCS[devices[len(h.deviceCS)]] = v
		default:
			require.Fail(t, "unexpected hub output line", "%q", sc.Text())
		}
	}
	go func() {
		for sc.Scan() {
			select {
			case h.lines <- sc.Text():
			default:
			}
		}
		_, _ = io.Copy(io.Discard, stdout) // a line too long for the scanner
	}()
	require.NotEmpty(t, h.serviceCS, "the hub printed no service connection string; log:\n%s", h.stderr.String())
	require.Len(t, h.deviceCS, len(devices), "device connection strings the hub printed; log:\n%s", h.stderr.String())
	require.True(t, strings.HasPrefix(h.serviceCS, "HostName=localhost;"), "service connection string %q does not start with HostName=localhost;", h.serviceCS)
	return h
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// devicePeer runs device.js and waits for READY. It returns a function
// that reads the peer's output so far (stdout, then stderr).
func devicePeer(t *testing.T, h *hubProc, deviceID, transport string, env ...string) func() string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "node", "device.js")
	cmd.Env = append(os.Environ(), "DEVICE_CS="+h.deviceCS[deviceID], "TRANSPORT="+transport, "CA_FILE="+h.caFile)
	cmd.Env = append(cmd.Env, env...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var log bytes.Buffer
	var logMu sync.Mutex
	stderr := &syncbuf.Buffer{}
	cmd.Stderr = stderr
	errText := stderr.String
	require.NoError(t, cmd.Start())
	ready, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stdout)
		once := sync.Once{}
		for sc.Scan() {
			logMu.Lock()
			log.WriteString(sc.Text() + "\n")
			logMu.Unlock()
			if sc.Text() == "READY" {
				once.Do(func() { close(ready) })
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			logMu.Lock()
			t.Logf("device.js (%s) output:\n%s%s", transport, log.String(), errText())
			logMu.Unlock()
		}
	})
	select {
	case <-ready:
	case <-exited:
		logMu.Lock()
		defer logMu.Unlock()
		require.FailNow(t, "device.js ended before READY", "%s; output:\n%s%s", transport, log.String(), errText())
	case <-time.After(30 * time.Second):
		logMu.Lock()
		defer logMu.Unlock()
		require.FailNow(t, "device.js never printed READY", "%s; output:\n%s%s", transport, log.String(), errText())
	}
	return func() string {
		logMu.Lock()
		defer logMu.Unlock()
		return log.String() + errText()
	}
}

// goDevice runs `iothub device` (this SDK's device client) and waits until
// it is connected.
func goDevice(t *testing.T, h *hubProc, deviceID, transport string) {
	t.Helper()
	cmd := exec.Command(h.bin, "device", "--connection-string", h.deviceCS[deviceID], "--transport", transport, "--ca-file", h.caFile)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stderr := &syncbuf.Buffer{}
	cmd.Stderr = stderr
	require.NoError(t, cmd.Start())
	connected := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		once := sync.Once{}
		for sc.Scan() {
			if sc.Text() == "connected" {
				once.Do(func() { close(connected) })
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			assert.NoError(t, err, "iothub device did not exit cleanly on SIGINT")
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			assert.Fail(t, "iothub device did not exit within 15 s of SIGINT")
		}
		if t.Failed() {
			t.Logf("iothub device log:\n%s", stderr.String())
		}
	})
	select {
	case <-connected:
	case <-time.After(30 * time.Second):
		require.FailNow(t, "iothub device never connected", "log:\n%s", stderr.String())
	}
}

// nodeJSON runs a node script with env and decodes its one JSON line.
func nodeJSON(t *testing.T, script string, env ...string) (map[string]any, int) {
	t.Helper()
	cmd := exec.Command("node", script)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "node %s", script)
		code = ee.ExitCode()
	}
	var v map[string]any
	require.NoError(t, json.Unmarshal(bytes.TrimSpace(out), &v), "node %s printed %q (stderr %q)", script, out, stderr.String())
	return v, code
}

func invoke(t *testing.T, h *hubProc, deviceID, payload string, env ...string) (map[string]any, int) {
	t.Helper()
	env = append(env, "SERVICE_CS="+h.serviceCS, "DEVICE_ID="+deviceID, "PAYLOAD="+payload, "CA_FILE="+h.caFile)
	return nodeJSON(t, "invoke.js", env...)
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestNodePeers runs every check against one hub, one after another, since
// only one process can hold the standard ports.
func TestNodePeers(t *testing.T) {
	h := startHub(t, "dev-mqtt", "dev-mqttws", "dev-offline", "dev-slow", "dev-go-mqtt", "dev-go-mqttws")

	for _, tr := range []struct{ device, transport string }{
		{"dev-mqtt", "mqtt"},
		{"dev-mqttws", "mqttws"},
	} {
		t.Run("method over "+tr.transport, func(t *testing.T) {
			devicePeer(t, h, tr.device, tr.transport)
			payload := fmt.Sprintf(`{"who":%q,"n":[1,2.5,"x",null,{"deep":true}]}`, tr.transport)
			res, code := invoke(t, h, tr.device, payload)
			require.Equal(t, 0, code, "invoke exit status: %v", mustJSON(res))
			want := fmt.Sprintf(`{"payload":{"payload":%s,"result":"ok"},"status":200}`, mustJSON(decode(t, payload)))
			require.Equal(t, want, mustJSON(res), "invoke result")
		})
	}

	// The official service client invokes our Go device (iothub device).
	for _, tr := range []struct{ device, transport string }{
		{"dev-go-mqtt", "mqtt"},
		{"dev-go-mqttws", "mqtt-ws"},
	} {
		t.Run("node service to Go device over "+tr.transport, func(t *testing.T) {
			goDevice(t, h, tr.device, tr.transport)
			res, code := invoke(t, h, tr.device, `{"delay":5,"list":[1,"a"]}`, "METHOD=reboot")
			require.Equal(t, 0, code, "invoke exit status: %v", mustJSON(res))
			want := `{"payload":{"method":"reboot","payload":{"delay":5,"list":[1,"a"]}},"status":200}`
			require.Equal(t, want, mustJSON(res), "invoke result")
		})
	}

	t.Run("registry create and get", func(t *testing.T) {
		res, code := nodeJSON(t, "registry.js", "SERVICE_CS="+h.serviceCS, "DEVICE_ID=dev-registry", "CA_FILE="+h.caFile)
		require.Equal(t, 0, code, "registry.js exit status: %s", mustJSON(res))
		for _, k := range []string{"created", "got"} {
			d, _ := res[k].(map[string]any)
			require.Equal(t, "dev-registry", d["deviceId"], "%s device = %s", k, mustJSON(res[k]))
			a, _ := d["authentication"].(map[string]any)
			sk, _ := a["symmetricKey"].(map[string]any)
			pk, _ := sk["primaryKey"].(string)
			require.Len(t, pk, 44, "%s device has no generated 32-byte primary key: %s", k, mustJSON(d))
		}
		dup, _ := res["duplicate"].(map[string]any)
		require.Equal(t, "DeviceAlreadyExistsError", dup["name"], "second create gave %s", mustJSON(res["duplicate"]))
		require.Equal(t, float64(409), dup["statusCode"], "second create gave %s", mustJSON(res["duplicate"]))
		// addDevices: one bulk request created both devices.
		bulk, _ := res["bulk"].(map[string]any)
		require.Equal(t, true, bulk["isSuccessful"], "addDevices result %s", mustJSON(res["bulk"]))
		d, _ := res["bulkGot"].(map[string]any)
		require.Equal(t, "dev-registry-bulk2", d["deviceId"], "bulk-created device %s", mustJSON(res["bulkGot"]))
		require.Equal(t, "disabled", d["status"], "bulk-created device %s", mustJSON(res["bulkGot"]))
		// The hub's registry statistics count these devices among the
		// others registered so far; one is disabled.
		st, _ := res["stats"].(map[string]any)
		total, _ := st["totalDeviceCount"].(float64)
		require.GreaterOrEqual(t, total, float64(3), "registry statistics %s", mustJSON(res["stats"]))
		require.Equal(t, float64(1), st["disabledDeviceCount"], "registry statistics %s", mustJSON(res["stats"]))
		require.Equal(t, total-1, st["enabledDeviceCount"], "registry statistics %s", mustJSON(res["stats"]))
	})

	t.Run("offline device", func(t *testing.T) {
		res, code := invoke(t, h, "dev-offline", `{"x":1}`)
		e, _ := res["error"].(map[string]any)
		require.Equal(t, 1, code, "invoke of an offline device: %s", mustJSON(res))
		require.NotNil(t, e, "invoke of an offline device: %s", mustJSON(res))
		require.Equal(t, float64(404), e["statusCode"], "invoke of an offline device: %s", mustJSON(res))
		body, _ := e["responseBody"].(string)
		require.Contains(t, body, `404103`, "the 404 body's errorCode")
	})

	t.Run("slow device", func(t *testing.T) {
		devicePeer(t, h, "dev-slow", "mqtt", "DELAY_MS=8000")
		res, code := invoke(t, h, "dev-slow", `{"x":1}`, "TIMEOUT=5")
		e, _ := res["error"].(map[string]any)
		require.Equal(t, 1, code, "invoke of a slow device: %s", mustJSON(res))
		require.NotNil(t, e, "invoke of a slow device: %s", mustJSON(res))
		require.Equal(t, "GatewayTimeoutError", e["name"], "invoke of a slow device: %s", mustJSON(res))
		require.Equal(t, float64(504), e["statusCode"], "invoke of a slow device: %s", mustJSON(res))
		body, _ := e["responseBody"].(string)
		require.Contains(t, body, `504101`, "the 504 body's errorCode")
	})
}

func decode(t *testing.T, s string) any {
	t.Helper()
	var v any
	require.NoError(t, json.Unmarshal([]byte(s), &v))
	return v
}
