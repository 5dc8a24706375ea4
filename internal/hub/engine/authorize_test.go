package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/iothub-go/iothub/auth"
)

// TestAuthorizeServiceRemembered checks that a remembered token gives
// exactly the answers a fresh verification gives: for other paths, other
// rights, after expiry; and that only verified tokens are remembered.
func TestAuthorizeServiceRemembered(t *testing.T) {
	e, c := newEventEngine(t)
	p, _ := e.Policy("service")
	sign := func(resource string, ttl time.Duration) string {
		tok, err := auth.SignSAS(resource, p.Name, p.PrimaryKey, c.now().Add(ttl))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	remembered := func() int {
		e.mu.Lock()
		defer e.mu.Unlock()
		return len(e.verified)
	}
	// fresh answers as an engine that never saw the token would: one
	// with the same policies and clock.
	fresh := func(header, path string, need auth.Rights) *Error {
		f := &Engine{hostName: e.hostName, now: e.now, policies: e.policies, verified: map[string]verifiedToken{}}
		return f.AuthorizeService(header, path, need)
	}
	same := func(what string, got, want *Error) {
		t.Helper()
		if (got == nil) != (want == nil) || (got != nil && (got.Code != want.Code || got.Message != want.Message)) {
			t.Fatalf("%s: remembered token gave %v, a fresh check %v", what, got, want)
		}
	}

	devTok := sign("h.azure-devices.net/twins/dev1", time.Hour)
	const path = "/twins/dev1/methods"
	if herr := e.AuthorizeService(devTok, path, auth.RightsServiceConnect); herr != nil {
		t.Fatal(herr)
	}
	if n := remembered(); n != 1 {
		t.Fatalf("%d tokens remembered after a success, want 1", n)
	}
	for _, c := range []struct {
		what, path string
		need       auth.Rights
	}{
		{"same path", path, auth.RightsServiceConnect},
		{"literal case differs", "/Twins/dev1/methods", auth.RightsServiceConnect},
		{"escaped", "/twins/dev%31/methods", auth.RightsServiceConnect},
		{"another device", "/twins/dev2/methods", auth.RightsServiceConnect},
		{"a prefix of the resource", "/twins/dev10/methods", auth.RightsServiceConnect},
		{"rights the policy lacks", path, auth.RightsRegistryWrite},
	} {
		same(c.what, e.AuthorizeService(devTok, c.path, c.need), fresh(devTok, c.path, c.need))
	}
	if herr := e.AuthorizeService(devTok, "/twins/dev2/methods", auth.RightsServiceConnect); herr == nil || herr.Code != CodeUnauthorized {
		t.Fatalf("another device's path was allowed: %v", herr)
	}
	// Failures are not remembered: a forged signature never is.
	good := sign("h.azure-devices.net", time.Hour)
	i := strings.Index(good, "sig=") + len("sig=")
	forged := good[:i] + "AAAA" + good[i+4:] // same sr, se and skn
	if forged == good {
		t.Fatal("forgery did not change the token")
	}
	for range 2 {
		if herr := e.AuthorizeService(forged, path, auth.RightsServiceConnect); herr == nil || herr.Code != CodeUnauthorized {
			t.Fatalf("forged token: %v", herr)
		}
	}
	if n := remembered(); n != 1 {
		t.Fatalf("%d tokens remembered after failures, want 1", n)
	}
	// Past expiry and the clock-skew allowance the remembered token fails,
	// as a fresh one does.
	c.add(time.Hour + auth.MaxClockSkew + time.Second)
	got := e.AuthorizeService(devTok, path, auth.RightsServiceConnect)
	same("expired", got, fresh(devTok, path, auth.RightsServiceConnect))
	if got == nil {
		t.Fatal("an expired remembered token was accepted")
	}
	// Long headers are never remembered, and the memory is bounded.
	padded := sign("h.azure-devices.net", time.Hour) + "&x=" + strings.Repeat("p", maxVerifiedHeader)
	if herr := e.AuthorizeService(padded, path, auth.RightsServiceConnect); herr != nil {
		t.Fatal(herr)
	}
	if _, ok := e.verified[padded]; ok {
		t.Fatal("a long header was remembered")
	}
	for i := range maxVerified + 10 {
		tok := sign("h.azure-devices.net", time.Duration(i+1)*time.Second+time.Hour)
		if herr := e.AuthorizeService(tok, path, auth.RightsServiceConnect); herr != nil {
			t.Fatal(herr)
		}
	}
	if n := remembered(); n == 0 || n > maxVerified {
		t.Fatalf("%d remembered tokens, bound %d", n, maxVerified)
	}
}
