package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/examples/internal/exampletest"
	"github.com/iothub-go/iothub/iothubtest"
)

// Fifty sensors share one AMQP connection and each answers for itself.
func TestGateway(t *testing.T) {
	var out exampletest.Buffer
	require.NoError(t, run(exampletest.Context(t), config{Sensors: 50}, &out), out.String())
	exampletest.WantInOrder(t, out.String(),
		"hub:     started in-process",
		"gateway: 50 sensors connected as 50 identities over 1 AMQP connection(s)",
		`service: gw-sensor-0000 answered 200 {"celsius":18,"sensor":"gw-sensor-0000"}`,
		"service: readTemperature on 50 sensors: 50 answered 200",
	)
}

// Against an existing hub the gateway creates the identities it lacks and
// reuses those it finds; 250 sensors at 100 per connection take three.
func TestGatewayExistingHub(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	hub.AddDevice(t, "gw-sensor-0007")
	var out exampletest.Buffer
	err := run(exampletest.Context(t), config{Sensors: 250, PerConn: 100, ServiceConnectionString: hub.ServiceConnectionString(), CAFile: exampletest.CAFile(t, hub)}, &out)
	require.NoError(t, err, out.String())
	assert.Contains(t, out.String(), "gateway: 250 sensors connected as 250 identities over 3 AMQP connection(s)")
	assert.Contains(t, out.String(), "service: readTemperature on 250 sensors: 250 answered 200")
	assert.NotContains(t, out.String(), "started in-process")
}
