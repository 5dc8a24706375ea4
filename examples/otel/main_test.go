package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/examples/internal/exampletest"
)

// span is the part of stdouttrace's JSON that the test checks.
type span struct {
	Name        string
	SpanContext struct{ TraceID, SpanID string }
	Parent      struct{ TraceID, SpanID string }
	Status      struct{ Code, Description string }
	Attributes  []struct {
		Key   string
		Value struct{ Value any }
	}
}

func (s span) attr(key string) any {
	for _, a := range s.Attributes {
		if a.Key == key {
			return a.Value.Value
		}
	}
	return nil
}

func decodeSpans(t *testing.T, b []byte) []span {
	t.Helper()
	var spans []span
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		var s span
		err := dec.Decode(&s)
		if errors.Is(err, io.EOF) {
			return spans
		}
		require.NoError(t, err, "stdouttrace output is not a stream of JSON spans")
		spans = append(spans, s)
	}
}

func named(spans []span, name string) []span {
	var out []span
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func TestSpans(t *testing.T) {
	var out exampletest.Buffer
	var spanOut bytes.Buffer
	require.NoError(t, run(exampletest.Context(t), &out, &spanOut), out.String())
	exampletest.WantInOrder(t, out.String(),
		"service: registered traced-device",
		"device:  traced-device connected",
		`service: reboot answered 200 {"result":"Reboot started."}`,
		`service: firmwareUpdate answered 400 {"error":"firmwareUpdate needs a fwPackageURI"}`,
		"service: no-such-device: 404 DeviceNotFound",
	)
	spans := decodeSpans(t, spanOut.Bytes())

	// The service client: one span per call, azcore's HTTP span under it.
	require.Len(t, named(spans, "Client.CreateDevice"), 1, "CreateDevice spans")
	invokes := named(spans, "Client.InvokeDeviceMethod")
	require.Len(t, invokes, 3, "one span per InvokeDeviceMethod")
	for i, s := range invokes[:2] {
		assert.NotEqual(t, "Error", s.Status.Code, "invocation %d answered by the device", i)
		assert.Nil(t, s.attr("iothub.error_code"), "invocation %d has no hub error code", i)
	}
	failed := invokes[2]
	assert.Equal(t, "Error", failed.Status.Code, "the call for an unknown device")
	assert.Equal(t, "DeviceNotFound", failed.attr("iothub.error_code"), "the hub's error code on the span")
	var children int
	for _, s := range spans {
		if s.Parent.SpanID == failed.SpanContext.SpanID && s.Parent.TraceID == failed.SpanContext.TraceID {
			children++
		}
	}
	assert.Equal(t, 1, children, "azcore's HTTP span is the child of the invocation's span")

	// The device: WrapHandler's span around each handler.
	reboot := named(spans, "method reboot")
	require.Len(t, reboot, 1, "device spans for reboot")
	assert.EqualValues(t, 200, reboot[0].attr("iothub.method.status"))
	assert.NotEqual(t, "Error", reboot[0].Status.Code)
	fw := named(spans, "method firmwareUpdate")
	require.Len(t, fw, 1, "device spans for firmwareUpdate")
	assert.EqualValues(t, 400, fw[0].attr("iothub.method.status"))
	assert.Equal(t, "Error", fw[0].Status.Code)

	// No secret reaches a span.
	assert.NotContains(t, spanOut.String(), "SharedAccessKey", "a span shows a key")
	assert.NotContains(t, spanOut.String(), "sig=", "a span shows a token")
}
