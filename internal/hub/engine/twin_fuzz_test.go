package engine

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
)

// FuzzTwinPatch feeds arbitrary bodies to the twin document parser through
// every write: a service PATCH (the body as is, and as tags and desired
// properties), a service PUT and a device's reported patch. None may
// panic; a refusal is 400004 or 403100 and changes nothing; after an
// accepted write the twin still renders as valid JSON whose sections keep
// the document rules and size limits, with $metadata mirroring the data,
// and the rendered twin can be sent back with PUT. The seed corpus is in
// testdata/fuzz/FuzzTwinPatch, so `go test` runs it.
func FuzzTwinPatch(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		c := &clock{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
		e, err := New(Config{HostName: "h.azure-devices.net", Now: c.now})
		require.NoError(t, err)
		defer e.Close()
		_, herr := e.PutDevice("dev1", Device{}, "")
		require.Nil(t, herr)
		dev := auth.Identity{DeviceID: "dev1"}
		// Something to merge into.
		_, herr = e.UpdateTwin("dev1", "", []byte(`{"tags":{"a":{"b":1}},"properties":{"desired":{"a":{"b":[1,"x"]},"c":true}}}`), "")
		require.Nil(t, herr)
		_, herr = e.UpdateReported(dev, []byte(`{"a":{"b":"y"},"d":2.5}`))
		require.Nil(t, herr)

		wrapped := append(append(append(append([]byte(`{"tags":`), body...), `,"properties":{"desired":`...), body...), `}}`...)
		for _, op := range []struct {
			name string
			do   func() *Error
		}{
			{"PATCH", func() *Error { _, herr := e.UpdateTwin("dev1", "", body, ""); return herr }},
			{"PATCH sections", func() *Error { _, herr := e.UpdateTwin("dev1", "", wrapped, "*"); return herr }},
			{"reported", func() *Error { _, herr := e.UpdateReported(dev, body); return herr }},
			{"PUT", func() *Error { _, herr := e.ReplaceTwin("dev1", "", body, ""); return herr }},
		} {
			c.add(time.Second)
			before := fuzzTwin(t, e)
			herr := op.do()
			after := fuzzTwin(t, e)
			if herr != nil {
				require.Contains(t, []int{CodeArgumentInvalid, CodeDeviceModelMaxPropertiesExceeded}, herr.Code, "%s refused with %v", op.name, herr)
				require.NotEmpty(t, herr.Message, "%s refused without a message", op.name)
				require.Equal(t, before, after, "a refused %s changed the twin", op.name)
				continue
			}
			checkFuzzTwin(t, e, op.name, after)
		}
		// A twin read from the hub can be sent back as it is.
		read := fuzzTwin(t, e)
		_, herr = e.ReplaceTwin("dev1", "", read, "")
		require.Nil(t, herr, "PUT of the twin as read: %s", read)
		checkFuzzTwin(t, e, "PUT of the twin as read", fuzzTwin(t, e))
	})
}

// fuzzTwin returns the service's view of dev1's twin.
func fuzzTwin(t *testing.T, e *Engine) []byte {
	tw, herr := e.GetTwin("dev1", "")
	require.Nil(t, herr)
	b, err := json.Marshal(tw)
	require.NoError(t, err)
	return b
}

// checkFuzzTwin checks a rendered twin and the device's view of it.
func checkFuzzTwin(t *testing.T, e *Engine, op string, rendered []byte) {
	require.True(t, json.Valid(rendered), "%s: the twin is not valid JSON: %s", op, rendered)
	var tw struct {
		Tags       map[string]any
		Properties struct{ Desired, Reported map[string]any }
	}
	dec := json.NewDecoder(bytes.NewReader(rendered))
	dec.UseNumber()
	require.NoError(t, dec.Decode(&tw), "%s", op)
	checkFuzzSection(t, op, "tags", tw.Tags, MaxTagsSize, false)
	checkFuzzSection(t, op, "desired", tw.Properties.Desired, MaxPropertiesSize, true)
	checkFuzzSection(t, op, "reported", tw.Properties.Reported, MaxPropertiesSize, true)
	b, herr := e.DeviceTwin(auth.Identity{DeviceID: "dev1"})
	require.Nil(t, herr)
	require.True(t, json.Valid(b), "%s: the device's view is not valid JSON: %s", op, b)
}

// checkFuzzSection checks one rendered section: its data keeps the rules
// and the size limit, and $metadata (for properties) mirrors the data.
func checkFuzzSection(t *testing.T, op, name string, m map[string]any, limit int, props bool) {
	data := map[string]any{}
	for k, v := range m {
		data[k] = v
	}
	if props {
		require.Contains(t, m, "$version", "%s: %s has no $version", op, name)
		meta, ok := m["$metadata"].(map[string]any)
		require.True(t, ok, "%s: %s has no $metadata", op, name)
		delete(data, "$version")
		delete(data, "$metadata")
		checkFuzzMetadata(t, op, name, data, meta)
	}
	require.NoError(t, checkTwinValue(name, data, 0, false), "%s: stored %s breaks the rules", op, name)
	require.LessOrEqual(t, valueSize(data), limit, "%s: %s is over its limit", op, name)
}

// checkFuzzMetadata checks that meta has $lastUpdated and an entry per
// member of data, recursively for objects, and nothing else.
func checkFuzzMetadata(t *testing.T, op, path string, data, meta map[string]any) {
	_, ok := meta["$lastUpdated"].(string)
	require.True(t, ok, "%s: %s has no $lastUpdated in %v", op, path, meta)
	for k, v := range meta {
		if k == "$lastUpdated" || k == "$lastUpdatedVersion" {
			continue
		}
		_, ok := data[k]
		require.True(t, ok, "%s: $metadata of %s has %q, which the data has not", op, path, k)
		_, ok = v.(map[string]any)
		require.True(t, ok, "%s: $metadata of %s.%s is not an object", op, path, k)
	}
	for k, v := range data {
		mm, ok := meta[k].(map[string]any)
		require.True(t, ok, "%s: %s.%s has no $metadata", op, path, k)
		if obj, isObj := v.(map[string]any); isObj {
			checkFuzzMetadata(t, op, path+"."+k, obj, mm)
		} else {
			_, ok := mm["$lastUpdated"].(string)
			require.True(t, ok, "%s: %s.%s has no $lastUpdated", op, path, k)
		}
	}
}
