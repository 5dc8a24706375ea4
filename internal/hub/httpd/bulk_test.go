package httpd

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

func TestBulkRegistry(t *testing.T) {
	h := newTestHub(t)
	post := func(body string) (int, bulkResult, string) {
		t.Helper()
		res := h.do(request{method: http.MethodPost, path: "/devices?" + apiVersion, body: body, auth: h.token("registryReadWrite")})
		var r bulkResult
		if res.status == http.StatusOK || (res.status == http.StatusBadRequest && res.header.Get("iothub-errorcode") == "") {
			if err := json.Unmarshal(res.body, &r); err != nil {
				t.Fatalf("status %d, body %s: %v", res.status, res.body, err)
			}
		}
		return res.status, r, string(res.body)
	}

	// Create three devices; Node's addDevices sends importMode "create".
	st, r, body := post(`[{"id":"b1","importMode":"create"},{"id":"b2","importMode":"Create","status":"disabled"},
		{"id":"b3","importMode":"create","authentication":{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"` + thumb + `"}}}]`)
	if st != http.StatusOK || !r.IsSuccessful || len(r.Errors) != 0 || r.Warnings == nil {
		t.Fatalf("create: %d %s", st, body)
	}
	if d, herr := h.e.GetDevice("b2"); herr != nil || d.Status != "disabled" || d.Authentication.SymmetricKey.PrimaryKey == nil {
		t.Fatalf("b2: %+v %v", d, herr)
	}
	if d, _ := h.e.GetDevice("b3"); d.Authentication.Type != engine.AuthSelfSigned {
		t.Fatalf("b3: %+v", d.Authentication)
	}

	// A mixed request: b1 exists (create fails), b4 is new, b2 updated with
	// its etag, a stale etag for b3. Each entry is applied on its own.
	b2, _ := h.e.GetDevice("b2")
	st, r, body = post(`[{"id":"b1","importMode":"create"},{"id":"b4","importMode":"createOrUpdate"},
		{"id":"b2","importMode":"UpdateIfMatchETag","eTag":"` + b2.ETag + `","status":"enabled"},
		{"id":"b3","importMode":"updateIfMatchETag","eTag":"stale"}]`)
	if st != http.StatusBadRequest || r.IsSuccessful || len(r.Errors) != 2 {
		t.Fatalf("mixed: %d %s", st, body)
	}
	if e := r.Errors[0]; e.DeviceID != "b1" || e.ErrorCode != "DeviceAlreadyExists" || e.ErrorStatus == "" {
		t.Errorf("b1 error %+v", e)
	}
	if e := r.Errors[1]; e.DeviceID != "b3" || e.ErrorCode != "PreconditionFailed" {
		t.Errorf("b3 error %+v", e)
	}
	if _, herr := h.e.GetDevice("b4"); herr != nil {
		t.Errorf("b4 was not created: %v", herr)
	}
	if d, _ := h.e.GetDevice("b2"); d.Status != "enabled" {
		t.Errorf("b2 was not updated: %+v", d)
	}

	// Deletes, forced and conditional; a missing device is an error entry.
	b4, _ := h.e.GetDevice("b4")
	st, r, body = post(`[{"id":"b1","importMode":"delete"},{"id":"b4","importMode":"deleteIfMatchETag","eTag":"` + b4.ETag + `"},
		{"id":"nobody","importMode":"delete"}]`)
	if st != http.StatusBadRequest || len(r.Errors) != 1 || r.Errors[0].DeviceID != "nobody" || r.Errors[0].ErrorCode != "DeviceNotFound" {
		t.Fatalf("delete: %d %s", st, body)
	}
	for _, id := range []string{"b1", "b4"} {
		if _, herr := h.e.GetDevice(id); herr == nil {
			t.Errorf("%s still exists", id)
		}
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
	if _, herr := h.e.GetDevice("x"); herr == nil {
		t.Error("a refused request created a device")
	}

	// No importMode is createOrUpdate (the .NET SDK omits its default);
	// createOrUpdateIfMatchETag creates, then needs the etag; "*" is no
	// wildcard in the IfMatchETag modes; module entries never touch the
	// device.
	st, r, body = post(`[{"id":"c1"},{"id":"c2","importMode":"createOrUpdateIfMatchETag","eTag":"any"}]`)
	if st != http.StatusOK || !r.IsSuccessful {
		t.Fatalf("createOrUpdate: %d %s", st, body)
	}
	c2, _ := h.e.GetDevice("c2")
	st, r, body = post(`[{"id":"c1","status":"disabled"},{"id":"c2","importMode":"createOrUpdateIfMatchETag","eTag":"stale"},
		{"id":"c1x","importMode":"updateIfMatchETag","eTag":"*"},{"id":"c2","moduleId":"m","importMode":"delete"}]`)
	if st != http.StatusBadRequest || len(r.Errors) != 3 {
		t.Fatalf("createOrUpdate, second pass: %d %s", st, body)
	}
	for i, want := range []string{"PreconditionFailed", "PreconditionFailed", "ArgumentInvalid"} {
		if r.Errors[i].ErrorCode != want {
			t.Errorf("error %d: %+v, want %s", i, r.Errors[i], want)
		}
	}
	if d, _ := h.e.GetDevice("c1"); d.Status != "disabled" {
		t.Errorf("c1 was not updated: %+v", d)
	}
	if d, herr := h.e.GetDevice("c2"); herr != nil || d.ETag != c2.ETag {
		t.Errorf("c2 changed: %+v %v", d, herr)
	}
	st, r, body = post(`[{"id":"c2","importMode":"createOrUpdateIfMatchETag","eTag":"` + c2.ETag + `","status":"disabled"}]`)
	if st != http.StatusOK {
		t.Fatalf("createOrUpdateIfMatchETag with the etag: %d %s", st, body)
	}
	if st, r, body := post(bulkOf(100)); st != http.StatusOK || !r.IsSuccessful {
		t.Fatalf("100 devices: %d %s", st, body)
	}
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
