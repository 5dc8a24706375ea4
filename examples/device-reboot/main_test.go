package main

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/examples/internal/exampletest"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// The device answers "reboot" until its context ends, then reports
// iothubDM.reboot.lastReboot in its twin, over MQTT and MQTT over
// WebSocket, against a local hub trusted through -ca-file.
func TestRun(t *testing.T) {
	for _, ws := range []bool{false, true} {
		t.Run(map[bool]string{false: "mqtt", true: "mqtt-ws"}[ws], func(t *testing.T) {
			hub := iothubtest.NewServer(t, nil)
			cfg := config{ConnectionString: hub.AddDevice(t, "dev1"), CAFile: exampletest.CAFile(t, hub), WebSocket: ws}
			ctx, cancel := context.WithCancel(exampletest.Context(t))
			defer cancel()
			out := newWatchedOutput("rebooted; reported")
			done := make(chan error, 1)
			go func() { done <- run(ctx, cfg, out) }()
			require.NoError(t, hub.WaitOnline(ctx, "dev1"), "device never came online:\n%s", out.String())

			svc, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(),
				&service.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: hub.HTTPClient()}})
			require.NoError(t, err)
			before := time.Now().UTC().Truncate(time.Millisecond)
			res, err := svc.InvokeDeviceMethod(ctx, "dev1", service.CloudToDeviceMethod{MethodName: "reboot", Payload: map[string]int{"delay": 1}, ResponseTimeout: 30 * time.Second})
			require.NoError(t, err)
			assert.Equal(t, 200, res.Status, "status of the reboot call")
			assert.Equal(t, `{"result":"Reboot started."}`, string(res.Payload), "payload of the reboot call")

			// After answering, the device reports when it rebooted.
			select {
			case <-out.seen:
			case <-ctx.Done():
				require.FailNow(t, "the device never reported its reboot", "output:\n%s", out.String())
			}
			m := regexp.MustCompile(`reported iothubDM\.reboot\.lastReboot = (\S+) \(reported properties version (\d+)\)`).FindStringSubmatch(out.String())
			require.NotNil(t, m, "the report's line:\n%s", out.String())
			twin := hub.Twin(t, "dev1")
			assert.Equal(t, map[string]any{"reboot": map[string]any{"lastReboot": m[1]}}, twin.Reported["iothubDM"], "reported iothubDM in the hub's twin")
			assert.Equal(t, m[2], itoa(twin.ReportedVersion), "the printed version is the twin's reported $version")
			at, err := time.Parse(time.RFC3339, m[1])
			require.NoError(t, err, "lastReboot is RFC 3339")
			assert.Equal(t, time.UTC, at.Location(), "lastReboot is UTC")
			assert.False(t, at.Before(before), "lastReboot %s is before the call (%s)", at, before)

			cancel()
			require.NoError(t, <-done, "run")
			exampletest.WantInOrder(t, out.String(), "waiting for direct method calls", `reboot requested (payload {"delay":1})`, "rebooted; reported iothubDM.reboot.lastReboot")
			exampletest.WantInOrder(t, out.String(), "connection: connecting", "connection: connected") // reported asynchronously
		})
	}
}

func TestNoConnectionString(t *testing.T) {
	assert.Error(t, run(context.Background(), config{}, &exampletest.Buffer{}), "no connection string")
}

// watchedOutput is the program's output; seen closes once it holds want.
type watchedOutput struct {
	exampletest.Buffer
	want string
	once sync.Once
	seen chan struct{}
}

func newWatchedOutput(want string) *watchedOutput {
	return &watchedOutput{want: want, seen: make(chan struct{})}
}

func (w *watchedOutput) Write(p []byte) (int, error) {
	n, err := w.Buffer.Write(p)
	if strings.Contains(w.Buffer.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return n, err
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
