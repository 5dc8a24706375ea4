package httpd

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

func TestStatistics(t *testing.T) {
	h := newTestHub(t)
	get := func(path, policy string, v any) {
		t.Helper()
		res := h.do(request{method: http.MethodGet, path: path + "?" + apiVersion, auth: h.token(policy)})
		require.Equal(t, http.StatusOK, res.status, "%s: body %s", path, res.body)
		dec := json.NewDecoder(bytes.NewReader(res.body))
		dec.DisallowUnknownFields()
		require.NoError(t, dec.Decode(v), "%s: body %s", path, res.body)
	}
	var rs engine.RegistryStatistics
	var ss engine.ServiceStatistics
	get("/statistics/devices", "registryRead", &rs)
	get("/statistics/service", "service", &ss)
	require.Equal(t, engine.RegistryStatistics{}, rs, "empty hub's registry statistics")
	require.Equal(t, engine.ServiceStatistics{}, ss, "empty hub's service statistics")

	h.createDevice("a")
	h.createDevice("b")
	h.createModule("a", "m1") // modules are not devices
	off := h.createDevice("c")
	off.Status = "disabled"
	_, herr := h.e.PutDevice("c", off, "*")
	require.Nil(t, herr, "disable c")
	h.device("d", nil)                                                 // connected
	h.connect(auth.Identity{DeviceID: "a", ModuleID: "m1"}, nil, true) // a module's connection is not its device's
	get("/Statistics/Devices/", "registryRead", &rs)
	assert.Equal(t, engine.RegistryStatistics{TotalDeviceCount: 4, EnabledDeviceCount: 3, DisabledDeviceCount: 1}, rs, "registry statistics")
	get("/statistics/service", "iothubowner", &ss)
	assert.Equal(t, int64(1), ss.ConnectedDeviceCount, "connected devices in the service statistics %+v", ss)

	// Rights: registry statistics need RegistryRead, service statistics
	// ServiceConnect; only GET is served.
	wantError(t, h.do(request{method: http.MethodGet, path: "/statistics/devices?" + apiVersion, auth: h.token("service")}), engine.CodeUnauthorized)
	wantError(t, h.do(request{method: http.MethodGet, path: "/statistics/service?" + apiVersion, auth: h.token("registryRead")}), engine.CodeUnauthorized)
	res := h.do(request{method: http.MethodPost, path: "/statistics/devices?" + apiVersion, body: "{}", auth: h.token("iothubowner")})
	assert.Equal(t, http.StatusMethodNotAllowed, res.status, "POST: status")
	wantError(t, h.do(request{method: http.MethodGet, path: "/statistics/devices", auth: h.token("iothubowner")}), engine.CodeInvalidProtocolVersion)
}
