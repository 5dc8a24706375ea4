package auth_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
)

func TestResources(t *testing.T) {
	assert.Equal(t, "myiothub.azure-devices.net/devices/my_device", auth.DeviceResource(hubHost, "my_device"), "DeviceResource")
	assert.Equal(t, "myiothub.azure-devices.net/devices/my_device/modules/m1", auth.ModuleResource(hubHost, "my_device", "m1"), "ModuleResource")
}

// TestSignSASVector pins the protocol.md §2.2 vector shape to a literal
// token, computed outside the package.
func TestSignSASVector(t *testing.T) {
	got, err := auth.SignSAS(auth.DeviceResource(hubHost, "my_device"), "", primaryKey, time.Unix(vectorExpiry, 0))
	require.NoError(t, err)
	const want = "SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device" +
		"&sig=FKtjLzE%2FvYEYCjrUKInBemmf7qXk%2B0v%2BSPHMB6HhppA%3D&se=1578941692"
	require.Equal(t, want, got, "SignSAS")
}

func TestSignSASKnownAnswers(t *testing.T) {
	tests := []struct {
		name     string
		resource string
		keyName  string
		// wantSR is the encoded resource, written out by hand.
		wantSR string
	}{
		{"device", auth.DeviceResource(hubHost, "my_device"), "", "myiothub.azure-devices.net%2Fdevices%2Fmy_device"},
		{"module", auth.ModuleResource(hubHost, "my_device", "my_module"), "", "myiothub.azure-devices.net%2Fdevices%2Fmy_device%2Fmodules%2Fmy_module"},
		{"hub policy", hubHost, "iothubowner", "myiothub.azure-devices.net"},
		{"device via policy", auth.DeviceResource(hubHost, "my_device"), "iothubowner", "myiothub.azure-devices.net%2Fdevices%2Fmy_device"},
		{"special device id", auth.DeviceResource(hubHost, "dev#1 (x)"), "", "myiothub.azure-devices.net%2Fdevices%2Fdev%231%20%28x%29"},
		{"every id punctuation", auth.DeviceResource(hubHost, "a-:.+%_#*?!(),=@$'~"), "", "myiothub.azure-devices.net%2Fdevices%2Fa-%3A.%2B%25_%23%2A%3F%21%28%29%2C%3D%40%24%27~"},
		{"non-ASCII", "myiothub.azure-devices.net/devices/d\u00e9v", "", "myiothub.azure-devices.net%2Fdevices%2Fd%C3%A9v"},
		{"policy name needing escapes", hubHost, "p@x y", "myiothub.azure-devices.net"},
	}
	// The test encoder agrees with net/url on policy names too.
	require.Equal(t, "p%40x%20y", testEncode("p@x y"), "testEncode(policy)")
	lowerHex := regexp.MustCompile(`%[0-9A-Fa-f]?[a-f]`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The hand-written expectation, the test's own encoder and
			// net/url agree on sr.
			require.Equal(t, tt.wantSR, testEncode(tt.resource), "test encoder")
			require.Equal(t, tt.wantSR, strings.ReplaceAll(url.QueryEscape(tt.resource), "+", "%20"), "url.QueryEscape")

			// Expected token, computed independently.
			const se = "1578941692"
			m := hmac.New(sha256.New, mustDecode(t, primaryKey))
			m.Write([]byte(tt.wantSR + "\n" + se))
			sig := base64.StdEncoding.EncodeToString(m.Sum(nil))
			encSig := strings.NewReplacer("+", "%2B", "/", "%2F", "=", "%3D").Replace(sig)
			want := "SharedAccessSignature sr=" + tt.wantSR + "&sig=" + encSig + "&se=" + se
			if tt.keyName != "" {
				want += "&skn=" + testEncode(tt.keyName)
			}

			// Any time zone and sub-second part gives the same se.
			expiry := time.Unix(vectorExpiry, 999_999_999).In(time.FixedZone("X", -7*3600))
			got, err := auth.SignSAS(tt.resource, tt.keyName, primaryKey, expiry)
			require.NoError(t, err)
			require.Equal(t, want, got, "SignSAS")
			assert.False(t, lowerHex.MatchString(got), "token %q has a lower-case %%-escape", got)

			// Fields exactly sr, sig, se, then skn.
			body, ok := strings.CutPrefix(got, "SharedAccessSignature ")
			require.True(t, ok, "token %q lacks the prefix", got)
			var names []string
			values := map[string]string{}
			for _, f := range strings.Split(body, "&") {
				k, v, _ := strings.Cut(f, "=")
				names = append(names, k)
				values[k] = v
			}
			wantNames := "sr,sig,se"
			if tt.keyName != "" {
				wantNames += ",skn"
			}
			assert.Equal(t, wantNames, strings.Join(names, ","), "fields")
			assert.Equal(t, tt.wantSR, values["sr"], "sr")
			assert.Equal(t, encSig, values["sig"], "sig")
			assert.Equal(t, se, values["se"], "se")
		})
	}
}

// TestSignSASSigEscapes checks the vector's signature, which holds '+',
// '/' and '=', is escaped with upper-case %2B, %2F and %3D.
func TestSignSASSigEscapes(t *testing.T) {
	sr := "myiothub.azure-devices.net%2Fdevices%2Fmy_device"
	raw := testSig(t, primaryKey, sr, "1578941692")
	for _, c := range []string{"+", "/", "="} {
		require.Contains(t, raw, c, "precondition: the signature lacks a character to escape; pick another key")
	}
	tok, err := auth.SignSAS(auth.DeviceResource(hubHost, "my_device"), "", primaryKey, time.Unix(vectorExpiry, 0))
	require.NoError(t, err)
	_, after, _ := strings.Cut(tok, "&sig=")
	sig, _, _ := strings.Cut(after, "&")
	for _, esc := range []string{"%2B", "%2F", "%3D"} {
		assert.Contains(t, sig, esc, "sig lacks an escape")
	}
	assert.False(t, strings.ContainsAny(sig, "+/="), "sig %q has an unescaped base64 character", sig)
}

func TestSignSASErrors(t *testing.T) {
	res := auth.DeviceResource(hubHost, "d")
	tests := []struct {
		name     string
		resource string
		key      string
		expiry   time.Time
	}{
		{"empty resource", "", primaryKey, time.Unix(vectorExpiry, 0)},
		{"bad base64 key", res, "not base64!", time.Unix(vectorExpiry, 0)},
		{"empty key", res, "", time.Unix(vectorExpiry, 0)},
		{"key with embedded newline", res, primaryKey[:8] + "\n" + primaryKey[8:], time.Unix(vectorExpiry, 0)},
		{"expiry before 1970", res, primaryKey, time.Unix(-1, 0)},
		{"expiry after year 9999", res, primaryKey, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := auth.SignSAS(tt.resource, "", tt.key, tt.expiry)
			require.Error(t, err, "SignSAS = %q", tok)
			assert.Empty(t, tok, "SignSAS returned a token with its error")
			assert.True(t, strings.HasPrefix(err.Error(), "iothub: "), "error %q lacks the package prefix", err)
		})
	}
	// The boundaries themselves are fine: the token is the one computed
	// independently, and it parses back to its expiry.
	for _, e := range []time.Time{time.Unix(0, 0), time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)} {
		tok, err := auth.SignSAS(res, "", primaryKey, e)
		if !assert.NoError(t, err, "SignSAS(expiry %v)", e) {
			continue
		}
		assert.Equal(t, testToken(t, primaryKey, testEncode(res), strconv.FormatInt(e.Unix(), 10), ""), tok, "SignSAS(expiry %v)", e)
		s, err := auth.ParseSAS(tok)
		if !assert.NoError(t, err, "ParseSAS(SignSAS(expiry %v))", e) {
			continue
		}
		assert.True(t, s.Expiry.Equal(e), "Expiry = %v, want %v", s.Expiry, e)
	}
}

func TestParseSASFields(t *testing.T) {
	tok := testToken(t, primaryKey, "myiothub.azure-devices.net%2Fdevices%2Fdev%231%20%28x%29", "1578941692", "p@x")
	s, err := auth.ParseSAS(tok)
	require.NoError(t, err)
	assert.Equal(t, "myiothub.azure-devices.net/devices/dev#1 (x)", s.Resource, "Resource")
	assert.Equal(t, "p@x", s.KeyName, "KeyName")
	want := time.Unix(vectorExpiry, 0).UTC()
	assert.True(t, s.Expiry.Equal(want) && s.Expiry.Location() == time.UTC, "Expiry = %v, want %v in UTC", s.Expiry, want)
	wantStr := "SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fdev%231%20%28x%29&sig=<redacted>&se=1578941692&skn=p%40x"
	assert.Equal(t, wantStr, s.String(), "String()")

	// A device token has no skn.
	s, err = auth.ParseSAS(testToken(t, primaryKey, "h%2Fdevices%2Fd", "1", ""))
	require.NoError(t, err)
	assert.Empty(t, s.KeyName, "KeyName")
	assert.Equal(t, "SharedAccessSignature sr=h%2Fdevices%2Fd&sig=<redacted>&se=1", s.String(), "String()")
}

// TestParseSASAccepts covers syntax variations the hub accepts (the hub's
// own test of this table also verifies each token).
func TestParseSASAccepts(t *testing.T) {
	const sr = "myiothub.azure-devices.net%2Fdevices%2Fmy_device"
	const se = "1578941692"
	sig := testEncode(testSig(t, primaryKey, sr, se))
	target := auth.DeviceResource(hubHost, "my_device")

	tests := []struct {
		name    string
		token   string
		wantSKN string
	}{
		{"canonical", "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=" + se, ""},
		{"docs order sig, se, sr", "SharedAccessSignature sig=" + sig + "&se=" + se + "&sr=" + sr, ""},
		{"field names case-insensitive", "SharedAccessSignature SR=" + sr + "&Sig=" + sig + "&sE=" + se + "&SKN=owner", "owner"},
		{"unknown fields ignored", "SharedAccessSignature foo=bar&sr=" + sr + "&x=&sig=" + sig + "&se=" + se + "&skn2=y", ""},
		{"empty fields skipped", "SharedAccessSignature &sr=" + sr + "&&sig=" + sig + "&se=" + se + "&", ""},
		{"skn percent-encoded", "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=" + se + "&skn=my%20policy", "my policy"},
		{"tab separator", "SharedAccessSignature\tsr=" + sr + "&sig=" + sig + "&se=" + se, ""},
		{"no-break space separator", "SharedAccessSignature\u00a0sr=" + sr + "&sig=" + sig + "&se=" + se, ""},
		{"em space separator", "SharedAccessSignature\u2003sr=" + sr + "&sig=" + sig + "&se=" + se, ""},
		{"sig with lower-case escapes", "SharedAccessSignature sr=" + sr + "&sig=" + lowerEscapes(sig) + "&se=" + se, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := auth.ParseSAS(tt.token)
			require.NoError(t, err, "ParseSAS(%q)", tt.token)
			assert.Equal(t, target, s.Resource, "Resource")
			assert.Equal(t, tt.wantSKN, s.KeyName, "KeyName")
			assert.Equal(t, int64(vectorExpiry), s.Expiry.Unix(), "Expiry")
		})
	}
}

// lowerEscapes rewrites %XX escapes with lower-case hex digits.
func lowerEscapes(s string) string {
	return regexp.MustCompile(`%[0-9A-F]{2}`).ReplaceAllStringFunc(s, strings.ToLower)
}

func TestParseSASMalformed(t *testing.T) {
	const sr = "h%2Fdevices%2Fd"
	const ok = "sr=" + sr + "&sig=abc%3D&se=100"
	tests := []struct {
		name  string
		token string
	}{
		{"empty", ""},
		{"no prefix", ok},
		{"prefix only", "SharedAccessSignature"},
		{"prefix and space only", "SharedAccessSignature "},
		{"prefix in lower case", "sharedaccesssignature " + ok},
		{"wrong prefix", "SharedAccessSig " + ok},
		{"prefix without space", "SharedAccessSignature" + ok},
		{"leading space", " SharedAccessSignature " + ok},
		{"two spaces", "SharedAccessSignature  " + ok},
		{"trailing space", "SharedAccessSignature " + ok + " "},
		{"trailing newline", "SharedAccessSignature " + ok + "\n"},
		{"three parts", "SharedAccessSignature sr=" + sr + " sig=abc&se=100"},
		{"missing sr", "SharedAccessSignature sig=abc&se=100"},
		{"missing sig", "SharedAccessSignature sr=" + sr + "&se=100"},
		{"missing se", "SharedAccessSignature sr=" + sr + "&sig=abc"},
		{"empty sr", "SharedAccessSignature sr=&sig=abc&se=100"},
		{"empty sig", "SharedAccessSignature sr=" + sr + "&sig=&se=100"},
		{"empty se", "SharedAccessSignature sr=" + sr + "&sig=abc&se="},
		{"empty skn", "SharedAccessSignature " + ok + "&skn="},
		{"duplicate sr", "SharedAccessSignature " + ok + "&sr=" + sr},
		{"duplicate sig", "SharedAccessSignature " + ok + "&sig=abc"},
		{"duplicate se", "SharedAccessSignature " + ok + "&se=100"},
		{"duplicate skn", "SharedAccessSignature " + ok + "&skn=a&skn=a"},
		{"duplicate in other case", "SharedAccessSignature " + ok + "&SR=" + sr},
		{"field without '='", "SharedAccessSignature " + ok + "&junk"},
		{"negative se", "SharedAccessSignature sr=" + sr + "&sig=abc&se=-1"},
		{"non-numeric se", "SharedAccessSignature sr=" + sr + "&sig=abc&se=soon"},
		{"fractional se", "SharedAccessSignature sr=" + sr + "&sig=abc&se=1.5"},
		{"signed se", "SharedAccessSignature sr=" + sr + "&sig=abc&se=+100"},
		{"hex se", "SharedAccessSignature sr=" + sr + "&sig=abc&se=0x10"},
		{"se overflows int64", "SharedAccessSignature sr=" + sr + "&sig=abc&se=99999999999999999999"},
		{"se after year 9999", "SharedAccessSignature sr=" + sr + "&sig=abc&se=253402300800"},
		{"bad % in sr", "SharedAccessSignature sr=h%2Fdevices%zz&sig=abc&se=100"},
		{"truncated % in sr", "SharedAccessSignature sr=h%2&sig=abc&se=100"},
		{"bad % in sig", "SharedAccessSignature sr=" + sr + "&sig=ab%G0&se=100"},
		{"bad % in skn", "SharedAccessSignature " + ok + "&skn=a%"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := auth.ParseSAS(tt.token)
			require.Error(t, err, "ParseSAS(%q) = %v", tt.token, s)
			assert.Nil(t, s, "ParseSAS returned a token with its error")
			require.ErrorIs(t, err, auth.ErrInvalidSAS)
			assert.True(t, strings.HasPrefix(err.Error(), "iothub: "), "error %q lacks the package prefix", err)
		})
	}
}

func TestParseSASLatestExpiry(t *testing.T) {
	// 9999-12-31T23:59:59Z is the last second the hub can represent.
	s, err := auth.ParseSAS("SharedAccessSignature sr=h&sig=abc&se=253402300799")
	require.NoError(t, err)
	assert.Equal(t, 9999, s.Expiry.Year(), "Expiry year")
	assert.True(t, s.Expiry.After(time.Now()), "Expiry %v is not in the future", s.Expiry)
}
