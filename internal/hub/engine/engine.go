// Package engine is the protocol-neutral core of the local IoT Hub: the
// identity registry, authentication of devices and services, the direct
// method router and fault injection. Protocol endpoints (MQTT, AMQP, HTTPS)
// translate their wire formats to calls on an [Engine].
package engine

import (
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/iothub-go/iothub/auth"
)

// Config configures an Engine.
type Config struct {
	// HostName is the hub's host name, the audience of every token.
	// Default "localhost".
	HostName string
	// GatewayHostNames are other names clients reach this hub under (the
	// names its TLS certificate carries, e.g. "localhost", "127.0.0.1").
	// A device whose connection string sets GatewayHostName to one of
	// them may name it where the hub's host name goes (see
	// AcceptsHostName).
	GatewayHostNames []string
	// OwnerKey fixes the iothubowner policy's primary key (base64); random
	// when empty. The other default policies always get random keys.
	OwnerKey string
	// TrustedCAs are the verified CA certificates that CA-signed identities
	// chain to. nil: CA-signed identities cannot authenticate.
	TrustedCAs *x509.CertPool
	// Now returns the time; nil means time.Now.
	Now func() time.Time
	// Logger receives one line per method call and connection event; nil is
	// silent. Secrets and payloads are never logged.
	Logger *slog.Logger
}

// Engine is the hub's state. All methods are safe for concurrent use.
type Engine struct {
	hostName string
	gateways []string
	now      func() time.Time
	log      *slog.Logger
	cas      *x509.CertPool

	mu       sync.Mutex
	policies map[string]auth.Policy
	bearer   map[string]time.Time // accepted Entra test tokens -> expiry
	devices  map[string]*identityRecord
	scopes   map[string]string   // edge device scope -> device id
	sessions map[string]*Session // live connection per identity key
	changed  chan struct{}       // closed and replaced whenever an identity goes on- or offline
	revoked  map[string]time.Time
	verified map[string]verifiedToken // Authorization header → verified service token (AuthorizeService)
	faults   faults
	calls    []CallRecord
	evlog    eventLog // device-to-cloud messages (events.go)
	etagSeq  uint64
	genSeq   int64
	reqSeq   uint64
	closed   bool
}

// New returns an engine with the five default policies.
func New(cfg Config) (*Engine, error) {
	if cfg.HostName == "" {
		cfg.HostName = "localhost"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Engine{
		hostName: cfg.HostName,
		gateways: append([]string(nil), cfg.GatewayHostNames...),
		now:      cfg.Now,
		log:      log,
		cas:      cfg.TrustedCAs,
		policies: map[string]auth.Policy{},
		bearer:   map[string]time.Time{},
		devices:  map[string]*identityRecord{},
		scopes:   map[string]string{},
		sessions: map[string]*Session{},
		changed:  make(chan struct{}),
		revoked:  map[string]time.Time{},
		verified: map[string]verifiedToken{},
		etagSeq:  318751955,
	}
	for name, rights := range auth.DefaultPolicyRights() {
		p := auth.Policy{Name: name, PrimaryKey: newKey(), SecondaryKey: newKey(), Rights: rights}
		if name == "iothubowner" && cfg.OwnerKey != "" {
			b, err := decodeBase64(cfg.OwnerKey)
			if err != nil || len(b) < 16 || len(b) > 64 {
				return nil, errors.New("iothub: owner key must be base64 of 16 to 64 bytes")
			}
			p.PrimaryKey = cfg.OwnerKey
		}
		e.policies[name] = p
	}
	return e, nil
}

// Now returns the engine's current time (Config.Now).
func (e *Engine) Now() time.Time { return e.now() }

// HostName returns the hub's host name.
func (e *Engine) HostName() string { return e.hostName }

// AcceptsHostName reports whether a client may name host (optionally with
// a port) as the hub it connects to, in the MQTT user name: the hub's host
// name or one of its gateway names, case-insensitively.
//
// Why gateway names: the .NET device SDK puts GatewayHostName, not
// HostName, in the MQTT user name (IotHubConnectionString sets HostName =
// GatewayHostName when one is given, and MqttIotHubAdapter builds the user
// name from it), while the SAS audience stays HostName. Node puts HostName
// there. A hub reached through its own gateway name accepts both.
func (e *Engine) AcceptsHostName(host string) bool {
	if strings.EqualFold(host, e.hostName) {
		return true
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, e.hostName) {
		return true
	}
	for _, g := range e.gateways {
		if strings.EqualFold(host, g) {
			return true
		}
	}
	return false
}

// Policy returns a shared access policy by name.
func (e *Engine) Policy(name string) (auth.Policy, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p, ok := e.policies[name]
	return p, ok
}

// AddBearerToken makes the hub accept "Authorization: Bearer token" on the
// service API until expiry, with the rights of an IoT Hub data contributor.
// It stands in for Microsoft Entra ID, which the local hub cannot reach.
func (e *Engine) AddBearerToken(token string, expiry time.Time) {
	e.mu.Lock()
	e.bearer[token] = expiry
	e.mu.Unlock()
}

// Close disconnects every session. Pending invocations end with an error.
func (e *Engine) Close() {
	e.mu.Lock()
	e.closed = true
	sessions := make([]*Session, 0, len(e.sessions))
	for _, s := range e.sessions {
		sessions = append(sessions, s)
	}
	e.mu.Unlock()
	for _, s := range sessions {
		s.conn.Close(NewError(CodeServiceUnavailable, "The hub is shutting down"))
		s.Disconnect()
	}
}

func unauthorized(format string, args ...any) *Error {
	return NewError(CodeUnauthorized, format, args...)
}

// AuthenticateSAS checks the SAS token a device or module connection
// presents for id, and returns the token's expiry. A token signed by a hub
// policy needs DeviceConnect.
func (e *Engine) AuthenticateSAS(id auth.Identity, token string) (time.Time, *Error) {
	tok, err := auth.ParseSAS(token)
	if err != nil {
		return time.Time{}, unauthorized("%s", trimPrefix(err))
	}
	target := auth.Identity{HostName: e.hostName, DeviceID: id.DeviceID, ModuleID: id.ModuleID}.Resource()
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	rec, herr := e.lookupLocked(id.DeviceID, id.ModuleID)
	if herr != nil {
		return time.Time{}, unauthorized("IotHub '%s' does not contain the specified device '%s'", e.hubName(), id)
	}
	if err := e.enabledLocked(id); err != nil {
		return time.Time{}, err
	}
	if until, ok := e.revoked[id.String()]; ok && !tok.Expiry.After(until) {
		return time.Time{}, unauthorized("Authentication failed for this device, renew token or certificate and reconnect (token expired)")
	}
	if tok.KeyName != "" {
		p, ok := e.policies[tok.KeyName]
		if !ok {
			return time.Time{}, unauthorized("Authorization rule '%s' not found", tok.KeyName)
		}
		if err := p.Authorize(tok, target, auth.RightsDeviceConnect, now); err != nil {
			return time.Time{}, unauthorized("%s", trimPrefix(err))
		}
		return tok.Expiry, nil
	}
	a := rec.auth()
	if a.Type != AuthSAS {
		return time.Time{}, unauthorized("Identity %s uses authentication type %s, not SAS", id, a.Type)
	}
	if err := tok.Verify(target, now, deref(a.SymmetricKey.PrimaryKey), deref(a.SymmetricKey.SecondaryKey)); err != nil {
		return time.Time{}, unauthorized("%s", trimPrefix(err))
	}
	return tok.Expiry, nil
}

// AuthenticateCert checks the client certificate chain of a device or
// module connection: a thumbprint match for selfSigned identities, a chain
// to a trusted CA with CN = identity for certificateAuthority ones.
func (e *Engine) AuthenticateCert(id auth.Identity, chain []*x509.Certificate) *Error {
	if len(chain) == 0 {
		return unauthorized("No client certificate was presented")
	}
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	rec, herr := e.lookupLocked(id.DeviceID, id.ModuleID)
	if herr != nil {
		return unauthorized("IotHub '%s' does not contain the specified device '%s'", e.hubName(), id)
	}
	if err := e.enabledLocked(id); err != nil {
		return err
	}
	a := rec.auth()
	switch a.Type {
	case AuthSelfSigned:
		err := auth.CheckThumbprint(chain[0], deref(a.X509Thumbprint.PrimaryThumbprint), deref(a.X509Thumbprint.SecondaryThumbprint), now)
		if err != nil {
			return unauthorized("%s", trimPrefix(err))
		}
	case AuthCertificateAuthority:
		if e.cas == nil {
			return unauthorized("No verified CA certificate is registered with the hub")
		}
		cid := auth.Identity{DeviceID: id.DeviceID, ModuleID: id.ModuleID}
		if err := auth.CheckCASigned(chain, e.cas, cid, now); err != nil {
			return unauthorized("%s", trimPrefix(err))
		}
	default:
		return unauthorized("Identity %s uses authentication type %s, not X.509", id, a.Type)
	}
	return nil
}

func (e *Engine) enabledLocked(id auth.Identity) *Error {
	if dev := e.devices[id.DeviceID]; dev != nil && dev.device.Status == "disabled" {
		return unauthorized("Device %s is disabled", id.DeviceID)
	}
	return nil
}

// AuthorizeService checks the Authorization header of a service API request
// for path (without query) and the rights the operation needs: a policy SAS
// token covering host+path, or a Bearer token issued with AddBearerToken.
func (e *Engine) AuthorizeService(header, path string, need auth.Rights) *Error {
	if header == "" {
		return unauthorized("Authorization header missing")
	}
	if tokenValue, ok := strings.CutPrefix(header, "Bearer "); ok {
		e.mu.Lock()
		exp, known := e.bearer[tokenValue]
		e.mu.Unlock()
		if !known {
			return unauthorized("The bearer token is not valid")
		}
		if !e.now().Before(exp) {
			return unauthorized("The bearer token is expired")
		}
		return nil
	}
	// A service client sends the same token with every request until it
	// renews it, so the hub remembers, per Authorization header, the parsed
	// token whose signature it verified and the policy that signed it.
	// Policies do not change after New, so the signature stays verified;
	// everything else (expiry, resource, rights) is checked on every
	// request, in Policy.Authorize's order and with its messages.
	now := e.now()
	e.mu.Lock()
	v, ok := e.verified[header]
	e.mu.Unlock()
	// Tokens name resources unescaped ("{host}/devices/dev#1"), requests
	// arrive escaped ("/devices/dev%231").
	target := path
	if u, err := url.PathUnescape(path); err == nil {
		target = u
	}
	target = e.hostName + target
	if ok {
		err := v.tok.CheckExpiry(now)
		if err == nil {
			err = v.tok.CheckResource(target)
		}
		if err == nil {
			err = v.policy.CheckRights(need)
		}
		if err != nil {
			return unauthorized("%s", trimPrefix(err))
		}
		return nil
	}
	tok, err := auth.ParseSAS(header)
	if err != nil {
		return unauthorized("%s", trimPrefix(err))
	}
	if tok.KeyName == "" {
		return unauthorized("The token is not signed by a shared access policy (skn is missing)")
	}
	e.mu.Lock()
	p, ok := e.policies[tok.KeyName]
	e.mu.Unlock()
	if !ok {
		return unauthorized("Authorization rule '%s' not found", tok.KeyName)
	}
	if err := p.Authorize(tok, target, need, now); err != nil {
		return unauthorized("%s", trimPrefix(err))
	}
	e.remember(header, tok, p)
	return nil
}

// verifiedToken is a service token whose signature the hub verified, and
// the policy that signed it.
type verifiedToken struct {
	tok    *auth.SAS
	policy auth.Policy
}

// Bounds of the remembered service tokens: headers longer than
// maxVerifiedHeader are verified afresh every time, and when
// maxVerified are remembered the memory is cleared.
const (
	maxVerified       = 4096
	maxVerifiedHeader = 1024
)

func (e *Engine) remember(header string, tok *auth.SAS, p auth.Policy) {
	if len(header) > maxVerifiedHeader {
		return
	}
	e.mu.Lock()
	if len(e.verified) >= maxVerified {
		clear(e.verified)
	}
	e.verified[header] = verifiedToken{tok: tok, policy: p}
	e.mu.Unlock()
}

func (e *Engine) hubName() string {
	name, _, _ := strings.Cut(e.hostName, ".")
	return name
}

func trimPrefix(err error) string { return strings.TrimPrefix(err.Error(), "iothub: ") }
