package main

import (
	"context"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

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
			if err := hub.WaitOnline(ctx, "dev1"); err != nil {
				t.Fatalf("device never came online: %v\n%s", err, out.String())
			}

			svc, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(),
				&service.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: hub.HTTPClient()}})
			if err != nil {
				t.Fatal(err)
			}
			res, err := svc.InvokeDeviceMethod(ctx, "dev1", service.CloudToDeviceMethod{MethodName: "reboot", Payload: map[string]int{"delay": 1}, ResponseTimeout: 30 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != 200 || string(res.Payload) != `{"result":"Reboot started."}` {
				t.Errorf("got %d %s", res.Status, res.Payload)
			}

			cancel()
			if err := <-done; err != nil {
				t.Fatalf("run: %v", err)
			}
			exampletest.WantInOrder(t, out.String(), "waiting for direct method calls", `reboot requested (payload {"delay":1})`)
			exampletest.WantInOrder(t, out.String(), "connection: connecting", "connection: connected") // reported asynchronously
		})
	}
}

func TestNoConnectionString(t *testing.T) {
	if err := run(context.Background(), config{}, &exampletest.Buffer{}); err == nil {
		t.Error("no connection string: no error")
	}
}
