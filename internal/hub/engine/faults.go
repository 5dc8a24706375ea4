package engine

import (
	"time"

	"github.com/iothub-go/iothub/auth"
)

// faults is the fault-injection state, guarded by Engine.mu.
type faults struct {
	serviceErrors []*Error                 // answers for the next service requests, in order
	responses     map[string]responseFault // per identity key
}

type responseFault struct {
	delay time.Duration
	drop  bool
}

// FailServiceRequests makes the next n service API requests fail with the
// given error code (e.g. 429001 or 503001) before they are dispatched.
func (e *Engine) FailServiceRequests(code, n int) {
	e.FailServiceRequestsRetryAfter(code, n, 0)
}

// FailServiceRequestsRetryAfter is FailServiceRequests with a Retry-After
// on each answer when retryAfter is positive.
func (e *Engine) FailServiceRequestsRetryAfter(code, n int, retryAfter time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := 0; i < n; i++ {
		herr := NewError(code, "Injected fault: %s", CodeName(code))
		herr.RetryAfter = retryAfter
		e.faults.serviceErrors = append(e.faults.serviceErrors, herr)
	}
}

// TakeServiceFault returns the next injected service error, if any. The
// service API calls it once per request.
func (e *Engine) TakeServiceFault() *Error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.faults.serviceErrors) == 0 {
		return nil
	}
	err := e.faults.serviceErrors[0]
	e.faults.serviceErrors = e.faults.serviceErrors[1:]
	return err
}

// SetResponseFault delays (delay > 0) or drops (drop) the method responses
// of one identity from now on; zero values restore normal delivery.
func (e *Engine) SetResponseFault(id auth.Identity, delay time.Duration, drop bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.faults.responses == nil {
		e.faults.responses = map[string]responseFault{}
	}
	if delay <= 0 && !drop {
		delete(e.faults.responses, id.String())
		return
	}
	e.faults.responses[id.String()] = responseFault{delay: delay, drop: drop}
}

func (e *Engine) responseFault(key string) responseFault {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.faults.responses[key]
}

// DropConnection closes the identity's live connection, as a network fault
// would. It reports whether there was one.
func (e *Engine) DropConnection(id auth.Identity) bool {
	e.mu.Lock()
	s := e.sessions[id.String()]
	e.mu.Unlock()
	if s == nil {
		return false
	}
	s.conn.Close(NewError(CodeServerError, "Injected fault: connection dropped"))
	s.Disconnect()
	return true
}

// ExpireTokens makes the hub treat every SAS token of id that expires at
// or before the live connection's token (or now, with no connection) as
// expired: the connection is closed and such tokens are refused from now
// on, so the client must present a newly minted token.
func (e *Engine) ExpireTokens(id auth.Identity) {
	e.mu.Lock()
	until := e.now()
	s := e.sessions[id.String()]
	if s != nil {
		s.mu.Lock()
		if s.tokenExpiry.After(until) {
			until = s.tokenExpiry
		}
		s.mu.Unlock()
	}
	if prev, ok := e.revoked[id.String()]; !ok || until.After(prev) {
		e.revoked[id.String()] = until
	}
	e.mu.Unlock()
	if s != nil {
		s.conn.Close(NewError(CodeUnauthorized, "Injected fault: the SAS token of %s expired", id))
		s.Disconnect()
	}
}

// LinkFaulter is implemented by connections of a protocol with sessions and
// links (AMQP): it injects the partial failures such a connection can have
// while its socket stays up.
type LinkFaulter interface {
	// DetachMethodLink detaches one of the identity's method links with an
	// error: which is "request" (the link the hub sends requests on) or
	// "response". It reports whether the link was attached.
	DetachMethodLink(which string) bool
	// EndSession ends, with an error, the session that holds the
	// identity's method links. It reports whether there was one.
	EndSession() bool
}

// linkFaulter returns the identity's live connection as a LinkFaulter.
func (e *Engine) linkFaulter(id auth.Identity) (LinkFaulter, bool) {
	e.mu.Lock()
	s := e.sessions[id.String()]
	e.mu.Unlock()
	if s == nil {
		return nil, false
	}
	f, ok := s.conn.(LinkFaulter)
	return f, ok
}

// DetachMethodLink detaches the "request" or "response" method link of
// the identity's AMQP connection, leaving the connection and session up.
// It reports false when the identity has no AMQP connection with that link.
func (e *Engine) DetachMethodLink(id auth.Identity, which string) bool {
	f, ok := e.linkFaulter(id)
	return ok && f.DetachMethodLink(which)
}

// EndSession ends the AMQP session that holds the identity's method links,
// leaving the connection up. It reports false when the identity has no
// AMQP connection with method links.
func (e *Engine) EndSession(id auth.Identity) bool {
	f, ok := e.linkFaulter(id)
	return ok && f.EndSession()
}
