package iothubtest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub"
	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/internal/pki"
	"github.com/iothub-go/iothub/service"
)

// TB is the part of testing.TB that the server uses; *testing.T and
// *testing.B satisfy it.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// Options configures a Server. The zero value is ready to use.
type Options struct {
	// HostName is the hub's host name, the audience of every SAS token.
	// Default "localhost".
	HostName string
	// Logger receives the hub's connection and method-call events (never
	// secrets or payloads); nil is silent.
	Logger *slog.Logger
	// MaxActiveJobs is how many jobs may be active (scheduled, queued or
	// running) at once; one more is refused with 429004
	// ThrottlingMaxActiveJobCountExceeded. 0 means 1, IoT Hub's limit on
	// Free and S1 hubs (S2 allows 5, S3 10); negative means no limit.
	MaxActiveJobs int
	// CloudToDevice sets the hub's cloud-to-device settings, as an IoT Hub
	// resource does (its cloudToDevice and feedback properties). The zero
	// value is IoT Hub's defaults.
	CloudToDevice CloudToDeviceOptions
}

// CloudToDeviceOptions are an IoT Hub's configurable cloud-to-device
// settings, with the ranges IoT Hub accepts; zero means IoT Hub's
// default.
type CloudToDeviceOptions struct {
	// DefaultTTL is the expiry of a message whose sender set none
	// (cloudToDevice.defaultTtlAsIso8601): 1 minute to 2 days, default 1 hour.
	DefaultTTL time.Duration
	// MaxDeliveryCount is how many times a message may be abandoned
	// before it is dead-lettered (cloudToDevice.maxDeliveryCount): 1 to
	// 100, default 10.
	MaxDeliveryCount int
	// FeedbackTTL is how long feedback waits for a receiver
	// (feedback.ttlAsIso8601): 1 minute to 2 days, default 1 hour.
	FeedbackTTL time.Duration
	// FeedbackLockDuration is how long a received feedback batch stays
	// locked (feedback.lockDurationAsIso8601): 5 to 300 seconds, default
	// 60 seconds.
	FeedbackLockDuration time.Duration
	// FeedbackMaxDeliveryCount is how many times a feedback batch may be
	// delivered (feedback.maxDeliveryCount): 1 to 100, default 10.
	FeedbackMaxDeliveryCount int
}

// engineConfig checks the settings against IoT Hub's ranges.
func (o CloudToDeviceOptions) engineConfig() (engine.C2DConfig, error) {
	c := engine.C2DConfig{
		DefaultTTL:          o.DefaultTTL,
		MaxDeliveryCount:    o.MaxDeliveryCount,
		FeedbackTTL:         o.FeedbackTTL,
		FeedbackLockTimeout: o.FeedbackLockDuration,
		FeedbackMaxDelivery: o.FeedbackMaxDeliveryCount,
	}
	if err := c.CheckSettings(); err != nil {
		return engine.C2DConfig{}, fmt.Errorf("iothub: CloudToDevice.%w", err)
	}
	return c, nil
}

// Server is a running local IoT Hub.
type Server struct {
	h        *hub.Hub
	deviceCA *pki.CA
	addr     string
}

// NewServer starts a hub on a random loopback port and registers Close with
// t.Cleanup. opts may be nil. It fails the test if the hub cannot start.
func NewServer(t TB, opts *Options) *Server {
	t.Helper()
	s, err := Start(opts)
	if err != nil {
		t.Fatalf("iothubtest: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// Start starts a hub outside of a test (for examples and tools). The caller
// must Close it.
func Start(opts *Options) (*Server, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	c2d, err := o.CloudToDevice.engineConfig()
	if err != nil {
		return nil, err
	}
	deviceCA, err := pki.NewCA("iothubtest device CA")
	if err != nil {
		return nil, err
	}
	h, err := hub.Start(hub.Options{HostName: o.HostName, TrustedCAs: deviceCA.Pool(), Logger: o.Logger, MaxActiveJobs: o.MaxActiveJobs, C2D: c2d})
	if err != nil {
		return nil, err
	}
	return &Server{h: h, deviceCA: deviceCA, addr: h.Addrs()[0].String()}, nil
}

// Close stops the hub, drops every connection and fails pending method
// calls. It is safe to call more than once.
func (s *Server) Close() { _ = s.h.Close() }

// Addr returns the hub's "127.0.0.1:port". Every protocol is served there.
func (s *Server) Addr() string { return s.addr }

// HostName returns the hub's host name (the SAS audience).
func (s *Server) HostName() string { return s.h.Engine.HostName() }

// CertPool returns a pool that trusts the hub's TLS certificate.
func (s *Server) CertPool() *x509.CertPool { return s.h.CA.Pool() }

// CACertPEM returns the CA certificate of the hub's TLS certificate, in PEM
// form (for NODE_EXTRA_CA_CERTS and similar).
func (s *Server) CACertPEM() []byte { return s.h.CA.CertPEM() }

// TLSConfig returns a client TLS configuration that trusts the hub.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: s.CertPool(), MinVersion: tls.VersionTLS12}
}

// HTTPClient returns an HTTP client that trusts the hub, for the service
// API (e.g. as azcore.ClientOptions.Transport).
func (s *Server) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: s.TLSConfig()}}
}

func (s *Server) connectionString(c auth.ConnectionString) string {
	c.HostName = s.HostName()
	c.GatewayHostName = s.addr
	return c.Reveal()
}

func fatal(t TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("iothubtest: %v", err)
	}
}

// AddDevice registers a device with generated SAS keys and returns its
// connection string:
//
//	HostName=localhost;DeviceId=ID;SharedAccessKey=…;GatewayHostName=127.0.0.1:PORT
func (s *Server) AddDevice(t TB, deviceID string) string {
	t.Helper()
	d, herr := s.h.Engine.PutDevice(deviceID, engine.Device{}, "")
	if herr != nil {
		fatal(t, herr)
	}
	return s.connectionString(auth.ConnectionString{DeviceID: deviceID, SharedAccessKey: *d.Authentication.SymmetricKey.PrimaryKey})
}

// AddModule registers a module with generated SAS keys on an existing
// device and returns its connection string.
func (s *Server) AddModule(t TB, deviceID, moduleID string) string {
	t.Helper()
	m, herr := s.h.Engine.PutModule(deviceID, moduleID, engine.Module{}, "")
	if herr != nil {
		fatal(t, herr)
	}
	return s.connectionString(auth.ConnectionString{DeviceID: deviceID, ModuleID: moduleID, SharedAccessKey: *m.Authentication.SymmetricKey.PrimaryKey})
}

// AddX509Device registers a device authenticated by the thumbprint of a
// new self-signed certificate, and returns its connection string
// (x509=true) and the certificate to present.
func (s *Server) AddX509Device(t TB, deviceID string) (string, tls.Certificate) {
	t.Helper()
	return s.addX509(t, auth.Identity{DeviceID: deviceID}, engine.AuthSelfSigned)
}

// AddCADevice registers a device authenticated by a certificate authority
// the hub trusts, and returns its connection string (x509=true) and a
// certificate with CN = deviceID issued by that CA.
func (s *Server) AddCADevice(t TB, deviceID string) (string, tls.Certificate) {
	t.Helper()
	return s.addX509(t, auth.Identity{DeviceID: deviceID}, engine.AuthCertificateAuthority)
}

// AddX509Module registers, on an existing device, a module authenticated by
// the thumbprint of a new self-signed certificate, and returns its
// connection string (x509=true) and the certificate to present.
func (s *Server) AddX509Module(t TB, deviceID, moduleID string) (string, tls.Certificate) {
	t.Helper()
	return s.addX509(t, auth.Identity{DeviceID: deviceID, ModuleID: moduleID}, engine.AuthSelfSigned)
}

// AddCAModule registers, on an existing device, a module authenticated by
// the CA the hub trusts, and returns its connection string (x509=true) and
// a certificate with CN = "deviceID/moduleID" issued by that CA.
func (s *Server) AddCAModule(t TB, deviceID, moduleID string) (string, tls.Certificate) {
	t.Helper()
	return s.addX509(t, auth.Identity{DeviceID: deviceID, ModuleID: moduleID}, engine.AuthCertificateAuthority)
}

func (s *Server) addX509(t TB, id auth.Identity, authType string) (string, tls.Certificate) {
	t.Helper()
	a := engine.Authentication{Type: authType}
	var cert tls.Certificate
	var err error
	if authType == engine.AuthSelfSigned {
		cert, err = pki.SelfSigned(id.String(), 24*time.Hour)
		fatal(t, err)
		tp := auth.ComputeThumbprints(cert.Leaf.Raw).SHA256
		a.X509Thumbprint.PrimaryThumbprint = &tp
	} else {
		cert, err = s.deviceCA.IssueClient(id.String(), 24*time.Hour)
		fatal(t, err)
	}
	var herr *engine.Error
	if id.ModuleID == "" {
		_, herr = s.h.Engine.PutDevice(id.DeviceID, engine.Device{Authentication: a}, "")
	} else {
		_, herr = s.h.Engine.PutModule(id.DeviceID, id.ModuleID, engine.Module{Authentication: a}, "")
	}
	if herr != nil {
		fatal(t, herr)
	}
	return s.connectionString(auth.ConnectionString{DeviceID: id.DeviceID, ModuleID: id.ModuleID, X509: true}), cert
}

// IssueCertificate issues a client certificate with the given common name
// from the CA the hub trusts for certificateAuthority identities (e.g. to
// test a wrong CN).
func (s *Server) IssueCertificate(t TB, commonName string, validFor time.Duration) tls.Certificate {
	t.Helper()
	cert, err := s.deviceCA.IssueClient(commonName, validFor)
	fatal(t, err)
	return cert
}

// ServiceConnectionString returns the iothubowner connection string:
//
//	HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=…;GatewayHostName=127.0.0.1:PORT
func (s *Server) ServiceConnectionString() string {
	return s.PolicyConnectionString("iothubowner")
}

// PolicyConnectionString returns the connection string of one of the hub's
// policies: iothubowner, service, device, registryRead or
// registryReadWrite. It returns "" for an unknown policy.
func (s *Server) PolicyConnectionString(policy string) string {
	p, ok := s.h.Engine.Policy(policy)
	if !ok {
		return ""
	}
	return s.connectionString(auth.ConnectionString{SharedAccessKeyName: p.Name, SharedAccessKey: p.PrimaryKey})
}

// Credential returns an azcore.TokenCredential standing in for Microsoft
// Entra ID: tokens it issues for the scope service.EntraScope are accepted
// by the hub's service API as "Authorization: Bearer …" for an hour. Tokens
// for any other scope are refused by the hub, as Azure would.
func (s *Server) Credential() azcore.TokenCredential { return credential{s} }

type credential struct{ s *Server }

func (c credential) GetToken(ctx context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	if err := ctx.Err(); err != nil {
		return azcore.AccessToken{}, err
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	tok := "iothubtest." + base64.RawURLEncoding.EncodeToString(b)
	exp := time.Now().Add(time.Hour)
	if len(opts.Scopes) == 1 && opts.Scopes[0] == service.EntraScope {
		c.s.h.Engine.AddBearerToken(tok, exp)
	}
	return azcore.AccessToken{Token: tok, ExpiresOn: exp}, nil
}

func parseID(id string) auth.Identity {
	dev, mod, _ := strings.Cut(id, "/")
	return auth.Identity{DeviceID: dev, ModuleID: mod}
}

// WaitOnline blocks until the identity ("deviceID" or "deviceID/moduleID")
// is connected and subscribed to direct methods, or ctx ends.
func (s *Server) WaitOnline(ctx context.Context, id string) error {
	return s.h.Engine.WaitOnline(ctx, parseID(id))
}

// WaitOffline blocks until the identity is no longer connected and
// subscribed to direct methods (a call would get 404103 at once), or ctx
// ends.
func (s *Server) WaitOffline(ctx context.Context, id string) error {
	return s.h.Engine.WaitOffline(ctx, parseID(id))
}

// DropConnection closes the identity's connection, as a network failure
// would. It reports whether the identity was connected.
func (s *Server) DropConnection(id string) bool { return s.h.Engine.DropConnection(parseID(id)) }

// DetachMethodLink detaches one method link of the identity's AMQP
// connection, which (the link the hub sends requests on) is "request" or
// "response", with the error condition amqp:link:detach-forced, while the
// connection and its session stay up. The hub then counts the identity as
// not subscribed: calls get 404103 until the device attaches both links
// again. It reports false if the identity has no AMQP connection with that
// link attached.
func (s *Server) DetachMethodLink(id, which string) bool {
	return s.h.Engine.DetachMethodLink(parseID(id), which)
}

// EndSession ends the AMQP session that holds the identity's method links,
// with the error condition amqp:link:detach-forced, while the connection
// stays up. It reports false if the identity has no AMQP connection with
// method links.
func (s *Server) EndSession(id string) bool { return s.h.Engine.EndSession(parseID(id)) }

// DelayResponses holds the identity's method responses for d before the
// hub accepts them (so a delay beyond the call's response timeout produces
// a 504101 GatewayTimeout). Zero restores normal delivery.
func (s *Server) DelayResponses(id string, d time.Duration) {
	s.h.Engine.SetResponseFault(parseID(id), d, false)
}

// DropResponses makes the hub discard the identity's method responses
// (drop true) or accept them again (drop false).
func (s *Server) DropResponses(id string, drop bool) {
	s.h.Engine.SetResponseFault(parseID(id), 0, drop)
}

// FailServiceRequests makes the next n service API requests fail before
// they are dispatched, with an IoT Hub error code such as 429001
// (ThrottlingException) or 503001 (ServiceUnavailable).
func (s *Server) FailServiceRequests(errorCode, n int) error {
	if engine.CodeName(errorCode) == "" {
		return fmt.Errorf("iothub: unknown IoT Hub error code %d", errorCode)
	}
	s.h.Engine.FailServiceRequests(errorCode, n)
	return nil
}

// FailServiceRequestsRetryAfter is FailServiceRequests with a delay to
// wait before retrying on each answer: the header Retry-After in whole
// seconds (rounded up) and, for sub-second tests, Retry-After-Ms, which
// azcore's retry policy and service.InvokeDeviceMethods prefer. IoT Hub
// itself is not known to send either on its service API; retryAfter zero
// or negative sends neither, as FailServiceRequests does.
func (s *Server) FailServiceRequestsRetryAfter(errorCode, n int, retryAfter time.Duration) error {
	if engine.CodeName(errorCode) == "" {
		return fmt.Errorf("iothub: unknown IoT Hub error code %d", errorCode)
	}
	s.h.Engine.FailServiceRequestsRetryAfter(errorCode, n, retryAfter)
	return nil
}

// ExpireTokens makes the identity's current SAS token expire now: its
// connection is closed and the hub refuses that token (and older ones)
// from now on, so the client has to present a newly minted one.
func (s *Server) ExpireTokens(id string) { s.h.Engine.ExpireTokens(parseID(id)) }

// MethodCall is one direct method invocation the hub handled.
type MethodCall struct {
	DeviceID string
	ModuleID string // "" for a device method
	Method   string
	// Payload is the request payload's JSON text ("null" for JSON null);
	// nil when the request had no payload member.
	Payload json.RawMessage
	// Status is the device's status; 0 when the call failed at the hub.
	Status int
	// ErrorCode is the hub's error code (e.g. 404103, 504101); 0 on success.
	ErrorCode int
	// Protocol is the device transport that carried it ("mqtt", "mqtt-ws",
	// …); "" when it never reached a device.
	Protocol string
	Latency  time.Duration
}

// Calls returns the method invocations handled so far (the newest 10,000),
// oldest first.
func (s *Server) Calls() []MethodCall {
	recs := s.h.Engine.Calls()
	out := make([]MethodCall, len(recs))
	for i, r := range recs {
		out[i] = MethodCall{
			DeviceID: r.Identity.DeviceID, ModuleID: r.Identity.ModuleID, Method: r.Method,
			Payload: json.RawMessage(r.Payload), Status: r.Status, ErrorCode: r.ErrorCode,
			Protocol: r.Protocol, Latency: r.Latency,
		}
	}
	return out
}

// Event is one device-to-cloud message (telemetry) the hub accepted.
type Event struct {
	DeviceID string
	ModuleID string // "" for a device's own message
	// Protocol is the device transport that carried it: "mqtt",
	// "mqtt-ws", "amqp", "amqp-ws" or "http".
	Protocol string
	// Body is the message body.
	Body []byte
	// Properties are the application properties; nil when there are none.
	// Over HTTPS they travel as headers, whose names are case-insensitive:
	// their names arrive lower-case.
	Properties map[string]string
	// MessageID, CorrelationID, ContentType and ContentEncoding are the
	// system properties the device set; "" when absent.
	MessageID       string
	CorrelationID   string
	ContentType     string
	ContentEncoding string
	// EnqueuedTime is when the hub accepted the message.
	EnqueuedTime time.Time
}

func toEvents(evs []engine.Event) []Event {
	out := make([]Event, len(evs))
	for i, ev := range evs {
		out[i] = Event{
			DeviceID: ev.Identity.DeviceID, ModuleID: ev.Identity.ModuleID, Protocol: ev.Protocol,
			Body: ev.Body, Properties: ev.Properties,
			MessageID: ev.MessageID, CorrelationID: ev.CorrelationID,
			ContentType: ev.ContentType, ContentEncoding: ev.ContentEncoding,
			EnqueuedTime: ev.EnqueuedTime,
		}
	}
	return out
}

// Events returns the device-to-cloud messages the hub has accepted, oldest
// first. The hub keeps the newest 10,000. Each call returns fresh copies.
//
// A message is accepted, and listed here, before the device learns so
// (MQTT PUBACK, HTTPS 204), so once a device's send has returned its
// message is in the list.
func (s *Server) Events() []Event { return toEvents(s.h.Engine.Events()) }

// WaitEvents blocks until the hub has accepted at least n device-to-cloud
// messages in total, then returns them as Events does. If ctx ends first
// it returns the messages accepted so far and ctx's error.
func (s *Server) WaitEvents(ctx context.Context, n int) ([]Event, error) {
	evs, err := s.h.Engine.WaitEvents(ctx, n)
	return toEvents(evs), err
}
