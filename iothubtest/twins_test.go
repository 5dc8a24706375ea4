package iothubtest_test

import (
	"context"
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
	assert.Equal(t, int64(2), tw.Version, "a new twin's version")
	assert.Equal(t, int64(1), tw.DesiredVersion)
	assert.Equal(t, int64(1), tw.ReportedVersion)
	assert.Empty(t, tw.Desired)
	assert.Empty(t, tw.Reported)
	assert.Empty(t, tw.Tags)

	assert.Equal(t, int64(2), hub.UpdateDesired(t, "dev1", map[string]any{"rate": 5, "mode": map[string]any{"eco": true}}))
	hub.UpdateTags(t, "dev1", map[string]any{"site": "lyon"})
	tw = hub.Twin(t, "dev1")
	assert.Equal(t, "lyon", tw.Tags["site"])
	assert.Equal(t, map[string]any{"rate": float64(5), "mode": map[string]any{"eco": true}}, tw.Desired)

	assert.Equal(t, int64(2), hub.UpdateReported(t, "dev1", map[string]any{"temp": 21.5, "gone": nil}))
	assert.Equal(t, int64(3), hub.UpdateReported(t, "dev1", map[string]any{"temp": nil}))
	tw = hub.Twin(t, "dev1")
	assert.Equal(t, int64(3), tw.ReportedVersion)
	assert.Empty(t, tw.Reported)

	// Module twins are named deviceID/moduleID.
	hub.UpdateDesired(t, "dev1/m1", map[string]any{"on": true})
	assert.Equal(t, true, hub.Twin(t, "dev1/m1").Desired["on"])
	assert.NotContains(t, hub.Twin(t, "dev1").Desired, "on", "the module's patch reached the device twin")

	// The service client reads the same twin.
	hc := hub.HTTPClient()
	t.Cleanup(hc.CloseIdleConnections)
	opts := &service.ClientOptions{}
	opts.Transport = hc
	c, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(), opts)
	require.NoError(t, err)
	got, err := c.GetTwin(context.Background(), "dev1")
	require.NoError(t, err)
	tw = hub.Twin(t, "dev1")
	assert.Equal(t, tw.ETag, got.ETag)
	assert.Equal(t, tw.Version, got.Version)
	assert.Equal(t, tw.DesiredVersion, got.Desired.Version)
	assert.JSONEq(t, `5`, string(got.Desired.Properties["rate"]))

	// Refusals fail the test.
	for name, f := range map[string]func(iothubtest.TB){
		"unknown device":   func(t iothubtest.TB) { hub.Twin(t, "nope") },
		"unknown module":   func(t iothubtest.TB) { hub.Twin(t, "dev1/nope") },
		"bad tag":          func(t iothubtest.TB) { hub.UpdateTags(t, "dev1", map[string]any{"a.b": 1}) },
		"nil desired":      func(t iothubtest.TB) { hub.UpdateDesired(t, "dev1", nil) },
		"patch not JSON":   func(t iothubtest.TB) { hub.UpdateDesired(t, "dev1", map[string]any{"f": func() {}}) },
		"bad reported key": func(t iothubtest.TB) { hub.UpdateReported(t, "dev1", map[string]any{"$x": 1}) },
		"nil reported":     func(t iothubtest.TB) { hub.UpdateReported(t, "dev1", nil) },
		"reported unknown": func(t iothubtest.TB) { hub.UpdateReported(t, "nope", map[string]any{"a": 1}) },
	} {
		msg := fails(f)
		assert.NotEmpty(t, msg, "%s: no failure", name)
		assert.Contains(t, msg, "iothubtest: ", "%s: %s", name, msg)
	}
	assert.Equal(t, int64(3), hub.Twin(t, "dev1").ReportedVersion, "a refused patch changed the twin")
}
