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
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// selfSigned makes a self-signed client certificate with the given CN.
func selfSigned(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
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
		if err != nil || res.Status != 200 || string(res.Payload) != `{"n":1}` {
			t.Fatalf("invoke %s: %v %v", id, res, err)
		}
	}

	t.Run("generated keys", func(t *testing.T) {
		d, err := c.CreateDevice(ctx, &service.Device{DeviceID: "gen"})
		if err != nil {
			t.Fatal(err)
		}
		a := d.Authentication
		if d.DeviceID != "gen" || a.Type != service.AuthenticationTypeSAS || len(a.SymmetricKey.PrimaryKey) != 44 ||
			len(a.SymmetricKey.SecondaryKey) != 44 || a.SymmetricKey.PrimaryKey == a.SymmetricKey.SecondaryKey {
			t.Fatalf("created %+v, want a SAS device with two generated 32-byte keys", d)
		}
		if d.ETag == "" || d.GenerationID == "" || d.Status != service.DeviceStatusEnabled || d.ConnectionState != service.ConnectionStateDisconnected {
			t.Fatalf("created %+v: want etag, generation id, enabled, disconnected", d)
		}
		if !d.LastActivityTime.IsZero() {
			t.Fatalf("LastActivityTime of a new device = %v, want zero", d.LastActivityTime)
		}
		for _, k := range []service.KeyKind{service.KeyKindPrimary, service.KeyKindSecondary} {
			cs, err := c.DeviceConnectionString(d, k)
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := auth.ParseDeviceConnectionString(cs)
			if err != nil {
				t.Fatal(err)
			}
			want := a.SymmetricKey.PrimaryKey
			if k == service.KeyKindSecondary {
				want = a.SymmetricKey.SecondaryKey
			}
			if parsed.HostName != "localhost" || parsed.GatewayHostName != hub.Addr() || parsed.DeviceID != "gen" || parsed.SharedAccessKey != want {
				t.Fatalf("%v connection string %v", k, parsed)
			}
			echoDevice(t, hub, cs, nil, 200) // the second connection replaces the first
			invoke(t, "gen")
		}
		got, err := c.GetDevice(ctx, "gen")
		if err != nil {
			t.Fatal(err)
		}
		if got.ETag != d.ETag || got.Authentication != d.Authentication || got.ConnectionState != service.ConnectionStateConnected ||
			got.LastActivityTime.IsZero() {
			t.Fatalf("GetDevice %+v, created %+v", got, d)
		}
	})

	t.Run("given keys", func(t *testing.T) {
		keys := service.SymmetricKey{PrimaryKey: key(0, 32), SecondaryKey: key(1, 16)}
		d, err := c.CreateDevice(ctx, &service.Device{DeviceID: "given", Authentication: service.Authentication{SymmetricKey: keys}})
		if err != nil {
			t.Fatal(err)
		}
		if d.Authentication.SymmetricKey != keys {
			t.Fatal("the hub did not keep the given keys")
		}
		cs, err := c.DeviceConnectionString(d, service.KeyKindSecondary)
		if err != nil {
			t.Fatal(err)
		}
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
		if err != nil {
			t.Fatal(err)
		}
		if a := d.Authentication; a.Type != service.AuthenticationTypeSelfSigned || a.X509Thumbprint.PrimaryThumbprint != tp.SHA256 ||
			a.X509Thumbprint.SecondaryThumbprint != tp.SHA1 || a.SymmetricKey != (service.SymmetricKey{}) {
			t.Fatalf("created %+v", a)
		}
		cs, err := c.DeviceConnectionString(d, service.KeyKindPrimary)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(cs, ";x509=true") && !strings.Contains(cs, ";x509=true;") {
			t.Fatalf("connection string %q has no x509=true", cs)
		}
		echoDevice(t, hub, cs, &cert, 200)
		invoke(t, "x509-dev")
	})

	t.Run("CA-signed", func(t *testing.T) {
		d, err := c.CreateDevice(ctx, &service.Device{DeviceID: "ca-dev", Authentication: service.Authentication{Type: service.AuthenticationTypeCertificateAuthority}})
		if err != nil {
			t.Fatal(err)
		}
		if d.Authentication.Type != service.AuthenticationTypeCertificateAuthority {
			t.Fatalf("created %+v", d.Authentication)
		}
		cs, err := c.DeviceConnectionString(d, service.KeyKindPrimary)
		if err != nil {
			t.Fatal(err)
		}
		cert := hub.IssueCertificate(t, "ca-dev", time.Hour)
		echoDevice(t, hub, cs, &cert, 200)
		invoke(t, "ca-dev")
	})

	t.Run("list", func(t *testing.T) {
		all, err := c.ListDevices(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range all {
			ids = append(ids, d.DeviceID)
		}
		if strings.Join(ids, ",") != "ca-dev,gen,given,x509-dev" {
			t.Fatalf("ListDevices = %v", ids)
		}
		two, err := c.ListDevices(ctx, 2)
		if err != nil || len(two) != 2 {
			t.Fatalf("ListDevices(2) = %d devices, %v", len(two), err)
		}
		for _, top := range []int{-1, 1001} {
			if _, err := c.ListDevices(ctx, top); !errors.Is(err, service.ErrArgumentInvalid) {
				t.Fatalf("ListDevices(%d): %v", top, err)
			}
		}
	})
}

func TestRegistryETags(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c, _ := newClient(t, hub, "", nil)
	ctx := context.Background()

	v1, err := c.CreateDevice(ctx, &service.Device{DeviceID: "dev1"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateDevice(ctx, &service.Device{DeviceID: "dev1"})
	checkResponseError(t, err, 409, 409001, service.ErrorCodeDeviceAlreadyExists, service.ErrDeviceAlreadyExists)

	// Disable with the current etag.
	upd := *v1
	upd.Status = service.DeviceStatusDisabled
	upd.StatusReason = "maintenance"
	v2, err := c.UpdateDevice(ctx, &upd, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v2.ETag == v1.ETag || v2.Status != service.DeviceStatusDisabled || v2.StatusReason != "maintenance" ||
		v2.Authentication != v1.Authentication || v2.GenerationID != v1.GenerationID {
		t.Fatalf("updated %+v from %+v", v2, v1)
	}
	// A disabled device's methods fail as not found.
	if _, err := c.InvokeDeviceMethod(ctx, "dev1", echo); !errors.Is(err, service.ErrDeviceNotFound) {
		t.Fatalf("invoking a disabled device: %v", err)
	}

	// The stale etag conflicts, in the device and in IfMatch.
	stale := *v1
	_, err = c.UpdateDevice(ctx, &stale, nil)
	checkResponseError(t, err, 412, 412001, service.ErrorCodePreconditionFailed, service.ErrPreconditionFailed)
	if _, err := c.UpdateDevice(ctx, v2, &service.UpdateOptions{IfMatch: v1.ETag}); !errors.Is(err, service.ErrPreconditionFailed) {
		t.Fatalf("IfMatch with a stale etag: %v", err)
	}
	// Force wins over the stale etag.
	stale.Status = service.DeviceStatusEnabled
	v3, err := c.UpdateDevice(ctx, &stale, &service.UpdateOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if v3.Status != service.DeviceStatusEnabled || v3.ETag == v2.ETag {
		t.Fatalf("forced update gave %+v", v3)
	}
	// IfMatch with the current etag, on a device with none.
	noTag := *v3
	noTag.ETag = ""
	if _, err := c.UpdateDevice(ctx, &noTag, nil); !errors.Is(err, service.ErrArgumentInvalid) || !strings.Contains(err.Error(), "ETag") {
		t.Fatalf("update without an etag: %v", err)
	}
	if _, err := c.UpdateDevice(ctx, &noTag, &service.UpdateOptions{IfMatch: v3.ETag, Force: true}); !errors.Is(err, service.ErrArgumentInvalid) {
		t.Fatalf("IfMatch and Force: %v", err)
	}
	v4, err := c.UpdateDevice(ctx, &noTag, &service.UpdateOptions{IfMatch: `"` + v3.ETag + `"`})
	if err != nil {
		t.Fatalf("IfMatch with the current (quoted) etag: %v", err)
	}
	// Rotating keys replaces them.
	rotated := *v4
	rotated.Authentication.SymmetricKey = service.SymmetricKey{PrimaryKey: key(2, 32), SecondaryKey: key(3, 32)}
	v5, err := c.UpdateDevice(ctx, &rotated, nil)
	if err != nil || v5.Authentication.SymmetricKey != rotated.Authentication.SymmetricKey {
		t.Fatalf("key rotation: %v", err)
	}

	// Delete: stale etag conflicts, no etag is refused, the current one works.
	err = c.DeleteDevice(ctx, "dev1", v1.ETag)
	checkResponseError(t, err, 412, 412001, service.ErrorCodePreconditionFailed, service.ErrPreconditionFailed)
	if err := c.DeleteDevice(ctx, "dev1", ""); !errors.Is(err, service.ErrArgumentInvalid) {
		t.Fatalf("delete without an etag: %v", err)
	}
	if err := c.DeleteDevice(ctx, "dev1", v5.ETag); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetDevice(ctx, "dev1")
	checkResponseError(t, err, 404, 404001, service.ErrorCodeDeviceNotFound, service.ErrDeviceNotFound)
	err = c.DeleteDevice(ctx, "dev1", "*")
	checkResponseError(t, err, 404, 404001, service.ErrorCodeDeviceNotFound, service.ErrDeviceNotFound)

	// "*" deletes whatever the etag.
	if _, err := c.CreateDevice(ctx, &service.Device{DeviceID: "dev2"}); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteDevice(ctx, "dev2", "*"); err != nil {
		t.Fatal(err)
	}
}

func TestRegistryModules(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c, _ := newClient(t, hub, "", nil)
	ctx := context.Background()
	_, err := c.CreateModule(ctx, &service.Module{DeviceID: "nodev", ModuleID: "m1"})
	checkResponseError(t, err, 404, 404001, service.ErrorCodeDeviceNotFound, service.ErrDeviceNotFound)
	if _, err := c.CreateDevice(ctx, &service.Device{DeviceID: "dev1"}); err != nil {
		t.Fatal(err)
	}
	m1, err := c.CreateModule(ctx, &service.Module{DeviceID: "dev1", ModuleID: "m1", ManagedBy: "me"})
	if err != nil {
		t.Fatal(err)
	}
	if m1.DeviceID != "dev1" || m1.ModuleID != "m1" || m1.ManagedBy != "me" || m1.ETag == "" ||
		m1.Authentication.Type != service.AuthenticationTypeSAS || len(m1.Authentication.SymmetricKey.PrimaryKey) != 44 {
		t.Fatalf("created %+v", m1)
	}
	_, err = c.CreateModule(ctx, &service.Module{DeviceID: "dev1", ModuleID: "m1"})
	checkResponseError(t, err, 409, 409301, service.ErrorCodeModuleAlreadyExistsOnDevice, service.ErrModuleAlreadyExists)

	cert := selfSigned(t, "dev1/m2")
	m2, err := c.CreateModule(ctx, &service.Module{DeviceID: "dev1", ModuleID: "m2", Authentication: service.Authentication{
		Type: service.AuthenticationTypeSelfSigned, X509Thumbprint: service.X509Thumbprint{PrimaryThumbprint: auth.ComputeThumbprints(cert.Leaf.Raw).SHA1}}})
	if err != nil {
		t.Fatal(err)
	}

	// Both modules answer methods through connection strings the client derives.
	cs1, err := c.ModuleConnectionString(m1, service.KeyKindPrimary)
	if err != nil {
		t.Fatal(err)
	}
	echoDevice(t, hub, cs1, nil, 200)
	cs2, err := c.ModuleConnectionString(m2, service.KeyKindPrimary)
	if err != nil {
		t.Fatal(err)
	}
	echoDevice(t, hub, cs2, &cert, 202)
	for id, status := range map[string]int{"m1": 200, "m2": 202} {
		res, err := c.InvokeModuleMethod(ctx, "dev1", id, echo)
		if err != nil || res.Status != status {
			t.Fatalf("module %s: %v %v", id, res, err)
		}
	}

	list, err := c.ListModules(ctx, "dev1")
	if err != nil || len(list) != 2 || list[0].ModuleID != "m1" || list[1].ModuleID != "m2" {
		t.Fatalf("ListModules = %v, %v", list, err)
	}
	got, err := c.GetModule(ctx, "dev1", "m1")
	if err != nil || got.ETag != m1.ETag || got.Authentication != m1.Authentication {
		t.Fatalf("GetModule = %+v, %v", got, err)
	}
	_, err = c.GetModule(ctx, "dev1", "m9")
	checkResponseError(t, err, 404, 404010, service.ErrorCodeModuleNotFound, service.ErrModuleNotFound)

	upd := *m1
	upd.ManagedBy = "you"
	m1b, err := c.UpdateModule(ctx, &upd, nil)
	if err != nil || m1b.ManagedBy != "you" || m1b.ETag == m1.ETag {
		t.Fatalf("UpdateModule = %+v, %v", m1b, err)
	}
	_, err = c.UpdateModule(ctx, m1, nil)
	checkResponseError(t, err, 412, 412001, service.ErrorCodePreconditionFailed, service.ErrPreconditionFailed)
	if _, err := c.UpdateModule(ctx, m1, &service.UpdateOptions{Force: true}); err != nil {
		t.Fatalf("forced module update: %v", err)
	}
	err = c.DeleteModule(ctx, "dev1", "m2", m1.ETag)
	checkResponseError(t, err, 412, 412001, service.ErrorCodePreconditionFailed, service.ErrPreconditionFailed)
	if err := c.DeleteModule(ctx, "dev1", "m2", m2.ETag); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteModule(ctx, "dev1", "m1", "*"); err != nil {
		t.Fatal(err)
	}
	if list, err := c.ListModules(ctx, "dev1"); err != nil || len(list) != 0 {
		t.Fatalf("modules after deletion: %v %v", list, err)
	}
	if err := c.DeleteModule(ctx, "dev1", "m1", ""); !errors.Is(err, service.ErrArgumentInvalid) {
		t.Fatalf("DeleteModule without etag: %v", err)
	}
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
			if !errors.Is(err, service.ErrArgumentInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrArgumentInvalid saying %q", err, tc.want)
			}
			if tc.d != nil && tc.d.Authentication.SymmetricKey.PrimaryKey != "" && strings.Contains(err.Error(), tc.d.Authentication.SymmetricKey.PrimaryKey) {
				t.Fatal("the error echoes the key")
			}
		})
	}
	if tries.count() != 0 {
		t.Fatalf("%d requests sent for invalid devices", tries.count())
	}

	// Connection strings need the key, and a type that connects.
	if _, err := c.DeviceConnectionString(&service.Device{DeviceID: "d"}, service.KeyKindPrimary); !errors.Is(err, service.ErrArgumentInvalid) {
		t.Fatalf("connection string without a key: %v", err)
	}
	if _, err := c.DeviceConnectionString(&service.Device{DeviceID: "d", Authentication: sas(key(0, 32), key(1, 32))}, service.KeyKind(7)); !errors.Is(err, service.ErrArgumentInvalid) {
		t.Fatalf("connection string with KeyKind(7): %v", err)
	}
	if _, err := c.ModuleConnectionString(&service.Module{DeviceID: "d", ModuleID: "m", Authentication: service.Authentication{Type: service.AuthenticationTypeNone}}, service.KeyKindPrimary); !errors.Is(err, service.ErrArgumentInvalid) {
		t.Fatalf("connection string of a none-auth module: %v", err)
	}
	if _, err := c.DeviceConnectionString(nil, service.KeyKindPrimary); !errors.Is(err, service.ErrArgumentInvalid) {
		t.Fatalf("connection string of nil: %v", err)
	}
	if got := service.KeyKindSecondary.String() + service.KeyKind(7).String(); got != "secondaryKeyKind(7)" {
		t.Fatalf("KeyKind strings %q", got)
	}
}

// Device and Module JSON is IoT Hub's, both ways.
func TestRegistryJSON(t *testing.T) {
	hubJSON := `{"deviceId":"dev1","generationId":"638000000000000001","etag":"MzE4NzUxOTU1","connectionState":"Connected",
	"status":"disabled","statusReason":"stolen","connectionStateUpdatedTime":"2024-05-01T10:11:12.1234567Z",
	"statusUpdatedTime":"0001-01-01T00:00:00","lastActivityTime":"2024-05-01T10:11:13Z","cloudToDeviceMessageCount":3,
	"authentication":{"symmetricKey":{"primaryKey":null,"secondaryKey":null},"x509Thumbprint":{"primaryThumbprint":"AB","secondaryThumbprint":null},"type":"selfSigned"},
	"capabilities":{"iotEdge":true},"deviceScope":"ms-azure-iot-edge://e-1","parentScopes":["ms-azure-iot-edge://p-1"]}`
	var d service.Device
	if err := json.Unmarshal([]byte(hubJSON), &d); err != nil {
		t.Fatal(err)
	}
	want := service.Device{
		DeviceID: "dev1", GenerationID: "638000000000000001", ETag: "MzE4NzUxOTU1", ConnectionState: service.ConnectionStateConnected,
		Status: service.DeviceStatusDisabled, StatusReason: "stolen",
		ConnectionStateUpdatedTime: time.Date(2024, 5, 1, 10, 11, 12, 123456700, time.UTC),
		LastActivityTime:           time.Date(2024, 5, 1, 10, 11, 13, 0, time.UTC),
		CloudToDeviceMessageCount:  3,
		Authentication:             service.Authentication{Type: service.AuthenticationTypeSelfSigned, X509Thumbprint: service.X509Thumbprint{PrimaryThumbprint: "AB"}},
		Capabilities:               service.DeviceCapabilities{IoTEdge: true},
		DeviceScope:                "ms-azure-iot-edge://e-1", ParentScopes: []string{"ms-azure-iot-edge://p-1"},
	}
	gotJSON, _ := json.Marshal(d)
	wantJSON, _ := json.Marshal(want)
	if string(gotJSON) != string(wantJSON) || !d.ConnectionStateUpdatedTime.Equal(want.ConnectionStateUpdatedTime) || !d.StatusUpdatedTime.IsZero() {
		t.Fatalf("decoded %+v\nwant    %+v", d, want)
	}
	// Round trip.
	var again service.Device
	if err := json.Unmarshal(gotJSON, &again); err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(again); string(b) != string(gotJSON) {
		t.Fatalf("round trip changed\n%s\n%s", b, gotJSON)
	}
	// A new SAS device asks for generated keys with empty strings, as the
	// Node SDK does.
	b, _ := json.Marshal(service.Device{DeviceID: "new"})
	if !strings.Contains(string(b), `"authentication":{"symmetricKey":{"primaryKey":"","secondaryKey":""},"x509Thumbprint":{"primaryThumbprint":null,"secondaryThumbprint":null},"type":"sas"}`) {
		t.Fatalf("new device JSON %s", b)
	}
	var m service.Module
	if err := json.Unmarshal([]byte(`{"moduleId":"m","deviceId":"d","managedBy":null,"authentication":{"type":"certificateAuthority"}}`), &m); err != nil {
		t.Fatal(err)
	}
	if m.ModuleID != "m" || m.DeviceID != "d" || m.ManagedBy != "" || m.Authentication.Type != service.AuthenticationTypeCertificateAuthority {
		t.Fatalf("module %+v", m)
	}
	if err := json.Unmarshal([]byte(`[1]`), &m); err == nil {
		t.Fatal("a JSON array decoded as a module")
	}
	if err := json.Unmarshal([]byte(`"x"`), &d); err == nil {
		t.Fatal("a JSON string decoded as a device")
	}
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
