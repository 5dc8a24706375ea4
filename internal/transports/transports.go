// Package transports maps the names the command line and the benchmark
// use for this SDK's method transports to the transports.
package transports

import (
	"fmt"

	"github.com/iothub-go/iothub/transport"
	"github.com/iothub-go/iothub/transport/amqp"
	"github.com/iothub-go/iothub/transport/http"
	"github.com/iothub-go/iothub/transport/mqtt"
)

// Names are the method transports, in the order they are listed to users.
var Names = []string{"mqtt", "mqtt-ws", "amqp", "amqp-ws"}

// ByName returns the transport called name with its default options.
func ByName(name string) (transport.Transport, error) {
	switch name {
	case "mqtt":
		return mqtt.New(nil), nil
	case "mqtt-ws":
		return mqtt.New(&mqtt.Options{WebSocket: true}), nil
	case "amqp":
		return amqp.New(nil), nil
	case "amqp-ws":
		return amqp.New(&amqp.Options{WebSocket: true}), nil
	case "http":
		return http.New(nil), nil
	}
	return nil, fmt.Errorf("unknown transport %q: want mqtt, mqtt-ws, amqp, amqp-ws or http", name)
}
