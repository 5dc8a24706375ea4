package httpd

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

func TestBulkRegistry(t *testing.T) {
	h := newTestHub(t)
	post := func(body string) (int, bulkResult, string) {
		t.Helper()
		res := h.do(request{method: http.MethodPost, path: "/devices?" + apiVersion, body: body, auth: h.token("registryReadWrite")})
		var r bulkResult
		if res.status == http.StatusOK || (res.status == http.StatusBadRequest && res.header.Get("iothub-errorcode") == "") {
			require.NoError(t, json.Unmarshal(res.body, &r), "status %d, body %s", res.status, res.body)
		}
		return res.status, r, string(res.body)
	}

	// Create three devices; Node's addDevices sends importMode "create".
	st, r, body := post(`[{"id":"b1","importMode":"create"},{"id":"b2","importMode":"Create","status":"disabled"},
		{"id":"b3","importMode":"create","authentication":{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"` + thumb + `"}}}]`)
	require.Equal(t, http.StatusOK, st, "create: %s", body)
	require.True(t, r.IsSuccessful, "create: %s", body)
	require.Empty(t, r.Errors, "create: %s", body)
	require.NotNil(t, r.Warnings, "create: %s", body)
	d, herr := h.e.GetDevice("b2")
	require.Nil(t, herr, "b2")
	require.Equal(t, "disabled", d.Status, "b2: %+v", d)
	require.NotNil(t, d.Authentication.SymmetricKey.PrimaryKey, "b2 has no key: %+v", d)
	d, _ = h.e.GetDevice("b3")
	require.Equal(t, engine.AuthSelfSigned, d.Authentication.Type, "b3: %+v", d.Authentication)

	// A mixed request: b1 exists (create fails), b4 is new, b2 updated with
	// its etag, a stale etag for b3. Each entry is applied on its own.
	b2, _ := h.e.GetDevice("b2")
	st, r, body = post(`[{"id":"b1","importMode":"create"},{"id":"b4","importMode":"createOrUpdate"},
		{"id":"b2","importMode":"UpdateIfMatchETag","eTag":"` + b2.ETag + `","status":"enabled"},
		{"id":"b3","importMode":"updateIfMatchETag","eTag":"stale"}]`)
	require.Equal(t, http.StatusBadRequest, st, "mixed: %s", body)
	require.False(t, r.IsSuccessful, "mixed: %s", body)
	require.Len(t, r.Errors, 2, "mixed: %s", body)
	e := r.Errors[0]
	assert.Equal(t, "b1", e.DeviceID, "first error %+v", e)
	assert.Equal(t, "DeviceAlreadyExists", e.ErrorCode, "b1 error %+v", e)
	assert.NotEmpty(t, e.ErrorStatus, "b1 error %+v", e)
	e = r.Errors[1]
	assert.Equal(t, "b3", e.DeviceID, "second error %+v", e)
	assert.Equal(t, "PreconditionFailed", e.ErrorCode, "b3 error %+v", e)
	_, herr = h.e.GetDevice("b4")
	assert.Nil(t, herr, "b4 was not created")
	d, _ = h.e.GetDevice("b2")
	assert.Equal(t, "enabled", d.Status, "b2 was not updated: %+v", d)

	// Deletes, forced and conditional; a missing device is an error entry.
	b4, _ := h.e.GetDevice("b4")
	st, r, body = post(`[{"id":"b1","importMode":"delete"},{"id":"b4","importMode":"deleteIfMatchETag","eTag":"` + b4.ETag + `"},
		{"id":"nobody","importMode":"delete"}]`)
	require.Equal(t, http.StatusBadRequest, st, "delete: %s", body)
	require.Len(t, r.Errors, 1, "delete: %s", body)
	require.Equal(t, "nobody", r.Errors[0].DeviceID, "delete: %s", body)
	require.Equal(t, "DeviceNotFound", r.Errors[0].ErrorCode, "delete: %s", body)
	for _, id := range []string{"b1", "b4"} {
		_, herr := h.e.GetDevice(id)
		assert.NotNil(t, herr, "%s still exists", id)
	}

	// Requests refused as a whole: nothing is applied.
	for _, bad := range []struct {
		body string
		code int
	}{
		{`{"id":"x","importMode":"create"}`, engine.CodeIotHubFormatError},
		{`[{"id":"x","importMode":"create"`, engine.CodeIotHubFormatError},
		{`[]`, engine.CodeArgumentInvalid},
		{`[{"importMode":"create"}]`, engine.CodeArgumentInvalid},
		{`[{"id":"x","importMode":"create"},{"id":"x","importMode":"delete"}]`, engine.CodeArgumentInvalid},
		{`[{"id":"x","importMode":"upsert"}]`, engine.CodeArgumentInvalid},
		{bulkOf(101), engine.CodeArgumentInvalid},
	} {
		res := h.do(request{method: http.MethodPost, path: "/devices?" + apiVersion, body: bad.body, auth: h.token("registryReadWrite")})
		wantError(t, res, bad.code)
	}
	_, herr = h.e.GetDevice("x")
	assert.NotNil(t, herr, "a refused request created a device")

	// No importMode is createOrUpdate (the .NET SDK omits its default);
	// createOrUpdateIfMatchETag creates, then needs the etag; "*" is no
	// wildcard in the IfMatchETag modes; module entries never touch the
	// device.
	st, r, body = post(`[{"id":"c1"},{"id":"c2","importMode":"createOrUpdateIfMatchETag","eTag":"any"}]`)
	require.Equal(t, http.StatusOK, st, "createOrUpdate: %s", body)
	require.True(t, r.IsSuccessful, "createOrUpdate: %s", body)
	c2, _ := h.e.GetDevice("c2")
	st, r, body = post(`[{"id":"c1","status":"disabled"},{"id":"c2","importMode":"createOrUpdateIfMatchETag","eTag":"stale"},
		{"id":"c1x","importMode":"updateIfMatchETag","eTag":"*"},{"id":"c2","moduleId":"m","importMode":"delete"}]`)
	require.Equal(t, http.StatusBadRequest, st, "createOrUpdate, second pass: %s", body)
	require.Len(t, r.Errors, 3, "createOrUpdate, second pass: %s", body)
	for i, want := range []string{"PreconditionFailed", "PreconditionFailed", "ArgumentInvalid"} {
		assert.Equal(t, want, r.Errors[i].ErrorCode, "error %d: %+v", i, r.Errors[i])
	}
	d, _ = h.e.GetDevice("c1")
	assert.Equal(t, "disabled", d.Status, "c1 was not updated: %+v", d)
	d, herr = h.e.GetDevice("c2")
	assert.Nil(t, herr, "c2 is gone")
	assert.Equal(t, c2.ETag, d.ETag, "c2 changed: %+v", d)
	st, r, body = post(`[{"id":"c2","importMode":"createOrUpdateIfMatchETag","eTag":"` + c2.ETag + `","status":"disabled"}]`)
	require.Equal(t, http.StatusOK, st, "createOrUpdateIfMatchETag with the etag: %s", body)
	st, r, body = post(bulkOf(100))
	require.Equal(t, http.StatusOK, st, "100 devices: %s", body)
	require.True(t, r.IsSuccessful, "100 devices: %s", body)
	// Bulk writes need RegistryWrite.
	wantError(t, h.do(request{method: http.MethodPost, path: "/devices?" + apiVersion, body: `[{"id":"y","importMode":"create"}]`,
		auth: h.token("registryRead")}), engine.CodeUnauthorized)
}

// thumb is a well-formed SHA-1 thumbprint.
const thumb = "0123456789ABCDEF0123456789ABCDEF01234567"

func bulkOf(n int) string {
	var list []map[string]string
	for i := range n {
		list = append(list, map[string]string{"id": "many-" + string(rune('a'+i/26)) + string(rune('a'+i%26)), "importMode": "create"})
	}
	b, _ := json.Marshal(list)
	return string(b)
}
