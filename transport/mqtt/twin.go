package mqtt

// Device twins over MQTT: GET and reported PATCH as request/response on
// $iothub/twin/…, matched by $rid, and desired-property patches pushed on
// $iothub/twin/PATCH/properties/desired/?$version={v}.

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iothub-go/iothub/transport"
)

const (
	twinResponseFilter = "$iothub/twin/res/#"
	twinResponsePrefix = "$iothub/twin/res/"
	desiredFilter      = "$iothub/twin/PATCH/properties/desired/#"
	twinGetTopic       = "$iothub/twin/GET/?$rid="
	twinReportedTopic  = "$iothub/twin/PATCH/properties/reported/?$rid="
	// maxHubMessage bounds HubError.Message, in bytes.
	maxHubMessage = 512
)

// TwinSupport returns nil: MQTT carries device twins.
func (t *Transport) TwinSupport() error { return nil }

// twinResponse is the hub's answer to one twin request.
type twinResponse struct {
	status     int
	version    int64
	hasVersion bool
	body       []byte
}

// GetTwin publishes $iothub/twin/GET/?$rid={rid} (QoS 0, empty body) and
// returns the body of the hub's 200 answer. See request for the waits.
func (c *conn) GetTwin(ctx context.Context) ([]byte, error) {
	const op = "GetTwin"
	r, err := c.request(ctx, op, twinGetTopic, nil)
	if err != nil {
		return nil, err
	}
	if r.status < 200 || r.status > 299 {
		return nil, hubError(op, r)
	}
	return r.body, nil
}

// UpdateReported publishes patch on
// $iothub/twin/PATCH/properties/reported/?$rid={rid} (QoS 0) and returns
// the $version of the hub's 204 answer,
// $iothub/twin/res/204/?$rid={rid}&$version={v}.
func (c *conn) UpdateReported(ctx context.Context, patch []byte) (int64, error) {
	const op = "UpdateReported"
	r, err := c.request(ctx, op, twinReportedTopic, patch)
	if err != nil {
		return 0, err
	}
	if r.status < 200 || r.status > 299 {
		return 0, hubError(op, r)
	}
	if !r.hasVersion {
		return 0, fmt.Errorf("iothub: mqtt: %s: the hub answered %d without a $version", op, r.status)
	}
	return r.version, nil
}

// SubscribeDesired subscribes to $iothub/twin/PATCH/properties/desired/#
// at QoS 0 and waits for the SUBACK. Patches then go to Config.Desired,
// from paho's ordered delivery (the read loop's router goroutine), in the
// order the hub sent them, as method requests do.
func (c *conn) SubscribeDesired(ctx context.Context) error {
	if err := c.subscribe(ctx, desiredFilter); err != nil {
		return fmt.Errorf("iothub: mqtt: subscribing to desired properties: %w", err)
	}
	return nil
}

// request sends one twin request and waits for its answer. The first
// request on a connection subscribes to $iothub/twin/res/# and waits for
// the SUBACK (as the Node SDK does, lazily); later ones reuse the
// subscription. Each request has a fresh random $rid, registered before
// the PUBLISH, so an answer cannot overtake it. Every wait ends with ctx
// or with the connection: a lost connection ends a pending request at
// once with the connection's error.
func (c *conn) request(ctx context.Context, op, topic string, body []byte) (twinResponse, error) {
	if err := c.subscribeTwin(ctx); err != nil {
		return twinResponse{}, fmt.Errorf("iothub: mqtt: %s: subscribing to twin responses: %w", op, err)
	}
	rid, ch := c.addPending()
	defer c.removePending(rid)
	if err := c.publish(ctx, topic+rid, 0, body); err != nil {
		return twinResponse{}, fmt.Errorf("iothub: mqtt: %s: %w", op, err)
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return twinResponse{}, fmt.Errorf("iothub: mqtt: %s: %w", op, ctx.Err())
	case <-c.done:
		select {
		case r := <-ch: // it arrived as the connection ended
			return r, nil
		default:
		}
		return twinResponse{}, fmt.Errorf("iothub: mqtt: %s: %w", op, c.endedErr())
	}
}

// subscribeTwin subscribes the connection to twin answers once.
func (c *conn) subscribeTwin(ctx context.Context) error {
	c.mu.Lock()
	if c.twinSub == nil {
		c.twinSub = make(chan struct{}, 1)
	}
	sub := c.twinSub
	c.mu.Unlock()
	select {
	case sub <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return c.endedErr()
	}
	defer func() { <-sub }()
	c.mu.Lock()
	done := c.twinSubscribed
	c.mu.Unlock()
	if done {
		return nil
	}
	if err := c.subscribe(ctx, twinResponseFilter); err != nil {
		return err
	}
	c.mu.Lock()
	c.twinSubscribed = true
	c.mu.Unlock()
	return nil
}

// addPending registers a request under a fresh $rid: 16 random hex
// digits, so that an answer meant for an earlier connection of a
// persistent session matches nothing.
func (c *conn) addPending() (string, chan twinResponse) {
	ch := make(chan twinResponse, 1)
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		var b [8]byte
		for i, v := 0, rand.Uint64(); i < len(b); i, v = i+1, v>>8 {
			b[i] = byte(v)
		}
		rid := hex.EncodeToString(b[:])
		if _, dup := c.pending[rid]; !dup {
			if c.pending == nil {
				c.pending = map[string]chan twinResponse{}
			}
			c.pending[rid] = ch
			return rid, ch
		}
	}
}

func (c *conn) removePending(rid string) {
	c.mu.Lock()
	delete(c.pending, rid)
	c.mu.Unlock()
}

// onTwinResponse handles $iothub/twin/res/# (route, in place before
// CONNECT). It hands the answer to the request waiting for its $rid, if
// any, without blocking.
func (c *conn) onTwinResponse(_ paho.Client, m paho.Message) {
	defer m.Ack() // auto-ack is off (Dial); a QoS 0 answer needs none
	t, ok := parseTwinResponseTopic(m.Topic())
	if !ok {
		c.log.Debug("mqtt: ignoring a malformed twin response topic")
		return
	}
	c.mu.Lock()
	ch := c.pending[t.rid]
	delete(c.pending, t.rid)
	c.mu.Unlock()
	if ch == nil {
		c.log.Debug("mqtt: ignoring a twin response no request waits for")
		return
	}
	var body []byte
	if p := m.Payload(); len(p) > 0 {
		body = append([]byte(nil), p...)
	}
	ch <- twinResponse{status: t.status, version: t.version, hasVersion: t.hasVersion, body: body} // buffered; sent once
}

// onDesired handles desired-property patches (route, in place before
// CONNECT).
func (c *conn) onDesired(_ paho.Client, m paho.Message) {
	defer m.Ack() // auto-ack is off (Dial); a QoS 0 patch needs none
	if c.desired == nil {
		return
	}
	c.desired(append([]byte(nil), m.Payload()...))
}

// twinTopic is what a twin response topic carries.
type twinTopic struct {
	status     int
	rid        string
	version    int64
	hasVersion bool
}

// parseTwinResponseTopic parses "$iothub/twin/res/{status}/?$rid={rid}"
// with an optional "&$version={v}" (the "/" before "?" is optional, and
// other '&'-separated parameters are ignored). status is one to three
// decimal digits; $rid must be non-empty and is taken as it is (the
// transport's rids need no escaping); a $version that is not a
// non-negative decimal int64 counts as absent. ok is false for anything
// else.
func parseTwinResponseTopic(topic string) (t twinTopic, ok bool) {
	rest, found := strings.CutPrefix(topic, twinResponsePrefix)
	if !found {
		return twinTopic{}, false
	}
	status, query, found := strings.Cut(rest, "?")
	if !found {
		return twinTopic{}, false
	}
	status = strings.TrimSuffix(status, "/")
	if len(status) == 0 || len(status) > 3 {
		return twinTopic{}, false
	}
	for i := 0; i < len(status); i++ {
		if status[i] < '0' || status[i] > '9' {
			return twinTopic{}, false
		}
	}
	t.status, _ = strconv.Atoi(status)
	for _, kv := range strings.Split(query, "&") {
		if v, isRID := strings.CutPrefix(kv, "$rid="); isRID && v != "" && t.rid == "" {
			t.rid = v
		} else if v, isVersion := strings.CutPrefix(kv, "$version="); isVersion && !t.hasVersion {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 && v[0] != '+' {
				t.version, t.hasVersion = n, true
			}
		}
	}
	if t.rid == "" {
		return twinTopic{}, false
	}
	return t, true
}

// hubError is the error for an answer with a status other than 2xx.
func hubError(op string, r twinResponse) error {
	return &transport.HubError{Op: op, Status: r.status, Message: hubMessage(r.body)}
}

// hubMessage is the start of the hub's error body, as text fit for an
// error message: at most maxHubMessage bytes, cut at a character
// boundary, invalid UTF-8 and control characters replaced by spaces and
// runs of space collapsed. The body is the hub's text (for IoT Hub a JSON
// object with errorCode and message); the transport adds nothing to it.
func hubMessage(body []byte) string {
	var b strings.Builder
	space := false
	for len(body) > 0 {
		r, n := utf8.DecodeRune(body)
		body = body[n:]
		if (r == utf8.RuneError && n <= 1) || unicode.IsControl(r) || unicode.IsSpace(r) {
			space = b.Len() > 0
			continue
		}
		add := utf8.RuneLen(r)
		if space {
			add++
		}
		if b.Len()+add > maxHubMessage {
			break
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	return b.String()
}
