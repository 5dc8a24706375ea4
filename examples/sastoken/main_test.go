package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/examples/internal/exampletest"
)

func TestRun(t *testing.T) {
	for _, cs := range []string{
		"", // a demo device with a random key
		"HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=aW90aHViLXRlc3Qta2V5LTAzLTAxMjM0NTY3ODlhYmNkZWY=",
	} {
		var out exampletest.Buffer
		require.NoError(t, run(cs, &out), "run(%q)", cs)
		exampletest.WantInOrder(t, out.String(), "SharedAccessKey=<redacted>", "sig=<redacted>", "resource:", "for this identity: true", "expires:")
		assert.NotContains(t, out.String(), "aW90aHViLXRlc3Qta2V5", "the key was printed")
	}
	var out exampletest.Buffer
	assert.ErrorIs(t, run("HostName=h;DeviceId=d;SharedAccessKey=not base64!", &out), auth.ErrInvalidConnectionString, "bad connection string")
}
