package service

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/tracing"

	"github.com/iothub-go/iothub"
	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/apiversion"
)

// DefaultAPIVersion is the IoT Hub service API version the client sends
// unless ClientOptions.APIVersion says otherwise: the one the whole SDK
// speaks, which the .NET and Node service SDKs send too.
const DefaultAPIVersion = apiversion.Current

// EntraScope is the token scope NewClient asks its credential for:
// Microsoft Entra ID tokens for the IoT Hub service API.
const EntraScope = "https://iothubs.azure.net/.default"

// Module name and version for azcore's telemetry (User-Agent
// "azsdk-go-iothub-service/v0.1.0 …") and for the tracer of
// ClientOptions.TracingProvider.
const (
	moduleName    = "iothub-service"
	moduleVersion = "v" + iothub.Version
)

// ClientOptions configures a Client. A nil *ClientOptions, like the zero
// value, gives the defaults.
type ClientOptions struct {
	// ClientOptions are azcore's pipeline options: Transport (e.g. an
	// *http.Client that trusts a local hub), Retry, Logging, Telemetry,
	// TracingProvider (see the package documentation, "Tracing"),
	// PerCallPolicies and PerRetryPolicies. Logging never shows the
	// Authorization header; Logging.IncludeBody would log method payloads
	// and registry keys, so leave it off outside debugging.
	//
	// APIVersion ("" means DefaultAPIVersion) selects the service API
	// version.
	//
	// Retry applies as azcore documents it to registry reads. Method
	// invocations are not idempotent, and a retried registry write whose
	// first attempt succeeded would fail (409, 412, 404), so for those the
	// client retries only failures that prove the request was not
	// dispatched: dial errors (connection refused, DNS), 429 and 503 — and
	// of these statuses only those also in Retry.StatusCodes when that is
	// not nil. A 504, a 500, a timeout or a connection lost after the
	// request was written is never retried for them. Retry.ShouldRetry,
	// when set, replaces this classification everywhere: it is then the
	// caller's job not to retry a call that may have reached the device.
	// Retry.TryTimeout does not apply to invocations, whose deadline comes
	// from the method's timeouts (see CloudToDeviceMethod). Cancellation is
	// never retried.
	//
	// Transport nil means an HTTP client like azcore's default that never
	// follows redirects. An *http.Client given here is used through a copy
	// whose CheckRedirect refuses redirects; any other Transporter must not
	// follow redirects itself (see ErrRedirect). Whatever the transport,
	// answers with a redirect status, and bodies larger than what a request
	// can legitimately return, fail (see ErrResponseTooLarge).
	azcore.ClientOptions

	// Endpoint is the base URL requests are sent to, e.g.
	// "https://127.0.0.1:8443" for a local hub. "" means
	// "https://{GatewayHostName}" when the connection string has a
	// GatewayHostName, else "https://{HostName}". It changes where the
	// client connects, never the identity: SAS tokens still name the
	// connection string's HostName. Plain "http" is refused unless
	// InsecureAllowCredentialWithHTTP is set.
	//
	// Cloud-to-device messages (Send, NewFeedbackReceiver) go over AMQP to
	// the same host: to the endpoint's port when it names one (a local hub
	// serves every protocol on one port), else to 5671, or 443 with
	// AMQPOverWebSockets.
	Endpoint string

	// AMQPOverWebSockets makes Send and the feedback receiver use AMQP
	// over WebSocket (wss, path /$iothub/websocket, subprotocol AMQPWSB10,
	// port 443 unless the endpoint names one) instead of AMQP over TLS on
	// port 5671: for networks that only let HTTPS through. The proxy of
	// the environment (HTTPS_PROXY, NO_PROXY) applies to it.
	AMQPOverWebSockets bool

	// TLSConfig is the TLS configuration of the AMQP connection (Send,
	// NewFeedbackReceiver). nil means the TLSClientConfig of Transport
	// when Transport is an *http.Client over an *http.Transport (so one
	// client that trusts a local hub serves both protocols), else the
	// system's roots. HTTPS requests always use Transport.
	TLSConfig *tls.Config
}

// Client invokes direct methods on devices and modules, sends
// cloud-to-device messages and manages the device registry of one IoT hub.
// It is safe for concurrent use. HTTPS requests go through azcore's
// pipeline and the configured transport; cloud-to-device messages and
// their feedback go over one AMQP connection, dialled by the first Send or
// NewFeedbackReceiver and closed by Close.
//
// String and %v show the hub and the kind of credential, never a key or a
// token.
type Client struct {
	hostName string // the hub's HostName: SAS audience, connection strings
	gateway  string // the service connection string's GatewayHostName, or ""
	endpoint string // scheme://host[:port], no trailing slash
	cred     string // "policy NAME", "fixed SAS token NAME", "Microsoft Entra ID"
	pl       runtime.Pipeline
	tracer   tracing.Tracer // of ClientOptions.TracingProvider; disabled without one
	// invokeRetry and writeRetry are the retry options of method
	// invocations and registry writes, derived from the caller's (see
	// dispatchSafeRetry). Invocations have no per-try timeout: their
	// deadline comes from the method's timeouts.
	invokeRetry policy.RetryOptions
	writeRetry  policy.RetryOptions

	// The AMQP side (amqpconn.go): the credential CBS presents (tokens
	// for a policy, entra for NewClient), the TLS configuration and
	// whether to use WebSocket, and the connection slot.
	tokens  auth.TokenProvider
	entra   azcore.TokenCredential
	tlsConf *tls.Config
	amqpWS  bool
	amqp    amqpState
}

// NewClientFromConnectionString returns a client authenticated by a hub
// shared access policy:
//
//	HostName=myhub.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=<base64>
//	HostName=myhub.azure-devices.net;SharedAccessKeyName=service;SharedAccessSignature=SharedAccessSignature sr=…
//
// With a SharedAccessKey every request carries a token for HostName signed
// with the key; tokens live one hour and are renewed before they expire.
// A SharedAccessSignature is used as is until it expires; requests then
// fail with an error wrapping auth.ErrSASExpired (it is refused here if it
// has already expired). GatewayHostName ("host:port", an extension of this
// SDK) makes the client connect there, as for a local hub.
//
// Invoking methods needs the ServiceConnect permission; the registry
// needs RegistryRead or RegistryReadWrite ("iothubowner" has all three).
// opts may be nil. No network I/O happens here. Errors match
// ErrArgumentInvalid and, for a bad connection string,
// auth.ErrInvalidConnectionString.
func NewClientFromConnectionString(connStr string, opts *ClientOptions) (*Client, error) {
	cs, err := auth.ParseServiceConnectionString(connStr)
	if err != nil {
		return nil, &argumentError{msg: err.Error(), cause: err}
	}
	tokens, err := cs.TokenProvider(nil)
	if err != nil {
		return nil, &argumentError{msg: err.Error(), cause: err}
	}
	cred := "policy " + cs.SharedAccessKeyName
	if st, ok := tokens.(*auth.StaticToken); ok {
		cred = "fixed SAS token of policy " + cs.SharedAccessKeyName
		if exp := st.ExpiresOn(); !time.Now().Before(exp) {
			return nil, &argumentError{
				msg:   fmt.Sprintf("iothub: the connection string's SharedAccessSignature expired at %s; a fixed token cannot be renewed: use a connection string with a SharedAccessKey", exp.UTC().Format(time.RFC3339)),
				cause: auth.ErrSASExpired,
			}
		}
	}
	o := options(opts)
	endpoint, err := endpointURL(o.Endpoint, "https://"+cs.Address(), o.InsecureAllowCredentialWithHTTP)
	if err != nil {
		return nil, err
	}
	p := &sasPolicy{tokens: tokens, allowHTTP: o.InsecureAllowCredentialWithHTTP}
	c, err := newClient(cs.HostName, cs.GatewayHostName, endpoint, cred, p, o)
	if err != nil {
		return nil, err
	}
	c.tokens = tokens
	return c, nil
}

// hostNamePattern is the .NET SDK's HostName rule.
var hostNamePattern = regexp.MustCompile(`^[a-zA-Z0-9_\-\.]+$`)

// NewClient returns a client authenticated with Microsoft Entra ID:
// cred (e.g. from azidentity) is asked for tokens of scope EntraScope,
// which are sent as "Authorization: Bearer …" and renewed by azcore's
// bearer token policy. hostName is the hub's host name, e.g.
// "myhub.azure-devices.net"; to connect elsewhere (a local hub) set
// ClientOptions.Endpoint. The identity needs an IoT Hub data role (e.g.
// "IoT Hub Data Contributor"). opts may be nil. No network I/O happens
// here.
func NewClient(hostName string, cred azcore.TokenCredential, opts *ClientOptions) (*Client, error) {
	if !hostNamePattern.MatchString(hostName) {
		return nil, argErr(fmt.Sprintf("invalid host name %q: want the hub's host name such as myhub.azure-devices.net (set ClientOptions.Endpoint to connect to another address)", clipID(hostName)))
	}
	if cred == nil {
		return nil, argErr("NewClient needs a credential")
	}
	o := options(opts)
	endpoint, err := endpointURL(o.Endpoint, "https://"+hostName, o.InsecureAllowCredentialWithHTTP)
	if err != nil {
		return nil, err
	}
	p := runtime.NewBearerTokenPolicy(cred, []string{EntraScope}, &policy.BearerTokenOptions{
		InsecureAllowCredentialWithHTTP: o.InsecureAllowCredentialWithHTTP,
	})
	c, err := newClient(hostName, "", endpoint, "Microsoft Entra ID", p, o)
	if err != nil {
		return nil, err
	}
	c.entra = cred
	return c, nil
}

func options(opts *ClientOptions) ClientOptions {
	if opts == nil {
		return ClientOptions{}
	}
	return *opts
}

// endpointURL checks ClientOptions.Endpoint (or def when it is empty) and
// returns it as scheme://host[:port].
func endpointURL(s, def string, allowHTTP bool) (string, error) {
	if s == "" {
		s = def
	}
	u, err := url.Parse(s)
	bad := func(why string) error {
		return argErr(fmt.Sprintf("invalid endpoint %q: %s", clipID(s), why))
	}
	switch {
	case err != nil:
		return "", bad("not a URL")
	case u.Scheme != "https" && u.Scheme != "http":
		return "", bad(`want "https://host[:port]"`)
	case u.Scheme == "http" && !allowHTTP:
		return "", bad("plain http would expose credentials (set InsecureAllowCredentialWithHTTP to allow it)")
	case u.Host == "" || u.Hostname() == "":
		return "", bad("no host")
	case u.User != nil:
		return "", bad("user information is not allowed")
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "", u.Opaque != "":
		return "", bad("only scheme, host and port are allowed")
	}
	return u.Scheme + "://" + u.Host, nil
}

// newClient builds the client around azcore's client: its pipeline, and
// its tracer, which names each span's az.namespace.
func newClient(hostName, gateway, endpoint, cred string, authPolicy policy.Policy, o ClientOptions) (*Client, error) {
	tlsConf := amqpTLSConfig(o)
	o.Transport = newGuardTransport(o.Transport)
	az, err := azcore.NewClient(moduleName, moduleVersion, runtime.PipelineOptions{
		AllowedHeaders:         []string{"iothub-errorcode"},
		AllowedQueryParameters: []string{"api-version", "jobType", "jobStatus"},
		APIVersion:             runtime.APIVersionOptions{Name: "api-version", Location: runtime.APIVersionLocationQueryParam},
		PerRetry:               []policy.Policy{authPolicy, memBodyPolicy{}},
		Tracing:                runtime.TracingOptions{Namespace: tracingNamespace},
	}, &o.ClientOptions)
	if err != nil {
		// Only a malformed moduleVersion fails, which the tests rule out.
		return nil, fmt.Errorf("iothub: %w", err)
	}
	c := &Client{hostName: hostName, gateway: gateway, endpoint: endpoint, cred: cred, pl: az.Pipeline(), tracer: withOpSpans(az.Tracer())}
	c.tlsConf, c.amqpWS = tlsConf, o.AMQPOverWebSockets
	c.writeRetry = dispatchSafeRetry(o.Retry)
	c.invokeRetry = c.writeRetry
	c.invokeRetry.TryTimeout = 0
	return c, nil
}

// HostName returns the hub's host name (the identity the client's tokens
// name), e.g. "myhub.azure-devices.net".
func (c *Client) HostName() string { return c.hostName }

// String describes the client without secrets, e.g.
// "service.Client{hub localhost at https://127.0.0.1:8443, policy iothubowner}".
func (c *Client) String() string {
	if c == nil {
		return "service.Client(nil)"
	}
	return "service.Client{hub " + c.hostName + " at " + c.endpoint + ", " + c.cred + "}"
}

// GoString is String, so %#v shows no secret either.
func (c *Client) GoString() string { return c.String() }

// sasPolicy authorizes each request with a SAS token from a provider: a
// KeyTokenProvider caches its token and mints a new one at renewal time; a
// StaticToken gives the same token until it expires.
type sasPolicy struct {
	tokens    auth.TokenProvider
	allowHTTP bool
}

func (p *sasPolicy) Do(req *policy.Request) (*http.Response, error) {
	if req.Raw().URL.Scheme != "https" && !p.allowHTTP {
		// As endpointURL refuses such an Endpoint: ErrArgumentInvalid.
		return nil, &nonRetriableError{argErr("refusing to send a SAS token over plain http (set InsecureAllowCredentialWithHTTP to allow it)")}
	}
	tok, err := p.tokens.Token(req.Raw().Context())
	if err != nil {
		if errors.Is(err, auth.ErrSASExpired) {
			err = fmt.Errorf("iothub: the connection string's SharedAccessSignature has expired and cannot be renewed; use a connection string with a SharedAccessKey: %w", err)
		}
		return nil, &nonRetriableError{err}
	}
	req.Raw().Header.Set("Authorization", tok.Value)
	return req.Next()
}

// memBody is a request body held in memory (a method invocation).
type memBody struct{ *bytes.Reader }

func (memBody) Close() error { return nil }

// memBodyPolicy hands net/http a memBody as io.NopCloser(*bytes.Reader),
// a body it knows to be in memory: it then writes the headers and the body
// in one TLS record and one write, instead of flushing the headers first
// (two records, two writes, and two reads at the hub). It replaces the
// retry policy's wrapper, which net/http does not know; azcore has rewound
// the body before each try, and neither wrapper closes it.
type memBodyPolicy struct{}

func (memBodyPolicy) Do(req *policy.Request) (*http.Response, error) {
	if b, ok := req.Body().(memBody); ok && req.Raw().Body != nil {
		req.Raw().Body = io.NopCloser(b.Reader)
	}
	return req.Next()
}

// nonRetriableError stops azcore's retry policy (it looks for a
// NonRetriable method).
type nonRetriableError struct{ err error }

func (e *nonRetriableError) Error() string { return e.err.Error() }
func (e *nonRetriableError) Unwrap() error { return e.err }
func (e *nonRetriableError) NonRetriable() {}

// clipID shortens user input echoed in error messages.
func clipID(s string) string {
	if len(s) > 140 {
		return s[:140] + "…"
	}
	return s
}

// pathSegment escapes one path segment (an id).
func pathSegment(s string) string { return url.PathEscape(s) }

// newRequest builds a request for path (already escaped) with the default
// api-version; azcore's API version policy replaces it when
// ClientOptions.APIVersion is set.
func (c *Client) newRequest(ctx context.Context, method, path, query string) (*policy.Request, error) {
	u := c.endpoint + path + "?api-version=" + DefaultAPIVersion
	if query != "" {
		u += "&" + query
	}
	req, err := runtime.NewRequest(ctx, method, u)
	if err != nil {
		return nil, fmt.Errorf("iothub: building request: %w", err)
	}
	req.Raw().Header.Set("Accept", "application/json")
	return req, nil
}

// do sends req and returns the response when its status is one of ok;
// other answers become a *ResponseError. ctx.Err() is returned as is.
func (c *Client) do(ctx context.Context, req *policy.Request, ok ...int) (*http.Response, error) {
	resp, err := c.pl.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		if gerr := guarded(err); gerr != nil {
			return nil, gerr
		}
		return nil, err
	}
	if !runtime.HasStatusCode(resp, ok...) {
		return nil, newResponseError(resp)
	}
	return resp, nil
}

// checkID validates a device or module id before it is sent.
func checkID(kind, id string) error {
	if id == "" {
		return argErr(kind + " id is empty")
	}
	if err := auth.CheckID(id); err != nil {
		return &argumentError{msg: fmt.Sprintf("iothub: invalid %s id %q: %s", kind, clipID(id), strings.TrimPrefix(err.Error(), "iothub: ")), cause: err}
	}
	return nil
}
