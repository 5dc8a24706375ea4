package service_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// BenchmarkInvokeDeviceMethod measures a whole direct method round trip
// through the local hub: client pipeline, HTTPS, the hub, MQTT to a paho
// echo device and back. Allocations are the client's and the in-process
// hub's together.
//
//	go test -run '^$' -bench InvokeDeviceMethod -benchmem ./service
func BenchmarkInvokeDeviceMethod(b *testing.B) {
	hub := iothubtest.NewServer(b, nil)
	echoDevice(b, hub, hub.AddDevice(b, "bench"), nil, 200)
	c, _ := newClient(b, hub, "", nil)
	ctx := context.Background()
	for _, bc := range []struct {
		name    string
		payload any
	}{
		{"null", nil},
		{"raw 1KB", json.RawMessage(`"` + string(make1K()) + `"`)},
		{"map", map[string]any{"delaySeconds": 5, "reason": "update"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			m := service.CloudToDeviceMethod{MethodName: "reboot", Payload: bc.payload, ResponseTimeout: 10 * time.Second}
			b.ReportAllocs()
			for b.Loop() {
				res, err := c.InvokeDeviceMethod(ctx, "bench", m)
				if err != nil || res.Status != 200 {
					b.Fatalf("invoke: %v %v", res, err)
				}
			}
		})
	}
}

func make1K() []byte {
	p := make([]byte, 1022)
	for i := range p {
		p[i] = 'a' + byte(i%26)
	}
	return p
}
