package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/iothub-go/iothub/auth"
)

// TestAuthorizeServiceRemembered checks that a token remembered after its
// first success is still refused once it expires, and is remembered only
// for the path and rights it passed for.
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
	devTok := sign("h.azure-devices.net/twins/dev1", time.Hour)
	const path = "/twins/dev1/methods"
	for i := range 3 {
		if herr := e.AuthorizeService(devTok, path, auth.RightsServiceConnect); herr != nil {
			t.Fatalf("call %d: %v", i, herr)
		}
	}
	// Same token, a path it does not cover, and rights the policy lacks.
	if herr := e.AuthorizeService(devTok, "/twins/dev2/methods", auth.RightsServiceConnect); herr == nil || herr.Code != CodeUnauthorized {
		t.Fatalf("other path: %v", herr)
	}
	if herr := e.AuthorizeService(devTok, path, auth.RightsRegistryWrite); herr == nil || herr.Code != CodeUnauthorized {
		t.Fatalf("other rights: %v", herr)
	}
	// Past expiry and the clock-skew allowance, the remembered token fails.
	c.add(time.Hour + auth.MaxClockSkew + time.Second)
	if herr := e.AuthorizeService(devTok, path, auth.RightsServiceConnect); herr == nil || herr.Code != CodeUnauthorized {
		t.Fatalf("expired remembered token: %v", herr)
	}
	// A token with a forged signature is never let through by the memory of
	// a good one.
	good := sign("h.azure-devices.net", time.Hour)
	if herr := e.AuthorizeService(good, path, auth.RightsServiceConnect); herr != nil {
		t.Fatal(herr)
	}
	i := strings.Index(good, "sig=") + len("sig=")
	forged := good[:i] + "AAAA" + good[i+4:] // same sr, se and skn
	if forged == good {
		t.Fatal("forgery did not change the token")
	}
	if herr := e.AuthorizeService(forged, path, auth.RightsServiceConnect); herr == nil || herr.Code != CodeUnauthorized {
		t.Fatalf("forged token: %v", herr)
	}
	// The memory is bounded.
	for i := range maxVerified + 10 {
		tok := sign("h.azure-devices.net", time.Duration(i+1)*time.Second+time.Hour)
		if herr := e.AuthorizeService(tok, path, auth.RightsServiceConnect); herr != nil {
			t.Fatal(herr)
		}
	}
	e.mu.Lock()
	n := len(e.verified)
	e.mu.Unlock()
	if n > maxVerified {
		t.Fatalf("%d remembered tokens, bound %d", n, maxVerified)
	}
}
