package main

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/examples/internal/exampletest"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

func TestRun(t *testing.T) {
	ctx := exampletest.Context(t)
	hub := iothubtest.NewServer(t, nil)
	dev, err := device.NewClientFromConnectionString(hub.AddDevice(t, "dev1"), &device.ClientOptions{TLSConfig: hub.TLSConfig()})
	require.NoError(t, err)
	t.Cleanup(func() { dev.Close(context.Background()) })
	err = dev.SetMethodHandler("reboot", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
		return device.JSONResponse(200, map[string]string{"result": "Reboot started."})
	})
	require.NoError(t, err)
	require.NoError(t, dev.Connect(ctx))
	hub.AddDevice(t, "offline")
	cfg := config{ConnectionString: hub.ServiceConnectionString(), CAFile: exampletest.CAFile(t, hub)}

	var out exampletest.Buffer
	cfg.DeviceID = "dev1"
	require.NoError(t, run(ctx, cfg, &out), "run")
	exampletest.WantInOrder(t, out.String(), "status:  200", `payload: {"result":"Reboot started."}`)

	cfg.DeviceID = "offline"
	assert.ErrorIs(t, run(ctx, cfg, &out), service.ErrDeviceNotOnline, "offline device")
}
