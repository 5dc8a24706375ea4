package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hubauth"
)

// TestAuthorizeServiceRemembered checks that a remembered token gives
// exactly the answers a fresh verification gives: for other paths, other
// rights, after expiry; and that only verified tokens are remembered.
func TestAuthorizeServiceRemembered(t *testing.T) {
	e, c := newEventEngine(t)
	p, _ := e.Policy("service")
	sign := func(resource string, ttl time.Duration) string {
		tok, err := auth.SignSAS(resource, p.Name, p.PrimaryKey, c.now().Add(ttl))
		require.NoError(t, err)
		return tok
	}
	remembered := func() int {
		e.mu.Lock()
		defer e.mu.Unlock()
		return len(e.verified)
	}
	// fresh answers as an engine that never saw the token would: one
	// with the same policies and clock.
	fresh := func(header, path string, need hubauth.Rights) *Error {
		f := &Engine{hostName: e.hostName, now: e.now, policies: e.policies, verified: map[string]verifiedToken{}}
		return f.AuthorizeService(header, path, need)
	}
	same := func(what string, got, want *Error) {
		t.Helper()
		require.Equal(t, want == nil, got == nil, "%s: remembered token gave %v, a fresh check %v", what, got, want)
		if got != nil {
			require.Equal(t, want.Code, got.Code, "%s: code of the remembered token's refusal", what)
			require.Equal(t, want.Message, got.Message, "%s: message of the remembered token's refusal", what)
		}
	}

	devTok := sign("h.azure-devices.net/twins/dev1", time.Hour)
	const path = "/twins/dev1/methods"
	require.Nil(t, e.AuthorizeService(devTok, path, hubauth.RightsServiceConnect))
	require.Equal(t, 1, remembered(), "tokens remembered after a success")
	for _, c := range []struct {
		what, path string
		need       hubauth.Rights
	}{
		{"same path", path, hubauth.RightsServiceConnect},
		{"literal case differs", "/Twins/dev1/methods", hubauth.RightsServiceConnect},
		{"escaped", "/twins/dev%31/methods", hubauth.RightsServiceConnect},
		{"another device", "/twins/dev2/methods", hubauth.RightsServiceConnect},
		{"a prefix of the resource", "/twins/dev10/methods", hubauth.RightsServiceConnect},
		{"rights the policy lacks", path, hubauth.RightsRegistryWrite},
	} {
		same(c.what, e.AuthorizeService(devTok, c.path, c.need), fresh(devTok, c.path, c.need))
	}
	herr := e.AuthorizeService(devTok, "/twins/dev2/methods", hubauth.RightsServiceConnect)
	require.NotNil(t, herr, "another device's path was allowed")
	require.Equal(t, CodeUnauthorized, herr.Code, "another device's path: %v", herr)
	// Failures are not remembered: a forged signature never is.
	good := sign("h.azure-devices.net", time.Hour)
	i := strings.Index(good, "sig=") + len("sig=")
	forged := good[:i] + "AAAA" + good[i+4:] // same sr, se and skn
	require.NotEqual(t, good, forged, "forgery did not change the token")
	for range 2 {
		herr := e.AuthorizeService(forged, path, hubauth.RightsServiceConnect)
		require.NotNil(t, herr, "forged token was accepted")
		require.Equal(t, CodeUnauthorized, herr.Code, "forged token: %v", herr)
	}
	require.Equal(t, 1, remembered(), "tokens remembered after failures")
	// Past expiry and the clock-skew allowance the remembered token fails,
	// as a fresh one does.
	c.add(time.Hour + hubauth.MaxClockSkew + time.Second)
	got := e.AuthorizeService(devTok, path, hubauth.RightsServiceConnect)
	same("expired", got, fresh(devTok, path, hubauth.RightsServiceConnect))
	require.NotNil(t, got, "an expired remembered token was accepted")
	// Long headers are never remembered, and the memory is bounded.
	padded := sign("h.azure-devices.net", time.Hour) + "&x=" + strings.Repeat("p", maxVerifiedHeader)
	require.Nil(t, e.AuthorizeService(padded, path, hubauth.RightsServiceConnect))
	require.NotContains(t, e.verified, padded, "a long header was remembered")
	for i := range maxVerified + 10 {
		tok := sign("h.azure-devices.net", time.Duration(i+1)*time.Second+time.Hour)
		require.Nil(t, e.AuthorizeService(tok, path, hubauth.RightsServiceConnect))
	}
	n := remembered()
	require.Positive(t, n, "remembered tokens")
	require.LessOrEqual(t, n, maxVerified, "remembered tokens")
}
