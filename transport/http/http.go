// Package http is the HTTPS device transport for Azure IoT Hub: it sends
// device-to-cloud messages with POST /devices/{id}/messages/events, and
// polls for cloud-to-device messages (ReceiveMessage, SettleMessage; see
// c2d.go), with a SAS token or an X.509 client certificate.
//
// IoT Hub never delivers direct methods over HTTPS. A device client on this
// transport refuses method handlers at once with an error wrapping
// transport.ErrUnsupported; use transport/mqtt or transport/amqp to receive
// methods.
//
// SendEvent refuses, before sending, a message property whose name or value
// holds a character other than ASCII letters, digits and
// ! # $ % & ' * + - . ^ _ ` | ~ (IoT Hub carries properties in HTTP headers
// here), with an error wrapping transport.ErrInvalidProperty. The hub's
// refusals come back as a [*StatusError], which errors.Is matches against
// the sentinels of package transport (see StatusError.Unwrap).
package http

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	nethttp "net/http"
	"net/url"
	"sync"
	"time"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/apiversion"
	"github.com/iothub-go/iothub/transport"
	"github.com/iothub-go/iothub/transport/internal/eventcheck"
)

// Options configures the HTTPS transport. The zero value is ready to use.
type Options struct {
	// Timeout bounds one request. Zero means 60 s.
	Timeout time.Duration
}

// Transport sends device messages over HTTPS. It is safe for concurrent
// use.
type Transport struct {
	timeout time.Duration
}

// New returns an HTTPS transport. opts may be nil.
func New(opts *Options) *Transport {
	t := &Transport{timeout: 60 * time.Second}
	if opts != nil && opts.Timeout > 0 {
		t.timeout = opts.Timeout
	}
	return t
}

// Name returns "http".
func (t *Transport) Name() string { return "http" }

// errNoMethods is the error for direct methods over HTTPS.
var errNoMethods = fmt.Errorf("%w: IoT Hub does not deliver direct methods over HTTPS; use MQTT or AMQP (transport/mqtt, transport/amqp)", transport.ErrUnsupported)

// MethodSupport returns an error wrapping transport.ErrUnsupported: IoT Hub
// does not deliver direct methods over HTTPS.
func (t *Transport) MethodSupport() error { return errNoMethods }

// errNoTwins is the error for device twins over HTTPS.
var errNoTwins = fmt.Errorf("%w: IoT Hub does not serve device twins to devices over HTTPS; use MQTT or AMQP (transport/mqtt, transport/amqp)", transport.ErrUnsupported)

// TwinSupport returns an error wrapping transport.ErrUnsupported: IoT Hub
// has no device-side twin API over HTTPS (the official SDKs refuse twins
// on their HTTP transports too).
func (t *Transport) TwinSupport() error { return errNoTwins }

// Dial prepares a client for the identity. HTTPS has no standing
// connection, so Dial does no I/O: bad credentials show up in SendEvent.
func (t *Transport) Dial(ctx context.Context, cfg transport.Config) (transport.Conn, error) {
	host := cfg.Address
	if _, _, err := net.SplitHostPort(host); err != nil {
		host = net.JoinHostPort(host, "443")
	}
	tlsConf := cfg.TLSConfig.Clone() // carries the client certificate of X.509 identities
	c := &conn{
		id:    cfg.Identity,
		base:  "https://" + host,
		token: cfg.Token,
		ua:    cfg.ProductInfo,
		done:  make(chan struct{}),
		client: &nethttp.Client{
			Timeout:   t.timeout,
			Transport: &nethttp.Transport{TLSClientConfig: tlsConf, Proxy: nethttp.ProxyFromEnvironment, IdleConnTimeout: 90 * time.Second},
			// Never follow a redirect: it would send the SAS token where
			// the hub pointed (even over plain http) and post the message
			// a second time. SendEvent turns the redirect into an error.
			CheckRedirect: func(*nethttp.Request, []*nethttp.Request) error { return nethttp.ErrUseLastResponse },
		},
	}
	return c, nil
}

type conn struct {
	id     auth.Identity
	base   string
	ua     string
	client *nethttp.Client
	done   chan struct{}

	mu     sync.Mutex
	token  string
	closed bool
}

func (c *conn) SubscribeMethods(context.Context) error { return errNoMethods }

// UnsubscribeMethods has nothing to end: HTTPS never subscribes.
func (c *conn) UnsubscribeMethods(context.Context) error { return nil }

func (c *conn) RespondMethod(context.Context, string, *transport.MethodResponse) error {
	return errNoMethods
}

// GetTwin returns an error wrapping transport.ErrUnsupported.
func (c *conn) GetTwin(context.Context) ([]byte, error) { return nil, errNoTwins }

// UpdateReported returns an error wrapping transport.ErrUnsupported.
func (c *conn) UpdateReported(context.Context, []byte) (int64, error) { return 0, errNoTwins }

// SubscribeDesired returns an error wrapping transport.ErrUnsupported.
func (c *conn) SubscribeDesired(context.Context) error { return errNoTwins }

// UpdateToken replaces the SAS token used for later requests.
func (c *conn) UpdateToken(_ context.Context, token string) error {
	c.mu.Lock()
	c.token = token
	c.mu.Unlock()
	return nil
}

func (c *conn) Done() <-chan struct{} { return c.done }
func (c *conn) Err() error            { return nil }

func (c *conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		close(c.done)
		c.client.CloseIdleConnections()
	}
	return nil
}

// checkProperty reports whether name and value may be sent over HTTPS:
// IoT Hub allows only ASCII letters, digits and ! # $ % & ' * + - . ^ _ ` | ~
// in property names and values there.
func checkProperty(name, value string) error {
	if name == "" {
		return fmt.Errorf("%w: http: empty property name", transport.ErrInvalidProperty)
	}
	for _, s := range []string{name, value} {
		for i := 0; i < len(s); i++ {
			if !isTokenChar(s[i]) {
				return fmt.Errorf("%w: http: property %q: character %q is not allowed over HTTPS (only ASCII letters, digits and !#$%%&'*+-.^_`|~)", transport.ErrInvalidProperty, name, string(rune(s[i])))
			}
		}
	}
	return nil
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// SendEvent posts msg and returns once the hub answered 204.
func (c *conn) SendEvent(ctx context.Context, msg *transport.Message) error {
	if err := eventcheck.Check(msg); err != nil {
		return err
	}
	for k, v := range msg.Properties {
		if err := checkProperty(k, v); err != nil {
			return err
		}
	}
	path := "/devices/" + url.PathEscape(c.id.DeviceID)
	if c.id.ModuleID != "" {
		path += "/modules/" + url.PathEscape(c.id.ModuleID)
	}
	path += "/messages/events"
	req, err := nethttp.NewRequestWithContext(ctx, nethttp.MethodPost, c.base+path+"?api-version="+apiversion.Current, bytes.NewReader(msg.Body))
	if err != nil {
		return fmt.Errorf("iothub: http: %w", err)
	}
	h := req.Header
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errors.New("iothub: http: connection closed")
	}
	if c.token != "" {
		h.Set("Authorization", c.token)
	}
	c.mu.Unlock()
	h.Set("iothub-to", path)
	if c.ua != "" {
		h.Set("User-Agent", c.ua)
	}
	set := func(k, v string) {
		if v != "" {
			h.Set(k, v)
		}
	}
	set("IoTHub-MessageId", msg.MessageID)
	set("IoTHub-CorrelationId", msg.CorrelationID)
	set("iothub-contenttype", msg.ContentType)
	set("iothub-contentencoding", msg.ContentEncoding)
	for k, v := range msg.Properties {
		h.Set("iothub-app-"+k, v)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("iothub: http: sending event: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch {
	case resp.StatusCode == nethttp.StatusNoContent || resp.StatusCode == nethttp.StatusOK:
		return nil
	case isRedirect(resp.StatusCode):
		return fmt.Errorf("%w: the hub answered %d with Location %q", ErrRedirect, resp.StatusCode, clip(resp.Header.Get("Location")))
	}
	return &StatusError{StatusCode: resp.StatusCode, ErrorCode: resp.Header.Get("iothub-errorcode"), Body: string(body)}
}

// ErrRedirect is wrapped by SendEvent's error when the hub answers with a
// redirect (301, 302, 303, 307, 308). Redirects are never followed: that
// would send the SAS token to wherever the answer points, plain http
// included, and post the message again. Use errors.Is.
var ErrRedirect = errors.New("iothub: http: redirect refused")

func isRedirect(status int) bool {
	switch status {
	case nethttp.StatusMovedPermanently, nethttp.StatusFound, nethttp.StatusSeeOther,
		nethttp.StatusTemporaryRedirect, nethttp.StatusPermanentRedirect:
		return true
	}
	return false
}

// clip shortens text from the peer echoed in an error.
func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// StatusError is a non-success answer of the hub to a device request. Use
// errors.As to reach it, and errors.Is to test it against the sentinels of
// package transport (see Unwrap).
type StatusError struct {
	StatusCode int    // HTTP status
	ErrorCode  string // iothub-errorcode header, e.g. "MessageTooLarge"
	Body       string // the start of the error body
}

// Error describes the hub's answer.
func (e *StatusError) Error() string {
	return fmt.Sprintf("iothub: http: the hub answered %d %s: %s", e.StatusCode, e.ErrorCode, e.Body)
}

// Unwrap returns the sentinel of package transport that the status means,
// so that errors.Is matches it:
//
//   - 401: transport.ErrNotAuthorized (a missing, invalid or expired token,
//     or an unknown device)
//   - 412: transport.ErrLockLost (412002 DeviceMessageLockLost: the
//     lock of a cloud-to-device message expired or it was settled)
//   - 413: transport.ErrMessageTooLarge
//   - 429: transport.ErrThrottled
//   - 503: transport.ErrServiceUnavailable
//
// Other statuses give nil. A 403 is not ErrNotAuthorized: IoT Hub answers
// 403 for exhausted quotas (403002 IoTHubQuotaExceeded) and tier limits, not
// for credentials.
func (e *StatusError) Unwrap() error {
	switch e.StatusCode {
	case nethttp.StatusUnauthorized:
		return transport.ErrNotAuthorized
	case nethttp.StatusPreconditionFailed:
		return transport.ErrLockLost
	case nethttp.StatusRequestEntityTooLarge:
		return transport.ErrMessageTooLarge
	case nethttp.StatusTooManyRequests:
		return transport.ErrThrottled
	case nethttp.StatusServiceUnavailable:
		return transport.ErrServiceUnavailable
	}
	return nil
}

var _ transport.TokenUpdater = (*conn)(nil)
