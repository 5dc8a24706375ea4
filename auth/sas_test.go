package auth_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iothub-go/iothub/auth"
)

func TestResources(t *testing.T) {
	if got, want := auth.DeviceResource(hubHost, "my_device"), "myiothub.azure-devices.net/devices/my_device"; got != want {
		t.Errorf("DeviceResource = %q, want %q", got, want)
	}
	if got, want := auth.ModuleResource(hubHost, "my_device", "m1"), "myiothub.azure-devices.net/devices/my_device/modules/m1"; got != want {
		t.Errorf("ModuleResource = %q, want %q", got, want)
	}
}

// TestSignSASVector pins the protocol.md §2.2 vector shape to a literal
// token, computed outside the package.
func TestSignSASVector(t *testing.T) {
	got, err := auth.SignSAS(auth.DeviceResource(hubHost, "my_device"), "", primaryKey, time.Unix(vectorExpiry, 0))
	if err != nil {
		t.Fatal(err)
	}
	const want = "SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device" +
		"&sig=FKtjLzE%2FvYEYCjrUKInBemmf7qXk%2B0v%2BSPHMB6HhppA%3D&se=1578941692"
	if got != want {
		t.Fatalf("SignSAS =\n%s\nwant\n%s", got, want)
	}
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
	if got, want := testEncode("p@x y"), "p%40x%20y"; got != want {
		t.Fatalf("testEncode(policy) = %q, want %q", got, want)
	}
	lowerHex := regexp.MustCompile(`%[0-9A-Fa-f]?[a-f]`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The hand-written expectation, the test's own encoder and
			// net/url agree on sr.
			if got := testEncode(tt.resource); got != tt.wantSR {
				t.Fatalf("test encoder: %q, want %q", got, tt.wantSR)
			}
			if got := strings.ReplaceAll(url.QueryEscape(tt.resource), "+", "%20"); got != tt.wantSR {
				t.Fatalf("url.QueryEscape: %q, want %q", got, tt.wantSR)
			}

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
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("SignSAS =\n%s\nwant\n%s", got, want)
			}
			if lowerHex.MatchString(got) {
				t.Errorf("token %q has a lower-case %%-escape", got)
			}

			// Fields exactly sr, sig, se, then skn.
			body, ok := strings.CutPrefix(got, "SharedAccessSignature ")
			if !ok {
				t.Fatalf("token %q lacks the prefix", got)
			}
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
			if got := strings.Join(names, ","); got != wantNames {
				t.Errorf("fields %s, want %s", got, wantNames)
			}
			if values["sr"] != tt.wantSR {
				t.Errorf("sr = %q, want %q", values["sr"], tt.wantSR)
			}
			if values["sig"] != encSig {
				t.Errorf("sig = %q, want %q", values["sig"], encSig)
			}
			if values["se"] != se {
				t.Errorf("se = %q, want %q", values["se"], se)
			}
		})
	}
}

// TestSignSASSigEscapes checks the vector's signature, which holds '+',
// '/' and '=', is escaped with upper-case %2B, %2F and %3D.
func TestSignSASSigEscapes(t *testing.T) {
	sr := "myiothub.azure-devices.net%2Fdevices%2Fmy_device"
	raw := testSig(t, primaryKey, sr, "1578941692")
	for _, c := range []string{"+", "/", "="} {
		if !strings.Contains(raw, c) {
			t.Fatalf("precondition: signature %q has no %q; pick another key", raw, c)
		}
	}
	tok, err := auth.SignSAS(auth.DeviceResource(hubHost, "my_device"), "", primaryKey, time.Unix(vectorExpiry, 0))
	if err != nil {
		t.Fatal(err)
	}
	_, after, _ := strings.Cut(tok, "&sig=")
	sig, _, _ := strings.Cut(after, "&")
	for _, esc := range []string{"%2B", "%2F", "%3D"} {
		if !strings.Contains(sig, esc) {
			t.Errorf("sig %q lacks %s", sig, esc)
		}
	}
	if strings.ContainsAny(sig, "+/=") {
		t.Errorf("sig %q has an unescaped base64 character", sig)
	}
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
			if err == nil {
				t.Fatalf("SignSAS = %q, want an error", tok)
			}
			if tok != "" {
				t.Errorf("SignSAS returned %q with its error", tok)
			}
			if !strings.HasPrefix(err.Error(), "iothub: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
	// The boundaries themselves are fine.
	for _, e := range []time.Time{time.Unix(0, 0), time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)} {
		tok, err := auth.SignSAS(res, "", primaryKey, e)
		if err != nil {
			t.Errorf("SignSAS(expiry %v): %v", e, err)
			continue
		}
		s, err := auth.ParseSAS(tok)
		if err != nil {
			t.Errorf("ParseSAS(SignSAS(expiry %v)): %v", e, err)
			continue
		}
		if err := s.Verify(res, e, primaryKey, ""); err != nil {
			t.Errorf("Verify(expiry %v): %v", e, err)
		}
	}
}

func TestParseSASFields(t *testing.T) {
	tok := testToken(t, primaryKey, "myiothub.azure-devices.net%2Fdevices%2Fdev%231%20%28x%29", "1578941692", "p@x")
	s, err := auth.ParseSAS(tok)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.Resource, "myiothub.azure-devices.net/devices/dev#1 (x)"; got != want {
		t.Errorf("Resource = %q, want %q", got, want)
	}
	if got, want := s.KeyName, "p@x"; got != want {
		t.Errorf("KeyName = %q, want %q", got, want)
	}
	if want := time.Unix(vectorExpiry, 0).UTC(); !s.Expiry.Equal(want) || s.Expiry.Location() != time.UTC {
		t.Errorf("Expiry = %v, want %v in UTC", s.Expiry, want)
	}
	wantStr := "SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fdev%231%20%28x%29&sig=<redacted>&se=1578941692&skn=p%40x"
	if got := s.String(); got != wantStr {
		t.Errorf("String() = %q, want %q", got, wantStr)
	}

	// A device token has no skn.
	s, err = auth.ParseSAS(testToken(t, primaryKey, "h%2Fdevices%2Fd", "1", ""))
	if err != nil {
		t.Fatal(err)
	}
	if s.KeyName != "" {
		t.Errorf("KeyName = %q, want empty", s.KeyName)
	}
	if got, want := s.String(), "SharedAccessSignature sr=h%2Fdevices%2Fd&sig=<redacted>&se=1"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

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
			s, err := auth.ParseSAS(tt.token)
			if err != nil {
				t.Fatalf("ParseSAS(%q): %v", tt.token, err)
			}
			if s.Resource != target {
				t.Errorf("Resource = %q, want %q", s.Resource, target)
			}
			if s.KeyName != tt.wantSKN {
				t.Errorf("KeyName = %q, want %q", s.KeyName, tt.wantSKN)
			}
			if err := s.Verify(target, now, primaryKey, ""); err != nil {
				t.Errorf("Verify: %v", err)
			}
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
			if err == nil {
				t.Fatalf("ParseSAS(%q) = %v, want an error", tt.token, s)
			}
			if s != nil {
				t.Errorf("ParseSAS returned %v with its error", s)
			}
			wantErrIs(t, err, auth.ErrInvalidSAS)
			if !strings.HasPrefix(err.Error(), "iothub: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestParseSASLatestExpiry(t *testing.T) {
	// 9999-12-31T23:59:59Z is the last second the hub can represent.
	s, err := auth.ParseSAS("SharedAccessSignature sr=h&sig=abc&se=253402300799")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Expiry.Year(); got != 9999 {
		t.Errorf("Expiry year = %d, want 9999", got)
	}
	if err := s.CheckExpiry(time.Now()); err != nil {
		t.Errorf("CheckExpiry: %v", err)
	}
}

// TestVerifyRawSR: the signature covers sr exactly as sent, even with
// lower-case escapes, and a re-encoded sr does not verify.
func TestVerifyRawSR(t *testing.T) {
	const lowerSR = "myiothub.azure-devices.net%2fdevices%2fmy_device"
	const upperSR = "myiothub.azure-devices.net%2Fdevices%2Fmy_device"
	target := auth.DeviceResource(hubHost, "my_device")
	now := time.Unix(vectorExpiry, 0)

	s, err := auth.ParseSAS(testToken(t, primaryKey, lowerSR, "1578941692", ""))
	if err != nil {
		t.Fatal(err)
	}
	if s.Resource != target {
		t.Errorf("Resource = %q, want %q", s.Resource, target)
	}
	if err := s.Verify(target, now, primaryKey, ""); err != nil {
		t.Errorf("token signed over raw lower-case sr: %v", err)
	}
	if !strings.Contains(s.String(), "sr="+lowerSR+"&") {
		t.Errorf("String() = %q does not keep the raw sr", s.String())
	}

	// Signed over the upper-case form but sent with lower-case escapes.
	sig := testEncode(testSig(t, primaryKey, upperSR, "1578941692"))
	s, err = auth.ParseSAS("SharedAccessSignature sr=" + lowerSR + "&sig=" + sig + "&se=1578941692")
	if err != nil {
		t.Fatal(err)
	}
	wantErrIs(t, s.Verify(target, now, primaryKey, ""), auth.ErrSASSignature)
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
		{"neither", otherKey, primaryKey, secondaryKey, auth.ErrSASSignature},
		{"secondary when only primary configured", secondaryKey, primaryKey, "", auth.ErrSASSignature},
		{"no keys configured", primaryKey, "", "", auth.ErrSASSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := auth.ParseSAS(testToken(t, tt.signedWith, sr, "1578941692", ""))
			if err != nil {
				t.Fatal(err)
			}
			err = s.Verify(target, now, tt.primary, tt.secondary)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			wantErrIs(t, err, tt.wantErr)
		})
	}

	s, err := auth.ParseSAS(testToken(t, primaryKey, sr, "1578941692", ""))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CheckSignature(otherKey, secondaryKey, primaryKey); err != nil {
		t.Errorf("CheckSignature with the key third: %v", err)
	}
	wantErrIs(t, s.CheckSignature(), auth.ErrSASSignature)
	if err := s.CheckSignature("not base64!"); err == nil {
		t.Error("CheckSignature with a bad key: no error")
	}
}

func TestVerifyClockSkew(t *testing.T) {
	target := auth.DeviceResource(hubHost, "dev1")
	se := time.Unix(vectorExpiry, 0)
	s, err := auth.ParseSAS(testToken(t, primaryKey, testEncode(target), strconv.FormatInt(vectorExpiry, 10), ""))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		now     time.Time
		expired bool
	}{
		{"an hour before expiry", se.Add(-time.Hour), false},
		{"at expiry", se, false},
		{"expired 4 minutes ago", se.Add(4 * time.Minute), false},
		{"expired exactly 5 minutes ago", se.Add(auth.MaxClockSkew), false},
		{"expired 5 minutes and 1 second ago", se.Add(auth.MaxClockSkew + time.Second), true},
		{"expired 6 minutes ago", se.Add(6 * time.Minute), true},
		{"expired a year ago", se.AddDate(1, 0, 0), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errV := s.Verify(target, tt.now, primaryKey, "")
			errC := s.CheckExpiry(tt.now)
			if !tt.expired {
				if errV != nil || errC != nil {
					t.Fatalf("Verify: %v, CheckExpiry: %v; want nil", errV, errC)
				}
				return
			}
			wantErrIs(t, errV, auth.ErrSASExpired)
			wantErrIs(t, errC, auth.ErrSASExpired)
		})
	}
	if auth.MaxClockSkew != 5*time.Minute {
		t.Errorf("MaxClockSkew = %v, want 5m", auth.MaxClockSkew)
	}
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
			s, err := auth.ParseSAS(testToken(t, primaryKey, testEncode(tt.resource), "4102444800", ""))
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Covers(tt.target); got != tt.want {
				t.Errorf("Covers = %v, want %v", got, tt.want)
			}
			err = s.Verify(tt.target, time.Unix(4102444800, 0), primaryKey, "")
			if tt.want {
				if err != nil {
					t.Errorf("Verify: %v", err)
				}
			} else {
				wantErrIs(t, err, auth.ErrSASResource)
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
		{"se extended", "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=1578941693", target, auth.ErrSASSignature},
		{"se shortened", "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=1578941600", target, auth.ErrSASSignature},
		{"se with leading zero", "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=0" + se, target, auth.ErrSASSignature},
		{"sr widened to all devices", "SharedAccessSignature sr=" + testEncode(hubHost+"/devices") + "&sig=" + sig + "&se=" + se, target, auth.ErrSASSignature},
		{"sr moved to another device", "SharedAccessSignature sr=" + testEncode(hubHost+"/devices/dev2") + "&sig=" + sig + "&se=" + se, auth.DeviceResource(hubHost, "dev2"), auth.ErrSASSignature},
		{"sr case changed", "SharedAccessSignature sr=" + strings.ToUpper(sr) + "&sig=" + sig + "&se=" + se, target, auth.ErrSASSignature},
		{"sig changed", "SharedAccessSignature sr=" + sr + "&sig=" + string(flipped) + "&se=" + se, target, auth.ErrSASSignature},
		{"sig truncated", "SharedAccessSignature sr=" + sr + "&sig=" + sig[:len(sig)-3] + "&se=" + se, target, auth.ErrSASSignature},
		{"sig not URL-encoded ('+' decodes to space)", "SharedAccessSignature sr=" + sr + "&sig=" + rawSig + "&se=" + se, target, auth.ErrSASSignature},
		{"presented for another device", "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=" + se, auth.DeviceResource(hubHost, "dev2"), auth.ErrSASResource},
		{"presented for a module of another device", "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=" + se, auth.ModuleResource(hubHost, "dev10", "m"), auth.ErrSASResource},
		{"presented for another hub", "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=" + se, auth.DeviceResource("otherhub.azure-devices.net", "dev1"), auth.ErrSASResource},
		{"presented for the whole hub", "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=" + se, hubHost, auth.ErrSASResource},
	}
	if !strings.Contains(rawSig, "+") {
		t.Fatalf("precondition: raw signature %q should contain '+'", rawSig)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := auth.ParseSAS(tt.token)
			if err != nil {
				t.Fatalf("ParseSAS: %v", err)
			}
			err = s.Verify(tt.target, now, primaryKey, secondaryKey)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			wantErrIs(t, err, tt.wantErr)
		})
	}
}

// TestVerifyOrder: the hub checks expiry, then resource, then signature.
func TestVerifyOrder(t *testing.T) {
	target := auth.DeviceResource(hubHost, "dev1")
	s, err := auth.ParseSAS(testToken(t, otherKey, testEncode(target), "1000", ""))
	if err != nil {
		t.Fatal(err)
	}
	late := time.Unix(1000, 0).Add(time.Hour)
	wantErrIs(t, s.Verify(auth.DeviceResource(hubHost, "dev2"), late, primaryKey, ""), auth.ErrSASExpired)
	early := time.Unix(1000, 0)
	err = s.Verify(auth.DeviceResource(hubHost, "dev2"), early, primaryKey, "")
	wantErrIs(t, err, auth.ErrSASResource)
	err = s.Verify(target, early, primaryKey, "")
	wantErrIs(t, err, auth.ErrSASSignature)
	for _, e := range []error{auth.ErrSASExpired, auth.ErrSASResource, auth.ErrInvalidSAS} {
		if errors.Is(err, e) {
			t.Errorf("signature error %q also matches %q", err, e)
		}
	}
}
