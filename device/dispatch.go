package device

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"github.com/iothub-go/iothub/transport"
)

// answerTimeout bounds the sending of one answer (to within coarseStep
// more).
const answerTimeout = 30 * time.Second

// answerDeadline hands out the contexts answers are sent under: one shared
// per coarseStep rather than a timer per call.
var answerDeadline = coarseTimeout{d: answerTimeout}

// staleAfter is the longest a method call may wait in the client's queue
// for a handler slot: the longest time IoT Hub waits for any answer (a
// call's ResponseTimeout is at most 300 s). A call that waited longer has
// been answered 504101 GatewayTimeout by the hub, so its caller has given
// up, and running it now (a reboot minutes late) would surprise everyone.
// Such a call never reaches a handler: it is answered like the other calls
// the client refuses, with status 504 and a JSON error, an answer the hub
// drops as late. A variable for the tests.
var staleAfter = 300 * time.Second

// call is one method call on its way through the client: the request its
// handler is given, the connection it came on, when it arrived and the
// handlers' context (taken by dispatch, under the lock it holds anyway).
// One allocation carries all of it to the call's goroutine. The handler
// gets a pointer into it, and may keep it: once answered, the call lets go
// of the client, the connection and the context.
type call struct {
	c       *Client
	cn      *connection
	ctx     context.Context // nil for a call refused
	req     MethodRequest
	arrived monoTime
	answer  transport.MethodResponse // what serve or send gives the transport (set by ready): no allocation of its own
}

// dispatch takes a method request from a connection's read loop: it runs
// the handler on a goroutine of its own and sends the answer on the
// connection the request came from. Calls beyond the handler slots and the
// queue are answered at once with status 503; when even those answers pile
// up, calls are dropped (the caller gets the hub's timeout).
func (c *Client) dispatch(cn *connection, r *transport.MethodRequest) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock() // closing: new calls are not taken (the caller gets the hub's timeout)
		return
	}
	busy := c.accepted+c.answering >= c.maxRun+c.maxQueued
	if busy && c.refusing >= c.maxQueued {
		c.mu.Unlock()
		c.log.Warn("method call dropped: too many calls are waiting", "method", r.Name)
		return
	}
	var ctx context.Context
	if busy {
		c.refusing++
		cn.answers++
	} else {
		c.accepted++
		if c.sem == nil { // made by the first call: an idle client has none
			c.sem = make(chan struct{}, c.maxRun)
		}
		ctx = c.handlersContextLocked()
	}
	c.mu.Unlock()
	k := &call{c: c, cn: cn, ctx: ctx, req: MethodRequest{Name: r.Name, RequestID: r.RequestID, Payload: r.Payload}, arrived: monoNow()}
	if busy {
		go k.refuse()
		return
	}
	go k.serve()
}

// serve waits for a handler slot, runs the handler and sends the answer. A
// call still waiting for a slot staleAfter after it arrived is refused.
//
// Its goroutine is made for every call, and starts on a 2 KB stack, of
// which about 1.1 KB can be used before the runtime copies the stack to a
// larger one, a cost of microseconds. The handler runs in functions that
// have returned before the answer is sent, and the frames under the
// transport's send (serve's and the transport's RespondMethod's) are kept
// small: the MQTT library's Publish, with the allocations it makes, needs
// most of the rest. With larger frames here, every answer paid for a
// stack copy, and with one more frame the answers whose allocations in
// Publish took the allocator's slow path did (BENCHMARKS.md).
func (k *call) serve() {
	if k.handle() {
		k.sent(k.cn.RespondMethod(answerDeadline.get(), k.req.RequestID, &k.answer))
	}
	k.c.answered(k.cn, false)
	k.c, k.cn, k.ctx, k.answer = nil, nil, nil, transport.MethodResponse{} // a handler may keep its request (&k.req), but not the connection with it
}

// handle runs the call's handler and holds its answer in k.answer; it
// reports whether the call's connection is there to send it on.
//
//go:noinline
func (k *call) handle() bool {
	resp := k.c.runCall(k)
	k.c.handled(k.cn)
	return k.ready(resp)
}

// refuse answers a call the client has no room for with status 503.
func (k *call) refuse() {
	c := k.c
	k.send(errorResponse(503, fmt.Sprintf(
		"the device is busy: %d calls are running or waiting; try again later", c.maxRun+c.maxQueued)))
	c.answered(k.cn, true)
	k.c, k.cn = nil, nil
}

// runCall runs the call's handler in a slot, waiting for one if need be,
// and returns the answer.
//
//go:noinline
func (c *Client) runCall(k *call) *MethodResponse {
	select {
	case c.sem <- struct{}{}: // a free slot: no timer needed, and the call cannot be stale
		return c.runInSlot(k, false)
	default:
		return c.waitSlot(k)
	}
}

// waitSlot waits for a handler slot and runs the handler in it, or gives
// up after staleAfter or when the client closes.
//
//go:noinline
func (c *Client) waitSlot(k *call) *MethodResponse {
	stale := time.NewTimer(staleAfter - k.arrived.since())
	defer stale.Stop()
	select {
	case c.sem <- struct{}{}:
		return c.runInSlot(k, true)
	case <-c.life.Done():
		return closingResponse()
	case <-stale.C:
		return c.staleResponse(&k.req, k.arrived)
	}
}

// runInSlot runs the handler in the slot the caller took, and gives it
// back; unless the client began to close (Close may have given up waiting
// before the call's goroutine ran) or the call went stale while it waited
// for the slot (waited).
func (c *Client) runInSlot(k *call, waited bool) *MethodResponse {
	defer func() { <-c.sem }()
	switch {
	case c.life.Err() != nil:
		return closingResponse()
	case waited && k.arrived.since() >= staleAfter: // the slot and the timer were both ready
		return c.staleResponse(&k.req, k.arrived)
	}
	return c.run(k.ctx, &k.req)
}

// staleResponse refuses a call that waited staleAfter for a handler slot.
func (c *Client) staleResponse(req *MethodRequest, arrived monoTime) *MethodResponse {
	waited := arrived.since().Round(time.Millisecond)
	c.log.Warn("method call not run: it waited too long for a handler", "method", req.Name, "waited", waited)
	return errorResponse(504, fmt.Sprintf(
		"the call waited %v for a handler on the device, longer than the hub waits for an answer; it was not run", waited))
}

func closingResponse() *MethodResponse {
	return errorResponse(503, "the device client is closing")
}

// send sends resp on the call's connection (refuse).
func (k *call) send(resp *MethodResponse) {
	if k.ready(resp) {
		k.sent(k.cn.RespondMethod(answerDeadline.get(), k.req.RequestID, &k.answer))
	}
}

// ready holds resp in k.answer and waits until the call's connection's
// Dial has returned; it reports whether it connected.
func (k *call) ready(resp *MethodResponse) bool {
	k.answer = transport.MethodResponse{Status: resp.Status, Payload: resp.Payload}
	<-k.cn.ready()
	return k.cn.Conn != nil
}

// sent logs an answer sent, or not sent (err). It is apart from serve to
// keep serve's frame small.
//
//go:noinline
func (k *call) sent(err error) {
	c := k.c
	switch {
	case err != nil:
		c.log.Warn("method response not sent", "method", k.req.Name, "error", err)
	case c.log.Enabled(context.Background(), slog.LevelInfo): // no attributes for a logger that drops them
		c.log.Info("method", "method", k.req.Name, "status", k.answer.Status, "duration", k.arrived.since())
	}
}

// handled moves a call whose handler has returned (or that never
// reached one) from the handlers to the answers being sent on cn.
func (c *Client) handled(cn *connection) {
	c.mu.Lock()
	c.accepted--
	c.answering++
	cn.answers++
	c.callsChangedLocked()
	c.mu.Unlock()
}

// answered ends a call once its answer is sent or has failed. The last one
// to end after Close left the connection to the handlers closes it.
func (c *Client) answered(cn *connection, refusal bool) {
	c.mu.Lock()
	if refusal {
		c.refusing--
	} else {
		c.answering--
	}
	cn.answers--
	c.callsChangedLocked()
	var last *connection
	if c.closeAfter && c.accepted == 0 && !c.sendingLocked() {
		c.closeAfter = false
		last, c.conn = c.conn, nil
	}
	c.mu.Unlock()
	if last != nil {
		c.endHandlers()
		last.Close()
	}
}

// callsChangedLocked wakes the waiters of waitCalls. c.mu is held.
func (c *Client) callsChangedLocked() {
	if c.callsWatched { // only a waiter needs the signal: no channel per call
		close(c.callsChanged)
		c.callsChanged = nil // the next waiter makes the next one
		c.callsWatched = false
	}
}

// errConnectionLost ends waitCalls when the connection it watches ends.
var errConnectionLost = errors.New("iothub: the connection was lost")

// waitCalls waits until at most max handlers are left (Close in a handler
// leaves its own) and no answer is being sent on the client's connection,
// ctx ends (its error), or lost is closed (errConnectionLost). Answers on a
// connection that has ended are not waited for: they cannot reach the hub,
// and one may be held up for 30 s by the MQTT library (paho's Publish
// waits that long when the connection drops during the hand-over).
func (c *Client) waitCalls(ctx context.Context, max int, lost <-chan struct{}) error {
	for {
		c.mu.Lock()
		if c.callsChanged == nil {
			c.callsChanged = make(chan struct{})
		}
		n, changed := c.accepted, c.callsChanged
		sending := c.sendingLocked()
		var ends <-chan struct{} // the end of the connection answers are sent on
		if sending {
			ends = c.conn.Done()
		}
		c.callsWatched = true
		c.mu.Unlock()
		if n <= max && !sending {
			return nil
		}
		select {
		case <-changed:
		case <-ends: // nil while no answer is sent
		case <-lost:
			return errConnectionLost
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// sendingLocked reports whether answers are being sent on the client's
// connection, and it has not ended. c.mu is held.
func (c *Client) sendingLocked() bool {
	cn := c.conn
	if cn == nil || cn.answers == 0 {
		return false
	}
	select {
	case <-cn.Done():
		return false
	default:
		return true
	}
}

// runFrame is the function every handler runs under.
const runFrame = "github.com/iothub-go/iothub/device.(*Client).run"

// inHandler reports whether the calling goroutine runs a method handler:
// whether Client.run is on its stack, while this client has calls. It
// costs a stack walk, but only Close asks, so handler runs pay nothing.
// It cannot tell this client's handlers from another client's: if a
// handler of another client closes this one, Close may return before one
// of this client's handlers has; that handler's answer is still sent
// before the connection closes.
func (c *Client) inHandler() bool {
	c.mu.Lock()
	calls := c.accepted
	c.mu.Unlock()
	if calls == 0 {
		return false
	}
	return onStack(runFrame)
}

// onStack reports whether function (a full name as runtime.Frame gives
// it) is on the calling goroutine's stack.
func onStack(function string) bool {
	pcs := make([]uintptr, 64)
	for skip := 3; ; skip += len(pcs) {
		n := runtime.Callers(skip, pcs)
		frames := runtime.CallersFrames(pcs[:n])
		for {
			f, more := frames.Next()
			if f.Function == function {
				return true
			}
			if !more {
				break
			}
		}
		if n < len(pcs) {
			return false
		}
	}
}

// run calls the handler for req and turns every outcome into a response.
// The request's payload is not checked: IoT Hub sends a method's payload
// inside the JSON body the caller posted, so it is JSON by construction,
// and the official device SDKs do not check it either. (Checking it cost
// about 1.5 % of the device's CPU per call; the handler's answer is still
// checked, see checkResponse.)
func (c *Client) run(ctx context.Context, req *MethodRequest) (resp *MethodResponse) {
	h := c.handler(req.Name)
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("method handler panicked", "method", req.Name, "panic", fmt.Sprint(p))
			resp = handlerFailed()
		}
	}()
	r, err := h(ctx, req)
	if err != nil {
		return c.errorAnswer(req, err)
	}
	return checkResponse(r)
}

// errorAnswer turns a handler's error into the caller's answer: a
// MethodError's status and message, or a 500 that does not reveal the
// error, which only the device's log sees.
func (c *Client) errorAnswer(req *MethodRequest, err error) *MethodResponse {
	var me *MethodError
	if errors.As(err, &me) && me != nil {
		c.log.Debug("method handler answered with an error", "method", req.Name, "error", err)
		return checkResponse(errorResponse(me.status(), me.Message))
	}
	c.log.Error("method handler failed", "method", req.Name, "error", err)
	return handlerFailed()
}

// notImplemented answers methods without a handler when no default handler
// is registered.
func notImplemented(_ context.Context, req *MethodRequest) (*MethodResponse, error) {
	return errorResponse(501, fmt.Sprintf("method %q is not implemented on this device", req.Name)), nil
}
