package main

import (
	"testing"

	"github.com/iothub-go/iothub/examples/internal/exampletest"
	"github.com/stretchr/testify/require"
)

func TestRun(t *testing.T) {
	var out exampletest.Buffer
	require.NoError(t, run(exampletest.Context(t), &out), "run:\n%s", out.String())
	exampletest.WantInOrder(t, out.String(),
		"module:  gateway-1/sensor connected over mqtt",
		"module:  gateway-1/updater connected over mqtt",
		`service: gateway-1/sensor getReading -> 200 {"celsius":21.5}`,
		`service: gateway-1/updater getVersion -> 200 {"version":"1.4.2"}`,
		`service: gateway-1/sensor getVersion -> 501 {"error":`,
	)
}
