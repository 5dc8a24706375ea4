package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/examples/internal/exampletest"
	"github.com/iothub-go/iothub/iothubtest"
)

func TestSimulatedFleet(t *testing.T) {
	var out exampletest.Buffer
	require.NoError(t, run(exampletest.Context(t), config{N: 12, Concurrency: 4}, &out), out.String())
	want := []string{"devices: 12 registered, 11 connected over mqtt (fleet-12 stays offline)", `invoking "reboot" on 12 devices, 4 at a time`}
	for i := 1; i <= 11; i++ {
		want = append(want, fmt.Sprintf(`fleet-%02d   200 {"result":"Reboot started."}`, i))
	}
	want = append(want, "fleet-12   failed: 404103 DeviceNotOnline", "summary: 11 of 12 rebooting, 1 failed")
	exampletest.WantInOrder(t, out.String(), want...)
}

// With IOTHUB_SERVICE_CONNECTION_STRING and -devices, the named devices of
// that hub are invoked (here a second local hub, trusted through -ca-file).
func TestExistingHub(t *testing.T) {
	ctx := exampletest.Context(t)
	hub := iothubtest.NewServer(t, nil)
	for _, id := range []string{"a", "b"} {
		c, err := device.NewClientFromConnectionString(hub.AddDevice(t, id), &device.ClientOptions{TLSConfig: hub.TLSConfig()})
		require.NoError(t, err)
		t.Cleanup(func() { c.Close(context.Background()) })
		err = c.SetMethodHandler("reboot", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
			return device.JSONResponse(202, map[string]string{"got": string(req.Payload)})
		})
		require.NoError(t, err)
		require.NoError(t, c.Connect(ctx))
	}
	var out exampletest.Buffer
	err := run(ctx, config{
		Concurrency:             2,
		ServiceConnectionString: hub.ServiceConnectionString(),
		Devices:                 []string{"a", "b", "nope"},
		CAFile:                  exampletest.CAFile(t, hub),
	}, &out)
	require.NoError(t, err, out.String())
	exampletest.WantInOrder(t, out.String(),
		"hub:     localhost",
		`a          202 {"got":"{\"delaySeconds\":5}"}`,
		`b          202`,
		"nope       failed: 404001 DeviceNotFound",
		"summary: 0 of 3 rebooting, 3 failed",
	)
	assert.NotContains(t, out.String(), "started in-process", "started a hub of its own")
}

func TestUsage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out exampletest.Buffer
	assert.Error(t, run(ctx, config{Devices: []string{"a"}}, &out), "-devices without a hub")
	assert.Error(t, run(ctx, config{ServiceConnectionString: "HostName=h;SharedAccessKeyName=s;SharedAccessKey=aGVsbG8="}, &out), "a hub without -devices")
}
