package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
)

// -h prints every flag's default; a connection string taken from the
// environment is not one, so no key reaches the help text.
func TestHelpShowsNoEnvironmentSecret(t *testing.T) {
	const key = "c2VjcmV0LWtleS10aGF0LW11c3Qtbm90LWxlYWsK"
	t.Setenv("IOTHUB_SERVICE_CONNECTION_STRING", "HostName=h.example;SharedAccessKeyName=iothubowner;SharedAccessKey="+key)
	t.Setenv("IOTHUB_DEVICE_CONNECTION_STRING", "HostName=h.example;DeviceId=d;SharedAccessKey="+key)
	for _, args := range [][]string{
		{"query", "-h"}, {"invoke", "-h"}, {"job", "show", "-h"}, {"device", "-h"}, {"send", "-h"},
		{"device-identity", "show", "-h"}, {"module-identity", "list", "-h"},
	} {
		var stdout, stderr bytes.Buffer
		run(args, &stdout, &stderr)
		assert.NotContains(t, stdout.String()+stderr.String(), key, "%v", args)
		assert.Contains(t, stdout.String()+stderr.String(), "connection-string", "%v printed its flags", args)
	}
}
