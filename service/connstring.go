package service

import (
	"fmt"
	"strconv"

	"github.com/iothub-go/iothub/auth"
)

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

// DeviceConnectionString returns the connection string a device uses to
// connect as d: HostName (and GatewayHostName, when the client's own
// connection string has one, so that it works against a local hub), the
// device id and the chosen SAS key, or "x509=true" for X.509 devices
// (key is then ignored). d must come from the registry (CreateDevice,
// GetDevice), which is where the keys are. The result holds a secret: do
// not log it. No network I/O happens here; errors match ErrArgumentInvalid.
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
