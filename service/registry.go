package service

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"

	"github.com/iothub-go/iothub/auth"
)

// AuthenticationType is how a device or module authenticates to the hub.
type AuthenticationType string

// Authentication types of the IoT Hub registry.
const (
	// AuthenticationTypeSAS: symmetric keys (SAS tokens). The default.
	AuthenticationTypeSAS AuthenticationType = "sas"
	// AuthenticationTypeSelfSigned: an X.509 certificate identified by its
	// thumbprint.
	AuthenticationTypeSelfSigned AuthenticationType = "selfSigned"
	// AuthenticationTypeCertificateAuthority: an X.509 certificate issued
	// by a CA the hub trusts, with CN = device id ("deviceID/moduleID" for
	// modules).
	AuthenticationTypeCertificateAuthority AuthenticationType = "certificateAuthority"
	// AuthenticationTypeNone: no credentials (modules managed by IoT Edge).
	AuthenticationTypeNone AuthenticationType = "none"
)

// DeviceStatus says whether a device may connect.
type DeviceStatus string

// Device statuses.
const (
	// DeviceStatusEnabled: the device may connect. The default.
	DeviceStatusEnabled DeviceStatus = "enabled"
	// DeviceStatusDisabled: the device cannot connect, and its methods
	// fail with 404001 DeviceNotFound.
	DeviceStatusDisabled DeviceStatus = "disabled"
)

// ConnectionState is whether the hub sees an identity connected.
type ConnectionState string

// Connection states reported by the registry.
const (
	ConnectionStateConnected    ConnectionState = "Connected"
	ConnectionStateDisconnected ConnectionState = "Disconnected"
)

// SymmetricKey holds an identity's base64 SAS keys. Both are secrets:
// String and %v redact them.
type SymmetricKey struct {
	PrimaryKey   string
	SecondaryKey string
}

// String shows whether keys are set, never the keys.
func (k SymmetricKey) String() string {
	return "{PrimaryKey:" + redacted(k.PrimaryKey) + " SecondaryKey:" + redacted(k.SecondaryKey) + "}"
}

// GoString redacts like String.
func (k SymmetricKey) GoString() string { return "service.SymmetricKey" + k.String() }

func redacted(s string) string {
	if s == "" {
		return `""`
	}
	return "<redacted>"
}

// X509Thumbprint holds a self-signed identity's certificate thumbprints:
// 40 (SHA-1) or 64 (SHA-256) hex digits, as auth.ComputeThumbprints gives.
type X509Thumbprint struct {
	PrimaryThumbprint   string
	SecondaryThumbprint string
}

// Authentication is an identity's credentials in the registry.
type Authentication struct {
	// Type is the kind of credentials; "" means AuthenticationTypeSAS.
	Type AuthenticationType
	// SymmetricKey are the keys of a SAS identity. Leave them empty when
	// creating one to have the hub generate them (32 random bytes each);
	// keys you supply must be base64 of 16 to 64 bytes.
	SymmetricKey SymmetricKey
	// X509Thumbprint are the thumbprints of a self-signed identity; the
	// primary one is required for that type.
	X509Thumbprint X509Thumbprint
}

// DeviceCapabilities are a device's capabilities.
type DeviceCapabilities struct {
	// IoTEdge marks an IoT Edge device.
	IoTEdge bool
}

// Device is a device identity in the registry. CreateDevice and
// UpdateDevice send DeviceID, Status, StatusReason, Authentication,
// Capabilities, DeviceScope and ParentScopes; the other fields are set by
// the hub.
//
// Its JSON form (MarshalJSON, UnmarshalJSON) is IoT Hub's.
type Device struct {
	DeviceID     string
	GenerationID string // changes when a device is deleted and created again
	ETag         string // the version, for UpdateDevice and DeleteDevice
	Status       DeviceStatus
	StatusReason string
	// ConnectionState is the hub's view of the device's connection.
	ConnectionState            ConnectionState
	ConnectionStateUpdatedTime time.Time
	StatusUpdatedTime          time.Time
	LastActivityTime           time.Time
	CloudToDeviceMessageCount  int
	Authentication             Authentication
	Capabilities               DeviceCapabilities
	// DeviceScope links a device into an IoT Edge hierarchy. An IoT Edge
	// device (Capabilities.IoTEdge) gets its own scope from the hub,
	// "ms-azure-iot-edge://{deviceId}-{generationId}", which cannot be
	// changed. A leaf device's DeviceScope is its parent edge device's
	// scope: set it to make the device a child, "" to remove the parent.
	DeviceScope string
	// ParentScopes holds the scope of the device's parent edge device, if
	// any (a device has at most one parent). The hub keeps it in step with
	// DeviceScope for leaf devices. For an edge device it is how the parent
	// is set: one scope nests the device under that edge device, an empty
	// non-nil slice removes the parent, and nil leaves it as it is.
	ParentScopes []string
}

// Module is a module identity of a device in the registry. CreateModule
// and UpdateModule send ModuleID, DeviceID, ManagedBy and Authentication.
//
// Its JSON form (MarshalJSON, UnmarshalJSON) is IoT Hub's.
type Module struct {
	ModuleID                   string
	DeviceID                   string
	ManagedBy                  string
	GenerationID               string
	ETag                       string
	ConnectionState            ConnectionState
	ConnectionStateUpdatedTime time.Time
	LastActivityTime           time.Time
	CloudToDeviceMessageCount  int
	Authentication             Authentication
}

// UpdateOptions says which version of an identity an update may replace.
// A nil *UpdateOptions means the version in the Device's or Module's ETag.
type UpdateOptions struct {
	// IfMatch is the etag the identity must still have; "" means the ETag
	// of the Device or Module passed. Cannot be combined with Force.
	IfMatch string
	// Force replaces the identity whatever its current etag
	// (If-Match: "*").
	Force bool
}

// KeyKind selects the primary or secondary key of a SAS identity.
type KeyKind int

// Key kinds.
const (
	KeyKindPrimary KeyKind = iota
	KeyKindSecondary
)

// String returns "primary" or "secondary".
func (k KeyKind) String() string {
	switch k {
	case KeyKindPrimary:
		return "primary"
	case KeyKindSecondary:
		return "secondary"
	}
	return "KeyKind(" + strconv.Itoa(int(k)) + ")"
}

// --- wire forms ---

type symmetricKeyWire struct {
	PrimaryKey   *string `json:"primaryKey"`
	SecondaryKey *string `json:"secondaryKey"`
}

type thumbprintWire struct {
	PrimaryThumbprint   *string `json:"primaryThumbprint"`
	SecondaryThumbprint *string `json:"secondaryThumbprint"`
}

type authenticationWire struct {
	SymmetricKey   *symmetricKeyWire `json:"symmetricKey"`
	X509Thumbprint *thumbprintWire   `json:"x509Thumbprint"`
	Type           string            `json:"type"`
}

type capabilitiesWire struct {
	IotEdge bool `json:"iotEdge"`
}

type deviceWire struct {
	DeviceID                   string              `json:"deviceId"`
	GenerationID               string              `json:"generationId,omitempty"`
	ETag                       string              `json:"etag,omitempty"`
	ConnectionState            string              `json:"connectionState,omitempty"`
	Status                     string              `json:"status,omitempty"`
	StatusReason               *string             `json:"statusReason"`
	ConnectionStateUpdatedTime string              `json:"connectionStateUpdatedTime,omitempty"`
	StatusUpdatedTime          string              `json:"statusUpdatedTime,omitempty"`
	LastActivityTime           string              `json:"lastActivityTime,omitempty"`
	CloudToDeviceMessageCount  int                 `json:"cloudToDeviceMessageCount"`
	Authentication             *authenticationWire `json:"authentication"`
	Capabilities               *capabilitiesWire   `json:"capabilities,omitempty"`
	DeviceScope                *string             `json:"deviceScope,omitempty"`
	ParentScopes               []string            `json:"parentScopes"`
}

type moduleWire struct {
	ModuleID                   string              `json:"moduleId"`
	DeviceID                   string              `json:"deviceId"`
	ManagedBy                  *string             `json:"managedBy"`
	GenerationID               string              `json:"generationId,omitempty"`
	ETag                       string              `json:"etag,omitempty"`
	ConnectionState            string              `json:"connectionState,omitempty"`
	ConnectionStateUpdatedTime string              `json:"connectionStateUpdatedTime,omitempty"`
	LastActivityTime           string              `json:"lastActivityTime,omitempty"`
	CloudToDeviceMessageCount  int                 `json:"cloudToDeviceMessageCount"`
	Authentication             *authenticationWire `json:"authentication"`
}

func strPtr(s string) *string { return &s }

func optStr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// wire returns the registry form: every object present, keys "" (generate)
// for SAS, nulls where a type has no such credential.
func (a Authentication) wire() *authenticationWire {
	t := a.Type
	if t == "" {
		t = AuthenticationTypeSAS
	}
	w := &authenticationWire{Type: string(t), SymmetricKey: &symmetricKeyWire{}, X509Thumbprint: &thumbprintWire{}}
	switch t {
	case AuthenticationTypeSAS:
		w.SymmetricKey.PrimaryKey = strPtr(a.SymmetricKey.PrimaryKey)
		w.SymmetricKey.SecondaryKey = strPtr(a.SymmetricKey.SecondaryKey)
	case AuthenticationTypeSelfSigned:
		w.X509Thumbprint.PrimaryThumbprint = optStr(a.X509Thumbprint.PrimaryThumbprint)
		w.X509Thumbprint.SecondaryThumbprint = optStr(a.X509Thumbprint.SecondaryThumbprint)
	}
	return w
}

func (w *authenticationWire) value() Authentication {
	if w == nil {
		return Authentication{}
	}
	a := Authentication{Type: AuthenticationType(w.Type)}
	if w.SymmetricKey != nil {
		a.SymmetricKey = SymmetricKey{PrimaryKey: deref(w.SymmetricKey.PrimaryKey), SecondaryKey: deref(w.SymmetricKey.SecondaryKey)}
	}
	if w.X509Thumbprint != nil {
		a.X509Thumbprint = X509Thumbprint{
			PrimaryThumbprint:   deref(w.X509Thumbprint.PrimaryThumbprint),
			SecondaryThumbprint: deref(w.X509Thumbprint.SecondaryThumbprint),
		}
	}
	return a
}

// IoT Hub writes times as "2006-01-02T15:04:05.0000000Z", and the zero
// time as "0001-01-01T00:00:00" (no zone: UTC).
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func parseTime(s string) time.Time {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999"} {
		if t, err := time.Parse(layout, s); err == nil {
			if t.Year() <= 1 {
				return time.Time{}
			}
			return t.UTC()
		}
	}
	return time.Time{}
}

// MarshalJSON encodes the device with IoT Hub's field names.
func (d Device) MarshalJSON() ([]byte, error) {
	w := deviceWire{
		DeviceID:                   d.DeviceID,
		GenerationID:               d.GenerationID,
		ETag:                       d.ETag,
		ConnectionState:            string(d.ConnectionState),
		Status:                     string(d.Status),
		StatusReason:               optStr(d.StatusReason),
		ConnectionStateUpdatedTime: formatTime(d.ConnectionStateUpdatedTime),
		StatusUpdatedTime:          formatTime(d.StatusUpdatedTime),
		LastActivityTime:           formatTime(d.LastActivityTime),
		CloudToDeviceMessageCount:  d.CloudToDeviceMessageCount,
		Authentication:             d.Authentication.wire(),
		Capabilities:               &capabilitiesWire{IotEdge: d.Capabilities.IoTEdge},
		// Always sent: "" is how a leaf device's parent is removed (as the
		// az CLI does), and deviceScope wins over a stale parentScopes.
		DeviceScope:  strPtr(d.DeviceScope),
		ParentScopes: d.ParentScopes,
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes IoT Hub's device JSON.
func (d *Device) UnmarshalJSON(b []byte) error {
	var w deviceWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*d = Device{
		DeviceID:                   w.DeviceID,
		GenerationID:               w.GenerationID,
		ETag:                       w.ETag,
		Status:                     DeviceStatus(w.Status),
		StatusReason:               deref(w.StatusReason),
		ConnectionState:            ConnectionState(w.ConnectionState),
		ConnectionStateUpdatedTime: parseTime(w.ConnectionStateUpdatedTime),
		StatusUpdatedTime:          parseTime(w.StatusUpdatedTime),
		LastActivityTime:           parseTime(w.LastActivityTime),
		CloudToDeviceMessageCount:  w.CloudToDeviceMessageCount,
		Authentication:             w.Authentication.value(),
		DeviceScope:                deref(w.DeviceScope),
		ParentScopes:               w.ParentScopes,
	}
	if w.Capabilities != nil {
		d.Capabilities.IoTEdge = w.Capabilities.IotEdge
	}
	return nil
}

// MarshalJSON encodes the module with IoT Hub's field names.
func (m Module) MarshalJSON() ([]byte, error) {
	return json.Marshal(moduleWire{
		ModuleID:                   m.ModuleID,
		DeviceID:                   m.DeviceID,
		ManagedBy:                  optStr(m.ManagedBy),
		GenerationID:               m.GenerationID,
		ETag:                       m.ETag,
		ConnectionState:            string(m.ConnectionState),
		ConnectionStateUpdatedTime: formatTime(m.ConnectionStateUpdatedTime),
		LastActivityTime:           formatTime(m.LastActivityTime),
		CloudToDeviceMessageCount:  m.CloudToDeviceMessageCount,
		Authentication:             m.Authentication.wire(),
	})
}

// UnmarshalJSON decodes IoT Hub's module JSON.
func (m *Module) UnmarshalJSON(b []byte) error {
	var w moduleWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*m = Module{
		ModuleID:                   w.ModuleID,
		DeviceID:                   w.DeviceID,
		ManagedBy:                  deref(w.ManagedBy),
		GenerationID:               w.GenerationID,
		ETag:                       w.ETag,
		ConnectionState:            ConnectionState(w.ConnectionState),
		ConnectionStateUpdatedTime: parseTime(w.ConnectionStateUpdatedTime),
		LastActivityTime:           parseTime(w.LastActivityTime),
		CloudToDeviceMessageCount:  w.CloudToDeviceMessageCount,
		Authentication:             w.Authentication.value(),
	}
	return nil
}

// --- validation ---

// check validates credentials before they are sent, with clearer messages
// than the hub's.
func (a Authentication) check() error {
	keys := a.SymmetricKey.PrimaryKey != "" || a.SymmetricKey.SecondaryKey != ""
	thumbs := a.X509Thumbprint.PrimaryThumbprint != "" || a.X509Thumbprint.SecondaryThumbprint != ""
	switch a.Type {
	case "", AuthenticationTypeSAS:
		if thumbs {
			return argErr("Authentication: thumbprints are only for AuthenticationTypeSelfSigned")
		}
		for _, k := range []struct{ name, v string }{{"primary", a.SymmetricKey.PrimaryKey}, {"secondary", a.SymmetricKey.SecondaryKey}} {
			if k.v == "" {
				continue
			}
			b, err := base64.StdEncoding.DecodeString(k.v)
			if err != nil || len(b) < 16 || len(b) > 64 {
				// The key itself is never echoed.
				return argErr("Authentication: the " + k.name + " key must be base64 of 16 to 64 bytes (leave it empty to have the hub generate one)")
			}
		}
	case AuthenticationTypeSelfSigned:
		if keys {
			return argErr("Authentication: keys are only for AuthenticationTypeSAS")
		}
		if a.X509Thumbprint.PrimaryThumbprint == "" {
			return argErr("Authentication: AuthenticationTypeSelfSigned needs a primary thumbprint")
		}
		for _, tp := range []string{a.X509Thumbprint.PrimaryThumbprint, a.X509Thumbprint.SecondaryThumbprint} {
			if tp == "" {
				continue
			}
			if err := auth.CheckThumbprintSyntax(tp); err != nil {
				return &argumentError{msg: "iothub: Authentication: " + strings.TrimPrefix(err.Error(), "iothub: "), cause: err}
			}
		}
	case AuthenticationTypeCertificateAuthority, AuthenticationTypeNone:
		if keys || thumbs {
			return argErr(fmt.Sprintf("Authentication: %s takes neither keys nor thumbprints", a.Type))
		}
	default:
		return argErr(fmt.Sprintf("Authentication: unknown type %q: want sas, selfSigned, certificateAuthority or none", clipID(string(a.Type))))
	}
	return nil
}

func checkStatus(s DeviceStatus) error {
	switch s {
	case "", DeviceStatusEnabled, DeviceStatusDisabled:
		return nil
	}
	return argErr(fmt.Sprintf("Status %q is invalid: want enabled or disabled", clipID(string(s))))
}

// ifMatch returns the If-Match header for an etag: quoted, as the .NET
// SDK sends it ("*" included), unless it already is.
func ifMatch(etag string) string {
	if strings.HasPrefix(etag, `"`) || strings.HasPrefix(etag, `W/"`) {
		return etag
	}
	return `"` + etag + `"`
}

// updateETag picks the etag an update sends.
func updateETag(op, current string, opts *UpdateOptions) (string, error) {
	var o UpdateOptions
	if opts != nil {
		o = *opts
	}
	switch {
	case o.Force && o.IfMatch != "":
		return "", argErr(op + ": UpdateOptions.IfMatch and Force cannot both be set")
	case o.Force:
		return "*", nil
	case o.IfMatch != "":
		return o.IfMatch, nil
	case current != "":
		return current, nil
	}
	return "", argErr(op + " needs the identity's ETag (from a Get or Create) or UpdateOptions.Force")
}

// --- requests ---

// put sends a registry document. Writes are retried like invocations:
// only when the request provably was not dispatched, since a retried
// create or etag-checked update whose first attempt succeeded would fail
// with 409 or 412.
func (c *Client) put(ctx context.Context, path string, doc any, etag string, out any) error {
	body, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("iothub: encoding the registry document: %w", err)
	}
	req, err := c.newRequest(policy.WithRetryOptions(ctx, c.writeRetry), http.MethodPut, path, "")
	if err != nil {
		return err
	}
	if etag != "" {
		req.Raw().Header.Set("If-Match", ifMatch(etag))
	}
	if err := req.SetBody(streaming.NopCloser(bytes.NewReader(body)), "application/json; charset=utf-8"); err != nil {
		return fmt.Errorf("iothub: building request: %w", err)
	}
	resp, err := c.do(ctx, req, http.StatusOK, http.StatusCreated)
	if err != nil {
		return wrapTransport(err)
	}
	return decodeBody(resp, out)
}

// get reads a registry document, with azcore's retries.
func (c *Client) get(ctx context.Context, path, query string, out any) error {
	req, err := c.newRequest(ctx, http.MethodGet, path, query)
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, req, http.StatusOK)
	if err != nil {
		return wrapTransport(err)
	}
	return decodeBody(resp, out)
}

// del deletes a registry identity.
func (c *Client) del(ctx context.Context, path, etag string) error {
	req, err := c.newRequest(policy.WithRetryOptions(ctx, c.writeRetry), http.MethodDelete, path, "")
	if err != nil {
		return err
	}
	req.Raw().Header.Set("If-Match", ifMatch(etag))
	_, err = c.do(ctx, req, http.StatusNoContent, http.StatusOK)
	return wrapTransport(err)
}

// wrapTransport gives transport errors the package's prefix; hub errors,
// context errors and nil pass through.
func wrapTransport(err error) error {
	switch err.(type) {
	case nil, *ResponseError:
		return err
	}
	if errors.Is(err, ErrRedirect) || errors.Is(err, ErrResponseTooLarge) {
		return err // already prefixed
	}
	if err == context.Canceled || err == context.DeadlineExceeded {
		return err
	}
	return fmt.Errorf("iothub: %w", err)
}

func decodeBody(resp *http.Response, out any) error {
	if err := runtime.UnmarshalAsJSON(resp, out); err != nil {
		return fmt.Errorf("iothub: the hub's answer is not the expected JSON: %w", err)
	}
	return nil
}

func devicePath(id string) string { return "/devices/" + pathSegment(id) }

func modulePath(deviceID, moduleID string) string {
	return "/devices/" + pathSegment(deviceID) + "/modules/" + pathSegment(moduleID)
}

// --- devices ---

// CreateDevice registers a new device and returns it as the hub stored it
// (with its ETag and, for SAS devices, its keys). An empty
// Authentication makes a SAS device with generated keys. A device with the
// same id fails with ErrDeviceAlreadyExists. Needs RegistryWrite.
func (c *Client) CreateDevice(ctx context.Context, d *Device) (*Device, error) {
	if err := checkDevice("CreateDevice", d); err != nil {
		return nil, err
	}
	var out Device
	if err := c.put(ctx, devicePath(d.DeviceID), d, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetDevice returns a device, keys included. An unknown id fails with
// ErrDeviceNotFound. Needs RegistryRead.
func (c *Client) GetDevice(ctx context.Context, deviceID string) (*Device, error) {
	if err := checkID("device", deviceID); err != nil {
		return nil, err
	}
	var out Device
	if err := c.get(ctx, devicePath(deviceID), "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateDevice replaces a device's status, credentials and capabilities,
// provided its etag is still d.ETag (or opts.IfMatch), or whatever it is
// when opts.Force is set; otherwise it fails with ErrPreconditionFailed.
// The hub disconnects the device when its credentials or status change.
// It returns the updated device with its new ETag. Needs RegistryWrite.
func (c *Client) UpdateDevice(ctx context.Context, d *Device, opts *UpdateOptions) (*Device, error) {
	if err := checkDevice("UpdateDevice", d); err != nil {
		return nil, err
	}
	etag, err := updateETag("UpdateDevice", d.ETag, opts)
	if err != nil {
		return nil, err
	}
	var out Device
	if err := c.put(ctx, devicePath(d.DeviceID), d, etag, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteDevice deletes a device and its modules if its etag is still etag;
// pass "*" to delete it whatever its etag. Needs RegistryWrite.
func (c *Client) DeleteDevice(ctx context.Context, deviceID, etag string) error {
	if err := checkID("device", deviceID); err != nil {
		return err
	}
	if etag == "" {
		return argErr(`DeleteDevice needs the device's etag, or "*" to delete it whatever its etag`)
	}
	return c.del(ctx, devicePath(deviceID), etag)
}

// ListDevices returns up to top devices (1 to 1000; 0 means 1000). Needs
// RegistryRead.
func (c *Client) ListDevices(ctx context.Context, top int) ([]*Device, error) {
	if top < 0 || top > 1000 {
		return nil, argErr(fmt.Sprintf("ListDevices: top %d is out of range: want 1 to 1000, or 0 for 1000", top))
	}
	query := ""
	if top > 0 {
		query = "top=" + strconv.Itoa(top)
	}
	var out []*Device
	if err := c.get(withBodyLimit(ctx, maxListBody), "/devices", query, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func checkDevice(op string, d *Device) error {
	if d == nil {
		return argErr(op + ": the device is nil")
	}
	if err := checkID("device", d.DeviceID); err != nil {
		return err
	}
	if err := checkStatus(d.Status); err != nil {
		return err
	}
	return d.Authentication.check()
}

// --- modules ---

// CreateModule registers a new module on an existing device and returns
// it as the hub stored it. An empty Authentication makes a SAS module
// with generated keys. Fails with ErrModuleAlreadyExists if it exists, or
// ErrDeviceNotFound without the device. Needs RegistryWrite.
func (c *Client) CreateModule(ctx context.Context, m *Module) (*Module, error) {
	if err := checkModule("CreateModule", m); err != nil {
		return nil, err
	}
	var out Module
	if err := c.put(ctx, modulePath(m.DeviceID, m.ModuleID), m, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetModule returns a module, keys included; ErrModuleNotFound if there is
// none. Needs RegistryRead.
func (c *Client) GetModule(ctx context.Context, deviceID, moduleID string) (*Module, error) {
	if err := checkID("device", deviceID); err != nil {
		return nil, err
	}
	if err := checkID("module", moduleID); err != nil {
		return nil, err
	}
	var out Module
	if err := c.get(ctx, modulePath(deviceID, moduleID), "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateModule replaces a module's credentials and ManagedBy, with the
// same etag rules as UpdateDevice. Needs RegistryWrite.
func (c *Client) UpdateModule(ctx context.Context, m *Module, opts *UpdateOptions) (*Module, error) {
	if err := checkModule("UpdateModule", m); err != nil {
		return nil, err
	}
	etag, err := updateETag("UpdateModule", m.ETag, opts)
	if err != nil {
		return nil, err
	}
	var out Module
	if err := c.put(ctx, modulePath(m.DeviceID, m.ModuleID), m, etag, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteModule deletes a module if its etag is still etag; pass "*" to
// delete it whatever its etag. Needs RegistryWrite.
func (c *Client) DeleteModule(ctx context.Context, deviceID, moduleID, etag string) error {
	if err := checkID("device", deviceID); err != nil {
		return err
	}
	if err := checkID("module", moduleID); err != nil {
		return err
	}
	if etag == "" {
		return argErr(`DeleteModule needs the module's etag, or "*" to delete it whatever its etag`)
	}
	return c.del(ctx, modulePath(deviceID, moduleID), etag)
}

// ListModules returns a device's modules. Needs RegistryRead.
func (c *Client) ListModules(ctx context.Context, deviceID string) ([]*Module, error) {
	if err := checkID("device", deviceID); err != nil {
		return nil, err
	}
	var out []*Module
	if err := c.get(withBodyLimit(ctx, maxListBody), devicePath(deviceID)+"/modules", "", &out); err != nil {
		return nil, err
	}
	return out, nil
}

func checkModule(op string, m *Module) error {
	if m == nil {
		return argErr(op + ": the module is nil")
	}
	if err := checkID("device", m.DeviceID); err != nil {
		return err
	}
	if err := checkID("module", m.ModuleID); err != nil {
		return err
	}
	return m.Authentication.check()
}

// --- connection strings ---

// DeviceConnectionString returns the connection string a device uses to
// connect as d: HostName (and GatewayHostName, when the client's own
// connection string has one, so that it works against a local hub), the
// device id and the chosen SAS key, or "x509=true" for X.509 devices
// (key is then ignored). d must come from the registry (CreateDevice,
// GetDevice), which is where the keys are. The result holds a secret: do
// not log it.
func (c *Client) DeviceConnectionString(d *Device, key KeyKind) (string, error) {
	if d == nil {
		return "", argErr("DeviceConnectionString: the device is nil")
	}
	return c.connectionString(d.DeviceID, "", d.Authentication, key)
}

// ModuleConnectionString is DeviceConnectionString for a module.
func (c *Client) ModuleConnectionString(m *Module, key KeyKind) (string, error) {
	if m == nil {
		return "", argErr("ModuleConnectionString: the module is nil")
	}
	return c.connectionString(m.DeviceID, m.ModuleID, m.Authentication, key)
}

func (c *Client) connectionString(deviceID, moduleID string, a Authentication, key KeyKind) (string, error) {
	cs := auth.ConnectionString{HostName: c.hostName, GatewayHostName: c.gateway, DeviceID: deviceID, ModuleID: moduleID}
	switch a.Type {
	case "", AuthenticationTypeSAS:
		switch key {
		case KeyKindPrimary:
			cs.SharedAccessKey = a.SymmetricKey.PrimaryKey
		case KeyKindSecondary:
			cs.SharedAccessKey = a.SymmetricKey.SecondaryKey
		default:
			return "", argErr(fmt.Sprintf("invalid key kind %v: want KeyKindPrimary or KeyKindSecondary", key))
		}
		if cs.SharedAccessKey == "" {
			return "", argErr("the identity has no " + key.String() + " key here: get it from the registry (GetDevice or GetModule)")
		}
	case AuthenticationTypeSelfSigned, AuthenticationTypeCertificateAuthority:
		cs.X509 = true
	default:
		return "", argErr(fmt.Sprintf("an identity with authentication type %q cannot connect on its own", clipID(string(a.Type))))
	}
	s := cs.Reveal()
	if _, err := auth.ParseDeviceConnectionString(s); err != nil {
		return "", &argumentError{msg: err.Error(), cause: err}
	}
	return s, nil
}
