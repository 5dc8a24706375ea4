package hubauth

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/iothub-go/iothub/auth"
)

// MaxClockSkew is how far past its expiry IoT Hub still accepts a SAS token.
const MaxClockSkew = 5 * time.Minute

// Errors the SAS checks wrap, besides auth.ErrSASExpired (expiry) and
// auth.ErrInvalidSAS (syntax). Use errors.Is.
var (
	// ErrSASSignature: the signature matches none of the keys.
	ErrSASSignature = errors.New("iothub: SAS token signature does not match")
	// ErrSASResource: the token's resource does not cover the target.
	ErrSASResource = errors.New("iothub: SAS token is not valid for this resource")
)

// SAS is a presented token as the hub checks it: the parsed [auth.SAS]
// (Resource, KeyName, Expiry; String and %v redact the signature) plus the
// raw text that was signed and the signature, which auth.SAS does not keep.
type SAS struct {
	auth.SAS

	signed string // raw sr + "\n" + raw se: exactly what the client signed
	sig    string // decoded sig (base64 text)
}

// ParseSAS parses a token with [auth.ParseSAS] (same syntax, same errors,
// wrapping auth.ErrInvalidSAS) and keeps what the signature check needs.
func ParseSAS(token string) (*SAS, error) {
	tok, err := auth.ParseSAS(token)
	if err != nil {
		return nil, err
	}
	// auth.ParseSAS accepted the token: the prefix, one white-space rune,
	// then &-separated name=value fields, with sr, sig and se each present
	// exactly once and sig URL-decodable. Pick out the raw values it does
	// not keep.
	i := strings.IndexFunc(token, unicode.IsSpace)
	_, w := utf8.DecodeRuneInString(token[i:])
	var sr, se, sig string
	for _, f := range strings.Split(token[i+w:], "&") {
		name, val, _ := strings.Cut(f, "=")
		switch strings.ToLower(name) {
		case "sr":
			sr = val
		case "se":
			se = val
		case "sig":
			sig, err = url.QueryUnescape(val)
			if err != nil {
				return nil, fmt.Errorf("%w: sig is not URL-encoded correctly", auth.ErrInvalidSAS)
			}
		}
	}
	return &SAS{SAS: *tok, signed: sr + "\n" + se, sig: sig}, nil
}

// CheckExpiry returns an error wrapping auth.ErrSASExpired when now is later
// than the expiry plus [MaxClockSkew].
func (s *SAS) CheckExpiry(now time.Time) error {
	if now.After(s.Expiry.Add(MaxClockSkew)) {
		return fmt.Errorf("%w at %s", auth.ErrSASExpired, s.Expiry.Format(time.RFC3339))
	}
	return nil
}

// Covers reports whether the token's resource authorizes target, a resource
// URI without scheme such as "myhub.azure-devices.net/devices/dev1". The
// match is case-insensitive and by whole path segment: "h/devices" covers
// "h/devices/dev1" but "h/devices/dev1" does not cover "h/devices/dev10".
func (s *SAS) Covers(target string) bool {
	r := strings.ToLower(strings.TrimSuffix(s.Resource, "/"))
	t := strings.ToLower(strings.TrimSuffix(target, "/"))
	return t == r || strings.HasPrefix(t, r+"/")
}

// CheckResource is [SAS.Covers] as an error wrapping [ErrSASResource].
func (s *SAS) CheckResource(target string) error {
	if !s.Covers(target) {
		return fmt.Errorf("%w: token is for %q, not %q", ErrSASResource, s.Resource, target)
	}
	return nil
}

// CheckSignature reports whether the token was signed with one of the base64
// keys, tried in order (primary, then secondary). Empty keys are skipped.
// The signature covers sr exactly as sent, not a re-encoding of Resource.
// The comparison is constant-time. It returns an error wrapping
// [ErrSASSignature] when no key matches.
func (s *SAS) CheckSignature(base64Keys ...string) error {
	tried := false
	for _, k := range base64Keys {
		if k == "" {
			continue
		}
		key, err := decodeKey(k)
		if err != nil {
			return err
		}
		tried = true
		m := hmac.New(sha256.New, key)
		m.Write([]byte(s.signed))
		want := base64.StdEncoding.EncodeToString(m.Sum(nil))
		if subtle.ConstantTimeCompare([]byte(want), []byte(s.sig)) == 1 {
			return nil
		}
	}
	if !tried {
		return fmt.Errorf("%w: no key to check it against", ErrSASSignature)
	}
	return ErrSASSignature
}

// Verify runs the hub's checks in the hub's order: the token is not expired
// at now (allowing [MaxClockSkew]), it covers target, and it was signed with
// primaryKey or secondaryKey.
func (s *SAS) Verify(target string, now time.Time, primaryKey, secondaryKey string) error {
	if err := s.CheckExpiry(now); err != nil {
		return err
	}
	if err := s.CheckResource(target); err != nil {
		return err
	}
	return s.CheckSignature(primaryKey, secondaryKey)
}

// decodeKey decodes a base64 shared access key as auth does when signing:
// standard encoding, no line breaks, not empty.
func decodeKey(k string) ([]byte, error) {
	if strings.ContainsAny(k, "\r\n") {
		return nil, errors.New("iothub: key is not valid base64")
	}
	b, err := base64.StdEncoding.DecodeString(k)
	if err != nil {
		return nil, errors.New("iothub: key is not valid base64")
	}
	if len(b) == 0 {
		return nil, errors.New("iothub: key is empty")
	}
	return b, nil
}
