package engine

// Device and module twins: the registry's twin store, the service's view
// (GET/PATCH/PUT /twins/...), the device's view (MQTT $iothub/twin/...,
// AMQP twin links) and desired-property notifications.

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"time"

	"github.com/iothub-go/iothub/auth"
)

// Twin is a device or module twin as the service API returns it, with IoT
// Hub's JSON field names (GET /twins/{id}). Tags and Properties are
// rendered JSON: Properties is {"desired":{...,"$metadata":{...},
// "$version":n},"reported":{...}}.
type Twin struct {
	DeviceID                  string          `json:"deviceId"`
	ModuleID                  string          `json:"moduleId,omitempty"`
	ETag                      string          `json:"etag"`
	DeviceETag                string          `json:"deviceEtag"`
	Status                    string          `json:"status"`
	StatusReason              *string         `json:"statusReason,omitempty"`
	StatusUpdateTime          string          `json:"statusUpdateTime"`
	ConnectionState           string          `json:"connectionState"`
	LastActivityTime          string          `json:"lastActivityTime"`
	CloudToDeviceMessageCount int             `json:"cloudToDeviceMessageCount"`
	AuthenticationType        string          `json:"authenticationType"`
	X509Thumbprint            X509Thumbprint  `json:"x509Thumbprint"`
	ModelID                   string          `json:"modelId"`
	Version                   int64           `json:"version"`
	Tags                      json.RawMessage `json:"tags,omitempty"`
	Properties                json.RawMessage `json:"properties"`
	Capabilities              *Capabilities   `json:"capabilities,omitempty"`
	DeviceScope               *string         `json:"deviceScope,omitempty"`
	ParentScopes              []string        `json:"parentScopes,omitempty"`
}

// DesiredConn is implemented by a Conn that can deliver desired-property
// patches (MQTT, AMQP). The engine calls SendDesired in version order, one
// call at a time per session, only after the session subscribed with
// SetDesiredSubscribed(true). body is the patch as JSON, "$version"
// included. Like SendMethod it must not block for long; an error means the
// connection is going away.
type DesiredConn interface {
	SendDesired(version int64, body []byte) error
}

// twinState is what the registry keeps of one twin.
//
// version and etag move differently, as twins captured from IoT Hub show
// (docs/hub-fidelity.md section 7): a service write (PATCH, PUT) bumps
// both, a reported update bumps only version. A new twin has etag
// "AAAAAAAAAAE=" and version 2.
type twinState struct {
	tags     *tnode
	desired  twinSection
	reported twinSection
	version  int64
	etagSeq  uint64
	modelID  string
}

// twinOf returns rec's twin, creating the empty twin of a new identity:
// version 2, etag 1, desired and reported at $version 1 with a $metadata
// of $lastUpdated only. A device twin's sections are stamped when the twin
// is first used (IoT Hub stamps the device's creation; the registry keeps
// no creation time); a module twin's with the zero time, as IoT Hub shows
// a new module twin.
func (e *Engine) twinOf(rec *identityRecord) *twinState {
	if rec.twin == nil {
		at := e.now()
		if rec.module != nil {
			at = time.Time{}
		}
		rec.twin = &twinState{
			tags:     newObject(at, 0),
			desired:  twinSection{root: newObject(at, 0), version: 1},
			reported: twinSection{root: newObject(at, 0), version: 1},
			version:  2,
			etagSeq:  1,
		}
	}
	return rec.twin
}

// touch records a service write of the twin: a new version and etag.
func (t *twinState) touch() {
	t.version++
	t.etagSeq++
}

// CodeDeviceModelMaxPropertiesExceeded (403100) refuses a twin write
// that would take tags, desired or reported past its size limit. IoT Hub
// answers it with HTTP 403 to the service (iotedge #1694: "Forbidden:
// ErrorCode:DeviceModelMaxPropertiesExceeded;'Properties.Desired' size
// should be less than 8192 bytes.") and with errorCode 403100 to a device
// (iotedge #7035); troubleshoot-error-codes.md lists 403100 under that
// name.
const CodeDeviceModelMaxPropertiesExceeded = 403100

// sizeError is IoT Hub's refusal of a section that would grow past its
// limit: 403100 DeviceModelMaxPropertiesExceeded, with IoT Hub's wording
// ("'Properties.Desired' size should be less than 8192 bytes.", from a
// hub with the old limit; see docs/hub-fidelity.md section 7).
func sizeError(section string, size, limit int) *Error {
	return NewError(CodeDeviceModelMaxPropertiesExceeded,
		"'%s' size should be less than %d bytes. It would be %d bytes (IoT Hub's twin size rules: the lengths of keys and values, $metadata and $version excluded).",
		section, limit+1, size)
}

// etag is the twin's etag in IoT Hub's form: base64 of a big-endian 64-bit
// counter ("AAAAAAAAAAE=").
func (t *twinState) etag() string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], t.etagSeq)
	return base64.StdEncoding.EncodeToString(b[:])
}

// twinLocked renders rec's twin for the service.
func (e *Engine) twinLocked(rec *identityRecord) Twin {
	t := e.twinOf(rec)
	props := map[string]any{
		"desired":  t.desired.render(true, true),
		"reported": t.reported.render(true, false),
	}
	tw := Twin{
		ETag:       t.etag(),
		ModelID:    t.modelID,
		Version:    t.version,
		Properties: marshalSorted(props),
	}
	if len(t.tags.kids) > 0 {
		tw.Tags = marshalSorted(t.tags.value())
	}
	a := rec.auth()
	tw.AuthenticationType = a.Type
	tw.X509Thumbprint = a.X509Thumbprint
	if m := rec.module; m != nil {
		tw.DeviceID, tw.ModuleID = m.DeviceID, m.ModuleID
		tw.DeviceETag = m.ETag
		tw.ConnectionState = m.ConnectionState
		tw.LastActivityTime = m.LastActivityTime
		tw.CloudToDeviceMessageCount = m.CloudToDeviceMessageCount
		// A module's status is its device's: modules have none of their own.
		tw.Status = "enabled"
		if dev := e.devices[m.DeviceID]; dev != nil {
			tw.Status = dev.device.Status
		}
		tw.StatusUpdateTime = zeroTime
		return tw
	}
	d := rec.device
	tw.DeviceID = d.DeviceID
	tw.DeviceETag = d.ETag
	tw.Status = d.Status
	tw.StatusReason = d.StatusReason
	tw.StatusUpdateTime = d.StatusUpdatedTime
	tw.ConnectionState = d.ConnectionState
	tw.LastActivityTime = d.LastActivityTime
	tw.CloudToDeviceMessageCount = d.CloudToDeviceMessageCount
	caps := d.Capabilities
	tw.Capabilities = &caps
	tw.DeviceScope = d.DeviceScope
	tw.ParentScopes = append([]string{}, d.ParentScopes...)
	return tw
}

// GetTwin returns a device twin (moduleID "") or a module twin, as GET
// /twins/{id}[/modules/{mid}] does.
func (e *Engine) GetTwin(deviceID, moduleID string) (Twin, *Error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	rec, herr := e.lookupLocked(deviceID, moduleID)
	if herr != nil {
		return Twin{}, herr
	}
	return e.twinLocked(rec), nil
}

// twinRequest is the part of a service twin body the hub acts on.
type twinRequest struct {
	tags, desired map[string]any
	hasTags       bool
	hasDesired    bool
}

// parseTwinRequest parses the body of PATCH or PUT /twins/...: a twin
// object whose "tags" and "properties.desired" are applied. Read-only
// fields (etag, version, status, …) and "properties.reported" are ignored:
// the .NET service SDK sends back the whole twin it read, and IoT Hub
// accepts it (docs/hub-fidelity.md section 7). A deviceId or moduleId
// that names another twin is refused, as PUT /devices/{id} refuses it.
func parseTwinRequest(body []byte, deviceID, moduleID string, patch bool) (twinRequest, *Error) {
	v, err := decodeTwinJSON(body)
	if err != nil {
		return twinRequest{}, NewError(CodeArgumentInvalid, "Invalid twin: %s", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return twinRequest{}, NewError(CodeArgumentInvalid, "Invalid twin: the body must be a JSON object")
	}
	if id, ok := m["deviceId"].(string); ok && id != "" && id != deviceID {
		return twinRequest{}, NewError(CodeArgumentInvalid, "DeviceId in the twin (%s) does not match the id in the URI (%s)", clipKey(id), deviceID)
	}
	if id, ok := m["moduleId"].(string); ok && id != "" && id != moduleID {
		return twinRequest{}, NewError(CodeArgumentInvalid, "ModuleId in the twin (%s) does not match the id in the URI (%s)", clipKey(id), moduleID)
	}
	var req twinRequest
	if t, ok := m["tags"]; ok && t != nil {
		tags, err := sectionPatch("tags", t, patch, true)
		if err != nil {
			return twinRequest{}, NewError(CodeArgumentInvalid, "Invalid twin tags: %s", err)
		}
		req.tags, req.hasTags = tags, true
	}
	if p, ok := m["properties"]; ok && p != nil {
		pm, ok := p.(map[string]any)
		if !ok {
			return twinRequest{}, NewError(CodeArgumentInvalid, "Invalid twin: properties must be a JSON object")
		}
		if d, ok := pm["desired"]; ok && d != nil {
			desired, err := sectionPatch("properties.desired", d, patch, true)
			if err != nil {
				return twinRequest{}, NewError(CodeArgumentInvalid, "Invalid twin desired properties: %s", err)
			}
			req.desired, req.hasDesired = desired, true
		}
	}
	return req, nil
}

// UpdateTwin applies a PATCH /twins/... body: tags and desired properties
// are merged (null deletes). ifMatch "" or "*" matches any etag. A change
// of desired properties is pushed to the connected, subscribed device.
func (e *Engine) UpdateTwin(deviceID, moduleID string, body []byte, ifMatch string) (Twin, *Error) {
	return e.writeTwin(deviceID, moduleID, body, ifMatch, true)
}

// ReplaceTwin applies a PUT /twins/... body: tags and desired properties
// are replaced by those given (an absent section becomes empty).
func (e *Engine) ReplaceTwin(deviceID, moduleID string, body []byte, ifMatch string) (Twin, *Error) {
	return e.writeTwin(deviceID, moduleID, body, ifMatch, false)
}

func (e *Engine) writeTwin(deviceID, moduleID string, body []byte, ifMatch string, patch bool) (Twin, *Error) {
	req, herr := parseTwinRequest(body, deviceID, moduleID, patch)
	if herr != nil {
		return Twin{}, herr
	}
	e.mu.Lock()
	rec, herr := e.lookupLocked(deviceID, moduleID)
	if herr != nil {
		e.mu.Unlock()
		return Twin{}, herr
	}
	t := e.twinOf(rec)
	if ifMatch != "" && !matchETag(ifMatch, t.etag()) {
		e.mu.Unlock()
		return Twin{}, NewError(CodePreconditionFailed, "Precondition failed: the etag does not match the twin's current etag.")
	}
	now := e.now()
	tags, desired := t.tags, t.desired.root
	if patch {
		if req.hasTags {
			tags = tags.clone()
			tags.merge(req.tags, now, 0)
		}
		if req.hasDesired {
			desired = desired.clone()
			desired.merge(req.desired, now, t.desired.version+1)
		}
	} else {
		tags = newObject(now, 0)
		tags.merge(req.tags, now, 0)
		desired = newObject(now, t.desired.version+1)
		desired.merge(req.desired, now, t.desired.version+1)
	}
	if n := tags.size(); n > MaxTagsSize {
		e.mu.Unlock()
		return Twin{}, sizeError("Tags", n, MaxTagsSize)
	}
	if n := desired.size(); n > MaxPropertiesSize {
		e.mu.Unlock()
		return Twin{}, sizeError("Properties.Desired", n, MaxPropertiesSize)
	}
	t.tags = tags
	var push []byte
	if desired != t.desired.root {
		t.desired.root = desired
		t.desired.version++
		var note map[string]any
		if patch {
			note = req.desired
		} else {
			note = desired.value().(map[string]any)
		}
		note["$version"] = t.desired.version
		push = marshalSorted(note)
	}
	t.touch()
	out := e.twinLocked(rec)
	saved := e.saveIdentityLocked(deviceID)
	var s *Session
	if push != nil {
		s = e.sessions[identityKey(e.hostName, deviceID, moduleID)]
		if s != nil && !s.queueDesired(t.desired.version, push) {
			s = nil
		}
	}
	e.mu.Unlock()
	herr = commit(saved) // the device is told only once the change is durable
	if s != nil {
		s.flushDesired()
	}
	if herr != nil {
		return Twin{}, herr
	}
	return out, nil
}

// identityKey is the sessions map key of an identity.
func identityKey(host, deviceID, moduleID string) string {
	return auth.Identity{HostName: host, DeviceID: deviceID, ModuleID: moduleID}.String()
}

// DeviceTwin returns the twin as a device reads it (MQTT GET, AMQP GET):
// {"desired":{...,"$version":n},"reported":{...,"$version":m}}, without
// tags or metadata.
func (e *Engine) DeviceTwin(id auth.Identity) ([]byte, *Error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	rec, herr := e.lookupLocked(id.DeviceID, id.ModuleID)
	if herr != nil {
		return nil, herr
	}
	t := e.twinOf(rec)
	return marshalSorted(map[string]any{
		"desired":  t.desired.render(false, false),
		"reported": t.reported.render(false, false),
	}), nil
}

// UpdateReported merges a device's reported-properties patch (null
// deletes) and returns the new reported $version. The patch is refused
// whole with 400004 ArgumentInvalid when it breaks the document rules
// ("$version" and "$metadata" included: they break the key rules), and
// with 403100 DeviceModelMaxPropertiesExceeded when the result would
// exceed MaxPropertiesSize. It bumps the twin's version, not its etag.
func (e *Engine) UpdateReported(id auth.Identity, body []byte) (_ int64, herr *Error) {
	v, err := decodeTwinJSON(body)
	if err != nil {
		return 0, NewError(CodeArgumentInvalid, "Invalid reported properties: %s", err)
	}
	patch, err := sectionPatch("properties.reported", v, true, false)
	if err != nil {
		return 0, NewError(CodeArgumentInvalid, "Invalid reported properties: %s", err)
	}
	var saved *pendingSave
	defer waitStore(&saved, &herr)
	e.mu.Lock()
	defer e.mu.Unlock()
	rec, herr := e.lookupLocked(id.DeviceID, id.ModuleID)
	if herr != nil {
		return 0, herr
	}
	t := e.twinOf(rec)
	root := t.reported.root.clone()
	root.merge(patch, e.now(), 0)
	if n := root.size(); n > MaxPropertiesSize {
		return 0, sizeError("Properties.Reported", n, MaxPropertiesSize)
	}
	t.reported.root = root
	t.reported.version++
	t.version++
	saved = e.saveIdentityLocked(id.DeviceID)
	return t.reported.version, nil
}

// setModelIDLocked records the Plug and Play model id an identity
// announced when it connected; the twin shows it as modelId.
func (e *Engine) setModelIDLocked(id auth.Identity, modelID string) {
	if rec, herr := e.lookupLocked(id.DeviceID, id.ModuleID); herr == nil {
		if t := e.twinOf(rec); t.modelID != modelID {
			t.modelID = modelID
			e.saveIdentityLocked(id.DeviceID).fill() // not waited for: nothing acknowledges it
		}
	}
}

// GetTwin is DeviceTwin for the session's identity.
func (s *Session) GetTwin() ([]byte, *Error) { return s.e.DeviceTwin(s.id) }

// UpdateReported is Engine.UpdateReported for the session's identity.
func (s *Session) UpdateReported(body []byte) (int64, *Error) {
	return s.e.UpdateReported(s.id, body)
}

// SetModelID records the model id the device announced on connect (MQTT
// user name model-id, AMQP com.microsoft:model-id).
func (s *Session) SetModelID(modelID string) {
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	s.e.setModelIDLocked(s.id, modelID)
}

// SetDesiredSubscribed records whether the device listens for desired
// property patches (MQTT SUBACK for $iothub/twin/PATCH/properties/desired/#,
// AMQP PUT /notifications/twin/properties/desired). Patches made while it
// does not are not queued: the device reads the twin after subscribing.
func (s *Session) SetDesiredSubscribed(on bool) {
	s.e.mu.Lock()
	s.mu.Lock()
	s.desiredSub = on && !s.ended
	if !on {
		s.desiredQ = nil
	}
	s.mu.Unlock()
	s.e.mu.Unlock()
}

// desiredPatch is a notification waiting to be sent.
type desiredPatch struct {
	version int64
	body    []byte
}

// queueDesired appends a notification if the session listens for them
// and its Conn can deliver them. Called with e.mu held, so that the queue
// is in version order.
func (s *Session) queueDesired(version int64, body []byte) bool {
	if _, ok := s.conn.(DesiredConn); !ok {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.desiredSub || s.ended {
		return false
	}
	s.desiredQ = append(s.desiredQ, desiredPatch{version, body})
	return true
}

// flushDesired sends queued notifications in order, one sender at a time.
func (s *Session) flushDesired() {
	dc, ok := s.conn.(DesiredConn)
	if !ok {
		return
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	for {
		s.mu.Lock()
		if len(s.desiredQ) == 0 || s.ended {
			s.desiredQ = nil
			s.mu.Unlock()
			return
		}
		p := s.desiredQ[0]
		s.desiredQ = s.desiredQ[1:]
		s.mu.Unlock()
		if err := dc.SendDesired(p.version, p.body); err != nil {
			// A device that missed a patch must not stay connected as if
			// it had it: closing makes it reconnect and read the twin.
			s.conn.Close(NewError(CodeServerError, "A desired-property update could not be sent: %v", err))
			s.Disconnect()
			return
		}
	}
}
