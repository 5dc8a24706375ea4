package reliability_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/iothub-go/iothub/internal/testutil/syncbuf"
	"github.com/iothub-go/iothub/internal/testutil/testkey"

	azlog "github.com/Azure/azure-sdk-for-go/sdk/azcore/log"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/service"
	"github.com/iothub-go/iothub/transport"
)

// The hub, the device client on every transport and the service client log
// at debug level through connects, refused credentials, token renewal,
// dropped connections, method calls and telemetry: no key, no signature, no token and no
// payload may appear in what they wrote.
func TestNoSecretsInLogs(t *testing.T) {
	var out syncbuf.Buffer
	logger := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// azcore's listener is process-wide: this test is not parallel.
	azlog.SetListener(func(ev azlog.Event, msg string) { fmt.Fprintf(&out, "azcore %s: %s\n", ev, msg) })
	defer azlog.SetListener(nil)

	f := newFixture(t, &fixtureOptions{logger: logger})
	f.svc = f.serviceClient(t, f.serviceConnString("iothubowner", f.ownerKey), policy.RetryOptions{MaxRetries: 1, RetryDelay: time.Millisecond})
	const canary = "payload-canary-7f3a"
	secrets := map[string]string{"iothubowner key": f.ownerKey}
	for _, p := range []string{"service", "device", "registryRead", "registryReadWrite"} {
		secrets[p+" key"] = f.policyKey(p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	for _, tp := range transports {
		id := "dev-" + tp.name
		f.addDevice(id)
		f.mu.Lock()
		secrets[id+" primary key"], secrets[id+" secondary key"] = f.keys[id][0], f.keys[id][1]
		f.mu.Unlock()

		// A client with 2 s tokens renews them while it works.
		d := f.connect(t, id, tp, &devOptions{opts: func(o *device.ClientOptions) {
			o.Logger = logger
			o.SAS = auth.TokenOptions{TTL: 2 * time.Second}
		}})
		d.status.WaitFor(t, device.ConnectionStateConnected)
		p := fmt.Sprintf(`{"secret":%q}`, canary)
		r, err := f.invoke(ctx, id, "echo", json.RawMessage(p), 10*time.Second, 5*time.Second)
		require.NoError(t, err, "%s: echo", id)
		require.Equal(t, p, string(r.Payload), "%s: echo", id)
		require.NoError(t, d.c.SendEvent(ctx, &device.Message{Body: []byte(canary), Properties: map[string]string{"k": canary}}), "%s: SendEvent", id)
		time.Sleep(2 * time.Second) // at least one renewal
		f.engine().DropConnection(identity(id))
		// With 2 s tokens MQTT renews by reconnecting every 1.7 s: a call
		// caught by a renewal ends in 404103, a documented outcome.
		for i := 0; ; i++ {
			_, err := f.invoke(ctx, id, "echo", json.RawMessage(p), 10*time.Second, 10*time.Second)
			if err == nil {
				break
			}
			require.ErrorIs(t, err, service.ErrDeviceNotOnline, "%s: echo after a drop", id)
			require.Less(t, i, 10, "%s: echo after a drop: %v", id, err)
		}

		// A client with a wrong key is refused.
		wrongKey := testkey.New()
		secrets["wrong key"] = wrongKey
		cs := auth.ConnectionString{HostName: hostName, GatewayHostName: f.addr, DeviceID: id, SharedAccessKey: wrongKey}.Reveal()
		c, err := device.NewClientFromConnectionString(cs, &device.ClientOptions{Transport: tp.newT(0), TLSConfig: f.tlsConfig(), Retry: fastRetry, Logger: logger})
		require.NoError(t, err)
		require.ErrorIs(t, c.Connect(ctx), transport.ErrNotAuthorized, "%s: wrong key", id)
		c.Close(ctx)
		// A forged token presented directly.
		forged, err := auth.SignSAS(identity(id).Resource(), "", testkey.New(), time.Now().Add(time.Hour))
		require.NoError(t, err)
		secrets["forged token"] = forged
		require.ErrorIs(t, f.dialWith(tp, identity(id), forged), transport.ErrNotAuthorized, "%s: forged token", id)
	}
	// The service client with a wrong key, and with a fixed token.
	wrongSvc := testkey.New()
	secrets["wrong service key"] = wrongSvc
	bad := f.serviceClient(t, f.serviceConnString("iothubowner", wrongSvc), policy.RetryOptions{MaxRetries: -1})
	_, err := invokeWith(ctx, bad, "dev-mqtt", "echo", nil, 5*time.Second, 0)
	require.ErrorIs(t, err, service.ErrUnauthorized, "wrong service key")
	fixed, err := auth.SignSAS(hostName, "iothubowner", f.ownerKey, time.Now().Add(time.Hour))
	require.NoError(t, err)
	secrets["fixed service token"] = fixed
	fixedCS := auth.ConnectionString{HostName: hostName, GatewayHostName: f.addr, SharedAccessKeyName: "iothubowner", SharedAccessSignature: fixed}.Reveal()
	fixedSvc := f.serviceClient(t, fixedCS, policy.RetryOptions{MaxRetries: -1})
	// dev-mqtt still renews its 2 s tokens by reconnecting: a call caught
	// by a renewal ends in 404103, as above.
	for i := 0; ; i++ {
		_, err = invokeWith(ctx, fixedSvc, "dev-mqtt", "echo", json.RawMessage(`"`+canary+`"`), 5*time.Second, 0)
		if err == nil {
			break
		}
		require.ErrorIs(t, err, service.ErrDeviceNotOnline, "fixed service token")
		require.Less(t, i, 10, "fixed service token: %v", err)
	}
	f.stop() // the hub logs its shutdown too

	logs := out.String()
	require.True(t, strings.Contains(logs, "level=DEBUG") || strings.Contains(logs, "level=INFO"),
		"nothing was logged: the scan would prove nothing")
	for name, s := range secrets {
		for _, form := range secretForms(s) {
			// Not assert.NotContains: its message would print every log line.
			assert.False(t, strings.Contains(logs, form), "the logs contain the %s (%q)", name, form)
		}
	}
	for _, re := range []*regexp.Regexp{
		regexp.MustCompile(`(?i)sig=`),
		regexp.MustCompile(`(?i)SharedAccessSignature`),
		regexp.MustCompile(`(?i)SharedAccessKey=`),
		regexp.MustCompile(canary),
	} {
		if loc := re.FindStringIndex(logs); loc != nil {
			assert.Fail(t, "a secret in the logs", "the logs contain %s: …%s…", re, logs[max(loc[0]-120, 0):min(loc[1]+60, len(logs))])
		}
	}
	t.Logf("scanned %d bytes of logs (%d lines)", len(logs), strings.Count(logs, "\n"))
}

// secretForms returns s and the forms it takes when encoded: the signature
// part of a token (raw and URL-decoded), and URL encodings.
func secretForms(s string) []string {
	forms := []string{s, url.QueryEscape(s), url.PathEscape(s)}
	if i := strings.Index(s, "sig="); i >= 0 {
		sig := s[i+4:]
		if j := strings.IndexByte(sig, '&'); j >= 0 {
			sig = sig[:j]
		}
		forms = append(forms, sig)
		if u, err := url.QueryUnescape(sig); err == nil {
			forms = append(forms, u)
		}
	}
	return forms
}
