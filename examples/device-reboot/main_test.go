package main

import (
	"context"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/examples/internal/exampletest"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// The device answers "reboot" until its context ends, over MQTT and MQTT
// over WebSocket, against a local hub trusted through -ca-file.
func TestRun(t *testing.T) {
	for _, ws := range []bool{false, true} {
		t.Run(map[bool]string{false: "mqtt", true: "mqtt-ws"}[ws], func(t *testing.T) {
			hub := iothubtest.NewServer(t, nil)
			cfg := config{ConnectionString: hub.AddDevice(t, "dev1"), CAFile: exampletest.CAFile(t, hub), WebSocket: ws}
			ctx, cancel := context.WithCancel(exampletest.Context(t))
			defer cancel()
			var out exampletest.Buffer
			done := make(chan error, 1)
			go func() { done <- run(ctx, cfg, &out) }()
			require.NoError(t, hub.WaitOnline(ctx, "dev1"), "device never came online:\n%s", out.String())

			svc, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(),
				&service.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: hub.HTTPClient()}})
			require.NoError(t, err)
			res, err := svc.InvokeDeviceMethod(ctx, "dev1", service.CloudToDeviceMethod{MethodName: "reboot", Payload: map[string]int{"delay": 1}, ResponseTimeout: 30 * time.Second})
			require.NoError(t, err)
			assert.Equal(t, 200, res.Status, "status of the reboot call")
			assert.Equal(t, `{"result":"Reboot started."}`, string(res.Payload), "payload of the reboot call")

			cancel()
			require.NoError(t, <-done, "run")
			exampletest.WantInOrder(t, out.String(), "waiting for direct method calls", `reboot requested (payload {"delay":1})`)
			exampletest.WantInOrder(t, out.String(), "connection: connecting", "connection: connected") // reported asynchronously
		})
	}
}

func TestNoConnectionString(t *testing.T) {
	assert.Error(t, run(context.Background(), config{}, &exampletest.Buffer{}), "no connection string")
}
