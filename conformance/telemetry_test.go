//go:build conformance

package conformance

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// sendTelemetry runs telemetry.js (the official Node device SDK) and
// fails unless it printed SENT.
func sendTelemetry(t *testing.T, h *hubProc, deviceID, transport string, env ...string) {
	t.Helper()
	cmd := exec.Command("node", "telemetry.js")
	cmd.Env = append(os.Environ(), "DEVICE_CS="+h.deviceCS[deviceID], "TRANSPORT="+transport, "CA_FILE="+h.caFile)
	cmd.Env = append(cmd.Env, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	done := make(chan struct{})
	timer := time.AfterFunc(60*time.Second, func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
		}
	})
	out, err := cmd.Output()
	close(done)
	timer.Stop()
	require.NoError(t, err, "telemetry.js over %s\nstdout: %s\nstderr: %s", transport, out, stderr.String())
	require.Equal(t, "SENT", strings.TrimSpace(string(out)), "telemetry.js over %s; stderr: %s", transport, stderr.String())
}

// nextEvent returns the hub's next EVENT line.
func nextEvent(t *testing.T, h *hubProc) string {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case l := <-h.lines:
			if strings.HasPrefix(l, "EVENT ") {
				return l
			}
		case <-timeout:
			require.FailNow(t, "the hub printed no EVENT line")
			return ""
		}
	}
}

// TestTelemetry: the official Node device SDK sends one message over HTTPS
// and one over MQTT; the hub (--print-events) reports each with its system
// and application properties. Over HTTPS, property names travel as header
// names and come out lower-case; only token characters are allowed there.
func TestTelemetry(t *testing.T) {
	h := startHubWith(t, []string{"--print-events"}, "dev-tel-http", "dev-tel-mqtt")
	for _, tc := range []struct {
		device, transport string
		env               []string
		want              string
	}{
		{"dev-tel-http", "http",
			[]string{"MESSAGE_ID=m-http", "CORRELATION_ID=c-http", `PROPS={"alert":"true","Site":"b-12"}`},
			`EVENT dev-tel-http http {"messageId":"m-http","correlationId":"c-http","contentType":"application/json","contentEncoding":"utf-8","properties":{"alert":"true","site":"b-12"}} "{\"temp\":21.5}"`},
		{"dev-tel-mqtt", "mqtt",
			[]string{"MESSAGE_ID=m-mqtt", "CORRELATION_ID=c-mqtt", `PROPS={"alert":"true","odd name":"a&b=c/é?"}`, `BODY=héllo "mqtt"`},
			`EVENT dev-tel-mqtt mqtt {"messageId":"m-mqtt","correlationId":"c-mqtt","contentType":"application/json","contentEncoding":"utf-8","properties":{"alert":"true","odd name":"a&b=c/é?"}} "héllo \"mqtt\""`},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			sendTelemetry(t, h, tc.device, tc.transport, tc.env...)
			require.Equal(t, tc.want, nextEvent(t, h), "the hub's EVENT line")
		})
	}
}
