package httpd

import (
	"net/http"
	"strconv"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

// List limits of GET /devices?top=N.
const (
	defaultTop = 1000
	maxTop     = 1000
)

// decodeDevice reads a PUT /devices/{id} body: one JSON object with
// engine.Device's field names (matched case-insensitively; unknown fields
// ignored). Bodies that are not such an object are 400006
// IotHubFormatError (see formatError); the values themselves are checked
// by the engine.
func decodeDevice(body []byte) (engine.Device, *engine.Error) {
	var d engine.Device
	if herr := decodeObject(body, &d); herr != nil {
		return engine.Device{}, herr
	}
	return d, nil
}

// decodeModule reads a PUT /devices/{id}/modules/{mid} body, like
// decodeDevice.
func decodeModule(body []byte) (engine.Module, *engine.Error) {
	var m engine.Module
	if herr := decodeObject(body, &m); herr != nil {
		return engine.Module{}, herr
	}
	return m, nil
}

// parseTop reads the optional top query parameter: 1–1000, default 1000.
func parseTop(r *http.Request) (int, *engine.Error) {
	v, ok := queryValue(r.URL.Query(), "top")
	if !ok || v == "" {
		return defaultTop, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxTop {
		return 0, engine.NewError(engine.CodeArgumentInvalid,
			"top must be an integer between 1 and %d.", maxTop)
	}
	return n, nil
}

// listDevices serves GET /devices.
func (h *handler) listDevices(w http.ResponseWriter, r *http.Request) {
	top, herr := parseTop(r)
	if herr != nil {
		writeError(w, herr)
		return
	}
	writeJSON(w, marshal(h.e.ListDevices(top)), "")
}

// device serves GET, PUT and DELETE /devices/{id}.
func (h *handler) device(w http.ResponseWriter, r *http.Request, rt route) {
	switch r.Method {
	case http.MethodGet:
		d, herr := h.e.GetDevice(rt.deviceID)
		if herr != nil {
			writeError(w, herr)
			return
		}
		writeJSON(w, marshal(d), d.ETag)
	case http.MethodPut:
		body, herr := readBody(w, r, maxRegistryBody)
		if herr != nil {
			writeError(w, herr)
			return
		}
		d, herr := decodeDevice(body)
		if herr != nil {
			writeError(w, herr)
			return
		}
		// No If-Match creates; If-Match (an etag, W/-prefixed or not,
		// quoted or not, or *) updates. The engine does the matching.
		// Create and update both answer 200: the SDKs accept 200 and 201.
		out, herr := h.e.PutDevice(rt.deviceID, d, r.Header.Get("If-Match"))
		if herr != nil {
			writeError(w, herr)
			return
		}
		writeJSON(w, marshal(out), out.ETag)
	case http.MethodDelete:
		if herr := h.e.DeleteDevice(rt.deviceID, r.Header.Get("If-Match")); herr != nil {
			writeError(w, herr)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// listModules serves GET /devices/{id}/modules.
func (h *handler) listModules(w http.ResponseWriter, rt route) {
	mods, herr := h.e.ListModules(rt.deviceID)
	if herr != nil {
		writeError(w, herr)
		return
	}
	writeJSON(w, marshal(mods), "")
}

// module serves GET, PUT and DELETE /devices/{id}/modules/{mid}.
func (h *handler) module(w http.ResponseWriter, r *http.Request, rt route) {
	switch r.Method {
	case http.MethodGet:
		m, herr := h.e.GetModule(rt.deviceID, rt.moduleID)
		if herr != nil {
			writeError(w, herr)
			return
		}
		writeJSON(w, marshal(m), m.ETag)
	case http.MethodPut:
		body, herr := readBody(w, r, maxRegistryBody)
		if herr != nil {
			writeError(w, herr)
			return
		}
		m, herr := decodeModule(body)
		if herr != nil {
			writeError(w, herr)
			return
		}
		out, herr := h.e.PutModule(rt.deviceID, rt.moduleID, m, r.Header.Get("If-Match"))
		if herr != nil {
			writeError(w, herr)
			return
		}
		writeJSON(w, marshal(out), out.ETag)
	case http.MethodDelete:
		if herr := h.e.DeleteModule(rt.deviceID, rt.moduleID, r.Header.Get("If-Match")); herr != nil {
			writeError(w, herr)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}
