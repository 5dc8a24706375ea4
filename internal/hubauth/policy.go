package hubauth

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrPermission is wrapped when a valid policy token lacks a right the
// operation needs.
var ErrPermission = errors.New("iothub: access policy lacks the required permission")

// Rights is a set of IoT Hub shared access policy permissions.
type Rights uint8

// The permissions a hub-level shared access policy can grant.
const (
	// RightsRegistryRead allows reading the identity registry.
	RightsRegistryRead Rights = 1 << iota
	// RightsRegistryWrite allows creating, updating and deleting identities.
	// IoT Hub grants RegistryRead along with it.
	RightsRegistryWrite
	// RightsServiceConnect allows back-end operations such as invoking
	// direct methods.
	RightsServiceConnect
	// RightsDeviceConnect allows connecting as any device or module.
	RightsDeviceConnect
)

var rightNames = []struct {
	r    Rights
	name string
}{
	{RightsRegistryRead, "RegistryRead"},
	{RightsRegistryWrite, "RegistryWrite"},
	{RightsServiceConnect, "ServiceConnect"},
	{RightsDeviceConnect, "DeviceConnect"},
}

// String lists the rights as IoT Hub names them, e.g.
// "RegistryRead, ServiceConnect"; "none" for the empty set.
func (r Rights) String() string {
	var names []string
	for _, n := range rightNames {
		if r&n.r != 0 {
			names = append(names, n.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// Has reports whether r includes every right in need.
func (r Rights) Has(need Rights) bool {
	if r&RightsRegistryWrite != 0 {
		r |= RightsRegistryRead
	}
	return r&need == need
}

// Policy is a hub-level shared access policy: a name, two keys and the rights
// granted to tokens signed with them. String and %v redact the keys.
type Policy struct {
	Name         string
	PrimaryKey   string // base64; secret
	SecondaryKey string // base64; secret
	Rights       Rights
}

// String returns the policy's name and rights, never its keys.
func (p Policy) String() string { return fmt.Sprintf("%s (%s)", p.Name, p.Rights) }

// GoString redacts like String.
func (p Policy) GoString() string { return fmt.Sprintf("hubauth.Policy(%q)", p.String()) }

// DefaultPolicyRights returns the rights of the five policies every IoT Hub
// is created with: iothubowner, service, device, registryRead and
// registryReadWrite.
func DefaultPolicyRights() map[string]Rights {
	return map[string]Rights{
		"iothubowner":       RightsRegistryRead | RightsRegistryWrite | RightsServiceConnect | RightsDeviceConnect,
		"service":           RightsServiceConnect,
		"device":            RightsDeviceConnect,
		"registryRead":      RightsRegistryRead,
		"registryReadWrite": RightsRegistryRead | RightsRegistryWrite,
	}
}

// Authorize checks a token presented for target as the hub does for a
// policy: the token names this policy (skn), is not expired, covers target,
// is signed with one of the policy's keys, and the policy grants need.
func (p Policy) Authorize(tok *SAS, target string, need Rights, now time.Time) error {
	if tok.KeyName != p.Name {
		return fmt.Errorf("%w: token is signed by policy %q, not %q", ErrSASSignature, tok.KeyName, p.Name)
	}
	if err := tok.Verify(target, now, p.PrimaryKey, p.SecondaryKey); err != nil {
		return err
	}
	return p.CheckRights(need)
}

// CheckRights returns an error wrapping [ErrPermission] unless the policy
// grants need.
func (p Policy) CheckRights(need Rights) error {
	if !p.Rights.Has(need) {
		return fmt.Errorf("%w: policy %q has %s, the operation needs %s", ErrPermission, p.Name, p.Rights, need)
	}
	return nil
}
