package engine

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
)

// twinConn is a Conn that records desired-property notifications.
type twinConn struct {
	mu       sync.Mutex
	notes    []desiredPatch
	inFlight atomic.Int32
	overlap  atomic.Bool // SendDesired was entered while a call was running
	fail     atomic.Bool // SendDesired answers an error
}

func (c *twinConn) NewRequestID() string                           { return "1" }
func (c *twinConn) SendMethod(rid, name string, body []byte) error { return nil }
func (c *twinConn) Close(reason *Error)                            {}
func (c *twinConn) Protocol() string                               { return "test" }

func (c *twinConn) SendDesired(version int64, body []byte) error {
	if c.inFlight.Add(1) > 1 {
		c.overlap.Store(true)
	}
	defer c.inFlight.Add(-1)
	if c.fail.Load() {
		return fmt.Errorf("connection lost")
	}
	c.mu.Lock()
	c.notes = append(c.notes, desiredPatch{version, append([]byte(nil), body...)})
	c.mu.Unlock()
	return nil
}

func (c *twinConn) received() []desiredPatch {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]desiredPatch(nil), c.notes...)
}

// methodOnlyConn is a Conn that cannot deliver desired notifications.
type methodOnlyConn struct{}

func (methodOnlyConn) NewRequestID() string                           { return "1" }
func (methodOnlyConn) SendMethod(rid, name string, body []byte) error { return nil }
func (methodOnlyConn) Close(reason *Error)                            {}
func (methodOnlyConn) Protocol() string                               { return "test" }

// twinJSON renders a twin as the service receives it.
func twinJSON(t *testing.T, tw Twin) string {
	t.Helper()
	b, err := json.Marshal(tw)
	require.NoError(t, err, "marshal twin")
	return string(b)
}

// twinProps decodes a twin's properties.
func twinProps(t *testing.T, tw Twin) (desired, reported map[string]any) {
	t.Helper()
	var p struct{ Desired, Reported map[string]any }
	require.NoError(t, json.Unmarshal(tw.Properties, &p), "twin properties: %s", tw.Properties)
	return p.Desired, p.Reported
}

// mustPatch applies a PATCH and fails the test on a refusal.
func mustPatch(t *testing.T, e *Engine, deviceID, moduleID, body string) Twin {
	t.Helper()
	tw, herr := e.UpdateTwin(deviceID, moduleID, []byte(body), "")
	require.Nil(t, herr, "PATCH %s", body)
	return tw
}

func TestTwinNew(t *testing.T) {
	e, _ := newEventEngine(t)
	d, herr := e.GetDevice("dev1")
	require.Nil(t, herr)
	tw, herr := e.GetTwin("dev1", "")
	require.Nil(t, herr)
	// The shape of a new device twin captured from IoT Hub (Event Grid
	// DeviceCreated sample): etag 1, version 2, each section at $version 1
	// with a $metadata of $lastUpdated only.
	assert.JSONEq(t, `{
		"deviceId": "dev1",
		"etag": "AAAAAAAAAAE=",
		"deviceEtag": "`+d.ETag+`",
		"status": "enabled",
		"statusUpdateTime": "0001-01-01T00:00:00",
		"connectionState": "Disconnected",
		"lastActivityTime": "0001-01-01T00:00:00",
		"cloudToDeviceMessageCount": 0,
		"authenticationType": "sas",
		"x509Thumbprint": {"primaryThumbprint": null, "secondaryThumbprint": null},
		"modelId": "",
		"version": 2,
		"properties": {
			"desired": {"$metadata": {"$lastUpdated": "2026-05-01T12:00:00.0000000Z"}, "$version": 1},
			"reported": {"$metadata": {"$lastUpdated": "2026-05-01T12:00:00.0000000Z"}, "$version": 1}
		},
		"capabilities": {"iotEdge": false}
	}`, twinJSON(t, tw), "new device twin")

	m, herr := e.GetModule("dev1", "mod1")
	require.Nil(t, herr)
	mt, herr := e.GetTwin("dev1", "mod1")
	require.Nil(t, herr)
	// A new module twin captured with az iot hub monitor-events shows the
	// zero time in $lastUpdated.
	assert.JSONEq(t, `{
		"deviceId": "dev1",
		"moduleId": "mod1",
		"etag": "AAAAAAAAAAE=",
		"deviceEtag": "`+m.ETag+`",
		"status": "enabled",
		"statusUpdateTime": "0001-01-01T00:00:00",
		"connectionState": "Disconnected",
		"lastActivityTime": "0001-01-01T00:00:00",
		"cloudToDeviceMessageCount": 0,
		"authenticationType": "sas",
		"x509Thumbprint": {"primaryThumbprint": null, "secondaryThumbprint": null},
		"modelId": "",
		"version": 2,
		"properties": {
			"desired": {"$metadata": {"$lastUpdated": "0001-01-01T00:00:00Z"}, "$version": 1},
			"reported": {"$metadata": {"$lastUpdated": "0001-01-01T00:00:00Z"}, "$version": 1}
		}
	}`, twinJSON(t, mt), "new module twin")

	// The device's view: no tags, no metadata, no properties wrapper.
	for _, id := range []auth.Identity{{DeviceID: "dev1"}, {DeviceID: "dev1", ModuleID: "mod1"}} {
		b, herr := e.DeviceTwin(id)
		require.Nil(t, herr, "DeviceTwin %s", id)
		assert.JSONEq(t, `{"desired":{"$version":1},"reported":{"$version":1}}`, string(b), "device view of %s", id)
	}
}

func TestTwinPatchMerge(t *testing.T) {
	e, c := newEventEngine(t)
	t1 := c.now()
	tw := mustPatch(t, e, "dev1", "", `{
		"tags": {"site": {"city": "lyon", "floor": 2}, "kind": "sensor"},
		"properties": {"desired": {"fw": {"version": "1.2", "url": "x", "opts": {"a": true}}, "rate": 5, "list": [1, "two", {"three": 3}, [4]]}}
	}`)
	assert.JSONEq(t, `{"site":{"city":"lyon","floor":2},"kind":"sensor"}`, string(tw.Tags), "tags")
	desired, _ := twinProps(t, tw)
	assert.EqualValues(t, 2, desired["$version"], "desired $version after one patch")

	c.add(time.Minute)
	t2 := c.now()
	tw = mustPatch(t, e, "dev1", "", `{
		"tags": {"site": {"floor": null, "room": "b2"}, "kind": null, "missing": null},
		"properties": {"desired": {"fw": {"url": null, "opts": {"a": null}}, "gone": null, "empty": {"x": null}}}
	}`)
	// null deletes, objects merge, a null for a missing key creates
	// nothing, an object of nulls is stored as {}.
	assert.JSONEq(t, `{"site":{"city":"lyon","room":"b2"}}`, string(tw.Tags), "tags after a merge")
	var got struct {
		Desired  json.RawMessage
		Reported json.RawMessage
	}
	require.NoError(t, json.Unmarshal(tw.Properties, &got))
	ts1, ts2 := formatTime(t1), formatTime(t2)
	// $metadata: every object and leaf carries $lastUpdated and, in
	// desired, $lastUpdatedVersion; what the second patch touched (fw,
	// fw.opts, empty, the root) carries its time and version, the rest
	// keeps the first patch's.
	assert.JSONEq(t, `{
		"fw": {"version": "1.2", "opts": {}},
		"rate": 5,
		"list": [1, "two", {"three": 3}, [4]],
		"empty": {},
		"$metadata": {
			"$lastUpdated": "`+ts2+`", "$lastUpdatedVersion": 3,
			"fw": {
				"$lastUpdated": "`+ts2+`", "$lastUpdatedVersion": 3,
				"version": {"$lastUpdated": "`+ts1+`", "$lastUpdatedVersion": 2},
				"opts": {"$lastUpdated": "`+ts2+`", "$lastUpdatedVersion": 3}
			},
			"rate": {"$lastUpdated": "`+ts1+`", "$lastUpdatedVersion": 2},
			"list": {"$lastUpdated": "`+ts1+`", "$lastUpdatedVersion": 2},
			"empty": {"$lastUpdated": "`+ts2+`", "$lastUpdatedVersion": 3}
		},
		"$version": 3
	}`, string(got.Desired), "desired after a merge")
	// A leaf replaced by an object, and an object by a leaf.
	tw = mustPatch(t, e, "dev1", "", `{"properties":{"desired":{"rate":{"min":1},"fw":"latest"}}}`)
	desired, _ = twinProps(t, tw)
	assert.Equal(t, map[string]any{"min": 1.0}, desired["rate"], "leaf replaced by an object")
	assert.Equal(t, "latest", desired["fw"], "object replaced by a leaf")

	// Reported properties: the device's patch merges the same way, and
	// their metadata has no $lastUpdatedVersion.
	c.add(time.Minute)
	v, herr := e.UpdateReported(auth.Identity{DeviceID: "dev1"}, []byte(`{"a":{"b":1,"c":"x"},"n":null}`))
	require.Nil(t, herr)
	assert.EqualValues(t, 2, v, "reported $version")
	v, herr = e.UpdateReported(auth.Identity{DeviceID: "dev1"}, []byte(`{"a":{"c":null},"d":[true]}`))
	require.Nil(t, herr)
	assert.EqualValues(t, 3, v, "reported $version")
	tw, herr = e.GetTwin("dev1", "")
	require.Nil(t, herr)
	require.NoError(t, json.Unmarshal(tw.Properties, &got))
	ts3 := formatTime(c.now())
	assert.JSONEq(t, `{
		"a": {"b": 1},
		"d": [true],
		"$metadata": {
			"$lastUpdated": "`+ts3+`",
			"a": {"$lastUpdated": "`+ts3+`", "b": {"$lastUpdated": "`+ts3+`"}},
			"d": {"$lastUpdated": "`+ts3+`"}
		},
		"$version": 3
	}`, string(got.Reported), "reported after two patches")
	b, herr := e.DeviceTwin(auth.Identity{DeviceID: "dev1"})
	require.Nil(t, herr)
	assert.JSONEq(t, `{
		"desired": {"fw": "latest", "rate": {"min": 1}, "list": [1, "two", {"three": 3}, [4]], "empty": {}, "$version": 4},
		"reported": {"a": {"b": 1}, "d": [true], "$version": 3}
	}`, string(b), "device view")
}

func TestTwinVersionsAndETags(t *testing.T) {
	e, _ := newEventEngine(t)
	dev := auth.Identity{DeviceID: "dev1"}
	tw, herr := e.GetTwin("dev1", "")
	require.Nil(t, herr)
	version, etag := tw.Version, tw.ETag
	etags := map[string]bool{etag: true}
	step := func(name string, wantNewETag bool, op func() Twin) {
		t.Helper()
		tw := op()
		require.Greater(t, tw.Version, version, "%s: twin version", name)
		require.Equal(t, version+1, tw.Version, "%s: twin version", name)
		if wantNewETag {
			require.False(t, etags[tw.ETag], "%s: etag %s was used before", name, tw.ETag)
		} else {
			require.Equal(t, etag, tw.ETag, "%s changed the etag", name)
		}
		version, etag = tw.Version, tw.ETag
		etags[etag] = true
	}
	get := func() Twin {
		tw, herr := e.GetTwin("dev1", "")
		require.Nil(t, herr)
		return tw
	}
	for i := 0; i < 3; i++ {
		step("tags patch", true, func() Twin { return mustPatch(t, e, "dev1", "", fmt.Sprintf(`{"tags":{"n":%d}}`, i)) })
		step("desired patch", true, func() Twin {
			return mustPatch(t, e, "dev1", "", fmt.Sprintf(`{"properties":{"desired":{"n":%d}}}`, i))
		})
		// A reported update bumps the twin's version but not its etag, as
		// captured twins show (docs/hub-fidelity.md section 7).
		step("reported update", false, func() Twin {
			_, herr := e.UpdateReported(dev, []byte(fmt.Sprintf(`{"n":%d}`, i)))
			require.Nil(t, herr)
			return get()
		})
		step("replace", true, func() Twin {
			tw, herr := e.ReplaceTwin("dev1", "", []byte(`{"tags":{"r":1}}`), "")
			require.Nil(t, herr)
			return tw
		})
	}
	// The etag is base64 of an 8-byte big-endian counter.
	assert.Equal(t, "AAAAAAAAAAo=", etag, "etag after 9 service writes")

	// If-Match: the current etag in any form, and *, match; a stale one
	// is 412001 PreconditionFailed and changes nothing.
	stale := etag
	tw = mustPatch(t, e, "dev1", "", `{"tags":{"x":1}}`)
	for _, ifMatch := range []string{stale, `"` + stale + `"`, `W/"` + stale + `"`} {
		_, herr := e.UpdateTwin("dev1", "", []byte(`{"tags":{"x":2}}`), ifMatch)
		assertCode(t, CodePreconditionFailed, herr, "PATCH If-Match %s", ifMatch)
		assert.Equal(t, 412, herr.Status, "PATCH If-Match %s", ifMatch)
		_, herr = e.ReplaceTwin("dev1", "", []byte(`{}`), ifMatch)
		assertCode(t, CodePreconditionFailed, herr, "PUT If-Match %s", ifMatch)
	}
	assert.Equal(t, twinJSON(t, tw), twinJSON(t, get()), "a refused write changed the twin")
	for i, ifMatch := range []string{tw.ETag, `"` + tw.ETag + `"`, `W/"` + tw.ETag + `"`, "*", `"*"`, ""} {
		cur := get()
		if i < 3 {
			ifMatch = strings.ReplaceAll(ifMatch, tw.ETag, cur.ETag)
		}
		next, herr := e.UpdateTwin("dev1", "", []byte(fmt.Sprintf(`{"tags":{"x":%d}}`, i)), ifMatch)
		require.Nil(t, herr, "PATCH If-Match %q", ifMatch)
		require.NotEqual(t, cur.ETag, next.ETag, "PATCH If-Match %q kept the etag", ifMatch)
		_, herr = e.ReplaceTwin("dev1", "", []byte(`{"tags":{"y":1}}`), strings.ReplaceAll(ifMatch, cur.ETag, next.ETag))
		require.Nil(t, herr, "PUT If-Match %q", ifMatch)
	}
}

func TestTwinReplace(t *testing.T) {
	e, _ := newEventEngine(t)
	mustPatch(t, e, "dev1", "", `{"tags":{"a":1,"b":{"c":2}},"properties":{"desired":{"x":1,"y":{"z":2}}}}`)
	_, herr := e.UpdateReported(auth.Identity{DeviceID: "dev1"}, []byte(`{"r":1}`))
	require.Nil(t, herr)

	tw, herr := e.ReplaceTwin("dev1", "", []byte(`{"tags":{"b":{"d":3}},"properties":{"desired":{"y":{"w":4}}}}`), "")
	require.Nil(t, herr)
	assert.JSONEq(t, `{"b":{"d":3}}`, string(tw.Tags), "tags after PUT")
	desired, reported := twinProps(t, tw)
	assert.Equal(t, map[string]any{"w": 4.0}, desired["y"], "desired after PUT")
	assert.NotContains(t, desired, "x", "desired after PUT")
	assert.EqualValues(t, 3, desired["$version"], "desired $version after PUT")
	assert.Equal(t, 1.0, reported["r"], "PUT changed reported properties")

	// What the body leaves out is emptied.
	tw, herr = e.ReplaceTwin("dev1", "", []byte(`{}`), "")
	require.Nil(t, herr)
	assert.Empty(t, tw.Tags, "tags after an empty PUT")
	desired, reported = twinProps(t, tw)
	assert.Equal(t, []string{"$metadata", "$version"}, keys(desired), "desired after an empty PUT")
	assert.Equal(t, 1.0, reported["r"], "PUT changed reported properties")

	// A twin read from the hub can be sent back as it is (the .NET service
	// SDK does so): identity fields, $metadata, $version and reported
	// properties in the body are ignored, even when they differ.
	mustPatch(t, e, "dev1", "", `{"tags":{"t":"v"},"properties":{"desired":{"d":{"e":1}}}}`)
	read, herr := e.GetTwin("dev1", "")
	require.Nil(t, herr)
	body := strings.Replace(twinJSON(t, read), `"r":1`, `"r":2,"extra":true`, 1)
	require.Contains(t, body, `"extra":true`)
	for _, op := range []func(string, string, []byte, string) (Twin, *Error){e.ReplaceTwin, e.UpdateTwin} {
		back, herr := op("dev1", "", []byte(body), read.ETag)
		require.Nil(t, herr, "sending back a read twin")
		assert.Equal(t, read.Tags, back.Tags, "tags after sending back the twin")
		desired, reported = twinProps(t, back)
		assert.Equal(t, map[string]any{"e": 1.0}, desired["d"], "desired after sending back the twin")
		assert.Equal(t, 1.0, reported["r"], "a service body changed reported properties")
		assert.NotContains(t, reported, "extra", "a service body changed reported properties")
		read = back
		body = twinJSON(t, back)
	}
	// An id that names another twin is refused.
	_, herr = e.ReplaceTwin("dev1", "", []byte(`{"deviceId":"dev2"}`), "")
	assertCode(t, CodeArgumentInvalid, herr, "PUT with another deviceId")
	_, herr = e.UpdateTwin("dev1", "mod1", []byte(`{"moduleId":"mod2"}`), "")
	assertCode(t, CodeArgumentInvalid, herr, "PATCH with another moduleId")
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestTwinModulesAndDeletion(t *testing.T) {
	e, _ := newEventEngine(t)
	mod := auth.Identity{DeviceID: "dev1", ModuleID: "mod1"}
	mt := mustPatch(t, e, "dev1", "mod1", `{"tags":{"m":1},"properties":{"desired":{"rate":5}}}`)
	assert.Equal(t, "mod1", mt.ModuleID)
	_, herr := e.UpdateReported(mod, []byte(`{"ok":true}`))
	require.Nil(t, herr)
	// The device's twin is separate.
	dt, herr := e.GetTwin("dev1", "")
	require.Nil(t, herr)
	assert.Empty(t, dt.Tags, "device tags")
	desired, reported := twinProps(t, dt)
	assert.NotContains(t, desired, "rate", "device desired")
	assert.NotContains(t, reported, "ok", "device reported")
	b, herr := e.DeviceTwin(mod)
	require.Nil(t, herr)
	assert.JSONEq(t, `{"desired":{"rate":5,"$version":2},"reported":{"ok":true,"$version":2}}`, string(b), "module's view")

	// Unknown identities.
	for _, id := range []auth.Identity{{DeviceID: "nobody"}, {DeviceID: "nobody", ModuleID: "mod1"}, {DeviceID: "dev1", ModuleID: "nobody"}} {
		want := CodeDeviceNotFound
		if id.DeviceID == "dev1" {
			want = CodeModuleNotFound
		}
		checkTwinRefusals(t, e, id, want)
	}
	// A deleted module, then a deleted device, has no twin; a re-created
	// one starts afresh.
	require.Nil(t, e.DeleteModule("dev1", "mod1", ""))
	checkTwinRefusals(t, e, mod, CodeModuleNotFound)
	mustPatch(t, e, "dev1", "", `{"tags":{"d":1}}`)
	require.Nil(t, e.DeleteDevice("dev1", ""))
	checkTwinRefusals(t, e, auth.Identity{DeviceID: "dev1"}, CodeDeviceNotFound)
	_, herr = e.PutDevice("dev1", Device{}, "")
	require.Nil(t, herr)
	dt, herr = e.GetTwin("dev1", "")
	require.Nil(t, herr)
	assert.Empty(t, dt.Tags, "tags of a re-created device")
	assert.EqualValues(t, 2, dt.Version, "version of a re-created device's twin")
}

// checkTwinRefusals checks that every twin operation on id fails with code.
func checkTwinRefusals(t *testing.T, e *Engine, id auth.Identity, code int) {
	t.Helper()
	_, herr := e.GetTwin(id.DeviceID, id.ModuleID)
	assertCode(t, code, herr, "GetTwin %s", id)
	_, herr = e.UpdateTwin(id.DeviceID, id.ModuleID, []byte(`{"tags":{"a":1}}`), "")
	assertCode(t, code, herr, "UpdateTwin %s", id)
	_, herr = e.ReplaceTwin(id.DeviceID, id.ModuleID, []byte(`{}`), "*")
	assertCode(t, code, herr, "ReplaceTwin %s", id)
	_, herr = e.DeviceTwin(id)
	assertCode(t, code, herr, "DeviceTwin %s", id)
	_, herr = e.UpdateReported(id, []byte(`{"a":1}`))
	assertCode(t, code, herr, "UpdateReported %s", id)
}

// nest returns depth objects nested under one another, the innermost
// holding leaf: nest(2, `1`) is {"l1":{"l2":1}}.
func nest(depth int, leaf string) string {
	var b strings.Builder
	for i := 1; i <= depth; i++ {
		fmt.Fprintf(&b, `{"l%d":`, i)
	}
	b.WriteString(leaf)
	b.WriteString(strings.Repeat("}", depth))
	return b.String()
}

// sized returns an object of n members named "a", "b", … whose sizes (key
// plus string value) add up to total.
func sized(n, total int) string {
	var parts []string
	for i := 0; i < n; i++ {
		share := total / n
		if i == n-1 {
			share = total - (n-1)*(total/n)
		}
		parts = append(parts, fmt.Sprintf(`"%c":"%s"`, 'a'+i, strings.Repeat("x", share-1)))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func TestTwinSize(t *testing.T) {
	// IoT Hub's measure: key length plus value length; strings as UTF-8
	// without control characters, numbers 8, booleans 4, objects and
	// arrays the sum of their parts.
	for _, tc := range []struct {
		doc  string
		want int
	}{
		{`{}`, 0},
		{`{"ab":"cd"}`, 4},
		{`{"n":1}`, 9},
		{`{"n":-1.5e300}`, 9},
		{`{"t":true}`, 5},
		{`{"o":{"x":"y"}}`, 3},
		{`{"arr":[1,"zz",false,{"k":"v"},[2]]}`, 3 + 8 + 2 + 4 + 2 + 8},
		{`{"c":"a\u0001b\u007f\u0085"}`, 3},
		{`{"é":"日本"}`, 2 + 6},
	} {
		v, err := decodeTwinJSON([]byte(tc.doc))
		require.NoError(t, err)
		n := newObject(time.Time{}, 0)
		n.merge(v.(map[string]any), time.Time{}, 0)
		assert.Equal(t, tc.want, n.size(), "size of %s", tc.doc)
		assert.Equal(t, tc.want, valueSize(v), "valueSize of %s", tc.doc)
	}
}

func TestTwinSizeLimits(t *testing.T) {
	e, _ := newEventEngine(t)
	dev := auth.Identity{DeviceID: "dev1"}
	// Exactly at each limit is accepted; one byte more is 403100
	// DeviceModelMaxPropertiesExceeded, and nothing changes.
	mustPatch(t, e, "dev1", "", `{"tags":`+sized(2, MaxTagsSize)+`}`)
	mustPatch(t, e, "dev1", "", `{"properties":{"desired":`+sized(8, MaxPropertiesSize)+`}}`)
	_, herr := e.UpdateReported(dev, []byte(sized(8, MaxPropertiesSize)))
	require.Nil(t, herr, "reported properties of exactly %d bytes", MaxPropertiesSize)
	before, herr := e.GetTwin("dev1", "")
	require.Nil(t, herr)

	for _, tc := range []struct {
		name, section string
		do            func() *Error
	}{
		{"tags PATCH", "Tags", func() *Error {
			_, herr := e.UpdateTwin("dev1", "", []byte(`{"tags":{"z":1}}`), "")
			return herr
		}},
		{"tags PUT", "Tags", func() *Error {
			_, herr := e.ReplaceTwin("dev1", "", []byte(`{"tags":`+sized(3, MaxTagsSize+1)+`}`), "")
			return herr
		}},
		{"desired PATCH", "Properties.Desired", func() *Error {
			_, herr := e.UpdateTwin("dev1", "", []byte(`{"properties":{"desired":{"z":true}}}`), "")
			return herr
		}},
		{"desired PUT", "Properties.Desired", func() *Error {
			_, herr := e.ReplaceTwin("dev1", "", []byte(`{"properties":{"desired":`+sized(9, MaxPropertiesSize+1)+`}}`), "")
			return herr
		}},
		{"reported", "Properties.Reported", func() *Error {
			_, herr := e.UpdateReported(dev, []byte(`{"a":"`+strings.Repeat("x", 4096)+`"}`))
			return herr
		}},
	} {
		herr := tc.do()
		if assertCode(t, CodeDeviceModelMaxPropertiesExceeded, herr, tc.name) {
			assert.Equal(t, 403, herr.Status, tc.name)
			assert.Equal(t, "DeviceModelMaxPropertiesExceeded", herr.Name, tc.name)
			assert.Contains(t, herr.Message, tc.section, "%s: the message does not name the section", tc.name)
		}
	}
	after, herr := e.GetTwin("dev1", "")
	require.Nil(t, herr)
	assert.Equal(t, twinJSON(t, before), twinJSON(t, after), "a refused write changed the twin")
	// Shrinking, and replacing with a smaller document, is fine.
	_, herr = e.UpdateReported(dev, []byte(`{"a":"small"}`))
	require.Nil(t, herr)
	_, herr = e.ReplaceTwin("dev1", "", []byte(`{"tags":{"a":1}}`), "")
	require.Nil(t, herr)
}

// docExample is the device twin guide's example of the deepest valid
// nesting: ten objects under the section, the tenth holding a leaf.
const docExample = `{"one":{"two":{"three":{"four":{"five":{"six":{"seven":{"eight":{"nine":{"ten":{"property":"value"}}}}}}}}}}}`

func TestTwinDocumentRules(t *testing.T) {
	e, _ := newEventEngine(t)
	dev := auth.Identity{DeviceID: "dev1"}

	// At the limits: accepted in tags, desired and reported.
	for _, doc := range []string{
		docExample,
		`{"k":` + nest(10, `"leaf"`) + `}`,
		`{"` + strings.Repeat("k", MaxTwinKeyLength) + `":1}`,
		`{"s":"` + strings.Repeat("x", MaxTwinStringLen) + `"}`,
		`{"s":"` + strings.Repeat("é", MaxTwinStringLen/2) + `"}`,
		`{"max":4503599627370495,"min":-4503599627370496,"f":-1.5e300,"z":0,"neg":-0}`,
		`{"arr":[1,"a",true,{"k":[2]},[[3]],[]],"o":{},"ctl":"a\u0001b","uni":"日本\u00e9"}`,
		`{"a_b-c~d@e#f":1,"ключ":"значение","🙂":true}`,
	} {
		mustPatch(t, e, "dev1", "", `{"tags":`+doc+`}`)
		mustPatch(t, e, "dev1", "", `{"properties":{"desired":`+doc+`}}`)
		_, herr := e.ReplaceTwin("dev1", "", []byte(`{"tags":`+doc+`,"properties":{"desired":`+doc+`}}`), "")
		require.Nil(t, herr, "PUT %.80s", doc)
		_, herr = e.UpdateReported(dev, []byte(doc))
		require.Nil(t, herr, "reported %.80s", doc)
		// Clear what was set, so that sizes stay small.
		_, herr = e.ReplaceTwin("dev1", "", []byte(`{}`), "")
		require.Nil(t, herr)
	}
	before, herr := e.GetTwin("dev1", "")
	require.Nil(t, herr)

	// Refusals: 400004 ArgumentInvalid, with a message that says what is
	// wrong (hint). section marks documents that are placed in tags,
	// desired and reported; the others are whole service bodies.
	long := strings.Repeat("k", MaxTwinKeyLength+1)
	for _, tc := range []struct {
		name, doc, hint string
		section         bool
	}{
		{"empty body", ``, "end of input", false},
		{"not JSON", `{`, "not valid JSON", false},
		{"array body", `[]`, "JSON object", false},
		{"null body", `null`, "JSON object", false},
		{"trailing data", `{} {}`, "after the value", false},
		{"tags not an object", `{"tags":[1]}`, "tags must be a JSON object", false},
		{"desired not an object", `{"properties":{"desired":"x"}}`, "properties.desired must be a JSON object", false},
		{"properties not an object", `{"properties":1}`, "properties must be a JSON object", false},
		{"dot in a key", `{"a.b":1}`, `"a.b"`, true},
		{"dollar in a key", `{"o":{"$x":1}}`, `"$x"`, true},
		{"space in a key", `{"o":{"p":{"b c":1}}}`, `"b c"`, true},
		{"C0 control in a key", `{"a\u0007":1}`, "control character", true},
		{"C1 control in a key", `{"a\u0085":1}`, "control character", true},
		{"DEL in a key", `{"a\u007f":1}`, "control character", true},
		{"empty key", `{"o":{"":1}}`, "empty name", true},
		{"long key", `{"` + long + `":1}`, "1025 bytes", true},
		{"long string", `{"o":{"s":"` + strings.Repeat("x", MaxTwinStringLen+1) + `"}}`, ".o.s", true},
		{"long string in an array", `{"a":["` + strings.Repeat("x", MaxTwinStringLen+1) + `"]}`, ".a[0]", true},
		{"integer too big", `{"i":4503599627370496}`, ".i", true},
		{"integer too small", `{"i":-4503599627370497}`, ".i", true},
		{"integer beyond int64", `{"i":99999999999999999999}`, ".i", true},
		{"number out of range", `{"f":1e400}`, ".f", true},
		{"null in an array", `{"a":[1,null]}`, "arrays cannot contain null", true},
		{"null in a nested array", `{"a":[[null]]}`, "arrays cannot contain null", true},
		{"too deep", `{"k":` + nest(10, `{}`) + `}`, "10 levels", true},
		{"doc example one level deeper", `{"zero":` + docExample + `}`, "10 levels", true},
		{"too deep in an array", `{"k":` + nest(10, `[{"x":1}]`) + `}`, "10 levels", true},
	} {
		var bodies []string
		if tc.section {
			bodies = []string{`{"tags":` + tc.doc + `}`, `{"properties":{"desired":` + tc.doc + `}}`}
		} else {
			bodies = []string{tc.doc}
		}
		for _, body := range bodies {
			for _, op := range []struct {
				name string
				do   func(string, string, []byte, string) (Twin, *Error)
			}{{"PATCH", e.UpdateTwin}, {"PUT", e.ReplaceTwin}} {
				_, herr := op.do("dev1", "", []byte(body), "")
				if assertCode(t, CodeArgumentInvalid, herr, "%s %s: %.80s", op.name, tc.name, body) {
					assert.Equal(t, 400, herr.Status)
					assert.Contains(t, herr.Message, tc.hint, "%s %s: unhelpful message", op.name, tc.name)
				}
			}
		}
		if tc.section {
			_, herr := e.UpdateReported(dev, []byte(tc.doc))
			if assertCode(t, CodeArgumentInvalid, herr, "reported %s: %.80s", tc.name, tc.doc) {
				assert.Contains(t, herr.Message, tc.hint, "reported %s: unhelpful message", tc.name)
			}
		}
	}
	// A null member deletes in a patch; a replacement cannot hold one.
	_, herr = e.ReplaceTwin("dev1", "", []byte(`{"tags":{"a":null}}`), "")
	assertCode(t, CodeArgumentInvalid, herr, "PUT with a null tag")
	_, herr = e.ReplaceTwin("dev1", "", []byte(`{"properties":{"desired":{"a":{"b":null}}}}`), "")
	assertCode(t, CodeArgumentInvalid, herr, "PUT with a null desired property")
	// A device's patch may not name the read-only $version or $metadata;
	// a refused patch is refused whole.
	for _, doc := range []string{`{"$version":3}`, `{"$metadata":{}}`, `{"ok":1,"$version":2}`, `{"ok":1,"bad.key":2}`, `[]`, `"x"`, `{"a":1}{}`} {
		_, herr := e.UpdateReported(dev, []byte(doc))
		assertCode(t, CodeArgumentInvalid, herr, "reported %s", doc)
	}
	after, herr := e.GetTwin("dev1", "")
	require.Nil(t, herr)
	assert.Equal(t, twinJSON(t, before), twinJSON(t, after), "a refused write changed the twin")
	// Bodies above MaxTwinBodySize are refused before they are parsed.
	_, herr = e.UpdateTwin("dev1", "", make([]byte, MaxTwinBodySize+1), "")
	assertCode(t, CodeArgumentInvalid, herr, "body over MaxTwinBodySize")
}

func TestTwinReported(t *testing.T) {
	e, c := newEventEngine(t)
	dev := auth.Identity{DeviceID: "dev1"}
	s := e.Connect(dev, &twinConn{}, time.Time{})
	t.Cleanup(s.Disconnect)
	for i := 2; i < 6; i++ {
		c.add(time.Second)
		v, herr := s.UpdateReported([]byte(fmt.Sprintf(`{"iothubDM":{"reboot":{"lastReboot":"%d"}},"n":%d}`, i, i)))
		require.Nil(t, herr)
		assert.EqualValues(t, i, v, "reported $version")
	}
	v, herr := s.UpdateReported([]byte(`{"n":null,"iothubDM":{"reboot":null}}`))
	require.Nil(t, herr)
	assert.EqualValues(t, 6, v, "reported $version")
	b, herr := s.GetTwin()
	require.Nil(t, herr)
	assert.JSONEq(t, `{"desired":{"$version":1},"reported":{"iothubDM":{},"$version":6}}`, string(b), "session's twin")
	// A refused patch leaves the version alone.
	_, herr = s.UpdateReported([]byte(`{"a b":1}`))
	assertCode(t, CodeArgumentInvalid, herr, "bad key")
	v, herr = s.UpdateReported([]byte(`{}`))
	require.Nil(t, herr)
	assert.EqualValues(t, 7, v, "reported $version after a refused patch")
	// '<', '>' and '&' come back as sent, not as \u003c escapes.
	_, herr = s.UpdateReported([]byte(`{"html":"<a&b>"}`))
	require.Nil(t, herr)
	b, herr = s.GetTwin()
	require.Nil(t, herr)
	assert.Contains(t, string(b), `"html":"<a&b>"`, "the device's twin")
}

// connectTwin connects id on a twinConn.
func connectTwin(t *testing.T, e *Engine, id auth.Identity) (*Session, *twinConn) {
	t.Helper()
	c := &twinConn{}
	s := e.Connect(id, c, time.Time{})
	t.Cleanup(s.Disconnect)
	return s, c
}

func TestTwinDesiredNotifications(t *testing.T) {
	e, _ := newEventEngine(t)
	dev := auth.Identity{DeviceID: "dev1"}
	s, conn := connectTwin(t, e, dev)
	modSession, modConn := connectTwin(t, e, auth.Identity{DeviceID: "dev1", ModuleID: "mod1"})
	modSession.SetDesiredSubscribed(true)

	// Nothing before the subscription; tags never notify.
	mustPatch(t, e, "dev1", "", `{"properties":{"desired":{"early":1}}}`)
	s.SetDesiredSubscribed(true)
	mustPatch(t, e, "dev1", "", `{"tags":{"t":1}}`)
	require.Empty(t, conn.received(), "notifications before the subscription or for tags")

	// Many concurrent writers: every desired version reaches the device
	// once, in order, with no gap, one call at a time.
	const writers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan *Error, writers*each)
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				body := fmt.Sprintf(`{"properties":{"desired":{"g%d":{"i":%d,"gone":null}}}}`, g, i)
				if _, herr := e.UpdateTwin("dev1", "", []byte(body), ""); herr != nil {
					errs <- herr
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for herr := range errs {
		require.Nil(t, herr, "concurrent PATCH")
	}
	notes := conn.received()
	require.Len(t, notes, writers*each, "notifications")
	assert.False(t, conn.overlap.Load(), "SendDesired was called concurrently")
	next := make([]int, writers) // each writer's next i, in its own order
	for k, n := range notes {
		require.EqualValues(t, 3+k, n.version, "notification %d's version", k)
		var body map[string]map[string]any
		var version struct {
			Version int64 `json:"$version"`
		}
		require.NoError(t, json.Unmarshal(n.body, &version), "notification %d: %s", k, n.body)
		require.Equal(t, n.version, version.Version, "notification %d: $version in the body", k)
		var raw map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(n.body, &raw))
		delete(raw, "$version")
		require.Len(t, raw, 1, "notification %d: %s", k, n.body)
		b, _ := json.Marshal(raw)
		require.NoError(t, json.Unmarshal(b, &body))
		for name, patch := range body {
			var g int
			_, err := fmt.Sscanf(name, "g%d", &g)
			require.NoError(t, err, "notification %d: %s", k, n.body)
			// The patch as the service sent it, null included.
			assert.Equal(t, map[string]any{"i": float64(next[g]), "gone": nil}, patch, "notification %d", k)
			next[g]++
		}
	}
	tw, herr := e.GetTwin("dev1", "")
	require.Nil(t, herr)
	desired, _ := twinProps(t, tw)
	assert.EqualValues(t, 2+writers*each, desired["$version"], "desired $version")
	for g := 0; g < writers; g++ {
		assert.Equal(t, map[string]any{"i": float64(each - 1)}, desired[fmt.Sprintf("g%d", g)], "desired g%d", g)
	}
	assert.Empty(t, modConn.received(), "the module was told of its device's desired properties")

	// A PUT sends the whole new desired document.
	_, herr = e.ReplaceTwin("dev1", "", []byte(`{"properties":{"desired":{"only":{"x":1}}}}`), "")
	require.Nil(t, herr)
	notes = conn.received()
	last := notes[len(notes)-1]
	assert.EqualValues(t, 3+writers*each, last.version)
	assert.JSONEq(t, fmt.Sprintf(`{"only":{"x":1},"$version":%d}`, last.version), string(last.body), "notification of a PUT")

	// A module's patch goes to the module.
	mustPatch(t, e, "dev1", "mod1", `{"properties":{"desired":{"m":1}}}`)
	require.Len(t, modConn.received(), 1, "module notifications")
	assert.JSONEq(t, `{"m":1,"$version":2}`, string(modConn.received()[0].body))

	// None after unsubscribing, nor after the connection ends.
	count := len(conn.received())
	s.SetDesiredSubscribed(false)
	mustPatch(t, e, "dev1", "", `{"properties":{"desired":{"after":"unsubscribe"}}}`)
	require.Len(t, conn.received(), count, "a notification after unsubscribing")
	s.SetDesiredSubscribed(true)
	mustPatch(t, e, "dev1", "", `{"properties":{"desired":{"after":"resubscribe"}}}`)
	require.Len(t, conn.received(), count+1, "no notification after subscribing again")
	s.Disconnect()
	s.SetDesiredSubscribed(true)
	mustPatch(t, e, "dev1", "", `{"properties":{"desired":{"after":"disconnect"}}}`)
	require.Len(t, conn.received(), count+1, "a notification after the connection ended")

	// A new connection starts unsubscribed.
	s2, conn2 := connectTwin(t, e, dev)
	mustPatch(t, e, "dev1", "", `{"properties":{"desired":{"after":"reconnect"}}}`)
	require.Empty(t, conn2.received(), "a notification before the new connection subscribed")
	s2.SetDesiredSubscribed(true)
	tw = mustPatch(t, e, "dev1", "", `{"properties":{"desired":{"after":"resubscribe"}}}`)
	desired, _ = twinProps(t, tw)
	require.Len(t, conn2.received(), 1, "notifications on the new connection")
	assert.EqualValues(t, desired["$version"], conn2.received()[0].version)
}

func TestTwinDesiredSendFailure(t *testing.T) {
	e, _ := newEventEngine(t)
	s, conn := connectTwin(t, e, auth.Identity{DeviceID: "dev1"})
	s.SetDesiredSubscribed(true)
	conn.fail.Store(true)
	mustPatch(t, e, "dev1", "", `{"properties":{"desired":{"a":1}}}`)
	// The device missed a patch: its session ends, so that it reconnects
	// and reads the twin, and nothing more is sent on it.
	select {
	case <-s.Done():
	default:
		require.FailNow(t, "the session survived a failed desired send")
	}
	assert.Equal(t, "Disconnected", mustDevice(t, e, "dev1").ConnectionState)
	conn.fail.Store(false)
	mustPatch(t, e, "dev1", "", `{"properties":{"desired":{"a":2}}}`)
	assert.Empty(t, conn.received(), "notifications after the session ended")
	// A new session that subscribes gets the next patches.
	s2, conn2 := connectTwin(t, e, auth.Identity{DeviceID: "dev1"})
	s2.SetDesiredSubscribed(true)
	mustPatch(t, e, "dev1", "", `{"properties":{"desired":{"a":3}}}`)
	notes := conn2.received()
	require.Len(t, notes, 1, "notifications on the new session")
	assert.EqualValues(t, 4, notes[0].version)

	// A Conn that cannot deliver notifications queues none.
	ms := e.Connect(auth.Identity{DeviceID: "dev1", ModuleID: "mod1"}, methodOnlyConn{}, time.Time{})
	t.Cleanup(ms.Disconnect)
	ms.SetDesiredSubscribed(true)
	for i := 0; i < 3; i++ {
		mustPatch(t, e, "dev1", "mod1", fmt.Sprintf(`{"properties":{"desired":{"a":%d}}}`, i))
	}
	ms.mu.Lock()
	queued := len(ms.desiredQ)
	ms.mu.Unlock()
	assert.Zero(t, queued, "notifications queued for a Conn without SendDesired")
}

func TestTwinModelID(t *testing.T) {
	e, _ := newEventEngine(t)
	s, _ := connectTwin(t, e, auth.Identity{DeviceID: "dev1"})
	ms, _ := connectTwin(t, e, auth.Identity{DeviceID: "dev1", ModuleID: "mod1"})
	s.SetModelID("dtmi:com:example:Thermostat;1")
	ms.SetModelID("dtmi:com:example:Module;2")
	tw, herr := e.GetTwin("dev1", "")
	require.Nil(t, herr)
	assert.Equal(t, "dtmi:com:example:Thermostat;1", tw.ModelID)
	assert.Contains(t, twinJSON(t, tw), `"modelId":"dtmi:com:example:Thermostat;1"`)
	assert.Equal(t, "Connected", tw.ConnectionState)
	mt, herr := e.GetTwin("dev1", "mod1")
	require.Nil(t, herr)
	assert.Equal(t, "dtmi:com:example:Module;2", mt.ModelID)
	// The model id changes neither the version nor the etag.
	assert.EqualValues(t, 2, tw.Version)
	assert.Equal(t, "AAAAAAAAAAE=", tw.ETag)
}

func mustDevice(t *testing.T, e *Engine, id string) Device {
	t.Helper()
	d, herr := e.GetDevice(id)
	require.Nil(t, herr)
	return d
}
