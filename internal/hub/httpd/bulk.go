package httpd

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

// maxBulkDevices is how many identities one bulk registry request may
// carry (documented).
const maxBulkDevices = 100

// bulkDevice is one element of a bulk registry request (IoT Hub's
// ExportImportDevice): the device id is "id", the operation "importMode".
type bulkDevice struct {
	ID             string                `json:"id"`
	ModuleID       string                `json:"moduleId"`
	ETag           string                `json:"eTag"`
	ImportMode     string                `json:"importMode"`
	Status         string                `json:"status"`
	StatusReason   *string               `json:"statusReason"`
	Authentication engine.Authentication `json:"authentication"`
	Capabilities   engine.Capabilities   `json:"capabilities"`
	DeviceScope    *string               `json:"deviceScope"`
	ParentScopes   []string              `json:"parentScopes"`
}

// bulkError is one failed identity in a BulkRegistryOperationResult.
type bulkError struct {
	DeviceID    string `json:"deviceId"`
	ErrorCode   string `json:"errorCode"`
	ErrorStatus string `json:"errorStatus"`
}

// bulkResult is IoT Hub's BulkRegistryOperationResult.
type bulkResult struct {
	IsSuccessful bool        `json:"isSuccessful"`
	Errors       []bulkError `json:"errors"`
	Warnings     []bulkError `json:"warnings"`
}

// bulk serves POST /devices: create, update or delete up to 100 devices,
// each with its own import mode (create, createOrUpdate — also when the
// mode is absent, as the .NET SDK leaves its default out —,
// createOrUpdateIfMatchETag, update, updateIfMatchETag, delete,
// deleteIfMatchETag; case-insensitive).
//
// [inf] The operations are applied one by one, not as a transaction; the
// answer is 200 with isSuccessful true when every one succeeded, else 400
// with isSuccessful false and one error per failed identity (its error
// code name and message), which is the result shape the service API
// declares for both statuses. A request that is not such a list (not an
// array, empty, over 100 entries, an entry without id or with an unknown
// mode, an id twice) is refused as a whole with 400004 ArgumentInvalid.
// [inf] An entry for a module (with a moduleId) fails with
// ArgumentInvalid: this hub takes no module operations in bulk, and must
// not apply them to the device.
func (h *handler) bulk(w http.ResponseWriter, r *http.Request) {
	body, herr := readBody(w, r, maxRegistryBody*maxBulkDevices)
	if herr != nil {
		writeError(w, herr)
		return
	}
	body = trimBody(body)
	if len(body) == 0 || body[0] != '[' {
		writeError(w, formatError("The request body must be a JSON array of devices."))
		return
	}
	var list []bulkDevice
	if err := json.Unmarshal(body, &list); err != nil {
		writeError(w, formatError("The request body is not a valid JSON array of devices."))
		return
	}
	if len(list) == 0 || len(list) > maxBulkDevices {
		writeError(w, engine.NewError(engine.CodeArgumentInvalid,
			"A bulk registry operation takes 1 to %d devices; this one has %d.", maxBulkDevices, len(list)))
		return
	}
	seen := make(map[string]bool, len(list))
	for i, d := range list {
		if d.ID == "" {
			writeError(w, engine.NewError(engine.CodeArgumentInvalid, "Device %d of the list has no id.", i+1))
			return
		}
		key := d.ID + "\x00" + d.ModuleID // a device and its modules are distinct identities
		if seen[key] {
			writeError(w, engine.NewError(engine.CodeArgumentInvalid,
				"Device %s appears more than once; a device identity can be specified only once.", truncate(d.ID, 128)))
			return
		}
		seen[key] = true
		mode := bulkMode(d.ImportMode)
		if mode == "" {
			writeError(w, engine.NewError(engine.CodeArgumentInvalid,
				"Device %s has importMode %q; want create, createOrUpdate, createOrUpdateIfMatchETag, update, updateIfMatchETag, delete or deleteIfMatchETag.",
				truncate(d.ID, 128), truncate(d.ImportMode, 32)))
			return
		}
		list[i].ImportMode = mode // canonical from here on
	}
	res := bulkResult{IsSuccessful: true, Errors: []bulkError{}, Warnings: []bulkError{}}
	for _, d := range list {
		if herr := h.applyBulk(d); herr != nil {
			res.IsSuccessful = false
			res.Errors = append(res.Errors, bulkError{DeviceID: d.ID, ErrorCode: engine.CodeName(herr.Code), ErrorStatus: herr.Message})
		}
	}
	status := http.StatusOK
	if !res.IsSuccessful {
		status = http.StatusBadRequest
	}
	writeJSONStatus(w, status, marshal(res), "")
}

// bulkMode returns the canonical import mode, or "" for an unknown one.
// An absent mode is createOrUpdate, the default of IoT Hub's ImportMode.
func bulkMode(m string) string {
	if m == "" {
		return "createOrUpdate"
	}
	for _, k := range []string{"create", "createOrUpdate", "createOrUpdateIfMatchETag", "update", "updateIfMatchETag", "delete", "deleteIfMatchETag"} {
		if strings.EqualFold(m, k) {
			return k
		}
	}
	return ""
}

// applyBulk runs one entry through the same engine calls as the single
// device API, with the If-Match its import mode implies. In the
// IfMatchETag modes the eTag is compared as written: "*" is not a
// wildcard there.
func (h *handler) applyBulk(d bulkDevice) *engine.Error {
	if d.ModuleID != "" {
		return engine.NewError(engine.CodeArgumentInvalid, "Module %s: this hub does not take module operations in bulk.", truncate(d.ModuleID, 128))
	}
	dev := engine.Device{DeviceID: d.ID, Status: d.Status, StatusReason: d.StatusReason,
		Authentication: d.Authentication, Capabilities: d.Capabilities,
		DeviceScope: d.DeviceScope, ParentScopes: d.ParentScopes}
	mode := d.ImportMode // canonical: bulk checked it
	etag := d.ETag
	if strings.HasSuffix(mode, "IfMatchETag") {
		if etag == "" {
			return engine.NewError(engine.CodeArgumentInvalid, "%s needs the device's eTag.", mode)
		}
		if strings.Trim(strings.TrimPrefix(strings.TrimSpace(etag), "W/"), `"`) == "*" {
			return engine.NewError(engine.CodePreconditionFailed, "Precondition failed: the eTag %q matches no device.", truncate(etag, 64))
		}
	}
	switch mode {
	case "create":
		_, herr := h.e.ImportDevice(d.ID, dev, "")
		return herr
	case "createOrUpdate", "createOrUpdateIfMatchETag":
		ifMatch := "*"
		if mode == "createOrUpdateIfMatchETag" {
			ifMatch = etag
		}
		// Create, or update what exists; retried once if the device came or
		// went in between.
		var herr *engine.Error
		for range 2 {
			if _, herr = h.e.ImportDevice(d.ID, dev, ""); herr == nil || herr.Code != engine.CodeDeviceAlreadyExists {
				return herr
			}
			if _, herr = h.e.ImportDevice(d.ID, dev, ifMatch); herr == nil || herr.Code != engine.CodeDeviceNotFound {
				return herr
			}
		}
		return herr
	case "update":
		_, herr := h.e.ImportDevice(d.ID, dev, "*")
		return herr
	case "updateIfMatchETag":
		_, herr := h.e.ImportDevice(d.ID, dev, etag)
		return herr
	case "delete":
		return h.e.DeleteDevice(d.ID, "*")
	default: // deleteIfMatchETag
		return h.e.DeleteDevice(d.ID, etag)
	}
}
