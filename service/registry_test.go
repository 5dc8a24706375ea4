package service_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// selfSigned makes a self-signed client certificate with the given CN.
func selfSigned(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func key(b byte, n int) string {
	return base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(rune('a'+b)), n)))
}

// A device created through the client connects with the connection string
// the client derives, and answers methods.
func TestRegistryDeviceRoundTrips(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c, _ := newClient(t, hub, "", nil)
	ctx := context.Background()
	invoke := func(t *testing.T, id string) {
		t.Helper()
		res, err := c.InvokeDeviceMethod(ctx, id, echo)
		require.NoError(t, err, "invoke %s", id)
		require.Equal(t, 200, res.Status, "status from %s", id)
		require.Equal(t, `{"n":1}`, string(res.Payload), "payload from %s", id)
	}

	t.Run("generated keys", func(t *testing.T) {
		d, err := c.CreateDevice(ctx, &service.Device{DeviceID: "gen"})
		require.NoError(t, err)
		a := d.Authentication
		assert.Equal(t, "gen", d.DeviceID)
		assert.Equal(t, service.AuthenticationTypeSAS, a.Type)
		assert.Len(t, a.SymmetricKey.PrimaryKey, 44, "a generated 32-byte primary key")
		assert.Len(t, a.SymmetricKey.SecondaryKey, 44, "a generated 32-byte secondary key")
		assert.NotEqual(t, a.SymmetricKey.PrimaryKey, a.SymmetricKey.SecondaryKey, "two different keys")
		assert.NotEmpty(t, d.ETag, "etag")
		assert.NotEmpty(t, d.GenerationID, "generation id")
		assert.Equal(t, service.DeviceStatusEnabled, d.Status)
		assert.Equal(t, service.DeviceConnectionStateDisconnected, d.ConnectionState)
		assert.True(t, d.LastActivityTime.IsZero(), "LastActivityTime of a new device = %v, want zero", d.LastActivityTime)
		for _, k := range []service.KeyKind{service.KeyKindPrimary, service.KeyKindSecondary} {
			cs, err := c.DeviceConnectionString(d, k)
			require.NoError(t, err)
			parsed, err := auth.ParseDeviceConnectionString(cs)
			require.NoError(t, err)
			want := a.SymmetricKey.PrimaryKey
			if k == service.KeyKindSecondary {
				want = a.SymmetricKey.SecondaryKey
			}
			require.Equal(t, "localhost", parsed.HostName, "%v connection string", k)
			require.Equal(t, hub.Addr(), parsed.GatewayHostName, "%v connection string", k)
			require.Equal(t, "gen", parsed.DeviceID, "%v connection string", k)
			require.Equal(t, want, parsed.SharedAccessKey, "%v connection string's key", k)
			echoDevice(t, hub, cs, nil, 200) // the second connection replaces the first
			invoke(t, "gen")
		}
		got, err := c.GetDevice(ctx, "gen")
		require.NoError(t, err)
		assert.Equal(t, d.ETag, got.ETag, "GetDevice's etag")
		assert.Equal(t, d.Authentication, got.Authentication, "GetDevice's authentication")
		assert.Equal(t, service.DeviceConnectionStateConnected, got.ConnectionState, "GetDevice's connection state")
		assert.False(t, got.LastActivityTime.IsZero(), "GetDevice's LastActivityTime")
	})

	t.Run("given keys", func(t *testing.T) {
		keys := service.SymmetricKey{PrimaryKey: key(0, 32), SecondaryKey: key(1, 16)}
		d, err := c.CreateDevice(ctx, &service.Device{DeviceID: "given", Authentication: service.Authentication{SymmetricKey: keys}})
		require.NoError(t, err)
		require.Equal(t, keys, d.Authentication.SymmetricKey, "the hub did not keep the given keys")
		cs, err := c.DeviceConnectionString(d, service.KeyKindSecondary)
		require.NoError(t, err)
		echoDevice(t, hub, cs, nil, 200)
		invoke(t, "given")
	})

	t.Run("self-signed thumbprint", func(t *testing.T) {
		cert := selfSigned(t, "x509-dev")
		tp := auth.ComputeThumbprints(cert.Leaf.Raw)
		d, err := c.CreateDevice(ctx, &service.Device{DeviceID: "x509-dev", Authentication: service.Authentication{
			Type:           service.AuthenticationTypeSelfSigned,
			X509Thumbprint: service.X509Thumbprint{PrimaryThumbprint: strings.ToLower(tp.SHA256), SecondaryThumbprint: tp.SHA1},
		}})
		require.NoError(t, err)
		a := d.Authentication
		assert.Equal(t, service.AuthenticationTypeSelfSigned, a.Type)
		assert.Equal(t, tp.SHA256, a.X509Thumbprint.PrimaryThumbprint, "the hub's form of the primary thumbprint")
		assert.Equal(t, tp.SHA1, a.X509Thumbprint.SecondaryThumbprint)
		assert.Equal(t, service.SymmetricKey{}, a.SymmetricKey, "keys of a self-signed device")
		cs, err := c.DeviceConnectionString(d, service.KeyKindPrimary)
		require.NoError(t, err)
		require.True(t, strings.HasSuffix(cs, ";x509=true") || strings.Contains(cs, ";x509=true;"), "connection string %q has no x509=true", cs)
		echoDevice(t, hub, cs, &cert, 200)
		invoke(t, "x509-dev")
	})

	t.Run("CA-signed", func(t *testing.T) {
		d, err := c.CreateDevice(ctx, &service.Device{DeviceID: "ca-dev", Authentication: service.Authentication{Type: service.AuthenticationTypeCertificateAuthority}})
		require.NoError(t, err)
		require.Equal(t, service.AuthenticationTypeCertificateAuthority, d.Authentication.Type)
		cs, err := c.DeviceConnectionString(d, service.KeyKindPrimary)
		require.NoError(t, err)
		cert := hub.IssueCertificate(t, "ca-dev", time.Hour)
		echoDevice(t, hub, cs, &cert, 200)
		invoke(t, "ca-dev")
	})

	t.Run("list", func(t *testing.T) {
		var ids []string
		pages := 0
		for pager := c.NewListDevicesPager(&service.ListDevicesOptions{PageSize: 2}); pager.More(); pages++ {
			page, err := pager.NextPage(ctx)
			require.NoError(t, err)
			assert.LessOrEqual(t, len(page.Devices), 2, "page size")
			for _, d := range page.Devices {
				ids = append(ids, d.DeviceID)
			}
		}
		assert.Equal(t, []string{"ca-dev", "gen", "given", "x509-dev"}, ids, "NewListDevicesPager")
		assert.Equal(t, 2, pages, "pages of 2")
		for _, size := range []int{-1, 1001} {
			_, err := c.NewListDevicesPager(&service.ListDevicesOptions{PageSize: size}).NextPage(ctx)
			assert.ErrorIs(t, err, service.ErrArgumentInvalid, "PageSize %d", size)
		}
	})
}

func TestRegistryETags(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c, _ := newClient(t, hub, "", nil)
	ctx := context.Background()

	v1, err := c.CreateDevice(ctx, &service.Device{DeviceID: "dev1"})
	require.NoError(t, err)
	_, err = c.CreateDevice(ctx, &service.Device{DeviceID: "dev1"})
	checkResponseError(t, err, 409, 409001, service.ErrorCodeDeviceAlreadyExists, service.ErrDeviceAlreadyExists)

	// Disable with the current etag.
	upd := *v1
	upd.Status = service.DeviceStatusDisabled
	upd.StatusReason = "maintenance"
	v2, err := c.UpdateDevice(ctx, &upd, nil)
	require.NoError(t, err)
	assert.NotEqual(t, v1.ETag, v2.ETag, "the update's new etag")
	assert.Equal(t, service.DeviceStatusDisabled, v2.Status)
	assert.Equal(t, "maintenance", v2.StatusReason)
	assert.Equal(t, v1.Authentication, v2.Authentication, "an update keeps the keys")
	assert.Equal(t, v1.GenerationID, v2.GenerationID, "an update keeps the generation")
	// A disabled device's methods fail as not found.
	_, err = c.InvokeDeviceMethod(ctx, "dev1", echo)
	require.ErrorIs(t, err, service.ErrDeviceNotFound, "invoking a disabled device")

	// The stale etag conflicts, in the device and in IfMatch.
	stale := *v1
	_, err = c.UpdateDevice(ctx, &stale, nil)
	checkResponseError(t, err, 412, 412001, service.ErrorCodePreconditionFailed, service.ErrPreconditionFailed)
	_, err = c.UpdateDevice(ctx, v2, &service.UpdateOptions{IfMatch: v1.ETag})
	require.ErrorIs(t, err, service.ErrPreconditionFailed, "IfMatch with a stale etag")
	// IfMatch "*" wins over the stale etag.
	stale.Status = service.DeviceStatusEnabled
	v3, err := c.UpdateDevice(ctx, &stale, &service.UpdateOptions{IfMatch: "*"})
	require.NoError(t, err, `IfMatch "*"`)
	assert.Equal(t, service.DeviceStatusEnabled, v3.Status, `the update with IfMatch "*"`)
	assert.NotEqual(t, v2.ETag, v3.ETag, `the update with IfMatch "*"`)
	// A device with no etag needs IfMatch: nothing is sent without it.
	noTag := *v3
	noTag.ETag = ""
	_, err = c.UpdateDevice(ctx, &noTag, nil)
	require.ErrorIs(t, err, service.ErrArgumentInvalid, "update without an etag")
	assert.ErrorContains(t, err, "ETag")
	_, err = c.UpdateDevice(ctx, &noTag, &service.UpdateOptions{})
	require.ErrorIs(t, err, service.ErrArgumentInvalid, "update without an etag, empty options")
	v4, err := c.UpdateDevice(ctx, &noTag, &service.UpdateOptions{IfMatch: `"` + v3.ETag + `"`})
	require.NoError(t, err, "IfMatch with the current (quoted) etag")
	// IfMatch wins over the device's own etag.
	cur := *v4
	cur.ETag = v1.ETag
	v4, err = c.UpdateDevice(ctx, &cur, &service.UpdateOptions{IfMatch: v4.ETag})
	require.NoError(t, err, "IfMatch with the current etag, the device's stale")
	// Rotating keys replaces them.
	rotated := *v4
	rotated.Authentication.SymmetricKey = service.SymmetricKey{PrimaryKey: key(2, 32), SecondaryKey: key(3, 32)}
	v5, err := c.UpdateDevice(ctx, &rotated, nil)
	require.NoError(t, err, "key rotation")
	assert.Equal(t, rotated.Authentication.SymmetricKey, v5.Authentication.SymmetricKey, "keys after rotation")

	// Delete: a stale etag conflicts, the current one works.
	err = c.DeleteDevice(ctx, "dev1", &service.DeleteOptions{IfMatch: v1.ETag})
	checkResponseError(t, err, 412, 412001, service.ErrorCodePreconditionFailed, service.ErrPreconditionFailed)
	require.NoError(t, c.DeleteDevice(ctx, "dev1", &service.DeleteOptions{IfMatch: v5.ETag}))
	_, err = c.GetDevice(ctx, "dev1")
	checkResponseError(t, err, 404, 404001, service.ErrorCodeDeviceNotFound, service.ErrDeviceNotFound)
	err = c.DeleteDevice(ctx, "dev1", &service.DeleteOptions{IfMatch: "*"})
	checkResponseError(t, err, 404, 404001, service.ErrorCodeDeviceNotFound, service.ErrDeviceNotFound)
	err = c.DeleteDevice(ctx, "dev1", nil)
	checkResponseError(t, err, 404, 404001, service.ErrorCodeDeviceNotFound, service.ErrDeviceNotFound)

	// nil, empty IfMatch and "*" delete whatever the etag.
	for _, opts := range []*service.DeleteOptions{nil, {}, {IfMatch: "*"}} {
		d, err := c.CreateDevice(ctx, &service.Device{DeviceID: "dev2"})
		require.NoError(t, err)
		d.Status = service.DeviceStatusDisabled
		_, err = c.UpdateDevice(ctx, d, nil) // d.ETag is now stale
		require.NoError(t, err)
		require.NoError(t, c.DeleteDevice(ctx, "dev2", opts), "DeleteDevice with %+v", opts)
		_, err = c.GetDevice(ctx, "dev2")
		require.ErrorIs(t, err, service.ErrDeviceNotFound, "after DeleteDevice with %+v", opts)
	}
}

func TestRegistryModules(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c, _ := newClient(t, hub, "", nil)
	ctx := context.Background()
	_, err := c.CreateModule(ctx, &service.Module{DeviceID: "nodev", ModuleID: "m1"})
	checkResponseError(t, err, 404, 404001, service.ErrorCodeDeviceNotFound, service.ErrDeviceNotFound)
	_, err = c.CreateDevice(ctx, &service.Device{DeviceID: "dev1"})
	require.NoError(t, err)
	m1, err := c.CreateModule(ctx, &service.Module{DeviceID: "dev1", ModuleID: "m1", ManagedBy: "me"})
	require.NoError(t, err)
	assert.Equal(t, "dev1", m1.DeviceID)
	assert.Equal(t, "m1", m1.ModuleID)
	assert.Equal(t, "me", m1.ManagedBy)
	assert.NotEmpty(t, m1.ETag, "etag")
	assert.Equal(t, service.AuthenticationTypeSAS, m1.Authentication.Type)
	assert.Len(t, m1.Authentication.SymmetricKey.PrimaryKey, 44, "a generated 32-byte primary key")
	_, err = c.CreateModule(ctx, &service.Module{DeviceID: "dev1", ModuleID: "m1"})
	checkResponseError(t, err, 409, 409301, service.ErrorCodeModuleAlreadyExistsOnDevice, service.ErrModuleAlreadyExists)

	cert := selfSigned(t, "dev1/m2")
	m2, err := c.CreateModule(ctx, &service.Module{DeviceID: "dev1", ModuleID: "m2", Authentication: service.Authentication{
		Type: service.AuthenticationTypeSelfSigned, X509Thumbprint: service.X509Thumbprint{PrimaryThumbprint: auth.ComputeThumbprints(cert.Leaf.Raw).SHA1}}})
	require.NoError(t, err)

	// Both modules answer methods through connection strings the client derives.
	cs1, err := c.ModuleConnectionString(m1, service.KeyKindPrimary)
	require.NoError(t, err)
	echoDevice(t, hub, cs1, nil, 200)
	cs2, err := c.ModuleConnectionString(m2, service.KeyKindPrimary)
	require.NoError(t, err)
	echoDevice(t, hub, cs2, &cert, 202)
	for id, status := range map[string]int{"m1": 200, "m2": 202} {
		res, err := c.InvokeModuleMethod(ctx, "dev1", id, echo)
		require.NoError(t, err, "module %s", id)
		assert.Equal(t, status, res.Status, "module %s", id)
	}

	list, err := c.ListModules(ctx, "dev1")
	require.NoError(t, err, "ListModules")
	require.Len(t, list, 2, "ListModules")
	assert.Equal(t, "m1", list[0].ModuleID, "ListModules")
	assert.Equal(t, "m2", list[1].ModuleID, "ListModules")
	got, err := c.GetModule(ctx, "dev1", "m1")
	require.NoError(t, err, "GetModule")
	assert.Equal(t, m1.ETag, got.ETag, "GetModule's etag")
	assert.Equal(t, m1.Authentication, got.Authentication, "GetModule's authentication")
	_, err = c.GetModule(ctx, "dev1", "m9")
	checkResponseError(t, err, 404, 404010, service.ErrorCodeModuleNotFound, service.ErrModuleNotFound)

	upd := *m1
	upd.ManagedBy = "you"
	m1b, err := c.UpdateModule(ctx, &upd, nil)
	require.NoError(t, err, "UpdateModule")
	assert.Equal(t, "you", m1b.ManagedBy, "UpdateModule")
	assert.NotEqual(t, m1.ETag, m1b.ETag, "UpdateModule's new etag")
	_, err = c.UpdateModule(ctx, m1, nil)
	checkResponseError(t, err, 412, 412001, service.ErrorCodePreconditionFailed, service.ErrPreconditionFailed)
	_, err = c.UpdateModule(ctx, m1, &service.UpdateOptions{IfMatch: "*"})
	require.NoError(t, err, `module update with IfMatch "*"`)
	noTag := *m1
	noTag.ETag = ""
	_, err = c.UpdateModule(ctx, &noTag, nil)
	require.ErrorIs(t, err, service.ErrArgumentInvalid, "module update without an etag")
	err = c.DeleteModule(ctx, "dev1", "m2", &service.DeleteOptions{IfMatch: m1.ETag})
	checkResponseError(t, err, 412, 412001, service.ErrorCodePreconditionFailed, service.ErrPreconditionFailed)
	require.NoError(t, c.DeleteModule(ctx, "dev1", "m2", &service.DeleteOptions{IfMatch: m2.ETag}))
	require.NoError(t, c.DeleteModule(ctx, "dev1", "m1", nil), "DeleteModule whatever the etag")
	list, err = c.ListModules(ctx, "dev1")
	require.NoError(t, err, "modules after deletion")
	assert.Empty(t, list, "modules after deletion")
	err = c.DeleteModule(ctx, "dev1", "m1", nil)
	checkResponseError(t, err, 404, 404010, service.ErrorCodeModuleNotFound, service.ErrModuleNotFound)
}

func TestRegistryValidation(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c, tries := newClient(t, hub, "", nil)
	ctx := context.Background()
	sas := func(p, s string) service.Authentication {
		return service.Authentication{SymmetricKey: service.SymmetricKey{PrimaryKey: p, SecondaryKey: s}}
	}
	for _, tc := range []struct {
		name string
		d    *service.Device
		want string
	}{
		{"nil", nil, "the device is nil"},
		{"no id", &service.Device{}, "device id is empty"},
		{"bad id", &service.Device{DeviceID: "a b"}, "invalid device id"},
		{"bad status", &service.Device{DeviceID: "d", Status: "paused"}, `Status "paused" is invalid`},
		{"key not base64", &service.Device{DeviceID: "d", Authentication: sas("not base64!", "")}, "primary key must be base64"},
		{"key too short", &service.Device{DeviceID: "d", Authentication: sas("", key(0, 15))}, "secondary key must be base64 of 16 to 64 bytes"},
		{"key too long", &service.Device{DeviceID: "d", Authentication: sas(key(0, 65), "")}, "16 to 64 bytes"},
		{"sas with thumbprint", &service.Device{DeviceID: "d", Authentication: service.Authentication{X509Thumbprint: service.X509Thumbprint{PrimaryThumbprint: strings.Repeat("a", 40)}}}, "thumbprints are only"},
		{"self-signed without thumbprint", &service.Device{DeviceID: "d", Authentication: service.Authentication{Type: service.AuthenticationTypeSelfSigned}}, "needs a primary thumbprint"},
		{"bad thumbprint", &service.Device{DeviceID: "d", Authentication: service.Authentication{Type: service.AuthenticationTypeSelfSigned, X509Thumbprint: service.X509Thumbprint{PrimaryThumbprint: "abc"}}}, "thumbprint"},
		{"self-signed with keys", &service.Device{DeviceID: "d", Authentication: service.Authentication{Type: service.AuthenticationTypeSelfSigned, SymmetricKey: service.SymmetricKey{PrimaryKey: key(0, 32)}, X509Thumbprint: service.X509Thumbprint{PrimaryThumbprint: strings.Repeat("a", 40)}}}, "keys are only"},
		{"CA with keys", &service.Device{DeviceID: "d", Authentication: service.Authentication{Type: service.AuthenticationTypeCertificateAuthority, SymmetricKey: service.SymmetricKey{PrimaryKey: key(0, 32)}}}, "takes neither"},
		{"unknown type", &service.Device{DeviceID: "d", Authentication: service.Authentication{Type: "password"}}, `unknown type "password"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.CreateDevice(ctx, tc.d)
			require.ErrorIs(t, err, service.ErrArgumentInvalid)
			assert.ErrorContains(t, err, tc.want)
			if tc.d != nil && tc.d.Authentication.SymmetricKey.PrimaryKey != "" {
				assert.NotContains(t, err.Error(), tc.d.Authentication.SymmetricKey.PrimaryKey, "the error echoes the key")
			}
		})
	}
	// Ids, etags and options of the other calls, checked before sending.
	for name, call := range map[string]func() error{
		"GetDevice no id":    func() error { _, err := c.GetDevice(ctx, ""); return err },
		"DeleteDevice no id": func() error { return c.DeleteDevice(ctx, "", nil) },
		"UpdateDevice nil":   func() error { _, err := c.UpdateDevice(ctx, nil, nil); return err },
		"GetModule no id":    func() error { _, err := c.GetModule(ctx, "d", ""); return err },
		"DeleteModule bad id": func() error {
			return c.DeleteModule(ctx, "d", "a b", &service.DeleteOptions{IfMatch: "*"})
		},
		"ListModules bad id": func() error { _, err := c.ListModules(ctx, "a/b"); return err },
		"CreateModule nil":   func() error { _, err := c.CreateModule(ctx, nil); return err },
		"UpdateModule no etag": func() error {
			_, err := c.UpdateModule(ctx, &service.Module{DeviceID: "d", ModuleID: "m"}, nil)
			return err
		},
	} {
		assert.ErrorIs(t, call(), service.ErrArgumentInvalid, name)
	}
	assert.Equal(t, 0, tries.count(), "requests sent for invalid calls")

	// Connection strings need the key, and a type that connects.
	_, err := c.DeviceConnectionString(&service.Device{DeviceID: "d"}, service.KeyKindPrimary)
	assert.ErrorIs(t, err, service.ErrArgumentInvalid, "connection string without a key")
	_, err = c.DeviceConnectionString(&service.Device{DeviceID: "d", Authentication: sas(key(0, 32), key(1, 32))}, service.KeyKind(7))
	assert.ErrorIs(t, err, service.ErrArgumentInvalid, "connection string with KeyKind(7)")
	_, err = c.ModuleConnectionString(&service.Module{DeviceID: "d", ModuleID: "m", Authentication: service.Authentication{Type: service.AuthenticationTypeNone}}, service.KeyKindPrimary)
	assert.ErrorIs(t, err, service.ErrArgumentInvalid, "connection string of a none-auth module")
	_, err = c.DeviceConnectionString(nil, service.KeyKindPrimary)
	assert.ErrorIs(t, err, service.ErrArgumentInvalid, "connection string of nil")
	assert.Equal(t, "secondaryKeyKind(7)", service.KeyKindSecondary.String()+service.KeyKind(7).String(), "KeyKind strings")
}

// Device and Module JSON is IoT Hub's, both ways.
func TestRegistryJSON(t *testing.T) {
	hubJSON := `{"deviceId":"dev1","generationId":"638000000000000001","etag":"MzE4NzUxOTU1","connectionState":"Connected",
	"status":"disabled","statusReason":"stolen","connectionStateUpdatedTime":"2024-05-01T10:11:12.1234567Z",
	"statusUpdatedTime":"0001-01-01T00:00:00","lastActivityTime":"2024-05-01T10:11:13Z","cloudToDeviceMessageCount":3,
	"authentication":{"symmetricKey":{"primaryKey":null,"secondaryKey":null},"x509Thumbprint":{"primaryThumbprint":"AB","secondaryThumbprint":null},"type":"selfSigned"},
	"capabilities":{"iotEdge":true},"deviceScope":"ms-azure-iot-edge://e-1","parentScopes":["ms-azure-iot-edge://p-1"]}`
	var d service.Device
	require.NoError(t, json.Unmarshal([]byte(hubJSON), &d))
	want := service.Device{
		DeviceID: "dev1", GenerationID: "638000000000000001", ETag: "MzE4NzUxOTU1", ConnectionState: service.DeviceConnectionStateConnected,
		Status: service.DeviceStatusDisabled, StatusReason: "stolen",
		ConnectionStateUpdatedTime: time.Date(2024, 5, 1, 10, 11, 12, 123456700, time.UTC),
		LastActivityTime:           time.Date(2024, 5, 1, 10, 11, 13, 0, time.UTC),
		CloudToDeviceMessageCount:  3,
		Authentication:             service.Authentication{Type: service.AuthenticationTypeSelfSigned, X509Thumbprint: service.X509Thumbprint{PrimaryThumbprint: "AB"}},
		Capabilities:               service.DeviceCapabilities{IoTEdge: true},
		DeviceScope:                "ms-azure-iot-edge://e-1", ParentScopes: []string{"ms-azure-iot-edge://p-1"},
	}
	gotJSON, err := json.Marshal(d)
	require.NoError(t, err)
	wantJSON, err := json.Marshal(want)
	require.NoError(t, err)
	assert.Equal(t, string(wantJSON), string(gotJSON), "decoded %+v", d)
	assert.True(t, d.ConnectionStateUpdatedTime.Equal(want.ConnectionStateUpdatedTime), "ConnectionStateUpdatedTime %v", d.ConnectionStateUpdatedTime)
	assert.True(t, d.StatusUpdatedTime.IsZero(), "the hub's zero time decodes as zero: %v", d.StatusUpdatedTime)
	// Round trip.
	var again service.Device
	require.NoError(t, json.Unmarshal(gotJSON, &again))
	b, err := json.Marshal(again)
	require.NoError(t, err)
	assert.Equal(t, string(gotJSON), string(b), "round trip changed the JSON")
	// A new SAS device asks for generated keys with empty strings, as the
	// Node SDK does.
	b, err = json.Marshal(service.Device{DeviceID: "new"})
	require.NoError(t, err)
	assert.Contains(t, string(b), `"authentication":{"symmetricKey":{"primaryKey":"","secondaryKey":""},"x509Thumbprint":{"primaryThumbprint":null,"secondaryThumbprint":null},"type":"sas"}`, "new device JSON")
	var m service.Module
	require.NoError(t, json.Unmarshal([]byte(`{"moduleId":"m","deviceId":"d","managedBy":null,"authentication":{"type":"certificateAuthority"}}`), &m))
	assert.Equal(t, service.Module{ModuleID: "m", DeviceID: "d", Authentication: service.Authentication{Type: service.AuthenticationTypeCertificateAuthority}}, m)
	assert.Error(t, json.Unmarshal([]byte(`[1]`), &m), "a JSON array decoded as a module")
	assert.Error(t, json.Unmarshal([]byte(`"x"`), &d), "a JSON string decoded as a device")
}

// TestRegistryEdgeScopes: IoT Edge devices get a scope from the hub,
// children name it, and the hub's refusals come back typed.
func TestRegistryEdgeScopes(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c, _ := newClient(t, hub, "", nil)
	ctx := context.Background()

	edge, err := c.CreateDevice(ctx, &service.Device{DeviceID: "edge1", Capabilities: service.DeviceCapabilities{IoTEdge: true}})
	require.NoError(t, err)
	require.Equal(t, "ms-azure-iot-edge://edge1-"+edge.GenerationID, edge.DeviceScope)
	require.Empty(t, edge.ParentScopes)

	leaf, err := c.CreateDevice(ctx, &service.Device{DeviceID: "leaf1", DeviceScope: edge.DeviceScope})
	require.NoError(t, err)
	require.Equal(t, edge.DeviceScope, leaf.DeviceScope)
	require.Equal(t, []string{edge.DeviceScope}, leaf.ParentScopes)

	child, err := c.CreateDevice(ctx, &service.Device{DeviceID: "edge2", Capabilities: service.DeviceCapabilities{IoTEdge: true},
		ParentScopes: []string{edge.DeviceScope}})
	require.NoError(t, err)
	require.Equal(t, []string{edge.DeviceScope}, child.ParentScopes)
	require.NotEqual(t, edge.DeviceScope, child.DeviceScope)

	// GET-modify-PUT keeps the scopes; DeviceScope "" removes a leaf's parent.
	got, err := c.GetDevice(ctx, "edge2")
	require.NoError(t, err)
	got.StatusReason = "moved"
	got, err = c.UpdateDevice(ctx, got, nil)
	require.NoError(t, err)
	require.Equal(t, child.DeviceScope, got.DeviceScope)
	require.Equal(t, []string{edge.DeviceScope}, got.ParentScopes)
	leaf.DeviceScope = ""
	leaf, err = c.UpdateDevice(ctx, leaf, nil)
	require.NoError(t, err)
	require.Empty(t, leaf.DeviceScope)
	require.Empty(t, leaf.ParentScopes)

	// A scope that names no edge device is refused with 400028.
	_, err = c.CreateDevice(ctx, &service.Device{DeviceID: "leaf2", DeviceScope: "ms-azure-iot-edge://nobody-1"})
	require.ErrorIs(t, err, service.ErrArgumentInvalid)
	var re *service.ResponseError
	require.ErrorAs(t, err, &re)
	require.Equal(t, 400028, re.Code)
	require.Equal(t, service.ErrorCodeInvalidDeviceScope, re.ErrorCode)

	// Registry errors arrive in IoT Hub's registry shape and are typed.
	_, err = c.GetDevice(ctx, "nope")
	require.ErrorIs(t, err, service.ErrDeviceNotFound)
	require.ErrorAs(t, err, &re)
	require.Equal(t, 404001, re.Code)
	require.NotEmpty(t, re.TrackingID)
	require.Contains(t, re.Message, "nope")
}
