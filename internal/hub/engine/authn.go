package engine

// Authentication and authorization: device SAS tokens and certificates,
// service tokens and policies.

import (
	"crypto/x509"
	"net/url"
	"strings"
	"time"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hubauth"
)

// AddBearerToken makes the hub accept "Authorization: Bearer token" on the
// service API until expiry, with the rights of an IoT Hub data contributor.
// It stands in for Microsoft Entra ID, which the local hub cannot reach.
//
// Expired tokens are forgotten: at most maxBearerTokens are kept, and
// when that many are known the expired ones are dropped first, then the
// ones closest to expiry.
func (e *Engine) AddBearerToken(token string, expiry time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.bearer) >= maxBearerTokens {
		now := e.now()
		for t, exp := range e.bearer {
			if !exp.After(now) {
				delete(e.bearer, t)
			}
		}
		for len(e.bearer) >= maxBearerTokens {
			var first string
			var firstExp time.Time
			for t, exp := range e.bearer {
				if first == "" || exp.Before(firstExp) {
					first, firstExp = t, exp
				}
			}
			delete(e.bearer, first)
		}
	}
	e.bearer[token] = expiry
}

// maxBearerTokens bounds the bearer tokens the engine remembers.
const maxBearerTokens = 4096

func unauthorized(format string, args ...any) *Error {
	return NewError(CodeUnauthorized, format, args...)
}

// EffectiveExpiry is when the hub stops honouring tok: its expiry plus the
// five minutes of clock skew that IoT Hub allows (hubauth.MaxClockSkew). It
// is the one expiry every endpoint uses, both to accept a token and to
// close a connection that holds it; IoT Hub has been seen dropping MQTT
// devices some minutes after se, not at it (docs/hub-fidelity.md).
func EffectiveExpiry(tok *hubauth.SAS) time.Time { return tok.Expiry.Add(hubauth.MaxClockSkew) }

// AuthenticateSAS checks the SAS token a device or module connection
// presents for id, and returns its effective expiry (EffectiveExpiry). A
// token signed by a hub policy needs DeviceConnect. Every device token
// decision of every protocol goes through here or AuthenticateHubPolicy.
func (e *Engine) AuthenticateSAS(id auth.Identity, token string) (time.Time, *Error) {
	tok, err := hubauth.ParseSAS(token)
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
	if until, ok := e.revoked[id.String()]; ok && !EffectiveExpiry(tok).After(until) {
		return time.Time{}, unauthorized("Authentication failed for this device, renew token or certificate and reconnect (token expired)")
	}
	if tok.KeyName != "" {
		p, ok := e.policies[tok.KeyName]
		if !ok {
			return time.Time{}, unauthorized("Authorization rule '%s' not found", tok.KeyName)
		}
		if err := p.Authorize(tok, target, hubauth.RightsDeviceConnect, now); err != nil {
			return time.Time{}, unauthorized("%s", trimPrefix(err))
		}
		return EffectiveExpiry(tok), nil
	}
	a := rec.auth()
	if a.Type != AuthSAS {
		return time.Time{}, unauthorized("Identity %s uses authentication type %s, not SAS", id, a.Type)
	}
	if err := tok.Verify(target, now, deref(a.SymmetricKey.PrimaryKey), deref(a.SymmetricKey.SecondaryKey)); err != nil {
		return time.Time{}, unauthorized("%s", trimPrefix(err))
	}
	return EffectiveExpiry(tok), nil
}

// AuthenticateHubPolicy checks a token that a connection presents for the
// whole hub (an AMQP CBS token for the hub, SASL PLAIN as
// {policy}@sas.root.{hub}): it must be signed by policy keyName (any,
// when keyName is ""), be scoped to the hub or below it, and carry
// DeviceConnect. It returns the token's effective expiry; the identities
// it covers are checked with AuthenticateSAS when they are used.
func (e *Engine) AuthenticateHubPolicy(keyName, token string) (time.Time, *Error) {
	tok, err := hubauth.ParseSAS(token)
	if err != nil {
		return time.Time{}, unauthorized("%s", trimPrefix(err))
	}
	if tok.KeyName == "" {
		return time.Time{}, unauthorized("A token for the hub must be signed by a shared access policy (skn)")
	}
	if keyName != "" && tok.KeyName != keyName {
		return time.Time{}, unauthorized("The token is signed by policy '%s', not '%s'", tok.KeyName, keyName)
	}
	e.mu.Lock()
	p, ok := e.policies[tok.KeyName]
	e.mu.Unlock()
	if !ok {
		return time.Time{}, unauthorized("Authorization rule '%s' not found", tok.KeyName)
	}
	res, host := tok.Resource, e.hostName
	if !strings.EqualFold(res, host) && !(len(res) > len(host) && strings.EqualFold(res[:len(host)+1], host+"/")) {
		return time.Time{}, unauthorized("The token is for %s, not this hub", res)
	}
	if err := p.Authorize(tok, res, hubauth.RightsDeviceConnect, e.now()); err != nil {
		return time.Time{}, unauthorized("%s", trimPrefix(err))
	}
	return EffectiveExpiry(tok), nil
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
		err := hubauth.CheckThumbprint(chain[0], deref(a.X509Thumbprint.PrimaryThumbprint), deref(a.X509Thumbprint.SecondaryThumbprint), now)
		if err != nil {
			return unauthorized("%s", trimPrefix(err))
		}
	case AuthCertificateAuthority:
		if e.cas == nil {
			return unauthorized("No verified CA certificate is registered with the hub")
		}
		cid := auth.Identity{DeviceID: id.DeviceID, ModuleID: id.ModuleID}
		if err := hubauth.CheckCASigned(chain, e.cas, cid, now); err != nil {
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
func (e *Engine) AuthorizeService(header, path string, need hubauth.Rights) *Error {
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
	tok, err := hubauth.ParseSAS(header)
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
	tok    *hubauth.SAS
	policy hubauth.Policy
}

// Bounds of the remembered service tokens: headers longer than
// maxVerifiedHeader are verified afresh every time, and when
// maxVerified are remembered the memory is cleared.
const (
	maxVerified       = 4096
	maxVerifiedHeader = 1024
)

func (e *Engine) remember(header string, tok *hubauth.SAS, p hubauth.Policy) {
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
