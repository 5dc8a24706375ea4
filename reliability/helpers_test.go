// Package reliability_test proves, black-box, that the device SDK, the
// service client and the local hub keep working under network faults, hub
// faults and hostile input. See RELIABILITY.md at the repository root.
package reliability_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/iothub-go/iothub"
	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/internal/faultproxy"
	"github.com/iothub-go/iothub/internal/hub"
	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/internal/pki"
	"github.com/iothub-go/iothub/internal/testutil/statuslog"
	"github.com/iothub-go/iothub/internal/testutil/testkey"
	"github.com/iothub-go/iothub/service"
	"github.com/iothub-go/iothub/transport"
	"github.com/iothub-go/iothub/transport/amqp"
	"github.com/iothub-go/iothub/transport/mqtt"
)

// Every goroutine of the SDK, the hub and the fault proxy must be gone once
// the tests have closed what they opened. goleak waits up to about 40 s for
// stragglers: a paho Publish caught by a connection loss blocks for paho's
// 30 s hand-over timeout before it ends (see transport/mqtt's publish); a real
// leak lives forever and is still reported.
//
// The scenarios mostly wait (for keep-alives, time-outs, backoff), so unless
// -parallel is given they run 8 at a time rather than GOMAXPROCS at a time.
// The soak test and the log scan are not parallel and run alone first.
func TestMain(m *testing.M) {
	flag.Parse()
	parallelSet := false
	flag.Visit(func(fl *flag.Flag) { parallelSet = parallelSet || fl.Name == "test.parallel" })
	if !parallelSet {
		_ = flag.Set("test.parallel", "8")
	}
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(40 * time.Second)
		for {
			err := goleak.Find()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "goleak: goroutines left after the tests: %v\n", err)
				code = 1
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	os.Exit(code)
}

// tport is one device transport that carries direct methods. newT returns
// it with the given keep-alive (MQTT keep-alive, AMQP idle time-out); zero
// means the transport's default.
type tport struct {
	name string
	newT func(keepAlive time.Duration) transport.Transport
}

// transports are the four method transports. Every scenario runs over each.
var transports = []tport{
	{"mqtt", func(ka time.Duration) transport.Transport { return mqtt.New(&mqtt.Options{KeepAlive: ka}) }},
	{"mqtt-ws", func(ka time.Duration) transport.Transport {
		return mqtt.New(&mqtt.Options{WebSocket: true, KeepAlive: ka})
	}},
	{"amqp", func(ka time.Duration) transport.Transport { return amqp.New(&amqp.Options{IdleTimeout: ka}) }},
	{"amqp-ws", func(ka time.Duration) transport.Transport {
		return amqp.New(&amqp.Options{WebSocket: true, IdleTimeout: ka})
	}},
}

// fastRetry keeps reconnects quick.
var fastRetry = iothub.RetryOptions{RetryDelay: 20 * time.Millisecond, MaxRetryDelay: 250 * time.Millisecond}

const hostName = "localhost"

// fixture is a hub that can be restarted on the same address with the same
// CA, policies and registry, a fault proxy in front of it for devices, and
// a service client.
type fixture struct {
	t        testing.TB
	ca       *pki.CA
	ownerKey string
	addr     string
	logger   *slog.Logger
	proxy    *faultproxy.Proxy
	svc      *service.Client

	mu   sync.Mutex
	h    *hub.Hub
	keys map[string][2]string // identity → primary, secondary key
	x509 map[string]string    // identity → SHA-256 thumbprint; "" for CA-signed
}

type fixtureOptions struct {
	logger *slog.Logger
	// svcRetry overrides the service client's retry options.
	svcRetry *policy.RetryOptions
}

func newFixture(t testing.TB, o *fixtureOptions) *fixture {
	t.Helper()
	if o == nil {
		o = &fixtureOptions{}
	}
	ca, err := pki.NewCA("reliability hub CA")
	require.NoError(t, err)
	f := &fixture{t: t, ca: ca, ownerKey: testkey.New(), addr: freeAddr(t), logger: o.logger, keys: map[string][2]string{}, x509: map[string]string{}}
	f.start()
	t.Cleanup(func() {
		f.mu.Lock()
		h := f.h
		f.mu.Unlock()
		if h != nil {
			h.Close()
		}
	})
	p, err := faultproxy.New(f.addr)
	require.NoError(t, err)
	f.proxy = p
	t.Cleanup(func() { p.Close() })
	retry := policy.RetryOptions{MaxRetries: 3, RetryDelay: 20 * time.Millisecond, MaxRetryDelay: 100 * time.Millisecond}
	if o.svcRetry != nil {
		retry = *o.svcRetry
	}
	f.svc = f.serviceClient(t, f.serviceConnString("iothubowner", f.ownerKey), retry)
	return f
}

// freeAddr picks a loopback port from a listener it closes again.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func (f *fixture) start() {
	f.t.Helper()
	var h *hub.Hub
	var err error
	for i := 0; i < 100; i++ { // the port may linger for a moment
		h, err = hub.Start(hub.Options{HostName: hostName, Addrs: []string{f.addr}, CA: f.ca, OwnerKey: f.ownerKey, Logger: f.logger,
			TrustedCAs: f.ca.Pool()}) // devices may present certificates from the fixture's CA
		if err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	require.NoError(f.t, err, "starting the hub")
	f.mu.Lock()
	f.h = h
	keys := make(map[string][2]string, len(f.keys))
	for id, k := range f.keys {
		keys[id] = k
	}
	certs := make(map[string]string, len(f.x509))
	for id, tp := range f.x509 {
		certs[id] = tp
	}
	f.mu.Unlock()
	for id, k := range keys {
		f.register(h, id, k)
	}
	for id, tp := range certs {
		f.registerX509(h, id, tp)
	}
}

// registerX509 registers a device authenticated by a self-signed
// certificate with SHA-256 thumbprint tp, or by a certificate from a
// trusted CA when tp is "".
func (f *fixture) registerX509(h *hub.Hub, id, tp string) {
	f.t.Helper()
	a := engine.Authentication{Type: engine.AuthCertificateAuthority}
	if tp != "" {
		a = engine.Authentication{Type: engine.AuthSelfSigned, X509Thumbprint: engine.X509Thumbprint{PrimaryThumbprint: &tp}}
	}
	_, herr := h.Engine.PutDevice(id, engine.Device{Authentication: a}, "")
	require.Nil(f.t, herr, "registering %s", id)
}

// addX509Device registers device id with a new certificate, self-signed or
// issued by the fixture's CA (a trusted CA of the hub), and returns it.
func (f *fixture) addX509Device(id string, caSigned bool) *auth.X509Credential {
	f.t.Helper()
	var cert tls.Certificate
	var err error
	if caSigned {
		cert, err = f.ca.IssueClient(id, time.Hour)
	} else {
		cert, err = pki.SelfSigned(id, time.Hour)
	}
	require.NoError(f.t, err)
	cred, err := auth.NewX509Credential(cert)
	require.NoError(f.t, err)
	tp := ""
	if !caSigned {
		tp = cred.Thumbprints().SHA256
	}
	f.mu.Lock()
	f.x509[id] = tp
	h := f.h
	f.mu.Unlock()
	f.registerX509(h, id, tp)
	return cred
}

// stop closes the hub (every connection drops, pending calls fail).
func (f *fixture) stop() {
	f.mu.Lock()
	h := f.h
	f.h = nil
	f.mu.Unlock()
	if h != nil {
		h.Close()
	}
}

func (f *fixture) hub() *hub.Hub {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.h
}

func (f *fixture) engine() *engine.Engine { return f.hub().Engine }

func (f *fixture) register(h *hub.Hub, id string, k [2]string) {
	f.t.Helper()
	p, s := k[0], k[1]
	a := engine.Authentication{Type: engine.AuthSAS, SymmetricKey: engine.SymmetricKey{PrimaryKey: &p, SecondaryKey: &s}}
	dev, mod, isMod := cutID(id)
	if !isMod {
		_, herr := h.Engine.PutDevice(dev, engine.Device{Authentication: a}, "")
		require.Nil(f.t, herr, "registering %s", id)
		return
	}
	_, herr := h.Engine.PutModule(dev, mod, engine.Module{Authentication: a}, "")
	require.Nil(f.t, herr, "registering %s", id)
}

func cutID(id string) (dev, mod string, isMod bool) {
	for i := 0; i < len(id); i++ {
		if id[i] == '/' {
			return id[:i], id[i+1:], true
		}
	}
	return id, "", false
}

func identity(id string) auth.Identity {
	dev, mod, _ := cutID(id)
	return auth.Identity{HostName: hostName, DeviceID: dev, ModuleID: mod}
}

// addDevice registers a device ("dev") or module ("dev/mod", whose device
// must exist) with fresh keys, and returns its primary key.
func (f *fixture) addDevice(id string) string {
	f.t.Helper()
	k := [2]string{testkey.New(), testkey.New()}
	f.mu.Lock()
	f.keys[id] = k
	h := f.h
	f.mu.Unlock()
	f.register(h, id, k)
	return k[0]
}

func (f *fixture) key(id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.keys[id][0]
}

// connString is the identity's connection string, dialling the proxy
// (viaProxy) or the hub directly.
func (f *fixture) connString(id string, viaProxy bool) string {
	dev, mod, _ := cutID(id)
	gw := f.addr
	if viaProxy {
		gw = f.proxy.Addr()
	}
	return auth.ConnectionString{HostName: hostName, GatewayHostName: gw, DeviceID: dev, ModuleID: mod, SharedAccessKey: f.key(id)}.Reveal()
}

func (f *fixture) serviceConnString(policyName, key string) string {
	return auth.ConnectionString{HostName: hostName, GatewayHostName: f.addr, SharedAccessKeyName: policyName, SharedAccessKey: key}.Reveal()
}

func (f *fixture) policyKey(name string) string {
	p, ok := f.engine().Policy(name)
	require.True(f.t, ok, "no policy %s", name)
	return p.PrimaryKey
}

func (f *fixture) httpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: f.tlsConfig()}}
}

func (f *fixture) serviceClient(t testing.TB, cs string, retry policy.RetryOptions) *service.Client {
	t.Helper()
	hc := f.httpClient()
	t.Cleanup(hc.CloseIdleConnections)
	c, err := service.NewClientFromConnectionString(cs, &service.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: hc, Retry: retry}})
	require.NoError(t, err)
	return c
}

// tlsConfig trusts the hub's CA (every hub of the fixture shares it).
func (f *fixture) tlsConfig() *tls.Config {
	return &tls.Config{RootCAs: f.ca.Pool(), MinVersion: tls.VersionTLS12}
}

// invoke calls method on id ("dev" or "dev/mod") with the service client.
func (f *fixture) invoke(ctx context.Context, id, method string, payload any, responseTimeout, connectTimeout time.Duration) (*service.MethodResult, error) {
	return invokeWith(ctx, f.svc, id, method, payload, responseTimeout, connectTimeout)
}

func invokeWith(ctx context.Context, svc *service.Client, id, method string, payload any, responseTimeout, connectTimeout time.Duration) (*service.MethodResult, error) {
	m := service.CloudToDeviceMethod{MethodName: method, Payload: payload, ResponseTimeout: responseTimeout, ConnectTimeout: connectTimeout}
	dev, mod, isMod := cutID(id)
	if isMod {
		return svc.InvokeModuleMethod(ctx, dev, mod, m)
	}
	return svc.InvokeDeviceMethod(ctx, dev, m)
}

// waitOnline waits until the hub counts id connected and subscribed.
func (f *fixture) waitOnline(t testing.TB, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, f.engine().WaitOnline(ctx, identity(id)), "%s did not come online", id)
}

// dev is a connected device client with an echo handler that counts how
// often each request payload was executed.
type dev struct {
	id     string
	c      *device.Client
	status *statuslog.Log

	mu   sync.Mutex
	runs map[string]int // request payload → executions
}

type devOptions struct {
	keepAlive time.Duration
	direct    bool // dial the hub, not the proxy
	setup     func(*device.Client)
	opts      func(*device.ClientOptions)
	// cert makes the device authenticate with this certificate instead
	// of its key.
	cert *auth.X509Credential
}

// connect builds and connects a device client; it is closed at the end of
// the test, after which the proxy must hold no connection of it.
func (f *fixture) connect(t testing.TB, id string, tp tport, o *devOptions) *dev {
	t.Helper()
	if o == nil {
		o = &devOptions{}
	}
	d := &dev{id: id, status: statuslog.New(), runs: map[string]int{}}
	opts := &device.ClientOptions{
		Transport:          tp.newT(o.keepAlive),
		TLSConfig:          f.tlsConfig(),
		Retry:              fastRetry,
		OnConnectionStatus: d.status.Record,
	}
	if o.opts != nil {
		o.opts(opts)
	}
	var c *device.Client
	var err error
	if o.cert != nil {
		gw := f.addr
		if !o.direct {
			gw = f.proxy.Addr()
		}
		opts.GatewayHostName = gw
		c, err = device.NewClientWithX509(identity(id), o.cert, opts)
	} else {
		c, err = device.NewClientFromConnectionString(f.connString(id, !o.direct), opts)
	}
	require.NoError(t, err)
	d.c = c
	c.SetMethodHandler("echo", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
		d.mu.Lock()
		d.runs[string(req.Payload)]++
		d.mu.Unlock()
		return &device.MethodResponse{Status: 200, Payload: req.Payload}, nil
	})
	if o.setup != nil {
		o.setup(c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, c.Connect(ctx), "%s over %s: Connect", id, tp.name)
	t.Cleanup(func() { d.close(t) })
	return d
}

func (d *dev) close(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	assert.NoError(t, d.c.Close(ctx), "%s: Close", d.id)
	d.status.Check(t, d.id)
}

// executions returns how often the echo handler ran with payload p.
func (d *dev) executions(p string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.runs[p]
}

// waitFor polls cond until it holds, with a generous deadline. cond runs
// on a goroutine of its own.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, 60*time.Second, 10*time.Millisecond, "timed out waiting for %s", what)
}

// mustEcho invokes echo on id with a unique payload and requires the
// device's answer at once (the device claims to be connected).
func (f *fixture) mustEcho(t testing.TB, d *dev, tag string) {
	t.Helper()
	p := fmt.Sprintf(`{"tag":%q,"at":%d}`, tag, time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := f.invoke(ctx, d.id, "echo", json.RawMessage(p), 30*time.Second, 0)
	require.NoError(t, err, "%s: echo %s", d.id, tag)
	require.Equal(t, 200, r.Status, "%s: echo %s: %s", d.id, tag, r.Payload)
	require.Equal(t, p, string(r.Payload), "%s: echo %s", d.id, tag)
	require.Equal(t, 1, d.executions(p), "%s: echo %s: executions on the device", d.id, tag)
}

// hubErrorCode returns the IoT Hub error code of a service error, or 0.
func hubErrorCode(err error) int {
	var re *service.ResponseError
	if errors.As(err, &re) {
		return re.Code
	}
	return 0
}
