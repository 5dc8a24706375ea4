package iothubtest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// recordT is an iothubtest.TB that records a failure instead of ending
// the test, so that the accessors' refusals can be checked.
type recordT struct{ failed string }

func (*recordT) Helper()        {}
func (*recordT) Cleanup(func()) {}
func (r *recordT) Fatalf(format string, args ...any) {
	if r.failed == "" {
		r.failed = fmt.Sprintf(format, args...)
	}
}

// fails runs f with a recordT and returns the failure it reported.
func fails(f func(iothubtest.TB)) string {
	var r recordT
	func() {
		defer func() { _ = recover() }() // an accessor may go on after Fatalf and trip over a nil twin
		f(&r)
	}()
	return r.failed
}

func TestTwinAccessors(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	hub.AddDevice(t, "dev1")
	hub.AddModule(t, "dev1", "m1")

	tw := hub.Twin(t, "dev1")
	assert.Equal(t, "dev1", tw.DeviceID)
	assert.Equal(t, int64(1), tw.Version)
	assert.Equal(t, int64(1), tw.Desired.Version)
	assert.Equal(t, int64(1), tw.Reported.Version)

	tw = hub.UpdateTwin(t, "dev1", service.TwinPatch{Tags: map[string]any{"site": "lyon"}, Desired: map[string]any{"rate": 5}})
	assert.Equal(t, int64(2), tw.Desired.Version)
	assert.JSONEq(t, `"lyon"`, string(tw.Tags["site"]))
	assert.JSONEq(t, `5`, string(tw.Desired.Properties["rate"]))

	assert.Equal(t, int64(2), hub.UpdateReported(t, "dev1", map[string]any{"temp": 21.5, "gone": nil}))
	assert.Equal(t, int64(3), hub.UpdateReported(t, "dev1", map[string]any{"temp": nil}))
	tw = hub.Twin(t, "dev1")
	assert.Equal(t, int64(3), tw.Reported.Version)
	assert.Empty(t, tw.Reported.Properties)
	assert.Equal(t, int64(4), tw.Version, "the twin's version counts every change")

	// Module twins are named deviceID/moduleID.
	m := hub.UpdateTwin(t, "dev1/m1", service.TwinPatch{Desired: map[string]any{"on": true}})
	assert.Equal(t, "m1", m.ModuleID)
	assert.Equal(t, m, hub.Twin(t, "dev1/m1"))
	assert.Empty(t, hub.Twin(t, "dev1").Desired.Properties["on"], "the module's patch reached the device twin")

	// The service client reads the same twin.
	hc := hub.HTTPClient()
	t.Cleanup(hc.CloseIdleConnections)
	opts := &service.ClientOptions{}
	opts.Transport = hc
	c, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(), opts)
	require.NoError(t, err)
	got, err := c.GetTwin(context.Background(), "dev1")
	require.NoError(t, err)
	assert.Equal(t, hub.Twin(t, "dev1"), got)

	// Refusals fail the test.
	for name, f := range map[string]func(iothubtest.TB){
		"unknown device": func(t iothubtest.TB) { hub.Twin(t, "nope") },
		"unknown module": func(t iothubtest.TB) { hub.Twin(t, "dev1/nope") },
		"bad tag":        func(t iothubtest.TB) { hub.UpdateTwin(t, "dev1", service.TwinPatch{Tags: map[string]any{"a.b": 1}}) },
		"patch not JSON": func(t iothubtest.TB) {
			hub.UpdateTwin(t, "dev1", service.TwinPatch{Tags: map[string]any{"f": func() {}}})
		},
		"bad reported key": func(t iothubtest.TB) { hub.UpdateReported(t, "dev1", map[string]any{"$x": 1}) },
		"nil reported":     func(t iothubtest.TB) { hub.UpdateReported(t, "dev1", nil) },
		"reported unknown": func(t iothubtest.TB) { hub.UpdateReported(t, "nope", map[string]any{"a": 1}) },
	} {
		msg := fails(f)
		assert.NotEmpty(t, msg, "%s: no failure", name)
		assert.Contains(t, msg, "iothubtest: ", "%s: %s", name, msg)
	}
	assert.Equal(t, int64(3), hub.Twin(t, "dev1").Reported.Version, "a refused patch changed the twin")
	assert.True(t, json.Valid(hub.Twin(t, "dev1").Desired.Metadata), "desired $metadata")
}
