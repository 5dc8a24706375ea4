package amqp

import (
	"encoding/binary"
	"sync"
	"time"
)

// attachHold keeps go-amqp from putting a link handle back into use before
// it has answered the hub's detach of the link that had it.
//
// go-amqp (v1.7.0) frees a link's handle as soon as the hub's detach
// arrives (Session.mux hands the frame to the link, then calls
// deallocateHandle) and writes its reply later, from the link's own
// goroutine. A link that another device attaches on the same session in
// between can be given that handle, and its attach can then reach the hub
// before the reply. The hub, as AMQP requires (section 2.7.3), ends the
// session with amqp:session:handle-in-use, and every device on a pooled
// connection loses its links for one device's detach.
//
// The hold sits on the client's side of the connection, where every frame
// go-amqp writes passes (one frame per Write). It learns the handle of each
// link from the client's attach, and when the hub detaches a link the
// client has not detached itself, it marks that handle as awaiting the
// client's reply. An attach written with a handle so marked is kept back,
// and written right after the client's detach of that handle, so that the
// hub sees the reply first. Nothing else is reordered: go-amqp sends
// nothing more on a link before the hub has answered its attach.
//
// go-amqp answers a detach from the link's goroutine at once. Should a
// reply not come within holdTimeout of an attach held for it (go-amqp
// gives up answering a refused attach whose context ended), the hold calls
// stuck, and the connection ends: every device on it reconnects, rather
// than every later attach that gets the handle waiting forever.
type attachHold struct {
	// stuck is called, once, when an attach has waited holdTimeout.
	stuck func()

	mu sync.Mutex
	// max bounds the link names remembered (maxLinks when 0); a link
	// beyond it is not protected.
	max int
	// handles maps the name of each link the client attached to its
	// channel and handle, until the hub detaches it.
	handles map[string]linkKey
	// detaching are the handles the client detached, awaiting the hub's
	// detach in reply.
	detaching map[linkKey]bool
	// replying are the handles the hub detached and the client has not
	// answered yet, with the attaches held back until it has.
	replying map[linkKey]*owed
}

// owed is a handle awaiting the client's detach reply.
type owed struct {
	held  [][]byte
	timer *time.Timer // from the first attach held
}

// holdTimeout bounds how long an attach waits for the reply it is held for.
var holdTimeout = 10 * time.Second

// stop stops the timers of the attaches held: the connection has ended,
// and nothing is left to close.
func (h *attachHold) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, o := range h.replying {
		if o.timer != nil {
			o.timer.Stop()
		}
	}
}

// hubDetached records the hub's detach of link name. It runs on go-amqp's
// reader goroutine before go-amqp sees the frame, and so before go-amqp
// frees the handle.
func (h *attachHold) hubDetached(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	k, ok := h.handles[name]
	if !ok {
		return
	}
	delete(h.handles, name)
	if h.detaching[k] {
		delete(h.detaching, k) // the hub answered the client's detach
		return
	}
	if h.replying == nil {
		h.replying = map[linkKey]*owed{}
	}
	if _, ok := h.replying[k]; !ok {
		h.replying[k] = &owed{}
	}
}

// outgoing examines one frame the client is about to write. It returns
// hold true when the frame must be kept back (the hold keeps a copy), and
// the frames held back until now that must follow it on the wire.
func (h *attachHold) outgoing(p []byte) (hold bool, after [][]byte) {
	code, k, name, ok := parseOutgoing(p)
	if !ok {
		return false, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch code {
	case codeAttach:
		if o, waiting := h.replying[k]; waiting {
			o.held = append(o.held, append([]byte(nil), p...))
			if o.timer == nil && h.stuck != nil {
				o.timer = time.AfterFunc(holdTimeout, h.stuck)
			}
			h.remember(name, k)
			return true, nil
		}
		h.remember(name, k)
	case codeDetach:
		if o, waiting := h.replying[k]; waiting {
			delete(h.replying, k) // the reply: the handle is free on both sides
			if o.timer != nil {
				o.timer.Stop()
			}
			return false, o.held
		}
		if h.detaching == nil {
			h.detaching = map[linkKey]bool{}
		}
		if len(h.detaching) < h.limit() {
			h.detaching[k] = true
		}
	}
	return false, nil
}

// remember maps a link's name to its channel and handle; under h.mu.
func (h *attachHold) remember(name string, k linkKey) {
	if h.handles == nil {
		h.handles = map[string]linkKey{}
	}
	if _, known := h.handles[name]; known || len(h.handles) < h.limit() {
		h.handles[name] = k
	}
}

func (h *attachHold) limit() int {
	if h.max > 0 {
		return h.max
	}
	return maxLinks
}

// parseOutgoing reads the performative of one complete AMQP frame: its
// descriptor code, channel and handle, and for an attach the link's name.
// ok is false for anything else than one attach or detach frame.
func parseOutgoing(p []byte) (code byte, k linkKey, name string, ok bool) {
	if len(p) < 11 || string(p[:4]) == "AMQP" || p[5] != 0 {
		return 0, k, "", false
	}
	size := binary.BigEndian.Uint32(p[0:4])
	doff := int(p[4]) * 4
	if int64(size) != int64(len(p)) || doff < 8 || doff+3 > len(p) {
		return 0, k, "", false
	}
	body := p[doff:]
	if body[0] != 0x00 || body[1] != 0x53 || (body[2] != codeAttach && body[2] != codeDetach) {
		return 0, k, "", false
	}
	code = body[2]
	k.channel = binary.BigEndian.Uint16(p[6:8])
	r := reader{b: body[3:]}
	n, ok := r.list()
	if !ok {
		return 0, k, "", false
	}
	if code == codeAttach {
		if n < 2 {
			return 0, k, "", false
		}
		if name, ok = r.str(); !ok {
			return 0, k, "", false
		}
	} else if n < 1 {
		return 0, k, "", false
	}
	if k.handle, ok = r.uint(); !ok {
		return 0, k, "", false
	}
	return code, k, name, true
}
