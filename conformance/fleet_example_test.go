//go:build conformance

package conformance

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/service"
)

// TestFleetRebootExample runs examples/fleet-reboot, in both modes,
// against `iothub hub`: Go devices tagged by site answer "reboot", one
// berlin device stays offline.
func TestFleetRebootExample(t *testing.T) {
	h := startHub(t, "fr-1", "fr-2", "fr-3", "fr-4")
	c := serviceClient(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sites := map[string]string{"fr-1": "berlin", "fr-2": "paris", "fr-3": "berlin", "fr-4": "berlin"}
	for id, site := range sites {
		_, err := c.UpdateTwin(ctx, id, &service.TwinPatch{Tags: map[string]any{"site": site}}, nil)
		require.NoError(t, err)
		if id == "fr-4" {
			continue // offline
		}
		dc, err := device.NewClientFromConnectionString(h.deviceCS[id], &device.ClientOptions{TLSConfig: hubTLS(t, h)})
		require.NoError(t, err)
		require.NoError(t, dc.SetMethodHandler("reboot", func(context.Context, *device.MethodRequest) (*device.MethodResponse, error) {
			return device.JSONResponse(200, map[string]string{"result": "Reboot started."})
		}))
		require.NoError(t, dc.Connect(ctx))
		t.Cleanup(func() { _ = dc.Close(context.Background()) })
	}
	bin := filepath.Join(t.TempDir(), "fleet-reboot")
	out, err := exec.Command("go", "build", "-o", bin, "../examples/fleet-reboot").CombinedOutput()
	require.NoError(t, err, "go build:\n%s", out)
	for _, mode := range []string{"job", "invoke"} {
		cmd := exec.CommandContext(ctx, bin, "-mode", mode, "-ca-file", h.caFile, "-poll", "100ms")
		cmd.Env = append(os.Environ(), "IOTHUB_SERVICE_CONNECTION_STRING="+h.serviceCS)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s mode:\n%s", mode, out)
		text := string(out)
		for _, want := range []string{
			`fr-1       200 {"result":"Reboot started."}`,
			`fr-3       200 {"result":"Reboot started."}`,
			"fr-4       failed:",
			"2 of 3 rebooting, 1 failed",
		} {
			assert.Contains(t, text, want, "%s mode", mode)
		}
		assert.NotContains(t, text, "fr-2", "%s mode: a paris device was rebooted", mode)
		if mode == "job" {
			assert.True(t, strings.Contains(text, "progress: completed, 3 of 3 devices done (1 failed)"), "job progress:\n%s", text)
		}
	}
}
