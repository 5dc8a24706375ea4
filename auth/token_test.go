package auth_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iothub-go/iothub/auth"
)

var tokenEpoch = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

func TestKeyTokenProviderDefaults(t *testing.T) {
	clock := newFakeClock(tokenEpoch)
	res := auth.DeviceResource(hubHost, "dev1")
	p, err := auth.NewKeyTokenProvider(res, "", primaryKey, &auth.TokenOptions{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tok, err := p.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if auth.DefaultTokenTTL != time.Hour {
		t.Errorf("DefaultTokenTTL = %v, want 1h", auth.DefaultTokenTTL)
	}
	if want := tokenEpoch.Add(time.Hour); !tok.ExpiresOn.Equal(want) {
		t.Errorf("ExpiresOn = %v, want %v (default TTL 1h)", tok.ExpiresOn, want)
	}
	if want := tokenEpoch.Add(time.Hour - 9*time.Minute); !tok.RenewAt.Equal(want) {
		t.Errorf("RenewAt = %v, want %v (15%% of 1h before expiry)", tok.RenewAt, want)
	}
	// The value is exactly the SAS for the resource and expiry.
	want := testToken(t, primaryKey, testEncode(res), "1772362800", "")
	if tok.Value != want {
		t.Errorf("Value = %q, want %q", tok.Value, want)
	}
	s, err := auth.ParseSAS(tok.Value)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(res, clock.Now(), primaryKey, ""); err != nil {
		t.Errorf("minted token does not verify: %v", err)
	}
	if s.KeyName != "" {
		t.Errorf("device token has skn %q", s.KeyName)
	}

	// Cached until RenewAt.
	for _, d := range []time.Duration{time.Second, 30 * time.Minute, 51*time.Minute - time.Nanosecond} {
		clock.Set(tokenEpoch.Add(d))
		again, err := p.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if again != tok {
			t.Fatalf("at +%v got a new token %v, want the cached one", d, again.ExpiresOn)
		}
		if tok.ShouldRenew(clock.Now()) {
			t.Errorf("ShouldRenew true at +%v", d)
		}
	}

	// At RenewAt a new token is minted.
	clock.Set(tokenEpoch.Add(51 * time.Minute))
	if !tok.ShouldRenew(clock.Now()) {
		t.Error("ShouldRenew false at RenewAt")
	}
	next, err := p.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if next.Value == tok.Value {
		t.Fatal("no new token at RenewAt")
	}
	if want := tokenEpoch.Add(51*time.Minute + time.Hour); !next.ExpiresOn.Equal(want) {
		t.Errorf("renewed ExpiresOn = %v, want %v", next.ExpiresOn, want)
	}
	if want := next.ExpiresOn.Add(-9 * time.Minute); !next.RenewAt.Equal(want) {
		t.Errorf("renewed RenewAt = %v, want %v", next.RenewAt, want)
	}
}

func TestKeyTokenProviderOptions(t *testing.T) {
	clock := newFakeClock(tokenEpoch.Add(500 * time.Millisecond))
	p, err := auth.NewKeyTokenProvider(hubHost, "service", primaryKey, &auth.TokenOptions{
		TTL: 10 * time.Minute, RenewBefore: 2 * time.Minute, Now: clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := p.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Expiry is whole seconds (se has no fraction).
	if want := tokenEpoch.Add(10 * time.Minute); !tok.ExpiresOn.Equal(want) {
		t.Errorf("ExpiresOn = %v, want %v", tok.ExpiresOn, want)
	}
	if want := tokenEpoch.Add(8 * time.Minute); !tok.RenewAt.Equal(want) {
		t.Errorf("RenewAt = %v, want %v", tok.RenewAt, want)
	}
	s, err := auth.ParseSAS(tok.Value)
	if err != nil {
		t.Fatal(err)
	}
	if s.KeyName != "service" || s.Resource != hubHost {
		t.Errorf("token for %q skn %q, want %q skn service", s.Resource, s.KeyName, hubHost)
	}
	pol := auth.Policy{Name: "service", PrimaryKey: primaryKey, Rights: auth.RightsServiceConnect}
	if err := pol.Authorize(s, hubHost, auth.RightsServiceConnect, clock.Now()); err != nil {
		t.Errorf("Authorize: %v", err)
	}

	// Only TTL set: RenewBefore is 15% of it.
	p, err = auth.NewKeyTokenProvider(hubHost, "", primaryKey, &auth.TokenOptions{TTL: 100 * time.Second, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	tok, err = p.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tok.ExpiresOn.Sub(tok.RenewAt), 15*time.Second; got != want {
		t.Errorf("ExpiresOn-RenewAt = %v, want %v", got, want)
	}

	// nil options use time.Now.
	p, err = auth.NewKeyTokenProvider(hubHost, "", primaryKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	tok, err = p.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if d := tok.ExpiresOn.Sub(before); d < time.Hour-time.Second || d > time.Hour+time.Second {
		t.Errorf("with nil options ExpiresOn is %v from now, want about 1h", d)
	}
}

func TestKeyTokenProviderBadOptions(t *testing.T) {
	tests := []struct {
		name     string
		resource string
		key      string
		opts     *auth.TokenOptions
	}{
		{"empty resource", "", primaryKey, nil},
		{"bad key", hubHost, "not base64!", nil},
		{"empty key", hubHost, "", nil},
		{"TTL below one second", hubHost, primaryKey, &auth.TokenOptions{TTL: 999 * time.Millisecond}},
		{"negative TTL", hubHost, primaryKey, &auth.TokenOptions{TTL: -time.Hour}},
		{"negative RenewBefore", hubHost, primaryKey, &auth.TokenOptions{RenewBefore: -time.Minute}},
		{"RenewBefore equals TTL", hubHost, primaryKey, &auth.TokenOptions{TTL: time.Minute, RenewBefore: time.Minute}},
		{"RenewBefore beyond TTL", hubHost, primaryKey, &auth.TokenOptions{TTL: time.Minute, RenewBefore: time.Hour}},
		{"RenewBefore beyond default TTL", hubHost, primaryKey, &auth.TokenOptions{RenewBefore: 2 * time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := auth.NewKeyTokenProvider(tt.resource, "", tt.key, tt.opts)
			if err == nil {
				t.Fatalf("NewKeyTokenProvider = %v, want an error", p)
			}
			if p != nil {
				t.Errorf("provider %v returned with the error", p)
			}
			if !strings.HasPrefix(err.Error(), "iothub: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
	// The smallest allowed TTL works.
	if _, err := auth.NewKeyTokenProvider(hubHost, "", primaryKey, &auth.TokenOptions{TTL: time.Second}); err != nil {
		t.Errorf("TTL 1s: %v", err)
	}
}

func TestKeyTokenProviderUpdateKey(t *testing.T) {
	clock := newFakeClock(tokenEpoch)
	res := auth.ModuleResource(hubHost, "dev1", "mod1")
	p, err := auth.NewKeyTokenProvider(res, "", primaryKey, &auth.TokenOptions{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	old, err := p.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.UpdateKey("not base64!"); err == nil {
		t.Fatal("UpdateKey with a bad key: no error")
	}
	// A failed update keeps the old key and cache.
	same, err := p.Token(ctx)
	if err != nil || same != old {
		t.Fatalf("after failed UpdateKey: %v, token changed = %v", err, same != old)
	}

	clock.Advance(time.Second) // same TTL, new expiry: tokens differ by key and se
	if err := p.UpdateKey(secondaryKey); err != nil {
		t.Fatal(err)
	}
	fresh, err := p.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.Value == old.Value {
		t.Fatal("UpdateKey did not drop the cached token")
	}
	s, err := auth.ParseSAS(fresh.Value)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(res, clock.Now(), secondaryKey, ""); err != nil {
		t.Errorf("new token does not verify with the new key: %v", err)
	}
	wantErrIs(t, s.Verify(res, clock.Now(), primaryKey, ""), auth.ErrSASSignature)

	// Tokens are deterministic: rotating back at the original instant
	// reproduces the original token.
	clock.Set(tokenEpoch)
	if err := p.UpdateKey(primaryKey); err != nil {
		t.Fatal(err)
	}
	back, err := p.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if back != old {
		t.Errorf("rotating back at the original instant: got %v, want the original token", back.ExpiresOn)
	}
}

func TestKeyTokenProviderCancelled(t *testing.T) {
	p, err := auth.NewKeyTokenProvider(hubHost, "", primaryKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tok, err := p.Token(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Token(cancelled) error = %v, want context.Canceled", err)
	}
	if tok != (auth.Token{}) {
		t.Errorf("Token(cancelled) returned %v", tok)
	}
	ctx, cancel = context.WithDeadline(context.Background(), time.Unix(1, 0))
	defer cancel()
	if _, err := p.Token(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Token(past deadline) error = %v, want context.DeadlineExceeded", err)
	}
}

func TestKeyTokenProviderConcurrent(t *testing.T) {
	clock := newFakeClock(tokenEpoch)
	res := auth.DeviceResource(hubHost, "dev1")
	p, err := auth.NewKeyTokenProvider(res, "", primaryKey, &auth.TokenOptions{TTL: time.Minute, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				if i == 0 {
					clock.Advance(time.Second)
				}
				if i == 1 && j%10 == 0 {
					if err := p.UpdateKey(primaryKey); err != nil {
						errs <- err
						return
					}
				}
				tok, err := p.Token(context.Background())
				if err != nil {
					errs <- err
					return
				}
				s, err := auth.ParseSAS(tok.Value)
				if err != nil {
					errs <- err
					return
				}
				if err := s.CheckSignature(primaryKey); err != nil {
					errs <- err
					return
				}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestTokenShouldRenew(t *testing.T) {
	renew := tokenEpoch
	tok := auth.Token{Value: "x", ExpiresOn: renew.Add(time.Minute), RenewAt: renew}
	if tok.ShouldRenew(renew.Add(-time.Nanosecond)) {
		t.Error("ShouldRenew before RenewAt")
	}
	if !tok.ShouldRenew(renew) || !tok.ShouldRenew(renew.Add(time.Hour)) {
		t.Error("ShouldRenew false at or after RenewAt")
	}
	static := auth.Token{Value: "x", ExpiresOn: renew}
	if static.ShouldRenew(renew.AddDate(100, 0, 0)) {
		t.Error("ShouldRenew true for a token without RenewAt")
	}
}

func TestStaticToken(t *testing.T) {
	res := auth.DeviceResource(hubHost, "dev1")
	const future = 4102444800 // 2100-01-01
	value := testToken(t, primaryKey, testEncode(res), "4102444800", "")
	st, err := auth.NewStaticToken(value)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Unix(future, 0); !st.ExpiresOn().Equal(want) {
		t.Errorf("ExpiresOn() = %v, want %v", st.ExpiresOn(), want)
	}
	tok, err := st.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tok.Value != value {
		t.Errorf("Value = %q, want the given token", tok.Value)
	}
	if !tok.ExpiresOn.Equal(time.Unix(future, 0)) {
		t.Errorf("Token().ExpiresOn = %v", tok.ExpiresOn)
	}
	if !tok.RenewAt.IsZero() {
		t.Errorf("RenewAt = %v, want zero", tok.RenewAt)
	}
	if tok.ShouldRenew(time.Unix(future, 0).Add(time.Hour)) {
		t.Error("ShouldRenew true for a static token")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := st.Token(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Token(cancelled) error = %v, want context.Canceled", err)
	}

	expired, err := auth.NewStaticToken(testToken(t, primaryKey, testEncode(res), "1000", ""))
	if err != nil {
		t.Fatal(err)
	}
	tok, err = expired.Token(context.Background())
	wantErrIs(t, err, auth.ErrSASExpired)
	if tok != (auth.Token{}) {
		t.Errorf("expired Token() returned %v", tok)
	}

	for _, bad := range []string{"", "sr=a&sig=b&se=1", "SharedAccessSignature sr=a&se=1"} {
		st, err := auth.NewStaticToken(bad)
		if err == nil {
			t.Errorf("NewStaticToken(%q) = %v, want an error", bad, st)
			continue
		}
		wantErrIs(t, err, auth.ErrInvalidSAS)
	}
}

func TestConnectionStringTokenProvider(t *testing.T) {
	now := time.Unix(vectorExpiry, 0)
	opts := &auth.TokenOptions{Now: func() time.Time { return now }}
	sas := testToken(t, primaryKey, testEncode(auth.DeviceResource(devHost, "dev1")), "4102444800", "")

	tests := []struct {
		name         string
		cs           string
		service      bool
		wantResource string
		wantSKN      string
	}{
		{"device key", "HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=" + primaryKey, false, "myhub.azure-devices.net/devices/dev1", ""},
		{"module key", "HostName=myhub.azure-devices.net;DeviceId=dev1;ModuleId=m1;SharedAccessKey=" + primaryKey, false, "myhub.azure-devices.net/devices/dev1/modules/m1", ""},
		{"device with policy key", "HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKeyName=device;SharedAccessKey=" + primaryKey, false, "myhub.azure-devices.net/devices/dev1", "device"},
		{"device with gateway", "HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=" + primaryKey + ";GatewayHostName=gw:8883", false, "myhub.azure-devices.net/devices/dev1", ""},
		{"service key", "HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + primaryKey, true, "myhub.azure-devices.net", "iothubowner"},
		{"service key with gateway", "HostName=myhub.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=" + primaryKey + ";GatewayHostName=127.0.0.1:8443", true, "myhub.azure-devices.net", "service"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parse := auth.ParseDeviceConnectionString
			if tt.service {
				parse = auth.ParseServiceConnectionString
			}
			c, err := parse(tt.cs)
			if err != nil {
				t.Fatal(err)
			}
			tp, err := c.TokenProvider(opts)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := tp.(*auth.KeyTokenProvider); !ok {
				t.Fatalf("provider is %T, want *auth.KeyTokenProvider", tp)
			}
			tok, err := tp.Token(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if want := now.Add(time.Hour); !tok.ExpiresOn.Equal(want) {
				t.Errorf("ExpiresOn = %v, want %v (options passed through)", tok.ExpiresOn, want)
			}
			s, err := auth.ParseSAS(tok.Value)
			if err != nil {
				t.Fatal(err)
			}
			if s.Resource != tt.wantResource || s.KeyName != tt.wantSKN {
				t.Errorf("token for %q skn %q, want %q skn %q", s.Resource, s.KeyName, tt.wantResource, tt.wantSKN)
			}
			if err := s.Verify(tt.wantResource, now, primaryKey, ""); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}

	t.Run("SAS", func(t *testing.T) {
		c, err := auth.ParseDeviceConnectionString("HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessSignature=" + sas)
		if err != nil {
			t.Fatal(err)
		}
		tp, err := c.TokenProvider(opts)
		if err != nil {
			t.Fatal(err)
		}
		st, ok := tp.(*auth.StaticToken)
		if !ok {
			t.Fatalf("provider is %T, want *auth.StaticToken", tp)
		}
		if !st.ExpiresOn().Equal(time.Unix(4102444800, 0)) {
			t.Errorf("ExpiresOn() = %v", st.ExpiresOn())
		}
		tok, err := tp.Token(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if tok.Value != sas {
			t.Errorf("Value = %q, want %q", tok.Value, sas)
		}
	})

	t.Run("x509", func(t *testing.T) {
		c, err := auth.ParseDeviceConnectionString("HostName=myhub.azure-devices.net;DeviceId=dev1;x509=true")
		if err != nil {
			t.Fatal(err)
		}
		tp, err := c.TokenProvider(nil)
		if err == nil {
			t.Fatalf("TokenProvider = %v, want an error", tp)
		}
		if tp != nil {
			t.Errorf("provider %#v returned with the error", tp)
		}
	})

	// Hand-built connection strings that bypass the parser: the error must
	// come with a nil interface, not a typed nil pointer.
	broken := []struct {
		name string
		c    auth.ConnectionString
	}{
		{"no credential", auth.ConnectionString{HostName: devHost, DeviceID: "dev1"}},
		{"bad key", auth.ConnectionString{HostName: devHost, DeviceID: "dev1", SharedAccessKey: "not base64!"}},
		{"bad SAS", auth.ConnectionString{HostName: devHost, DeviceID: "dev1", SharedAccessSignature: "garbage"}},
		{"bad options", auth.ConnectionString{HostName: devHost, DeviceID: "dev1", SharedAccessKey: primaryKey}},
	}
	for _, tt := range broken {
		t.Run(tt.name, func(t *testing.T) {
			o := (*auth.TokenOptions)(nil)
			if tt.name == "bad options" {
				o = &auth.TokenOptions{TTL: time.Millisecond}
			}
			tp, err := tt.c.TokenProvider(o)
			if err == nil {
				t.Fatalf("TokenProvider = %v, want an error", tp)
			}
			if tp != nil {
				t.Errorf("provider is a non-nil %T holding %#v; want a nil interface with the error", tp, tp)
			}
		})
	}
}

func TestKeyTokenProviderRenew(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	p, err := auth.NewKeyTokenProvider("h/devices/d", "", primaryKey, &auth.TokenOptions{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := p.Token(context.Background())
	now = now.Add(2 * time.Second)
	cached, _ := p.Token(context.Background())
	if cached != first {
		t.Fatal("Token did not return the cached token before RenewAt")
	}
	renewed, err := p.Renew(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !renewed.ExpiresOn.After(first.ExpiresOn) || renewed.Value == first.Value {
		t.Fatalf("Renew returned %v, want a later token than %v", renewed, first)
	}
	if again, _ := p.Token(context.Background()); again != renewed {
		t.Fatal("Token after Renew did not return the renewed token")
	}
}
