package auth_test

import (
	"errors"
	"testing"
	"time"

	"github.com/iothub-go/iothub/auth"
)

func TestDefaultPolicyRights(t *testing.T) {
	got := auth.DefaultPolicyRights()
	want := map[string]auth.Rights{
		"iothubowner":       auth.RightsRegistryRead | auth.RightsRegistryWrite | auth.RightsServiceConnect | auth.RightsDeviceConnect,
		"service":           auth.RightsServiceConnect,
		"device":            auth.RightsDeviceConnect,
		"registryRead":      auth.RightsRegistryRead,
		"registryReadWrite": auth.RightsRegistryRead | auth.RightsRegistryWrite,
	}
	if len(got) != len(want) {
		t.Errorf("DefaultPolicyRights has %d policies, want %d: %v", len(got), len(want), got)
	}
	for name, r := range want {
		if got[name] != r {
			t.Errorf("DefaultPolicyRights()[%q] = %v, want %v", name, got[name], r)
		}
	}
	// The caller owns the map.
	got["service"] = 0
	if auth.DefaultPolicyRights()["service"] != auth.RightsServiceConnect {
		t.Error("DefaultPolicyRights returns a shared map")
	}
}

func TestRightsHas(t *testing.T) {
	tests := []struct {
		have, need auth.Rights
		want       bool
	}{
		{auth.RightsRegistryWrite, auth.RightsRegistryRead, true},
		{auth.RightsRegistryWrite, auth.RightsRegistryRead | auth.RightsRegistryWrite, true},
		{auth.RightsRegistryRead, auth.RightsRegistryWrite, false},
		{auth.RightsServiceConnect, auth.RightsServiceConnect, true},
		{auth.RightsServiceConnect, auth.RightsDeviceConnect, false},
		{auth.RightsServiceConnect, auth.RightsServiceConnect | auth.RightsRegistryRead, false},
		{auth.RightsRegistryWrite | auth.RightsServiceConnect, auth.RightsRegistryRead | auth.RightsServiceConnect, true},
		{auth.RightsDeviceConnect, auth.RightsRegistryRead, false},
		{0, 0, true},
		{0, auth.RightsRegistryRead, false},
		{auth.DefaultPolicyRights()["iothubowner"], auth.RightsRegistryRead | auth.RightsRegistryWrite | auth.RightsServiceConnect | auth.RightsDeviceConnect, true},
	}
	for _, tt := range tests {
		t.Run(tt.have.String()+" has "+tt.need.String(), func(t *testing.T) {
			if got := tt.have.Has(tt.need); got != tt.want {
				t.Errorf("Has = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRightsString(t *testing.T) {
	tests := []struct {
		r    auth.Rights
		want string
	}{
		{0, "none"},
		{auth.RightsRegistryRead, "RegistryRead"},
		{auth.RightsRegistryWrite, "RegistryWrite"},
		{auth.RightsServiceConnect, "ServiceConnect"},
		{auth.RightsDeviceConnect, "DeviceConnect"},
		{auth.RightsRegistryRead | auth.RightsServiceConnect, "RegistryRead, ServiceConnect"},
		{auth.RightsDeviceConnect | auth.RightsRegistryRead | auth.RightsRegistryWrite | auth.RightsServiceConnect, "RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect"},
	}
	for _, tt := range tests {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("Rights(%d).String() = %q, want %q", uint8(tt.r), got, tt.want)
		}
	}
}

func TestPolicyAuthorize(t *testing.T) {
	rights := auth.DefaultPolicyRights()
	service := auth.Policy{Name: "service", PrimaryKey: primaryKey, SecondaryKey: secondaryKey, Rights: rights["service"]}
	registryRead := auth.Policy{Name: "registryRead", PrimaryKey: primaryKey, SecondaryKey: secondaryKey, Rights: rights["registryRead"]}
	registryRW := auth.Policy{Name: "registryReadWrite", PrimaryKey: primaryKey, SecondaryKey: secondaryKey, Rights: rights["registryReadWrite"]}
	owner := auth.Policy{Name: "iothubowner", PrimaryKey: primaryKey, SecondaryKey: secondaryKey, Rights: rights["iothubowner"]}

	now := time.Unix(vectorExpiry, 0)
	const se = "1578941692"
	hubSR := testEncode(hubHost)
	devTarget := auth.DeviceResource(hubHost, "dev1")

	tests := []struct {
		name    string
		policy  auth.Policy
		token   string
		target  string
		need    auth.Rights
		now     time.Time
		wantErr error
	}{
		{"service invokes a method", service, testToken(t, primaryKey, hubSR, se, "service"), hubHost, auth.RightsServiceConnect, now, nil},
		{"service, secondary key", service, testToken(t, secondaryKey, hubSR, se, "service"), hubHost, auth.RightsServiceConnect, now, nil},
		{"hub-scoped token authorizes a device path", service, testToken(t, primaryKey, hubSR, se, "service"), devTarget, auth.RightsServiceConnect, now, nil},
		{"owner has everything", owner, testToken(t, primaryKey, hubSR, se, "iothubowner"), hubHost, auth.RightsRegistryWrite | auth.RightsServiceConnect | auth.RightsDeviceConnect, now, nil},
		{"registryReadWrite reads", registryRW, testToken(t, primaryKey, hubSR, se, "registryReadWrite"), hubHost, auth.RightsRegistryRead, now, nil},
		{"registryRead reads", registryRead, testToken(t, primaryKey, hubSR, se, "registryRead"), hubHost, auth.RightsRegistryRead, now, nil},
		{"registryRead cannot connect a service", registryRead, testToken(t, primaryKey, hubSR, se, "registryRead"), hubHost, auth.RightsServiceConnect, now, auth.ErrPermission},
		{"registryRead cannot write", registryRead, testToken(t, primaryKey, hubSR, se, "registryRead"), hubHost, auth.RightsRegistryWrite, now, auth.ErrPermission},
		{"service cannot read the registry", service, testToken(t, primaryKey, hubSR, se, "service"), hubHost, auth.RightsRegistryRead, now, auth.ErrPermission},
		{"token names another policy", service, testToken(t, primaryKey, hubSR, se, "iothubowner"), hubHost, auth.RightsServiceConnect, now, auth.ErrSASSignature},
		{"token has no skn", service, testToken(t, primaryKey, hubSR, se, ""), hubHost, auth.RightsServiceConnect, now, auth.ErrSASSignature},
		{"policy name is case-sensitive", service, testToken(t, primaryKey, hubSR, se, "Service"), hubHost, auth.RightsServiceConnect, now, auth.ErrSASSignature},
		{"wrong key", service, testToken(t, otherKey, hubSR, se, "service"), hubHost, auth.RightsServiceConnect, now, auth.ErrSASSignature},
		{"expired", service, testToken(t, primaryKey, hubSR, se, "service"), hubHost, auth.RightsServiceConnect, now.Add(6 * time.Minute), auth.ErrSASExpired},
		{"within skew", service, testToken(t, primaryKey, hubSR, se, "service"), hubHost, auth.RightsServiceConnect, now.Add(4 * time.Minute), nil},
		{"device-scoped token, hub target", service, testToken(t, primaryKey, testEncode(devTarget), se, "service"), hubHost, auth.RightsServiceConnect, now, auth.ErrSASResource},
		{"other hub", service, testToken(t, primaryKey, testEncode("other.azure-devices.net"), se, "service"), hubHost, auth.RightsServiceConnect, now, auth.ErrSASResource},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := auth.ParseSAS(tt.token)
			if err != nil {
				t.Fatal(err)
			}
			err = tt.policy.Authorize(tok, tt.target, tt.need, tt.now)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Authorize: %v", err)
				}
				return
			}
			wantErrIs(t, err, tt.wantErr)
			if tt.wantErr != auth.ErrPermission && errors.Is(err, auth.ErrPermission) {
				t.Errorf("error %q wraps ErrPermission; the token itself is bad", err)
			}
		})
	}
}

func TestPolicyString(t *testing.T) {
	p := auth.Policy{Name: "registryRead", PrimaryKey: primaryKey, SecondaryKey: secondaryKey, Rights: auth.RightsRegistryRead | auth.RightsServiceConnect}
	if got, want := p.String(), "registryRead (RegistryRead, ServiceConnect)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
