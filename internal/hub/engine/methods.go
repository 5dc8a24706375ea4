package engine

// Direct methods: validation, invocation, request ids and answers.

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/iothub-go/iothub/auth"
)

// MaxPayload is the largest method request or response payload (128 KB).
const MaxPayload = 128 * 1024

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
	e.storeCallLocked(rec)
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
			err := s.conn.SendMethod(rid, call.Name, call.Payload)
			if err == nil {
				break
			}
			s.forget(rid)
			var herr *Error
			if errors.As(err, &herr) {
				// The connection refused this request itself (it cannot be
				// written on its protocol): waiting would not help.
				return MethodResult{}, protocol, herr
			}
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

// MaxMethodNameLength is the longest method name the hub accepts. IoT Hub
// documents no limit; EdgeHub, Microsoft's re-implementation of the hub's
// device surface, refuses names longer than 100 characters with 400, so we
// follow it [inf].
const MaxMethodNameLength = 100

// ValidMethodName reports whether name is a valid direct method name: 1 to
// MaxMethodNameLength characters of an RFC 7230 token, without '$' (IoT
// Hub's property-name rule) and without '+' and '#': the name travels
// inside an MQTT topic, where those are wildcards that a PUBLISH may not
// carry (MQTT 3.1.1, 4.7.1).
func ValidMethodName(name string) bool {
	if name == "" || len(name) > MaxMethodNameLength {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= 0x20 || c >= 0x7f {
			return false
		}
		switch c {
		case '$', '(', ')', '<', '>', '@', ',', ';', ':', '\\', '"', '/', '[', ']', '?', '=', '{', '}', '+', '#':
			return false
		}
	}
	return true
}
