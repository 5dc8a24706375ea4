package service

import (
	"encoding/json"
	"time"
)

// The registry's JSON documents, as IoT Hub reads and writes them, and the
// conversions between them and Device and Module.

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
		ConnectionState:            DeviceConnectionState(w.ConnectionState),
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
		ConnectionState:            DeviceConnectionState(w.ConnectionState),
		ConnectionStateUpdatedTime: parseTime(w.ConnectionStateUpdatedTime),
		LastActivityTime:           parseTime(w.LastActivityTime),
		CloudToDeviceMessageCount:  w.CloudToDeviceMessageCount,
		Authentication:             w.Authentication.value(),
	}
	return nil
}
