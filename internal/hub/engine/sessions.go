package engine

// Sessions: the live connections of identities, one per identity.

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/iothub-go/iothub/auth"
)

// Conn is a protocol endpoint's live, authenticated device connection.
type Conn interface {
	// NewRequestID returns a fresh method request id in the protocol's
	// format (MQTT: hex counter; AMQP: uuid).
	NewRequestID() string
	// SendMethod delivers a method request. It must not block for long.
	// An *Error means the request can never be sent on this connection
	// (the call fails with it); any other error means the connection is
	// going away.
	SendMethod(rid, name string, payload []byte) error
	// Close ends the connection; reason says why (kicked by a newer
	// connection, token expired, identity deleted, hub closing, fault).
	// It must not block and may be called more than once.
	Close(reason *Error)
	// Protocol names the transport for logs: "mqtt", "mqtt-ws", "amqp", ….
	Protocol() string
}

// Session is one live connection of an identity, as the router sees it.
type Session struct {
	e    *Engine
	id   auth.Identity
	key  string
	conn Conn
	done chan struct{}

	mu          sync.Mutex
	subscribed  bool
	ended       bool
	pending     map[string]chan MethodResult
	expiry      *time.Timer
	tokenExpiry time.Time
	desiredSub  bool           // listening for desired patches (twins.go)
	desiredQ    []desiredPatch // patches to send, in version order

	sendMu sync.Mutex // one desired-patch sender at a time
}

// Connect registers an authenticated connection for id and returns its
// session. A previous connection of the same identity is closed (IoT Hub
// allows one connection per identity). If tokenExpiry is not zero the
// connection is closed when the token expires.
func (e *Engine) Connect(id auth.Identity, c Conn, tokenExpiry time.Time) *Session {
	id.HostName = e.hostName
	s := &Session{e: e, id: id, key: id.String(), conn: c, done: make(chan struct{}), pending: map[string]chan MethodResult{}}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		c.Close(NewError(CodeServiceUnavailable, "The hub is shutting down"))
		s.ended = true
		close(s.done)
		return s
	}
	old := e.sessions[s.key]
	e.sessions[s.key] = s
	e.setConnectionStateLocked(id, true)
	e.mu.Unlock()
	if old != nil {
		// IoT Hub logs the takeover of an MQTT connection as 400027
		// ConnectionForcefullyClosedOnNewConnection and that of AMQP
		// links as 409002 LinkCreationConflict (troubleshoot-error-codes;
		// the 409002 page is the AMQP one). See docs/hub-fidelity.md.
		code := CodeConnectionForcefullyClosed
		if strings.HasPrefix(old.conn.Protocol(), "amqp") {
			code = CodeLinkCreationConflict
		}
		old.conn.Close(NewError(code, "A new connection for %s replaced this one", id))
		old.Disconnect()
	}
	s.SetTokenExpiry(tokenExpiry)
	e.log.Info("connected", "identity", id.String(), "protocol", c.Protocol())
	return s
}

// Identity returns the session's identity.
func (s *Session) Identity() auth.Identity { return s.id }

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// SetTokenExpiry (re)arms the close-on-expiry timer, e.g. after an AMQP
// put-token renewed the connection's token. A zero time disarms it.
func (s *Session) SetTokenExpiry(expiry time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.expiry != nil {
		s.expiry.Stop()
		s.expiry = nil
	}
	s.tokenExpiry = expiry
	if expiry.IsZero() || s.ended {
		return
	}
	s.expiry = time.AfterFunc(expiry.Sub(s.e.now()), func() {
		s.conn.Close(NewError(CodeUnauthorized, "The SAS token of %s expired", s.id))
	})
}

// SetSubscribed records whether the device listens for methods (MQTT
// SUBACK for $iothub/methods/POST/#, AMQP method links attached).
func (s *Session) SetSubscribed(on bool) {
	s.mu.Lock()
	changed := s.subscribed != on && !s.ended
	if changed {
		s.subscribed = on
	}
	s.mu.Unlock()
	if changed {
		s.e.notify()
	}
}

// Disconnect ends the session: the connection is gone. Pending calls fail
// at once with DeviceNotOnline.
func (s *Session) Disconnect() {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	if s.expiry != nil {
		s.expiry.Stop()
	}
	pending := s.pending
	s.pending = nil
	s.mu.Unlock()
	close(s.done)
	for _, ch := range pending {
		close(ch)
	}
	e := s.e
	e.mu.Lock()
	if e.sessions[s.key] == s {
		delete(e.sessions, s.key)
		e.setConnectionStateLocked(s.id, false)
	}
	e.mu.Unlock()
	e.notify()
	e.log.Info("disconnected", "identity", s.id.String(), "protocol", s.conn.Protocol())
}

func (e *Engine) notify() {
	e.mu.Lock()
	close(e.changed)
	e.changed = make(chan struct{})
	e.mu.Unlock()
}

// online returns the identity's session if it is connected and subscribed,
// and a channel that is closed at the next change.
func (e *Engine) online(key string) (*Session, <-chan struct{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.sessions[key]
	if s != nil {
		s.mu.Lock()
		ok := s.subscribed && !s.ended
		s.mu.Unlock()
		if ok {
			return s, e.changed
		}
	}
	return nil, e.changed
}

// kick closes the live session of one identity.
func (e *Engine) kick(id auth.Identity, reason *Error) {
	e.mu.Lock()
	s := e.sessions[id.String()]
	e.mu.Unlock()
	if s != nil {
		s.conn.Close(reason)
		s.Disconnect()
	}
}

// kickDevice closes the sessions of a device and of all its modules.
func (e *Engine) kickDevice(deviceID string, reason *Error) {
	e.mu.Lock()
	var victims []*Session
	for _, s := range e.sessions {
		if s.id.DeviceID == deviceID {
			victims = append(victims, s)
		}
	}
	e.mu.Unlock()
	for _, s := range victims {
		s.conn.Close(reason)
		s.Disconnect()
	}
}

// WaitOnline blocks until id is connected and subscribed to methods, or
// ctx ends.
func (e *Engine) WaitOnline(ctx context.Context, id auth.Identity) error {
	for {
		s, changed := e.online(id.String())
		if s != nil {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// WaitOffline blocks until id is no longer connected and subscribed to
// methods (a call would get 404103 at once), or ctx ends.
func (e *Engine) WaitOffline(ctx context.Context, id auth.Identity) error {
	for {
		s, changed := e.online(id.String())
		if s == nil {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
