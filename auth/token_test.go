package auth_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hubauth"
)

// The tests check that minted tokens verify with the local hub's checks
// (internal/hubauth), the same ones every hub endpoint applies.

var tokenEpoch = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

func TestKeyTokenProviderDefaults(t *testing.T) {
	clock := newFakeClock(tokenEpoch)
	res := auth.DeviceResource(hubHost, "dev1")
	p, err := auth.NewKeyTokenProvider(res, "", primaryKey, &auth.TokenOptions{Now: clock.Now})
	require.NoError(t, err)
	ctx := context.Background()
	tok, err := p.Token(ctx)
	require.NoError(t, err)
	assert.Equal(t, time.Hour, auth.DefaultTokenTTL, "DefaultTokenTTL")
	assertTime(t, tokenEpoch.Add(time.Hour), tok.ExpiresOn, "ExpiresOn (default TTL 1h)")
	assertTime(t, tokenEpoch.Add(time.Hour-9*time.Minute), tok.RenewAt, "RenewAt (15% of 1h before expiry)")
	// The value is exactly the SAS for the resource and expiry.
	assert.Equal(t, testToken(t, primaryKey, testEncode(res), "1772362800", ""), tok.Value, "Value")
	s, err := hubauth.ParseSAS(tok.Value)
	require.NoError(t, err)
	assert.NoError(t, s.Verify(res, clock.Now(), primaryKey, ""), "minted token does not verify")
	assert.Empty(t, s.KeyName, "device token has skn")

	// Cached until RenewAt.
	for _, d := range []time.Duration{time.Second, 30 * time.Minute, 51*time.Minute - time.Nanosecond} {
		clock.Set(tokenEpoch.Add(d))
		again, err := p.Token(ctx)
		require.NoError(t, err)
		require.Equal(t, tok, again, "at +%v got a new token, want the cached one", d)
		assert.False(t, tok.ShouldRenew(clock.Now()), "ShouldRenew true at +%v", d)
	}

	// At RenewAt a new token is minted.
	clock.Set(tokenEpoch.Add(51 * time.Minute))
	assert.True(t, tok.ShouldRenew(clock.Now()), "ShouldRenew false at RenewAt")
	next, err := p.Token(ctx)
	require.NoError(t, err)
	require.NotEqual(t, tok.Value, next.Value, "no new token at RenewAt")
	assertTime(t, tokenEpoch.Add(51*time.Minute+time.Hour), next.ExpiresOn, "renewed ExpiresOn")
	assertTime(t, next.ExpiresOn.Add(-9*time.Minute), next.RenewAt, "renewed RenewAt")
}

func TestKeyTokenProviderOptions(t *testing.T) {
	clock := newFakeClock(tokenEpoch.Add(500 * time.Millisecond))
	p, err := auth.NewKeyTokenProvider(hubHost, "service", primaryKey, &auth.TokenOptions{
		TTL: 10 * time.Minute, RenewBefore: 2 * time.Minute, Now: clock.Now,
	})
	require.NoError(t, err)
	tok, err := p.Token(context.Background())
	require.NoError(t, err)
	// Expiry is whole seconds (se has no fraction).
	assertTime(t, tokenEpoch.Add(10*time.Minute), tok.ExpiresOn, "ExpiresOn")
	assertTime(t, tokenEpoch.Add(8*time.Minute), tok.RenewAt, "RenewAt")
	s, err := hubauth.ParseSAS(tok.Value)
	require.NoError(t, err)
	assert.Equal(t, "service", s.KeyName, "skn")
	assert.Equal(t, hubHost, s.Resource, "resource")
	pol := hubauth.Policy{Name: "service", PrimaryKey: primaryKey, Rights: hubauth.RightsServiceConnect}
	assert.NoError(t, pol.Authorize(s, hubHost, hubauth.RightsServiceConnect, clock.Now()), "Authorize")

	// Only TTL set: RenewBefore is 15% of it.
	p, err = auth.NewKeyTokenProvider(hubHost, "", primaryKey, &auth.TokenOptions{TTL: 100 * time.Second, Now: clock.Now})
	require.NoError(t, err)
	tok, err = p.Token(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 15*time.Second, tok.ExpiresOn.Sub(tok.RenewAt), "ExpiresOn-RenewAt")

	// nil options use time.Now.
	p, err = auth.NewKeyTokenProvider(hubHost, "", primaryKey, nil)
	require.NoError(t, err)
	before := time.Now()
	tok, err = p.Token(context.Background())
	require.NoError(t, err)
	assert.WithinDuration(t, before.Add(time.Hour), tok.ExpiresOn, time.Second, "with nil options ExpiresOn is not about 1h from now")
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
			require.Error(t, err, "NewKeyTokenProvider = %v", p)
			assert.Nil(t, p, "provider returned with the error")
			assert.True(t, strings.HasPrefix(err.Error(), "iothub: "), "error %q lacks the package prefix", err)
		})
	}
	// The smallest allowed TTL works.
	_, err := auth.NewKeyTokenProvider(hubHost, "", primaryKey, &auth.TokenOptions{TTL: time.Second})
	assert.NoError(t, err, "TTL 1s")
}

func TestKeyTokenProviderUpdateKey(t *testing.T) {
	clock := newFakeClock(tokenEpoch)
	res := auth.ModuleResource(hubHost, "dev1", "mod1")
	p, err := auth.NewKeyTokenProvider(res, "", primaryKey, &auth.TokenOptions{Now: clock.Now})
	require.NoError(t, err)
	ctx := context.Background()
	old, err := p.Token(ctx)
	require.NoError(t, err)
	require.Error(t, p.UpdateKey("not base64!"), "UpdateKey with a bad key")
	// A failed update keeps the old key and cache.
	same, err := p.Token(ctx)
	require.NoError(t, err, "after failed UpdateKey")
	require.Equal(t, old, same, "after failed UpdateKey the token changed")

	clock.Advance(time.Second) // same TTL, new expiry: tokens differ by key and se
	require.NoError(t, p.UpdateKey(secondaryKey))
	fresh, err := p.Token(ctx)
	require.NoError(t, err)
	require.NotEqual(t, old.Value, fresh.Value, "UpdateKey did not drop the cached token")
	s, err := hubauth.ParseSAS(fresh.Value)
	require.NoError(t, err)
	assert.NoError(t, s.Verify(res, clock.Now(), secondaryKey, ""), "new token does not verify with the new key")
	require.ErrorIs(t, s.Verify(res, clock.Now(), primaryKey, ""), hubauth.ErrSASSignature)

	// Tokens are deterministic: rotating back at the original instant
	// reproduces the original token.
	clock.Set(tokenEpoch)
	require.NoError(t, p.UpdateKey(primaryKey))
	back, err := p.Token(ctx)
	require.NoError(t, err)
	assert.Equal(t, old, back, "rotating back at the original instant")
}

func TestKeyTokenProviderCancelled(t *testing.T) {
	p, err := auth.NewKeyTokenProvider(hubHost, "", primaryKey, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tok, err := p.Token(ctx)
	require.ErrorIs(t, err, context.Canceled, "Token(cancelled)")
	assert.Equal(t, auth.Token{}, tok, "Token(cancelled) returned a token")
	ctx, cancel = context.WithDeadline(context.Background(), time.Unix(1, 0))
	defer cancel()
	_, err = p.Token(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded, "Token(past deadline)")
}

func TestKeyTokenProviderConcurrent(t *testing.T) {
	clock := newFakeClock(tokenEpoch)
	res := auth.DeviceResource(hubHost, "dev1")
	p, err := auth.NewKeyTokenProvider(res, "", primaryKey, &auth.TokenOptions{TTL: time.Minute, Now: clock.Now})
	require.NoError(t, err)
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
				s, err := hubauth.ParseSAS(tok.Value)
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
		assert.NoError(t, err)
	}
}

func TestTokenShouldRenew(t *testing.T) {
	renew := tokenEpoch
	tok := auth.Token{Value: "x", ExpiresOn: renew.Add(time.Minute), RenewAt: renew}
	assert.False(t, tok.ShouldRenew(renew.Add(-time.Nanosecond)), "ShouldRenew before RenewAt")
	assert.True(t, tok.ShouldRenew(renew), "ShouldRenew false at RenewAt")
	assert.True(t, tok.ShouldRenew(renew.Add(time.Hour)), "ShouldRenew false after RenewAt")
	static := auth.Token{Value: "x", ExpiresOn: renew}
	assert.False(t, static.ShouldRenew(renew.AddDate(100, 0, 0)), "ShouldRenew true for a token without RenewAt")
}

func TestStaticToken(t *testing.T) {
	res := auth.DeviceResource(hubHost, "dev1")
	const future = 4102444800 // 2100-01-01
	value := testToken(t, primaryKey, testEncode(res), "4102444800", "")
	st, err := auth.NewStaticToken(value)
	require.NoError(t, err)
	assertTime(t, time.Unix(future, 0), st.ExpiresOn(), "ExpiresOn()")
	tok, err := st.Token(context.Background())
	require.NoError(t, err)
	assert.Equal(t, value, tok.Value, "Value is not the given token")
	assertTime(t, time.Unix(future, 0), tok.ExpiresOn, "Token().ExpiresOn")
	assert.True(t, tok.RenewAt.IsZero(), "RenewAt = %v, want zero", tok.RenewAt)
	assert.False(t, tok.ShouldRenew(time.Unix(future, 0).Add(time.Hour)), "ShouldRenew true for a static token")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = st.Token(ctx)
	assert.ErrorIs(t, err, context.Canceled, "Token(cancelled)")

	expired, err := auth.NewStaticToken(testToken(t, primaryKey, testEncode(res), "1000", ""))
	require.NoError(t, err)
	tok, err = expired.Token(context.Background())
	require.ErrorIs(t, err, auth.ErrSASExpired)
	assert.Equal(t, auth.Token{}, tok, "expired Token() returned a token")

	for _, bad := range []string{"", "sr=a&sig=b&se=1", "SharedAccessSignature sr=a&se=1"} {
		st, err := auth.NewStaticToken(bad)
		assert.ErrorIs(t, err, auth.ErrInvalidSAS, "NewStaticToken(%q) = %v", bad, st)
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
			require.NoError(t, err)
			tp, err := c.TokenProvider(opts)
			require.NoError(t, err)
			require.IsType(t, (*auth.KeyTokenProvider)(nil), tp, "provider")
			tok, err := tp.Token(context.Background())
			require.NoError(t, err)
			assertTime(t, now.Add(time.Hour), tok.ExpiresOn, "ExpiresOn (options passed through)")
			s, err := hubauth.ParseSAS(tok.Value)
			require.NoError(t, err)
			assert.Equal(t, tt.wantResource, s.Resource, "token resource")
			assert.Equal(t, tt.wantSKN, s.KeyName, "token skn")
			assert.NoError(t, s.Verify(tt.wantResource, now, primaryKey, ""), "Verify")
		})
	}

	t.Run("SAS", func(t *testing.T) {
		c, err := auth.ParseDeviceConnectionString("HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessSignature=" + sas)
		require.NoError(t, err)
		tp, err := c.TokenProvider(opts)
		require.NoError(t, err)
		st, ok := tp.(*auth.StaticToken)
		require.True(t, ok, "provider is %T, want *auth.StaticToken", tp)
		assertTime(t, time.Unix(4102444800, 0), st.ExpiresOn(), "ExpiresOn()")
		tok, err := tp.Token(context.Background())
		require.NoError(t, err)
		assert.Equal(t, sas, tok.Value, "Value")
	})

	t.Run("x509", func(t *testing.T) {
		c, err := auth.ParseDeviceConnectionString("HostName=myhub.azure-devices.net;DeviceId=dev1;x509=true")
		require.NoError(t, err)
		tp, err := c.TokenProvider(nil)
		require.Error(t, err, "TokenProvider = %v", tp)
		assert.Nil(t, tp, "provider returned with the error")
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
			require.Error(t, err, "TokenProvider = %v", tp)
			// A nil interface, not a typed nil pointer (assert.Nil would
			// accept both).
			assert.True(t, tp == nil, "provider is a non-nil %T holding %#v; want a nil interface with the error", tp, tp)
		})
	}
}

func TestKeyTokenProviderRenew(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	p, err := auth.NewKeyTokenProvider("h/devices/d", "", primaryKey, &auth.TokenOptions{Now: func() time.Time { return now }})
	require.NoError(t, err)
	first, err := p.Token(context.Background())
	require.NoError(t, err)
	now = now.Add(2 * time.Second)
	cached, err := p.Token(context.Background())
	require.NoError(t, err)
	require.Equal(t, first, cached, "Token did not return the cached token before RenewAt")
	renewed, err := p.Renew(context.Background())
	require.NoError(t, err)
	require.True(t, renewed.ExpiresOn.After(first.ExpiresOn), "Renew returned %v, want a later token than %v", renewed, first)
	require.NotEqual(t, first.Value, renewed.Value, "Renew returned the same token")
	again, err := p.Token(context.Background())
	require.NoError(t, err)
	require.Equal(t, renewed, again, "Token after Renew did not return the renewed token")
}

// assertTime checks two instants are equal (time.Time.Equal: the location
// and monotonic reading do not matter).
func assertTime(t *testing.T, want, got time.Time, msg string) {
	t.Helper()
	assert.True(t, want.Equal(got), "%s = %v, want %v", msg, got, want)
}
