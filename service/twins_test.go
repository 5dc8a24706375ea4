package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// wantEmptySection checks a section with no properties at version v.
func wantEmptySection(t *testing.T, p service.TwinProperties, v int64, name string) {
	t.Helper()
	assert.Equal(t, v, p.Version, "%s $version", name)
	assert.Empty(t, p.Properties, "%s properties", name)
	assert.True(t, json.Valid(p.Metadata), "%s $metadata %q", name, p.Metadata)
}

func TestTwinGetUpdateReplace(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c, tries := newClient(t, hub, "", nil)
	ctx := context.Background()
	d, err := c.CreateDevice(ctx, &service.Device{DeviceID: "dev1"})
	require.NoError(t, err)

	// A new twin: version 1, empty sections at $version 1.
	v1, err := c.GetTwin(ctx, "dev1")
	require.NoError(t, err)
	assert.Equal(t, "dev1", v1.DeviceID)
	assert.Empty(t, v1.ModuleID)
	assert.NotEmpty(t, v1.ETag, "etag")
	assert.Equal(t, d.ETag, v1.DeviceETag, "the twin's deviceEtag is the identity's etag")
	assert.Equal(t, int64(2), v1.Version, "version")
	assert.Equal(t, service.DeviceStatusEnabled, v1.Status)
	assert.Equal(t, service.DeviceConnectionStateDisconnected, v1.ConnectionState)
	assert.Equal(t, service.AuthenticationTypeSAS, v1.AuthenticationType)
	assert.Empty(t, v1.Tags, "tags")
	wantEmptySection(t, v1.Desired, 1, "desired")
	wantEmptySection(t, v1.Reported, 1, "reported")

	// Patch tags and desired properties, unconditionally.
	v2, err := c.UpdateTwin(ctx, "dev1", &service.TwinPatch{
		Tags:    map[string]any{"site": "lyon", "floor": 2},
		Desired: map[string]any{"fw": map[string]string{"version": "1.2"}, "interval": 30},
	}, nil)
	require.NoError(t, err)
	assert.Equal(t, int64(3), v2.Version, "version after a patch")
	assert.NotEqual(t, v1.ETag, v2.ETag, "etag after a patch")
	assert.JSONEq(t, `"lyon"`, string(v2.Tags["site"]))
	assert.JSONEq(t, `2`, string(v2.Tags["floor"]))
	assert.Equal(t, int64(2), v2.Desired.Version, "desired $version")
	assert.JSONEq(t, `{"version":"1.2"}`, string(v2.Desired.Properties["fw"]))
	assert.JSONEq(t, `30`, string(v2.Desired.Properties["interval"]))
	assert.Contains(t, string(v2.Desired.Metadata), `"fw"`, "desired $metadata")
	wantEmptySection(t, v2.Reported, 1, "reported")
	got, err := c.GetTwin(ctx, "dev1")
	require.NoError(t, err)
	assert.Equal(t, v2, got, "GetTwin after UpdateTwin")

	// nil deletes; objects merge; the current etag matches, quoted or not.
	v3, err := c.UpdateTwin(ctx, "dev1", &service.TwinPatch{
		Tags:    map[string]any{"floor": nil},
		Desired: map[string]any{"fw": map[string]any{"url": "https://x"}},
	}, &service.UpdateTwinOptions{IfMatch: `"` + v2.ETag + `"`})
	require.NoError(t, err)
	assert.NotContains(t, v3.Tags, "floor", "deleted tag")
	assert.JSONEq(t, `{"version":"1.2","url":"https://x"}`, string(v3.Desired.Properties["fw"]), "merged desired fw")
	// A stale etag is refused.
	_, err = c.UpdateTwin(ctx, "dev1", &service.TwinPatch{Tags: map[string]any{"x": 1}}, &service.UpdateTwinOptions{IfMatch: v2.ETag})
	checkResponseError(t, err, 412, 412001, service.ErrorCodePreconditionFailed, service.ErrPreconditionFailed)
	v4, err := c.UpdateTwin(ctx, "dev1", &service.TwinPatch{Tags: map[string]any{"x": 1}}, &service.UpdateTwinOptions{IfMatch: "*"})
	require.NoError(t, err, `IfMatch "*"`)

	// The device reports; the back end reads it.
	rv := hub.UpdateReported(t, "dev1", map[string]any{"iothubDM": map[string]any{"reboot": map[string]string{"lastReboot": "2026-12-05T10:00:00Z"}}})
	assert.Equal(t, int64(2), rv, "reported $version")
	v5, err := c.GetTwin(ctx, "dev1")
	require.NoError(t, err)
	assert.Equal(t, int64(2), v5.Reported.Version)
	var dm struct {
		Reboot struct {
			LastReboot time.Time `json:"lastReboot"`
		} `json:"reboot"`
	}
	require.NoError(t, json.Unmarshal(v5.Reported.Properties["iothubDM"], &dm))
	assert.Equal(t, time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC), dm.Reboot.LastReboot.UTC())
	assert.Greater(t, v5.Version, v4.Version, "a reported update changes the twin's version")

	// Get, modify, replace: reported properties come back but are not sent.
	v5.Tags = map[string]json.RawMessage{"site": json.RawMessage(`"paris"`)}
	v5.Desired.Properties = map[string]json.RawMessage{"mode": json.RawMessage(`"eco"`)}
	v6, err := c.ReplaceTwin(ctx, "dev1", v5, nil)
	require.NoError(t, err)
	assert.Equal(t, map[string]json.RawMessage{"site": json.RawMessage(`"paris"`)}, v6.Tags, "tags after ReplaceTwin")
	assert.Equal(t, map[string]json.RawMessage{"mode": json.RawMessage(`"eco"`)}, v6.Desired.Properties, "desired after ReplaceTwin")
	assert.Equal(t, v5.Desired.Version+1, v6.Desired.Version, "desired $version after ReplaceTwin")
	assert.Equal(t, v5.Reported.Properties, v6.Reported.Properties, "reported after ReplaceTwin")
	// v5's etag is stale now.
	_, err = c.ReplaceTwin(ctx, "dev1", v5, nil)
	checkResponseError(t, err, 412, 412001, service.ErrorCodePreconditionFailed, service.ErrPreconditionFailed)
	_, err = c.ReplaceTwin(ctx, "dev1", v6, &service.UpdateOptions{IfMatch: v5.ETag})
	require.ErrorIs(t, err, service.ErrPreconditionFailed, "IfMatch wins over the twin's etag")
	// A twin built from scratch needs IfMatch; nothing is sent without it.
	n := tries.count()
	_, err = c.ReplaceTwin(ctx, "dev1", &service.Twin{Tags: map[string]json.RawMessage{"a": json.RawMessage(`1`)}}, nil)
	require.ErrorIs(t, err, service.ErrArgumentInvalid, "ReplaceTwin without an etag")
	assert.Equal(t, n, tries.count(), "requests sent without an etag")
	v7, err := c.ReplaceTwin(ctx, "dev1", &service.Twin{}, &service.UpdateOptions{IfMatch: "*"})
	require.NoError(t, err, `ReplaceTwin with IfMatch "*"`)
	assert.Empty(t, v7.Tags, "tags after an empty replacement")
	assert.Empty(t, v7.Desired.Properties, "desired after an empty replacement")

	// What iothubtest shows is what the client reads.
	ht := hub.Twin(t, "dev1")
	assert.Equal(t, v7.ETag, ht.ETag, "iothubtest's view of the twin")
	assert.Equal(t, v7.Version, ht.Version, "iothubtest's view of the twin")
	assert.Empty(t, ht.Desired, "iothubtest's view of the twin")
}

func TestTwinNotFound(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c, _ := newClient(t, hub, "", nil)
	ctx := context.Background()
	_, err := c.GetTwin(ctx, "nope")
	checkResponseError(t, err, 404, 404001, service.ErrorCodeDeviceNotFound, service.ErrDeviceNotFound)
	_, err = c.UpdateTwin(ctx, "nope", &service.TwinPatch{Tags: map[string]any{"a": 1}}, nil)
	checkResponseError(t, err, 404, 404001, service.ErrorCodeDeviceNotFound, service.ErrDeviceNotFound)
	_, err = c.ReplaceTwin(ctx, "nope", &service.Twin{}, &service.UpdateOptions{IfMatch: "*"})
	checkResponseError(t, err, 404, 404001, service.ErrorCodeDeviceNotFound, service.ErrDeviceNotFound)
	_, err = c.GetModuleTwin(ctx, "nope", "m")
	checkResponseError(t, err, 404, 404001, service.ErrorCodeDeviceNotFound, service.ErrDeviceNotFound)
	hub.AddDevice(t, "dev1")
	_, err = c.GetModuleTwin(ctx, "dev1", "m")
	checkResponseError(t, err, 404, 404010, service.ErrorCodeModuleNotFound, service.ErrModuleNotFound)
	_, err = c.UpdateModuleTwin(ctx, "dev1", "m", &service.TwinPatch{}, nil)
	checkResponseError(t, err, 404, 404010, service.ErrorCodeModuleNotFound, service.ErrModuleNotFound)
}

func TestModuleTwins(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c, _ := newClient(t, hub, "", nil)
	ctx := context.Background()
	hub.AddDevice(t, "edge")
	hub.AddModule(t, "edge", "m1")

	m1, err := c.GetModuleTwin(ctx, "edge", "m1")
	require.NoError(t, err)
	assert.Equal(t, "edge", m1.DeviceID)
	assert.Equal(t, "m1", m1.ModuleID)
	assert.Equal(t, int64(2), m1.Version)
	wantEmptySection(t, m1.Desired, 1, "module desired")

	m2, err := c.UpdateModuleTwin(ctx, "edge", "m1", &service.TwinPatch{Desired: map[string]any{"rate": 5}}, &service.UpdateTwinOptions{IfMatch: m1.ETag})
	require.NoError(t, err)
	assert.JSONEq(t, `5`, string(m2.Desired.Properties["rate"]))
	_, err = c.UpdateModuleTwin(ctx, "edge", "m1", &service.TwinPatch{Desired: map[string]any{"rate": 6}}, &service.UpdateTwinOptions{IfMatch: m1.ETag})
	require.ErrorIs(t, err, service.ErrPreconditionFailed)

	m2.Tags = map[string]json.RawMessage{"role": json.RawMessage(`"gateway"`)}
	m2.Desired.Properties = nil
	m3, err := c.ReplaceModuleTwin(ctx, "edge", "m1", m2, nil)
	require.NoError(t, err)
	assert.JSONEq(t, `"gateway"`, string(m3.Tags["role"]))
	assert.Empty(t, m3.Desired.Properties, "desired after the replacement")

	// The device's twin is separate from its module's.
	dev, err := c.GetTwin(ctx, "edge")
	require.NoError(t, err)
	assert.Empty(t, dev.Tags)
	assert.Equal(t, int64(1), dev.Desired.Version)
	// A module's twin cannot be replaced as another's.
	_, err = c.ReplaceModuleTwin(ctx, "edge", "m2", m3, nil)
	require.ErrorIs(t, err, service.ErrArgumentInvalid)
	_, err = c.ReplaceTwin(ctx, "edge", m3, nil)
	require.ErrorIs(t, err, service.ErrArgumentInvalid)
	assert.Equal(t, m3.ETag, hub.Twin(t, "edge/m1").ETag, "iothubtest's view of the module twin")
}

// Property names and values the hub refuses are refused before anything
// is sent, with errors matching ErrArgumentInvalid.
func TestTwinValidation(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	hub.AddDevice(t, "dev1")
	c, tries := newClient(t, hub, "", nil)
	ctx := context.Background()
	deep := map[string]any{"v": 1}
	for range 11 { // the 11th object level below the section
		deep = map[string]any{"a": deep}
	}
	for name, patch := range map[string]*service.TwinPatch{
		"nil":                  nil,
		"dot":                  {Tags: map[string]any{"a.b": 1}},
		"dollar":               {Desired: map[string]any{"$version": 3}},
		"space":                {Desired: map[string]any{"a": map[string]any{"b c": 1}}},
		"control character":    {Tags: map[string]any{"a\x7f": 1}},
		"C1 control character": {Tags: map[string]any{"a\u0085": 1}},
		"empty name":           {Tags: map[string]any{"": 1}},
		"long name":            {Tags: map[string]any{strings.Repeat("k", 1025): 1}},
		"too deep":             {Desired: deep},
		"long string":          {Desired: map[string]any{"s": strings.Repeat("x", 4097)}},
		"null in an array":     {Desired: map[string]any{"list": []any{1, nil}}},
		"not JSON":             {Desired: map[string]any{"f": func() {}}},
		"bad raw JSON":         {Desired: map[string]any{"r": json.RawMessage(`{`)}},
	} {
		_, err := c.UpdateTwin(ctx, "dev1", patch, nil)
		assert.ErrorIs(t, err, service.ErrArgumentInvalid, "UpdateTwin: %s", name)
	}
	for name, call := range map[string]func() error{
		"GetTwin no id":       func() error { _, err := c.GetTwin(ctx, ""); return err },
		"GetTwin bad id":      func() error { _, err := c.GetTwin(ctx, "a b"); return err },
		"UpdateTwin no id":    func() error { _, err := c.UpdateTwin(ctx, "", &service.TwinPatch{}, nil); return err },
		"ReplaceTwin nil":     func() error { _, err := c.ReplaceTwin(ctx, "dev1", nil, nil); return err },
		"ReplaceTwin no etag": func() error { _, err := c.ReplaceTwin(ctx, "dev1", &service.Twin{}, nil); return err },
		"ReplaceTwin other device": func() error {
			_, err := c.ReplaceTwin(ctx, "dev1", &service.Twin{DeviceID: "dev2", ETag: "x"}, nil)
			return err
		},
		"ReplaceTwin bad key": func() error {
			_, err := c.ReplaceTwin(ctx, "dev1", &service.Twin{Tags: map[string]json.RawMessage{"a": json.RawMessage(`{"b.c":1}`)}}, &service.UpdateOptions{IfMatch: "*"})
			return err
		},
		"ReplaceTwin bad JSON": func() error {
			_, err := c.ReplaceTwin(ctx, "dev1", &service.Twin{Desired: service.TwinProperties{Properties: map[string]json.RawMessage{"a": json.RawMessage(`nope`)}}}, &service.UpdateOptions{IfMatch: "*"})
			return err
		},
		"GetModuleTwin no module":     func() error { _, err := c.GetModuleTwin(ctx, "dev1", ""); return err },
		"UpdateModuleTwin no device":  func() error { _, err := c.UpdateModuleTwin(ctx, "", "m", &service.TwinPatch{}, nil); return err },
		"ReplaceModuleTwin no module": func() error { _, err := c.ReplaceModuleTwin(ctx, "dev1", "", &service.Twin{}, nil); return err },
	} {
		assert.ErrorIs(t, call(), service.ErrArgumentInvalid, name)
	}
	assert.Equal(t, 0, tries.count(), "requests sent for invalid calls")

	// The error names the offending property, never a value.
	_, err := c.UpdateTwin(ctx, "dev1", &service.TwinPatch{Tags: map[string]any{"a.b": "secret-value"}}, nil)
	require.ErrorContains(t, err, `"a.b"`)
	assert.NotContains(t, err.Error(), "secret-value")

	// Sizes are the hub's to judge: tags over 8 KB come back as its 403100.
	big := map[string]any{}
	for _, k := range []string{"a", "b", "c"} {
		big[k] = strings.Repeat("x", 4000)
	}
	_, err = c.UpdateTwin(ctx, "dev1", &service.TwinPatch{Tags: big}, nil)
	checkResponseError(t, err, 403, 403100, service.ErrorCodeDeviceModelMaxPropertiesExceeded, service.ErrTwinTooLarge)
	// An empty patch is allowed.
	_, err = c.UpdateTwin(ctx, "dev1", &service.TwinPatch{}, nil)
	require.NoError(t, err, "an empty patch")
	// Ten levels of objects below the section are the documented limit:
	// the client sends them.
	nested := map[string]any{"v": 1}
	for range 10 {
		nested = map[string]any{"a": nested}
	}
	n := tries.count()
	_, err = c.UpdateTwin(ctx, "dev1", &service.TwinPatch{Tags: nested}, nil)
	if err != nil {
		var re *service.ResponseError
		require.ErrorAs(t, err, &re, "the client refused 10 levels of objects")
	}
	assert.Equal(t, n+1, tries.count(), "requests sent for 10 levels of objects")
}

// The hub refuses what the client would have refused, and what a service
// patch may not contain, with its own 400.
func TestTwinHubRefusesRawRequests(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	hub.AddDevice(t, "dev1")
	hc := hubClient(t, hub)
	cs, err := auth.ParseServiceConnectionString(hub.ServiceConnectionString())
	require.NoError(t, err)
	tok, err := auth.SignSAS(cs.HostName, cs.SharedAccessKeyName, cs.SharedAccessKey, time.Now().Add(time.Hour))
	require.NoError(t, err)
	send := func(method, body string) (int, string, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, "https://"+hub.Addr()+"/twins/dev1?api-version="+service.DefaultAPIVersion, bytes.NewBufferString(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", tok)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("If-Match", "*")
		res, err := hc.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return res.StatusCode, res.Header.Get("iothub-errorcode"), b
	}
	for name, body := range map[string]string{
		"dot in a tag":           `{"tags":{"a.b":1}}`,
		"dollar in desired":      `{"properties":{"desired":{"$x":1}}}`,
		"space nested":           `{"properties":{"desired":{"a":{"b c":1}}}}`,
		"reported and a bad tag": `{"tags":{"a.b":1},"properties":{"reported":{"x":1}}}`,
		"not an object":          `[1]`,
	} {
		for _, method := range []string{http.MethodPatch, http.MethodPut} {
			status, code, b := send(method, body)
			assert.Equal(t, http.StatusBadRequest, status, "%s %s: %s", method, name, b)
			assert.Equal(t, "ArgumentInvalid", code, "%s %s: iothub-errorcode", method, name)
			assert.Contains(t, string(b), "ErrorCode:ArgumentInvalid;", "%s %s: body", method, name)
		}
	}
	// Nothing changed.
	tw := hub.Twin(t, "dev1")
	assert.Equal(t, int64(2), tw.Version, "version after refused requests")
	assert.Empty(t, tw.Reported, "reported after refused requests")
}

func TestTwinJSON(t *testing.T) {
	hubJSON := `{"deviceId":"dev1","moduleId":"","etag":"AAAAAAAAAAc=","deviceEtag":"MzE4NzUxOTU1","status":"disabled","statusReason":"stolen",
	"statusUpdateTime":"0001-01-01T00:00:00","connectionState":"Connected","lastActivityTime":"2024-05-01T10:11:13.1234567Z",
	"cloudToDeviceMessageCount":2,"authenticationType":"selfSigned","x509Thumbprint":{"primaryThumbprint":"AB","secondaryThumbprint":null},
	"modelId":"dtmi:com:example:Thermostat;1","version":7,"tags":{"site":{"city":"lyon"}},
	"properties":{"desired":{"fw":"1.2","$metadata":{"$lastUpdated":"2024-05-01T10:11:12Z","$lastUpdatedVersion":3},"$version":3},
	"reported":{"temp":21.5,"$metadata":{"$lastUpdated":"2024-05-01T10:11:12Z"},"$version":4}},
	"capabilities":{"iotEdge":true},"deviceScope":"ms-azure-iot-edge://e-1","parentScopes":["ms-azure-iot-edge://p-1"]}`
	var tw service.Twin
	require.NoError(t, json.Unmarshal([]byte(hubJSON), &tw))
	assert.Equal(t, "dev1", tw.DeviceID)
	assert.Equal(t, "AAAAAAAAAAc=", tw.ETag)
	assert.Equal(t, "MzE4NzUxOTU1", tw.DeviceETag)
	assert.Equal(t, service.DeviceStatusDisabled, tw.Status)
	assert.Equal(t, "stolen", tw.StatusReason)
	assert.True(t, tw.StatusUpdatedTime.IsZero(), "the hub's zero time")
	assert.Equal(t, service.DeviceConnectionStateConnected, tw.ConnectionState)
	assert.Equal(t, time.Date(2024, 5, 1, 10, 11, 13, 123456700, time.UTC), tw.LastActivityTime)
	assert.Equal(t, 2, tw.CloudToDeviceMessageCount)
	assert.Equal(t, service.AuthenticationTypeSelfSigned, tw.AuthenticationType)
	assert.Equal(t, service.X509Thumbprint{PrimaryThumbprint: "AB"}, tw.X509Thumbprint)
	assert.Equal(t, "dtmi:com:example:Thermostat;1", tw.ModelID)
	assert.Equal(t, int64(7), tw.Version)
	assert.JSONEq(t, `{"city":"lyon"}`, string(tw.Tags["site"]))
	assert.Equal(t, int64(3), tw.Desired.Version)
	assert.Equal(t, map[string]json.RawMessage{"fw": json.RawMessage(`"1.2"`)}, tw.Desired.Properties)
	assert.JSONEq(t, `{"$lastUpdated":"2024-05-01T10:11:12Z","$lastUpdatedVersion":3}`, string(tw.Desired.Metadata))
	assert.Equal(t, int64(4), tw.Reported.Version)
	assert.Equal(t, `21.5`, string(tw.Reported.Properties["temp"]), "numbers keep the hub's text")
	assert.True(t, tw.Capabilities.IoTEdge)
	assert.Equal(t, "ms-azure-iot-edge://e-1", tw.DeviceScope)
	assert.Equal(t, []string{"ms-azure-iot-edge://p-1"}, tw.ParentScopes)

	// Round trip.
	b, err := json.Marshal(tw)
	require.NoError(t, err)
	var again service.Twin
	require.NoError(t, json.Unmarshal(b, &again))
	assert.Equal(t, tw, again, "round trip; JSON %s", b)
	b, err = json.Marshal(service.Twin{StatusUpdatedTime: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)})
	require.NoError(t, err)
	assert.Contains(t, string(b), `"statusUpdateTime":"2024-01-02T03:04:05Z"`, "IoT Hub's name for the status time")

	// A patch's JSON is the PATCH body.
	b, err = json.Marshal(service.TwinPatch{Tags: map[string]any{"a": nil}, Desired: map[string]any{"b": 1}})
	require.NoError(t, err)
	assert.JSONEq(t, `{"tags":{"a":null},"properties":{"desired":{"b":1}}}`, string(b))
	b, err = json.Marshal(service.TwinPatch{Desired: map[string]any{}})
	require.NoError(t, err)
	assert.JSONEq(t, `{"properties":{"desired":{}}}`, string(b))

	for _, bad := range []string{`[1]`, `{"properties":{"desired":[1]}}`, `{"properties":{"reported":{"$version":"x"}}}`} {
		assert.Error(t, json.Unmarshal([]byte(bad), &tw), "decoding %s", bad)
	}
}
