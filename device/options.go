package device

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/iothub-go/iothub"
	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/transport"
	"github.com/iothub-go/iothub/transport/mqtt"
)

// DefaultMaxConcurrentHandlers is how many method handlers run at once when
// ClientOptions.MaxConcurrentHandlers is zero.
const DefaultMaxConcurrentHandlers = 16

// queuedPerHandler is how many calls may wait for a handler slot, per slot.
const queuedPerHandler = 16

// maxAuthAttempts is how many consecutive attempts refused for bad
// credentials the client makes (each with a newly minted token) before it
// gives up.
const maxAuthAttempts = 3

// ClientOptions configures a Client. nil or the zero value gives defaults.
// Each field has one meaning; a field set where it would have no effect
// (X509 with a SAS identity, say) makes the constructor fail with an error
// wrapping ErrInvalidOptions rather than be ignored.
type ClientOptions struct {
	// Transport is the protocol. nil means MQTT over TLS (mqtt.New(nil)).
	Transport transport.Transport
	// TLSConfig configures TLS (e.g. RootCAs for a local hub). nil means
	// the system roots. The client certificate is not set here but by
	// X509 or NewClientWithX509, which replace TLSConfig.Certificates (in
	// a copy). Each connection attempt uses a copy of it; as crypto/tls
	// asks, do not modify it once passed. Clients may share one.
	TLSConfig *tls.Config
	// X509 is the client certificate for a connection string that says
	// x509=true, which requires it. It has no other use: the constructors
	// refuse it with a SAS connection string, with NewClient (tokens) and
	// with NewClientWithX509 (which takes the certificate as its argument).
	X509 *auth.X509Credential
	// GatewayHostName is the host (optionally "host:port") to dial instead
	// of the identity's HostName: an IoT Edge gateway, a proxy or a local
	// hub. "" means HostName. A connection string's own GatewayHostName is
	// the same setting; if both are set they must be equal (ignoring
	// case), or NewClientFromConnectionString fails.
	GatewayHostName string
	// SAS configures the tokens minted from a connection string's
	// SharedAccessKey: zero means 1 h tokens renewed when 15 % of their
	// lifetime remains. It is refused where no key is used: with a
	// SharedAccessSignature or x509=true connection string, NewClient
	// (configure the token provider instead) and NewClientWithX509.
	SAS auth.TokenOptions
	// Retry is the reconnect policy: exponential backoff with full jitter.
	// MaxRetries zero means retry until Close (Connect is bounded by its
	// context); refusals of the credentials stop the client after 3
	// attempts, each with a newly minted token. A connection that the hub
	// ends within 30 s of its start counts as a failed attempt: it does
	// not reset the backoff, so two clients sharing one identity, which
	// the hub lets hold only one connection, do not keep replacing each
	// other at full speed.
	Retry iothub.RetryOptions
	// MaxConcurrentHandlers bounds how many handlers run at once. Zero
	// means DefaultMaxConcurrentHandlers; negative is refused. Up to 16
	// times as many calls wait for a free slot; a call beyond that is
	// answered at once with status 503 and {"error": "..."} saying the
	// device is busy, without running a handler.
	MaxConcurrentHandlers int
	// WrapHandler, if set, wraps every method handler when it is
	// registered (SetMethodHandler, SetDefaultMethodHandler) and the
	// built-in handler that answers 501 to methods without one, so that
	// it sees every call handed to a handler: the place for a trace span,
	// a metric or a log line around each call. It is called once per
	// registration, not per call, and must not return nil. The handler it
	// returns gets the request (req.Name is the method) and the handler's
	// own result, error included, before the client turns it into the
	// answer (see MethodHandler); it may change either. A panic in it or
	// in the handler is recovered as usual. Calls the client answers
	// without a handler (busy 503, stale 504) do not reach it.
	WrapHandler func(MethodHandler) MethodHandler
	// ModelID is the IoT Plug and Play model the device implements, a
	// DTMI such as "dtmi:com:example:Thermostat;1", announced on every
	// connection as the official SDKs announce it (MQTT user name, AMQP
	// link attach property); the hub shows it as the twin's modelId.
	// Empty announces none; an id that is not a DTMI is refused with
	// ErrInvalidOptions.
	ModelID string
	// MessagePollInterval is how often, over HTTPS, the client asks the
	// hub for cloud-to-device messages while a MessageHandler is
	// registered (it asks again at once after each message). Zero means
	// 10 s. Each poll counts against the hub's C2D receive throttle
	// (1,000 a minute per S1 unit), shared by every device. MQTT and
	// AMQP, where the hub pushes, ignore it.
	MessagePollInterval time.Duration
	// OnConnectionStatus is called on every change of the connection, one
	// call at a time and in order, on a goroutine of the client's (started
	// by Connect), never with the client's locks held. It may call any
	// method of the client, Close included. The last status is always
	// ConnectionStateClosed.
	OnConnectionStatus func(ConnectionStatus)
	// Logger receives connection events, one line per method call (name,
	// status, duration) and the errors of failed handlers; never keys,
	// tokens or payloads. nil is silent.
	Logger *slog.Logger
}

// NewClientFromConnectionString returns a client for a device or module
// connection string: with SharedAccessKey (tokens minted and renewed per
// opts.SAS), SharedAccessSignature (a fixed token, not renewed) or
// x509=true (with the certificate in opts.X509). It does no network I/O;
// see Connect. Options that do not fit the connection string are refused
// with an error wrapping ErrInvalidOptions.
func NewClientFromConnectionString(connStr string, opts *ClientOptions) (*Client, error) {
	cs, err := auth.ParseDeviceConnectionString(connStr)
	if err != nil {
		return nil, err
	}
	o := options(opts)
	addr := cs.Address()
	if o.GatewayHostName != "" {
		if cs.GatewayHostName != "" && !strings.EqualFold(cs.GatewayHostName, o.GatewayHostName) {
			return nil, invalidOptions("ClientOptions.GatewayHostName %q differs from the connection string's GatewayHostName %q; set one of them",
				o.GatewayHostName, cs.GatewayHostName)
		}
		addr = o.GatewayHostName
	}
	var tokens auth.TokenProvider
	switch {
	case cs.X509:
		if o.X509 == nil {
			return nil, invalidOptions("the connection string says x509=true: set ClientOptions.X509 to the device certificate")
		}
		if sasSet(o.SAS) {
			return nil, invalidOptions("ClientOptions.SAS configures tokens minted from a SharedAccessKey; an x509=true connection string uses none")
		}
	case o.X509 != nil:
		return nil, invalidOptions("ClientOptions.X509 is for x509=true connection strings; this one authenticates with SAS tokens")
	case cs.SharedAccessSignature != "" && sasSet(o.SAS):
		return nil, invalidOptions("ClientOptions.SAS configures tokens minted from a SharedAccessKey; this connection string has a fixed SharedAccessSignature")
	default:
		if tokens, err = cs.TokenProvider(&o.SAS); err != nil {
			return nil, err
		}
	}
	return newClient(cs.Identity(), addr, tokens, o)
}

// NewClient returns a client for identity that authenticates with SAS
// tokens from tokens. It does no network I/O. opts.X509 and opts.SAS are
// refused: the tokens come from tokens only.
func NewClient(identity auth.Identity, tokens auth.TokenProvider, opts *ClientOptions) (*Client, error) {
	if tokens == nil {
		return nil, errors.New("iothub: NewClient needs a token provider")
	}
	o := options(opts)
	if o.X509 != nil {
		return nil, invalidOptions("NewClient authenticates with SAS tokens: for a certificate use NewClientWithX509, not ClientOptions.X509")
	}
	if sasSet(o.SAS) {
		return nil, invalidOptions("ClientOptions.SAS configures tokens minted from a connection string's key; NewClient takes its tokens from the provider it is given")
	}
	return newClient(identity, gateway(identity, o), tokens, o)
}

// NewClientWithX509 returns a client for identity that authenticates with
// the client certificate cred. It does no network I/O. opts.X509 and
// opts.SAS are refused: cred is the only credential.
func NewClientWithX509(identity auth.Identity, cred *auth.X509Credential, opts *ClientOptions) (*Client, error) {
	if cred == nil {
		return nil, errors.New("iothub: NewClientWithX509 needs a certificate")
	}
	o := options(opts)
	if o.X509 != nil {
		return nil, invalidOptions("NewClientWithX509 takes the certificate as its argument; ClientOptions.X509 is for x509=true connection strings")
	}
	if sasSet(o.SAS) {
		return nil, invalidOptions("ClientOptions.SAS configures SAS tokens; NewClientWithX509 authenticates with a certificate")
	}
	o.X509 = cred
	return newClient(identity, gateway(identity, o), nil, o)
}

func invalidOptions(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidOptions}, args...)...)
}

// sasSet reports whether any SAS option is set.
func sasSet(o auth.TokenOptions) bool {
	return o.TTL != 0 || o.RenewBefore != 0 || o.Now != nil
}

func options(opts *ClientOptions) ClientOptions {
	if opts == nil {
		return ClientOptions{}
	}
	return *opts
}

func gateway(id auth.Identity, o ClientOptions) string {
	if o.GatewayHostName != "" {
		return o.GatewayHostName
	}
	return id.HostName
}

// discardLogger is the logger of clients without ClientOptions.Logger.
var discardLogger = slog.New(slog.DiscardHandler)

// defaultTLS is the TLS configuration of clients without
// ClientOptions.TLSConfig; never modified.
var defaultTLS = &tls.Config{MinVersion: tls.VersionTLS12}

func newClient(id auth.Identity, addr string, tokens auth.TokenProvider, o ClientOptions) (*Client, error) {
	if id.HostName == "" {
		return nil, errors.New("iothub: the identity has no HostName")
	}
	if err := auth.CheckID(id.DeviceID); err != nil {
		return nil, fmt.Errorf("iothub: DeviceID: %w", err)
	}
	if id.ModuleID != "" {
		if err := auth.CheckID(id.ModuleID); err != nil {
			return nil, fmt.Errorf("iothub: ModuleID: %w", err)
		}
	}
	if err := checkModelID(o.ModelID); err != nil {
		return nil, err
	}
	if o.MaxConcurrentHandlers < 0 {
		return nil, invalidOptions("MaxConcurrentHandlers is negative (%d)", o.MaxConcurrentHandlers)
	}
	if o.MaxConcurrentHandlers == 0 {
		o.MaxConcurrentHandlers = DefaultMaxConcurrentHandlers
	}
	if o.MessagePollInterval < 0 {
		return nil, invalidOptions("MessagePollInterval is negative (%v)", o.MessagePollInterval)
	}
	if o.MessagePollInterval == 0 {
		o.MessagePollInterval = defaultPollInterval
	}
	if o.Transport == nil {
		o.Transport = mqtt.New(nil)
	}
	// Transports clone the configuration at each dial (transport.Config),
	// so the client keeps the caller's, unmodified, and clones it only to
	// add a certificate: a fleet of clients sharing one configuration
	// shares one copy.
	tlsConf := o.TLSConfig
	if tlsConf == nil {
		tlsConf = defaultTLS
	}
	if o.X509 != nil {
		tlsConf = tlsConf.Clone()
		tlsConf.Certificates = []tls.Certificate{o.X509.Certificate()}
	}
	log := discardLogger // shared: it has nothing to add the attributes to
	if o.Logger != nil {
		log = o.Logger.With("identity", id.String(), "transport", o.Transport.Name())
	}
	var status *statusQueue // nil drops the statuses
	if o.OnConnectionStatus != nil {
		status = &statusQueue{fn: o.OnConnectionStatus}
	}
	c := &Client{
		id:           id,
		addr:         addr,
		tokens:       tokens,
		tlsConf:      tlsConf,
		tr:           o.Transport,
		retry:        o.Retry,
		log:          log,
		maxRun:       o.MaxConcurrentHandlers,
		maxQueued:    queuedPerHandler * o.MaxConcurrentHandlers,
		status:       status,
		wrap:         o.WrapHandler,
		modelID:      o.ModelID,
		pollInterval: o.MessagePollInterval,
	}
	var err error
	if c.notImplemented, err = c.wrapHandler(notImplemented); err != nil {
		return nil, err
	}
	return c, nil
}
