package hubauth_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hubauth"
)

func TestDefaultPolicyRights(t *testing.T) {
	got := hubauth.DefaultPolicyRights()
	want := map[string]hubauth.Rights{
		"iothubowner":       hubauth.RightsRegistryRead | hubauth.RightsRegistryWrite | hubauth.RightsServiceConnect | hubauth.RightsDeviceConnect,
		"service":           hubauth.RightsServiceConnect,
		"device":            hubauth.RightsDeviceConnect,
		"registryRead":      hubauth.RightsRegistryRead,
		"registryReadWrite": hubauth.RightsRegistryRead | hubauth.RightsRegistryWrite,
	}
	assert.Equal(t, want, got, "DefaultPolicyRights")
	// The caller owns the map.
	got["service"] = 0
	assert.Equal(t, hubauth.RightsServiceConnect, hubauth.DefaultPolicyRights()["service"], "DefaultPolicyRights returns a shared map")
}

func TestRightsHas(t *testing.T) {
	tests := []struct {
		have, need hubauth.Rights
		want       bool
	}{
		{hubauth.RightsRegistryWrite, hubauth.RightsRegistryRead, true},
		{hubauth.RightsRegistryWrite, hubauth.RightsRegistryRead | hubauth.RightsRegistryWrite, true},
		{hubauth.RightsRegistryRead, hubauth.RightsRegistryWrite, false},
		{hubauth.RightsServiceConnect, hubauth.RightsServiceConnect, true},
		{hubauth.RightsServiceConnect, hubauth.RightsDeviceConnect, false},
		{hubauth.RightsServiceConnect, hubauth.RightsServiceConnect | hubauth.RightsRegistryRead, false},
		{hubauth.RightsRegistryWrite | hubauth.RightsServiceConnect, hubauth.RightsRegistryRead | hubauth.RightsServiceConnect, true},
		{hubauth.RightsDeviceConnect, hubauth.RightsRegistryRead, false},
		{0, 0, true},
		{0, hubauth.RightsRegistryRead, false},
		{hubauth.DefaultPolicyRights()["iothubowner"], hubauth.RightsRegistryRead | hubauth.RightsRegistryWrite | hubauth.RightsServiceConnect | hubauth.RightsDeviceConnect, true},
	}
	for _, tt := range tests {
		t.Run(tt.have.String()+" has "+tt.need.String(), func(t *testing.T) {
			assert.Equal(t, tt.want, tt.have.Has(tt.need), "Has")
		})
	}
}

func TestRightsString(t *testing.T) {
	tests := []struct {
		r    hubauth.Rights
		want string
	}{
		{0, "none"},
		{hubauth.RightsRegistryRead, "RegistryRead"},
		{hubauth.RightsRegistryWrite, "RegistryWrite"},
		{hubauth.RightsServiceConnect, "ServiceConnect"},
		{hubauth.RightsDeviceConnect, "DeviceConnect"},
		{hubauth.RightsRegistryRead | hubauth.RightsServiceConnect, "RegistryRead, ServiceConnect"},
		{hubauth.RightsDeviceConnect | hubauth.RightsRegistryRead | hubauth.RightsRegistryWrite | hubauth.RightsServiceConnect, "RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, tt.r.String(), "Rights(%d).String()", uint8(tt.r))
	}
}

func TestPolicyAuthorize(t *testing.T) {
	rights := hubauth.DefaultPolicyRights()
	service := hubauth.Policy{Name: "service", PrimaryKey: primaryKey, SecondaryKey: secondaryKey, Rights: rights["service"]}
	registryRead := hubauth.Policy{Name: "registryRead", PrimaryKey: primaryKey, SecondaryKey: secondaryKey, Rights: rights["registryRead"]}
	registryRW := hubauth.Policy{Name: "registryReadWrite", PrimaryKey: primaryKey, SecondaryKey: secondaryKey, Rights: rights["registryReadWrite"]}
	owner := hubauth.Policy{Name: "iothubowner", PrimaryKey: primaryKey, SecondaryKey: secondaryKey, Rights: rights["iothubowner"]}

	now := time.Unix(vectorExpiry, 0)
	const se = "1578941692"
	hubSR := testEncode(hubHost)
	devTarget := auth.DeviceResource(hubHost, "dev1")

	tests := []struct {
		name    string
		policy  hubauth.Policy
		token   string
		target  string
		need    hubauth.Rights
		now     time.Time
		wantErr error
	}{
		{"service invokes a method", service, testToken(t, primaryKey, hubSR, se, "service"), hubHost, hubauth.RightsServiceConnect, now, nil},
		{"service, secondary key", service, testToken(t, secondaryKey, hubSR, se, "service"), hubHost, hubauth.RightsServiceConnect, now, nil},
		{"hub-scoped token authorizes a device path", service, testToken(t, primaryKey, hubSR, se, "service"), devTarget, hubauth.RightsServiceConnect, now, nil},
		{"owner has everything", owner, testToken(t, primaryKey, hubSR, se, "iothubowner"), hubHost, hubauth.RightsRegistryWrite | hubauth.RightsServiceConnect | hubauth.RightsDeviceConnect, now, nil},
		{"registryReadWrite reads", registryRW, testToken(t, primaryKey, hubSR, se, "registryReadWrite"), hubHost, hubauth.RightsRegistryRead, now, nil},
		{"registryRead reads", registryRead, testToken(t, primaryKey, hubSR, se, "registryRead"), hubHost, hubauth.RightsRegistryRead, now, nil},
		{"registryRead cannot connect a service", registryRead, testToken(t, primaryKey, hubSR, se, "registryRead"), hubHost, hubauth.RightsServiceConnect, now, hubauth.ErrPermission},
		{"registryRead cannot write", registryRead, testToken(t, primaryKey, hubSR, se, "registryRead"), hubHost, hubauth.RightsRegistryWrite, now, hubauth.ErrPermission},
		{"service cannot read the registry", service, testToken(t, primaryKey, hubSR, se, "service"), hubHost, hubauth.RightsRegistryRead, now, hubauth.ErrPermission},
		{"token names another policy", service, testToken(t, primaryKey, hubSR, se, "iothubowner"), hubHost, hubauth.RightsServiceConnect, now, hubauth.ErrSASSignature},
		{"token has no skn", service, testToken(t, primaryKey, hubSR, se, ""), hubHost, hubauth.RightsServiceConnect, now, hubauth.ErrSASSignature},
		{"policy name is case-sensitive", service, testToken(t, primaryKey, hubSR, se, "Service"), hubHost, hubauth.RightsServiceConnect, now, hubauth.ErrSASSignature},
		{"wrong key", service, testToken(t, otherKey, hubSR, se, "service"), hubHost, hubauth.RightsServiceConnect, now, hubauth.ErrSASSignature},
		{"expired", service, testToken(t, primaryKey, hubSR, se, "service"), hubHost, hubauth.RightsServiceConnect, now.Add(6 * time.Minute), auth.ErrSASExpired},
		{"within skew", service, testToken(t, primaryKey, hubSR, se, "service"), hubHost, hubauth.RightsServiceConnect, now.Add(4 * time.Minute), nil},
		{"device-scoped token, hub target", service, testToken(t, primaryKey, testEncode(devTarget), se, "service"), hubHost, hubauth.RightsServiceConnect, now, hubauth.ErrSASResource},
		{"other hub", service, testToken(t, primaryKey, testEncode("other.azure-devices.net"), se, "service"), hubHost, hubauth.RightsServiceConnect, now, hubauth.ErrSASResource},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := hubauth.ParseSAS(tt.token)
			require.NoError(t, err)
			err = tt.policy.Authorize(tok, tt.target, tt.need, tt.now)
			if tt.wantErr == nil {
				require.NoError(t, err, "Authorize")
				return
			}
			require.ErrorIs(t, err, tt.wantErr)
			if tt.wantErr != hubauth.ErrPermission {
				assert.NotErrorIs(t, err, hubauth.ErrPermission, "the token itself is bad, not the policy's rights")
			}
		})
	}
}

func TestPolicyString(t *testing.T) {
	p := hubauth.Policy{Name: "registryRead", PrimaryKey: primaryKey, SecondaryKey: secondaryKey, Rights: hubauth.RightsRegistryRead | hubauth.RightsServiceConnect}
	assert.Equal(t, "registryRead (RegistryRead, ServiceConnect)", p.String())
}
