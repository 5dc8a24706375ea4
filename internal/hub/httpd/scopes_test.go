package httpd

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

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
	require.Equal(t, "ms-azure-iot-edge://top-"+top.GenerationID, scopeOf(top), "edge device scope")
	require.Regexp(t, `^[0-9]{18}$`, top.GenerationID, "edge device generationId")
	require.NotNil(t, top.ParentScopes, "edge device parentScopes, want []")
	require.Empty(t, top.ParentScopes, "edge device parentScopes, want []")
	res := h.put("plain", `{"deviceId":"plain"}`, "")
	require.Contains(t, string(res.body), `"deviceScope":null,"parentScopes":[]`, "a plain device")

	// A leaf created with the edge's scope keeps it; parentScopes names
	// the edge.
	leaf := h.putOK(t, "leaf", `{"deviceId":"leaf","deviceScope":"`+scopeOf(top)+`"}`, "")
	require.Equal(t, scopeOf(top), scopeOf(leaf), "leaf scope")
	require.Equal(t, []string{scopeOf(top)}, leaf.ParentScopes, "leaf parents")
	// A leaf given only parentScopes (the az CLI's edge config import)
	// gets the matching deviceScope.
	leaf2 := h.putOK(t, "leaf2", `{"deviceId":"leaf2","parentScopes":["`+scopeOf(top)+`"]}`, "")
	require.Equal(t, scopeOf(top), scopeOf(leaf2), "leaf2 scope")

	// A child edge device keeps its own scope and names its parent.
	child := h.putOK(t, "child", fmt.Sprintf(edge, "child", `,"parentScopes":["`+scopeOf(top)+`"]`), "")
	require.Equal(t, "ms-azure-iot-edge://child-"+child.GenerationID, scopeOf(child), "child edge scope")
	require.Equal(t, []string{scopeOf(top)}, child.ParentScopes, "child edge parents")
	// An update without parentScopes (az iot hub device-identity update)
	// keeps the parent; [] removes it.
	child = h.putOK(t, "child", fmt.Sprintf(edge, "child", ""), "*")
	require.Len(t, child.ParentScopes, 1, "update without parentScopes dropped the parent")
	// A GET-modify-PUT that repeats the edge's own scope is fine.
	child = h.putOK(t, "child", fmt.Sprintf(edge, "child", `,"deviceScope":"`+scopeOf(child)+`","parentScopes":[]`), "*")
	require.Empty(t, child.ParentScopes, "parentScopes [] kept the parent")
	child = h.putOK(t, "child", fmt.Sprintf(edge, "child", `,"parentScopes":["`+scopeOf(top)+`"]`), "*")

	// Moving a leaf: deviceScope wins over a stale parentScopes (the az
	// CLI sends the GET body back with only deviceScope changed).
	leaf = h.putOK(t, "leaf", `{"deviceId":"leaf","deviceScope":"`+scopeOf(child)+`","parentScopes":["`+scopeOf(top)+`"]}`, "*")
	require.Equal(t, scopeOf(child), scopeOf(leaf), "moved leaf scope")
	require.NotEmpty(t, leaf.ParentScopes, "moved leaf parents")
	require.Equal(t, scopeOf(child), leaf.ParentScopes[0], "moved leaf parents %v", leaf.ParentScopes)
	// "" removes a leaf's parent.
	leaf = h.putOK(t, "leaf", `{"deviceId":"leaf","deviceScope":""}`, "*")
	require.Nil(t, leaf.DeviceScope, "cleared leaf scope")
	require.Empty(t, leaf.ParentScopes, "cleared leaf parents")

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
			wantError(t, h.in(t).put(tc.id, tc.body, tc.ifMatch), engine.CodeInvalidDeviceScope)
		})
	}
	// A refused update changes nothing.
	d := h.putOK(t, "top", fmt.Sprintf(edge, "top", ""), "*")
	require.Equal(t, scopeOf(top), scopeOf(d), "top's scope after refusals")
	require.Empty(t, d.ParentScopes, "top's parents after refusals")

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
	res = h.registry(http.MethodPost, "/devices", `[{"id":"bulk1","importMode":"create","deviceScope":"someScope1"}]`, nil)
	wantOK(t, res)
	d = h.putOK(t, "bulk1", `{"deviceId":"bulk1","deviceScope":"someScope1"}`, "*")
	require.Equal(t, "someScope1", scopeOf(d), "bulk-created leaf scope")
	require.NotEmpty(t, d.ParentScopes, "bulk-created leaf parents")
	require.Equal(t, "someScope1", d.ParentScopes[0], "bulk-created leaf parents %v", d.ParentScopes)
}
