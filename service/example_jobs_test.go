package service_test

import (
	"context"
	"fmt"
	"log"
	"sort"
	"time"

	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// Reboot every device in Berlin with one job: the hub calls the method on
// each device the condition selects and records each outcome.
func ExampleClient_ScheduleDeviceMethod() {
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
	for _, d := range []struct{ id, site string }{{"gw-1", "berlin"}, {"gw-2", "paris"}, {"gw-3", "berlin"}} {
		stop := startEchoDevice(hub, hub.AddDevice(exampleT{}, d.id))
		defer stop()
		if _, err := c.UpdateTwin(ctx, d.id, &service.TwinPatch{Tags: map[string]any{"site": d.site}}, nil); err != nil {
			log.Fatal(err)
		}
	}

	job, err := c.ScheduleDeviceMethod(ctx, "reboot-berlin", "tags.site = 'berlin'",
		service.CloudToDeviceMethod{MethodName: "reboot", Payload: map[string]int{"delay": 5}}, nil)
	if err != nil {
		log.Fatal(err)
	}
	job, err = c.WaitJob(ctx, job.ID, &service.WaitJobOptions{Interval: 50 * time.Millisecond})
	if err != nil {
		log.Fatal(err)
	}
	s := job.Statistics
	fmt.Printf("%s: %d devices, %d succeeded, %d failed\n", job.Status, s.DeviceCount, s.SucceededCount, s.FailedCount)

	// Each device's outcome.
	pager := c.NewQueryPager("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'reboot-berlin'", nil)
	var outcomes []string
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			log.Fatal(err)
		}
		djs, err := page.DeviceJobs()
		if err != nil {
			log.Fatal(err)
		}
		for _, dj := range djs {
			outcomes = append(outcomes, fmt.Sprintf("%s %s %d %s", dj.DeviceID, dj.Status, dj.MethodResult.Status, dj.MethodResult.Payload))
		}
	}
	sort.Strings(outcomes)
	for _, o := range outcomes {
		fmt.Println(o)
	}
	// Output:
	// completed: 2 devices, 2 succeeded, 0 failed
	// gw-1 completed 200 {"delay":5}
	// gw-3 completed 200 {"delay":5}
}
