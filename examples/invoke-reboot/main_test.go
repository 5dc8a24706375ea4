package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/examples/internal/exampletest"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// rebootingDevice connects id as examples/device-reboot does: "reboot" is
// answered 200 and then, off the handler's goroutine, the device reports
// iothubDM.reboot.lastReboot. With report false it only answers. Failed
// reports are sent on the returned channel.
func rebootingDevice(t *testing.T, hub *iothubtest.Server, id string, report bool) <-chan error {
	t.Helper()
	ctx := exampletest.Context(t)
	dev, err := device.NewClientFromConnectionString(hub.AddDevice(t, id), &device.ClientOptions{TLSConfig: hub.TLSConfig()})
	require.NoError(t, err)
	var reboots sync.WaitGroup
	failed := make(chan error, 10)
	t.Cleanup(func() {
		dev.Close(context.Background())
		reboots.Wait()
	})
	err = dev.SetMethodHandler("reboot", func(context.Context, *device.MethodRequest) (*device.MethodResponse, error) {
		if report {
			reboots.Go(func() {
				now := time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00")
				_, err := dev.UpdateReportedProperties(ctx, map[string]any{
					"iothubDM": map[string]any{"reboot": map[string]any{"lastReboot": now}},
				})
				if err != nil {
					failed <- err
				}
			})
		}
		return device.JSONResponse(200, map[string]string{"result": "Reboot started."})
	})
	require.NoError(t, err)
	require.NoError(t, dev.Connect(ctx))
	return failed
}

// reportedLastReboot is the twin's iothubDM.reboot.lastReboot, as the hub
// holds it.
func reportedLastReboot(t *testing.T, hub *iothubtest.Server, id string) any {
	t.Helper()
	dm, _ := hub.Twin(t, id).Reported["iothubDM"].(map[string]any)
	reboot, _ := dm["reboot"].(map[string]any)
	return reboot["lastReboot"]
}

func TestRun(t *testing.T) {
	ctx := exampletest.Context(t)
	hub := iothubtest.NewServer(t, nil)
	failed := rebootingDevice(t, hub, "dev1", true)
	cfg := config{ConnectionString: hub.ServiceConnectionString(), CAFile: exampletest.CAFile(t, hub), DeviceID: "dev1", Wait: 30 * time.Second}

	// The first reboot: lastReboot appears.
	var out exampletest.Buffer
	require.NoError(t, run(ctx, cfg, &out), "run")
	exampletest.WantInOrder(t, out.String(), "status:  200", `payload: {"result":"Reboot started."}`, "lastReboot: ")
	first := reportedLastReboot(t, hub, "dev1")
	require.IsType(t, "", first, "the hub's twin holds lastReboot")
	assert.Contains(t, out.String(), "lastReboot: "+first.(string)+"\n", "the printed lastReboot is the twin's")

	// The second: lastReboot changes, and run waits for the new value.
	out = exampletest.Buffer{}
	require.NoError(t, run(ctx, cfg, &out), "run")
	second := reportedLastReboot(t, hub, "dev1")
	assert.NotEqual(t, first, second, "a second reboot reports a new time")
	assert.Contains(t, out.String(), "lastReboot: "+second.(string)+"\n", "the printed lastReboot is the new one")
	select {
	case err := <-failed:
		require.NoError(t, err, "the device's report")
	default:
	}
}

// A device that answers but never reports is waited for -wait, and not
// mistaken for one that did because its twin holds an older lastReboot.
func TestDeviceThatDoesNotReport(t *testing.T) {
	ctx := exampletest.Context(t)
	hub := iothubtest.NewServer(t, nil)
	rebootingDevice(t, hub, "quiet", false)
	hub.UpdateReported(t, "quiet", map[string]any{"iothubDM": map[string]any{"reboot": map[string]any{"lastReboot": "2020-01-01T00:00:00.000Z"}}})
	cfg := config{ConnectionString: hub.ServiceConnectionString(), CAFile: exampletest.CAFile(t, hub), DeviceID: "quiet", Wait: time.Second}
	var out exampletest.Buffer
	require.NoError(t, run(ctx, cfg, &out), "run")
	exampletest.WantInOrder(t, out.String(), "status:  200", "lastReboot: not reported within 1s")
	assert.NotContains(t, out.String(), "2020-01-01", "the old lastReboot is not shown as the new one")

	// -wait 0 reads no twin at all.
	out = exampletest.Buffer{}
	cfg.Wait = 0
	require.NoError(t, run(ctx, cfg, &out), "run")
	assert.False(t, strings.Contains(out.String(), "lastReboot"), "output with -wait 0:\n%s", out.String())
}

func TestErrors(t *testing.T) {
	ctx := exampletest.Context(t)
	hub := iothubtest.NewServer(t, nil)
	hub.AddDevice(t, "offline")
	cfg := config{ConnectionString: hub.ServiceConnectionString(), CAFile: exampletest.CAFile(t, hub), Wait: 30 * time.Second}
	var out exampletest.Buffer
	cfg.DeviceID = "offline"
	assert.ErrorIs(t, run(ctx, cfg, &out), service.ErrDeviceNotOnline, "offline device")
	cfg.DeviceID = "no-such-device"
	assert.ErrorIs(t, run(ctx, cfg, &out), service.ErrDeviceNotFound, "unknown device")
}
