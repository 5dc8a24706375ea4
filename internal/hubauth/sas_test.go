package hubauth_test

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hubauth"
)

// TestParseSASAccepts covers syntax variations the hub accepts; each token
// must also verify.
func TestParseSASAccepts(t *testing.T) {
	const sr = "myiothub.azure-devices.net%2Fdevices%2Fmy_device"
	const se = "1578941692"
	sig := testEncode(testSig(t, primaryKey, sr, se))
	target := auth.DeviceResource(hubHost, "my_device")
	now := time.Unix(vectorExpiry, 0)

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
			s, err := hubauth.ParseSAS(tt.token)
			require.NoError(t, err, "ParseSAS(%q)", tt.token)
			assert.Equal(t, target, s.Resource, "Resource")
			assert.Equal(t, tt.wantSKN, s.KeyName, "KeyName")
			assert.NoError(t, s.Verify(target, now, primaryKey, ""), "Verify")
		})
	}
}

// lowerEscapes rewrites %XX escapes with lower-case hex digits.
func lowerEscapes(s string) string {
	return regexp.MustCompile(`%[0-9A-F]{2}`).ReplaceAllStringFunc(s, strings.ToLower)
}

// TestParseSASSameAsAuth: hubauth.ParseSAS accepts and refuses exactly what
// auth.ParseSAS does, with the same fields and errors.
func TestParseSASSameAsAuth(t *testing.T) {
	for _, tok := range []string{
		testToken(t, primaryKey, "myiothub.azure-devices.net%2Fdevices%2Fdev%231%20%28x%29", "1578941692", "p@x"),
		"SharedAccessSignature SR=a&Sig=b&SE=1&skn=p%40x&foo=bar",
		"SharedAccessSignature sr=h&sig=abc&se=253402300799",
		"",
		"SharedAccessSignature  sr=a&sig=b&se=1",
		"SharedAccessSignature sr=a&sig=b",
		"SharedAccessSignature sr=a&sig=b&se=1&sr=a",
		"SharedAccessSignature sr=a&sig=ab%G0&se=1",
		"SharedAccessSignature sr=a&sig=b&se=253402300800",
	} {
		want, wantErr := auth.ParseSAS(tok)
		got, err := hubauth.ParseSAS(tok)
		if wantErr != nil {
			require.Error(t, err, "hubauth.ParseSAS(%q) accepts what auth.ParseSAS refuses", tok)
			assert.Nil(t, got, "ParseSAS(%q) returned a token with its error", tok)
			assert.ErrorIs(t, err, auth.ErrInvalidSAS)
			assert.Equal(t, wantErr.Error(), err.Error(), "error of ParseSAS(%q)", tok)
			continue
		}
		require.NoError(t, err, "hubauth.ParseSAS(%q) refuses what auth.ParseSAS accepts", tok)
		assert.Equal(t, *want, got.SAS, "parsed fields of %q", tok)
	}
}

func TestCheckExpiryLatest(t *testing.T) {
	// 9999-12-31T23:59:59Z is the last second the hub can represent.
	s, err := hubauth.ParseSAS("SharedAccessSignature sr=h&sig=abc&se=253402300799")
	require.NoError(t, err)
	assert.NoError(t, s.CheckExpiry(time.Now()), "CheckExpiry")
}

// TestSignSASVerifies: tokens auth.SignSAS makes at the edges of the expiry
// range verify.
func TestSignSASVerifies(t *testing.T) {
	res := auth.DeviceResource(hubHost, "d")
	for _, e := range []time.Time{time.Unix(0, 0), time.Unix(vectorExpiry, 0), time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)} {
		tok, err := auth.SignSAS(res, "", primaryKey, e)
		require.NoError(t, err, "SignSAS(expiry %v)", e)
		s, err := hubauth.ParseSAS(tok)
		require.NoError(t, err, "ParseSAS(SignSAS(expiry %v))", e)
		assert.NoError(t, s.Verify(res, e, primaryKey, ""), "Verify(expiry %v)", e)
	}
}

// TestVerifyRawSR: the signature covers sr exactly as sent, even with
// lower-case escapes, and a re-encoded sr does not verify.
func TestVerifyRawSR(t *testing.T) {
	const lowerSR = "myiothub.azure-devices.net%2fdevices%2fmy_device"
	const upperSR = "myiothub.azure-devices.net%2Fdevices%2Fmy_device"
	target := auth.DeviceResource(hubHost, "my_device")
	now := time.Unix(vectorExpiry, 0)

	s, err := hubauth.ParseSAS(testToken(t, primaryKey, lowerSR, "1578941692", ""))
	require.NoError(t, err)
	assert.Equal(t, target, s.Resource, "Resource")
	assert.NoError(t, s.Verify(target, now, primaryKey, ""), "token signed over raw lower-case sr")
	assert.Contains(t, s.String(), "sr="+lowerSR+"&", "String() does not keep the raw sr")

	// Signed over the upper-case form but sent with lower-case escapes.
	sig := testEncode(testSig(t, primaryKey, upperSR, "1578941692"))
	s, err = hubauth.ParseSAS("SharedAccessSignature sr=" + lowerSR + "&sig=" + sig + "&se=1578941692")
	require.NoError(t, err)
	require.ErrorIs(t, s.Verify(target, now, primaryKey, ""), hubauth.ErrSASSignature)
}

func TestVerifyKeys(t *testing.T) {
	target := auth.DeviceResource(hubHost, "dev1")
	sr := testEncode(target)
	now := time.Unix(vectorExpiry, 0)
	tests := []struct {
		name       string
		signedWith string
		primary    string
		secondary  string
		wantErr    error
	}{
		{"primary", primaryKey, primaryKey, secondaryKey, nil},
		{"secondary", secondaryKey, primaryKey, secondaryKey, nil},
		{"secondary only configured", secondaryKey, "", secondaryKey, nil},
		{"primary only configured", primaryKey, primaryKey, "", nil},
		{"neither", otherKey, primaryKey, secondaryKey, hubauth.ErrSASSignature},
		{"secondary when only primary configured", secondaryKey, primaryKey, "", hubauth.ErrSASSignature},
		{"no keys configured", primaryKey, "", "", hubauth.ErrSASSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := hubauth.ParseSAS(testToken(t, tt.signedWith, sr, "1578941692", ""))
			require.NoError(t, err)
			err = s.Verify(target, now, tt.primary, tt.secondary)
			if tt.wantErr == nil {
				require.NoError(t, err, "Verify")
				return
			}
			require.ErrorIs(t, err, tt.wantErr)
		})
	}

	s, err := hubauth.ParseSAS(testToken(t, primaryKey, sr, "1578941692", ""))
	require.NoError(t, err)
	assert.NoError(t, s.CheckSignature(otherKey, secondaryKey, primaryKey), "CheckSignature with the key third")
	assert.ErrorIs(t, s.CheckSignature(), hubauth.ErrSASSignature)
	assert.Error(t, s.CheckSignature("not base64!"), "CheckSignature with a bad key")
}

func TestVerifyClockSkew(t *testing.T) {
	target := auth.DeviceResource(hubHost, "dev1")
	se := time.Unix(vectorExpiry, 0)
	s, err := hubauth.ParseSAS(testToken(t, primaryKey, testEncode(target), strconv.FormatInt(vectorExpiry, 10), ""))
	require.NoError(t, err)
	tests := []struct {
		name    string
		now     time.Time
		expired bool
	}{
		{"an hour before expiry", se.Add(-time.Hour), false},
		{"at expiry", se, false},
		{"expired 4 minutes ago", se.Add(4 * time.Minute), false},
		{"expired exactly 5 minutes ago", se.Add(hubauth.MaxClockSkew), false},
		{"expired 5 minutes and 1 second ago", se.Add(hubauth.MaxClockSkew + time.Second), true},
		{"expired 6 minutes ago", se.Add(6 * time.Minute), true},
		{"expired a year ago", se.AddDate(1, 0, 0), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errV := s.Verify(target, tt.now, primaryKey, "")
			errC := s.CheckExpiry(tt.now)
			if !tt.expired {
				assert.NoError(t, errV, "Verify")
				assert.NoError(t, errC, "CheckExpiry")
				return
			}
			assert.ErrorIs(t, errV, auth.ErrSASExpired, "Verify")
			assert.ErrorIs(t, errC, auth.ErrSASExpired, "CheckExpiry")
		})
	}
	assert.Equal(t, 5*time.Minute, hubauth.MaxClockSkew, "MaxClockSkew")
}

func TestCovers(t *testing.T) {
	tests := []struct {
		resource string
		target   string
		want     bool
	}{
		{"h", "h", true},
		{"h", "h/devices/dev1", true},
		{"h/devices", "h/devices/dev1", true},
		{"h/devices", "h/devices/dev1/modules/m1", true},
		{"h/devices/", "h/devices/dev1", true},
		{"h/devices/dev1", "h/devices/dev1", true},
		{"h/devices/dev1", "h/devices/dev1/", true},
		{"h/devices/dev1", "h/devices/dev1/modules/m1", true},
		{"h/devices/dev1", "h/devices/dev10", false},
		{"h/devices/dev1", "h/devices/dev", false},
		{"h/devices/dev1", "h/devices", false},
		{"h/devices/dev1", "h", false},
		{"h/devices/dev1", "h/devices/dev2", false},
		{"h/devices/dev1/modules/m1", "h/devices/dev1", false},
		{"h/devices/dev1/modules/m1", "h/devices/dev1/modules/m10", false},
		{"h", "h2/devices/dev1", false},
		{"h", "hub.example", false},
		{"H/Devices/DEV1", "h/devices/dev1", true},
		{"h/devices/dev1", "H/DEVICES/Dev1/modules/m", true},
		{"h/devices/dev#1 (x)", "h/devices/dev#1 (x)", true},
	}
	for _, tt := range tests {
		t.Run(tt.resource+" covers "+tt.target, func(t *testing.T) {
			s, err := hubauth.ParseSAS(testToken(t, primaryKey, testEncode(tt.resource), "4102444800", ""))
			require.NoError(t, err)
			assert.Equal(t, tt.want, s.Covers(tt.target), "Covers")
			err = s.Verify(tt.target, time.Unix(4102444800, 0), primaryKey, "")
			if tt.want {
				assert.NoError(t, err, "Verify")
			} else {
				assert.ErrorIs(t, err, hubauth.ErrSASResource, "Verify")
			}
		})
	}
}

func TestVerifyTampered(t *testing.T) {
	target := auth.DeviceResource(hubHost, "dev1")
	sr := testEncode(target)
	const se = "1578941692"
	sig := testEncode(testSig(t, primaryKey, sr, se))
	rawSig := testSig(t, primaryKey, sr, se)
	now := time.Unix(vectorExpiry, 0)
	flipped := []byte(sig)
	if flipped[0] == 'A' {
		flipped[0] = 'B'
	} else {
		flipped[0] = 'A'
	}

	tests := []struct {
		name    string
		token   string
		target  string
		wantErr error
	}{
		{"untouched", "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=" + se, target, nil},
		{"se extended", "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=1578941693", target, hubauth.ErrSASSignature},
		{"se shortened", "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=1578941600", target, hubauth.ErrSASSignature},
		{"se with leading zero", "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=0" + se, target, hubauth.ErrSASSignature},
		{"sr widened to all devices", "SharedAccessSignature sr=" + testEncode(hubHost+"/devices") + "&sig=" + sig + "&se=" + se, target, hubauth.ErrSASSignature},
		{"sr moved to another device", "SharedAccessSignature sr=" + testEncode(hubHost+"/devices/dev2") + "&sig=" + sig + "&se=" + se, auth.DeviceResource(hubHost, "dev2"), hubauth.ErrSASSignature},
		{"sr case changed", "SharedAccessSignature sr=" + strings.ToUpper(sr) + "&sig=" + sig + "&se=" + se, target, hubauth.ErrSASSignature},
		{"sig changed", "SharedAccessSignature sr=" + sr + "&sig=" + string(flipped) + "&se=" + se, target, hubauth.ErrSASSignature},
		{"sig truncated", "SharedAccessSignature sr=" + sr + "&sig=" + sig[:len(sig)-3] + "&se=" + se, target, hubauth.ErrSASSignature},
		{"sig not URL-encoded ('+' decodes to space)", "SharedAccessSignature sr=" + sr + "&sig=" + rawSig + "&se=" + se, target, hubauth.ErrSASSignature},
		{"presented for another device", "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=" + se, auth.DeviceResource(hubHost, "dev2"), hubauth.ErrSASResource},
		{"presented for a module of another device", "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=" + se, auth.ModuleResource(hubHost, "dev10", "m"), hubauth.ErrSASResource},
		{"presented for another hub", "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=" + se, auth.DeviceResource("otherhub.azure-devices.net", "dev1"), hubauth.ErrSASResource},
		{"presented for the whole hub", "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=" + se, hubHost, hubauth.ErrSASResource},
	}
	require.Contains(t, rawSig, "+", "precondition: the raw signature should contain '+'")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := hubauth.ParseSAS(tt.token)
			require.NoError(t, err, "ParseSAS")
			err = s.Verify(tt.target, now, primaryKey, secondaryKey)
			if tt.wantErr == nil {
				require.NoError(t, err, "Verify")
				return
			}
			require.ErrorIs(t, err, tt.wantErr)
		})
	}
}

// TestVerifyOrder: the hub checks expiry, then resource, then signature.
func TestVerifyOrder(t *testing.T) {
	target := auth.DeviceResource(hubHost, "dev1")
	s, err := hubauth.ParseSAS(testToken(t, otherKey, testEncode(target), "1000", ""))
	require.NoError(t, err)
	late := time.Unix(1000, 0).Add(time.Hour)
	require.ErrorIs(t, s.Verify(auth.DeviceResource(hubHost, "dev2"), late, primaryKey, ""), auth.ErrSASExpired)
	early := time.Unix(1000, 0)
	err = s.Verify(auth.DeviceResource(hubHost, "dev2"), early, primaryKey, "")
	require.ErrorIs(t, err, hubauth.ErrSASResource)
	err = s.Verify(target, early, primaryKey, "")
	require.ErrorIs(t, err, hubauth.ErrSASSignature)
	for _, e := range []error{auth.ErrSASExpired, hubauth.ErrSASResource, auth.ErrInvalidSAS} {
		assert.NotErrorIs(t, err, e, "the signature error also matches another sentinel")
	}
}
