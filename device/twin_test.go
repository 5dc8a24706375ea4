package device_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/internal/apiversion"
	"github.com/iothub-go/iothub/internal/faultproxy"
	"github.com/iothub-go/iothub/internal/testutil/hubcall"
	"github.com/iothub-go/iothub/internal/testutil/statuslog"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/transport"
	"github.com/iothub-go/iothub/transport/http"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// patchDesired sets desired properties through the hub's service API, as a
// back-end does, and returns the new desired $version.
func patchDesired(t *testing.T, hub *iothubtest.Server, id, desired string) int64 {
	t.Helper()
	path := "/twins/" + id + "?api-version=" + apiversion.Current
	if dev, mod, ok := strings.Cut(id, "/"); ok {
		path = "/twins/" + dev + "/modules/" + mod + "?api-version=" + apiversion.Current
	}
	st, body := hubcall.Service(t, hub, "PATCH", path, `{"properties":{"desired":`+desired+`}}`)
	require.Equal(t, 200, st, "PATCH twin: %s", body)
	var tw struct {
		Properties struct {
			Desired struct {
				Version int64 `json:"$version"`
			}
		}
	}
	require.NoError(t, json.Unmarshal([]byte(body), &tw), "twin JSON")
	return tw.Properties.Desired.Version
}

// serviceTwin reads the twin through the hub's service API.
func serviceTwin(t *testing.T, hub *iothubtest.Server, deviceID string) map[string]any {
	t.Helper()
	st, body := hubcall.Service(t, hub, "GET", "/twins/"+deviceID+"?api-version="+apiversion.Current, "")
	require.Equal(t, 200, st, "GET twin: %s", body)
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &m))
	return m
}

func raw(s string) json.RawMessage { return json.RawMessage(s) }

func TestTwinGetAndReport(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		c := newClient(t, hub, cs, &device.ClientOptions{Transport: tr}, nil)
		ctx := testCtx(t)

		tw, err := c.GetTwin(ctx)
		require.NoError(t, err, "GetTwin")
		assert.Equal(t, int64(1), tw.Desired.Version, "desired $version of a new twin")
		assert.Equal(t, int64(1), tw.Reported.Version, "reported $version of a new twin")
		assert.Empty(t, tw.Desired.Properties)
		assert.Empty(t, tw.Reported.Properties)

		v1, err := c.UpdateReportedProperties(ctx, map[string]any{
			"iothubDM": map[string]any{"reboot": map[string]any{"lastReboot": "2026-12-05T10:00:00Z"}},
			"battery":  55,
			"temp":     21.5,
		})
		require.NoError(t, err, "UpdateReportedProperties")
		assert.Equal(t, int64(2), v1, "the first patch's version")
		v2, err := c.UpdateReportedProperties(ctx, map[string]any{"battery": nil, "fw": "1.2"})
		require.NoError(t, err)
		assert.Equal(t, v1+1, v2, "versions count up")

		tw, err = c.GetTwin(ctx)
		require.NoError(t, err)
		assert.Equal(t, v2, tw.Reported.Version)
		assert.JSONEq(t, `{"reboot":{"lastReboot":"2026-12-05T10:00:00Z"}}`, string(tw.Reported.Properties["iothubDM"]))
		assert.JSONEq(t, `21.5`, string(tw.Reported.Properties["temp"]))
		assert.JSONEq(t, `"1.2"`, string(tw.Reported.Properties["fw"]))
		assert.NotContains(t, tw.Reported.Properties, "battery", "null deletes")

		// The back-end sees what the device reported.
		props := serviceTwin(t, hub, "dev1")["properties"].(map[string]any)
		rep := props["reported"].(map[string]any)
		assert.Equal(t, "2026-12-05T10:00:00Z", rep["iothubDM"].(map[string]any)["reboot"].(map[string]any)["lastReboot"])
		assert.EqualValues(t, v2, rep["$version"])
	})
}

func TestTwinModule(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		hub.AddDevice(t, "dev1")
		cs := hub.AddModule(t, "dev1", "mod1")
		c := newClient(t, hub, cs, &device.ClientOptions{Transport: tr}, nil)
		ctx := testCtx(t)
		v, err := c.UpdateReportedProperties(ctx, map[string]any{"who": "module"})
		require.NoError(t, err)
		patchDesired(t, hub, "dev1/mod1", `{"interval":5}`)
		tw, err := c.GetTwin(ctx)
		require.NoError(t, err)
		assert.Equal(t, v, tw.Reported.Version)
		assert.JSONEq(t, `"module"`, string(tw.Reported.Properties["who"]))
		assert.JSONEq(t, `5`, string(tw.Desired.Properties["interval"]))
		// The device's own twin is untouched.
		dev := serviceTwin(t, hub, "dev1")["properties"].(map[string]any)
		assert.NotContains(t, dev["reported"], "who")
	})
}

func TestTwinInvalidPatch(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	cs := hub.AddDevice(t, "dev1")
	c := newClient(t, hub, cs, nil, nil)
	ctx := testCtx(t)
	deep := map[string]any{"x": 1}
	for i := 0; i < device.MaxTwinDepth+1; i++ {
		deep = map[string]any{"n": deep}
	}
	big := map[string]any{}
	for i := 0; i < 9; i++ {
		big[fmt.Sprint("k", i)] = strings.Repeat("x", 4000) // 9 × 4 KB > 32 KB
	}
	for name, patch := range map[string]map[string]any{
		"nil patch":       nil,
		"dot in key":      {"a.b": 1},
		"dollar key":      {"$version": 3},
		"space in key":    {"a b": 1},
		"control char":    {"a\x01": 1},
		"empty key":       {"": 1},
		"nested bad key":  {"a": map[string]any{"b.c": 1}},
		"null in array":   {"a": []any{1, nil}},
		"long string":     {"s": strings.Repeat("x", 4*1024+1)},
		"too deep":        {"d": deep},
		"too large":       big,
		"not JSON (func)": {"f": func() {}},
	} {
		_, err := c.UpdateReportedProperties(ctx, patch)
		assert.ErrorIs(t, err, device.ErrInvalidPatch, name)
	}
	// The twin is untouched.
	tw, err := c.GetTwin(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(1), tw.Reported.Version, "a refused patch changed the twin")
}

func TestTwinOverHTTPSUnsupported(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	cs := hub.AddDevice(t, "dev1")
	c := newClient(t, hub, cs, &device.ClientOptions{Transport: http.New(nil)}, nil)
	ctx := testCtx(t)
	_, err := c.GetTwin(ctx)
	assert.ErrorIs(t, err, device.ErrUnsupported)
	_, err = c.UpdateReportedProperties(ctx, map[string]any{"a": 1})
	assert.ErrorIs(t, err, device.ErrUnsupported)
	err = c.SetDesiredPropertiesHandler(func(context.Context, device.TwinProperties) {})
	assert.ErrorIs(t, err, device.ErrUnsupported)
	assert.ErrorContains(t, err, "MQTT or AMQP", "the error says what to use instead")
}

func TestModelIDOption(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	cs := hub.AddDevice(t, "dev1")
	for _, bad := range []string{"thermostat", "dtmi:com:example:Thermostat", "dtmi:com:example:Thermostat;0", "dtmi:1com:x;1", "dtmi:com:example_:T;1"} {
		_, err := device.NewClientFromConnectionString(cs, &device.ClientOptions{ModelID: bad})
		assert.ErrorIs(t, err, device.ErrInvalidOptions, "ModelID %q", bad)
	}
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		const model = "dtmi:com:example:Thermostat;1"
		newClient(t, hub, cs, &device.ClientOptions{Transport: tr, ModelID: model}, nil)
		assert.Equal(t, model, serviceTwin(t, hub, "dev1")["modelId"], "the twin's modelId")
	})
}

// desiredLog records what a desired handler receives.
type desiredLog struct {
	mu      sync.Mutex
	patches []device.TwinProperties
	changed chan struct{}
}

func newDesiredLog() *desiredLog { return &desiredLog{changed: make(chan struct{}, 1)} }

func (l *desiredLog) handle(_ context.Context, p device.TwinProperties) {
	l.mu.Lock()
	l.patches = append(l.patches, p)
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

func (l *desiredLog) all() []device.TwinProperties {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]device.TwinProperties(nil), l.patches...)
}

// waitVersion waits until a patch of version v has arrived.
func (l *desiredLog) waitVersion(t *testing.T, v int64) []device.TwinProperties {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		ps := l.all()
		if len(ps) > 0 && ps[len(ps)-1].Version >= v {
			return ps
		}
		select {
		case <-l.changed:
		case <-deadline:
			require.FailNow(t, fmt.Sprintf("desired version %d never arrived; got %+v", v, ps))
		}
	}
}

// checkOrdered fails unless versions strictly increase.
func checkOrdered(t *testing.T, ps []device.TwinProperties) {
	t.Helper()
	for i := 1; i < len(ps); i++ {
		require.Greater(t, ps[i].Version, ps[i-1].Version, "patch %d came out of order or twice: %+v", i, ps)
	}
}

func TestDesiredPatchesInOrder(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		cs := hub.AddDevice(t, "dev1")
		first := patchDesired(t, hub, "dev1", `{"interval":1,"mode":"eco"}`)
		log := newDesiredLog()
		newClient(t, hub, cs, &device.ClientOptions{Transport: tr}, func(c *device.Client) {
			require.NoError(t, c.SetDesiredPropertiesHandler(log.handle))
		})
		ps := log.waitVersion(t, first)
		require.Len(t, ps, 1, "the first call holds the whole section")
		assert.JSONEq(t, `1`, string(ps[0].Properties["interval"]))
		assert.JSONEq(t, `"eco"`, string(ps[0].Properties["mode"]))

		var last int64
		for i := 2; i <= 20; i++ {
			last = patchDesired(t, hub, "dev1", fmt.Sprintf(`{"interval":%d}`, i))
		}
		last = patchDesired(t, hub, "dev1", `{"mode":null}`)
		ps = log.waitVersion(t, last)
		checkOrdered(t, ps)
		require.Len(t, ps, 21, "every patch once")
		for i, p := range ps[1:20] {
			assert.JSONEq(t, fmt.Sprint(i+2), string(p.Properties["interval"]), "patch %d", i)
		}
		assert.JSONEq(t, `null`, string(ps[20].Properties["mode"]), "a deletion arrives as null")
	})
}

// TestDesiredAcrossReconnects changes desired properties while the device
// is offline (a proxy refuses it): none may be lost, none delivered twice,
// and what changed offline arrives as one patch after the reconnect.
func TestDesiredAcrossReconnects(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		proxy, err := faultproxy.New(hub.Addr())
		require.NoError(t, err)
		t.Cleanup(func() { proxy.Close() })
		cs := strings.Replace(hub.AddDevice(t, "dev1"), "GatewayHostName="+hub.Addr(), "GatewayHostName="+proxy.Addr(), 1)
		log := newDesiredLog()
		status := statuslog.New()
		c := newClient(t, hub, cs, &device.ClientOptions{Transport: tr, OnConnectionStatus: status.Record}, func(c *device.Client) {
			require.NoError(t, c.SetDesiredPropertiesHandler(log.handle))
		})
		log.waitVersion(t, 1)
		status.WaitFor(t, device.ConnectionStateConnected)

		state := map[string]any{}
		patch := func(p string) int64 {
			var m map[string]any
			require.NoError(t, json.Unmarshal([]byte(p), &m))
			for k, v := range m {
				if v == nil {
					delete(state, k)
				} else {
					state[k] = v
				}
			}
			return patchDesired(t, hub, "dev1", p)
		}
		var offline []int64 // the last version set during each offline spell
		var last int64
		for round := 0; round < 3; round++ {
			proxy.SetRefuse(true)
			proxy.Cut()
			status.WaitFor(t, device.ConnectionStateConnecting)
			for i := 0; i < 4; i++ {
				last = patch(fmt.Sprintf(`{"r%d":%d,"k":%d}`, round, i, round*10+i))
			}
			if round > 0 {
				last = patch(fmt.Sprintf(`{"r%d":null}`, round-1)) // a deletion made offline
			}
			offline = append(offline, last)
			proxy.SetRefuse(false)
			status.WaitFor(t, device.ConnectionStateConnected)
			log.waitVersion(t, last)
			last = patch(fmt.Sprintf(`{"online%d":true}`, round)) // pushed live
			log.waitVersion(t, last)
		}
		ps := log.all()
		checkOrdered(t, ps)
		// Each offline spell arrives as one patch at its last version.
		for _, v := range offline {
			found := false
			for i, p := range ps {
				if p.Version == v {
					found = true
					assert.Greater(t, p.Version-ps[i-1].Version, int64(1), "the changes made offline up to version %d came one by one: %+v", v, ps)
				}
			}
			assert.True(t, found, "no patch at version %d, the last one made offline: %+v", v, ps)
		}
		// Applying every patch in order gives the back-end's state.
		got := map[string]any{}
		for _, p := range ps {
			for k, v := range p.Properties {
				var x any
				require.NoError(t, json.Unmarshal(v, &x))
				if x == nil {
					delete(got, k)
				} else {
					got[k] = x
				}
			}
		}
		assert.Equal(t, state, got, "the patches, applied in order, do not give the twin's desired properties")
		tw, err := c.GetTwin(testCtx(t))
		require.NoError(t, err)
		assert.Equal(t, last, tw.Desired.Version)
	})
}

func TestDesiredHandlerMayClose(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	cs := hub.AddDevice(t, "dev1")
	c, err := device.NewClientFromConnectionString(cs, &device.ClientOptions{TLSConfig: hub.TLSConfig(), Retry: fastRetry})
	require.NoError(t, err)
	closed := make(chan error, 1)
	require.NoError(t, c.SetDesiredPropertiesHandler(func(ctx context.Context, p device.TwinProperties) {
		if p.Version > 1 {
			closed <- c.Close(context.Background())
		}
	}))
	require.NoError(t, c.Connect(testCtx(t)))
	patchDesired(t, hub, "dev1", `{"stop":true}`)
	select {
	case err := <-closed:
		assert.NoError(t, err, "Close from the desired handler")
	case <-time.After(30 * time.Second):
		require.FailNow(t, "Close from the desired handler hung")
	}
	_, err = c.GetTwin(testCtx(t))
	assert.True(t, errors.Is(err, device.ErrClosed), "GetTwin after Close: %v", err)
}

// TestTwinConcurrentReports sends reported patches from many goroutines at
// once: each is applied whole, each gets its own version, and the twin
// holds them all.
func TestTwinConcurrentReports(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport.Transport) {
		hub := iothubtest.NewServer(t, nil)
		c := newClient(t, hub, hub.AddDevice(t, "dev1"), &device.ClientOptions{Transport: tr}, nil)
		ctx := testCtx(t)
		const n = 32
		versions := make(chan int64, n)
		errs := make(chan error, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, err := c.UpdateReportedProperties(ctx, map[string]any{fmt.Sprint("k", i): map[string]any{"i": i, "sq": i * i}})
				if err != nil {
					errs <- err
					return
				}
				versions <- v
			}()
		}
		wg.Wait()
		close(errs)
		close(versions)
		for err := range errs {
			require.NoError(t, err)
		}
		seen := map[int64]bool{}
		for v := range versions {
			assert.False(t, seen[v], "version %d returned twice", v)
			seen[v] = true
		}
		assert.Len(t, seen, n)
		tw := hub.Twin(t, "dev1")
		assert.Equal(t, int64(n+1), tw.ReportedVersion, "reported $version after %d patches", n)
		for i := 0; i < n; i++ {
			assert.Equal(t, map[string]any{"i": float64(i), "sq": float64(i * i)}, tw.Reported[fmt.Sprint("k", i)], "patch %d", i)
		}
	})
}
