package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/internal/testutil/hubcall"
	"github.com/iothub-go/iothub/internal/testutil/syncbuf"
	"github.com/iothub-go/iothub/iothubtest"
)

func TestDeviceCommand(t *testing.T) {
	for _, tc := range []struct{ transport, output string }{
		{"mqtt", "text"}, {"mqtt-ws", "text"}, {"amqp", "text"}, {"amqp-ws", "text"}, {"mqtt", "json"},
	} {
		t.Run(tc.transport+"/"+tc.output, func(t *testing.T) {
			hub := iothubtest.NewServer(t, nil)
			caFile := filepath.Join(t.TempDir(), "ca.pem")
			require.NoError(t, os.WriteFile(caFile, hub.CACertPEM(), 0o600))
			cfg, err := parseDeviceFlags([]string{"--connection-string", hub.AddDevice(t, "sim1"), "--transport", tc.transport,
				"--ca-file", caFile, "--output", tc.output}, io.Discard)
			require.NoError(t, err)
			outR, outW := io.Pipe()
			var logs syncbuf.Buffer
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				done <- serveDevice(ctx, cfg, outW, &logs)
				outW.Close()
			}()
			connected := "connected"
			if tc.output == "json" {
				connected = `{"state":"connected"}`
			}
			sc := bufio.NewScanner(outR)
			var lines []string
			for sc.Scan() {
				lines = append(lines, sc.Text())
				if sc.Text() == connected {
					break
				}
			}
			require.Contains(t, lines, connected, "the device never printed %q; log:\n%s", connected, logs.String())
			rest := make(chan []string, 1)
			go func() {
				var more []string
				for sc.Scan() {
					more = append(more, sc.Text())
				}
				_, _ = io.Copy(io.Discard, outR)
				rest <- more
			}()

			st, body := hubcall.Invoke(t, hub, "sim1", `{"methodName":"reboot","payload":{"delay":5}}`)
			assert.Equal(t, 200, st, "invoke: %s", body)
			assert.Equal(t, `{"status":200,"payload":{"method":"reboot","payload":{"delay":5}}}`, body, "invoke")
			st, body = hubcall.Invoke(t, hub, "sim1", `{"methodName":"ping"}`)
			assert.Equal(t, 200, st, "invoke without payload: %s", body)
			assert.Equal(t, `{"status":200,"payload":{"method":"ping","payload":null}}`, body, "invoke without payload")
			cancel() // as SIGINT does
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(15 * time.Second):
				require.FailNow(t, "the device did not stop")
			}
			log := logs.String()
			assert.Contains(t, log, "msg=method identity=sim1", "log lacks the method calls")
			assert.Contains(t, log, "method=reboot status=200 duration=", "log lacks the method calls")
			if tc.output != "json" {
				return
			}
			// Every line is a documented JSON document.
			for _, l := range append(lines, <-rest...) {
				var st deviceState
				assert.NoError(t, json.Unmarshal([]byte(l), &st), "line %q", l)
				assert.Contains(t, []string{"connecting", "connected", "disconnected", "closed"}, st.State, "line %q", l)
			}
		})
	}
}

func TestDeviceFlags(t *testing.T) {
	t.Setenv("IOTHUB_DEVICE_CONNECTION_STRING", "")
	for _, args := range [][]string{
		{},
		{"--connection-string", "x", "--transport", "carrier-pigeon"},
		{"--connection-string", "x", "--cert-file", "c.pem"},
		{"--connection-string", "x", "--output", "yaml"},
	} {
		_, err := parseDeviceFlags(args, io.Discard)
		assert.Error(t, err, "parseDeviceFlags(%q) accepted", args)
	}
	// A configuration refused before connecting is bad usage.
	for _, args := range [][]string{
		{"--connection-string", "HostName=h;DeviceId=d;SharedAccessKey=bad!"},
		{"--connection-string", "HostName=h;DeviceId=d;SharedAccessKey=AAAA", "--ca-file", filepath.Join(t.TempDir(), "nope.pem")},
		{"--output", "yaml"},
	} {
		assert.Equal(t, exitUsage, run(append([]string{"device"}, args...), io.Discard, io.Discard), "exit status of %q", args)
	}
	var stderr syncbuf.Buffer
	assert.Equal(t, exitOK, run([]string{"device", "-h"}, io.Discard, &stderr), "-h")
	for _, want := range []string{"usage: iothub device", "-output format", `{"state":"connected"}`, "exit status:\n  0  success\n  1  failure", "\n  2  bad usage"} {
		assert.Contains(t, stderr.String(), want, "-h")
	}
}
