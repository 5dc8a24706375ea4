package device

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// subscribeTimeout bounds a subscription change made by SetMethodHandler.
const subscribeTimeout = 60 * time.Second

// SetMethodHandler registers h for the method name, replacing any handler
// it had; a nil h removes it. Calls for a name without a handler go to the
// default handler, or are answered with status 501. ClientOptions.WrapHandler,
// if set, wraps h here, once.
//
// The client is subscribed to direct methods while at least one handler
// (or a default handler) is registered, as with the official SDKs:
// registering the first one on a connected client subscribes and returns
// once the hub has confirmed, and removing the last one unsubscribes, after
// which the hub answers callers 404103 (device not online). On a client
// that is not connected nothing is sent: Connect, and every reconnect,
// subscribe as the registry then says. If the hub refuses the
// subscription, the error is returned, the handler stays registered and the
// client reconnects to try again. On a transport that cannot receive
// methods (HTTPS) registering returns an error wrapping
// ErrUnsupported and registers nothing.
func (c *Client) SetMethodHandler(name string, h MethodHandler) error {
	if name == "" {
		return errors.New("iothub: empty method name")
	}
	if h != nil {
		if err := c.tr.MethodSupport(); err != nil {
			return err
		}
		var err error
		if h, err = c.wrapHandler(h); err != nil {
			return err
		}
	}
	c.hmu.Lock()
	next := c.handlers.Load().clone()
	next.table.set(name, h)
	c.handlers.Store(next)
	c.hmu.Unlock()
	return c.syncMethods()
}

// SetDefaultMethodHandler registers h for methods that have no handler of
// their own; nil removes it, and such calls are then answered with status
// 501. It subscribes and unsubscribes like SetMethodHandler, and like it
// fails on a transport without methods.
func (c *Client) SetDefaultMethodHandler(h MethodHandler) error {
	if h != nil {
		if err := c.tr.MethodSupport(); err != nil {
			return err
		}
		var err error
		if h, err = c.wrapHandler(h); err != nil {
			return err
		}
	}
	c.hmu.Lock()
	next := c.handlers.Load().clone()
	next.def = h
	c.handlers.Store(next)
	c.hmu.Unlock()
	return c.syncMethods()
}

// errNilWrap is returned when ClientOptions.WrapHandler returns nil.
var errNilWrap = fmt.Errorf("%w: ClientOptions.WrapHandler returned a nil handler", ErrInvalidOptions)

// wrapHandler applies ClientOptions.WrapHandler to h, once, at
// registration.
func (c *Client) wrapHandler(h MethodHandler) (MethodHandler, error) {
	if c.wrap == nil {
		return h, nil
	}
	if h = c.wrap(h); h == nil {
		return nil, errNilWrap
	}
	return h, nil
}

// wantMethods reports whether the registry asks for a method subscription.
func (c *Client) wantMethods() bool {
	hs := c.handlers.Load()
	return hs != nil && (hs.table.len() > 0 || hs.def != nil)
}

// handler returns the (wrapped) handler for name: its own, the default
// one, or the built-in answer 501. It takes no lock: every call asks, from
// its own goroutine, and a lock's write would move the lock's memory
// between CPUs on each call (BENCHMARKS.md).
func (c *Client) handler(name string) MethodHandler {
	if hs := c.handlers.Load(); hs != nil {
		if h := hs.table.get(name); h != nil {
			return h
		}
		if hs.def != nil {
			return hs.def
		}
	}
	return c.notImplemented
}

// handlerSet is the registered handlers: by name, and the default one.
// A set is never changed once stored in Client.handlers; a registration
// stores a changed copy (clone).
type handlerSet struct {
	table methodTable
	def   MethodHandler
}

// clone returns a copy of s that can be changed; s may be nil.
func (s *handlerSet) clone() *handlerSet {
	if s == nil {
		return &handlerSet{}
	}
	return &handlerSet{table: s.table.clone(), def: s.def}
}

// syncMethods makes the live connection's method subscription match the
// registry.
func (c *Client) syncMethods() error {
	if c.tr.MethodSupport() != nil {
		return nil
	}
	c.subMu.Lock()
	defer c.subMu.Unlock()
	c.mu.Lock()
	cn, closed := c.conn, c.closed
	c.mu.Unlock()
	want := c.wantMethods()
	if closed || cn == nil || cn.subscribed == want {
		return nil
	}
	ctx, cancel := context.WithTimeout(&c.life, subscribeTimeout)
	defer cancel()
	var err error
	if want {
		err = cn.SubscribeMethods(ctx)
	} else {
		err = cn.UnsubscribeMethods(ctx)
	}
	if err == nil {
		cn.subscribed = want
		return nil
	}
	select {
	case <-cn.Done():
		return nil // the next connection subscribes as the registry says
	default:
	}
	if c.life.Err() != nil {
		return nil // closed meanwhile
	}
	// The connection would go on with a subscription that contradicts the
	// registry, deaf to calls or answering ones it should not see: end it,
	// and the client reconnects and tries again.
	cn.Close()
	if want {
		return fmt.Errorf("iothub: subscribing to direct methods: %w", err)
	}
	return fmt.Errorf("iothub: unsubscribing from direct methods: %w", err)
}

// maxFewHandlers is how many handlers methodTable keeps in a slice before
// it moves them to a map.
const maxFewHandlers = 8

// methodTable holds the registered method handlers by name: a slice while
// they are few, as on most devices (a scan of a few names costs no more
// than a map lookup, and far less memory per client), a map beyond
// maxFewHandlers. The zero value and nil are empty; only set needs a
// table. A table in a stored handlerSet is only read.
type methodTable struct {
	few  []namedHandler
	many map[string]MethodHandler
}

type namedHandler struct {
	name string
	h    MethodHandler
}

func (t *methodTable) len() int {
	if t == nil {
		return 0
	}
	if t.many != nil {
		return len(t.many)
	}
	return len(t.few)
}

// get returns the handler for name, nil if it has none.
func (t *methodTable) get(name string) MethodHandler {
	if t == nil {
		return nil
	}
	if t.many != nil {
		return t.many[name]
	}
	for _, e := range t.few {
		if e.name == name {
			return e.h
		}
	}
	return nil
}

// clone returns a copy of t that set can change without changing t.
func (t *methodTable) clone() methodTable {
	return methodTable{few: slices.Clone(t.few), many: maps.Clone(t.many)}
}

// set registers h for name, replacing any handler it had; nil removes it.
func (t *methodTable) set(name string, h MethodHandler) {
	if t.many != nil {
		if h == nil {
			delete(t.many, name)
		} else {
			t.many[name] = h
		}
		return
	}
	for i, e := range t.few {
		if e.name == name {
			if h == nil {
				t.few = slices.Delete(t.few, i, i+1)
			} else {
				t.few[i].h = h
			}
			return
		}
	}
	if h == nil {
		return
	}
	if len(t.few) < maxFewHandlers {
		t.few = append(t.few, namedHandler{name, h})
		return
	}
	t.many = make(map[string]MethodHandler, len(t.few)+1)
	for _, e := range t.few {
		t.many[e.name] = e.h
	}
	t.many[name] = h
	t.few = nil
}
