package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/internal/testutil/syncbuf"
	"github.com/iothub-go/iothub/iothubtest"
)

// sendCmd runs "iothub send" and returns its exit code, stdout and stderr.
func sendCmd(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(append([]string{"send"}, args...), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// startDeviceCmd runs "iothub device" with args until the test ends and
// returns its stdout lines as they come.
func startDeviceCmd(t *testing.T, args ...string) <-chan string {
	t.Helper()
	cfg, err := parseDeviceFlags(args, io.Discard)
	require.NoError(t, err)
	outR, outW := io.Pipe()
	var logs syncbuf.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serveDevice(ctx, cfg, outW, &logs)
		outW.Close()
	}()
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, outR)
		close(lines)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err, "the device command; log:\n%s", logs.String())
		case <-time.After(15 * time.Second):
			t.Error("the device command did not stop")
		}
	})
	return lines
}

// waitLine returns the first line with prefix, failing after 30 s.
func waitLine(t *testing.T, lines <-chan string, prefix string) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			require.True(t, ok, "the output ended before a line starting %q", prefix)
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			require.FailNow(t, "no line starting "+prefix)
		}
	}
}

func TestSendCommand(t *testing.T) {
	for _, tr := range []string{"mqtt", "amqp", "http"} {
		t.Run(tr, func(t *testing.T) {
			hub := iothubtest.NewServer(t, nil)
			devCS := hub.AddDevice(t, "dev1")
			hub.AddDevice(t, "sleepy")
			caFile := filepath.Join(t.TempDir(), "ca.pem")
			require.NoError(t, os.WriteFile(caFile, hub.CACertPEM(), 0o600))
			base := []string{"--connection-string", hub.ServiceConnectionString(), "--ca-file", caFile}

			lines := startDeviceCmd(t, "--connection-string", devCS, "--transport", tr, "--ca-file", caFile, "--poll-interval", "100ms")
			waitLine(t, lines, "connected")

			code, out, errOut := sendCmd(append(base, "--device", "dev1", "--body", `{"fw":"2.0"}`, "--message-id", "m1",
				"--prop", "kind=firmware", "--ack", "full")...)
			require.Equal(t, exitOK, code, "stdout %s stderr %s", out, errOut)
			assert.Equal(t, "sent m1 to dev1 (feedback: full)\nfeedback m1 dev1 Success\n", out)
			got := waitLine(t, lines, "message m1")
			assert.Equal(t, `message m1 "{\"fw\":\"2.0\"}" {"kind":"firmware"} (complete)`, got)

			// No feedback asked: sent and done; the offline device's message waits.
			code, out, errOut = sendCmd(append(base, "--device", "sleepy", "--body", "later", "--output", "json")...)
			require.Equal(t, exitOK, code, errOut)
			var doc sentDoc
			require.NoError(t, json.Unmarshal([]byte(out), &doc), out)
			assert.Equal(t, "sleepy", doc.Sent.DeviceID)
			assert.Equal(t, "none", doc.Sent.Ack)
			q := hub.C2DQueue("sleepy")
			require.Len(t, q, 1)
			assert.Equal(t, "later", string(q[0].Body))
		})
	}
}

func TestSendCommandRefusals(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, hub.CACertPEM(), 0o600))
	base := []string{"--connection-string", hub.ServiceConnectionString(), "--ca-file", caFile}
	for _, tc := range []struct {
		args []string
		code int
		has  string
	}{
		{append(base, "--body", "x"), exitUsage, "--device is required"},
		{append(base, "--device", "d", "--ack", "sometimes"), exitUsage, "--ack"},
		{append(base, "--device", "d", "--prop", "novalue"), exitUsage, "name=value"},
		{append(base, "--device", "nope", "--body", "x"), exitFailure, "404001"},
		{append(base, "--device", "d", "--body", strings.Repeat("x", 70*1024)), exitUsage, "iothub:"},
	} {
		code, _, errOut := sendCmd(tc.args...)
		assert.Equal(t, tc.code, code, "%v: %s", tc.args[len(base):], errOut)
		assert.Contains(t, errOut, tc.has, "%v", tc.args[len(base):])
		assert.NotContains(t, errOut, "SharedAccessKey=", "the key leaked")
	}
}

// "iothub device --c2d reject" rejects, and the sender sees the Rejected
// feedback (AMQP: MQTT cannot reject).
func TestDeviceCommandRejects(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	devCS := hub.AddDevice(t, "dev1")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, hub.CACertPEM(), 0o600))
	lines := startDeviceCmd(t, "--connection-string", devCS, "--transport", "amqp", "--ca-file", caFile, "--c2d", "reject", "--output", "json")
	waitLine(t, lines, `{"state":"connected"}`)
	code, out, errOut := sendCmd("--connection-string", hub.ServiceConnectionString(), "--ca-file", caFile,
		"--device", "dev1", "--body", "no", "--message-id", "r1", "--ack", "negative")
	assert.Equal(t, exitFailure, code, "a rejected message: stdout %s stderr %s", out, errOut)
	assert.Contains(t, out, "feedback r1 dev1 Rejected")
	got := waitLine(t, lines, `{"message"`)
	assert.JSONEq(t, `{"message":{"messageId":"r1","body":"no","deliveryCount":0},"settle":"reject"}`, got)
}
