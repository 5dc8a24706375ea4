package auth

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// DefaultTokenTTL is the lifetime of tokens a [KeyTokenProvider] mints when
// TokenOptions.TTL is zero: one hour, as in every official Azure IoT SDK.
const DefaultTokenTTL = time.Hour

// DefaultRenewFraction is the share of a token's lifetime left when a
// [KeyTokenProvider] asks for renewal by default (as the .NET SDK does): with
// the default TTL, a token is renewed 9 minutes before it expires.
const DefaultRenewFraction = 0.15

// Token is one SAS token and its lifetime. String and %v redact Value.
type Token struct {
	// Value is the whole "SharedAccessSignature sr=…" string. Secret.
	Value string
	// ExpiresOn is the token's expiry ("se").
	ExpiresOn time.Time
	// RenewAt is when the holder should ask its provider for a new token.
	// It is zero when the provider cannot renew (a [StaticToken]).
	RenewAt time.Time
}

// ShouldRenew reports whether now has reached RenewAt. It is always false for
// a token that cannot be renewed.
func (t Token) ShouldRenew(now time.Time) bool {
	return !t.RenewAt.IsZero() && !now.Before(t.RenewAt)
}

// String describes the token without its value.
func (t Token) String() string {
	return "SAS token <redacted> expiring " + t.ExpiresOn.UTC().Format(time.RFC3339)
}

// GoString redacts like String.
func (t Token) GoString() string { return "auth.Token(" + strconv.Quote(t.String()) + ")" }

// TokenProvider supplies the SAS token a connection presents. Implementations
// are safe for concurrent use.
type TokenProvider interface {
	// Token returns a token that is valid now. Callers present it, then ask
	// again once Token.ShouldRenew reports true.
	Token(ctx context.Context) (Token, error)
}

// TokenOptions configures a [KeyTokenProvider]. The zero value gives the
// defaults.
type TokenOptions struct {
	// TTL is each token's lifetime. Zero means DefaultTokenTTL (1 h); it must
	// otherwise be at least one second.
	TTL time.Duration
	// RenewBefore is how long before expiry a token should be renewed. Zero
	// means DefaultRenewFraction of TTL; it must be shorter than TTL.
	RenewBefore time.Duration
	// Now returns the current time; nil means time.Now. For tests.
	Now func() time.Time
}

// KeyTokenProvider mints tokens for one resource from a shared access key,
// and can have its key rotated in place. The zero value is not usable; call
// [NewKeyTokenProvider].
type KeyTokenProvider struct {
	resource    string
	keyName     string
	ttl         time.Duration
	renewBefore time.Duration
	now         func() time.Time

	mu     sync.Mutex
	key    []byte
	cached Token
}

// NewKeyTokenProvider returns a provider of tokens for resource (see
// [DeviceResource], [ModuleResource], or a bare host name for a hub policy),
// signed with base64Key. keyName is the policy name ("skn"), or "" for a
// device or module key. opts may be nil.
func NewKeyTokenProvider(resource, keyName, base64Key string, opts *TokenOptions) (*KeyTokenProvider, error) {
	if resource == "" {
		return nil, errors.New("iothub: token resource is empty")
	}
	key, err := decodeKey(base64Key)
	if err != nil {
		return nil, err
	}
	var o TokenOptions
	if opts != nil {
		o = *opts
	}
	switch {
	case o.TTL == 0:
		o.TTL = DefaultTokenTTL
	case o.TTL < time.Second:
		return nil, fmt.Errorf("iothub: token TTL %v is shorter than one second", o.TTL)
	}
	switch {
	case o.RenewBefore == 0:
		o.RenewBefore = time.Duration(float64(o.TTL) * DefaultRenewFraction)
	case o.RenewBefore < 0 || o.RenewBefore >= o.TTL:
		return nil, fmt.Errorf("iothub: RenewBefore %v must be positive and shorter than the TTL %v", o.RenewBefore, o.TTL)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &KeyTokenProvider{
		resource:    resource,
		keyName:     keyName,
		ttl:         o.TTL,
		renewBefore: o.RenewBefore,
		now:         o.Now,
		key:         key,
	}, nil
}

// Token returns the current token, minting a new one when none has been made
// yet, the key was rotated, or the last one has reached its renewal time.
func (p *KeyTokenProvider) Token(ctx context.Context) (Token, error) {
	return p.token(ctx, false)
}

// Renew mints a new token even if the current one is not due for renewal,
// e.g. after the hub refused it. The new token's expiry is later than the
// old one's whenever at least a second has passed.
func (p *KeyTokenProvider) Renew(ctx context.Context) (Token, error) {
	return p.token(ctx, true)
}

func (p *KeyTokenProvider) token(ctx context.Context, force bool) (Token, error) {
	if err := ctx.Err(); err != nil {
		return Token{}, err
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !force && p.cached.Value != "" && now.Before(p.cached.RenewAt) {
		return p.cached, nil
	}
	expiry := now.Add(p.ttl).Truncate(time.Second)
	p.cached = Token{
		Value:     signSAS(p.resource, p.keyName, p.key, expiry.Unix()),
		ExpiresOn: expiry,
		RenewAt:   expiry.Add(-p.renewBefore),
	}
	return p.cached, nil
}

// UpdateKey replaces the signing key (e.g. after the primary key was
// regenerated in the registry). Tokens minted afterwards use the new key;
// a token handed out before stays valid until the hub stops accepting it.
func (p *KeyTokenProvider) UpdateKey(base64Key string) error {
	key, err := decodeKey(base64Key)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.key = key
	p.cached = Token{}
	p.mu.Unlock()
	return nil
}

// String names the provider's resource and policy, never its key.
func (p *KeyTokenProvider) String() string {
	if p.keyName == "" {
		return "KeyTokenProvider(" + p.resource + ")"
	}
	return "KeyTokenProvider(" + p.resource + ", skn=" + p.keyName + ")"
}

// GoString is String, so %#v shows neither the key nor the cached token.
func (p *KeyTokenProvider) GoString() string { return p.String() }

// StaticToken provides one fixed token, as given by a connection string's
// SharedAccessSignature. It cannot be renewed: once expired, Token fails.
type StaticToken struct {
	tok   *SAS
	value string
}

// NewStaticToken wraps a pre-built token after checking its syntax.
func NewStaticToken(token string) (*StaticToken, error) {
	tok, err := ParseSAS(token)
	if err != nil {
		return nil, err
	}
	return &StaticToken{tok: tok, value: token}, nil
}

// ExpiresOn returns the token's expiry.
func (s *StaticToken) ExpiresOn() time.Time { return s.tok.Expiry }

// Token returns the fixed token, with a zero RenewAt. Once the expiry has
// passed it returns an error wrapping [ErrSASExpired], since a fixed token
// cannot be renewed.
func (s *StaticToken) Token(ctx context.Context) (Token, error) {
	if err := ctx.Err(); err != nil {
		return Token{}, err
	}
	if !time.Now().Before(s.tok.Expiry) {
		return Token{}, fmt.Errorf("%w at %s and a fixed SharedAccessSignature cannot be renewed",
			ErrSASExpired, s.tok.Expiry.Format(time.RFC3339))
	}
	return Token{Value: s.value, ExpiresOn: s.tok.Expiry}, nil
}

// String describes the token without its signature.
func (s *StaticToken) String() string { return "StaticToken(" + s.tok.String() + ")" }

// GoString is String, so %#v does not show the token's signature.
func (s *StaticToken) GoString() string { return s.String() }
