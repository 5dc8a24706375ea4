package httpd

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/internal/hubauth"
)

// Body size limits. They bound memory per request; anything larger is
// answered 413001 MessageTooLarge without reading it all.
const (
	// maxMethodBody allows a 128 KB payload plus generous room for JSON
	// whitespace and the other fields; the payload itself is checked
	// against engine.MaxPayload separately.
	maxMethodBody = 512 * 1024
	// maxRegistryBody is far above any real device or module document.
	maxRegistryBody = 64 * 1024
)

// minAPIVersion is the oldest api-version accepted by pattern; older
// versions are accepted only when listed in oldAPIVersions.
const minAPIVersion = "2018-06-30"

// oldAPIVersions are api-versions older than minAPIVersion that official
// SDKs used for service calls and that hubs still answered [inf].
var oldAPIVersions = map[string]bool{
	"2016-11-14": true,
	"2017-06-30": true,
}

// apiVersionDate checks IoT Hub's api-version syntax, a calendar date
// (YYYY-MM-DD) optionally followed by "-preview", and returns the date.
func apiVersionDate(v string) (string, bool) {
	date, rest := v, ""
	if len(v) > 10 {
		date, rest = v[:10], v[10:]
	}
	if len(date) != 10 || (rest != "" && rest != "-preview") {
		return "", false
	}
	for i := range len(date) {
		if i == 4 || i == 7 {
			if date[i] != '-' {
				return "", false
			}
		} else if date[i] < '0' || date[i] > '9' {
			return "", false
		}
	}
	y, _ := strconv.Atoi(date[:4])
	m, _ := strconv.Atoi(date[5:7])
	d, _ := strconv.Atoi(date[8:])
	t := time.Date(y, time.Month(m), d, 0, 0, 0, 0, time.UTC)
	if t.Year() != y || int(t.Month()) != m || t.Day() != d {
		return "", false // 2021-02-30 and the like
	}
	return date, true
}

// NewHandler returns the hub's HTTPS service API on e:
//
//	POST   /twins/{id}/methods                 invoke a device method
//	POST   /twins/{id}/modules/{mid}/methods   invoke a module method
//	GET    /twins/{id}                         get a device twin
//	PATCH  /twins/{id}                         update its tags and desired properties
//	PUT    /twins/{id}                         replace its tags and desired properties
//	GET    /twins/{id}/modules/{mid}           get a module twin
//	PATCH  /twins/{id}/modules/{mid}           update a module twin
//	PUT    /twins/{id}/modules/{mid}           replace a module twin
//	GET    /devices?top=N                      list devices (top 1–1000, default 1000)
//	POST   /devices                            bulk create, update or delete (1–100 devices)
//	POST   /devices/query                      run a query (query.go)
//	PUT    /devices/{id}                       create (no If-Match) or update a device
//	GET    /devices/{id}                       get a device
//	DELETE /devices/{id}                       delete a device
//	GET    /devices/{id}/modules               list a device's modules
//	PUT    /devices/{id}/modules/{mid}         create or update a module
//	GET    /devices/{id}/modules/{mid}         get a module
//	DELETE /devices/{id}/modules/{mid}         delete a module
//	DELETE /devices/{id}/commands              purge a device's cloud-to-device queue (c2d.go)
//	GET    /statistics/devices                 total, enabled and disabled devices
//	GET    /statistics/service                 devices connected now
//	PUT    /jobs/v2/{id}                       create a job (jobs.go)
//	GET    /jobs/v2/{id}                       get a job
//	POST   /jobs/v2/{id}/cancel                cancel a job
//	GET    /jobs/v2/query?jobType=&jobStatus=  list jobs, paged
//
// and the device-facing telemetry endpoint (events.go), which devices
// authorize with their own SAS token or client certificate:
//
//	POST   /devices/{id}/messages/events              device-to-cloud message
//	POST   /devices/{id}/modules/{mid}/messages/events
//
// and the device-facing cloud-to-device endpoints (c2d.go), authorized the
// same way:
//
//	GET    /devices/{id}/messages/deviceBound                   receive
//	DELETE /devices/{id}/messages/deviceBound/{lock}[?reject]   complete or reject
//	POST   /devices/{id}/messages/deviceBound/{lock}/abandon    abandon
//
// Ids are URL-escaped path segments. Every request needs an api-version
// query parameter and an Authorization header (a policy SAS token, or a
// Bearer token registered with [engine.Engine.AddBearerToken]) granting
// ServiceConnect (methods), RegistryRead (GET) or RegistryWrite (PUT,
// DELETE); twins accept ServiceConnect or the registry right (see
// twins.go). Errors are answered as IoT Hub does: status, iothub-errorcode
// header and a JSON body in the shape IoT Hub uses for the endpoint (see
// errors.go).
func NewHandler(e *engine.Engine) http.Handler {
	return &handler{e: e}
}

type handler struct {
	e *engine.Engine
}

// route is a matched request path.
type route struct {
	kind     routeKind
	deviceID string
	moduleID string
}

type routeKind int

const (
	routeNone routeKind = iota
	routeDeviceMethod
	routeModuleMethod
	routeTwin
	routeModuleTwin
	routeDevices
	routeDevice
	routeModules
	routeModule
	routeRegistryStats
	routeServiceStats
	routeQuery
	routeJob
	routeJobCancel
	routeJobQuery
	routeDeviceCommands
)

// allowed returns the HTTP methods a route serves.
func (k routeKind) allowed() []string {
	switch k {
	case routeDeviceMethod, routeModuleMethod, routeQuery, routeJobCancel:
		return []string{http.MethodPost}
	case routeJob:
		return []string{http.MethodGet, http.MethodPut}
	case routeJobQuery:
		return []string{http.MethodGet}
	case routeTwin, routeModuleTwin:
		return []string{http.MethodGet, http.MethodPatch, http.MethodPut}
	case routeDevices:
		return []string{http.MethodGet, http.MethodPost}
	case routeModules, routeRegistryStats, routeServiceStats:
		return []string{http.MethodGet}
	case routeDevice, routeModule:
		return []string{http.MethodGet, http.MethodPut, http.MethodDelete}
	case routeDeviceCommands:
		return []string{http.MethodDelete}
	}
	return nil
}

// errBadEscape marks a path segment that is not valid URL escaping.
var errBadEscape = errors.New("iothub: path segment is not valid URL escaping")

// matchRoute splits the escaped path into segments and unescapes each one
// separately, so ids may contain any character, '/' included, when it is
// percent-encoded. Literal segments match case-insensitively (as the
// hub's ASP.NET routing does); one trailing slash is ignored.
func matchRoute(escapedPath string) (route, error) {
	p := strings.TrimPrefix(escapedPath, "/")
	p = strings.TrimSuffix(p, "/")
	segs := strings.Split(p, "/")
	ids := make([]string, len(segs))
	for i, s := range segs {
		if s == "" {
			return route{}, nil
		}
		v, err := url.PathUnescape(s)
		if err != nil {
			return route{}, errBadEscape
		}
		ids[i] = v
	}
	lit := func(i int, want string) bool { return strings.EqualFold(segs[i], want) }
	switch {
	case len(segs) == 3 && lit(0, "twins") && lit(2, "methods"):
		return route{kind: routeDeviceMethod, deviceID: ids[1]}, nil
	case len(segs) == 5 && lit(0, "twins") && lit(2, "modules") && lit(4, "methods"):
		return route{kind: routeModuleMethod, deviceID: ids[1], moduleID: ids[3]}, nil
	case len(segs) == 2 && lit(0, "twins"):
		return route{kind: routeTwin, deviceID: ids[1]}, nil
	case len(segs) == 4 && lit(0, "twins") && lit(2, "modules"):
		return route{kind: routeModuleTwin, deviceID: ids[1], moduleID: ids[3]}, nil
	case len(segs) == 1 && lit(0, "devices"):
		return route{kind: routeDevices}, nil
	case len(segs) == 2 && lit(0, "statistics") && lit(1, "devices"):
		return route{kind: routeRegistryStats}, nil
	case len(segs) == 2 && lit(0, "statistics") && lit(1, "service"):
		return route{kind: routeServiceStats}, nil
	case len(segs) == 2 && lit(0, "devices"):
		return route{kind: routeDevice, deviceID: ids[1]}, nil
	case len(segs) == 3 && lit(0, "devices") && lit(2, "commands"):
		return route{kind: routeDeviceCommands, deviceID: ids[1]}, nil
	case len(segs) == 3 && lit(0, "devices") && lit(2, "modules"):
		return route{kind: routeModules, deviceID: ids[1]}, nil
	case len(segs) == 4 && lit(0, "devices") && lit(2, "modules"):
		return route{kind: routeModule, deviceID: ids[1], moduleID: ids[3]}, nil
	case len(segs) == 3 && lit(0, "jobs") && lit(1, "v2"):
		return route{kind: routeJob, deviceID: ids[2]}, nil
	case len(segs) == 4 && lit(0, "jobs") && lit(1, "v2") && lit(3, "cancel"):
		return route{kind: routeJobCancel, deviceID: ids[2]}, nil
	}
	return route{}, nil
}

// queryValue returns the first value of the query parameter name, matched
// case-insensitively (ASP.NET binds query parameters that way).
func queryValue(q url.Values, name string) (string, bool) {
	if v, ok := q[name]; ok && len(v) > 0 {
		return v[0], true
	}
	for k, v := range q {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return v[0], true
		}
	}
	return "", false
}

// checkAPIVersion accepts the api-versions official SDKs send and any
// later date-shaped version (lenient on new versions, strict on garbage).
// Missing or unsupported versions are 400001 InvalidProtocolVersion.
func checkAPIVersion(q url.Values) *engine.Error {
	v, ok := queryValue(q, "api-version")
	if !ok || v == "" {
		return engine.NewError(engine.CodeInvalidProtocolVersion,
			"The api-version query parameter is required.")
	}
	if oldAPIVersions[v] {
		return nil
	}
	if date, ok := apiVersionDate(v); ok && date >= minAPIVersion {
		return nil
	}
	return engine.NewError(engine.CodeInvalidProtocolVersion,
		"The api-version %q is not supported.", truncate(v, 64))
}

// rightsFor is the permission a request needs.
func rightsFor(k routeKind, method string) hubauth.Rights {
	switch {
	case k == routeDeviceMethod || k == routeModuleMethod || k == routeServiceStats || k == routeDeviceCommands:
		return hubauth.RightsServiceConnect
	case method == http.MethodGet:
		return hubauth.RightsRegistryRead
	default:
		return hubauth.RightsRegistryWrite
	}
}

// ServeHTTP checks, in order: the path (404), the HTTP method (405), the
// api-version (400001), authorization (401002), an injected fault, and
// then dispatches.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	escaped := r.URL.EscapedPath()
	if h.serveDeviceAPI(w, r, escaped) { // device telemetry (events.go)
		return
	}
	if h.serveDeviceBound(w, r, escaped) { // device cloud-to-device (c2d.go)
		return
	}
	rt, err := matchRoute(escaped)
	if err != nil {
		writeError(w, engine.NewError(engine.CodeArgumentInvalid, "The request path is not correctly URL-encoded."))
		return
	}
	rt = queryRoute(rt, r.Method)
	rt = jobRoute(rt, r.Method)
	if rt.kind == routeNone {
		writePlainError(w, http.StatusNotFound,
			"No HTTP resource was found that matches the request URI '"+truncate(escaped, 256)+"'.")
		return
	}
	allowed := rt.kind.allowed()
	if !contains(allowed, r.Method) {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writePlainError(w, http.StatusMethodNotAllowed,
			"The requested resource does not support http method '"+truncate(r.Method, 32)+"'.")
		return
	}
	if herr := checkAPIVersion(r.URL.Query()); herr != nil {
		writeError(w, herr)
		return
	}
	// The path is the escaped one, as the client wrote it: a policy token's
	// resource is matched against host + path by segment prefix.
	authz := r.Header.Get("Authorization")
	var herr *engine.Error
	switch rt.kind {
	case routeTwin, routeModuleTwin:
		herr = h.authorizeAny(authz, escaped, twinRights(r.Method))
	case routeQuery:
		herr = h.authorizeAny(authz, escaped, queryRights())
	case routeJob, routeJobCancel, routeJobQuery:
		herr = h.authorizeAny(authz, escaped, jobRights(r.Method))
	default:
		herr = h.e.AuthorizeService(authz, escaped, rightsFor(rt.kind, r.Method))
	}
	if herr != nil {
		writeError(w, herr)
		return
	}
	if herr := h.e.TakeServiceFault(); herr != nil {
		// No Retry-After on 429: no source shows IoT Hub sending one on its
		// service API, and SDKs back off on their own.
		if rt.kind == routeDeviceMethod || rt.kind == routeModuleMethod {
			writeMethodError(w, herr)
		} else {
			writeError(w, herr)
		}
		return
	}
	switch rt.kind {
	case routeDeviceMethod, routeModuleMethod:
		h.invoke(w, r, rt)
	case routeTwin, routeModuleTwin:
		h.twin(w, r, rt)
	case routeDevices:
		if r.Method == http.MethodPost {
			h.bulk(w, r)
			return
		}
		h.listDevices(w, r)
	case routeDevice:
		h.device(w, r, rt)
	case routeQuery:
		h.query(w, r)
	case routeJob, routeJobCancel:
		h.job(w, r, rt)
	case routeJobQuery:
		h.jobQuery(w, r)
	case routeDeviceCommands:
		h.purge(w, rt)
	case routeModules:
		h.listModules(w, rt)
	case routeModule:
		h.module(w, r, rt)
	case routeRegistryStats:
		rs, _ := h.e.Statistics()
		writeJSON(w, marshal(rs), "")
	case routeServiceStats:
		_, ss := h.e.Statistics()
		writeJSON(w, marshal(ss), "")
	}
}

// readBody reads at most limit bytes of the request body. A larger body is
// 413001 MessageTooLarge; a broken one 400006 IotHubFormatError.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, *engine.Error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, engine.NewError(engine.CodeMessageTooLarge,
				"The request body is larger than %d bytes.", limit)
		}
		return nil, engine.NewError(engine.CodeIotHubFormatError, "The request body could not be read.")
	}
	return body, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// truncate shortens client-supplied text echoed in messages.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
