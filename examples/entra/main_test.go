package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/examples/internal/exampletest"
)

func TestRun(t *testing.T) {
	var out exampletest.Buffer
	require.NoError(t, run(exampletest.Context(t), &out), out.String())
	exampletest.WantInOrder(t, out.String(),
		"entra:   token requested for [https://iothubs.azure.net/.default]",
		"service: registered entra-device with an Entra token",
		"device:  entra-device connected over mqtt",
		`service: reboot -> 200 {"result":"Reboot started."}`,
	)
	// azcore caches the token: one request for the whole run.
	assert.Equal(t, 1, strings.Count(out.String(), "token requested"), "token requests")
}
