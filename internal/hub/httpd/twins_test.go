package httpd

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

// twinDoc is the part of a twin answer the tests look at.
type twinDoc struct {
	DeviceID   string                     `json:"deviceId"`
	ModuleID   string                     `json:"moduleId"`
	ETag       string                     `json:"etag"`
	Version    int64                      `json:"version"`
	Status     string                     `json:"status"`
	Tags       map[string]json.RawMessage `json:"tags"`
	Properties struct {
		Desired  map[string]json.RawMessage `json:"desired"`
		Reported map[string]json.RawMessage `json:"reported"`
	} `json:"properties"`
}

// sectionVersion returns a section's $version.
func sectionVersion(t *testing.T, s map[string]json.RawMessage) int64 {
	t.Helper()
	raw, ok := s["$version"]
	require.True(t, ok, "section has no $version: %v", s)
	v, err := strconv.ParseInt(string(raw), 10, 64)
	require.NoError(t, err, "$version %s", raw)
	return v
}

// wantTwin checks a 200 twin answer and returns it decoded.
func wantTwin(t *testing.T, res response) twinDoc {
	t.Helper()
	wantOK(t, res)
	tw := decodeJSON[twinDoc](t, res)
	require.NotEmpty(t, tw.ETag, "twin etag; body %s", res.body)
	assert.Equal(t, `"`+tw.ETag+`"`, res.header.Get("ETag"), "ETag header")
	sectionVersion(t, tw.Properties.Desired)
	sectionVersion(t, tw.Properties.Reported)
	return tw
}

// twin runs a twin request with the owner policy; path is the part after
// /twins/.
func (h *testHub) twin(method, path, body string, headers map[string]string) response {
	h.t.Helper()
	return h.registry(method, "/twins/"+path, body, headers)
}

func TestTwinGet(t *testing.T) {
	h := newTestHub(t)
	h.createDevice("dev1")
	res := h.twin(http.MethodGet, "dev1", "", nil)
	tw := wantTwin(t, res)
	assert.Equal(t, "dev1", tw.DeviceID)
	assert.Equal(t, int64(2), tw.Version, "a new twin's version")
	assert.Equal(t, "enabled", tw.Status)
	assert.Equal(t, int64(1), sectionVersion(t, tw.Properties.Desired), "desired $version")
	assert.Equal(t, int64(1), sectionVersion(t, tw.Properties.Reported), "reported $version")
	assert.Contains(t, tw.Properties.Desired, "$metadata", "desired $metadata")
	assert.Len(t, tw.Properties.Desired, 2, "a new twin's desired section: %v", tw.Properties.Desired)
	assert.Len(t, tw.Properties.Reported, 2, "a new twin's reported section: %v", tw.Properties.Reported)
	// IoT Hub's field names are on the wire.
	for _, f := range []string{`"deviceId":"dev1"`, `"etag"`, `"deviceEtag"`, `"version":2`, `"status":"enabled"`,
		`"connectionState":"Disconnected"`, `"authenticationType":"sas"`, `"x509Thumbprint"`, `"properties"`,
		`"cloudToDeviceMessageCount":0`, `"statusUpdateTime"`, `"lastActivityTime"`, `"capabilities"`} {
		assert.Contains(t, string(res.body), f, "body lacks a field")
	}
	assert.NotContains(t, string(res.body), `"moduleId"`, "a device twin names a module")
	// The same twin is read again, unchanged.
	again := wantTwin(t, h.twin(http.MethodGet, "dev1", "", nil))
	assert.Equal(t, tw.ETag, again.ETag, "etag of an unchanged twin")

	wantRegistryError(t, h.twin(http.MethodGet, "nope", "", nil), engine.CodeDeviceNotFound)
	wantRegistryError(t, h.twin(http.MethodGet, "dev1/modules/nope", "", nil), engine.CodeModuleNotFound)
	wantRegistryError(t, h.twin(http.MethodGet, "nope/modules/m1", "", nil), engine.CodeDeviceNotFound)
}

func TestTwinPatchAndReplace(t *testing.T) {
	h := newTestHub(t)
	h.createDevice("dev1")
	v1 := wantTwin(t, h.twin(http.MethodGet, "dev1", "", nil))

	// PATCH merges tags and desired properties.
	res := h.twin(http.MethodPatch, "dev1", `{"tags":{"site":"lyon","floor":2},"properties":{"desired":{"fw":{"version":"1.2","url":"x"}}}}`, nil)
	v2 := wantTwin(t, res)
	assert.Equal(t, v1.Version+1, v2.Version, "twin version after a patch")
	assert.NotEqual(t, v1.ETag, v2.ETag, "etag after a patch")
	assert.Equal(t, int64(2), sectionVersion(t, v2.Properties.Desired), "desired $version after a patch")
	assert.Equal(t, int64(1), sectionVersion(t, v2.Properties.Reported), "reported $version after a desired patch")
	assert.JSONEq(t, `"lyon"`, string(v2.Tags["site"]), "tag site")
	assert.JSONEq(t, `{"version":"1.2","url":"x"}`, string(v2.Properties.Desired["fw"]), "desired fw")
	assert.Equal(t, string(res.body), string(h.twin(http.MethodGet, "dev1", "", nil).body), "GET after PATCH differs from PATCH's answer")

	// null deletes; objects merge.
	v3 := wantTwin(t, h.twin(http.MethodPatch, "dev1", `{"tags":{"floor":null},"properties":{"desired":{"fw":{"url":null,"force":true}}}}`, nil))
	assert.NotContains(t, v3.Tags, "floor", "deleted tag")
	assert.JSONEq(t, `{"version":"1.2","force":true}`, string(v3.Properties.Desired["fw"]), "merged desired fw")
	assert.Equal(t, int64(3), sectionVersion(t, v3.Properties.Desired), "desired $version")

	// If-Match: a stale etag is 412, the current one in any form works, * forces.
	wantRegistryError(t, h.twin(http.MethodPatch, "dev1", `{"tags":{"a":1}}`, map[string]string{"If-Match": `"` + v2.ETag + `"`}), engine.CodePreconditionFailed)
	wantRegistryError(t, h.twin(http.MethodPut, "dev1", `{}`, map[string]string{"If-Match": v1.ETag}), engine.CodePreconditionFailed)
	etag := v3.ETag
	for i, form := range []string{`"%s"`, `%s`, `W/"%s"`, `*`, `"*"`} {
		ifMatch := strings.ReplaceAll(form, "%s", etag)
		tw := wantTwin(t, h.twin(http.MethodPatch, "dev1", `{"tags":{"n":`+strconv.Itoa(i)+`}}`, map[string]string{"If-Match": ifMatch}))
		require.NotEqual(t, etag, tw.ETag, "If-Match %s: the etag did not change", ifMatch)
		etag = tw.ETag
	}
	cur := wantTwin(t, h.twin(http.MethodGet, "dev1", "", nil))

	// PUT replaces both sections; what it leaves out is gone.
	res = h.twin(http.MethodPut, "dev1", `{"deviceId":"dev1","etag":"ignored","tags":{"site":"paris"},"properties":{"desired":{"mode":"eco"}}}`,
		map[string]string{"If-Match": `"` + cur.ETag + `"`})
	v4 := wantTwin(t, res)
	assert.Equal(t, map[string]json.RawMessage{"site": json.RawMessage(`"paris"`)}, v4.Tags, "tags after PUT")
	assert.JSONEq(t, `"eco"`, string(v4.Properties.Desired["mode"]), "desired after PUT")
	assert.NotContains(t, v4.Properties.Desired, "fw", "desired after PUT")
	assert.Equal(t, sectionVersion(t, cur.Properties.Desired)+1, sectionVersion(t, v4.Properties.Desired), "desired $version after PUT")
	assert.Greater(t, v4.Version, cur.Version, "twin version after PUT")

	// A twin read from the hub can be sent back as it is: read-only
	// fields, $version and $metadata are ignored, reported properties
	// that are only $version and $metadata are accepted.
	get := h.twin(http.MethodGet, "dev1", "", nil)
	wantTwin(t, h.twin(http.MethodPut, "dev1", string(get.body), nil))
}

func TestTwinModules(t *testing.T) {
	h := newTestHub(t)
	h.createDevice("dev1")
	h.createModule("dev1", "m1")
	tw := wantTwin(t, h.twin(http.MethodGet, "dev1/modules/m1", "", nil))
	assert.Equal(t, "dev1", tw.DeviceID)
	assert.Equal(t, "m1", tw.ModuleID)
	assert.Equal(t, int64(2), tw.Version)
	tw = wantTwin(t, h.twin(http.MethodPatch, "dev1/modules/m1", `{"properties":{"desired":{"rate":5}}}`, map[string]string{"If-Match": tw.ETag}))
	assert.JSONEq(t, `5`, string(tw.Properties.Desired["rate"]))
	tw = wantTwin(t, h.twin(http.MethodPut, "dev1/modules/m1", `{"moduleId":"m1","tags":{"x":true}}`, nil))
	assert.NotContains(t, tw.Properties.Desired, "rate", "desired after PUT without desired")
	assert.JSONEq(t, `true`, string(tw.Tags["x"]))
	// The device's twin is separate.
	dev := wantTwin(t, h.twin(http.MethodGet, "dev1", "", nil))
	assert.Empty(t, dev.Tags, "device tags")
	assert.Equal(t, int64(1), sectionVersion(t, dev.Properties.Desired), "device desired $version")

	wantRegistryError(t, h.twin(http.MethodPatch, "dev1/modules/m9", `{}`, nil), engine.CodeModuleNotFound)
	wantRegistryError(t, h.twin(http.MethodPut, "dev9/modules/m1", `{}`, nil), engine.CodeDeviceNotFound)
	// An id in the body that names another twin is refused.
	wantRegistryError(t, h.twin(http.MethodPut, "dev1/modules/m1", `{"moduleId":"m2"}`, nil), engine.CodeArgumentInvalid)
	wantRegistryError(t, h.twin(http.MethodPatch, "dev1", `{"deviceId":"dev2"}`, nil), engine.CodeArgumentInvalid)
}

func TestTwinBadBodies(t *testing.T) {
	h := newTestHub(t)
	h.createDevice("dev1")
	before := wantTwin(t, h.twin(http.MethodGet, "dev1", "", nil))
	for _, tc := range []struct{ name, body string }{
		{"empty", ``},
		{"not JSON", `{`},
		{"not an object", `[]`},
		{"null", `null`},
		{"trailing data", `{} {}`},
		{"tags not an object", `{"tags":[1]}`},
		{"desired not an object", `{"properties":{"desired":"x"}}`},
		{"properties not an object", `{"properties":1}`},
		{"dot in a key", `{"tags":{"a.b":1}}`},
		{"dollar in a key", `{"properties":{"desired":{"$x":1}}}`},
		{"space in a key", `{"properties":{"desired":{"a":{"b c":1}}}}`},
		{"control character in a key", `{"tags":{"a\u0007":1}}`},
		{"null in an array", `{"tags":{"a":[1,null]}}`},
		{"too deep", `{"tags":` + strings.Repeat(`{"a":`, 12) + `1` + strings.Repeat(`}`, 12) + `}`},
		{"long string", `{"tags":{"a":"` + strings.Repeat("x", 5000) + `"}}`},
	} {
		for _, method := range []string{http.MethodPatch, http.MethodPut} {
			t.Run(method+" "+tc.name, func(t *testing.T) {
				wantRegistryError(t, h.in(t).twin(method, "dev1", tc.body, nil), engine.CodeArgumentInvalid)
			})
		}
	}
	// Over the size limits: 403100 DeviceModelMaxPropertiesExceeded.
	big := `{"tags":{"a":"` + strings.Repeat("x", 4000) + `","b":"` + strings.Repeat("x", 4000) + `","c":"` + strings.Repeat("x", 4000) + `"}}`
	for _, method := range []string{http.MethodPatch, http.MethodPut} {
		wantRegistryError(t, h.twin(method, "dev1", big, nil), engine.CodeDeviceModelMaxPropertiesExceeded)
	}
	// A null member only deletes in a patch; a replacement has none.
	wantRegistryError(t, h.twin(http.MethodPut, "dev1", `{"tags":{"a":null}}`, nil), engine.CodeArgumentInvalid)
	// Bodies over the bound are refused before they are parsed.
	huge := `{"tags":{"a":"` + strings.Repeat("x", maxTwinBody) + `"}}`
	wantRegistryError(t, h.twin(http.MethodPatch, "dev1", huge, nil), engine.CodeMessageTooLarge)
	// Nothing above changed the twin.
	after := wantTwin(t, h.twin(http.MethodGet, "dev1", "", nil))
	assert.Equal(t, before.ETag, after.ETag, "a refused request changed the twin")
	// A byte order mark and surrounding whitespace are skipped.
	wantTwin(t, h.twin(http.MethodPatch, "dev1", "\xef\xbb\xbf \n{\"tags\":{\"bom\":1}}\n", nil))
}

func TestTwinAuthorization(t *testing.T) {
	h := newTestHub(t)
	h.createDevice("dev1")
	get := request{method: http.MethodGet, path: "/twins/dev1?" + apiVersion}
	patch := request{method: http.MethodPatch, path: "/twins/dev1?" + apiVersion, body: `{"tags":{"a":1}}`}
	put := request{method: http.MethodPut, path: "/twins/dev1/?" + apiVersion, body: `{"tags":{"a":2}}`}
	h.e.AddBearerToken("good-bearer", time.Now().Add(time.Hour))
	for _, tc := range []struct {
		name   string
		rq     request
		policy string // "" sends no Authorization header
		ok     bool
	}{
		{"registryRead reads", get, "registryRead", true},
		{"service reads", get, "service", true},
		{"registryReadWrite reads", get, "registryReadWrite", true},
		{"device policy reads", get, "device", false},
		{"no header", get, "", false},
		{"registryRead patches", patch, "registryRead", false},
		{"registryRead replaces", put, "registryRead", false},
		{"service patches", patch, "service", true},
		{"service replaces", put, "service", true},
		{"registryReadWrite patches", patch, "registryReadWrite", true},
		{"owner replaces", put, "iothubowner", true},
		{"device policy patches", patch, "device", false},
		{"bearer patches", patch, "bearer", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := h.in(t)
			rq := tc.rq
			switch tc.policy {
			case "":
			case "bearer":
				rq.auth = "Bearer good-bearer"
			default:
				rq.auth = h.token(tc.policy)
			}
			res := h.do(rq)
			if tc.ok {
				wantTwin(t, res)
				return
			}
			msg := wantRegistryError(t, res, engine.CodeUnauthorized)
			assert.NotContains(t, msg, "sig=", "the refusal echoes the token")
		})
	}
	// A token scoped to one twin reads that twin and no other.
	h.createDevice("dev2")
	owner := h.tokenAt("iothubowner", testHost+"/twins/dev1", time.Now().Add(time.Hour))
	wantTwin(t, h.do(request{method: http.MethodGet, path: "/twins/dev1?" + apiVersion, auth: owner}))
	wantRegistryError(t, h.do(request{method: http.MethodGet, path: "/twins/dev2?" + apiVersion, auth: owner}), engine.CodeUnauthorized)
	// api-version is required.
	wantRegistryError(t, h.do(request{method: http.MethodGet, path: "/twins/dev1", auth: h.token("service")}), engine.CodeInvalidProtocolVersion)
}

// desiredDevice is a connected device that records desired patches.
type desiredDevice struct {
	fakeDevice
	mu      sync.Mutex
	patches []string
	got     chan struct{}
}

func (d *desiredDevice) SendDesired(version int64, body []byte) error {
	d.mu.Lock()
	d.patches = append(d.patches, strconv.FormatInt(version, 10)+" "+string(body))
	d.mu.Unlock()
	select {
	case d.got <- struct{}{}:
	default:
	}
	return nil
}

// A desired patch made over REST reaches the subscribed device, in order.
func TestTwinPatchPushesDesired(t *testing.T) {
	h := newTestHub(t)
	h.createDevice("dev1")
	d := &desiredDevice{got: make(chan struct{}, 16)}
	s := h.e.Connect(auth.Identity{DeviceID: "dev1"}, d, time.Time{})
	t.Cleanup(s.Disconnect)
	s.SetDesiredSubscribed(true)

	wantTwin(t, h.twin(http.MethodPatch, "dev1", `{"properties":{"desired":{"a":1}}}`, nil))
	wantTwin(t, h.twin(http.MethodPatch, "dev1", `{"tags":{"only":"tags"}}`, nil)) // no desired change, no push
	wantTwin(t, h.twin(http.MethodPut, "dev1", `{"properties":{"desired":{"b":{"c":true}}}}`, nil))
	// The engine sends before the request is answered.
	d.mu.Lock()
	defer d.mu.Unlock()
	assert.Equal(t, []string{`2 {"$version":2,"a":1}`, `3 {"$version":3,"b":{"c":true}}`}, d.patches, "desired patches the device received")
}

func TestTwinRoutes(t *testing.T) {
	h := newTestHub(t)
	h.createDevice("a#b")
	// Ids are escaped path segments; literals are case-insensitive.
	tw := wantTwin(t, h.registry(http.MethodGet, "/TWINS/a%23b", "", nil))
	assert.Equal(t, "a#b", tw.DeviceID)
	// The method routes still work next to the twin routes.
	res := h.do(request{method: http.MethodPost, path: "/twins/a%23b/methods?" + apiVersion, body: `{"methodName":"m"}`, auth: h.token("service")})
	wantMethodError(t, res, engine.CodeDeviceNotOnline)
	for _, m := range []string{http.MethodPost, http.MethodDelete} {
		for _, p := range []string{"/twins/a%23b", "/twins/a%23b/modules/m"} {
			res := h.do(request{method: m, path: p + "?" + apiVersion, auth: h.token("iothubowner")})
			require.Equal(t, http.StatusMethodNotAllowed, res.status, "%s %s: body %s", m, p, res.body)
			assert.Equal(t, "GET, PATCH, PUT", res.header.Get("Allow"), "%s %s", m, p)
		}
	}
	// An injected fault answers a twin request in the registry shape.
	h.e.FailServiceRequests(engine.CodeThrottling, 1)
	wantRegistryError(t, h.registry(http.MethodGet, "/twins/a%23b", "", nil), engine.CodeThrottling)
}
