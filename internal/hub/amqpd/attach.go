package amqpd

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/iothub-go/iothub/auth"
)

// onAttach accepts or refuses a link the device attaches.
func (s *session) onAttach(a *attach) {
	c := s.c
	if _, dup := s.links[a.handle]; dup {
		s.end(condHandleInUse, fmt.Sprintf("handle %d is already attached", a.handle))
		return
	}
	if a.handle > handleMax {
		s.end(condResourceLimit, fmt.Sprintf("handle %d exceeds handle-max %d", a.handle, handleMax))
		return
	}
	out, ok := uint32(0), false
	for h := uint32(0); h <= min(s.handleMax, handleMax); h++ {
		if s.outHandles[h] == nil {
			out, ok = h, true
			break
		}
	}
	if !ok {
		s.end(condResourceLimit, "no free handle for another link")
		return
	}
	l := &link{
		s:           s,
		name:        a.name,
		in:          a.handle,
		out:         out,
		hubSends:    a.receiver,
		peerMaxMsg:  a.maxMessageSize,
		settledSend: a.sndSettleMode != nil && *a.sndSettleMode == 1,
		rcvSecond:   a.rcvSettleMode != nil && *a.rcvSettleMode == 1,
	}
	s.links[a.handle] = l
	s.outHandles[out] = l
	term := a.target
	if a.receiver {
		term = a.source
	}
	if term != nil {
		l.address = term.address
	}

	var refuse *amqpError
	var u *unit
	switch id, node := parseIdentityAddress(l.address); {
	case isCBSAddress(l.address):
		l.kind = linkCBSIn
		if l.hubSends {
			l.kind = linkCBSOut
			if s.cbsOut == nil {
				s.cbsOut = map[*link]struct{}{}
			}
			s.cbsOut[l] = struct{}{}
		}
	case node == nodeEvents && l.hubSends:
		refuse = &amqpError{condition: condNotAllowed,
			description: fmt.Sprintf("The link address %q only receives device-to-cloud messages", l.address)}
	case node == nodeC2D && !l.hubSends:
		refuse = &amqpError{condition: condNotAllowed,
			description: fmt.Sprintf("The link address %q only sends cloud-to-device messages", l.address)}
	case node == nodeC2D && id.ModuleID != "":
		// IoT Hub does not support cloud-to-device messages for modules
		// (facts §2.2) [inf: the condition].
		refuse = &amqpError{condition: condNotImplemented,
			description: "Modules do not support cloud-to-device messages"}
	case serviceNodeOf(l.address) != serviceNone:
		l.kind, refuse = c.attachService(l)
	case node != nodeNone:
		switch {
		case node == nodeEvents:
			l.kind = linkEvents
		case node == nodeTwin && l.hubSends:
			l.kind = linkTwinOut
		case node == nodeTwin:
			l.kind = linkTwinIn
		case node == nodeC2D:
			l.kind = linkC2D
			l.id = id
			l.id.HostName = c.s.e.HostName()
		case l.hubSends:
			l.kind = linkMethodsReq
		default:
			l.kind = linkMethodsResp
		}
		expiry, via, herr := c.authorize(id)
		if herr != nil {
			refuse = hubError(condUnauthorized, herr)
			break
		}
		u = c.methodUnit(id, expiry, via)
	default:
		refuse = &amqpError{condition: condNotFound,
			description: fmt.Sprintf("The link address %q is not served by this hub's device endpoint", l.address)}
	}

	var src, tgt, idc, mms any
	if l.hubSends {
		idc = uint32(0)
	} else {
		mms = uint64(MaxMessageSize)
	}
	if refuse == nil {
		// Echo the termini: a client takes a missing one as a refusal.
		if a.source != nil {
			src = a.source.raw
		}
		if a.target != nil {
			tgt = a.target.raw
		}
	}
	s.send(performative(descAttach, a.name, out, !a.receiver, optMode(a.sndSettleMode), optMode(a.rcvSettleMode),
		src, tgt, nil, nil, idc, mms), nil)
	if refuse != nil {
		l.kind = linkRefused
		c.detachLink(l, refuse)
		return
	}
	if !l.hubSends {
		l.rcvCredit = linkCredit
		s.send(s.flowFrame(l, false), nil)
	}
	if u != nil {
		u.addLink(l)
		if !l.hubSends {
			u.announceModel(a.properties)
		}
	}
	c.log.Debug("amqp link attached", "link", l.name, "address", l.address, "hubSends", l.hubSends)
}

// pathOf strips "scheme://host[:port]" from an address.
func pathOf(addr string) string {
	if i := strings.Index(addr, "://"); i >= 0 {
		rest := addr[i+3:]
		j := strings.IndexByte(rest, '/')
		if j < 0 {
			return "/"
		}
		return rest[j:]
	}
	return addr
}

// isCBSAddress reports whether addr names the $cbs node.
func isCBSAddress(addr string) bool {
	return equalFold(strings.TrimPrefix(pathOf(addr), "/"), "$cbs")
}

// The identity nodes a device may attach to.
const (
	nodeNone    = iota
	nodeMethods // .../methods/devicebound
	nodeEvents  // .../messages/events
	nodeTwin    // .../twin
	nodeC2D     // .../messages/devicebound
)

// parseIdentityAddress parses a method, telemetry or twin link address,
// in any of the spellings SDKs use: "/devices/{id}/methods/devicebound"
// (Node), "amqps://{host}/devices/{id}/methods/devicebound" (C),
// "amqps://{host}:5671/devices/{id}/methods/deviceBound" (.NET), the
// module forms with "/modules/{mid}", and the same for
// ".../messages/events", ".../messages/devicebound" and ".../twin". The path is compared
// case-insensitively; ids are URL-decoded and keep their case.
func parseIdentityAddress(addr string) (auth.Identity, int) {
	p := strings.TrimPrefix(pathOf(addr), "/")
	segs := strings.Split(p, "/")
	if len(segs) < 3 || !equalFold(segs[0], "devices") {
		return auth.Identity{}, nodeNone
	}
	dev, rest := segs[1], segs[2:]
	var mod string
	module := len(rest) >= 3 && equalFold(rest[0], "modules")
	if module {
		mod, rest = rest[1], rest[2:]
	}
	node := nodeNone
	switch {
	case len(rest) == 2 && equalFold(rest[0], "methods") && equalFold(rest[1], "devicebound"):
		node = nodeMethods
	case len(rest) == 2 && equalFold(rest[0], "messages") && equalFold(rest[1], "events"):
		node = nodeEvents
	case len(rest) == 1 && equalFold(rest[0], "twin"):
		node = nodeTwin
	case len(rest) == 2 && equalFold(rest[0], "messages") && equalFold(rest[1], "devicebound"):
		node = nodeC2D
	default:
		return auth.Identity{}, nodeNone
	}
	var err error
	if dev, err = url.PathUnescape(dev); err != nil || dev == "" {
		return auth.Identity{}, nodeNone
	}
	if module {
		if mod, err = url.PathUnescape(mod); err != nil || mod == "" {
			return auth.Identity{}, nodeNone
		}
	}
	return auth.Identity{DeviceID: dev, ModuleID: mod}, node
}
