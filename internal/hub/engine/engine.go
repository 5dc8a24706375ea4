// Package engine is the protocol-neutral core of the local IoT Hub: the
// identity registry, authentication of devices and services, the direct
// method router and fault injection. Protocol endpoints (MQTT, AMQP, HTTPS)
// translate their wire formats to calls on an [Engine].
package engine

import (
	"crypto/x509"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iothub-go/iothub/internal/hubauth"
)

// Config configures an Engine.
type Config struct {
	// HostName is the hub's host name, the audience of every token.
	// Default "localhost".
	HostName string
	// GatewayHostNames are other names clients reach this hub under (the
	// names its TLS certificate carries, e.g. "localhost", "127.0.0.1").
	// A device whose connection string sets GatewayHostName to one of
	// them may name it where the hub's host name goes (see
	// AcceptsHostName).
	GatewayHostNames []string
	// OwnerKey fixes the iothubowner policy's primary key (base64); random
	// when empty. The other default policies always get random keys.
	OwnerKey string
	// TrustedCAs are the verified CA certificates that CA-signed identities
	// chain to. nil: CA-signed identities cannot authenticate.
	TrustedCAs *x509.CertPool
	// Now returns the time; nil means time.Now.
	Now func() time.Time
	// Logger receives one line per method call and connection event; nil is
	// silent. Secrets and payloads are never logged.
	Logger *slog.Logger

	// MaxActiveJobs is how many jobs (queued, scheduled or running) may
	// exist at once; one more is refused with 429004
	// ThrottlingMaxActiveJobCountExceeded. 0 means DefaultMaxActiveJobs
	// (1, IoT Hub's Free and S1 limit; S2 allows 5, S3 10); negative means
	// no limit.
	MaxActiveJobs int
	// JobDeviceConcurrency is how many devices one job works on at once.
	// 0 or negative means DefaultJobDeviceConcurrency (10).
	JobDeviceConcurrency int
	// JobDeviceRate limits a job's device operations (method calls, twin
	// updates) per second. 0 (the default) means no limit: the local hub
	// does not throttle jobs, although IoT Hub does (10/s on S1, the
	// higher of 10/s or 1/s/unit on S2, 50/s/unit on S3).
	JobDeviceRate float64
	// JobRetention is how long a finished job is kept (on the job clock).
	// 0 means DefaultJobRetention (30 days, as IoT Hub); negative means
	// forever.
	JobRetention time.Duration

	// C2D configures the cloud-to-device queues and feedback (c2d.go);
	// zero fields take IoT Hub's defaults.
	C2D C2DConfig

	// Store, when set, keeps the registry, twins, jobs, cloud-to-device
	// queues and policies durably (persist.go): New loads what it holds,
	// and every change is in it before the method that made it returns.
	// nil keeps everything in memory only. The caller closes it after
	// Engine.Close.
	Store Store
}

// Engine is the hub's state. All methods are safe for concurrent use.
type Engine struct {
	hostName string
	gateways []string
	now      func() time.Time
	log      *slog.Logger
	cas      *x509.CertPool
	store    Store // nil: in memory only (persist.go)

	mu        sync.Mutex
	policies  map[string]hubauth.Policy
	bearer    map[string]time.Time // accepted Entra test tokens -> expiry
	devices   map[string]*identityRecord
	scopes    map[string]string   // edge device scope -> device id
	sessions  map[string]*Session // live connection per identity key
	changed   chan struct{}       // closed and replaced whenever an identity goes on- or offline
	revoked   map[string]time.Time
	verified  map[string]verifiedToken // Authorization header → verified service token (AuthorizeService)
	faults    faults
	calls     []CallRecord
	callBytes int      // sizes of calls (CallRecord.size)
	evlog     eventLog // device-to-cloud messages (events.go)
	etagSeq   uint64
	genSeq    int64
	reqSeq    uint64
	closed    bool

	jobs jobStore // jobs.go; its own lock

	clockOffset atomic.Int64 // the hub clock (jobs, C2D) = now() + offset; see hubNow
	c2d         c2dState     // c2d.go; guarded by mu

	members uint64     // bumped whenever a device or module is added or deleted
	qindex  queryIndex // the query collections' ids in order (querydocs.go)
}

// New returns an engine with the five default policies.
func New(cfg Config) (*Engine, error) {
	if cfg.HostName == "" {
		cfg.HostName = "localhost"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Engine{
		hostName: cfg.HostName,
		gateways: append([]string(nil), cfg.GatewayHostNames...),
		now:      cfg.Now,
		log:      log,
		cas:      cfg.TrustedCAs,
		policies: map[string]hubauth.Policy{},
		bearer:   map[string]time.Time{},
		devices:  map[string]*identityRecord{},
		scopes:   map[string]string{},
		sessions: map[string]*Session{},
		changed:  make(chan struct{}),
		revoked:  map[string]time.Time{},
		verified: map[string]verifiedToken{},
		etagSeq:  318751955,
	}
	e.initJobs(cfg)
	e.initC2D(cfg.C2D)
	for name, rights := range hubauth.DefaultPolicyRights() {
		p := hubauth.Policy{Name: name, PrimaryKey: newKey(), SecondaryKey: newKey(), Rights: rights}
		if name == "iothubowner" && cfg.OwnerKey != "" {
			b, err := decodeBase64(cfg.OwnerKey)
			if err != nil || len(b) < 16 || len(b) > 64 {
				return nil, errors.New("iothub: owner key must be base64 of 16 to 64 bytes")
			}
			p.PrimaryKey = cfg.OwnerKey
		}
		e.policies[name] = p
	}
	if cfg.Store != nil {
		e.store = cfg.Store
		if err := e.load(cfg.OwnerKey); err != nil {
			e.Close()
			return nil, err
		}
	}
	return e, nil
}

// Now returns the engine's current time (Config.Now).
func (e *Engine) Now() time.Time { return e.now() }

// hubNow is the hub clock: Config.Now plus every AdvanceJobClock so far.
// Jobs and cloud-to-device expiry, locks and feedback run on it.
func (e *Engine) hubNow() time.Time {
	return e.now().Add(time.Duration(e.clockOffset.Load()))
}

// HostName returns the hub's host name.
func (e *Engine) HostName() string { return e.hostName }

// AcceptsHostName reports whether a client may name host (optionally with
// a port) as the hub it connects to, in the MQTT user name: the hub's host
// name or one of its gateway names, case-insensitively.
//
// Why gateway names: the .NET device SDK puts GatewayHostName, not
// HostName, in the MQTT user name (IotHubConnectionString sets HostName =
// GatewayHostName when one is given, and MqttIotHubAdapter builds the user
// name from it), while the SAS audience stays HostName. Node puts HostName
// there. A hub reached through its own gateway name accepts both.
func (e *Engine) AcceptsHostName(host string) bool {
	if strings.EqualFold(host, e.hostName) {
		return true
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, e.hostName) {
		return true
	}
	for _, g := range e.gateways {
		if strings.EqualFold(host, g) {
			return true
		}
	}
	return false
}

// Policy returns a shared access policy by name.
func (e *Engine) Policy(name string) (hubauth.Policy, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p, ok := e.policies[name]
	return p, ok
}

// Close disconnects every session and stops the jobs scheduler and the
// cloud-to-device timer. Pending
// invocations end with an error; running jobs end where they are. Close
// returns when the jobs' goroutines have ended.
func (e *Engine) Close() {
	e.closeJobs()
	defer e.waitJobs()
	e.closeC2D()
	e.mu.Lock()
	e.closed = true
	sessions := make([]*Session, 0, len(e.sessions))
	for _, s := range e.sessions {
		sessions = append(sessions, s)
	}
	e.mu.Unlock()
	for _, s := range sessions {
		s.conn.Close(NewError(CodeServiceUnavailable, "The hub is shutting down"))
		s.Disconnect()
	}
}

func decodeBase64(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }

func (e *Engine) hubName() string {
	name, _, _ := strings.Cut(e.hostName, ".")
	return name
}

func trimPrefix(err error) string { return strings.TrimPrefix(err.Error(), "iothub: ") }
