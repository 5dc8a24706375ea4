package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// sasPrefix is the literal first word of every token.
const sasPrefix = "SharedAccessSignature"

// maxExpiry is the latest "se" IoT Hub can represent: 9999-12-31T23:59:59Z
// (.NET DateTime.MaxValue; a later se fails the hub's parse).
const maxExpiry = 253402300799

// Errors about SAS tokens. Use errors.Is.
var (
	// ErrInvalidSAS: the token is not a well-formed shared access signature
	// ([ParseSAS], [NewStaticToken]).
	ErrInvalidSAS = errors.New("iothub: malformed SAS token")
	// ErrSASExpired: the token's expiry has passed. A [StaticToken] returns
	// it once its fixed token has expired, since such a token cannot be
	// renewed; the device and service clients pass it on.
	ErrSASExpired = errors.New("iothub: SAS token expired")
)

// DeviceResource returns the resource URI a device token signs:
// "{host}/devices/{deviceID}".
func DeviceResource(host, deviceID string) string {
	return host + "/devices/" + deviceID
}

// ModuleResource returns the resource URI a module token signs:
// "{host}/devices/{deviceID}/modules/{moduleID}".
func ModuleResource(host, deviceID, moduleID string) string {
	return host + "/devices/" + deviceID + "/modules/" + moduleID
}

// SignSAS builds a SAS token for resource (e.g. [DeviceResource] or a bare
// host for hub policies), signed with the base64 key and valid until expiry:
//
//	SharedAccessSignature sr={enc(resource)}&sig={enc(sig)}&se={unix}[&skn={keyName}]
//
// The string to sign is the encoded resource, "\n" and the expiry in decimal
// Unix seconds; sig is the base64 HMAC-SHA256 of it under the decoded key.
// Encoding keeps RFC 3986 unreserved characters and writes everything else
// as upper-case %XX. keyName is the hub policy name, or "" for a device or
// module key.
func SignSAS(resource, keyName, base64Key string, expiry time.Time) (string, error) {
	key, err := decodeKey(base64Key)
	if err != nil {
		return "", err
	}
	if resource == "" {
		return "", errors.New("iothub: SAS resource is empty")
	}
	if se := expiry.Unix(); se < 0 || se > maxExpiry {
		return "", errors.New("iothub: SAS expiry must be between 1970 and the end of year 9999")
	}
	return signSAS(resource, keyName, key, expiry.Unix()), nil
}

func signSAS(resource, keyName string, key []byte, expiry int64) string {
	sr := urlEncode(resource)
	se := strconv.FormatInt(expiry, 10)
	var b strings.Builder
	b.WriteString(sasPrefix + " sr=")
	b.WriteString(sr)
	b.WriteString("&sig=")
	b.WriteString(urlEncode(signature(key, sr, se)))
	b.WriteString("&se=")
	b.WriteString(se)
	if keyName != "" {
		b.WriteString("&skn=")
		b.WriteString(urlEncode(keyName))
	}
	return b.String()
}

// signature returns base64(HMAC-SHA256(key, sr + "\n" + se)).
func signature(key []byte, sr, se string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(sr))
	m.Write([]byte{'\n'})
	m.Write([]byte(se))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// urlEncode escapes everything but RFC 3986 unreserved characters, with
// upper-case hex, as the Azure IoT SDKs do for sr, sig and skn.
func urlEncode(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + len(s)/4)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlnum(c) || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// SAS is a parsed shared access signature token: what it covers, which
// policy signed it and when it expires. It does not keep the signature;
// String and %v show the token with "sig=<redacted>".
type SAS struct {
	// Resource is the URL-decoded "sr": the resource URI the token covers.
	Resource string
	// KeyName is the decoded "skn" (hub policy name); "" for device and
	// module keys.
	KeyName string
	// Expiry is "se" as a time.
	Expiry time.Time

	rawResource string // sr exactly as in the token: it is what was signed
	rawExpiry   string // se exactly as in the token
}

// ParseSAS parses a token as IoT Hub does: the literal word
// "SharedAccessSignature", one space, then &-separated fields whose names
// match case-insensitively. sr, sig and se are required, skn is optional,
// unknown fields are ignored and a repeated field is an error. Values are
// URL-decoded. ParseSAS checks syntax only: it cannot tell whether the
// signature is genuine, which only the hub, holding the key, can check.
func ParseSAS(token string) (*SAS, error) {
	i := strings.IndexFunc(token, unicode.IsSpace)
	if i < 0 || token[:i] != sasPrefix {
		return nil, fmt.Errorf("%w: must start with %q and a space", ErrInvalidSAS, sasPrefix)
	}
	_, w := utf8.DecodeRuneInString(token[i:]) // the space may be multi-byte (U+00A0 …)
	body := token[i+w:]
	if strings.IndexFunc(body, unicode.IsSpace) >= 0 {
		return nil, fmt.Errorf("%w: want exactly two space-separated parts", ErrInvalidSAS)
	}
	var s SAS
	var sig string
	var haveSR, haveSig, haveSE, haveSKN bool
	for _, f := range strings.Split(body, "&") {
		if f == "" {
			continue
		}
		name, val, ok := strings.Cut(f, "=")
		if !ok {
			return nil, fmt.Errorf("%w: a field has no '='", ErrInvalidSAS)
		}
		name = strings.ToLower(name)
		var dup bool
		switch name {
		case "sr":
			dup, haveSR = haveSR, true
			s.rawResource = val
			r, err := url.QueryUnescape(val)
			if err != nil {
				return nil, fmt.Errorf("%w: sr is not URL-encoded correctly", ErrInvalidSAS)
			}
			s.Resource = r
		case "sig":
			dup, haveSig = haveSig, true
			v, err := url.QueryUnescape(val)
			if err != nil {
				return nil, fmt.Errorf("%w: sig is not URL-encoded correctly", ErrInvalidSAS)
			}
			sig = v
		case "se":
			dup, haveSE = haveSE, true
			s.rawExpiry = val
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil || n < 0 || strings.HasPrefix(val, "+") {
				return nil, fmt.Errorf("%w: se must be Unix seconds (a non-negative decimal integer)", ErrInvalidSAS)
			}
			if n > maxExpiry {
				return nil, fmt.Errorf("%w: se is after the year 9999", ErrInvalidSAS)
			}
			s.Expiry = time.Unix(n, 0).UTC()
		case "skn":
			dup, haveSKN = haveSKN, true
			v, err := url.QueryUnescape(val)
			if err != nil {
				return nil, fmt.Errorf("%w: skn is not URL-encoded correctly", ErrInvalidSAS)
			}
			s.KeyName = v
		default:
			continue
		}
		if dup {
			return nil, fmt.Errorf("%w: field %s given more than once", ErrInvalidSAS, name)
		}
	}
	switch {
	case !haveSR || s.Resource == "":
		return nil, fmt.Errorf("%w: sr (resource) is missing", ErrInvalidSAS)
	case !haveSig || sig == "":
		return nil, fmt.Errorf("%w: sig (signature) is missing", ErrInvalidSAS)
	case !haveSE:
		return nil, fmt.Errorf("%w: se (expiry) is missing", ErrInvalidSAS)
	case haveSKN && s.KeyName == "":
		return nil, fmt.Errorf("%w: skn is empty", ErrInvalidSAS)
	}
	return &s, nil
}

// String returns the token with its signature replaced by "<redacted>".
// String and GoString have value receivers so that a SAS value (not only a
// *SAS) never prints its signature either.
func (s SAS) String() string {
	v := sasPrefix + " sr=" + s.rawResource + "&sig=<redacted>&se=" + s.rawExpiry
	if s.KeyName != "" {
		v += "&skn=" + urlEncode(s.KeyName)
	}
	return v
}

// GoString redacts like String.
func (s SAS) GoString() string { return "&auth.SAS(" + strconv.Quote(s.String()) + ")" }

// covers reports whether the token's resource authorizes target, by whole
// path segment and case-insensitively, as IoT Hub matches it: "h/devices"
// covers "h/devices/dev1" but "h/devices/dev1" does not cover
// "h/devices/dev10".
func (s *SAS) covers(target string) bool {
	r := strings.ToLower(strings.TrimSuffix(s.Resource, "/"))
	t := strings.ToLower(strings.TrimSuffix(target, "/"))
	return t == r || strings.HasPrefix(t, r+"/")
}
