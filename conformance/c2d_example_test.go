//go:build conformance

package conformance

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestC2DCommandExample runs examples/c2d-command against `iothub hub` on
// every device transport: the command queued for the offline device is
// received, completed, and the Success feedback comes back.
func TestC2DCommandExample(t *testing.T) {
	transports := []string{"mqtt", "mqtt-ws", "amqp", "amqp-ws", "http"}
	var ids []string
	for _, tr := range transports {
		ids = append(ids, "cmd-"+tr)
	}
	h := startHub(t, ids...)
	bin := filepath.Join(t.TempDir(), "c2d-command")
	out, err := exec.Command("go", "build", "-o", bin, "../examples/c2d-command").CombinedOutput()
	require.NoError(t, err, "go build:\n%s", out)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "-transport", tr, "-ca-file", h.caFile)
			cmd.Env = append(os.Environ(), "IOTHUB_SERVICE_CONNECTION_STRING="+h.serviceCS,
				"IOTHUB_DEVICE_CONNECTION_STRING="+h.deviceCS["cmd-"+tr])
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s:\n%s", tr, out)
			text := string(out)
			assert.Contains(t, text, "service: queued a firmware update for cmd-"+tr+", which is offline")
			assert.Contains(t, text, "device:  connected over "+tr)
			assert.Contains(t, text, `{"command":"firmwareUpdate","version":"2.1.0"}; applying it and completing the message`)
			assert.Contains(t, text, "from cmd-"+tr+": Success")
		})
	}
}
