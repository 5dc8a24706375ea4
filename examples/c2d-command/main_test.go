package main

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/examples/internal/exampletest"
	"github.com/iothub-go/iothub/iothubtest"
)

// The command reaches the offline device once it connects, on every
// transport, and the back end gets positive feedback.
func TestEveryTransport(t *testing.T) {
	for _, tr := range []string{"mqtt", "mqtt-ws", "amqp", "amqp-ws", "http"} {
		t.Run(tr, func(t *testing.T) {
			var out exampletest.Buffer
			require.NoError(t, run(exampletest.Context(t), config{Transport: tr}, &out), out.String())
			exampletest.WantInOrder(t, out.String(),
				"hub:     started in-process",
				"service: queued a firmware update for thermostat-7, which is offline",
				"service: feedback for fw-update-",
				"from thermostat-7: Success",
			)
			assert.Contains(t, out.String(), `device:  received fw-update-`)
			assert.Contains(t, out.String(), `{"command":"firmwareUpdate","version":"2.1.0"}; applying it and completing the message`)
			assert.Contains(t, out.String(), "device:  connected over "+tr)
		})
	}
}

// With both connection strings, an existing hub and device are used (here
// a second local hub, trusted through -ca-file).
func TestExistingHub(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	devCS := hub.AddDevice(t, "sensor-9")
	var out exampletest.Buffer
	err := run(exampletest.Context(t), config{
		Transport:               "amqp",
		ServiceConnectionString: hub.ServiceConnectionString(),
		DeviceConnectionString:  devCS,
		CAFile:                  exampletest.CAFile(t, hub),
	}, &out)
	require.NoError(t, err, out.String())
	exampletest.WantInOrder(t, out.String(), "service: queued a firmware update for sensor-9", "from sensor-9: Success")
	assert.NotContains(t, out.String(), "started in-process")
	assert.Empty(t, hub.C2DQueue("sensor-9"), "the message was completed")

	err = run(context.Background(), config{Transport: "amqp", ServiceConnectionString: hub.ServiceConnectionString()}, &out)
	assert.ErrorContains(t, err, "give both")
	err = run(context.Background(), config{Transport: "carrier-pigeon"}, &out)
	assert.ErrorContains(t, err, "-transport")
}
