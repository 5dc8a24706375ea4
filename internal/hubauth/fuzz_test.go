package hubauth_test

import (
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hubauth"
)

// FuzzVerifySAS takes the arguments of auth's FuzzParseSAS (its seed corpus
// is shared): a token to parse and check, and a resource and expiry to sign.
func FuzzVerifySAS(f *testing.F) {
	res := auth.DeviceResource(hubHost, "my_device")
	vector := testToken(f, primaryKey, testEncode(res), "1578941692", "")
	for _, seed := range []struct {
		token    string
		resource string
		expiry   int64
	}{
		{vector, res, vectorExpiry},
		{testToken(f, primaryKey, testEncode(hubHost), "1578941692", "iothubowner"), hubHost, 0},
		{testToken(f, primaryKey, "myiothub.azure-devices.net%2fdevices%2fmy_device", "1", ""), "dev#1 (x)", 253402300799},
		{"SharedAccessSignature SR=a&Sig=b&SE=1&skn=p%40x&foo=bar", "h/devices/d\u00e9v", 1},
		{"SharedAccessSignature sig=abc%3D&se=100&sr=h%2Fdevices%2Fd", "a+b c", 4102444800},
		{"SharedAccessSignature\u00a0sr=a&sig=b&se=1", "\x00\xff", 1 << 34},
		{"SharedAccessSignature\tsr=a&sig=b&se=1&&", "h/", 1},
		// invalid tokens (and expiries SignSAS refuses)
		{"", "", 0},
		{"SharedAccessSignature  sr=a&sig=b&se=1", "h", 253402300800},
		{"SharedAccessSignature sr=a&sig=b&se=1&sr=a", "h", 1<<63 - 1},
		{"SharedAccessSignature sr=%zz&sig=b&se=1", "%zz", 5},
	} {
		f.Add(seed.token, seed.resource, seed.expiry)
	}
	f.Fuzz(func(t *testing.T, token, resource string, expiry int64) {
		// hubauth.ParseSAS accepts exactly what auth.ParseSAS accepts.
		want, wantErr := auth.ParseSAS(token)
		s, err := hubauth.ParseSAS(token)
		if wantErr != nil {
			require.Error(t, err, "hubauth.ParseSAS accepts what auth.ParseSAS refuses")
			require.ErrorIs(t, err, auth.ErrInvalidSAS)
			require.Nil(t, s, "ParseSAS returned a token with its error")
		} else {
			require.NoError(t, err, "hubauth.ParseSAS refuses what auth.ParseSAS accepts")
			require.Equal(t, *want, s.SAS, "parsed fields")

			// The signature is checked over the raw sr and se as sent,
			// picked out here independently of the package.
			sr, se, sig := rawFields(t, token)
			good := testSig(t, primaryKey, sr, se)
			if sig == good {
				require.NoError(t, s.CheckSignature(primaryKey), "the token is signed with the key")
			} else {
				require.ErrorIs(t, s.CheckSignature(primaryKey), hubauth.ErrSASSignature)
			}
			resigned, err := hubauth.ParseSAS("SharedAccessSignature sr=" + sr + "&sig=" + testEncode(good) + "&se=" + se)
			require.NoError(t, err, "the token re-signed over its own sr and se")
			require.NoError(t, resigned.Verify(resigned.Resource, resigned.Expiry, primaryKey, ""), "Verify(own resource) of the re-signed token")
			require.ErrorIs(t, resigned.CheckSignature(otherKey, secondaryKey), hubauth.ErrSASSignature)
		}

		// A token auth.SignSAS makes for the fuzzed resource and expiry
		// verifies.
		e := time.Unix(expiry, 0)
		tok, err := auth.SignSAS(resource, "p"+strings.ToLower(resource), primaryKey, e)
		if err != nil {
			return // FuzzParseSAS in package auth checks when SignSAS may fail
		}
		s, err = hubauth.ParseSAS(tok)
		require.NoError(t, err, "ParseSAS(SignSAS(%q, %d) = %q)", resource, expiry, tok)
		require.NoError(t, s.Verify(resource, e, primaryKey, ""), "Verify(own resource)")
		require.ErrorIs(t, s.Verify(resource, e, otherKey, secondaryKey), hubauth.ErrSASSignature, "Verify with the wrong keys")
		require.ErrorIs(t, s.Verify(resource, e.Add(hubauth.MaxClockSkew+time.Second), primaryKey, ""), auth.ErrSASExpired, "Verify after expiry")
	})
}

// rawFields returns a parsed token's sr and se as sent and its sig decoded.
func rawFields(t *testing.T, token string) (sr, se, sig string) {
	t.Helper()
	i := strings.IndexFunc(token, unicode.IsSpace)
	_, w := utf8.DecodeRuneInString(token[i:])
	for _, field := range strings.Split(token[i+w:], "&") {
		k, v, _ := strings.Cut(field, "=")
		switch strings.ToLower(k) {
		case "sr":
			sr = v
		case "se":
			se = v
		case "sig":
			d, err := url.QueryUnescape(v)
			require.NoError(t, err, "accepted sig %q that does not unescape", v)
			sig = d
		}
	}
	return sr, se, sig
}
