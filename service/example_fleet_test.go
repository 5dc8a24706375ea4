package service_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// Invoke a method on the devices a query selects: the connected pumps in
// Berlin, at most 10 calls started a second.
func ExampleClient_InvokeDeviceMethodsWhere() {
	hub, err := iothubtest.Start(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	hc := hub.HTTPClient()
	defer hc.CloseIdleConnections()
	opts := &service.ClientOptions{}
	opts.Transport = hc
	c, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(), opts)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	for _, d := range []struct{ id, site string }{{"pump-1", "berlin"}, {"pump-2", "paris"}, {"pump-3", "berlin"}} {
		stop := startEchoDevice(hub, hub.AddDevice(exampleT{}, d.id))
		defer stop()
		if _, err := c.UpdateTwin(ctx, d.id, &service.TwinPatch{Tags: map[string]any{"site": d.site}}, nil); err != nil {
			log.Fatal(err)
		}
	}
	hub.AddDevice(exampleT{}, "pump-4") // in Berlin too, but never connected
	if _, err := c.UpdateTwin(ctx, "pump-4", &service.TwinPatch{Tags: map[string]any{"site": "berlin"}}, nil); err != nil {
		log.Fatal(err)
	}

	results, err := c.InvokeDeviceMethodsWhere(ctx, "tags.site = 'berlin' AND connectionState = 'Connected'",
		service.CloudToDeviceMethod{MethodName: "stop", Payload: "now"}, &service.InvokeManyOptions{RateLimit: 10})
	if err != nil {
		log.Fatal(err) // the query failed: nothing was invoked
	}
	for _, r := range results {
		var re *service.ResponseError
		switch {
		case errors.As(r.Err, &re):
			fmt.Println(r.DeviceID, "failed:", re.ErrorCode)
		case r.Err != nil:
			fmt.Println(r.DeviceID, "failed:", r.Err)
		default:
			fmt.Println(r.DeviceID, r.Result.Status, string(r.Result.Payload))
		}
	}
	// Output:
	// pump-1 200 "now"
	// pump-3 200 "now"
}
