package httpd

import (
	"crypto/x509"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

// The device-facing HTTPS telemetry endpoint:
//
//	POST /devices/{id}/messages/events?api-version=…
//	POST /devices/{id}/modules/{mid}/messages/events?api-version=…
//
// The body is the message body. System properties come in the headers the
// official device SDKs send (C, .NET, Java and Node agree):
// iothub-messageid, iothub-correlationid, iothub-contenttype and
// iothub-contentencoding; each application property is a header
// "iothub-app-{name}: {value}". The HTTP Content-Type and Content-Encoding
// headers describe the HTTP request only and are not message properties
// [inf: the SDKs never rely on them]. Other iothub-* headers the SDKs may
// send (iothub-to, iothub-userid, iothub-expiry, iothub-ack,
// iothub-creationtimeutc, iothub-messageschema, iothub-interface-id…)
// are ignored.
//
// The device authenticates with a SAS token in the Authorization header —
// a device or module token for exactly the identity of the path, or a hub
// policy token with DeviceConnect — or, without that header, with the TLS
// client certificate of an X.509 identity. Success is 204 No Content.
const (
	headerAppPrefix       = "iothub-app-"
	headerMessageID       = "iothub-messageid"
	headerCorrelationID   = "iothub-correlationid"
	headerContentType     = "iothub-contenttype"
	headerContentEncoding = "iothub-contentencoding"

	// contentTypeBatch marks the SDKs' batched form (a JSON array of
	// messages), which the local hub does not implement.
	contentTypeBatch = "application/vnd.microsoft.iothub.json"
)

// matchEventsRoute reports whether escapedPath is a telemetry path and
// whose. Literal segments match case-insensitively, one trailing slash is
// ignored, ids are unescaped segment by segment (as matchRoute does); a
// path that is not valid escaping is left to matchRoute's error.
func matchEventsRoute(escapedPath string) (auth.Identity, bool) {
	p := strings.TrimSuffix(strings.TrimPrefix(escapedPath, "/"), "/")
	segs := strings.Split(p, "/")
	lit := func(i int, want string) bool { return strings.EqualFold(segs[i], want) }
	var devSeg, modSeg string
	switch {
	case len(segs) == 4 && lit(0, "devices") && lit(2, "messages") && lit(3, "events"):
		devSeg = segs[1]
	case len(segs) == 6 && lit(0, "devices") && lit(2, "modules") && lit(4, "messages") && lit(5, "events"):
		devSeg, modSeg = segs[1], segs[3]
	default:
		return auth.Identity{}, false
	}
	dev, err := url.PathUnescape(devSeg)
	if err != nil || dev == "" {
		return auth.Identity{}, false
	}
	mod, err := url.PathUnescape(modSeg)
	if err != nil || (len(segs) == 6 && mod == "") {
		return auth.Identity{}, false
	}
	return auth.Identity{DeviceID: dev, ModuleID: mod}, true
}

// serveDeviceAPI serves the device-facing endpoint and reports whether
// the request was one of its paths. Checks, in order: the HTTP method
// (405), the api-version (400001), authentication (401002), the body size
// (413001), the properties (400004) and the engine's own checks.
func (h *handler) serveDeviceAPI(w http.ResponseWriter, r *http.Request, escapedPath string) bool {
	id, ok := matchEventsRoute(escapedPath)
	if !ok {
		return false
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writePlainError(w, http.StatusMethodNotAllowed,
			"The requested resource does not support http method '"+truncate(r.Method, 32)+"'.")
		return true
	}
	if herr := checkAPIVersion(r.URL.Query()); herr != nil {
		writeError(w, herr)
		return true
	}
	id.HostName = h.e.HostName()
	if herr := h.authenticateDevice(r, id); herr != nil {
		writeError(w, herr)
		return true
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); strings.EqualFold(mt, contentTypeBatch) {
		writeError(w, engine.NewError(engine.CodeArgumentInvalid,
			"Batched device-to-cloud messages (Content-Type %s) are not supported by the local hub; send one message per request.", contentTypeBatch))
		return true
	}
	body, herr := readBody(w, r, engine.MaxEventSize)
	if herr != nil {
		writeError(w, herr)
		return true
	}
	ev, herr := eventFromHeader(r.Header)
	if herr != nil {
		writeError(w, herr)
		return true
	}
	ev.Identity, ev.Protocol, ev.Body = id, "http", body
	if herr := h.e.ReceiveEvent(ev); herr != nil {
		writeError(w, herr)
		return true
	}
	w.WriteHeader(http.StatusNoContent)
	return true
}

// authenticateDevice checks the Authorization header (a SAS token for id,
// or a policy token with DeviceConnect), or, when there is none, the TLS
// client certificate chain: from the request context
// ([engine.PeerCertificates], set by the hub's front end, which terminates
// TLS itself) or else from r.TLS.
func (h *handler) authenticateDevice(r *http.Request, id auth.Identity) *engine.Error {
	if a := r.Header.Get("Authorization"); a != "" {
		_, herr := h.e.AuthenticateSAS(id, a)
		return herr
	}
	chain := engine.PeerCertificates(r.Context())
	if len(chain) == 0 && r.TLS != nil {
		chain = r.TLS.PeerCertificates
	}
	if len(chain) == 0 {
		return engine.NewError(engine.CodeUnauthorized,
			"The request has neither an Authorization header nor a client certificate")
	}
	return h.e.AuthenticateCert(id, append([]*x509.Certificate(nil), chain...))
}

// eventFromHeader reads a message's properties from the request headers.
// Header names are case-insensitive, and Go's server does not keep the
// case a client wrote (HTTP/2 sends them lower-case anyway), so
// application property names are reported lower-case [inf]. Over HTTPS,
// IoT Hub allows only RFC 7230 token characters (ASCII letters and digits
// and ! # $ % & ' * + - . ^ _ ` | ~) in application property names and
// values; anything else, an empty name or a repeated property is 400004
// ArgumentInvalid. System property values are taken as they are (a
// content type such as "application/json" is not a token).
func eventFromHeader(hdr http.Header) (engine.Event, *engine.Error) {
	var ev engine.Event
	for name, values := range hdr {
		lower := strings.ToLower(name)
		switch lower {
		case headerMessageID:
			ev.MessageID = values[0]
			continue
		case headerCorrelationID:
			ev.CorrelationID = values[0]
			continue
		case headerContentType:
			ev.ContentType = values[0]
			continue
		case headerContentEncoding:
			ev.ContentEncoding = values[0]
			continue
		}
		prop, ok := strings.CutPrefix(lower, headerAppPrefix)
		if !ok {
			continue
		}
		if !validPropertyText(prop) || prop == "" {
			return engine.Event{}, engine.NewError(engine.CodeArgumentInvalid,
				"The application property name %q is not valid: over HTTPS, names may only contain ASCII letters, digits and !#$%%&'*+-.^_`|~.", truncate(prop, 64))
		}
		if len(values) != 1 {
			return engine.Event{}, engine.NewError(engine.CodeArgumentInvalid,
				"The application property %q is given more than once.", prop)
		}
		if !validPropertyText(values[0]) {
			return engine.Event{}, engine.NewError(engine.CodeArgumentInvalid,
				"The value of the application property %q is not valid: over HTTPS, values may only contain ASCII letters, digits and !#$%%&'*+-.^_`|~.", prop)
		}
		if ev.Properties == nil {
			ev.Properties = map[string]string{}
		}
		ev.Properties[prop] = values[0]
	}
	return ev, nil
}

// validPropertyText reports whether s holds only the characters IoT Hub
// allows in property names and values over HTTPS (the RFC 7230 tchar set).
// The empty string is valid.
func validPropertyText(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
