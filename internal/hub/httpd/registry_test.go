package httpd

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

func decodeJSON[T any](t *testing.T, res response) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal(res.body, &v), "status %d, body not JSON: %s", res.status, res.body)
	return v
}

func wantOK(t *testing.T, res response) {
	t.Helper()
	require.Equal(t, http.StatusOK, res.status, "body %s", res.body)
	assert.Equal(t, "application/json; charset=utf-8", res.header.Get("Content-Type"), "Content-Type")
}

func wantKey32(t *testing.T, k *string) {
	t.Helper()
	require.NotNil(t, k, "key missing")
	b, err := base64.StdEncoding.DecodeString(*k)
	if assert.NoError(t, err, "key %q is not base64", *k) {
		assert.Len(t, b, 32, "key %q is not base64 of 32 bytes", *k)
	}
}

func TestDeviceLifecycle(t *testing.T) {
	h := newTestHub(t)

	// Create without If-Match: 200, generated keys, quoted ETag header.
	res := h.registry(http.MethodPut, "/devices/dev1", `{"deviceId":"dev1"}`, nil)
	wantOK(t, res)
	d := decodeJSON[engine.Device](t, res)
	require.Equal(t, "dev1", d.DeviceID, "created device = %+v", d)
	require.Equal(t, "enabled", d.Status, "created device = %+v", d)
	require.NotEmpty(t, d.ETag, "created device = %+v", d)
	require.NotEmpty(t, d.GenerationID, "created device = %+v", d)
	require.Equal(t, "sas", d.Authentication.Type, "created device = %+v", d)
	require.Equal(t, "Disconnected", d.ConnectionState, "created device = %+v", d)
	wantKey32(t, d.Authentication.SymmetricKey.PrimaryKey)
	wantKey32(t, d.Authentication.SymmetricKey.SecondaryKey)
	assert.Equal(t, `"`+d.ETag+`"`, res.header.Get("ETag"), "ETag header")
	// IoT Hub's field names are on the wire.
	for _, f := range []string{`"deviceId"`, `"generationId"`, `"etag"`, `"connectionState"`, `"statusReason":null`,
		`"authentication"`, `"symmetricKey"`, `"x509Thumbprint"`, `"capabilities"`, `"parentScopes":[]`} {
		assert.Contains(t, string(res.body), f, "body lacks a field")
	}

	// Duplicate create.
	wantError(t, h.registry(http.MethodPut, "/devices/dev1", `{}`, nil), engine.CodeDeviceAlreadyExists)

	// Get.
	res = h.registry(http.MethodGet, "/devices/dev1", "", nil)
	wantOK(t, res)
	g := decodeJSON[engine.Device](t, res)
	assert.Equal(t, d.ETag, g.ETag, "get = %+v", g)
	if assert.NotNil(t, g.Authentication.SymmetricKey.PrimaryKey, "get = %+v", g) {
		assert.Equal(t, *d.Authentication.SymmetricKey.PrimaryKey, *g.Authentication.SymmetricKey.PrimaryKey, "get's primary key")
	}
	assert.Equal(t, `"`+d.ETag+`"`, res.header.Get("ETag"), "GET ETag header")

	// Update with the current etag, in each accepted If-Match form.
	etag := d.ETag
	for _, form := range []string{`"%s"`, `%s`, `W/"%s"`} {
		ifMatch := strings.ReplaceAll(form, "%s", etag)
		res = h.registry(http.MethodPut, "/devices/dev1", `{"deviceId":"dev1","status":"disabled","statusReason":"maintenance"}`,
			map[string]string{"If-Match": ifMatch})
		wantOK(t, res)
		u := decodeJSON[engine.Device](t, res)
		require.Equal(t, "disabled", u.Status, "If-Match %s: updated = %+v", ifMatch, u)
		require.NotNil(t, u.StatusReason, "If-Match %s: updated = %+v", ifMatch, u)
		require.Equal(t, "maintenance", *u.StatusReason, "If-Match %s: updated = %+v", ifMatch, u)
		require.NotEqual(t, etag, u.ETag, "If-Match %s: the etag did not change", ifMatch)
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
	require.Equal(t, http.StatusNoContent, res.status, "delete: %q", res.body)
	require.Empty(t, res.body, "delete")
	wantError(t, h.registry(http.MethodGet, "/devices/dev1", "", nil), engine.CodeDeviceNotFound)
	wantError(t, h.registry(http.MethodDelete, "/devices/dev1", "", nil), engine.CodeDeviceNotFound)
}

func TestDeviceDeleteWithoutIfMatch(t *testing.T) {
	h := newTestHub(t)
	h.createDevice("dev1")
	res := h.registry(http.MethodDelete, "/devices/dev1", "", nil)
	require.Equal(t, http.StatusNoContent, res.status, "body %s", res.body)
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
	assert.Equal(t, key16, deref(d.Authentication.SymmetricKey.PrimaryKey), "primary key not kept")
	assert.Equal(t, key64, deref(d.Authentication.SymmetricKey.SecondaryKey), "secondary key not kept")

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
			wantError(t, h.in(t).registry(http.MethodPut, "/devices/rejected", body, nil), engine.CodeArgumentInvalid)
		})
	}

	// Self-signed with SHA-1 and SHA-256 thumbprints.
	res = h.registry(http.MethodPut, "/devices/x509",
		`{"authentication":{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"`+sha1+`","secondaryThumbprint":"`+sha256+`"}}}`, nil)
	wantOK(t, res)
	d = decodeJSON[engine.Device](t, res)
	assert.Equal(t, "selfSigned", d.Authentication.Type, "selfSigned device = %+v", d.Authentication)
	if assert.NotNil(t, d.Authentication.X509Thumbprint.PrimaryThumbprint, "selfSigned device = %+v", d.Authentication) {
		assert.True(t, strings.EqualFold(*d.Authentication.X509Thumbprint.PrimaryThumbprint, sha1),
			"primary thumbprint %q, want %q", *d.Authentication.X509Thumbprint.PrimaryThumbprint, sha1)
	}
	assert.Nil(t, d.Authentication.SymmetricKey.PrimaryKey, "selfSigned device has a key")

	// CA-signed.
	res = h.registry(http.MethodPut, "/devices/ca", `{"authentication":{"type":"certificateAuthority"}}`, nil)
	wantOK(t, res)
	d = decodeJSON[engine.Device](t, res)
	assert.Equal(t, "certificateAuthority", d.Authentication.Type, "CA device = %+v", d.Authentication)
}

func TestRegistryBadBodies(t *testing.T) {
	h := newTestHub(t)
	h.createDevice("dev1")
	common := []string{"", "null", "[]", "{", `{"authentication":"sas"}`, `{"authentication":{"type":1}}`, `{} {}`}
	for _, body := range append(common, `{"status":5}`, `{"capabilities":{"iotEdge":"yes"}}`) {
		t.Run("device "+body, func(t *testing.T) {
			wantError(t, h.in(t).registry(http.MethodPut, "/devices/bad", body, nil), engine.CodeIotHubFormatError)
		})
	}
	for _, body := range append(common, `{"managedBy":[]}`) {
		t.Run("module "+body, func(t *testing.T) {
			wantError(t, h.in(t).registry(http.MethodPut, "/devices/dev1/modules/bad", body, nil), engine.CodeIotHubFormatError)
		})
	}
	huge := `{"statusReason":"` + strings.Repeat("x", 2*maxRegistryBody) + `"}`
	wantError(t, h.registry(http.MethodPut, "/devices/bad", huge, nil), engine.CodeMessageTooLarge)
	wantError(t, h.registry(http.MethodGet, "/devices/bad", "", nil), engine.CodeDeviceNotFound)
	// Unknown fields and read-only fields are ignored.
	res := h.registry(http.MethodPut, "/devices/extra", `{"deviceId":"extra","etag":"bogus","connectionState":"Connected","whatever":[1,2]}`, nil)
	wantOK(t, res)
	d := decodeJSON[engine.Device](t, res)
	assert.NotEqual(t, "bogus", d.ETag, "a read-only etag was taken")
	assert.Equal(t, "Disconnected", d.ConnectionState, "a read-only connection state was taken")
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
	require.Equal(t, "m1", m.ModuleID, "module = %+v", m)
	require.Equal(t, "edge", m.DeviceID, "module = %+v", m)
	require.NotNil(t, m.ManagedBy, "module = %+v", m)
	require.Equal(t, "iotEdge", *m.ManagedBy, "module = %+v", m)
	require.NotEmpty(t, m.ETag, "module = %+v", m)
	wantKey32(t, m.Authentication.SymmetricKey.PrimaryKey)
	assert.Equal(t, `"`+m.ETag+`"`, res.header.Get("ETag"), "ETag header")
	assert.Contains(t, string(res.body), `"moduleId":"m1"`, "body")
	assert.Contains(t, string(res.body), `"managedBy":"iotEdge"`, "body")

	wantError(t, h.registry(http.MethodPut, "/devices/edge/modules/m1", `{}`, nil), engine.CodeModuleAlreadyExistsOnDevice)

	res = h.registry(http.MethodGet, "/devices/edge/modules/m1", "", nil)
	wantOK(t, res)
	g := decodeJSON[engine.Module](t, res)
	assert.Equal(t, m.ETag, g.ETag, "get = %+v", g)

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
	if assert.Len(t, mods, 2, "modules") {
		assert.Equal(t, "m0", mods[0].ModuleID, "first module")
		assert.Equal(t, "m1", mods[1].ModuleID, "second module")
	}

	wantError(t, h.registry(http.MethodDelete, "/devices/edge/modules/m1", "", map[string]string{"If-Match": `"stale"`}), engine.CodePreconditionFailed)
	res = h.registry(http.MethodDelete, "/devices/edge/modules/m1", "", map[string]string{"If-Match": `"*"`})
	require.Equal(t, http.StatusNoContent, res.status, "delete: %q", res.body)
	require.Empty(t, res.body, "delete")
	wantError(t, h.registry(http.MethodGet, "/devices/edge/modules/m1", "", nil), engine.CodeModuleNotFound)
	wantError(t, h.registry(http.MethodDelete, "/devices/edge/modules/m1", "", nil), engine.CodeModuleNotFound)

	// An empty module list is [] rather than null.
	h.createDevice("bare")
	res = h.registry(http.MethodGet, "/devices/bare/modules", "", nil)
	wantOK(t, res)
	assert.Equal(t, "[]", string(res.body), "empty list")
}

func TestListDevices(t *testing.T) {
	h := newTestHub(t)
	res := h.registry(http.MethodGet, "/devices", "", nil)
	wantOK(t, res)
	assert.Equal(t, "[]", string(res.body), "empty list")
	for _, id := range []string{"c", "a", "b"} {
		h.createDevice(id)
	}
	res = h.registry(http.MethodGet, "/devices", "", nil)
	wantOK(t, res)
	ds := decodeJSON[[]engine.Device](t, res)
	if assert.Len(t, ds, 3, "list") {
		assert.Equal(t, "a", ds[0].DeviceID, "first device listed")
		assert.Equal(t, "c", ds[2].DeviceID, "last device listed")
	}
	res = h.do(request{method: http.MethodGet, path: "/devices?top=2&" + apiVersion, auth: h.token("registryRead")})
	wantOK(t, res)
	ds = decodeJSON[[]engine.Device](t, res)
	if assert.Len(t, ds, 2, "top=2 list") {
		assert.Equal(t, "b", ds[1].DeviceID, "top=2 list's second device")
	}
	for _, top := range []string{"1", "1000"} {
		wantOK(t, h.do(request{method: http.MethodGet, path: "/devices?" + apiVersion + "&top=" + top, auth: h.token("registryRead")}))
	}
	for _, top := range []string{"0", "1001", "-1", "x", "2.5"} {
		t.Run(top, func(t *testing.T) {
			h := h.in(t)
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
	assert.Equal(t, good, decodeJSON[engine.Device](t, res).DeviceID, "deviceId")
	_, herr := h.e.GetDevice(good)
	assert.Nil(t, herr, "get %q", good)
	// Lower-case hex escapes name the same id.
	wantOK(t, h.registry(http.MethodGet, "/devices/a%23b%3fc%25d$'()=@", "", nil))
	// An encoded slash is part of the id, not a path separator.
	wantError(t, h.registry(http.MethodGet, "/devices/a%2Fb/modules", "", nil), engine.CodeDeviceNotFound)
}
