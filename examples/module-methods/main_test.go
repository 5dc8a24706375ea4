package main

import (
	"testing"

	"github.com/iothub-go/iothub/examples/internal/exampletest"
)

func TestRun(t *testing.T) {
	var out exampletest.Buffer
	if err := run(exampletest.Context(t), &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	exampletest.WantInOrder(t, out.String(),
		"module:  gateway-1/sensor connected over mqtt",
		"module:  gateway-1/updater connected over mqtt",
		`service: gateway-1/sensor getReading -> 200 {"celsius":21.5}`,
		`service: gateway-1/updater getVersion -> 200 {"version":"1.4.2"}`,
		`service: gateway-1/sensor getVersion -> 501 {"error":`,
	)
}
