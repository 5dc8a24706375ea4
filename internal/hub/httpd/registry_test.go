package httpd

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

func decodeJSON[T any](t *testing.T, res response) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(res.body, &v); err != nil {
		t.Fatalf("status %d, body not JSON: %v: %s", res.status, err, res.body)
	}
	return v
}

func wantOK(t *testing.T, res response) {
	t.Helper()
	if res.status != http.StatusOK {
		t.Fatalf("status %d: %s", res.status, res.body)
	}
	if ct := res.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
}

func wantKey32(t *testing.T, k *string) {
	t.Helper()
	if k == nil {
		t.Fatal("key missing")
	}
	b, err := base64.StdEncoding.DecodeString(*k)
	if err != nil || len(b) != 32 {
		t.Errorf("key %q is not base64 of 32 bytes", *k)
	}
}

func TestDeviceLifecycle(t *testing.T) {
	h := newTestHub(t)

	// Create without If-Match: 200, generated keys, quoted ETag header.
	res := h.registry(http.MethodPut, "/devices/dev1", `{"deviceId":"dev1"}`, nil)
	wantOK(t, res)
	d := decodeJSON[engine.Device](t, res)
	if d.DeviceID != "dev1" || d.Status != "enabled" || d.ETag == "" || d.GenerationID == "" ||
		d.Authentication.Type != "sas" || d.ConnectionState != "Disconnected" {
		t.Fatalf("created device = %+v", d)
	}
	wantKey32(t, d.Authentication.SymmetricKey.PrimaryKey)
	wantKey32(t, d.Authentication.SymmetricKey.SecondaryKey)
	if got := res.header.Get("ETag"); got != `"`+d.ETag+`"` {
		t.Errorf("ETag header = %q, want %q", got, `"`+d.ETag+`"`)
	}
	// IoT Hub's field names are on the wire.
	for _, f := range []string{`"deviceId"`, `"generationId"`, `"etag"`, `"connectionState"`, `"statusReason":null`,
		`"authentication"`, `"symmetricKey"`, `"x509Thumbprint"`, `"capabilities"`, `"parentScopes":[]`} {
		if !strings.Contains(string(res.body), f) {
			t.Errorf("body lacks %s: %s", f, res.body)
		}
	}

	// Duplicate create.
	wantError(t, h.registry(http.MethodPut, "/devices/dev1", `{}`, nil), engine.CodeDeviceAlreadyExists)

	// Get.
	res = h.registry(http.MethodGet, "/devices/dev1", "", nil)
	wantOK(t, res)
	if g := decodeJSON[engine.Device](t, res); g.ETag != d.ETag || *g.Authentication.SymmetricKey.PrimaryKey != *d.Authentication.SymmetricKey.PrimaryKey {
		t.Errorf("get = %+v", g)
	}
	if got := res.header.Get("ETag"); got != `"`+d.ETag+`"` {
		t.Errorf("GET ETag header = %q", got)
	}

	// Update with the current etag, in each accepted If-Match form.
	etag := d.ETag
	for _, form := range []string{`"%s"`, `%s`, `W/"%s"`} {
		ifMatch := strings.ReplaceAll(form, "%s", etag)
		res = h.registry(http.MethodPut, "/devices/dev1", `{"deviceId":"dev1","status":"disabled","statusReason":"maintenance"}`,
			map[string]string{"If-Match": ifMatch})
		wantOK(t, res)
		u := decodeJSON[engine.Device](t, res)
		if u.Status != "disabled" || u.StatusReason == nil || *u.StatusReason != "maintenance" || u.ETag == etag {
			t.Fatalf("If-Match %s: updated = %+v", ifMatch, u)
		}
		etag = u.ETag
	}

	// A stale etag is 412; * and "*" force.
	wantError(t, h.registry(http.MethodPut, "/devices/dev1", `{}`, map[string]string{"If-Match": `"` + d.ETag + `"`}), engine.CodePreconditionFailed)
	for _, star := range []string{`*`, `"*"`} {
		res = h.registry(http.MethodPut, "/devices/dev1", `{"status":"enabled"}`, map[string]string{"If-Match": star})
		wantOK(t, res)
	}
	// Updating a device that does not exist.
	wantError(t, h.registry(http.MethodPut, "/devices/ghost", `{}`, map[string]string{"If-Match": "*"}), engine.CodeDeviceNotFound)

	// Delete with a stale etag is 412, then 204 with no body, then 404.
	wantError(t, h.registry(http.MethodDelete, "/devices/dev1", "", map[string]string{"If-Match": `"` + d.ETag + `"`}), engine.CodePreconditionFailed)
	res = h.registry(http.MethodDelete, "/devices/dev1", "", map[string]string{"If-Match": `"*"`})
	if res.status != http.StatusNoContent || len(res.body) != 0 {
		t.Fatalf("delete: %d %q", res.status, res.body)
	}
	wantError(t, h.registry(http.MethodGet, "/devices/dev1", "", nil), engine.CodeDeviceNotFound)
	wantError(t, h.registry(http.MethodDelete, "/devices/dev1", "", nil), engine.CodeDeviceNotFound)
}

func TestDeviceDeleteWithoutIfMatch(t *testing.T) {
	h := newTestHub(t)
	h.createDevice("dev1")
	res := h.registry(http.MethodDelete, "/devices/dev1", "", nil)
	if res.status != http.StatusNoContent {
		t.Fatalf("status %d: %s", res.status, res.body)
	}
}

func TestDeviceAuthentication(t *testing.T) {
	h := newTestHub(t)
	key16 := base64.StdEncoding.EncodeToString(make([]byte, 16))
	key64 := base64.StdEncoding.EncodeToString(make([]byte, 64))
	key15 := base64.StdEncoding.EncodeToString(make([]byte, 15))
	key65 := base64.StdEncoding.EncodeToString(make([]byte, 65))
	const sha1 = "0123456789abcdef0123456789abcdef01234567"
	sha256 := strings.Repeat("ab", 32)

	// Supplied keys of valid length are kept.
	res := h.registry(http.MethodPut, "/devices/keys",
		`{"authentication":{"type":"sas","symmetricKey":{"primaryKey":"`+key16+`","secondaryKey":"`+key64+`"}}}`, nil)
	wantOK(t, res)
	d := decodeJSON[engine.Device](t, res)
	if *d.Authentication.SymmetricKey.PrimaryKey != key16 || *d.Authentication.SymmetricKey.SecondaryKey != key64 {
		t.Errorf("keys not kept: %+v", d.Authentication.SymmetricKey)
	}

	for name, body := range map[string]string{
		"short key":      `{"authentication":{"type":"sas","symmetricKey":{"primaryKey":"` + key15 + `"}}}`,
		"long key":       `{"authentication":{"symmetricKey":{"secondaryKey":"` + key65 + `"}}}`,
		"not base64":     `{"authentication":{"symmetricKey":{"primaryKey":"!!!notbase64!!!"}}}`,
		"unknown type":   `{"authentication":{"type":"password"}}`,
		"no thumbprint":  `{"authentication":{"type":"selfSigned"}}`,
		"bad thumbprint": `{"authentication":{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"xyz"}}}`,
		"bad status":     `{"status":"paused"}`,
		"id mismatch":    `{"deviceId":"other"}`,
	} {
		t.Run(name, func(t *testing.T) {
			wantError(t, h.registry(http.MethodPut, "/devices/rejected", body, nil), engine.CodeArgumentInvalid)
		})
	}

	// Self-signed with SHA-1 and SHA-256 thumbprints.
	res = h.registry(http.MethodPut, "/devices/x509",
		`{"authentication":{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"`+sha1+`","secondaryThumbprint":"`+sha256+`"}}}`, nil)
	wantOK(t, res)
	d = decodeJSON[engine.Device](t, res)
	if d.Authentication.Type != "selfSigned" || d.Authentication.X509Thumbprint.PrimaryThumbprint == nil ||
		!strings.EqualFold(*d.Authentication.X509Thumbprint.PrimaryThumbprint, sha1) ||
		d.Authentication.SymmetricKey.PrimaryKey != nil {
		t.Errorf("selfSigned device = %+v", d.Authentication)
	}

	// CA-signed.
	res = h.registry(http.MethodPut, "/devices/ca", `{"authentication":{"type":"certificateAuthority"}}`, nil)
	wantOK(t, res)
	if d = decodeJSON[engine.Device](t, res); d.Authentication.Type != "certificateAuthority" {
		t.Errorf("CA device = %+v", d.Authentication)
	}
}

func TestRegistryBadBodies(t *testing.T) {
	h := newTestHub(t)
	h.createDevice("dev1")
	common := []string{"", "null", "[]", "{", `{"authentication":"sas"}`, `{"authentication":{"type":1}}`, `{} {}`}
	for _, body := range append(common, `{"status":5}`, `{"capabilities":{"iotEdge":"yes"}}`) {
		t.Run("device "+body, func(t *testing.T) {
			wantError(t, h.registry(http.MethodPut, "/devices/bad", body, nil), engine.CodeIotHubFormatError)
		})
	}
	for _, body := range append(common, `{"managedBy":[]}`) {
		t.Run("module "+body, func(t *testing.T) {
			wantError(t, h.registry(http.MethodPut, "/devices/dev1/modules/bad", body, nil), engine.CodeIotHubFormatError)
		})
	}
	huge := `{"statusReason":"` + strings.Repeat("x", 2*maxRegistryBody) + `"}`
	wantError(t, h.registry(http.MethodPut, "/devices/bad", huge, nil), engine.CodeMessageTooLarge)
	wantError(t, h.registry(http.MethodGet, "/devices/bad", "", nil), engine.CodeDeviceNotFound)
	// Unknown fields and read-only fields are ignored.
	res := h.registry(http.MethodPut, "/devices/extra", `{"deviceId":"extra","etag":"bogus","connectionState":"Connected","whatever":[1,2]}`, nil)
	wantOK(t, res)
	if d := decodeJSON[engine.Device](t, res); d.ETag == "bogus" || d.ConnectionState != "Disconnected" {
		t.Errorf("device = %+v", d)
	}
}

func TestModuleLifecycle(t *testing.T) {
	h := newTestHub(t)
	h.createDevice("edge")

	wantError(t, h.registry(http.MethodPut, "/devices/nodev/modules/m1", `{}`, nil), engine.CodeDeviceNotFound)
	wantError(t, h.registry(http.MethodGet, "/devices/nodev/modules/m1", "", nil), engine.CodeDeviceNotFound)
	wantError(t, h.registry(http.MethodGet, "/devices/nodev/modules", "", nil), engine.CodeDeviceNotFound)
	wantError(t, h.registry(http.MethodGet, "/devices/edge/modules/m1", "", nil), engine.CodeModuleNotFound)

	res := h.registry(http.MethodPut, "/devices/edge/modules/m1", `{"moduleId":"m1","deviceId":"edge","managedBy":"iotEdge"}`, nil)
	wantOK(t, res)
	m := decodeJSON[engine.Module](t, res)
	if m.ModuleID != "m1" || m.DeviceID != "edge" || m.ManagedBy == nil || *m.ManagedBy != "iotEdge" || m.ETag == "" {
		t.Fatalf("module = %+v", m)
	}
	wantKey32(t, m.Authentication.SymmetricKey.PrimaryKey)
	if got := res.header.Get("ETag"); got != `"`+m.ETag+`"` {
		t.Errorf("ETag header = %q", got)
	}
	if !strings.Contains(string(res.body), `"moduleId":"m1"`) || !strings.Contains(string(res.body), `"managedBy":"iotEdge"`) {
		t.Errorf("body = %s", res.body)
	}

	wantError(t, h.registry(http.MethodPut, "/devices/edge/modules/m1", `{}`, nil), engine.CodeModuleAlreadyExistsOnDevice)

	res = h.registry(http.MethodGet, "/devices/edge/modules/m1", "", nil)
	wantOK(t, res)
	if g := decodeJSON[engine.Module](t, res); g.ETag != m.ETag {
		t.Errorf("get = %+v", g)
	}

	// Update: stale etag 412, current etag 200, * forces.
	res = h.registry(http.MethodPut, "/devices/edge/modules/m1", `{}`, map[string]string{"If-Match": `"` + m.ETag + `"`})
	wantOK(t, res)
	wantError(t, h.registry(http.MethodPut, "/devices/edge/modules/m1", `{}`, map[string]string{"If-Match": `"` + m.ETag + `"`}), engine.CodePreconditionFailed)
	wantOK(t, h.registry(http.MethodPut, "/devices/edge/modules/m1", `{}`, map[string]string{"If-Match": "*"}))
	wantError(t, h.registry(http.MethodPut, "/devices/edge/modules/m9", `{}`, map[string]string{"If-Match": "*"}), engine.CodeModuleNotFound)

	h.createModule("edge", "m0")
	res = h.registry(http.MethodGet, "/devices/edge/modules", "", nil)
	wantOK(t, res)
	mods := decodeJSON[[]engine.Module](t, res)
	if len(mods) != 2 || mods[0].ModuleID != "m0" || mods[1].ModuleID != "m1" {
		t.Errorf("modules = %+v", mods)
	}

	wantError(t, h.registry(http.MethodDelete, "/devices/edge/modules/m1", "", map[string]string{"If-Match": `"stale"`}), engine.CodePreconditionFailed)
	res = h.registry(http.MethodDelete, "/devices/edge/modules/m1", "", map[string]string{"If-Match": `"*"`})
	if res.status != http.StatusNoContent || len(res.body) != 0 {
		t.Fatalf("delete: %d %q", res.status, res.body)
	}
	wantError(t, h.registry(http.MethodGet, "/devices/edge/modules/m1", "", nil), engine.CodeModuleNotFound)
	wantError(t, h.registry(http.MethodDelete, "/devices/edge/modules/m1", "", nil), engine.CodeModuleNotFound)

	// An empty module list is [] rather than null.
	h.createDevice("bare")
	res = h.registry(http.MethodGet, "/devices/bare/modules", "", nil)
	wantOK(t, res)
	if string(res.body) != "[]" {
		t.Errorf("empty list = %s", res.body)
	}
}

func TestListDevices(t *testing.T) {
	h := newTestHub(t)
	res := h.registry(http.MethodGet, "/devices", "", nil)
	wantOK(t, res)
	if string(res.body) != "[]" {
		t.Errorf("empty list = %s", res.body)
	}
	for _, id := range []string{"c", "a", "b"} {
		h.createDevice(id)
	}
	res = h.registry(http.MethodGet, "/devices", "", nil)
	wantOK(t, res)
	if ds := decodeJSON[[]engine.Device](t, res); len(ds) != 3 || ds[0].DeviceID != "a" || ds[2].DeviceID != "c" {
		t.Errorf("list = %+v", ds)
	}
	res = h.do(request{method: http.MethodGet, path: "/devices?top=2&" + apiVersion, auth: h.token("registryRead")})
	wantOK(t, res)
	if ds := decodeJSON[[]engine.Device](t, res); len(ds) != 2 || ds[1].DeviceID != "b" {
		t.Errorf("top=2 list = %+v", ds)
	}
	for _, top := range []string{"1", "1000"} {
		wantOK(t, h.do(request{method: http.MethodGet, path: "/devices?" + apiVersion + "&top=" + top, auth: h.token("registryRead")}))
	}
	for _, top := range []string{"0", "1001", "-1", "x", "2.5"} {
		t.Run(top, func(t *testing.T) {
			wantError(t, h.do(request{method: http.MethodGet, path: "/devices?top=" + top + "&" + apiVersion, auth: h.token("registryRead")}),
				engine.CodeArgumentInvalid)
		})
	}
}

func TestRegistrySpecialCharacterIDs(t *testing.T) {
	h := newTestHub(t)
	// A space is not a valid id character: 400 from the engine.
	wantError(t, h.registry(http.MethodPut, "/devices/a%20b", `{}`, nil), engine.CodeArgumentInvalid)
	const good = "a#b?c%d$'()=@"
	res := h.registry(http.MethodPut, "/devices/a%23b%3Fc%25d$'()=@", `{}`, nil)
	wantOK(t, res)
	if d := decodeJSON[engine.Device](t, res); d.DeviceID != good {
		t.Errorf("deviceId = %q, want %q", d.DeviceID, good)
	}
	if _, herr := h.e.GetDevice(good); herr != nil {
		t.Error(herr)
	}
	// Lower-case hex escapes name the same id.
	wantOK(t, h.registry(http.MethodGet, "/devices/a%23b%3fc%25d$'()=@", "", nil))
	// An encoded slash is part of the id, not a path separator.
	wantError(t, h.registry(http.MethodGet, "/devices/a%2Fb/modules", "", nil), engine.CodeDeviceNotFound)
}
