package httpd

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

// put creates (ifMatch "") or updates a device and returns the answer.
func (h *testHub) put(id, body, ifMatch string) response {
	var hdr map[string]string
	if ifMatch != "" {
		hdr = map[string]string{"If-Match": ifMatch}
	}
	return h.registry(http.MethodPut, "/devices/"+id, body, hdr)
}

// putOK is put that must succeed; it returns the device.
func (h *testHub) putOK(t *testing.T, id, body, ifMatch string) engine.Device {
	t.Helper()
	res := h.put(id, body, ifMatch)
	wantOK(t, res)
	return decodeJSON[engine.Device](t, res)
}

func scopeOf(d engine.Device) string { return deref(d.DeviceScope) }

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func TestEdgeDeviceScopes(t *testing.T) {
	h := newTestHub(t)
	edge := `{"deviceId":"%s","capabilities":{"iotEdge":true}%s}`

	// An edge device gets ms-azure-iot-edge://{deviceId}-{generationId}
	// and no parent.
	top := h.putOK(t, "top", fmt.Sprintf(edge, "top", ""), "")
	if scopeOf(top) != "ms-azure-iot-edge://top-"+top.GenerationID || !regexp.MustCompile(`^[0-9]{18}$`).MatchString(top.GenerationID) {
		t.Fatalf("edge device scope %q, generationId %q", scopeOf(top), top.GenerationID)
	}
	if top.ParentScopes == nil || len(top.ParentScopes) != 0 {
		t.Fatalf("edge device parentScopes %#v, want []", top.ParentScopes)
	}
	if res := h.put("plain", `{"deviceId":"plain"}`, ""); !strings.Contains(string(res.body), `"deviceScope":null,"parentScopes":[]`) {
		t.Fatalf("a plain device: %s", res.body)
	}

	// A leaf created with the edge's scope keeps it; parentScopes names
	// the edge.
	leaf := h.putOK(t, "leaf", `{"deviceId":"leaf","deviceScope":"`+scopeOf(top)+`"}`, "")
	if scopeOf(leaf) != scopeOf(top) || len(leaf.ParentScopes) != 1 || leaf.ParentScopes[0] != scopeOf(top) {
		t.Fatalf("leaf scope %q parents %v", scopeOf(leaf), leaf.ParentScopes)
	}
	// A leaf given only parentScopes (the az CLI's edge config import)
	// gets the matching deviceScope.
	leaf2 := h.putOK(t, "leaf2", `{"deviceId":"leaf2","parentScopes":["`+scopeOf(top)+`"]}`, "")
	if scopeOf(leaf2) != scopeOf(top) {
		t.Fatalf("leaf2 scope %q", scopeOf(leaf2))
	}

	// A child edge device keeps its own scope and names its parent.
	child := h.putOK(t, "child", fmt.Sprintf(edge, "child", `,"parentScopes":["`+scopeOf(top)+`"]`), "")
	if scopeOf(child) != "ms-azure-iot-edge://child-"+child.GenerationID || len(child.ParentScopes) != 1 || child.ParentScopes[0] != scopeOf(top) {
		t.Fatalf("child edge scope %q parents %v", scopeOf(child), child.ParentScopes)
	}
	// An update without parentScopes (az iot hub device-identity update)
	// keeps the parent; [] removes it.
	child = h.putOK(t, "child", fmt.Sprintf(edge, "child", ""), "*")
	if len(child.ParentScopes) != 1 {
		t.Fatalf("update without parentScopes dropped the parent: %v", child.ParentScopes)
	}
	// A GET-modify-PUT that repeats the edge's own scope is fine.
	child = h.putOK(t, "child", fmt.Sprintf(edge, "child", `,"deviceScope":"`+scopeOf(child)+`","parentScopes":[]`), "*")
	if len(child.ParentScopes) != 0 {
		t.Fatalf("parentScopes [] kept the parent: %v", child.ParentScopes)
	}
	child = h.putOK(t, "child", fmt.Sprintf(edge, "child", `,"parentScopes":["`+scopeOf(top)+`"]`), "*")

	// Moving a leaf: deviceScope wins over a stale parentScopes (the az
	// CLI sends the GET body back with only deviceScope changed).
	leaf = h.putOK(t, "leaf", `{"deviceId":"leaf","deviceScope":"`+scopeOf(child)+`","parentScopes":["`+scopeOf(top)+`"]}`, "*")
	if scopeOf(leaf) != scopeOf(child) || leaf.ParentScopes[0] != scopeOf(child) {
		t.Fatalf("moved leaf scope %q parents %v", scopeOf(leaf), leaf.ParentScopes)
	}
	// "" removes a leaf's parent.
	leaf = h.putOK(t, "leaf", `{"deviceId":"leaf","deviceScope":""}`, "*")
	if leaf.DeviceScope != nil || len(leaf.ParentScopes) != 0 {
		t.Fatalf("cleared leaf scope %v parents %v", leaf.DeviceScope, leaf.ParentScopes)
	}

	// Refusals: 400028 InvalidDeviceScope.
	for _, tc := range []struct{ name, id, body, ifMatch string }{
		{"unknown scope", "leaf", `{"deviceId":"leaf","deviceScope":"ms-azure-iot-edge://nobody-1"}`, "*"},
		{"unknown scope on create", "new", `{"deviceId":"new","deviceScope":"ms-azure-iot-edge://nobody-1"}`, ""},
		{"parent is not an edge device", "leaf", `{"deviceId":"leaf","parentScopes":["plain"]}`, "*"},
		{"two parents", "leaf", `{"deviceId":"leaf","parentScopes":["` + scopeOf(top) + `","` + scopeOf(child) + `"]}`, "*"},
		{"edge scope changed", "top", fmt.Sprintf(edge, "top", `,"deviceScope":"ms-azure-iot-edge://top-1"`), "*"},
		{"edge under unknown scope", "child", fmt.Sprintf(edge, "child", `,"parentScopes":["ms-azure-iot-edge://x-2"]`), "*"},
		{"edge its own parent", "top", fmt.Sprintf(edge, "top", `,"parentScopes":["`+scopeOf(top)+`"]`), "*"},
		{"cycle", "top", fmt.Sprintf(edge, "top", `,"parentScopes":["`+scopeOf(child)+`"]`), "*"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, h.put(tc.id, tc.body, tc.ifMatch), engine.CodeInvalidDeviceScope)
		})
	}
	// A refused update changes nothing.
	if d := h.putOK(t, "top", fmt.Sprintf(edge, "top", ""), "*"); scopeOf(d) != scopeOf(top) || len(d.ParentScopes) != 0 {
		t.Fatalf("top after refusals: scope %q parents %v", scopeOf(d), d.ParentScopes)
	}

	// Five generations below the top; the fifth cannot have children.
	parent := scopeOf(top)
	for i := 1; i <= 5; i++ {
		id := fmt.Sprintf("gen%d", i)
		d := h.putOK(t, id, fmt.Sprintf(edge, id, `,"parentScopes":["`+parent+`"]`), "")
		parent = scopeOf(d)
	}
	wantError(t, h.put("gen6", fmt.Sprintf(edge, "gen6", `,"parentScopes":["`+parent+`"]`), ""), engine.CodeInvalidDeviceScope)
	wantError(t, h.put("leaf6", `{"deviceId":"leaf6","deviceScope":"`+parent+`"}`, ""), engine.CodeInvalidDeviceScope)

	// A device that stops being an edge device loses its scope; a new
	// child cannot name it.
	h.putOK(t, "gen5", `{"deviceId":"gen5","parentScopes":[]}`, "*")
	wantError(t, h.put("leaf7", `{"deviceId":"leaf7","deviceScope":"`+parent+`"}`, ""), engine.CodeInvalidDeviceScope)

	// Bulk operations accept a leaf scope that names no edge device, as
	// the service did in the .NET SDK's e2e test.
	res := h.registry(http.MethodPost, "/devices", `[{"id":"bulk1","importMode":"create","deviceScope":"someScope1"}]`, nil)
	wantOK(t, res)
	if d := h.putOK(t, "bulk1", `{"deviceId":"bulk1","deviceScope":"someScope1"}`, "*"); scopeOf(d) != "someScope1" || d.ParentScopes[0] != "someScope1" {
		t.Fatalf("bulk-created leaf scope %q parents %v", scopeOf(d), d.ParentScopes)
	}
}
