package device

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"

	"github.com/iothub-go/iothub"
	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/transport"
	"github.com/iothub-go/iothub/transport/mqtt"
)

// Version is this SDK's version, sent to the hub as part of the client type.
const Version = "0.1.0"

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
type ClientOptions struct {
	// Transport is the protocol. nil means MQTT over TLS (mqtt.New(nil)).
	Transport transport.Transport
	// TLSConfig configures TLS (e.g. RootCAs for a local hub). nil means
	// the system roots. The client certificate comes from X509.
	TLSConfig *tls.Config
	// X509 is the client certificate of an identity that authenticates
	// with X.509 (connection strings with x509=true).
	X509 *auth.X509Credential
	// GatewayHostName, for NewClient and NewClientWithX509, is the host
	// (optionally "host:port") to dial instead of the identity's HostName.
	// Connection strings carry their own.
	GatewayHostName string
	// SAS configures tokens minted from a connection string's
	// SharedAccessKey: zero means 1 h tokens renewed when 15 % of their
	// lifetime remains.
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
	// means DefaultMaxConcurrentHandlers. Up to 16 times as many calls
	// wait for a free slot; a call beyond that is answered at once with
	// status 503 and {"error": "..."} saying the device is busy, without
	// running a handler.
	MaxConcurrentHandlers int
	// OnConnectionStatus is called on every change of the connection, one
	// call at a time and in order, on a goroutine of the client's (started
	// by Connect), never with the client's locks held. It may call any
	// method of the client, Close included. The last status is always
	// ConnectionStateClosed.
	OnConnectionStatus func(ConnectionStatus)
	// Logger receives connection events and one line per method call (name,
	// status, duration); never keys, tokens or payloads. nil is silent.
	Logger *slog.Logger
}

// NewClientFromConnectionString returns a client for a device or module
// connection string (with SharedAccessKey, SharedAccessSignature, or
// x509=true and opts.X509). It does no network I/O; see Connect.
func NewClientFromConnectionString(connStr string, opts *ClientOptions) (*Client, error) {
	cs, err := auth.ParseDeviceConnectionString(connStr)
	if err != nil {
		return nil, err
	}
	o := options(opts)
	var tokens auth.TokenProvider
	if cs.X509 {
		if o.X509 == nil {
			return nil, errors.New("iothub: the connection string says x509=true: set ClientOptions.X509 to the device certificate")
		}
	} else if tokens, err = cs.TokenProvider(&o.SAS); err != nil {
		return nil, err
	}
	return newClient(cs.Identity(), cs.Address(), tokens, o)
}

// NewClient returns a client for identity that authenticates with SAS
// tokens from tokens. It does no network I/O.
func NewClient(identity auth.Identity, tokens auth.TokenProvider, opts *ClientOptions) (*Client, error) {
	if tokens == nil {
		return nil, errors.New("iothub: NewClient needs a token provider")
	}
	o := options(opts)
	return newClient(identity, gateway(identity, o), tokens, o)
}

// NewClientWithX509 returns a client for identity that authenticates with
// the client certificate cred. It does no network I/O.
func NewClientWithX509(identity auth.Identity, cred *auth.X509Credential, opts *ClientOptions) (*Client, error) {
	if cred == nil {
		return nil, errors.New("iothub: NewClientWithX509 needs a certificate")
	}
	o := options(opts)
	o.X509 = cred
	return newClient(identity, gateway(identity, o), nil, o)
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
	if o.MaxConcurrentHandlers < 0 {
		return nil, errors.New("iothub: MaxConcurrentHandlers must not be negative")
	}
	if o.MaxConcurrentHandlers == 0 {
		o.MaxConcurrentHandlers = DefaultMaxConcurrentHandlers
	}
	if o.Transport == nil {
		o.Transport = mqtt.New(nil)
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.TLSConfig != nil {
		tlsConf = o.TLSConfig.Clone()
	}
	if o.X509 != nil {
		tlsConf.Certificates = []tls.Certificate{o.X509.Certificate()}
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("identity", id.String(), "transport", o.Transport.Name())
	hctx, cancelHandlers := context.WithCancel(context.Background())
	life, endLife := context.WithCancel(context.Background())
	return &Client{
		id:             id,
		addr:           addr,
		tokens:         tokens,
		tlsConf:        tlsConf,
		tr:             o.Transport,
		retry:          o.Retry,
		log:            log,
		sem:            make(chan struct{}, o.MaxConcurrentHandlers),
		maxQueued:      queuedPerHandler * o.MaxConcurrentHandlers,
		status:         &statusQueue{fn: o.OnConnectionStatus},
		handlerCtx:     hctx,
		cancelHandlers: cancelHandlers,
		life:           life,
		endLife:        endLife,
		handlers:       map[string]MethodHandler{},
		changed:        make(chan struct{}),
		callsChanged:   make(chan struct{}),
	}, nil
}
