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
)

// hubProc is a running `iothub hub`.
type hubProc struct {
	bin        string // the iothub binary
	caFile     string
	serviceCS  string
	deviceCS   map[string]string
	cmd        *exec.Cmd
	stderrDump *bytes.Buffer
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
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/iothub: %v\n%s", err, out)
	}
	h := &hubProc{bin: bin, caFile: filepath.Join(dir, "ca.pem"), deviceCS: map[string]string{}, stderrDump: &bytes.Buffer{},
		lines: make(chan string, 1024)}
	args := append([]string{"hub", "--ca-file", h.caFile}, extraArgs...)
	for _, d := range devices {
		args = append(args, "--device", d)
	}
	h.cmd = exec.Command(bin, args...)
	h.cmd.Stderr = &lockedWriter{w: h.stderrDump}
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = h.cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- h.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("iothub hub did not exit cleanly on SIGINT: %v", err)
			}
		case <-time.After(10 * time.Second):
			_ = h.cmd.Process.Kill()
			t.Errorf("iothub hub did not exit within 10 s of SIGINT")
		}
		if t.Failed() {
			t.Logf("hub log:\n%s", h.stderrDump.String())
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
			t.Fatalf("unexpected hub output line %q", sc.Text())
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
	if h.serviceCS == "" || len(h.deviceCS) != len(devices) {
		t.Fatalf("hub printed %d connection strings, want %d; log:\n%s", len(h.deviceCS)+1, want, h.stderrDump.String())
	}
	if !strings.HasPrefix(h.serviceCS, "HostName=localhost;") {
		t.Fatalf("service connection string %q does not start with HostName=localhost;", h.serviceCS)
	}
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
	if err != nil {
		t.Fatal(err)
	}
	var log, stderr bytes.Buffer
	var logMu sync.Mutex
	errW := &lockedWriter{w: &stderr}
	cmd.Stderr = errW
	errText := func() string {
		errW.mu.Lock()
		defer errW.mu.Unlock()
		return stderr.String()
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
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
		t.Fatalf("device.js %s ended before READY; output:\n%s%s", transport, log.String(), errText())
	case <-time.After(30 * time.Second):
		logMu.Lock()
		defer logMu.Unlock()
		t.Fatalf("device.js %s never printed READY; output:\n%s%s", transport, log.String(), errText())
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
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &lockedWriter{w: &stderr}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
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
			if err != nil {
				t.Errorf("iothub device did not exit cleanly on SIGINT: %v", err)
			}
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("iothub device did not exit within 15 s of SIGINT")
		}
		if t.Failed() {
			t.Logf("iothub device log:\n%s", stderr.String())
		}
	})
	select {
	case <-connected:
	case <-time.After(30 * time.Second):
		t.Fatalf("iothub device never connected; log:\n%s", stderr.String())
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
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("node %s: %v", script, err)
		}
		code = ee.ExitCode()
	}
	var v map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(out), &v); err != nil {
		t.Fatalf("node %s printed %q (stderr %q): %v", script, out, stderr.String(), err)
	}
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
			if code != 0 {
				t.Fatalf("invoke exit %d: %v", code, mustJSON(res))
			}
			want := fmt.Sprintf(`{"payload":{"payload":%s,"result":"ok"},"status":200}`, mustJSON(decode(t, payload)))
			if got := mustJSON(res); got != want {
				t.Fatalf("invoke result\n got %s\nwant %s", got, want)
			}
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
			if code != 0 {
				t.Fatalf("invoke exit %d: %v", code, mustJSON(res))
			}
			want := `{"payload":{"method":"reboot","payload":{"delay":5,"list":[1,"a"]}},"status":200}`
			if got := mustJSON(res); got != want {
				t.Fatalf("invoke result\n got %s\nwant %s", got, want)
			}
		})
	}

	t.Run("registry create and get", func(t *testing.T) {
		res, code := nodeJSON(t, "registry.js", "SERVICE_CS="+h.serviceCS, "DEVICE_ID=dev-registry", "CA_FILE="+h.caFile)
		if code != 0 {
			t.Fatalf("registry.js exit %d: %s", code, mustJSON(res))
		}
		for _, k := range []string{"created", "got"} {
			d, _ := res[k].(map[string]any)
			if d["deviceId"] != "dev-registry" {
				t.Fatalf("%s device = %s", k, mustJSON(res[k]))
			}
			a, _ := d["authentication"].(map[string]any)
			sk, _ := a["symmetricKey"].(map[string]any)
			if pk, _ := sk["primaryKey"].(string); len(pk) != 44 {
				t.Fatalf("%s device has no generated 32-byte primary key: %s", k, mustJSON(d))
			}
		}
		dup, _ := res["duplicate"].(map[string]any)
		if dup["name"] != "DeviceAlreadyExistsError" || dup["statusCode"] != float64(409) {
			t.Fatalf("second create gave %s, want DeviceAlreadyExistsError 409", mustJSON(res["duplicate"]))
		}
		// addDevices: one bulk request created both devices.
		bulk, _ := res["bulk"].(map[string]any)
		if bulk["isSuccessful"] != true {
			t.Fatalf("addDevices result %s", mustJSON(res["bulk"]))
		}
		if d, _ := res["bulkGot"].(map[string]any); d["deviceId"] != "dev-registry-bulk2" || d["status"] != "disabled" {
			t.Fatalf("bulk-created device %s", mustJSON(res["bulkGot"]))
		}
		// The hub's registry statistics count these devices among the
		// others registered so far; one is disabled.
		st, _ := res["stats"].(map[string]any)
		total, _ := st["totalDeviceCount"].(float64)
		if total < 3 || st["disabledDeviceCount"] != float64(1) || st["enabledDeviceCount"] != total-1 {
			t.Fatalf("registry statistics %s", mustJSON(res["stats"]))
		}
	})

	t.Run("offline device", func(t *testing.T) {
		res, code := invoke(t, h, "dev-offline", `{"x":1}`)
		e, _ := res["error"].(map[string]any)
		if code != 1 || e == nil || e["statusCode"] != float64(404) {
			t.Fatalf("invoke of an offline device: exit %d, %s; want a 404 error", code, mustJSON(res))
		}
		body, _ := e["responseBody"].(string)
		if !strings.Contains(body, `404103`) {
			t.Fatalf("404 body %q does not carry errorCode 404103", body)
		}
	})

	t.Run("slow device", func(t *testing.T) {
		devicePeer(t, h, "dev-slow", "mqtt", "DELAY_MS=8000")
		res, code := invoke(t, h, "dev-slow", `{"x":1}`, "TIMEOUT=5")
		e, _ := res["error"].(map[string]any)
		if code != 1 || e == nil || e["name"] != "GatewayTimeoutError" || e["statusCode"] != float64(504) {
			t.Fatalf("invoke of a slow device: exit %d, %s; want GatewayTimeoutError 504", code, mustJSON(res))
		}
		body, _ := e["responseBody"].(string)
		if !strings.Contains(body, `504101`) {
			t.Fatalf("504 body %q does not carry errorCode 504101", body)
		}
	})
}

func decode(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return v
}
