package service

import (
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/iothub-go/iothub/internal/hubauth"
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

// DeviceConnectionState is whether the hub sees a device or module
// connected, as the registry reports it (the name is the .NET SDK's). A
// device client's own view of its connection is device.ConnectionState.
type DeviceConnectionState string

// Connection states reported by the registry.
const (
	DeviceConnectionStateConnected    DeviceConnectionState = "Connected"
	DeviceConnectionStateDisconnected DeviceConnectionState = "Disconnected"
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
// 40 (SHA-1) or 64 (SHA-256) hex digits, either case, as
// auth.ComputeThumbprints gives.
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
	// ETag is the version of the identity, which UpdateDevice sends as its
	// If-Match unless UpdateOptions.IfMatch says otherwise.
	ETag         string
	Status       DeviceStatus
	StatusReason string
	// ConnectionState is the hub's view of the device's connection.
	ConnectionState            DeviceConnectionState
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
	ModuleID     string
	DeviceID     string
	ManagedBy    string
	GenerationID string
	// ETag is the version of the identity, which UpdateModule sends as its
	// If-Match unless UpdateOptions.IfMatch says otherwise.
	ETag                       string
	ConnectionState            DeviceConnectionState
	ConnectionStateUpdatedTime time.Time
	LastActivityTime           time.Time
	CloudToDeviceMessageCount  int
	Authentication             Authentication
}

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
			if err := hubauth.CheckThumbprintSyntax(tp); err != nil {
				return argErr("Authentication: " + strings.TrimPrefix(err.Error(), "iothub: "))
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
