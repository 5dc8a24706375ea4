package amqpd

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hubauth"
)

// CBS put-token (the $cbs node): protocol.md §4.2.

// The token types IoT Hub accepts: C and Node send the first, .NET the
// second.
var cbsTokenTypes = []string{"servicebus.windows.net:sastoken", "azure-devices.net:sastoken"}

// cbsToken is a token a put-token accepted.
type cbsToken struct {
	token  string
	expiry time.Time
}

// onPutToken answers a put-token request on the $cbs sender link of the
// same session (or of any session), matching reply-to when it names one.
func (c *conn) onPutToken(l *link, payload []byte) any {
	m, err := decodeMessage(payload)
	if err != nil {
		return rejected(condDecodeError, trimErr(err))
	}
	status, desc, who := c.putToken(m)
	c.log.Info("amqp cbs put-token", "audience", who, "status", status, "description", desc)
	reply := outMessage{
		correlationID: m.messageID,
		appProps: Map{
			{Key: "status-code", Value: int32(status)},
			{Key: "status-description", Value: desc},
		},
	}
	enc, err := reply.encode()
	if err != nil {
		return rejected(condDecodeError, "message-id cannot be echoed")
	}
	out := c.cbsReplyLink(l.s, m.replyTo)
	switch {
	case out == nil:
		c.log.Info("amqp cbs reply dropped: no $cbs receiver link is attached")
	case len(out.queue) >= c.s.maxQueued:
		c.log.Info("amqp cbs reply dropped: the client grants no credit on $cbs")
	default:
		out.queue = append(out.queue, enc)
		out.s.pump(out)
	}
	return accepted()
}

// cbsReplyLink picks the link a put-token reply goes to.
func (c *conn) cbsReplyLink(s *session, replyTo string) *link {
	var best *link
	score := -1
	for _, ss := range c.sessions {
		if ss.ending {
			continue
		}
		for l := range ss.cbsOut {
			if l.detaching {
				continue
			}
			n := 0
			if ss == s {
				n++
			}
			if replyTo != "" && equalFold(l.address, replyTo) {
				n += 2
			}
			if n > score {
				best, score = l, n
			}
		}
	}
	return best
}

// putToken validates and stores a token; it returns the status code and
// description of the reply, and the audience for the log.
func (c *conn) putToken(m *message) (int, string, string) {
	op, _ := m.appProps.getFold("operation")
	if s, ok := asString(op); !ok || !equalFold(s, "put-token") {
		return 400, "The operation application property must be put-token", ""
	}
	typ, _ := m.appProps.getFold("type")
	ts, _ := asString(typ)
	known := false
	for _, t := range cbsTokenTypes {
		known = known || equalFold(ts, t)
	}
	if !known {
		return 400, "The type application property must be servicebus.windows.net:sastoken or azure-devices.net:sastoken", ""
	}
	nv, _ := m.appProps.getFold("name")
	name, ok := asString(nv)
	if !ok || name == "" {
		return 400, "The name application property (the token's audience) is missing", ""
	}
	tokenValue, ok := m.value.(string)
	if !m.hasValue || !ok || tokenValue == "" {
		return 400, "The message body must be an amqp-value string holding the token", ""
	}

	// Node sends the audience URL-encoded (the token's sr), .NET and C
	// unencoded; EdgeHub URL-decodes it. Decoding is path decoding: '+'
	// is a legal id character, not a space.
	audience := name
	if dec, err := url.PathUnescape(name); err == nil {
		audience = dec
	}
	if len(audience) > 8 && equalFold(audience[:8], "amqps://") {
		audience = audience[8:]
	}
	e := c.s.e
	host := e.HostName()
	if strings.HasPrefix(tokenValue, "Bearer ") {
		// A Microsoft Entra token (AddBearerToken stands in for Entra):
		// its audience is the token scope, not the hub; it authorizes
		// service operations only.
		if herr := e.AuthorizeService(tokenValue, serviceSendPath, hubauth.RightsServiceConnect); herr != nil {
			return 401, herr.Message, audience
		}
		c.serviceToken = &cbsToken{token: tokenValue}
		return 200, "OK", audience
	}
	if len(audience) < len(host) || !equalFold(audience[:len(host)], host) {
		return 401, "The audience " + audience + " does not name this hub (" + host + ")", audience
	}
	rest := audience[len(host):]
	if port, ok := strings.CutPrefix(rest, ":"); ok {
		// .NET's service client names amqps://{host}:5671/ (facts §2.1).
		i := 0
		for i < len(port) && port[i] >= '0' && port[i] <= '9' {
			i++
		}
		if i == 0 {
			return 401, "The audience " + audience + " does not name this hub (" + host + ")", audience
		}
		rest = port[i:]
	}
	if rest != "" && rest[0] != '/' {
		return 401, "The audience " + audience + " does not name this hub (" + host + ")", audience
	}
	path := strings.TrimSuffix(rest, "/")
	if path == "" {
		return c.putHubToken(tokenValue, audience)
	}

	id, ok := parseResourcePath(path)
	if !ok {
		return 400, "The audience " + audience + " must name the hub, a device ({host}/devices/{id}) or a module ({host}/devices/{id}/modules/{mid})", audience
	}
	// The .NET SDK encodes the id twice (a '+' arrives as %252B); like
	// EdgeHub, decode once more when the id as decoded is not registered.
	if strings.Contains(id.DeviceID+id.ModuleID, "%") && !e.Exists(id.DeviceID, id.ModuleID) {
		d, err1 := url.PathUnescape(id.DeviceID)
		m, err2 := url.PathUnescape(id.ModuleID)
		if err1 == nil && err2 == nil && e.Exists(d, m) {
			id.DeviceID, id.ModuleID = d, m
		}
	}
	id.HostName = host
	key := id.String()
	if _, known := c.tokens[key]; !known && len(c.tokens) >= maxIdentities {
		return 500, fmt.Sprintf("The maximum number of tokens per connection (%d) has been reached.", maxIdentities), audience
	}
	exp, herr := e.AuthenticateSAS(id, tokenValue)
	if herr != nil {
		return 401, herr.Message, audience
	}
	c.tokens[key] = &cbsToken{token: tokenValue, expiry: exp}
	if u := c.units[key]; u != nil && (u.via == viaCBS || u.via == viaHubToken) {
		// A refresh on a live connection re-arms the identity's expiry.
		u.via = viaCBS
		u.sess.SetTokenExpiry(exp)
	}
	return 200, "OK", audience
}

// putHubToken stores a hub-scoped token. A token of a policy with
// DeviceConnect authorizes the device links of any identity (checked when
// they attach); one with ServiceConnect authorizes the service links
// (/messages/devicebound, /messages/servicebound/feedback) and never a
// device link. A policy with both (iothubowner) does both.
func (c *conn) putHubToken(tokenValue, audience string) (int, string, string) {
	e := c.s.e
	exp, devErr := e.AuthenticateHubPolicy("", tokenValue)
	svcErr := e.AuthorizeService(tokenValue, serviceSendPath, hubauth.RightsServiceConnect)
	if devErr != nil && svcErr != nil {
		msg := devErr.Message
		if svcErr.Message != devErr.Message {
			msg += "; " + svcErr.Message
		}
		return 401, msg, audience
	}
	if svcErr == nil {
		c.serviceToken = &cbsToken{token: tokenValue}
	}
	if devErr != nil {
		return 200, "OK", audience
	}
	c.hubToken = &cbsToken{token: tokenValue, expiry: exp}
	for _, u := range c.units {
		if u.via == viaHubToken {
			if exp, herr := e.AuthenticateSAS(u.id, tokenValue); herr == nil {
				u.sess.SetTokenExpiry(exp)
			}
		}
	}
	return 200, "OK", audience
}

// parseResourcePath parses "/devices/{id}" or
// "/devices/{id}/modules/{mid}" (already URL-decoded once).
func parseResourcePath(p string) (auth.Identity, bool) {
	segs := strings.Split(strings.TrimPrefix(p, "/"), "/")
	switch {
	case len(segs) == 2 && equalFold(segs[0], "devices") && segs[1] != "":
		return auth.Identity{DeviceID: segs[1]}, true
	case len(segs) == 4 && equalFold(segs[0], "devices") && segs[1] != "" &&
		equalFold(segs[2], "modules") && segs[3] != "":
		return auth.Identity{DeviceID: segs[1], ModuleID: segs[3]}, true
	}
	return auth.Identity{}, false
}
