package main

import (
	"context"
	"errors"
	"testing"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/examples/internal/exampletest"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

func TestRun(t *testing.T) {
	ctx := exampletest.Context(t)
	hub := iothubtest.NewServer(t, nil)
	dev, err := device.NewClientFromConnectionString(hub.AddDevice(t, "dev1"), &device.ClientOptions{TLSConfig: hub.TLSConfig()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close(context.Background()) })
	err = dev.SetMethodHandler("reboot", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
		return device.JSONResponse(200, map[string]string{"result": "Reboot started."})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	hub.AddDevice(t, "offline")
	cfg := config{ConnectionString: hub.ServiceConnectionString(), CAFile: exampletest.CAFile(t, hub)}

	var out exampletest.Buffer
	cfg.DeviceID = "dev1"
	if err := run(ctx, cfg, &out); err != nil {
		t.Fatalf("run: %v", err)
	}
	exampletest.WantInOrder(t, out.String(), "status:  200", `payload: {"result":"Reboot started."}`)

	cfg.DeviceID = "offline"
	if err := run(ctx, cfg, &out); !errors.Is(err, service.ErrDeviceNotOnline) {
		t.Errorf("offline device: got %v, want ErrDeviceNotOnline", err)
	}
}
