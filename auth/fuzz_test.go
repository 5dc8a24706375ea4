package auth_test

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
)

func FuzzParseConnectionString(f *testing.F) {
	sas := testToken(f, primaryKey, testEncode(auth.DeviceResource(devHost, "dev1")), "4102444800", "")
	hubSAS := testToken(f, primaryKey, testEncode(devHost), "4102444800", "iothubowner")
	for _, s := range []string{
		// valid device / module strings
		"HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=" + primaryKey,
		"HostName=myhub.azure-devices.net;DeviceId=dev1;ModuleId=mod1;SharedAccessKey=" + primaryKey,
		"HostName=myhub.azure-devices.net;DeviceId=dev1;x509=true",
		"hostname=myhub.azure-devices.net;deviceid=dev1;X509Cert=TRUE;GatewayHostName=localhost:8883",
		"HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessSignature=" + sas,
		"HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKeyName=iothubowner;SharedAccessSignature=" + hubSAS,
		"HostName=myhub.azure-devices.net;DeviceId=" + allIDChars + ";SharedAccessKey=" + otherKey + ";GatewayHostName=[::1]:1;",
		// valid service strings
		"HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + primaryKey,
		"HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessSignature=" + hubSAS,
		"HostName=myhub.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=" + primaryKey + ";GatewayHostName=127.0.0.1:8443",
		// invalid
		"",
		";;;",
		"HostName",
		"HostName=myhub.azure-devices.net:8883;DeviceId=dev1;x509=true",
		"HostName=h;DeviceId=dev1;SharedAccessKey=not*base64",
		"HostName=h;DeviceId=dev1;SharedAccessKey=" + primaryKey + ";x509=true",
		"HostName=h;DeviceId=dev/1;x509=true",
		"HostName=h;DeviceId=dev1;x509=maybe",
		"HostName=h;DeviceId=dev1;DeviceId=dev2;x509=true",
		"HostName=h;DeviceId=dev1;x509=true;GatewayHostName=gw:99999",
		"HostName=h;DeviceId=dev2;SharedAccessSignature=" + sas,
		"HostName=h;SharedAccessKey=" + primaryKey,
		"HostName=h;DeviceId=;x509=true",
		"HostName=h;Foo=bar;DeviceId=d;x509=true",
		"HostName=h;SharedAccessKey=AAAA\n;DeviceId=d",
	} {
		f.Add(s)
	}
	parsers := []struct {
		name  string
		parse func(string) (auth.ConnectionString, error)
	}{
		{"device", auth.ParseDeviceConnectionString},
		{"service", auth.ParseServiceConnectionString},
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, p := range parsers {
			c, err := p.parse(s)
			if err != nil {
				require.ErrorIs(t, err, auth.ErrInvalidConnectionString, p.name)
				require.True(t, strings.HasPrefix(err.Error(), "iothub: "), "%s: error %q lacks the package prefix", p.name, err)
				require.Equal(t, auth.ConnectionString{}, c, "%s: failed parse returned a non-zero value", p.name)
				continue
			}
			require.NotEmpty(t, c.HostName, "%s: parsed without a HostName", p.name)
			again, err := p.parse(c.Reveal())
			require.NoError(t, err, "%s: re-parse of Reveal() %q", p.name, c.Reveal())
			require.Equal(t, c, again, "%s: Reveal round trip", p.name)
			checkRedacted(t, c)
		}
	})
}

// checkRedacted verifies String, %v and %#v of a parsed connection string
// are Reveal() with exactly the secret values replaced. No parsed value can
// contain ';', so the pairs split cleanly.
func checkRedacted(t *testing.T, c auth.ConnectionString) {
	t.Helper()
	var pairs []string
	for _, pair := range strings.Split(c.Reveal(), ";") {
		k, _, _ := strings.Cut(pair, "=")
		if k == "SharedAccessKey" || k == "SharedAccessSignature" {
			pair = k + "=<redacted>"
		}
		pairs = append(pairs, pair)
	}
	want := strings.Join(pairs, ";")
	require.Equal(t, want, c.String(), "String()")
	require.Equal(t, want+"|"+want, fmt.Sprintf("%v|%+v", c, c), "%v|%+v output")
	checkGoStringWraps(t, fmt.Sprintf("%#v", c), want)
	for _, secret := range []string{c.SharedAccessKey, c.SharedAccessSignature} {
		if secret != "" && !strings.Contains(want, secret) {
			require.NotContains(t, c.String(), secret, "String() shows a secret")
		}
	}
}

// checkGoStringWraps asserts that a %#v output is the quoted redacted text
// plus a short constant wrapper, so no secret can hide in it.
func checkGoStringWraps(t *testing.T, gs, redacted string) {
	t.Helper()
	q := strconv.Quote(redacted)
	q = q[1 : len(q)-1]
	i := strings.Index(gs, q)
	require.GreaterOrEqual(t, i, 0, "%%#v = %q does not show the redacted form %q", gs, redacted)
	rest := gs[:i] + gs[i+len(q):]
	require.LessOrEqual(t, len(rest), 32, "%%#v = %q carries %q besides the redacted form", gs, rest)
}

func FuzzParseSAS(f *testing.F) {
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
		{"sr=a&sig=b&se=1", "h", -1},
		{"SharedAccessSignature  sr=a&sig=b&se=1", "h", 253402300800},
		{"SharedAccessSignature sr=a&sig=b", "h", -1 << 63},
		{"SharedAccessSignature sr=a&sig=b&se=1&sr=a", "h", 1<<63 - 1},
		{"SharedAccessSignature sr=a&sig=b&se=-1", "h", 5},
		{"SharedAccessSignature sr=%zz&sig=b&se=1", "%zz", 5},
		{"SharedAccessSignature sr=a&sig=b&se=99999999999999999999", "h", 5},
		{"SharedAccessSignature sr=a&sig=b&se=1&skn=", "h", 5},
		{"SharedAccessSignature sr=a&sig=b&se=1 x", "h", 5},
	} {
		f.Add(seed.token, seed.resource, seed.expiry)
	}
	f.Fuzz(func(t *testing.T, token, resource string, expiry int64) {
		s, err := auth.ParseSAS(token)
		if err != nil {
			require.ErrorIs(t, err, auth.ErrInvalidSAS)
			require.True(t, strings.HasPrefix(err.Error(), "iothub: "), "error %q lacks the package prefix", err)
			require.Nil(t, s, "ParseSAS returned a token with its error")
		} else {
			checkSASRedacted(t, token, s)
		}

		// A token SignSAS makes for the fuzzed resource and expiry parses
		// back to them, and is the token computed independently. (The
		// hub's FuzzVerifySAS, in internal/hubauth, verifies it.)
		e := time.Unix(expiry, 0)
		skn := "p" + strings.ToLower(resource)
		tok, err := auth.SignSAS(resource, skn, primaryKey, e)
		if err != nil {
			require.False(t, resource != "" && expiry >= 0 && expiry <= 253402300799, "SignSAS(%q, %d): %v", resource, expiry, err)
			return
		}
		require.False(t, resource == "" || expiry < 0 || expiry > 253402300799, "SignSAS(%q, %d) = %q, want an error", resource, expiry, tok)
		require.Equal(t, testToken(t, primaryKey, testEncode(resource), strconv.FormatInt(expiry, 10), skn), tok, "SignSAS(%q, %d)", resource, expiry)
		s, err = auth.ParseSAS(tok)
		require.NoError(t, err, "ParseSAS(SignSAS(%q, %d) = %q)", resource, expiry, tok)
		require.Equal(t, resource, s.Resource, "round trip: resource")
		require.Equal(t, expiry, s.Expiry.Unix(), "round trip: expiry")
		require.Equal(t, skn, s.KeyName, "round trip: skn")
	})
}

// checkSASRedacted rebuilds the expected String() of a parsed token from its
// text, independently of the package: sr and se raw, sig redacted, skn
// re-encoded.
func checkSASRedacted(t *testing.T, token string, s *auth.SAS) {
	t.Helper()
	i := strings.IndexFunc(token, unicode.IsSpace)
	_, w := utf8.DecodeRuneInString(token[i:])
	var sr, se, skn, sig string
	for _, field := range strings.Split(token[i+w:], "&") {
		k, v, _ := strings.Cut(field, "=")
		switch strings.ToLower(k) {
		case "sr":
			sr = v
		case "se":
			se = v
		case "sig":
			sig = v
		case "skn":
			d, err := url.QueryUnescape(v)
			require.NoError(t, err, "accepted skn %q that does not unescape", v)
			skn = d
		}
	}
	want := "SharedAccessSignature sr=" + sr + "&sig=<redacted>&se=" + se
	if skn != "" {
		want += "&skn=" + testEncode(skn)
	}
	require.Equal(t, want, s.String(), "String()")
	require.Equal(t, want+"|"+want, fmt.Sprintf("%v|%+v", s, s), "%v|%+v output")
	checkGoStringWraps(t, fmt.Sprintf("%#v", s), want)
	decSig, _ := url.QueryUnescape(sig)
	for _, secret := range []string{sig, decSig} {
		if secret != "" && !strings.Contains(want, secret) {
			require.NotContains(t, s.String(), secret, "String() shows the signature")
		}
	}
}
