package httpd

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

// The device-facing HTTPS cloud-to-device endpoints (the device polls):
//
//	GET    /devices/{id}/messages/deviceBound?api-version=…                     receive
//	DELETE /devices/{id}/messages/deviceBound/{lockToken}?api-version=…         complete
//	DELETE /devices/{id}/messages/deviceBound/{lockToken}?api-version=…&reject  reject
//	POST   /devices/{id}/messages/deviceBound/{lockToken}/abandon?api-version=… abandon
//
// (REST "Receive/Complete/Abandon Device Bound Notification"; the Node
// SDK spells "devicebound", .NET "deviceBound": literals match in any
// case.) A receive answers 204 No Content when nothing is available, else
// 200 with the body and the message's properties in the headers the
// official SDKs read (.NET HttpTransportHandler s_mapHttpHeadersToMessageProperties,
// Node http toMessage): ETag (the lock token, quoted), iothub-messageid,
// iothub-sequencenumber, iothub-to, iothub-expiry, iothub-correlationid,
// iothub-userid, iothub-ack, iothub-enqueuedtime, iothub-deliverycount and
// iothub-app-{name} per application property; [inf] iothub-contenttype
// and iothub-contentencoding (the names used on send). Times are ISO 8601
// UTC (what .NET writes on send and DateTime.TryParse reads) [inf]. The
// iothub-messagelocktimeout query parameter .NET sends is ignored: the
// lock is one minute.
//
// Settlement goes by the lock token in the path; If-Match (Node: bare,
// .NET: quoted on complete/reject, bare on abandon) is not needed and not
// checked. Success is 204; a token the hub does not hold (expired lock,
// already settled, expired message) is 412 with 412002
// DeviceMessageLockLost.
//
// Devices authenticate as on the telemetry endpoint (authenticateDevice).
// Modules have no cloud-to-device queue (IoT Hub does not support C2D to
// modules): the module form of these paths answers 400004 [inf].
const (
	headerSequenceNumber = "iothub-sequencenumber"
	headerTo             = "iothub-to"
	headerExpiry         = "iothub-expiry"
	headerUserID         = "iothub-userid"
	headerAck            = "iothub-ack"
	headerEnqueuedTime   = "iothub-enqueuedtime"
	headerDeliveryCount  = "iothub-deliverycount"
)

// deviceBoundOp is which device-bound endpoint a path names.
type deviceBoundOp int

const (
	opReceive deviceBoundOp = iota + 1
	opSettle
	opAbandon
)

func (op deviceBoundOp) method() string {
	switch op {
	case opReceive:
		return http.MethodGet
	case opSettle:
		return http.MethodDelete
	}
	return http.MethodPost
}

// matchDeviceBoundRoute reports whether escapedPath is a device-bound path,
// whose, which operation and the lock token. Literal segments match
// case-insensitively, one trailing slash is ignored, ids are unescaped
// segment by segment.
func matchDeviceBoundRoute(escapedPath string) (id auth.Identity, op deviceBoundOp, lock string, ok bool) {
	p := strings.TrimSuffix(strings.TrimPrefix(escapedPath, "/"), "/")
	segs := strings.Split(p, "/")
	if len(segs) < 4 || !strings.EqualFold(segs[0], "devices") {
		return auth.Identity{}, 0, "", false
	}
	rest := segs[2:]
	var modSeg string
	module := false
	if len(rest) >= 4 && strings.EqualFold(rest[0], "modules") && strings.EqualFold(rest[2], "messages") {
		modSeg, rest, module = segs[3], rest[2:], true
	}
	if len(rest) < 2 || !strings.EqualFold(rest[0], "messages") || !strings.EqualFold(rest[1], "devicebound") {
		return auth.Identity{}, 0, "", false
	}
	var lockSeg string
	switch {
	case len(rest) == 2:
		op = opReceive
	case len(rest) == 3:
		op, lockSeg = opSettle, rest[2]
	case len(rest) == 4 && strings.EqualFold(rest[3], "abandon"):
		op, lockSeg = opAbandon, rest[2]
	default:
		return auth.Identity{}, 0, "", false
	}
	dev, err := url.PathUnescape(segs[1])
	if err != nil || dev == "" {
		return auth.Identity{}, 0, "", false
	}
	mod, err := url.PathUnescape(modSeg)
	if err != nil {
		return auth.Identity{}, 0, "", false
	}
	if op != opReceive {
		if lock, err = url.PathUnescape(lockSeg); err != nil || lock == "" {
			return auth.Identity{}, 0, "", false
		}
	}
	if module && mod == "" {
		return auth.Identity{}, 0, "", false
	}
	return auth.Identity{DeviceID: dev, ModuleID: mod}, op, lock, true
}

// serveDeviceBound serves the device-bound endpoints and reports whether
// the request was one of their paths. Checks, in order: the HTTP method
// (405), the api-version (400001), authentication (401002), modules
// (400004), then the engine.
func (h *handler) serveDeviceBound(w http.ResponseWriter, r *http.Request, escapedPath string) bool {
	id, op, lock, ok := matchDeviceBoundRoute(escapedPath)
	if !ok {
		return false
	}
	if r.Method != op.method() {
		w.Header().Set("Allow", op.method())
		writePlainError(w, http.StatusMethodNotAllowed,
			"The requested resource does not support http method '"+truncate(r.Method, 32)+"'.")
		return true
	}
	q := r.URL.Query()
	if herr := checkAPIVersion(q); herr != nil {
		writeError(w, herr)
		return true
	}
	id.HostName = h.e.HostName()
	if herr := h.authenticateDevice(r, id); herr != nil {
		writeError(w, herr)
		return true
	}
	if id.ModuleID != "" {
		writeError(w, engine.NewError(engine.CodeArgumentInvalid,
			"IoT Hub does not support cloud-to-device messages for modules."))
		return true
	}
	switch op {
	case opReceive:
		h.receiveC2D(w, id)
	case opSettle:
		outcome := engine.C2DComplete
		if _, reject := queryValue(q, "reject"); reject {
			outcome = engine.C2DReject
		}
		h.settleC2D(w, id, lock, outcome)
	case opAbandon:
		h.settleC2D(w, id, lock, engine.C2DAbandon)
	}
	return true
}

func (h *handler) receiveC2D(w http.ResponseWriter, id auth.Identity) {
	m, ok := h.e.ReceiveC2D(id)
	if !ok {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	hdr := w.Header()
	set := func(k, v string) {
		if v != "" {
			hdr[k] = []string{v} // as written: the SDKs look up these exact names
		}
	}
	hdr.Set("ETag", `"`+m.LockToken+`"`)
	set(headerMessageID, m.MessageID)
	set(headerSequenceNumber, strconv.FormatInt(m.SequenceNumber, 10))
	to := m.To
	if to == "" {
		to = "/devices/" + url.PathEscape(id.DeviceID) + "/messages/deviceBound"
	}
	set(headerTo, to)
	set(headerExpiry, formatC2DTime(m.ExpiryTime))
	set(headerCorrelationID, m.CorrelationID)
	set(headerUserID, m.UserID)
	set(headerAck, m.Ack)
	set(headerEnqueuedTime, formatC2DTime(m.EnqueuedTime))
	hdr[headerDeliveryCount] = []string{strconv.Itoa(m.DeliveryCount)}
	set(headerContentType, m.ContentType)
	set(headerContentEncoding, m.ContentEncoding)
	for k, v := range m.Properties {
		// Go's server turns CR and LF in values into spaces; property text
		// from AMQP senders is otherwise passed as it is.
		hdr[headerAppPrefix+k] = []string{v}
	}
	hdr.Set("Content-Type", "application/octet-stream")
	hdr.Set("Content-Length", strconv.Itoa(len(m.Body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(m.Body)
}

func formatC2DTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func (h *handler) settleC2D(w http.ResponseWriter, id auth.Identity, lock string, o engine.C2DOutcome) {
	if herr := h.e.SettleC2D(id, lock, o); herr != nil {
		writeError(w, herr)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// purgeResult is the body of DELETE /devices/{id}/commands (.NET
// PurgeMessageQueueResult, REST "Purge Cloud To Device Message Queue").
type purgeResult struct {
	TotalMessagesPurged int    `json:"totalMessagesPurged"`
	DeviceID            string `json:"deviceId"`
}

// purge serves DELETE /devices/{id}/commands: 200 with the count, 404001
// for an unknown device.
func (h *handler) purge(w http.ResponseWriter, rt route) {
	n, herr := h.e.PurgeC2D(rt.deviceID)
	if herr != nil {
		writeError(w, herr)
		return
	}
	writeJSON(w, marshal(purgeResult{TotalMessagesPurged: n, DeviceID: rt.deviceID}), "")
}
