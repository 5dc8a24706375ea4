package httpd

import (
	"net/http"

	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/internal/hubauth"
)

// maxTwinBody bounds a PATCH or PUT /twins/... body before it is parsed:
// the engine's own bound on a twin document. A larger body is 413001
// MessageTooLarge without reading it all.
const maxTwinBody = engine.MaxTwinBodySize

// twinRights are the permissions a twin request needs: any one of them
// will do. IoT Hub's access-control guide grants ServiceConnect access to
// twins ("update tags and desired properties, retrieve reported
// properties, and run queries"). The twin is part of the identity
// registry, so RegistryRead also reads it and RegistryWrite also writes it
// [inf]: no source shows the hub refusing those, and refusing them here
// would fail programs that work against Azure.
func twinRights(method string) []hubauth.Rights {
	if method == http.MethodGet {
		return []hubauth.Rights{hubauth.RightsServiceConnect, hubauth.RightsRegistryRead}
	}
	return []hubauth.Rights{hubauth.RightsServiceConnect, hubauth.RightsRegistryWrite}
}

// authorizeAny authorizes a request that any one of several rights
// allows. A refusal is the one for the last right tried, so its message
// names a right that would do.
func (h *handler) authorizeAny(header, path string, rights []hubauth.Rights) *engine.Error {
	var herr *engine.Error
	for _, need := range rights {
		if herr = h.e.AuthorizeService(header, path, need); herr == nil {
			return nil
		}
	}
	return herr
}

// twin serves GET, PATCH and PUT /twins/{id} and
// /twins/{id}/modules/{mid}.
//
// PATCH merges the body's tags and properties.desired into the twin (null
// deletes); PUT replaces them. The If-Match header, when present, must
// name the twin's current etag (quoted or not, W/-prefixed or not) or be
// *; without it the write is unconditional. Every success answers 200 with
// the whole twin and its etag in the ETag header, as GET /devices/{id}
// does. Refusals use the registry error shape. The body's rules (keys,
// depth, sizes, reported properties refused) are the engine's.
func (h *handler) twin(w http.ResponseWriter, r *http.Request, rt route) {
	var (
		tw   engine.Twin
		herr *engine.Error
	)
	switch r.Method {
	case http.MethodGet:
		tw, herr = h.e.GetTwin(rt.deviceID, rt.moduleID)
	case http.MethodPatch, http.MethodPut:
		var body []byte
		if body, herr = readBody(w, r, maxTwinBody); herr != nil {
			break
		}
		// .NET readers skip a byte order mark and surrounding whitespace.
		body = trimBody(body)
		ifMatch := r.Header.Get("If-Match")
		if r.Method == http.MethodPatch {
			tw, herr = h.e.UpdateTwin(rt.deviceID, rt.moduleID, body, ifMatch)
		} else {
			tw, herr = h.e.ReplaceTwin(rt.deviceID, rt.moduleID, body, ifMatch)
		}
	}
	if herr != nil {
		writeError(w, herr)
		return
	}
	writeJSON(w, marshal(tw), tw.ETag)
}
