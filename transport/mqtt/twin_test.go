package mqtt

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/testutil/pkitest"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/transport"
)

const waitLong = 15 * time.Second // generous deadline for what must happen

// twinDevice is a transport connection to a local hub, with the desired
// patches it received.
type twinDevice struct {
	transport.Conn
	id      string
	desired chan []byte
}

type dialOpts struct {
	ws      bool
	modelID string
	module  string // module id; "" for the device itself
}

// dialHub registers deviceID (and the module) on s and dials it over the
// transport.
func dialHub(t *testing.T, s *iothubtest.Server, deviceID string, o dialOpts) *twinDevice {
	t.Helper()
	var connStr string
	if o.module == "" {
		connStr = s.AddDevice(t, deviceID)
	} else {
		s.AddDevice(t, deviceID)
		connStr = s.AddModule(t, deviceID, o.module)
	}
	cs, err := auth.ParseDeviceConnectionString(connStr)
	require.NoError(t, err)
	id := auth.Identity{HostName: cs.HostName, DeviceID: cs.DeviceID, ModuleID: cs.ModuleID}
	tok, err := auth.SignSAS(id.Resource(), "", cs.SharedAccessKey, time.Now().Add(time.Hour))
	require.NoError(t, err)
	d := &twinDevice{id: id.String(), desired: make(chan []byte, 100)}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	c, err := New(&Options{WebSocket: o.ws}).Dial(ctx, transport.Config{
		Identity:    id,
		Address:     s.Addr(),
		Token:       tok,
		TLSConfig:   s.TLSConfig(),
		ProductInfo: "iothub-go-test/1.0",
		Logger:      slog.New(slog.DiscardHandler),
		ModelID:     o.modelID,
		Desired: func(p []byte) {
			select {
			case d.desired <- p:
			default: // the test checks the count it receives
			}
		},
	})
	require.NoError(t, err, "Dial")
	t.Cleanup(func() { _ = c.Close() })
	d.Conn = c
	return d
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	t.Cleanup(cancel)
	return ctx
}

// twinJSON decodes a GetTwin answer.
func twinJSON(t *testing.T, b []byte) (desired, reported map[string]any) {
	t.Helper()
	var v struct {
		Desired  map[string]any `json:"desired"`
		Reported map[string]any `json:"reported"`
	}
	require.NoError(t, json.Unmarshal(b, &v), "GetTwin answer %s", b)
	return v.Desired, v.Reported
}

func forEachProtocol(t *testing.T, f func(t *testing.T, ws bool)) {
	for _, ws := range []bool{false, true} {
		name := "tls"
		if ws {
			name = "websocket"
		}
		t.Run(name, func(t *testing.T) { f(t, ws) })
	}
}

func TestTwinGetAndReport(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, ws bool) {
		s := iothubtest.NewServer(t, nil)
		d := dialHub(t, s, "dev1", dialOpts{ws: ws})
		ctx := testCtx(t)

		b, err := d.GetTwin(ctx)
		require.NoError(t, err, "GetTwin")
		desired, reported := twinJSON(t, b)
		assert.Equal(t, map[string]any{"$version": 1.0}, desired)
		assert.Equal(t, map[string]any{"$version": 1.0}, reported)

		for i, patch := range []string{
			`{"a":1,"b":{"c":"x"}}`,
			`{"b":{"d":true}}`,
			`{"a":null}`, // null deletes
		} {
			v, err := d.UpdateReported(ctx, []byte(patch))
			require.NoError(t, err, "UpdateReported %s", patch)
			assert.Equal(t, int64(i+2), v, "version after %s", patch)
		}
		b, err = d.GetTwin(ctx)
		require.NoError(t, err)
		_, reported = twinJSON(t, b)
		want := map[string]any{"b": map[string]any{"c": "x", "d": true}}
		assert.Equal(t, map[string]any{"b": want["b"], "$version": 4.0}, reported)
		tw := s.Twin(t, "dev1")
		assert.Equal(t, want, tw.Reported, "the hub's twin")
		assert.Equal(t, int64(4), tw.ReportedVersion)

		// Concurrent requests share the subscription and each gets its
		// own answer.
		const n = 10
		versions := make(chan int64, n)
		errs := make(chan error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, err := d.UpdateReported(ctx, []byte(fmt.Sprintf(`{"k%d":%d}`, i, i)))
				versions <- v
				errs <- err
			}()
		}
		wg.Wait()
		close(versions)
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		seen := map[int64]bool{}
		for v := range versions {
			seen[v] = true
		}
		assert.Len(t, seen, n, "distinct versions")
		for v := int64(5); v < 5+n; v++ {
			assert.True(t, seen[v], "version %d", v)
		}
	})
}

func TestTwinDesired(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, ws bool) {
		s := iothubtest.NewServer(t, nil)
		d := dialHub(t, s, "dev1", dialOpts{ws: ws})
		ctx := testCtx(t)
		require.NoError(t, d.SubscribeDesired(ctx))

		patches := []map[string]any{
			{"a": 1.0},
			{"b": map[string]any{"c": "x"}},
			{"a": nil, "b": map[string]any{"c": nil}},
			{"d": []any{1.0, 2.0}},
		}
		for _, p := range patches {
			s.UpdateDesired(t, "dev1", p)
		}
		for i, p := range patches {
			var got []byte
			select {
			case got = <-d.desired:
			case <-time.After(waitLong):
				require.FailNow(t, "no desired patch", "patch %d", i)
			}
			want := map[string]any{"$version": float64(i + 2)}
			for k, v := range p {
				want[k] = v
			}
			var m map[string]any
			require.NoError(t, json.Unmarshal(got, &m), "patch %s", got)
			assert.Equal(t, want, m, "patch %d, in order", i)
		}
	})
}

func TestTwinHubError(t *testing.T) {
	s := iothubtest.NewServer(t, nil)
	d := dialHub(t, s, "dev1", dialOpts{})
	ctx := testCtx(t)
	for _, patch := range []string{"not json", `{"$x":1}`, `[1]`, ``} {
		_, err := d.UpdateReported(ctx, []byte(patch))
		var he *transport.HubError
		require.ErrorAs(t, err, &he, "UpdateReported %q", patch)
		assert.Equal(t, "UpdateReported", he.Op)
		assert.Equal(t, 400, he.Status)
		assert.NotEmpty(t, he.Message, "the hub's answer")
		assert.LessOrEqual(t, len(he.Message), maxHubMessage)
		assert.NotErrorIs(t, err, transport.ErrThrottled)
	}
	assert.Equal(t, int64(1), s.Twin(t, "dev1").ReportedVersion, "nothing was stored")
	_, err := d.GetTwin(ctx)
	require.NoError(t, err, "the connection still works")
}

func TestTwinModelID(t *testing.T) {
	const dtmi = "dtmi:com:example:Thermostat;1"
	s := iothubtest.NewServer(t, nil)
	dialHub(t, s, "pnp", dialOpts{modelID: dtmi})
	assert.Equal(t, dtmi, s.Twin(t, "pnp").ModelID)
	dialHub(t, s, "plain", dialOpts{})
	assert.Empty(t, s.Twin(t, "plain").ModelID)
	dialHub(t, s, "dev", dialOpts{module: "mod", modelID: dtmi, ws: true})
	assert.Equal(t, dtmi, s.Twin(t, "dev/mod").ModelID)
	assert.Empty(t, s.Twin(t, "dev").ModelID, "the module's model is not the device's")
}

func TestTwinModule(t *testing.T) {
	s := iothubtest.NewServer(t, nil)
	d := dialHub(t, s, "dev1", dialOpts{module: "m1"})
	ctx := testCtx(t)
	require.NoError(t, d.SubscribeDesired(ctx))
	v, err := d.UpdateReported(ctx, []byte(`{"m":1}`))
	require.NoError(t, err)
	assert.Equal(t, int64(2), v)
	assert.Equal(t, map[string]any{"m": 1.0}, s.Twin(t, "dev1/m1").Reported)
	assert.Empty(t, s.Twin(t, "dev1").Reported, "the device's twin")
	s.UpdateDesired(t, "dev1/m1", map[string]any{"x": true})
	select {
	case p := <-d.desired:
		assert.JSONEq(t, `{"x":true,"$version":2}`, string(p))
	case <-time.After(waitLong):
		require.FailNow(t, "no desired patch")
	}
}

// fakeHub is a scripted MQTT server on a random loopback port: it accepts
// one TLS connection, answers CONNECT, and hands each later packet to the
// test, which answers or closes through it.
type fakeHub struct {
	addr    string
	tls     *tls.Config
	packets chan packets.ControlPacket
	conn    chan net.Conn
}

func newFakeHub(t *testing.T) *fakeHub {
	t.Helper()
	cert, pool := pkitest.ServerCert(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	require.NoError(t, err)
	h := &fakeHub{addr: ln.Addr().String(), tls: &tls.Config{RootCAs: pool},
		packets: make(chan packets.ControlPacket, 16), conn: make(chan net.Conn, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		if _, err := packets.ReadPacket(nc); err != nil { // CONNECT
			return
		}
		if err := packets.NewControlPacket(packets.Connack).Write(nc); err != nil {
			return
		}
		h.conn <- nc
		for {
			p, err := packets.ReadPacket(nc)
			if err != nil {
				return
			}
			select {
			case h.packets <- p:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		select {
		case nc := <-h.conn:
			nc.Close()
		default:
		}
		<-done
	})
	return h
}

func (h *fakeHub) dial(t *testing.T) transport.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	c, err := New(nil).Dial(ctx, transport.Config{
		Identity:  auth.Identity{HostName: "h", DeviceID: "d"},
		Address:   h.addr,
		Token:     "SharedAccessSignature sr=h&sig=x&se=1",
		TLSConfig: h.tls,
		Logger:    slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// next returns the next packet the device sent.
func (h *fakeHub) next(t *testing.T) packets.ControlPacket {
	t.Helper()
	select {
	case p := <-h.packets:
		return p
	case <-time.After(waitLong):
		require.FailNow(t, "the device sent nothing")
		return nil
	}
}

// socket returns the device's connection once CONNACK was sent.
func (h *fakeHub) socket(t *testing.T) net.Conn {
	t.Helper()
	select {
	case nc := <-h.conn:
		h.conn <- nc
		return nc
	case <-time.After(waitLong):
		require.FailNow(t, "no connection")
		return nil
	}
}

func (h *fakeHub) write(t *testing.T, p packets.ControlPacket) {
	t.Helper()
	require.NoError(t, p.Write(h.socket(t)))
}

// subscribed answers the SUBSCRIBE the device sends next.
func (h *fakeHub) subscribed(t *testing.T, filter string) {
	t.Helper()
	sub, ok := h.next(t).(*packets.SubscribePacket)
	require.True(t, ok, "the device sent no SUBSCRIBE")
	require.Equal(t, []string{filter}, sub.Topics)
	ack := packets.NewControlPacket(packets.Suback).(*packets.SubackPacket)
	ack.MessageID = sub.MessageID
	ack.ReturnCodes = []byte{0}
	h.write(t, ack)
}

// publication returns the PUBLISH the device sends next.
func (h *fakeHub) publication(t *testing.T) *packets.PublishPacket {
	t.Helper()
	p, ok := h.next(t).(*packets.PublishPacket)
	require.True(t, ok, "the device sent no PUBLISH")
	return p
}

func publishPacket(topic string, qos byte, id uint16, payload string) *packets.PublishPacket {
	p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	p.TopicName, p.Qos, p.MessageID, p.Payload = topic, qos, id, []byte(payload)
	return p
}

type result struct {
	b   []byte
	err error
}

func getTwinAsync(ctx context.Context, c transport.Conn) <-chan result {
	ch := make(chan result, 1)
	go func() {
		b, err := c.GetTwin(ctx)
		ch <- result{b, err}
	}()
	return ch
}

func waitResult(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(waitLong):
		require.FailNow(t, "the twin request hangs")
		return result{}
	}
}

// The device matches answers by $rid, takes QoS 1 answers, and ignores
// answers no request waits for.
func TestTwinAnswerMatching(t *testing.T) {
	h := newFakeHub(t)
	c := h.dial(t)
	res := getTwinAsync(testCtx(t), c)
	h.subscribed(t, twinResponseFilter)
	get := h.publication(t)
	rid, ok := strings.CutPrefix(get.TopicName, twinGetTopic)
	require.True(t, ok, "GET topic %q", get.TopicName)
	require.Empty(t, get.Payload, "GET body")
	require.Equal(t, byte(0), get.Qos, "GET QoS")
	h.write(t, publishPacket("$iothub/twin/res/200/?$rid=other", 0, 0, `{"wrong":1}`))
	h.write(t, publishPacket("$iothub/twin/res/bad/?$rid="+rid, 0, 0, `{"wrong":2}`))
	h.write(t, publishPacket("$iothub/twin/res/200/?$rid="+rid, 1, 7, `{"desired":{},"reported":{}}`))
	r := waitResult(t, res)
	require.NoError(t, r.err)
	assert.Equal(t, `{"desired":{},"reported":{}}`, string(r.b))
	ack, ok := h.next(t).(*packets.PubackPacket)
	require.True(t, ok, "the QoS 1 answer is acknowledged")
	assert.Equal(t, uint16(7), ack.MessageID)

	// The subscription is made once per connection.
	res = getTwinAsync(testCtx(t), c)
	get = h.publication(t)
	rid2 := strings.TrimPrefix(get.TopicName, twinGetTopic)
	assert.NotEqual(t, rid, rid2, "a fresh $rid")
	h.write(t, publishPacket("$iothub/twin/res/429/?$rid="+rid2, 0, 0, "{\"errorCode\":429001,\n\"message\":\"slow down\"}"))
	r = waitResult(t, res)
	var he *transport.HubError
	require.ErrorAs(t, r.err, &he)
	assert.Equal(t, &transport.HubError{Op: "GetTwin", Status: 429, Message: `{"errorCode":429001, "message":"slow down"}`}, he)
	assert.ErrorIs(t, r.err, transport.ErrThrottled)
}

// A lost connection ends a pending request at once, whatever it waits
// for; so do ctx and Close.
func TestTwinRequestEnds(t *testing.T) {
	for _, tc := range []struct {
		name string
		// stage: "subscribe" (no SUBACK) or "answer" (no answer)
		stage string
		end   func(h *fakeHub, c transport.Conn, cancel context.CancelFunc)
		isCtx bool
	}{
		{"connection lost before SUBACK", "subscribe", func(h *fakeHub, _ transport.Conn, _ context.CancelFunc) { _ = (<-h.conn).Close() }, false},
		{"connection lost before the answer", "answer", func(h *fakeHub, _ transport.Conn, _ context.CancelFunc) { _ = (<-h.conn).Close() }, false},
		{"Close before the answer", "answer", func(_ *fakeHub, c transport.Conn, _ context.CancelFunc) { _ = c.Close() }, false},
		{"ctx ends before the answer", "answer", func(_ *fakeHub, _ transport.Conn, cancel context.CancelFunc) { cancel() }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHub(t)
			c := h.dial(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res := getTwinAsync(ctx, c)
			if tc.stage == "subscribe" {
				_, ok := h.next(t).(*packets.SubscribePacket)
				require.True(t, ok, "the device sent no SUBSCRIBE")
			} else {
				h.subscribed(t, twinResponseFilter)
				h.publication(t)
			}
			tc.end(h, c, cancel)
			r := waitResult(t, res)
			require.Error(t, r.err)
			if tc.isCtx {
				assert.ErrorIs(t, r.err, context.Canceled)
				return
			}
			assert.NotErrorIs(t, r.err, context.Canceled)
			assert.NotErrorIs(t, r.err, context.DeadlineExceeded)
			select {
			case <-c.Done():
			case <-time.After(waitLong):
				require.FailNow(t, "the connection did not end")
			}
		})
	}
}

// UpdateReported needs the $version of the 204 answer.
func TestUpdateReportedWithoutVersion(t *testing.T) {
	h := newFakeHub(t)
	c := h.dial(t)
	type vres struct {
		v   int64
		err error
	}
	ch := make(chan vres, 1)
	go func() {
		v, err := c.UpdateReported(context.Background(), []byte(`{"a":1}`))
		ch <- vres{v, err}
	}()
	h.subscribed(t, twinResponseFilter)
	p := h.publication(t)
	rid, ok := strings.CutPrefix(p.TopicName, twinReportedTopic)
	require.True(t, ok, "PATCH topic %q", p.TopicName)
	assert.Equal(t, `{"a":1}`, string(p.Payload))
	h.write(t, publishPacket("$iothub/twin/res/204/?$rid="+rid, 0, 0, ""))
	select {
	case r := <-ch:
		require.Error(t, r.err)
		var he *transport.HubError
		assert.False(t, errors.As(r.err, &he), "a 204 is no refusal")
	case <-time.After(waitLong):
		require.FailNow(t, "UpdateReported hangs")
	}
}

func TestUsernameModelID(t *testing.T) {
	cfg := transport.Config{Identity: auth.Identity{HostName: "h", DeviceID: "d"}, ProductInfo: "p", ModelID: "dtmi:com:example:Thermostat;1"}
	assert.Equal(t, "h/d/?api-version=2021-04-12&DeviceClientType=p&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1", username(cfg))
}

func TestParseTwinResponseTopic(t *testing.T) {
	for _, tc := range []struct {
		topic string
		want  twinTopic
		ok    bool
	}{
		{"$iothub/twin/res/200/?$rid=1", twinTopic{status: 200, rid: "1"}, true},
		{"$iothub/twin/res/204/?$rid=ab&$version=6", twinTopic{status: 204, rid: "ab", version: 6, hasVersion: true}, true},
		{"$iothub/twin/res/204?$version=2&$rid=4", twinTopic{status: 204, rid: "4", version: 2, hasVersion: true}, true},
		{"$iothub/twin/res/400/?x=y&$rid=9&$version=", twinTopic{status: 400, rid: "9"}, true},
		{"$iothub/twin/res/204/?$rid=9&$version=-1", twinTopic{status: 204, rid: "9"}, true},
		{"$iothub/twin/res/204/?$rid=9&$version=+1", twinTopic{status: 204, rid: "9"}, true},
		{"$iothub/twin/res/200/?$rid=", twinTopic{}, false},
		{"$iothub/twin/res/200/", twinTopic{}, false},
		{"$iothub/twin/res//?$rid=1", twinTopic{}, false},
		{"$iothub/twin/res/2000/?$rid=1", twinTopic{}, false},
		{"$iothub/twin/res/-20/?$rid=1", twinTopic{}, false},
		{"$iothub/twin/res/x/?$rid=1", twinTopic{}, false},
		{"$iothub/twin/PATCH/properties/desired/?$version=1", twinTopic{}, false},
		{"", twinTopic{}, false},
	} {
		got, ok := parseTwinResponseTopic(tc.topic)
		assert.Equal(t, tc.ok, ok, "parseTwinResponseTopic(%q)", tc.topic)
		assert.Equal(t, tc.want, got, "parseTwinResponseTopic(%q)", tc.topic)
	}
}

func TestHubMessage(t *testing.T) {
	assert.Equal(t, `{"a": 1}`, hubMessage([]byte("{\"a\":\r\n\t 1}")))
	assert.Equal(t, "a b", hubMessage([]byte("a\x00\xffb\x1b")))
	assert.Equal(t, "", hubMessage(nil))
	long := hubMessage([]byte(strings.Repeat("é", 1000)))
	assert.Len(t, long, maxHubMessage)
	assert.True(t, utf8.ValidString(long))
}

func FuzzParseTwinResponseTopic(f *testing.F) {
	for _, s := range []string{
		"$iothub/twin/res/200/?$rid=1",
		"$iothub/twin/res/204/?$rid=4&$version=2",
		"$iothub/twin/res/429?$rid=a&$rid=b",
		"$iothub/twin/res/204/?$version=99999999999999999999&$rid=1",
		"$iothub/twin/res//?$rid=1",
		"$iothub/twin/res/200/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		got, ok := parseTwinResponseTopic(topic)
		if !ok {
			require.Equal(t, twinTopic{}, got, "a failed parse of %q", topic)
			return
		}
		require.True(t, strings.HasPrefix(topic, twinResponsePrefix), "%q", topic)
		require.NotEmpty(t, got.rid, "%q", topic)
		require.NotContains(t, got.rid, "&", "%q", topic)
		require.True(t, got.status >= 0 && got.status <= 999, "%q: status %d", topic, got.status)
		require.True(t, got.version >= 0, "%q: version %d", topic, got.version)
		if !got.hasVersion {
			require.Zero(t, got.version, "%q", topic)
		}
		// The topic rebuilt from the parts parses to the same parts.
		again := fmt.Sprintf("%s%d/?$rid=%s", twinResponsePrefix, got.status, got.rid)
		if got.hasVersion {
			again += fmt.Sprintf("&$version=%d", got.version)
		}
		g2, ok := parseTwinResponseTopic(again)
		require.True(t, ok, "round trip of %q", topic)
		require.Equal(t, got, g2, "round trip of %q", topic)
	})
}
