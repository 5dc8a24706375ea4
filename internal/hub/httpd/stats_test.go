package httpd

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

func TestStatistics(t *testing.T) {
	h := newTestHub(t)
	get := func(path, policy string, v any) {
		t.Helper()
		res := h.do(request{method: http.MethodGet, path: path + "?" + apiVersion, auth: h.token(policy)})
		if res.status != http.StatusOK {
			t.Fatalf("%s: status %d: %s", path, res.status, res.body)
		}
		dec := json.NewDecoder(bytes.NewReader(res.body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			t.Fatalf("%s: %v: %s", path, err, res.body)
		}
	}
	var rs engine.RegistryStatistics
	var ss engine.ServiceStatistics
	get("/statistics/devices", "registryRead", &rs)
	get("/statistics/service", "service", &ss)
	if rs != (engine.RegistryStatistics{}) || ss != (engine.ServiceStatistics{}) {
		t.Fatalf("empty hub: %+v %+v", rs, ss)
	}

	h.createDevice("a")
	h.createDevice("b")
	h.createModule("a", "m1") // modules are not devices
	off := h.createDevice("c")
	off.Status = "disabled"
	if _, herr := h.e.PutDevice("c", off, "*"); herr != nil {
		t.Fatal(herr)
	}
	h.device("d", nil)                                                 // connected
	h.connect(auth.Identity{DeviceID: "a", ModuleID: "m1"}, nil, true) // a module's connection is not its device's
	get("/Statistics/Devices/", "registryRead", &rs)
	if want := (engine.RegistryStatistics{TotalDeviceCount: 4, EnabledDeviceCount: 3, DisabledDeviceCount: 1}); rs != want {
		t.Errorf("registry statistics %+v, want %+v", rs, want)
	}
	get("/statistics/service", "iothubowner", &ss)
	if ss.ConnectedDeviceCount != 1 {
		t.Errorf("service statistics %+v, want 1 connected device", ss)
	}

	// Rights: registry statistics need RegistryRead, service statistics
	// ServiceConnect; only GET is served.
	wantError(t, h.do(request{method: http.MethodGet, path: "/statistics/devices?" + apiVersion, auth: h.token("service")}), engine.CodeUnauthorized)
	wantError(t, h.do(request{method: http.MethodGet, path: "/statistics/service?" + apiVersion, auth: h.token("registryRead")}), engine.CodeUnauthorized)
	if res := h.do(request{method: http.MethodPost, path: "/statistics/devices?" + apiVersion, body: "{}", auth: h.token("iothubowner")}); res.status != http.StatusMethodNotAllowed {
		t.Errorf("POST: status %d", res.status)
	}
	wantError(t, h.do(request{method: http.MethodGet, path: "/statistics/devices", auth: h.token("iothubowner")}), engine.CodeInvalidProtocolVersion)
}
