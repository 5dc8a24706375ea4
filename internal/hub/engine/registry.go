package engine

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hubauth"
)

// Authentication types of registry identities.
const (
	AuthSAS                  = "sas"
	AuthSelfSigned           = "selfSigned"
	AuthCertificateAuthority = "certificateAuthority"
	AuthNone                 = "none"
)

// Device is a registry device, with IoT Hub's JSON field names.
type Device struct {
	DeviceID                   string         `json:"deviceId"`
	GenerationID               string         `json:"generationId"`
	ETag                       string         `json:"etag"`
	ConnectionState            string         `json:"connectionState"`
	Status                     string         `json:"status"`
	StatusReason               *string        `json:"statusReason"`
	ConnectionStateUpdatedTime string         `json:"connectionStateUpdatedTime"`
	StatusUpdatedTime          string         `json:"statusUpdatedTime"`
	LastActivityTime           string         `json:"lastActivityTime"`
	CloudToDeviceMessageCount  int            `json:"cloudToDeviceMessageCount"`
	Authentication             Authentication `json:"authentication"`
	Capabilities               Capabilities   `json:"capabilities"`
	DeviceScope                *string        `json:"deviceScope"`
	ParentScopes               []string       `json:"parentScopes"`
}

// Module is a registry module, with IoT Hub's JSON field names.
type Module struct {
	ModuleID                   string         `json:"moduleId"`
	DeviceID                   string         `json:"deviceId"`
	ManagedBy                  *string        `json:"managedBy"`
	GenerationID               string         `json:"generationId"`
	ETag                       string         `json:"etag"`
	ConnectionState            string         `json:"connectionState"`
	ConnectionStateUpdatedTime string         `json:"connectionStateUpdatedTime"`
	LastActivityTime           string         `json:"lastActivityTime"`
	CloudToDeviceMessageCount  int            `json:"cloudToDeviceMessageCount"`
	Authentication             Authentication `json:"authentication"`
}

// Authentication is an identity's credentials in the registry.
type Authentication struct {
	SymmetricKey   SymmetricKey   `json:"symmetricKey"`
	X509Thumbprint X509Thumbprint `json:"x509Thumbprint"`
	Type           string         `json:"type"`
}

// SymmetricKey holds an identity's SAS keys (base64).
type SymmetricKey struct {
	PrimaryKey   *string `json:"primaryKey"`
	SecondaryKey *string `json:"secondaryKey"`
}

// X509Thumbprint holds a self-signed identity's certificate thumbprints.
type X509Thumbprint struct {
	PrimaryThumbprint   *string `json:"primaryThumbprint"`
	SecondaryThumbprint *string `json:"secondaryThumbprint"`
}

// Capabilities of a device.
type Capabilities struct {
	IotEdge bool `json:"iotEdge"`
}

const zeroTime = "0001-01-01T00:00:00"

func formatTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.0000000Z")
}

// identityRecord is what the registry keeps for a device or module.
type identityRecord struct {
	device  *Device // set for devices
	module  *Module // set for modules
	modules map[string]*identityRecord
	twin    *twinState // created on first use (twins.go)
	qdoc    *queryDoc  // the twin's query document, cached (querydocs.go)
	c2d     *c2dQueue  // a device's cloud-to-device queue, created on first use (c2d.go)
}

func (r *identityRecord) auth() *Authentication {
	if r.module != nil {
		return &r.module.Authentication
	}
	return &r.device.Authentication
}

func str(s string) *string { return &s }

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// newKey returns a random 32-byte base64 key, as IoT Hub generates.
func newKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// normalizeAuth validates a requested Authentication and fills in generated
// keys, returning IoT Hub's canonical form.
func normalizeAuth(a Authentication) (Authentication, *Error) {
	if a.Type == "" {
		a.Type = AuthSAS
	}
	var out Authentication
	switch strings.ToLower(a.Type) {
	case strings.ToLower(AuthSAS):
		out.Type = AuthSAS
		p, s := deref(a.SymmetricKey.PrimaryKey), deref(a.SymmetricKey.SecondaryKey)
		for _, k := range []*string{&p, &s} {
			if *k == "" {
				*k = newKey()
				continue
			}
			b, err := base64.StdEncoding.DecodeString(*k)
			if err != nil || len(b) < 16 || len(b) > 64 {
				return out, NewError(CodeArgumentInvalid, "The provided key is not valid: keys must be base64 encoded and between 16 and 64 bytes long")
			}
		}
		out.SymmetricKey = SymmetricKey{PrimaryKey: str(p), SecondaryKey: str(s)}
		if a.X509Thumbprint.PrimaryThumbprint != nil || a.X509Thumbprint.SecondaryThumbprint != nil {
			if deref(a.X509Thumbprint.PrimaryThumbprint) != "" || deref(a.X509Thumbprint.SecondaryThumbprint) != "" {
				return out, NewError(CodeArgumentInvalid, "Thumbprints cannot be set for authentication type sas")
			}
		}
	case strings.ToLower(AuthSelfSigned):
		out.Type = AuthSelfSigned
		p, s := deref(a.X509Thumbprint.PrimaryThumbprint), deref(a.X509Thumbprint.SecondaryThumbprint)
		if p == "" {
			return out, NewError(CodeArgumentInvalid, "A primary thumbprint is required for authentication type selfSigned")
		}
		for _, t := range []string{p, s} {
			if t == "" {
				continue
			}
			if err := hubauth.CheckThumbprintSyntax(t); err != nil {
				return out, NewError(CodeArgumentInvalid, "%s", strings.TrimPrefix(err.Error(), "iothub: "))
			}
		}
		out.X509Thumbprint.PrimaryThumbprint = str(strings.ToUpper(p))
		if s != "" {
			out.X509Thumbprint.SecondaryThumbprint = str(strings.ToUpper(s))
		}
		if deref(a.SymmetricKey.PrimaryKey) != "" || deref(a.SymmetricKey.SecondaryKey) != "" {
			return out, NewError(CodeArgumentInvalid, "Keys cannot be set for authentication type selfSigned")
		}
	case strings.ToLower(AuthCertificateAuthority), strings.ToLower(AuthNone):
		if strings.EqualFold(a.Type, AuthNone) {
			out.Type = AuthNone
		} else {
			out.Type = AuthCertificateAuthority
		}
		if deref(a.SymmetricKey.PrimaryKey) != "" || deref(a.SymmetricKey.SecondaryKey) != "" ||
			deref(a.X509Thumbprint.PrimaryThumbprint) != "" || deref(a.X509Thumbprint.SecondaryThumbprint) != "" {
			return out, NewError(CodeArgumentInvalid, "Keys and thumbprints cannot be set for authentication type %s", out.Type)
		}
	default:
		return out, NewError(CodeArgumentInvalid, "Unknown authentication type %q: want sas, selfSigned, certificateAuthority or none", a.Type)
	}
	return out, nil
}

// etags: base64 of a decimal counter, like IoT Hub's "MzE4NzUxOTU1".
func (e *Engine) nextETag() string {
	e.etagSeq++
	return base64.StdEncoding.EncodeToString([]byte(strconv.FormatUint(e.etagSeq, 10)))
}

func (e *Engine) nextGeneration() string {
	e.genSeq++
	// .NET ticks-like 18-digit number, unique per identity creation.
	return strconv.FormatInt(e.now().UnixNano()/100+621355968000000000+int64(e.genSeq), 10)
}

// matchETag implements If-Match: "*" (quoted or not) always matches;
// otherwise the unquoted values must be equal.
func matchETag(ifMatch, etag string) bool {
	v := strings.TrimSpace(ifMatch)
	if strings.HasPrefix(v, "W/") {
		v = v[2:]
	}
	v = strings.Trim(v, `"`)
	return v == "*" || v == etag
}

func checkStatus(s string) (string, *Error) {
	switch strings.ToLower(s) {
	case "", "enabled":
		return "enabled", nil
	case "disabled":
		return "disabled", nil
	}
	return "", NewError(CodeArgumentInvalid, "Unknown device status %q: want enabled or disabled", s)
}

// PutDevice creates a device (ifMatch == "") or updates it (ifMatch is an
// etag or "*"), as PUT /devices/{id} does. Device scopes follow the rules
// of resolveScopesLocked.
func (e *Engine) PutDevice(id string, d Device, ifMatch string) (Device, *Error) {
	return e.putDevice(id, d, ifMatch, false)
}

// ImportDevice is PutDevice for bulk registry operations, which accept a
// leaf device scope that names no edge device in the hub.
func (e *Engine) ImportDevice(id string, d Device, ifMatch string) (Device, *Error) {
	return e.putDevice(id, d, ifMatch, true)
}

func (e *Engine) putDevice(id string, d Device, ifMatch string, lenient bool) (Device, *Error) {
	if err := auth.CheckID(id); err != nil {
		return Device{}, NewError(CodeArgumentInvalid, "DeviceId is invalid: %s", strings.TrimPrefix(err.Error(), "iothub: "))
	}
	if d.DeviceID != "" && d.DeviceID != id {
		return Device{}, NewError(CodeArgumentInvalid, "DeviceId in the body (%s) does not match the id in the URI (%s)", d.DeviceID, id)
	}
	status, herr := checkStatus(d.Status)
	if herr != nil {
		return Device{}, herr
	}
	if d.StatusReason != nil && len(*d.StatusReason) > 128 {
		return Device{}, NewError(CodeArgumentInvalid, "statusReason is longer than 128 characters")
	}
	a, herr := normalizeAuth(d.Authentication)
	if herr != nil {
		return Device{}, herr
	}

	e.mu.Lock()
	rec, exists := e.devices[id]
	now := formatTime(e.now())
	var kick bool
	switch {
	case ifMatch == "" && exists:
		e.mu.Unlock()
		return Device{}, NewError(CodeDeviceAlreadyExists, "A device with ID '%s' is already registered.", id)
	case ifMatch != "" && !exists:
		e.mu.Unlock()
		return Device{}, NewError(CodeDeviceNotFound, "Device %s not registered.", id)
	case ifMatch != "" && !matchETag(ifMatch, rec.device.ETag):
		e.mu.Unlock()
		return Device{}, NewError(CodePreconditionFailed, "Precondition failed: the etag does not match the device's current etag.")
	}
	var old *Device
	generation := ""
	if exists {
		old = rec.device
		generation = old.GenerationID
	} else {
		generation = e.nextGeneration()
	}
	scope, parents, herr := e.resolveScopesLocked(id, generation, d.Capabilities.IotEdge,
		scopeRequest{deviceScope: d.DeviceScope, parentScopes: d.ParentScopes}, old, lenient)
	if herr != nil {
		e.mu.Unlock()
		return Device{}, herr
	}
	switch {
	case !exists:
		rec = &identityRecord{device: &Device{
			DeviceID:                   id,
			GenerationID:               generation,
			ConnectionState:            "Disconnected",
			ConnectionStateUpdatedTime: zeroTime,
			StatusUpdatedTime:          zeroTime,
			LastActivityTime:           zeroTime,
			ParentScopes:               []string{},
		}, modules: map[string]*identityRecord{}}
		e.devices[id] = rec
		e.members++
	default:
		old := rec.device
		kick = old.Status != status || !sameAuth(old.Authentication, a)
		if old.Status != status {
			old.StatusUpdatedTime = now
		}
	}
	dev := rec.device
	dev.Status = status
	dev.StatusReason = d.StatusReason
	dev.Authentication = a
	dev.Capabilities = d.Capabilities
	if dev.Capabilities.IotEdge {
		e.scopes[*scope] = id
	} else if old != nil && old.Capabilities.IotEdge && old.DeviceScope != nil {
		// No longer an edge device: its scope goes; children that name it
		// dangle, as they do when an edge device is deleted.
		delete(e.scopes, *old.DeviceScope)
	}
	dev.DeviceScope = scope
	dev.ParentScopes = parents
	dev.ETag = e.nextETag()
	out := cloneDevice(dev)
	saved := e.saveIdentityLocked(id)
	e.mu.Unlock()
	saved.fill() // encoded outside the lock, before the kick
	if kick {
		// Credentials changed or the device was disabled: IoT Hub drops
		// the device's connections (and its modules').
		e.kickDevice(id, NewError(CodeUnauthorized, "The device's credentials or status changed"))
	}
	if herr := commit(saved); herr != nil {
		return Device{}, herr
	}
	return out, nil
}

func sameAuth(a, b Authentication) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func cloneDevice(d *Device) Device {
	c := *d
	c.ParentScopes = append([]string{}, d.ParentScopes...)
	return c
}

// CredentialEpoch names an identity's incarnation and credentials: it
// changes when the identity is deleted and created again (a new
// generationId) or its authentication changes. It is "" for an identity
// that does not exist.
func (e *Engine) CredentialEpoch(id auth.Identity) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	rec, herr := e.lookupLocked(id.DeviceID, id.ModuleID)
	if herr != nil {
		return ""
	}
	a, _ := json.Marshal(rec.auth())
	sum := sha256.Sum256(a)
	gen := ""
	if rec.module != nil {
		gen = rec.module.GenerationID
	} else {
		gen = rec.device.GenerationID
	}
	return gen + "/" + hex.EncodeToString(sum[:8])
}

// Exists reports whether the device (moduleID "") or module is registered.
func (e *Engine) Exists(deviceID, moduleID string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, herr := e.lookupLocked(deviceID, moduleID)
	return herr == nil
}

// GetDevice returns a device.
func (e *Engine) GetDevice(id string) (Device, *Error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	rec, ok := e.devices[id]
	if !ok {
		return Device{}, NewError(CodeDeviceNotFound, "Device %s not registered.", id)
	}
	return cloneDevice(rec.device), nil
}

// ListDevices returns up to top devices, ordered by id.
func (e *Engine) ListDevices(top int) []Device {
	e.mu.Lock()
	defer e.mu.Unlock()
	ids := make([]string, 0, len(e.devices))
	for id := range e.devices {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	if top > 0 && len(ids) > top {
		ids = ids[:top]
	}
	out := make([]Device, 0, len(ids))
	for _, id := range ids {
		out = append(out, cloneDevice(e.devices[id].device))
	}
	return out
}

// DeleteDevice deletes a device and its modules; ifMatch "" or "*" is
// unconditional.
func (e *Engine) DeleteDevice(id, ifMatch string) *Error {
	e.mu.Lock()
	rec, ok := e.devices[id]
	if !ok {
		e.mu.Unlock()
		return NewError(CodeDeviceNotFound, "Device %s not registered.", id)
	}
	if ifMatch != "" && !matchETag(ifMatch, rec.device.ETag) {
		e.mu.Unlock()
		return NewError(CodePreconditionFailed, "Precondition failed: the etag does not match the device's current etag.")
	}
	delete(e.devices, id)
	e.members++
	e.dropC2DLocked(id, rec)
	if rec.device.Capabilities.IotEdge && rec.device.DeviceScope != nil {
		delete(e.scopes, *rec.device.DeviceScope)
	}
	saved := e.saveIdentityLocked(id)
	e.mu.Unlock()
	saved.fill() // encoded outside the lock, before the kick
	e.kickDevice(id, NewError(CodeDeviceNotFound, "The device was deleted"))
	return commit(saved)
}

// PutModule creates or updates a module, as PUT /devices/{id}/modules/{mid}.
func (e *Engine) PutModule(deviceID, moduleID string, m Module, ifMatch string) (Module, *Error) {
	if err := auth.CheckID(moduleID); err != nil {
		return Module{}, NewError(CodeArgumentInvalid, "ModuleId is invalid: %s", strings.TrimPrefix(err.Error(), "iothub: "))
	}
	if m.ModuleID != "" && m.ModuleID != moduleID {
		return Module{}, NewError(CodeArgumentInvalid, "ModuleId in the body (%s) does not match the id in the URI (%s)", m.ModuleID, moduleID)
	}
	if m.DeviceID != "" && m.DeviceID != deviceID {
		return Module{}, NewError(CodeArgumentInvalid, "DeviceId in the body (%s) does not match the id in the URI (%s)", m.DeviceID, deviceID)
	}
	a, herr := normalizeAuth(m.Authentication)
	if herr != nil {
		return Module{}, herr
	}
	e.mu.Lock()
	dev, ok := e.devices[deviceID]
	if !ok {
		e.mu.Unlock()
		return Module{}, NewError(CodeDeviceNotFound, "Device %s not registered.", deviceID)
	}
	rec, exists := dev.modules[moduleID]
	var kick bool
	switch {
	case ifMatch == "" && exists:
		e.mu.Unlock()
		return Module{}, NewError(CodeModuleAlreadyExistsOnDevice, "A module with ID '%s' is already registered on device '%s'.", moduleID, deviceID)
	case ifMatch != "" && !exists:
		e.mu.Unlock()
		return Module{}, NewError(CodeModuleNotFound, "Module %s not registered on device %s.", moduleID, deviceID)
	case ifMatch != "" && !matchETag(ifMatch, rec.module.ETag):
		e.mu.Unlock()
		return Module{}, NewError(CodePreconditionFailed, "Precondition failed: the etag does not match the module's current etag.")
	case !exists:
		rec = &identityRecord{module: &Module{
			ModuleID:                   moduleID,
			DeviceID:                   deviceID,
			GenerationID:               e.nextGeneration(),
			ConnectionState:            "Disconnected",
			ConnectionStateUpdatedTime: zeroTime,
			LastActivityTime:           zeroTime,
		}}
		dev.modules[moduleID] = rec
		e.members++
	default:
		kick = !sameAuth(rec.module.Authentication, a)
	}
	mod := rec.module
	mod.ManagedBy = m.ManagedBy
	mod.Authentication = a
	mod.ETag = e.nextETag()
	out := *mod
	saved := e.saveIdentityLocked(deviceID)
	e.mu.Unlock()
	saved.fill() // encoded outside the lock, before the kick
	if kick {
		e.kick(auth.Identity{HostName: e.hostName, DeviceID: deviceID, ModuleID: moduleID}, NewError(CodeUnauthorized, "The module's credentials changed"))
	}
	if herr := commit(saved); herr != nil {
		return Module{}, herr
	}
	return out, nil
}

// GetModule returns a module.
func (e *Engine) GetModule(deviceID, moduleID string) (Module, *Error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	rec, herr := e.lookupLocked(deviceID, moduleID)
	if herr != nil {
		return Module{}, herr
	}
	return *rec.module, nil
}

// ListModules returns a device's modules, ordered by id.
func (e *Engine) ListModules(deviceID string) ([]Module, *Error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	dev, ok := e.devices[deviceID]
	if !ok {
		return nil, NewError(CodeDeviceNotFound, "Device %s not registered.", deviceID)
	}
	ids := make([]string, 0, len(dev.modules))
	for id := range dev.modules {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := make([]Module, 0, len(ids))
	for _, id := range ids {
		out = append(out, *dev.modules[id].module)
	}
	return out, nil
}

// DeleteModule deletes a module.
func (e *Engine) DeleteModule(deviceID, moduleID, ifMatch string) *Error {
	e.mu.Lock()
	rec, herr := e.lookupLocked(deviceID, moduleID)
	if herr != nil {
		e.mu.Unlock()
		return herr
	}
	if ifMatch != "" && !matchETag(ifMatch, rec.module.ETag) {
		e.mu.Unlock()
		return NewError(CodePreconditionFailed, "Precondition failed: the etag does not match the module's current etag.")
	}
	delete(e.devices[deviceID].modules, moduleID)
	e.members++
	saved := e.saveIdentityLocked(deviceID)
	e.mu.Unlock()
	saved.fill() // encoded outside the lock, before the kick
	e.kick(auth.Identity{HostName: e.hostName, DeviceID: deviceID, ModuleID: moduleID}, NewError(CodeModuleNotFound, "The module was deleted"))
	return commit(saved)
}

// lookupLocked finds a device (moduleID "") or module record.
func (e *Engine) lookupLocked(deviceID, moduleID string) (*identityRecord, *Error) {
	dev, ok := e.devices[deviceID]
	if !ok {
		return nil, NewError(CodeDeviceNotFound, "Device %s not registered.", deviceID)
	}
	if moduleID == "" {
		return dev, nil
	}
	mod, ok := dev.modules[moduleID]
	if !ok {
		return nil, NewError(CodeModuleNotFound, "Module %s not registered on device %s.", moduleID, deviceID)
	}
	return mod, nil
}

// setConnectionState records a connect or disconnect in the registry.
func (e *Engine) setConnectionStateLocked(id auth.Identity, connected bool) {
	rec, herr := e.lookupLocked(id.DeviceID, id.ModuleID)
	if herr != nil {
		return
	}
	state := "Disconnected"
	if connected {
		state = "Connected"
	}
	now := formatTime(e.now())
	if rec.module != nil {
		rec.module.ConnectionState = state
		rec.module.ConnectionStateUpdatedTime = now
		rec.module.LastActivityTime = now
		return
	}
	rec.device.ConnectionState = state
	rec.device.ConnectionStateUpdatedTime = now
	rec.device.LastActivityTime = now
}

// RegistryStatistics is the body of GET /statistics/devices: device
// identities (modules are not counted) by status.
type RegistryStatistics struct {
	TotalDeviceCount    int64 `json:"totalDeviceCount"`
	EnabledDeviceCount  int64 `json:"enabledDeviceCount"`
	DisabledDeviceCount int64 `json:"disabledDeviceCount"`
}

// ServiceStatistics is the body of GET /statistics/service: the devices
// connected now (a device counts once, whatever its modules do).
type ServiceStatistics struct {
	ConnectedDeviceCount int64 `json:"connectedDeviceCount"`
}

// Statistics counts the registry's devices and the connected ones.
func (e *Engine) Statistics() (RegistryStatistics, ServiceStatistics) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var rs RegistryStatistics
	var ss ServiceStatistics
	for _, rec := range e.devices {
		rs.TotalDeviceCount++
		if rec.device.Status == "disabled" {
			rs.DisabledDeviceCount++
		} else {
			rs.EnabledDeviceCount++
		}
		if rec.device.ConnectionState == "Connected" {
			ss.ConnectedDeviceCount++
		}
	}
	return rs, ss
}
