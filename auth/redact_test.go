package auth_test

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/transport"
)

// keyForms returns the ways a base64 key could leak: as given, decoded,
// and as fmt prints the decoded bytes.
func keyForms(t *testing.T, b64 string) []string {
	t.Helper()
	raw := mustDecode(t, b64)
	return []string{
		b64,
		string(raw),
		hex.EncodeToString(raw),
		strings.Trim(fmt.Sprint(raw), "[]"),
		strings.TrimSuffix(strings.TrimPrefix(fmt.Sprintf("%#v", raw), "[]byte{"), "}"),
	}
}

// sigForms returns the signature of a token as sent and decoded.
func sigForms(t *testing.T, token string) []string {
	t.Helper()
	_, after, ok := strings.Cut(token, "sig=")
	require.True(t, ok, "token %q has no sig", token)
	enc, _, _ := strings.Cut(after, "&")
	dec := strings.NewReplacer("%2B", "+", "%2F", "/", "%3D", "=").Replace(enc)
	return []string{enc, dec, strings.TrimRight(dec, "=")}
}

func TestSecretsNeverPrinted(t *testing.T) {
	ctx := context.Background()
	devRes := auth.DeviceResource(devHost, "dev1")
	sasValue := testToken(t, secondaryKey, testEncode(devRes), "4102444800", "")

	devKeyCS, err := auth.ParseDeviceConnectionString("HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=" + primaryKey)
	require.NoError(t, err)
	devSASCS, err := auth.ParseDeviceConnectionString("HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessSignature=" + sasValue)
	require.NoError(t, err)
	svcCS, err := auth.ParseServiceConnectionString("HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + primaryKey)
	require.NoError(t, err)
	sas, err := auth.ParseSAS(sasValue)
	require.NoError(t, err)
	kp, err := auth.NewKeyTokenProvider(devRes, "", primaryKey, &auth.TokenOptions{Now: func() time.Time { return tokenEpoch }})
	require.NoError(t, err)
	minted, err := kp.Token(ctx) // fills the provider's cache
	require.NoError(t, err)
	st, err := auth.NewStaticToken(sasValue)
	require.NoError(t, err)
	staticTok, err := st.Token(ctx)
	require.NoError(t, err)
	dev := selfSignedDevice(t)
	cred, err := auth.NewX509Credential(tls.Certificate{Certificate: [][]byte{dev.Cert.Raw}, PrivateKey: dev.Key})
	require.NoError(t, err)

	// Issue 16.5: the transport configuration carries the SAS token and,
	// for X.509 identities, the client certificate's private key.
	tcfg := transport.Config{
		Identity:  auth.Identity{HostName: devHost, DeviceID: "dev1"},
		Address:   devHost,
		Token:     sasValue,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{dev.Cert.Raw}, PrivateKey: dev.Key}}},
	}

	keySecrets := append(keyForms(t, primaryKey), keyForms(t, secondaryKey)...)
	sasSecrets := sigForms(t, sasValue)
	mintedSecrets := append(sigForms(t, minted.Value), keyForms(t, primaryKey)...)
	x509Secrets := []string{
		dev.Key.D.String(), // fmt's form of a big.Int
		dev.Key.D.Text(16),
		strings.Split(string(keyPEM(t, dev.Key)), "\n")[1], // first line of the PEM body
	}

	tests := []struct {
		name    string
		v       any
		secrets []string
		// mustShow is non-secret text every form must keep, so that a blank
		// output cannot pass.
		mustShow string
	}{
		{"ConnectionString with key", devKeyCS, keySecrets, "DeviceId=dev1"},
		{"*ConnectionString with key", &devKeyCS, keySecrets, "DeviceId=dev1"},
		{"ConnectionString with SAS", devSASCS, sasSecrets, "DeviceId=dev1"},
		{"service ConnectionString", svcCS, keySecrets, "SharedAccessKeyName=iothubowner"},
		{"*SAS", sas, sasSecrets, "devices%2Fdev1"},
		{"SAS value", *sas, sasSecrets, "devices%2Fdev1"},
		{"Token", minted, mintedSecrets, "<redacted>"},
		{"*Token", &minted, mintedSecrets, "<redacted>"},
		{"static Token", staticTok, sasSecrets, "<redacted>"},
		{"*KeyTokenProvider", kp, mintedSecrets, "devices/dev1"},
		{"*StaticToken", st, sasSecrets, "devices%2Fdev1"},
		{"*X509Credential", cred, x509Secrets, "CN=dev1"},
		{"X509Credential value", *cred, x509Secrets, ""},
		{"transport.Config", tcfg, append(append([]string{}, sasSecrets...), x509Secrets...), "dev1"},
		{"*transport.Config", &tcfg, append(append([]string{}, sasSecrets...), x509Secrets...), "dev1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.NotEmpty(t, tt.secrets, "no secrets to look for")
			var outs []string
			for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
				outs = append(outs, fmt.Sprintf(verb, tt.v))
			}
			outs = append(outs, fmt.Sprint(tt.v), fmt.Sprintln(tt.v), fmt.Sprintf("%v", []any{tt.v}), fmt.Sprintf("%+v", struct{ X any }{tt.v}))
			if s, ok := tt.v.(fmt.Stringer); ok {
				outs = append(outs, s.String())
			}
			if s, ok := tt.v.(fmt.GoStringer); ok {
				outs = append(outs, s.GoString())
			}
			for _, out := range outs {
				for _, secret := range tt.secrets {
					if secret != "" {
						assert.NotContains(t, out, secret, "output contains a secret")
					}
				}
				assert.Contains(t, out, tt.mustShow, "output lacks the non-secret text")
			}
		})
	}
}

// TestRevealRoundTrip: Reveal gives back a string that parses to the same
// value, secrets included.
func TestRevealRoundTrip(t *testing.T) {
	sasValue := testToken(t, primaryKey, testEncode(auth.ModuleResource(devHost, "dev1", "m1")), "4102444800", "")
	device := []string{
		"HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=" + primaryKey,
		"hostname=myhub.azure-devices.net;deviceid=dev1;moduleid=m1;sharedaccesssignature=" + sasValue,
		"HostName=myhub.azure-devices.net;DeviceId=a=b;SharedAccessKeyName=device;SharedAccessKey=" + otherKey + ";GatewayHostName=[::1]:8883",
		"GatewayHostName=gw;X509Cert=TRUE;DeviceId=" + allIDChars + ";HostName=myhub.azure-devices.net;",
	}
	for _, s := range device {
		c, err := auth.ParseDeviceConnectionString(s)
		require.NoError(t, err, "%q", s)
		r := c.Reveal()
		if c.SharedAccessKey != "" {
			assert.Contains(t, r, "SharedAccessKey="+c.SharedAccessKey, "Reveal() lacks the key")
		}
		if c.SharedAccessSignature != "" {
			assert.Contains(t, r, "SharedAccessSignature="+c.SharedAccessSignature, "Reveal() lacks the token")
		}
		again, err := auth.ParseDeviceConnectionString(r)
		require.NoError(t, err, "re-parse %q", r)
		assert.Equal(t, c, again, "ParseDeviceConnectionString(Reveal()) of %q", r)
	}
	svc, err := auth.ParseServiceConnectionString("HostName=myhub.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=" + primaryKey)
	require.NoError(t, err)
	again, err := auth.ParseServiceConnectionString(svc.Reveal())
	require.NoError(t, err, "service Reveal round trip")
	assert.Equal(t, svc, again, "service Reveal round trip")
}
