package mqttd

import (
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

const (
	resFilter     = "$iothub/twin/res/#"
	desiredFilter = "$iothub/twin/PATCH/properties/desired/#"
	getTopic      = "$iothub/twin/GET/?$rid="
	reportedTopic = "$iothub/twin/PATCH/properties/reported/?$rid="
)

// twinAnswer is a hub answer on $iothub/twin/res/…, parsed by the test
// itself (not with the package's parser).
type twinAnswer struct {
	status  int
	rid     string
	version string // "" when the topic has none
	body    []byte
	qos     byte
}

// answer returns the next message, which must be a twin answer.
func (d *device) answer(tb testing.TB) twinAnswer {
	tb.Helper()
	m := d.next(tb)
	rest, ok := strings.CutPrefix(m.topic, "$iothub/twin/res/")
	require.True(tb, ok, "topic %q is not a twin answer", m.topic)
	status, query, ok := strings.Cut(rest, "/?")
	require.True(tb, ok, "topic %q has no /?", m.topic)
	n, err := strconv.Atoi(status)
	require.NoError(tb, err, "topic %q: status", m.topic)
	a := twinAnswer{status: n, body: m.payload, qos: m.qos}
	if len(a.body) == 0 {
		a.body = nil
	}
	for _, kv := range strings.Split(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "$rid":
			a.rid = v
		case "$version":
			a.version = v
		default:
			require.FailNow(tb, "unexpected parameter in a twin answer", "topic %q", m.topic)
		}
	}
	require.False(tb, m.retain, "twin answer retained")
	return a
}

// request publishes a twin request and returns its answer.
func (d *device) request(tb testing.TB, topic string, qos byte, body string) twinAnswer {
	tb.Helper()
	require.NoError(tb, d.publish(tb, topic, qos, []byte(body)), "PUBLISH %s", topic)
	return d.answer(tb)
}

// sections decodes a GET answer's body.
func sections(tb testing.TB, body []byte) (desired, reported map[string]any) {
	tb.Helper()
	var v struct {
		Desired  map[string]any `json:"desired"`
		Reported map[string]any `json:"reported"`
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	require.NoError(tb, dec.Decode(&v), "GET answer %s", body)
	require.NotNil(tb, v.Desired, "GET answer %s: desired", body)
	require.NotNil(tb, v.Reported, "GET answer %s: reported", body)
	return v.Desired, v.Reported
}

func reportedVersion(tb testing.TB, f *fixture, deviceID, moduleID string) float64 {
	tb.Helper()
	tw, herr := f.e.GetTwin(deviceID, moduleID)
	require.Nil(tb, herr)
	var p struct {
		Reported map[string]any `json:"reported"`
	}
	require.NoError(tb, json.Unmarshal(tw.Properties, &p))
	return p.Reported["$version"].(float64)
}

func TestTwinGet(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	d := f.connect(f.sasOpts("dev1", key))
	require.Equal(t, byte(0), d.subscribe(t, resFilter, 0), "granted QoS")

	// Node sends " " at QoS 0, C# an empty body at QoS 1; the rid is
	// opaque (C: a decimal counter; Node, C#: a GUID) and comes back as is.
	for _, tc := range []struct {
		rid  string
		qos  byte
		body string
	}{
		{"1", 0, " "},
		{"0f8fad5b-d9cb-469f-a165-70867728950e", 1, ""},
		{"a%2Fb", 1, "ignored"},
	} {
		a := d.request(t, getTopic+tc.rid, tc.qos, tc.body)
		assert.Equal(t, twinAnswer{status: 200, rid: tc.rid, body: a.body}, a, "answer to GET %s", tc.rid)
		want, herr := f.e.DeviceTwin(ident("dev1"))
		require.Nil(t, herr)
		assert.JSONEq(t, string(want), string(a.body), "GET body")
		desired, reported := sections(t, a.body)
		assert.Equal(t, map[string]any{"$version": 1.0}, desired, "desired of a new twin")
		assert.Equal(t, map[string]any{"$version": 1.0}, reported, "reported of a new twin")
	}
	// Other query parameters are ignored.
	a := d.request(t, "$iothub/twin/GET/?x=1&$rid=7&y", 0, "")
	assert.Equal(t, 200, a.status)
	assert.Equal(t, "7", a.rid)
	d.stillUp(t)
}

func TestTwinReported(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	d := f.connect(f.sasOpts("dev1", key))
	d.subscribe(t, resFilter, 1)

	for i, tc := range []struct {
		patch string
		want  string // the version in the answer
	}{
		{`{"a":1,"b":{"c":"x","d":true}}`, "2"},
		{`{"a":null,"b":{"d":null}}`, "3"},
		{`{"e":[1,2]}`, "4"},
	} {
		rid := strconv.Itoa(i + 1)
		a := d.request(t, reportedTopic+rid, 1, tc.patch)
		assert.Equal(t, twinAnswer{status: 204, rid: rid, version: tc.want}, a, "answer to PATCH %s", tc.patch)
	}
	a := d.request(t, getTopic+"g", 0, "")
	require.Equal(t, 200, a.status)
	_, reported := sections(t, a.body)
	assert.Equal(t, map[string]any{"b": map[string]any{"c": "x"}, "e": []any{1.0, 2.0}, "$version": 4.0}, reported)
	assert.Equal(t, 4.0, reportedVersion(t, f, "dev1", ""), "the service sees the reported version")
}

func TestTwinReportedRefused(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	d := f.connect(f.sasOpts("dev1", key))
	d.subscribe(t, resFilter, 0)

	big := map[string]string{}
	for i := range 9 {
		big["k"+strconv.Itoa(i)] = strings.Repeat("x", 4000)
	}
	tooBig, err := json.Marshal(big)
	require.NoError(t, err)
	for _, tc := range []struct {
		name, patch string
		status      int
		code        int
	}{
		{"not JSON", "not json", 400, engine.CodeArgumentInvalid},
		{"empty", "", 400, engine.CodeArgumentInvalid},
		{"an array", "[1]", 400, engine.CodeArgumentInvalid},
		{"a $ key", `{"$x":1}`, 400, engine.CodeArgumentInvalid},
		{"a key with a space", `{"a b":1,"ok":2}`, 400, engine.CodeArgumentInvalid},
		{"larger than 32 KB", string(tooBig), 403, engine.CodeDeviceModelMaxPropertiesExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := d.request(t, reportedTopic+"r1", 0, tc.patch)
			assert.Equal(t, tc.status, a.status, "status")
			assert.Equal(t, "r1", a.rid, "rid")
			assert.Empty(t, a.version, "a refusal has no $version")
			var body struct {
				Message    *string `json:"message"`
				ErrorCode  *int    `json:"errorCode"`
				TrackingID *string `json:"trackingId"`
				Details    any     `json:"details"`
			}
			dec := json.NewDecoder(strings.NewReader(string(a.body)))
			dec.DisallowUnknownFields()
			require.NoError(t, dec.Decode(&body), "error body %s", a.body)
			require.NotNil(t, body.ErrorCode, "error body %s", a.body)
			assert.Equal(t, tc.code, *body.ErrorCode, "errorCode")
			require.NotNil(t, body.Message, "error body %s", a.body)
			assert.NotEmpty(t, *body.Message, "message")
			require.NotNil(t, body.TrackingID, "error body %s", a.body)
			assert.NotEmpty(t, *body.TrackingID, "trackingId")
			assert.Nil(t, body.Details, "details")
		})
	}
	assert.Equal(t, 1.0, reportedVersion(t, f, "dev1", ""), "a refused patch changes nothing")
	d.stillUp(t)
}

// A device that did not subscribe to $iothub/twin/res/# gets no answer,
// but its request is processed.
func TestTwinWithoutResponseSubscription(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	o := f.sasOpts("dev1", key)
	o.ordered = true
	d := f.connect(o)
	require.NoError(t, d.publish(t, reportedTopic+"1", 1, []byte(`{"a":1}`)))
	require.NoError(t, d.publish(t, getTopic+"2", 1, nil))
	assert.Equal(t, 2.0, reportedVersion(t, f, "dev1", ""), "the patch was applied")
	d.subscribe(t, resFilter, 0)
	a := d.request(t, getTopic+"3", 0, "")
	assert.Equal(t, "3", a.rid, "the first answer is the one to the request made once subscribed")
	d.stillUp(t)
}

// A twin request without a usable $rid is acknowledged and dropped: no
// answer, nothing changed, the connection stays up.
func TestTwinRequestWithoutRID(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	o := f.sasOpts("dev1", key)
	o.ordered = true
	d := f.connect(o)
	d.subscribe(t, resFilter, 0)
	for _, topic := range []string{
		"$iothub/twin/GET/",
		"$iothub/twin/GET/?rid=1",
		"$iothub/twin/GET/?$rid=",
		"$iothub/twin/PATCH/properties/reported/",
		"$iothub/twin/PATCH/properties/reported/?$version=1",
		"$iothub/twin/PATCH/properties/reported/?$rid=&x=1",
	} {
		require.NoError(t, d.publish(t, topic, 1, []byte(`{"a":1}`)), "%s", topic)
	}
	a := d.request(t, getTopic+"ok", 0, "")
	assert.Equal(t, "ok", a.rid, "the first answer is the one to the request with a rid")
	_, reported := sections(t, a.body)
	assert.Equal(t, map[string]any{"$version": 1.0}, reported, "nothing was applied")
	d.stillUp(t)
}

// Every other topic under $iothub/twin/ is a protocol violation.
func TestUnknownTwinTopicCloses(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	for _, topic := range []string{
		"$iothub/twin/PATCH/properties/desired/?$rid=1",
		"$iothub/twin/PATCH/properties/reported?$rid=1",
		"$iothub/twin/PATCH/?$rid=1",
		"$iothub/twin/DELETE/?$rid=1",
		"$iothub/twin/res/200/?$rid=1",
		"$iothub/twin/GET",
		"$iothub/twin/GET?$rid=1",
		"$iothub/twin/GET/x/?$rid=1",
		"$iothub/twin/get/?$rid=1",
	} {
		t.Run(topic, func(t *testing.T) {
			d := f.connect(f.sasOpts("dev1", key))
			d.subscribe(t, resFilter, 0)
			d.c.Publish(topic, 0, false, []byte("{}"))
			d.waitLost(t)
		})
	}
}

// desired returns the next message, which must be a desired patch, and
// its version.
func (d *device) desired(tb testing.TB) (version string, body []byte) {
	tb.Helper()
	m := d.next(tb)
	v, ok := strings.CutPrefix(m.topic, "$iothub/twin/PATCH/properties/desired/?$version=")
	require.True(tb, ok, "topic %q is not a desired patch", m.topic)
	require.Equal(tb, byte(0), m.qos, "desired patch QoS")
	require.False(tb, m.retain, "desired patch retained")
	return v, m.payload
}

func (f *fixture) updateDesired(tb testing.TB, id, desired string) {
	tb.Helper()
	dev, mod, _ := strings.Cut(id, "/")
	_, herr := f.e.UpdateTwin(dev, mod, []byte(`{"properties":{"desired":`+desired+`}}`), "")
	require.Nil(tb, herr, "UpdateTwin %s", desired)
}

func TestDesiredPatches(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	o := f.sasOpts("dev1", key)
	o.ordered = true
	d := f.connect(o)
	d.subscribe(t, resFilter, 0)

	f.updateDesired(t, "dev1", `{"before":0}`) // not subscribed: not sent
	require.Equal(t, byte(1), d.subscribe(t, desiredFilter, 1), "granted QoS")
	f.updateDesired(t, "dev1", `{"a":1}`)
	f.updateDesired(t, "dev1", `{"b":{"c":2}}`)
	f.updateDesired(t, "dev1", `{"a":null,"b":{"c":null}}`)
	_, herr := f.e.ReplaceTwin("dev1", "", []byte(`{"properties":{"desired":{"z":true}}}`), "")
	require.Nil(t, herr)
	for _, want := range []struct{ version, body string }{
		{"3", `{"a":1,"$version":3}`},
		{"4", `{"b":{"c":2},"$version":4}`},
		{"5", `{"a":null,"b":{"c":null},"$version":5}`},
		{"6", `{"z":true,"$version":6}`}, // a replacement sends the whole section
	} {
		v, body := d.desired(t)
		assert.Equal(t, want.version, v, "version in the topic")
		assert.JSONEq(t, want.body, string(body), "patch %s", want.version)
	}

	// After UNSUBSCRIBE nothing more is sent.
	tok := d.c.Unsubscribe(desiredFilter)
	require.True(t, tok.WaitTimeout(waitLong), "UNSUBSCRIBE did not complete")
	require.NoError(t, tok.Error())
	f.updateDesired(t, "dev1", `{"after":1}`)
	a := d.request(t, getTopic+"g", 0, "")
	assert.Equal(t, "g", a.rid, "the next message is the GET answer, not a patch")
	desired, _ := sections(t, a.body)
	assert.Equal(t, 7.0, desired["$version"], "desired version")
	d.stillUp(t)
}

// A persistent session that holds the desired subscription keeps it on
// the next connection, from its CONNACK on.
func TestDesiredPersistentSession(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	o := f.sasOpts("dev1", key)
	o.clean, o.ordered = false, true
	d := f.connect(o)
	d.subscribe(t, desiredFilter, 0)
	d.c.Disconnect(50)

	d2 := f.connect(o)
	f.updateDesired(t, "dev1", `{"a":1}`)
	v, body := d2.desired(t)
	assert.Equal(t, "2", v)
	assert.JSONEq(t, `{"a":1,"$version":2}`, string(body))

	// A clean session has no subscription.
	o.clean = true
	d3 := f.connect(o)
	d2.waitLost(t)
	f.updateDesired(t, "dev1", `{"b":1}`)
	d3.subscribe(t, resFilter, 0)
	a := d3.request(t, getTopic+"g", 0, "")
	assert.Equal(t, "g", a.rid, "the first message is the GET answer, not a patch")
}

func TestModelID(t *testing.T) {
	f := newFixture(t)
	const dtmi = "dtmi:com:example:Thermostat;1"
	for _, tc := range []struct {
		name, apiVersion, want string
	}{
		{"current api-version", "2021-04-12", dtmi},
		{"first PnP api-version", "2020-09-30", dtmi},
		{"api-version before PnP", "2019-10-01", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "dev-" + tc.apiVersion
			key := f.addDevice(id)
			o := f.sasOpts(id, key)
			// As the C# and C SDKs send it: last, URL-encoded.
			o.user = testHost + "/" + id + "/?api-version=" + tc.apiVersion + "&DeviceClientType=x&model-id=" + url.QueryEscape(dtmi)
			f.connect(o)
			tw, herr := f.e.GetTwin(id, "")
			require.Nil(t, herr)
			assert.Equal(t, tc.want, tw.ModelID, "modelId")
		})
	}
	// Node puts it before DeviceClientType, unencoded.
	key := f.addDevice("node")
	o := f.sasOpts("node", key)
	o.user = testHost + "/node/?api-version=2021-04-12&model-id=" + dtmi + "&DeviceClientType=x"
	f.connect(o)
	tw, herr := f.e.GetTwin("node", "")
	require.Nil(t, herr)
	assert.Equal(t, dtmi, tw.ModelID, "modelId")
}

func TestModuleTwin(t *testing.T) {
	f := newFixture(t)
	f.addDevice("dev1")
	key := f.addModule("dev1", "m1")
	o := f.sasOpts("dev1/m1", key)
	o.ordered = true
	d := f.connect(o)
	d.subscribe(t, resFilter, 0)
	d.subscribe(t, desiredFilter, 0)
	a := d.request(t, reportedTopic+"1", 0, `{"m":1}`)
	assert.Equal(t, "2", a.version)
	assert.Equal(t, 2.0, reportedVersion(t, f, "dev1", "m1"), "module twin")
	assert.Equal(t, 1.0, reportedVersion(t, f, "dev1", ""), "device twin untouched")
	f.updateDesired(t, "dev1", `{"dev":1}`) // the device's twin: not the module's business
	f.updateDesired(t, "dev1/m1", `{"mod":1}`)
	v, body := d.desired(t)
	assert.Equal(t, "2", v)
	assert.JSONEq(t, `{"mod":1,"$version":2}`, string(body))
}

func TestParseTwinRequestTopic(t *testing.T) {
	for _, tc := range []struct {
		topic string
		kind  topicKind
		rid   string
		ok    bool
	}{
		{"$iothub/twin/GET/?$rid=1", topicTwinGet, "1", true},
		{"$iothub/twin/GET/?a=b&$rid=x-y&c", topicTwinGet, "x-y", true},
		{"$iothub/twin/PATCH/properties/reported/?$rid=42", topicTwinReported, "42", true},
		{"$iothub/twin/PATCH/properties/reported/?$rid=a%26b&$version=3", topicTwinReported, "a%26b", true},
		{"$iothub/twin/GET/", topicForbidden, "", false},
		{"$iothub/twin/GET/?$rid=", topicForbidden, "", false},
		{"$iothub/twin/GET/?rid=1", topicForbidden, "", false},
		{"$iothub/twin/GET?$rid=1", topicForbidden, "", false},
		{"$iothub/twin/GET/x?$rid=1", topicForbidden, "", false},
		{"$iothub/twin/PATCH/properties/desired/?$rid=1", topicForbidden, "", false},
		{"", topicForbidden, "", false},
	} {
		kind, rid, ok := parseTwinRequestTopic(tc.topic)
		assert.Equal(t, []any{tc.kind, tc.rid, tc.ok}, []any{kind, rid, ok}, "parseTwinRequestTopic(%q)", tc.topic)
	}
	assert.Equal(t, "$iothub/twin/res/204/?$rid=r&$version=9", twinResponseTopic(204, "r", 9))
	assert.Equal(t, "$iothub/twin/res/200/?$rid=r", twinResponseTopic(200, "r", 0))
	assert.Equal(t, "$iothub/twin/PATCH/properties/desired/?$version=12", desiredPatchTopic(12))
}

func FuzzParseTwinRequestTopic(f *testing.F) {
	for _, s := range []string{
		"$iothub/twin/GET/?$rid=1",
		"$iothub/twin/GET/?$rid=0f8fad5b-d9cb-469f-a165-70867728950e",
		"$iothub/twin/PATCH/properties/reported/?$rid=7&$version=1",
		"$iothub/twin/PATCH/properties/reported/?x&$rid=&$rid=2",
		"$iothub/twin/GET/",
		"$iothub/twin/GET?$rid=1",
		"$iothub/twin/PATCH/properties/desired/?$rid=1",
		"$iothub/twin/GET/?$rid=#",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		kind, rid, ok := parseTwinRequestTopic(topic)
		class := classifyTopic(topic, ident("dev"))
		if !ok {
			require.Equal(t, topicForbidden, kind, "kind of a failed parse of %q", topic)
			require.Empty(t, rid, "rid of a failed parse of %q", topic)
			return
		}
		require.Contains(t, []topicKind{topicTwinGet, topicTwinReported}, kind, "%q", topic)
		require.NotEmpty(t, rid, "%q", topic)
		require.NotContains(t, rid, "&", "%q: rid %q", topic, rid)
		if !strings.ContainsAny(topic, "+#\x00") {
			require.Equal(t, kind, class, "%q parses as a twin request but is classified as %d", topic, class)
		}
		pfx := twinGetPfx
		if kind == topicTwinReported {
			pfx = twinReportedPfx
		}
		require.True(t, strings.HasPrefix(topic, pfx+"?"), "%q", topic)
		k2, r2, ok2 := parseTwinRequestTopic(pfx + "?$rid=" + rid)
		require.True(t, ok2, "round trip of %q", topic)
		require.Equal(t, kind, k2, "round trip of %q", topic)
		require.Equal(t, rid, r2, "round trip of %q", topic)
	})
}
