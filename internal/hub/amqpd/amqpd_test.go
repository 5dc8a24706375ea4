package amqpd

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iothub-go/iothub/internal/testutil/syncbuf"
	"github.com/iothub-go/iothub/internal/testutil/testkey"

	amqp "github.com/Azure/go-amqp"
	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/internal/hubauth"
	"github.com/iothub-go/iothub/internal/testutil/pkitest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The Node SDK's way: no SASL, CBS put-token with a string message-id and
// the URL-encoded sr as audience, then the method links.
func TestNoSASLCBSMethodRoundTrip(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	c := f.mustConnect(nil, nil)
	s := newSession(t, c)
	cb := newCBS(t, s)
	tok := token(t, "dev1", key, time.Now().Add(time.Hour))
	code, desc := cb.putToken(t, url.QueryEscape(testHost+"/devices/dev1"), tok)
	require.Equal(t, int32(200), code, "put-token: %q", desc)
	d := mustAttachMethods(t, s, "dev1")
	roundTrip(t, f, d, `{"delay":5,"who":"amqp"}`)

	calls := f.e.Calls()
	require.NotEmpty(t, calls, "call records")
	last := calls[len(calls)-1]
	assert.Equal(t, "amqp", last.Protocol, "call record %+v: protocol", last)
	assert.Equal(t, 200, last.Status, "call record %+v: status", last)

	// A string correlation-id in uuid form (what Node sends for a
	// non-v1–v5 id) and a status of another integer type are accepted.
	call := f.invoke("dev1", "other", nil, 10*time.Second)
	r := d.next(t)
	require.Equal(t, "other", r.name, "request method name")
	require.Empty(t, r.payload, "want an empty data section")
	require.NoError(t, d.respond(t, strings.ToUpper(r.corr.String()), int64(201), nil))
	res := waitInvoke(t, call)
	require.Nil(t, res.err, "invoke")
	assert.Equal(t, 201, res.res.Status, "invoke status")
	assert.Empty(t, res.res.Payload, "invoke payload")
}

func TestCBSMessageIDTypes(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	c := f.mustConnect(nil, nil)
	cb := newCBS(t, newSession(t, c))
	tok := token(t, "dev1", key, time.Now().Add(time.Hour))
	for _, id := range []any{uint64(7), uint64(1 << 40), amqp.UUID(newUUID()), []byte("bin-id"), "str-id"} {
		// .NET's token type and an unencoded audience.
		code, desc := cb.putTokenWith(t, id, "azure-devices.net:sastoken", testHost+"/devices/dev1", tok)
		require.Equal(t, int32(200), code, "put-token with message-id %#v: %q", id, desc)
	}
}

func TestSASLAnonymousAndCBS(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	c := f.mustConnect(&amqp.ConnOptions{SASLType: amqp.SASLTypeAnonymous()}, nil)
	s := newSession(t, c)
	cb := newCBS(t, s)
	code, desc := cb.putToken(t, testHost+"/devices/dev1", token(t, "dev1", key, time.Now().Add(time.Hour)))
	require.Equal(t, int32(200), code, "put-token: %q", desc)
	roundTrip(t, f, mustAttachMethods(t, s, "dev1"), `[1,2]`)
}

// MSSBCBS (the C SDK): go-amqp cannot offer it, so the SASL exchange is
// done by hand and go-amqp takes over after the outcome.
func TestSASLMSSBCBS(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	r := f.rawDial()
	r.write(headerSASL)
	require.Equal(t, string(headerSASL), string(r.readHeader()), "server header")
	require.IsType(t, &saslMechanismsFrame{}, r.mustNext().body, "no sasl-mechanisms")
	r.frame(frameTypeSASL, 0, performative(descSASLInit, Symbol("MSSBCBS"), []byte{}), nil)
	body := r.mustNext().body
	o, ok := body.(*saslOutcomeFrame)
	require.True(t, ok, "got %T, want sasl-outcome", body)
	require.Equal(t, uint8(saslOK), o.code, "sasl-outcome %+v, want ok", o)
	c, err := amqp.NewConn(ctxT(t), r.c, &amqp.ConnOptions{HostName: "localhost"})
	require.NoError(t, err)
	defer c.Close()
	s := newSession(t, c)
	cb := newCBS(t, s)
	code, desc := cb.putToken(t, testHost+"/devices/dev1", token(t, "dev1", key, time.Now().Add(time.Hour)))
	require.Equal(t, int32(200), code, "put-token: %q", desc)
	roundTrip(t, f, mustAttachMethods(t, s, "dev1"), `"x"`)
}

func TestSASLMechanismsOffered(t *testing.T) {
	f := newFixture(t)
	r := f.rawDial()
	r.write(headerSASL)
	r.readHeader()
	body := r.mustNext().body
	m, ok := body.(*saslMechanismsFrame)
	require.True(t, ok, "got %T, want sasl-mechanisms", body)
	assert.Equal(t, "[MSSBCBS ANONYMOUS PLAIN]", fmt.Sprint(m.mechanisms), "sasl-mechanisms")
	// An unknown mechanism is refused with an outcome, not a dropped socket.
	r.frame(frameTypeSASL, 0, performative(descSASLInit, Symbol("EXTERNAL"), []byte{}), nil)
	body = r.mustNext().body
	o, ok := body.(*saslOutcomeFrame)
	require.True(t, ok, "got %T, want sasl-outcome", body)
	assert.Equal(t, uint8(saslAuth), o.code, "sasl-outcome %+v, want auth", o)
	assert.NotEmpty(t, o.data, "sasl-outcome %+v, want a reason", o)
}

func TestSASLPlain(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	f.addDevice("dev2")
	modKey := f.addModule("dev2", "mod1")
	hub := strings.Split(testHost, ".")[0]

	t.Run("device token", func(t *testing.T) {
		c := f.mustConnect(&amqp.ConnOptions{SASLType: amqp.SASLTypePlain("dev1@sas."+hub, token(t, "dev1", key, time.Now().Add(time.Hour)))}, nil)
		s := newSession(t, c)
		roundTrip(t, f, mustAttachMethods(t, s, "dev1"), `{"plain":1}`)
		// The token covers only its own identity.
		_, err := attachMethods(t, s, "dev2", 1)
		requireCondition(t, err, amqp.ErrCondUnauthorizedAccess, "attach for another device: %v, want unauthorized-access", err)
	})
	t.Run("module token", func(t *testing.T) {
		c := f.mustConnect(&amqp.ConnOptions{SASLType: amqp.SASLTypePlain("dev2/modules/mod1@sas."+hub, token(t, "dev2/mod1", modKey, time.Now().Add(time.Hour)))}, nil)
		roundTrip(t, f, mustAttachMethods(t, newSession(t, c), "dev2/mod1"), `{"module":true}`)
	})
	t.Run("policy token", func(t *testing.T) {
		c := f.mustConnect(&amqp.ConnOptions{SASLType: amqp.SASLTypePlain("iothubowner@sas.root."+hub, f.ownerToken(testHost, time.Now().Add(time.Hour)))}, nil)
		s := newSession(t, c)
		roundTrip(t, f, mustAttachMethods(t, s, "dev1"), `1`)
		roundTrip(t, f, mustAttachMethods(t, s, "dev2/mod1"), `2`)
	})
	for _, tc := range []struct{ name, user, pass string }{
		{"wrong key", "dev1@sas." + hub, token(t, "dev1", testkey.New(), time.Now().Add(time.Hour))},
		{"other hub", "dev1@sas.otherhub", token(t, "dev1", key, time.Now().Add(time.Hour))},
		{"no sas", "dev1@" + hub, token(t, "dev1", key, time.Now().Add(time.Hour))},
		{"policy without DeviceConnect", "service@sas.root." + hub, func() string {
			p, _ := f.e.Policy("service")
			tok, _ := auth.SignSAS(testHost, "service", p.PrimaryKey, time.Now().Add(time.Hour))
			return tok
		}()},
		{"expired", "dev1@sas." + hub, token(t, "dev1", key, time.Now().Add(-time.Hour))},
	} {
		t.Run("refused "+tc.name, func(t *testing.T) {
			c, err := f.connect(&amqp.ConnOptions{SASLType: amqp.SASLTypePlain(tc.user, tc.pass)}, nil)
			if err == nil {
				c.Close()
			}
			require.Error(t, err, "connection accepted")
			// go-amqp has no typed error for a refused SASL outcome.
			assert.ErrorContains(t, err, "SASL PLAIN auth failed with code 0x1", "want a SASL auth failure")
		})
	}
}

// A SASL PLAIN token authenticates the whole connection, which closes
// when it expires.
func TestSASLPlainExpiryClosesConnection(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	hub := strings.Split(testHost, ".")[0]
	// Accepted for the five minutes of skew after se, then closed.
	exp := time.Now().Add(-hubauth.MaxClockSkew + 2*time.Second).Truncate(time.Second).Add(time.Second)
	c := f.mustConnect(&amqp.ConnOptions{SASLType: amqp.SASLTypePlain("dev1@sas."+hub, token(t, "dev1", key, exp))}, nil)
	mustAttachMethods(t, newSession(t, c), "dev1")
	f.waitOnline("dev1")
	select {
	case <-c.Done():
	case <-time.After(waitLong):
		require.FailNow(t, "connection still open after its PLAIN token expired")
	}
	requireCondition(t, c.Err(), amqp.ErrCondUnauthorizedAccess, "connection error %v, want unauthorized-access", c.Err())
}

func TestModuleIdentity(t *testing.T) {
	f := newFixture(t)
	f.addDevice("edge1")
	key := f.addModule("edge1", "mod1")
	c := f.mustConnect(nil, nil)
	s := newSession(t, c)
	cb := newCBS(t, s)
	code, desc := cb.putToken(t, testHost+"/devices/edge1/modules/mod1", token(t, "edge1/mod1", key, time.Now().Add(time.Hour)))
	require.Equal(t, int32(200), code, "put-token: %q", desc)
	roundTrip(t, f, mustAttachMethods(t, s, "edge1/mod1"), `{}`)
	// The module's token does not cover its device.
	_, err := attachMethods(t, s, "edge1", 1)
	requireCondition(t, err, amqp.ErrCondUnauthorizedAccess, "attach for the device: %v, want unauthorized-access", err)
}

// The .NET and C spellings of the address are accepted.
func TestAddressSpellings(t *testing.T) {
	for _, tc := range []struct {
		addr string
		id   auth.Identity
		node int
	}{
		{"/devices/dev1/methods/devicebound", auth.Identity{DeviceID: "dev1"}, nodeMethods},
		{"amqps://" + testHost + ":5671/devices/dev1/methods/deviceBound", auth.Identity{DeviceID: "dev1"}, nodeMethods},
		{"amqps://" + testHost + "/devices/d%231/modules/m%2F1/methods/devicebound", auth.Identity{DeviceID: "d#1", ModuleID: "m/1"}, nodeMethods},
		{"/DEVICES/Dev1/METHODS/DEVICEBOUND", auth.Identity{DeviceID: "Dev1"}, nodeMethods},
		{"/devices/dev1/messages/events", auth.Identity{DeviceID: "dev1"}, nodeEvents},
		{"amqps://h/devices/dev1/modules/m1/messages/Events", auth.Identity{DeviceID: "dev1", ModuleID: "m1"}, nodeEvents},
		{"/devices/dev1/methods", auth.Identity{}, nodeNone},
		{"/devices//methods/devicebound", auth.Identity{}, nodeNone},
		{"/devices/dev1/messages/devicebound", auth.Identity{DeviceID: "dev1"}, nodeC2D},
		{"amqps://" + testHost + ":5671/devices/dev%2B1/messages/deviceBound", auth.Identity{DeviceID: "dev+1"}, nodeC2D},
		{"/devices/dev1/messages/fileNotifications", auth.Identity{}, nodeNone},
		{"/devices/dev1/modules/m1/twin/x", auth.Identity{}, nodeNone},
		{"/devices/d%zz/methods/devicebound", auth.Identity{}, nodeNone},
	} {
		id, node := parseIdentityAddress(tc.addr)
		assert.Equal(t, tc.node, node, "parseIdentityAddress(%q): node", tc.addr)
		assert.Equal(t, tc.id, id, "parseIdentityAddress(%q): identity", tc.addr)
	}
	assert.True(t, isCBSAddress("$cbs"), "isCBSAddress($cbs)")
	assert.True(t, isCBSAddress("/$CBS"), "isCBSAddress(/$CBS)")
	assert.False(t, isCBSAddress("$cbsx"), "isCBSAddress($cbsx)")
}

// Telemetry on /devices/{id}/messages/events reaches the engine, with
// the same authentication as the method links.
func TestTelemetry(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	c := f.mustConnect(nil, nil)
	s := newSession(t, c)
	_, err := s.NewSender(ctxT(t), "/devices/dev1/messages/events", nil)
	requireCondition(t, err, amqp.ErrCondUnauthorizedAccess, "telemetry link without a token: %v, want unauthorized-access", err)
	cb := newCBS(t, s)
	code, _ := cb.putToken(t, testHost+"/devices/dev1", token(t, "dev1", key, time.Now().Add(time.Hour)))
	require.Equal(t, int32(200), code, "put-token failed")
	snd, err := s.NewSender(ctxT(t), "/devices/dev1/messages/events", nil)
	require.NoError(t, err)
	ct, ce := "application/json", "utf-8"
	err = snd.Send(ctxT(t), &amqp.Message{
		Properties:            &amqp.MessageProperties{MessageID: "m-1", CorrelationID: uint64(9), ContentType: &ct, ContentEncoding: &ce},
		ApplicationProperties: map[string]any{"temp": "high", "n": int32(3)},
		Data:                  [][]byte{[]byte(`{"t":21.5}`)},
	}, nil)
	require.NoError(t, err)
	evs, err := f.e.WaitEvents(ctxT(t), 1)
	require.NoError(t, err)
	ev := evs[0]
	assert.Equal(t, "dev1", ev.Identity.DeviceID, "event device id")
	assert.Equal(t, "amqp", ev.Protocol, "event protocol")
	assert.Equal(t, `{"t":21.5}`, string(ev.Body), "event body")
	assert.Equal(t, "m-1", ev.MessageID, "event message-id")
	assert.Equal(t, "9", ev.CorrelationID, "event correlation-id")
	assert.Equal(t, ct, ev.ContentType, "event content-type")
	assert.Equal(t, ce, ev.ContentEncoding, "event content-encoding")
	assert.Equal(t, "high", ev.Properties["temp"], "event property temp")
	assert.Equal(t, "3", ev.Properties["n"], "event property n")
	require.NoError(t, snd.Send(ctxT(t), &amqp.Message{Value: "as amqp-value"}, nil))
	evs, err = f.e.WaitEvents(ctxT(t), 2)
	require.NoError(t, err, "second event")
	assert.Equal(t, "as amqp-value", string(evs[1].Body), "second event body")
	// The hub does not send on the telemetry node.
	_, err = s.NewReceiver(ctxT(t), "/devices/dev1/messages/events", nil)
	requireCondition(t, err, amqp.ErrCondNotAllowed, "receiver on the telemetry node: %v, want not-allowed", err)
}

func TestLargePayloads(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	// A small client max-frame-size makes every message span many frames
	// in both directions.
	c := f.mustConnect(&amqp.ConnOptions{MaxFrameSize: 4096}, nil)
	s := newSession(t, c)
	cb := newCBS(t, s)
	code, _ := cb.putToken(t, testHost+"/devices/dev1", token(t, "dev1", key, time.Now().Add(time.Hour)))
	require.Equal(t, int32(200), code, "put-token failed")
	d := mustAttachMethods(t, s, "dev1")
	f.waitOnline("dev1")
	big := `"` + strings.Repeat("a", engine.MaxPayload-2) + `"`
	call := f.invoke("dev1", "big", []byte(big), 10*time.Second)
	r := d.next(t)
	// Compared without testify's diff, which would print both payloads.
	require.True(t, string(r.payload) == big, "request payload of %d bytes, want %d", len(r.payload), len(big))
	resp := bytes.Repeat([]byte("b"), 200*1024)
	require.NoError(t, d.respond(t, r.corr, int32(200), resp))
	res := waitInvoke(t, call)
	require.Nil(t, res.err, "invoke")
	assert.True(t, bytes.Equal(res.res.Payload, resp), "invoke payload of %d bytes, want %d", len(res.res.Payload), len(resp))
}

func TestPutTokenErrors(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	f.addDevice("dev2")
	c := f.mustConnect(nil, nil)
	cb := newCBS(t, newSession(t, c))
	good := token(t, "dev1", key, time.Now().Add(time.Hour))
	for _, tc := range []struct {
		name, typ, audience, tok string
		want                     int32
	}{
		{"wrong key", "servicebus.windows.net:sastoken", testHost + "/devices/dev1", token(t, "dev1", testkey.New(), time.Now().Add(time.Hour)), 401},
		{"expired", "servicebus.windows.net:sastoken", testHost + "/devices/dev1", token(t, "dev1", key, time.Now().Add(-hubauth.MaxClockSkew-time.Minute)), 401},
		// Within the 5 minutes of skew that every endpoint allows.
		{"60 s past se", "servicebus.windows.net:sastoken", testHost + "/devices/dev1", token(t, "dev1", key, time.Now().Add(-time.Minute)), 200},
		{"another identity's audience", "servicebus.windows.net:sastoken", testHost + "/devices/dev2", good, 401},
		{"unknown device", "servicebus.windows.net:sastoken", testHost + "/devices/nodev", good, 401},
		{"other hub", "servicebus.windows.net:sastoken", "other.azure-devices.net/devices/dev1", good, 401},
		{"not a token", "servicebus.windows.net:sastoken", testHost + "/devices/dev1", "garbage", 401},
		{"device token for the hub", "servicebus.windows.net:sastoken", testHost, good, 401},
		{"bad type", "jwt", testHost + "/devices/dev1", good, 400},
		{"bad audience", "servicebus.windows.net:sastoken", testHost + "/twins/dev1", good, 400},
		{"type case-insensitive", "ServiceBus.Windows.Net:SasToken", testHost + "/devices/dev1", good, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, desc := cb.putTokenWith(t, newUUID().String(), tc.typ, tc.audience, tc.tok)
			require.Equal(t, tc.want, code, "put-token: %q", desc)
			assert.NotEmpty(t, desc, "empty status-description")
			assert.NotContains(t, desc, "sig=", "status-description leaks the token")
		})
	}
}

func TestAttachRefused(t *testing.T) {
	f := newFixture(t)
	f.addDevice("dev1")
	c := f.mustConnect(nil, nil)
	s := newSession(t, c)
	_, err := attachMethods(t, s, "dev1", 1)
	e := requireCondition(t, err, amqp.ErrCondUnauthorizedAccess, "attach without a token: %v, want amqp:unauthorized-access", err)
	var desc struct {
		ErrorCode  int    `json:"errorCode"`
		Message    string `json:"message"`
		TrackingID string `json:"trackingId"`
	}
	require.NoError(t, json.Unmarshal([]byte(e.Description), &desc), "description %q is not IoT Hub's JSON error", e.Description)
	assert.Equal(t, 401002, desc.ErrorCode, "description %q: errorCode", e.Description)
	assert.NotEmpty(t, desc.TrackingID, "description %q: trackingId", e.Description)
	assert.NotEmpty(t, desc.Message, "description %q: message", e.Description)
	assert.Equal(t, desc.TrackingID, e.Info["com.microsoft:tracking-id"], "info %v lacks the tracking id", e.Info)

	_, err = s.NewReceiver(ctxT(t), "/devices/dev1/messages/fileNotifications", nil)
	requireCondition(t, err, amqp.ErrCondNotFound, "attach to an unknown address: %v, want amqp:not-found", err)
	// The session and connection survive refusals.
	cb := newCBS(t, s)
	_ = cb
}

// A token that expires without a refresh detaches the identity's links;
// a refresh before the expiry keeps them.
func TestTokenExpiryAndRefresh(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	key2 := f.addDevice("dev2")
	c := f.mustConnect(nil, nil)
	s := newSession(t, c)
	cb := newCBS(t, s)
	// se is in the past: these tokens hold for the five minutes of skew.
	soon := time.Now().Add(-hubauth.MaxClockSkew + 2*time.Second).Truncate(time.Second).Add(time.Second)
	for _, id := range []string{"dev1", "dev2"} {
		k := map[string]string{"dev1": key, "dev2": key2}[id]
		code, desc := cb.putToken(t, testHost+"/devices/"+id, token(t, id, k, soon))
		require.Equal(t, int32(200), code, "put-token %s: %q", id, desc)
	}
	d1 := mustAttachMethods(t, s, "dev1")
	d2 := mustAttachMethods(t, s, "dev2")
	f.waitOnline("dev1")
	f.waitOnline("dev2")
	// Refresh dev2 only.
	code, desc := cb.putToken(t, testHost+"/devices/dev2", token(t, "dev2", key2, time.Now().Add(time.Hour)))
	require.Equal(t, int32(200), code, "refresh: %q", desc)
	_, err := d1.req.Receive(ctxT(t), nil)
	e := requireCondition(t, err, amqp.ErrCondUnauthorizedAccess, "dev1 request link: %v, want detached with unauthorized-access", err)
	assert.Contains(t, e.Description, `"errorCode":401002`, "description")
	time.Sleep(time.Until(soon) + 300*time.Millisecond)
	roundTrip(t, f, d2, `{"refreshed":true}`)
	r := waitInvoke(t, f.invoke("dev1", "m", nil, 5*time.Second))
	requireCode(t, r, engine.CodeDeviceNotOnline, "invoke on the expired identity: %v, want 404103", r.err)
	// The client ends its side of the detached links first: go-amqp may
	// otherwise hand a new link a handle before it has answered the hub's
	// detach of the old one, and the hub refuses such an attach with
	// amqp:session:handle-in-use, as the AMQP spec has it (our device
	// transport holds such attaches back: transport/amqp/hold.go).
	_ = d1.req.Close(ctxT(t))
	_ = d1.resp.Close(ctxT(t))
	// A new token lets the identity attach again on the same connection.
	code, _ = cb.putToken(t, testHost+"/devices/dev1", token(t, "dev1", key, time.Now().Add(time.Hour)))
	require.Equal(t, int32(200), code, "put-token after expiry failed")
	roundTrip(t, f, mustAttachMethods(t, s, "dev1"), `{"again":true}`)
}

// A hub-scoped policy token put on $cbs lets one connection attach any
// identity (multiplexing, as a gateway does).
func TestHubPolicyTokenMultiplexes(t *testing.T) {
	f := newFixture(t)
	f.addDevice("dev1")
	f.addDevice("dev2")
	c := f.mustConnect(nil, nil)
	s := newSession(t, c)
	cb := newCBS(t, s)
	code, desc := cb.putToken(t, testHost, f.ownerToken(testHost, time.Now().Add(time.Hour)))
	require.Equal(t, int32(200), code, "put-token: %q", desc)
	d1 := mustAttachMethods(t, s, "dev1")
	d2 := mustAttachMethods(t, newSession(t, c), "dev2")
	roundTrip(t, f, d1, `1`)
	roundTrip(t, f, d2, `2`)
}

// A second connection of the same identity takes over; the first one's
// links are detached with an error, the first connection stays up.
func TestKickedByNewConnection(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	key2 := f.addDevice("dev2")
	open := func(ids ...string) (*amqp.Conn, *amqp.Session, map[string]*device) {
		c := f.mustConnect(nil, nil)
		s := newSession(t, c)
		cb := newCBS(t, s)
		ds := map[string]*device{}
		for _, id := range ids {
			k := map[string]string{"dev1": key, "dev2": key2}[id]
			code, _ := cb.putToken(t, testHost+"/devices/"+id, token(t, id, k, time.Now().Add(time.Hour)))
			require.Equal(t, int32(200), code, "put-token failed")
			ds[id] = mustAttachMethods(t, s, id)
		}
		return c, s, ds
	}
	c1, _, old := open("dev1", "dev2")
	f.waitOnline("dev1")
	_, _, newer := open("dev1")
	_, err := old["dev1"].req.Receive(ctxT(t), nil)
	e := requireCondition(t, err, amqp.ErrCondStolen, "old link: %v, want amqp:link:stolen with 409002 LinkCreationConflict", err)
	assert.Contains(t, e.Description, `"errorCode":409002`, "old link: want 409002 LinkCreationConflict")
	roundTrip(t, f, newer["dev1"], `"new"`)
	// The other identity on the first connection is untouched.
	roundTrip(t, f, old["dev2"], `"other"`)
	select {
	case <-c1.Done():
		require.FailNow(t, "first connection closed", "%v", c1.Err())
	default:
	}
}

func TestX509(t *testing.T) {
	f := newFixture(t)
	cert := pkitest.SelfSigned(t, "certdev")
	tp := auth.ComputeThumbprints(cert.Certificate[0]).SHA256
	_, herr := f.e.PutDevice("certdev", engine.Device{Authentication: engine.Authentication{
		Type: engine.AuthSelfSigned, X509Thumbprint: engine.X509Thumbprint{PrimaryThumbprint: &tp},
	}}, "")
	require.Nil(t, herr)
	c := f.mustConnect(nil, &cert)
	roundTrip(t, f, mustAttachMethods(t, newSession(t, c), "certdev"), `{"x509":true}`)

	wrong := pkitest.SelfSigned(t, "certdev")
	c2 := f.mustConnect(nil, &wrong)
	_, err := attachMethods(t, newSession(t, c2), "certdev", 1)
	e := requireCondition(t, err, amqp.ErrCondUnauthorizedAccess, "wrong certificate: %v, want unauthorized-access about the thumbprint", err)
	assert.Contains(t, e.Description, "humbprint", "wrong certificate: want unauthorized-access about the thumbprint")
}

// A device that grants no credit never blocks the engine: requests wait
// in a short queue and time out, and beyond the queue they fail at once.
func TestCreditExhaustion(t *testing.T) {
	const maxQueued = 16
	f := newFixture(t, func(s *Server) { s.maxQueued = maxQueued })
	key := f.addDevice("dev1")
	c := f.mustConnect(nil, nil)
	s := newSession(t, c)
	cb := newCBS(t, s)
	code, _ := cb.putToken(t, testHost+"/devices/dev1", token(t, "dev1", key, time.Now().Add(time.Hour)))
	require.Equal(t, int32(200), code, "put-token failed")
	d, err := attachMethods(t, s, "dev1", -1) // manual credit, none issued
	require.NoError(t, err)
	f.waitOnline("dev1")
	var calls []<-chan invokeResult
	for i := 0; i < maxQueued; i++ {
		calls = append(calls, f.invoke("dev1", "m", []byte(fmt.Sprint(i)), 2*time.Second))
	}
	time.Sleep(200 * time.Millisecond) // let them queue
	r := waitInvoke(t, f.invoke("dev1", "m", nil, 2*time.Second))
	requireCode(t, r, engine.CodeDeviceNotOnline, "call beyond the queue: %v, want 404103 (not a 504 after the response timeout)", r.err)
	for _, ch := range calls {
		r := waitInvoke(t, ch)
		requireCode(t, r, engine.CodeGatewayTimeout, "queued call: %v, want 504101", r.err)
	}
	// Credit releases the queue (stale requests; their answers are dropped).
	require.NoError(t, d.req.IssueCredit(100))
	for i := 0; i < maxQueued; i++ {
		m, err := d.req.Receive(ctxT(t), nil)
		require.NoError(t, err)
		checkRequest(t, m)
		_ = d.req.AcceptMessage(ctxT(t), m)
	}
	call := f.invoke("dev1", "fresh", []byte(`1`), 10*time.Second)
	fresh := d.next(t)
	require.NoError(t, d.respond(t, fresh.corr, int32(200), []byte(`2`)))
	r = waitInvoke(t, call)
	require.Nil(t, r.err, "fresh call")
	assert.Equal(t, `2`, string(r.res.Payload), "fresh call payload")
}

// Malformed input ends only its own connection, with an AMQP close that
// says why.
func TestMalformedFrames(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	c := f.mustConnect(nil, nil)
	s := newSession(t, c)
	cb := newCBS(t, s)
	code, _ := cb.putToken(t, testHost+"/devices/dev1", token(t, "dev1", key, time.Now().Add(time.Hour)))
	require.Equal(t, int32(200), code, "put-token failed")
	d := mustAttachMethods(t, s, "dev1")

	for _, tc := range []struct {
		name  string
		bytes []byte
		cond  Symbol
	}{
		{"garbage body", []byte{0, 0, 0, 12, 2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, condDecodeError},
		{"huge list count", []byte{0, 0, 0, 20, 2, 0, 0, 0, 0x00, 0x53, 0x10, 0xd0, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff}, condDecodeError},
		{"frame too large", []byte{0x7f, 0, 0, 0, 2, 0, 0, 0}, condFramingError},
		{"bad data offset", []byte{0, 0, 0, 8, 1, 0, 0, 0}, condFramingError},
		{"begin without mandatory fields", mustFrame(t, performative(descBegin, uint16(1))), condDecodeError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.rawDial()
			r.open()
			r.write(tc.bytes)
			e := r.expectClose()
			require.NotNil(t, e, "close without an error, want %s", tc.cond)
			assert.Equal(t, tc.cond, e.condition, "close error %v", e)
		})
	}
	t.Run("bad protocol header", func(t *testing.T) {
		r := f.rawDial()
		r.write([]byte("AMQP\x01\x01\x00\x00"))
		assert.Equal(t, string(headerAMQP), string(r.readHeader()), "server answered, want its supported header")
	})
	t.Run("http", func(t *testing.T) {
		r := f.rawDial()
		r.write([]byte("GET / HTTP/1.1\r\n\r\n"))
		assert.Equal(t, string(headerAMQP), string(r.readHeader()), "server answered, want its supported header")
	})
	t.Run("frame before open", func(t *testing.T) {
		r := f.rawDial()
		r.write(headerAMQP)
		r.readHeader()
		r.frame(frameTypeAMQP, 0, performative(descBegin, nil, uint32(0), uint32(10), uint32(10)), nil)
		e := r.expectClose()
		require.NotNil(t, e, "close without an error, want %s", condFramingError)
		assert.Equal(t, condFramingError, e.condition, "close error %v", e)
	})
	t.Run("transfer on unattached handle", func(t *testing.T) {
		r := f.rawDial()
		r.open()
		r.frame(frameTypeAMQP, 0, performative(descBegin, nil, uint32(0), uint32(10), uint32(10)), nil)
		r.mustNext()
		r.frame(frameTypeAMQP, 0, performative(descTransfer, uint32(7), uint32(0), []byte{1}), []byte{0x00, 0x53, 0x77, 0x40})
		for {
			fr := r.mustNext()
			if e, ok := fr.body.(*end); ok {
				require.NotNil(t, e.err, "end without an error, want %s", condUnattachedHandle)
				assert.Equal(t, condUnattachedHandle, e.err.condition, "end error %v", e.err)
				break
			}
		}
	})

	// The device's connection is unaffected.
	roundTrip(t, f, d, `{"still":"here"}`)
}

func mustFrame(tb testing.TB, body any) []byte {
	tb.Helper()
	b, err := appendFrame(nil, frameTypeAMQP, 0, body, nil)
	require.NoError(tb, err)
	return b
}

// A message bigger than 256 KB detaches its link.
func TestMessageSizeExceeded(t *testing.T) {
	f := newFixture(t)
	f.addDevice("dev1")
	r := f.rawDial()
	r.open()
	r.frame(frameTypeAMQP, 0, performative(descBegin, nil, uint32(0), uint32(5000), uint32(5000)), nil)
	r.mustNext()
	r.frame(frameTypeAMQP, 0, performative(descAttach, "big", uint32(0), false, nil, nil,
		performative(descSource, "src"), performative(descTarget, "$cbs"), nil, nil, uint32(0)), nil)
	var credit bool
	for !credit {
		if _, ok := r.mustNext().body.(*flow); ok {
			credit = true
		}
	}
	chunk := bytes.Repeat([]byte{0}, 60*1024)
	for i := 0; i < 6; i++ {
		var id any
		if i == 0 {
			id = uint32(0)
		}
		r.frame(frameTypeAMQP, 0, performative(descTransfer, uint32(0), id, []byte{1}, nil, nil, true), chunk)
	}
	for {
		fr := r.mustNext()
		if dt, ok := fr.body.(*detach); ok {
			require.NotNil(t, dt.err, "detach without an error, want %s", condMessageSize)
			assert.Equal(t, condMessageSize, dt.err.condition, "detach error %v", dt.err)
			return
		}
	}
}

func TestIdleTimeoutAndHeartbeats(t *testing.T) {
	f := newFixture(t, func(s *Server) { s.idleTimeout = 500 * time.Millisecond })
	// go-amqp sends heartbeats at half the hub's idle-time-out and the hub
	// sends them at half of go-amqp's: a quiet connection stays up.
	c := f.mustConnect(&amqp.ConnOptions{IdleTimeout: 2 * time.Second}, nil)
	time.Sleep(2500 * time.Millisecond)
	select {
	case <-c.Done():
		require.FailNow(t, "quiet connection closed", "%v", c.Err())
	default:
	}
	// A client that sends nothing is closed with resource-limit-exceeded.
	r := f.rawDial()
	r.open()
	e := r.expectClose()
	require.NotNil(t, e, "close without an error, want %s", condResourceLimit)
	assert.Equal(t, condResourceLimit, e.condition, "close error %v", e)
}

func TestWebSocket(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("wsdev")
	var wg sync.WaitGroup
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/$iothub/websocket" {
			http.NotFound(w, r)
			return
		}
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"AMQPWSB10"}})
		if err != nil {
			return
		}
		if c.Subprotocol() != "AMQPWSB10" {
			c.Close(websocket.StatusPolicyViolation, "subprotocol")
			return
		}
		wg.Add(1)
		defer wg.Done()
		nc := websocket.NetConn(context.Background(), c, websocket.MessageBinary)
		_ = f.srv.ServeConn(nc, ConnInfo{Protocol: "amqp-ws", PeerCertificates: r.TLS.PeerCertificates})
	}))
	hs.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	hs.StartTLS()
	t.Cleanup(func() { hs.Close(); wg.Wait() })

	ctx := ctxT(t)
	ws, _, err := websocket.Dial(ctx, "wss://"+strings.TrimPrefix(hs.URL, "https://")+"/$iothub/websocket",
		&websocket.DialOptions{Subprotocols: []string{"AMQPWSB10"}, HTTPClient: hs.Client()})
	require.NoError(t, err)
	nc := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
	c, err := amqp.NewConn(ctx, nc, &amqp.ConnOptions{HostName: "localhost"})
	require.NoError(t, err)
	defer c.Close()
	s := newSession(t, c)
	cb := newCBS(t, s)
	code, _ := cb.putToken(t, testHost+"/devices/wsdev", token(t, "wsdev", key, time.Now().Add(time.Hour)))
	require.Equal(t, int32(200), code, "put-token failed")
	roundTrip(t, f, mustAttachMethods(t, s, "wsdev"), `{"ws":true}`)
	calls := f.e.Calls()
	require.NotEmpty(t, calls, "call records")
	assert.Equal(t, "amqp-ws", calls[len(calls)-1].Protocol, "protocol")
}

// Close ends open connections with amqp:connection:forced.
func TestServerClose(t *testing.T) {
	_, err := New(nil, nil)
	require.Error(t, err, "New(nil engine) did not fail")
	f := newFixture(t)
	c := f.mustConnect(nil, nil)
	require.NoError(t, f.srv.Close())
	select {
	case <-c.Done():
	case <-time.After(waitLong):
		require.FailNow(t, "connection still open after Close")
	}
	requireCondition(t, c.Err(), amqp.ErrCondConnectionForced, "connection error %v, want amqp:connection:forced", c.Err())
	p1, p2 := net.Pipe()
	defer p2.Close()
	assert.ErrorIs(t, f.srv.ServeConn(p1, ConnInfo{}), ErrServerClosed, "ServeConn after Close")
	assert.NoError(t, f.srv.Close(), "second Close")
}

// Logs never carry tokens or payloads.
func TestLogRedaction(t *testing.T) {
	var buf syncbuf.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := newFixtureLog(t, log)
	key := f.addDevice("dev1")
	hub := strings.Split(testHost, ".")[0]
	c := f.mustConnect(nil, nil)
	s := newSession(t, c)
	cb := newCBS(t, s)
	tok := token(t, "dev1", key, time.Now().Add(time.Hour))
	cb.putToken(t, testHost+"/devices/dev1", tok)
	cb.putToken(t, testHost+"/devices/dev1", token(t, "dev1", testkey.New(), time.Now().Add(time.Hour)))
	roundTrip(t, f, mustAttachMethods(t, s, "dev1"), `{"secret-payload":1}`)
	if c2, err := f.connect(&amqp.ConnOptions{SASLType: amqp.SASLTypePlain("dev1@sas."+hub, tok+"x")}, nil); err == nil {
		c2.Close()
	}
	out := buf.String()
	sig := tok[strings.Index(tok, "sig=")+4:]
	sig = sig[:strings.IndexByte(sig, '&')]
	for _, secret := range []string{sig, key, "secret-payload", `{"ok":true}`} {
		assert.NotContains(t, out, secret, "log leaks %q", secret)
	}
	assert.Contains(t, out, "amqp cbs put-token", "log has no put-token events")
}

// The hub holds transfers back while the client's session window is
// closed, and answers a drain by using up the link's credit.
func TestSessionWindowAndDrain(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	r := f.rawDial()
	r.open()
	// A session whose incoming-window is 0: the hub may not send transfers.
	r.frame(frameTypeAMQP, 0, performative(descBegin, nil, uint32(0), uint32(0), uint32(100)), nil)
	require.IsType(t, &begin{}, r.mustNext().body, "no begin")
	r.frame(frameTypeAMQP, 0, performative(descAttach, "cbs-out", uint32(0), true, nil, nil,
		performative(descSource, "$cbs"), performative(descTarget, "cbs")), nil)
	r.frame(frameTypeAMQP, 0, performative(descAttach, "cbs-in", uint32(1), false, nil, nil,
		performative(descSource, "me"), performative(descTarget, "$cbs"), nil, nil, uint32(0)), nil)
	// Credit for the replies, on the link the hub sends on.
	r.frame(frameTypeAMQP, 0, performative(descFlow, uint32(0), uint32(0), uint32(0), uint32(100),
		uint32(0), uint32(0), uint32(5)), nil)
	r.frame(frameTypeAMQP, 0, performative(descTransfer, uint32(1), uint32(0), []byte{0}), putTokenMessage(t, 42, token(t, "dev1", key, time.Now().Add(time.Hour))))
	// The hub accepts the request but holds the reply back.
	var accepted bool
	for !accepted {
		switch p := r.mustNext().body.(type) {
		case *transfer:
			require.FailNow(t, "transfer sent into a closed session window")
		case *disposition:
			accepted = p.receiver && p.first == 0 && p.settled
		}
	}
	// Opening the window releases it.
	r.frame(frameTypeAMQP, 0, performative(descFlow, uint32(0), uint32(10), uint32(1), uint32(100)), nil)
	for {
		fr := r.mustNext()
		tr, ok := fr.body.(*transfer)
		if !ok {
			continue
		}
		require.Equal(t, uint32(0), tr.handle, "reply transfer %+v: handle", tr)
		require.False(t, tr.settled, "reply transfer %+v: settled", tr)
		m, err := decodeMessage(fr.payload)
		require.NoError(t, err)
		require.Equal(t, uint64(42), m.correlationID, "reply correlation-id, want ulong 42")
		v, _ := m.appProps.Get("status-code")
		require.Equal(t, int32(200), v, "status-code")
		break
	}
	// Drain: the hub has nothing to send, so it uses up the credit.
	r.frame(frameTypeAMQP, 0, performative(descFlow, uint32(1), uint32(10), uint32(1), uint32(100),
		uint32(0), uint32(1), uint32(7), nil, true), nil)
	for {
		fl, ok := r.mustNext().body.(*flow)
		if !ok || fl.handle == nil || *fl.handle != 0 {
			continue
		}
		require.True(t, fl.drain, "drain answer: drain")
		require.NotNil(t, fl.linkCredit, "drain answer: link-credit")
		require.NotNil(t, fl.deliveryCount, "drain answer: delivery-count")
		require.Equal(t, uint32(0), *fl.linkCredit, "drain answer: link-credit")
		require.Equal(t, uint32(8), *fl.deliveryCount, "drain answer: delivery-count")
		break
	}
}

// Closes the engine asks for: a deleted device's links are detached with
// amqp:not-found, revoked tokens with amqp:unauthorized-access, and an
// injected network fault drops the socket.
func TestEngineCloses(t *testing.T) {
	f := newFixture(t)
	keys := map[string]string{}
	for _, id := range []string{"gone", "revoked", "dropped"} {
		keys[id] = f.addDevice(id)
	}
	open := func(id string) (*amqp.Conn, *device) {
		c := f.mustConnect(nil, nil)
		s := newSession(t, c)
		cb := newCBS(t, s)
		code, _ := cb.putToken(t, testHost+"/devices/"+id, token(t, id, keys[id], time.Now().Add(time.Hour)))
		require.Equal(t, int32(200), code, "put-token failed")
		d := mustAttachMethods(t, s, id)
		f.waitOnline(id)
		return c, d
	}

	_, d := open("gone")
	require.Nil(t, f.e.DeleteDevice("gone", "*"))
	_, err := d.req.Receive(ctxT(t), nil)
	e := requireCondition(t, err, amqp.ErrCondNotFound, "deleted device's link: %v, want amqp:not-found with 404001", err)
	assert.Contains(t, e.Description, "404001", "deleted device's link: want 404001")

	c, d := open("revoked")
	f.e.ExpireTokens(ident("revoked"))
	_, err = d.req.Receive(ctxT(t), nil)
	requireCondition(t, err, amqp.ErrCondUnauthorizedAccess, "revoked identity's link: %v, want amqp:unauthorized-access", err)
	// The revoked token no longer attaches; the connection is still up.
	_, err = attachMethods(t, newSession(t, c), "revoked", 1)
	requireCondition(t, err, amqp.ErrCondUnauthorizedAccess, "attach with a revoked token: %v", err)

	c, _ = open("dropped")
	require.True(t, f.e.DropConnection(ident("dropped")), "DropConnection found no connection")
	select {
	case <-c.Done():
	case <-time.After(waitLong):
		require.FailNow(t, "connection survived DropConnection")
	}
	e = remoteErr(c.Err())
	assert.Nil(t, e, "dropped connection got a close frame, want a bare drop")
}

// TestUnauthenticatedConnectionIsClosed: a connection that authenticates
// no identity within authWait is closed with amqp:unauthorized-access,
// though it sends heartbeats; one that authenticated stays.
func TestUnauthenticatedConnectionIsClosed(t *testing.T) {
	f := newFixture(t, func(s *Server) { s.authWait = 300 * time.Millisecond })
	key := f.addDevice("dev1")
	authed := f.mustConnect(nil, nil)
	s := newSession(t, authed)
	code, _ := newCBS(t, s).putToken(t, testHost+"/devices/dev1", token(t, "dev1", key, time.Now().Add(time.Hour)))
	require.Equal(t, int32(200), code, "put-token failed")
	d := mustAttachMethods(t, s, "dev1")

	idle := f.mustConnect(&amqp.ConnOptions{IdleTimeout: 10 * time.Second}, nil) // the hub heartbeats it
	newSession(t, idle)
	select {
	case <-idle.Done():
		err := idle.Err()
		var ce *amqp.ConnError
		require.ErrorAs(t, err, &ce, "closed with %v, want amqp:unauthorized-access", err)
		require.NotNil(t, ce.RemoteErr, "closed with %v, want amqp:unauthorized-access", err)
		require.Equal(t, amqp.ErrCondUnauthorizedAccess, ce.RemoteErr.Condition, "closed with %v, want amqp:unauthorized-access", err)
	case <-time.After(30 * time.Second):
		require.FailNow(t, "an unauthenticated connection is still open")
	}
	roundTrip(t, f, d, `"still here"`)
}

// TestSessionPendingBytesBounded: a peer that grants link credit but keeps
// its session window shut cannot make the hub buffer without bound: past
// maxPendingBytes the session ends with amqp:resource-limit-exceeded.
func TestSessionPendingBytesBounded(t *testing.T) {
	f := newFixture(t, func(s *Server) { s.maxPendingBytes = 200 })
	key := f.addDevice("dev1")
	r := f.rawDial()
	r.open()
	r.frame(frameTypeAMQP, 0, performative(descBegin, nil, uint32(0), uint32(0), uint32(100)), nil)
	require.IsType(t, &begin{}, r.mustNext().body, "no begin")
	r.frame(frameTypeAMQP, 0, performative(descAttach, "cbs-out", uint32(0), true, nil, nil,
		performative(descSource, "$cbs"), performative(descTarget, "cbs")), nil)
	r.frame(frameTypeAMQP, 0, performative(descAttach, "cbs-in", uint32(1), false, nil, nil,
		performative(descSource, "me"), performative(descTarget, "$cbs"), nil, nil, uint32(0)), nil)
	r.frame(frameTypeAMQP, 0, performative(descFlow, uint32(0), uint32(0), uint32(0), uint32(100),
		uint32(0), uint32(0), uint32(50)), nil)
	for i := range 5 {
		r.frame(frameTypeAMQP, 0, performative(descTransfer, uint32(1), uint32(i), []byte{byte(i)}),
			putTokenMessage(t, uint64(i), token(t, "dev1", key, time.Now().Add(time.Hour))))
	}
	for {
		fr := r.mustNext()
		switch p := fr.body.(type) {
		case *transfer:
			require.FailNow(t, "transfer sent into a closed session window")
		case *end:
			require.NotNil(t, p.err, "session ended without an error, want amqp:resource-limit-exceeded")
			assert.Equal(t, condResourceLimit, p.err.condition, "session ended with %+v, want amqp:resource-limit-exceeded", p.err)
			return
		}
	}
}

// putTokenMessage encodes a CBS put-token request for dev1 with message-id
// id, for tests that speak raw frames.
func putTokenMessage(t *testing.T, id uint64, tok string) []byte {
	t.Helper()
	var req []byte
	for _, sec := range []any{
		performative(descProperties, id),
		Described{Descriptor: uint64(descApplicationProperties), Value: Map{
			{Key: "operation", Value: "PUT-TOKEN"}, {Key: "type", Value: "servicebus.windows.net:sastoken"},
			{Key: "name", Value: testHost + "/devices/dev1"}}},
		Described{Descriptor: uint64(descAMQPValue), Value: tok},
	} {
		var err error
		req, err = appendValue(req, sec)
		require.NoError(t, err)
	}
	return req
}
