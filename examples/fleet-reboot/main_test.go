package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/examples/internal/exampletest"
	"github.com/iothub-go/iothub/iothubtest"
)

// berlinResults are the lines of the simulated berlin devices (odd ones,
// fleet-11 offline) in id order.
var berlinResults = []string{
	`fleet-01   200 {"result":"Reboot started."}`,
	`fleet-03   200 {"result":"Reboot started."}`,
	`fleet-05   200 {"result":"Reboot started."}`,
	`fleet-07   200 {"result":"Reboot started."}`,
	`fleet-09   200 {"result":"Reboot started."}`,
}

func TestJobMode(t *testing.T) {
	var out exampletest.Buffer
	require.NoError(t, run(exampletest.Context(t), config{Mode: "job", Condition: "tags.site = 'berlin'", N: 12, Poll: 20 * time.Millisecond}, &out), out.String())
	want := append([]string{
		"devices: 12 registered, 6 in berlin, 11 connected over mqtt (fleet-11 stays offline)",
		`scheduled: "reboot" on every device where tags.site = 'berlin'`,
		"progress: completed, 6 of 6 devices done (1 failed)",
	}, berlinResults...)
	want = append(want, "fleet-11   failed: DeviceNotOnline", "summary: job completed; 5 of 6 rebooting, 1 failed")
	exampletest.WantInOrder(t, out.String(), want...)
	assert.NotContains(t, out.String(), "fleet-02", "a munich device was rebooted")
}

func TestInvokeMode(t *testing.T) {
	var out exampletest.Buffer
	require.NoError(t, run(exampletest.Context(t), config{Mode: "invoke", Condition: "tags.site = 'berlin'", N: 12, Rate: 50}, &out), out.String())
	want := append([]string{
		`invoking "reboot" on every device where tags.site = 'berlin', at most 50 calls/s`,
	}, berlinResults...)
	want = append(want, "fleet-11   failed: 404103 DeviceNotOnline", "summary: 5 of 6 rebooting, 1 failed")
	exampletest.WantInOrder(t, out.String(), want...)
	assert.NotContains(t, out.String(), "fleet-02", "a munich device was rebooted")
}

// With IOTHUB_SERVICE_CONNECTION_STRING, the devices of that hub that the
// condition selects are rebooted (here a second local hub, trusted through
// -ca-file), in both modes.
func TestExistingHub(t *testing.T) {
	ctx := exampletest.Context(t)
	hub := iothubtest.NewServer(t, nil)
	for _, id := range []string{"a", "b", "c"} {
		c, err := device.NewClientFromConnectionString(hub.AddDevice(t, id), &device.ClientOptions{TLSConfig: hub.TLSConfig()})
		require.NoError(t, err)
		t.Cleanup(func() { c.Close(context.Background()) })
		err = c.SetMethodHandler("reboot", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
			return device.JSONResponse(202, map[string]string{"got": string(req.Payload)})
		})
		require.NoError(t, err)
		require.NoError(t, c.Connect(ctx))
	}
	for _, mode := range []string{"job", "invoke"} {
		var out exampletest.Buffer
		err := run(ctx, config{
			Mode:                    mode,
			Condition:               "deviceId IN ['a', 'b']",
			Rate:                    10,
			Poll:                    20 * time.Millisecond,
			ServiceConnectionString: hub.ServiceConnectionString(),
			CAFile:                  exampletest.CAFile(t, hub),
		}, &out)
		require.NoError(t, err, out.String())
		exampletest.WantInOrder(t, out.String(),
			"hub:     localhost",
			`a          202 {"got":"{\"delaySeconds\":5}"}`,
			`b          202`,
			"0 of 2 rebooting, 2 failed",
		)
		assert.NotContains(t, out.String(), "started in-process", "%s: started a hub of its own", mode)
		assert.NotContains(t, out.String(), "  c ", "%s: device c is not selected", mode)
	}
}
