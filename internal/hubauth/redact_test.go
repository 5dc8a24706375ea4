package hubauth_test

import (
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hubauth"
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
	sasValue := testToken(t, secondaryKey, testEncode(auth.DeviceResource(devHost, "dev1")), "4102444800", "")
	sas, err := hubauth.ParseSAS(sasValue)
	require.NoError(t, err)
	pol := hubauth.Policy{Name: "iothubowner", PrimaryKey: primaryKey, SecondaryKey: secondaryKey, Rights: hubauth.RightsServiceConnect}

	keySecrets := append(keyForms(t, primaryKey), keyForms(t, secondaryKey)...)
	sasSecrets := sigForms(t, sasValue)

	tests := []struct {
		name    string
		v       any
		secrets []string
		// mustShow is non-secret text every form must keep, so that a blank
		// output cannot pass.
		mustShow string
	}{
		{"*SAS", sas, sasSecrets, "devices%2Fdev1"},
		{"SAS value", *sas, sasSecrets, "devices%2Fdev1"},
		{"Policy", pol, keySecrets, "iothubowner"},
		{"*Policy", &pol, keySecrets, "iothubowner"},
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
