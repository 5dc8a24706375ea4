package service_test

import (
	"context"
	"fmt"
	"log"

	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// Find the twins of the devices in Berlin, a page at a time.
func ExampleClient_NewQueryPager() {
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
	for _, d := range []struct{ id, site string }{{"sensor-1", "berlin"}, {"sensor-2", "paris"}, {"sensor-3", "berlin"}} {
		hub.AddDevice(exampleT{}, d.id)
		if _, err := c.UpdateTwin(ctx, d.id, &service.TwinPatch{Tags: map[string]any{"site": d.site}}, nil); err != nil {
			log.Fatal(err)
		}
	}

	pager := c.NewQueryPager("SELECT * FROM devices WHERE tags.site = 'berlin'", &service.QueryOptions{PageSize: 100})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			log.Fatal(err)
		}
		twins, err := page.Twins()
		if err != nil {
			log.Fatal(err)
		}
		for _, tw := range twins {
			fmt.Println(tw.DeviceID, string(tw.Tags["site"]))
		}
	}
	// Output:
	// sensor-1 "berlin"
	// sensor-3 "berlin"
}
