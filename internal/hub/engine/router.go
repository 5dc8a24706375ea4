package engine

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/iothub-go/iothub/auth"
)

// MaxPayload is the largest method request or response payload (128 KB).
const MaxPayload = 128 * 1024

// Conn is a protocol endpoint's live, authenticated device connection.
type Conn interface {
	// NewRequestID returns a fresh method request id in the protocol's
	// format (MQTT: hex counter; AMQP: uuid).
	NewRequestID() string
	// SendMethod delivers a method request. It must not block for long.
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
}

// MethodCall is one direct method invocation.
type MethodCall struct {
	Name string
	// Payload is the JSON text of the caller's payload, byte for byte
	// ("null" for JSON null); nil when the caller's request had no payload
	// member, and the device then receives an empty body.
	Payload         []byte
	ResponseTimeout time.Duration
	ConnectTimeout  time.Duration
}

// MethodResult is a device's answer.
type MethodResult struct {
	Status  int
	Payload []byte // raw device body; empty when the device sent none
}

// CallRecord describes one finished invocation, for assertions in tests.
type CallRecord struct {
	Identity  auth.Identity
	Method    string
	Payload   []byte // request payload
	Status    int    // device status; 0 when the call failed
	ErrorCode int    // hub error code; 0 on success
	Protocol  string // the transport that carried the call; "" if never dispatched
	Start     time.Time
	Latency   time.Duration
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

// Respond delivers a device's answer to request rid. It reports false when
// no call waits for rid (unknown or late): such answers are dropped.
func (s *Session) Respond(rid string, status int, payload []byte) bool {
	f := s.e.responseFault(s.key)
	if f.drop {
		return true
	}
	deliver := func() bool {
		s.mu.Lock()
		ch, ok := s.pending[rid]
		if ok {
			delete(s.pending, rid)
		}
		s.mu.Unlock()
		if ok {
			ch <- MethodResult{Status: status, Payload: append([]byte(nil), payload...)}
		}
		return ok
	}
	if f.delay > 0 {
		s.mu.Lock()
		_, ok := s.pending[rid]
		s.mu.Unlock()
		time.AfterFunc(f.delay, func() { deliver() })
		return ok
	}
	return deliver()
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

// Invoke runs a direct method on id (a device, or a module when
// id.ModuleID is set): it waits up to ConnectTimeout for the identity to be
// online and subscribed, sends the request, and waits up to ResponseTimeout
// for the answer. Hub failures come back as *Error.
func (e *Engine) Invoke(ctx context.Context, id auth.Identity, call MethodCall) (MethodResult, *Error) {
	start := e.now()
	rec := CallRecord{Identity: auth.Identity{HostName: e.hostName, DeviceID: id.DeviceID, ModuleID: id.ModuleID},
		Method: call.Name, Payload: call.Payload, Start: start}
	res, protocol, herr := e.invoke(ctx, rec.Identity, call)
	rec.Protocol = protocol
	rec.Latency = e.now().Sub(start)
	// The attributes cost allocations even when the logger discards
	// them: build them only for a logger that wants them.
	logging := e.log.Enabled(ctx, slog.LevelInfo)
	if herr != nil {
		rec.ErrorCode = herr.Code
		if logging {
			e.log.Info("method call", "identity", rec.Identity.String(), "method", call.Name,
				"error", herr.Code, "errorName", herr.Name, "latency", rec.Latency)
		}
	} else {
		rec.Status = res.Status
		if logging {
			e.log.Info("method call", "identity", rec.Identity.String(), "method", call.Name,
				"status", res.Status, "protocol", protocol, "latency", rec.Latency)
		}
	}
	e.mu.Lock()
	e.calls = append(e.calls, rec)
	if len(e.calls) > MaxStoredCalls {
		// As for events: re-slicing keeps memory bounded, append copies
		// only the live window when it grows the array.
		e.calls[0] = CallRecord{}
		e.calls = e.calls[len(e.calls)-MaxStoredCalls:]
	}
	e.mu.Unlock()
	return res, herr
}

func (e *Engine) invoke(ctx context.Context, id auth.Identity, call MethodCall) (MethodResult, string, *Error) {
	e.mu.Lock()
	_, herr := e.lookupLocked(id.DeviceID, id.ModuleID)
	if herr == nil {
		if dev := e.devices[id.DeviceID]; dev.device.Status == "disabled" {
			herr = NewError(CodeDeviceNotFound, "Device %s is disabled.", id.DeviceID)
		}
	}
	e.mu.Unlock()
	if herr != nil {
		return MethodResult{}, "", herr
	}

	notOnline := func() *Error {
		return NewError(CodeDeviceNotOnline, "The operation failed because the requested device isn't online or hasn't registered the direct method callback. To learn more, see https://aka.ms/iothub404103")
	}
	// The connect timer starts when the identity is first seen offline:
	// most calls find it online and need none.
	var connectTimer *time.Timer
	defer func() {
		if connectTimer != nil {
			connectTimer.Stop()
		}
	}()
	// waitChange waits for the identity's next on- or offline change within
	// the connect timeout; it reports whether to look again.
	waitChange := func(changed <-chan struct{}) *Error {
		if call.ConnectTimeout <= 0 {
			return notOnline()
		}
		if connectTimer == nil {
			connectTimer = time.NewTimer(call.ConnectTimeout)
		}
		select {
		case <-changed:
			return nil
		case <-connectTimer.C:
			return notOnline()
		case <-ctx.Done():
			return NewError(CodeServerError, "The request was cancelled")
		}
	}
	var (
		s        *Session
		rid      string
		ch       chan MethodResult
		protocol string
	)
	for {
		var changed <-chan struct{}
		s, changed = e.online(id.String())
		if s == nil {
			if herr := waitChange(changed); herr != nil {
				return MethodResult{}, "", herr
			}
			continue
		}
		rid = s.conn.NewRequestID()
		ch = make(chan MethodResult, 1)
		s.mu.Lock()
		ended := s.ended
		if !ended {
			s.pending[rid] = ch
		}
		s.mu.Unlock()
		protocol = s.conn.Protocol()
		if !ended {
			if err := s.conn.SendMethod(rid, call.Name, call.Payload); err == nil {
				break
			}
			s.forget(rid)
		}
		// The session's connection could not take the request: it is
		// going away (e.g. a stale connect attempt that replaced a newer
		// connection). The device counts as offline: wait within the
		// connect timeout for the next change, as for any offline device.
		if herr := waitChange(changed); herr != nil {
			return MethodResult{}, protocol, herr
		}
	}
	timer := time.NewTimer(call.ResponseTimeout)
	defer timer.Stop()
	select {
	case res, ok := <-ch:
		if !ok {
			return MethodResult{}, protocol, NewError(CodeDeviceNotOnline, "The device disconnected before it answered the method call. To learn more, see https://aka.ms/iothub404103")
		}
		return res, protocol, nil
	case <-timer.C:
		s.forget(rid)
		return MethodResult{}, protocol, NewError(CodeGatewayTimeout, "Timed out waiting for the response from device.")
	case <-ctx.Done():
		s.forget(rid)
		return MethodResult{}, protocol, NewError(CodeServerError, "The request was cancelled")
	}
}

func (s *Session) forget(rid string) {
	s.mu.Lock()
	delete(s.pending, rid)
	s.mu.Unlock()
}

// NextHexRequestID returns a hub-wide unique request id in MQTT's
// hexadecimal form.
func (e *Engine) NextHexRequestID() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reqSeq++
	return strconv.FormatUint(e.reqSeq, 16)
}

// MaxStoredCalls is how many finished invocations the engine keeps for
// Calls: the newest ones. It bounds a long-running hub's memory (a
// benchmark makes millions of calls; each record holds its payload).
const MaxStoredCalls = 10000

// Calls returns the invocations finished so far (the newest
// MaxStoredCalls), oldest first.
func (e *Engine) Calls() []CallRecord {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]CallRecord(nil), e.calls...)
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

// ValidMethodName reports whether name is a valid direct method name: a
// non-empty RFC 7230 token without '$'.
func ValidMethodName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= 0x20 || c >= 0x7f {
			return false
		}
		switch c {
		case '$', '(', ')', '<', '>', '@', ',', ';', ':', '\\', '"', '/', '[', ']', '?', '=', '{', '}':
			return false
		}
	}
	return true
}

// ValidJSON reports whether b is one JSON value.
func ValidJSON(b []byte) bool { return json.Valid(b) }

func decodeBase64(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }

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
