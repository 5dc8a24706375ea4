package amqpd

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
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
	"go.uber.org/goleak"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
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
	if code, desc := cb.putToken(t, url.QueryEscape(testHost+"/devices/dev1"), tok); code != 200 {
		t.Fatalf("put-token = %d %q, want 200", code, desc)
	}
	d := mustAttachMethods(t, s, "dev1")
	roundTrip(t, f, d, `{"delay":5,"who":"amqp"}`)

	calls := f.e.Calls()
	if last := calls[len(calls)-1]; last.Protocol != "amqp" || last.Status != 200 {
		t.Fatalf("call record %+v, want protocol amqp status 200", last)
	}

	// A string correlation-id in uuid form (what Node sends for a
	// non-v1–v5 id) and a status of another integer type are accepted.
	call := f.invoke("dev1", "other", nil, 10*time.Second)
	r := d.next(t)
	if len(r.payload) != 0 || r.name != "other" {
		t.Fatalf("request %q %q, want other with an empty data section", r.name, r.payload)
	}
	if err := d.respond(t, strings.ToUpper(r.corr.String()), int64(201), nil); err != nil {
		t.Fatal(err)
	}
	if res := waitInvoke(t, call); res.err != nil || res.res.Status != 201 || len(res.res.Payload) != 0 {
		t.Fatalf("invoke = %+v, %v", res.res, res.err)
	}
}

func TestCBSMessageIDTypes(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	c := f.mustConnect(nil, nil)
	cb := newCBS(t, newSession(t, c))
	tok := token(t, "dev1", key, time.Now().Add(time.Hour))
	for _, id := range []any{uint64(7), uint64(1 << 40), amqp.UUID(newUUID()), []byte("bin-id"), "str-id"} {
		// .NET's token type and an unencoded audience.
		if code, desc := cb.putTokenWith(t, id, "azure-devices.net:sastoken", testHost+"/devices/dev1", tok); code != 200 {
			t.Fatalf("put-token with message-id %#v = %d %q", id, code, desc)
		}
	}
}

func TestSASLAnonymousAndCBS(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	c := f.mustConnect(&amqp.ConnOptions{SASLType: amqp.SASLTypeAnonymous()}, nil)
	s := newSession(t, c)
	cb := newCBS(t, s)
	if code, desc := cb.putToken(t, testHost+"/devices/dev1", token(t, "dev1", key, time.Now().Add(time.Hour))); code != 200 {
		t.Fatalf("put-token = %d %q", code, desc)
	}
	roundTrip(t, f, mustAttachMethods(t, s, "dev1"), `[1,2]`)
}

// MSSBCBS (the C SDK): go-amqp cannot offer it, so the SASL exchange is
// done by hand and go-amqp takes over after the outcome.
func TestSASLMSSBCBS(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	r := f.rawDial()
	r.write(headerSASL)
	if h := r.readHeader(); string(h) != string(headerSASL) {
		t.Fatalf("server header %q", h)
	}
	if _, ok := r.mustNext().body.(*saslMechanismsFrame); !ok {
		t.Fatal("no sasl-mechanisms")
	}
	r.frame(frameTypeSASL, 0, performative(descSASLInit, Symbol("MSSBCBS"), []byte{}), nil)
	if o, ok := r.mustNext().body.(*saslOutcomeFrame); !ok || o.code != saslOK {
		t.Fatalf("sasl-outcome %+v, want ok", o)
	}
	c, err := amqp.NewConn(ctxT(t), r.c, &amqp.ConnOptions{HostName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := newSession(t, c)
	cb := newCBS(t, s)
	if code, desc := cb.putToken(t, testHost+"/devices/dev1", token(t, "dev1", key, time.Now().Add(time.Hour))); code != 200 {
		t.Fatalf("put-token = %d %q", code, desc)
	}
	roundTrip(t, f, mustAttachMethods(t, s, "dev1"), `"x"`)
}

func TestSASLMechanismsOffered(t *testing.T) {
	f := newFixture(t)
	r := f.rawDial()
	r.write(headerSASL)
	r.readHeader()
	m, ok := r.mustNext().body.(*saslMechanismsFrame)
	if !ok || fmt.Sprint(m.mechanisms) != "[MSSBCBS ANONYMOUS PLAIN]" {
		t.Fatalf("sasl-mechanisms %+v", m)
	}
	// An unknown mechanism is refused with an outcome, not a dropped socket.
	r.frame(frameTypeSASL, 0, performative(descSASLInit, Symbol("EXTERNAL"), []byte{}), nil)
	if o, ok := r.mustNext().body.(*saslOutcomeFrame); !ok || o.code != saslAuth || len(o.data) == 0 {
		t.Fatalf("sasl-outcome %+v, want auth with a reason", o)
	}
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
		if _, err := attachMethods(t, s, "dev2", 1); remoteErr(err) == nil || remoteErr(err).Condition != amqp.ErrCondUnauthorizedAccess {
			t.Fatalf("attach for another device: %v, want unauthorized-access", err)
		}
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
				t.Fatal("connection accepted")
			}
			if !strings.Contains(err.Error(), "SASL PLAIN auth failed with code 0x1") {
				t.Fatalf("error %v, want a SASL auth failure", err)
			}
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
	exp := time.Now().Add(-auth.MaxClockSkew + 2*time.Second).Truncate(time.Second).Add(time.Second)
	c := f.mustConnect(&amqp.ConnOptions{SASLType: amqp.SASLTypePlain("dev1@sas."+hub, token(t, "dev1", key, exp))}, nil)
	mustAttachMethods(t, newSession(t, c), "dev1")
	f.waitOnline("dev1")
	select {
	case <-c.Done():
	case <-time.After(waitLong):
		t.Fatal("connection still open after its PLAIN token expired")
	}
	if e := remoteErr(c.Err()); e == nil || e.Condition != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("connection error %v, want unauthorized-access", c.Err())
	}
}

func TestModuleIdentity(t *testing.T) {
	f := newFixture(t)
	f.addDevice("edge1")
	key := f.addModule("edge1", "mod1")
	c := f.mustConnect(nil, nil)
	s := newSession(t, c)
	cb := newCBS(t, s)
	if code, desc := cb.putToken(t, testHost+"/devices/edge1/modules/mod1", token(t, "edge1/mod1", key, time.Now().Add(time.Hour))); code != 200 {
		t.Fatalf("put-token = %d %q", code, desc)
	}
	roundTrip(t, f, mustAttachMethods(t, s, "edge1/mod1"), `{}`)
	// The module's token does not cover its device.
	if _, err := attachMethods(t, s, "edge1", 1); remoteErr(err) == nil || remoteErr(err).Condition != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("attach for the device: %v, want unauthorized-access", err)
	}
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
		{"/devices/dev1/messages/devicebound", auth.Identity{}, nodeNone},
		{"/devices/dev1/modules/m1/twin/x", auth.Identity{}, nodeNone},
		{"/devices/d%zz/methods/devicebound", auth.Identity{}, nodeNone},
	} {
		id, node := parseIdentityAddress(tc.addr)
		if node != tc.node || id != tc.id {
			t.Errorf("parseIdentityAddress(%q) = %+v %v, want %+v %v", tc.addr, id, node, tc.id, tc.node)
		}
	}
	if !isCBSAddress("$cbs") || !isCBSAddress("/$CBS") || isCBSAddress("$cbsx") {
		t.Error("isCBSAddress")
	}
}

// Telemetry on /devices/{id}/messages/events reaches the engine, with
// the same authentication as the method links.
func TestTelemetry(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	c := f.mustConnect(nil, nil)
	s := newSession(t, c)
	if _, err := s.NewSender(ctxT(t), "/devices/dev1/messages/events", nil); remoteErr(err) == nil ||
		remoteErr(err).Condition != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("telemetry link without a token: %v, want unauthorized-access", err)
	}
	cb := newCBS(t, s)
	if code, _ := cb.putToken(t, testHost+"/devices/dev1", token(t, "dev1", key, time.Now().Add(time.Hour))); code != 200 {
		t.Fatal("put-token failed")
	}
	snd, err := s.NewSender(ctxT(t), "/devices/dev1/messages/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	ct, ce := "application/json", "utf-8"
	err = snd.Send(ctxT(t), &amqp.Message{
		Properties:            &amqp.MessageProperties{MessageID: "m-1", CorrelationID: uint64(9), ContentType: &ct, ContentEncoding: &ce},
		ApplicationProperties: map[string]any{"temp": "high", "n": int32(3)},
		Data:                  [][]byte{[]byte(`{"t":21.5}`)},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := f.e.WaitEvents(ctxT(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	ev := evs[0]
	if ev.Identity.DeviceID != "dev1" || ev.Protocol != "amqp" || string(ev.Body) != `{"t":21.5}` ||
		ev.MessageID != "m-1" || ev.CorrelationID != "9" || ev.ContentType != ct || ev.ContentEncoding != ce ||
		ev.Properties["temp"] != "high" || ev.Properties["n"] != "3" {
		t.Fatalf("event %+v", ev)
	}
	if err := snd.Send(ctxT(t), &amqp.Message{Value: "as amqp-value"}, nil); err != nil {
		t.Fatal(err)
	}
	if evs, err := f.e.WaitEvents(ctxT(t), 2); err != nil || string(evs[1].Body) != "as amqp-value" {
		t.Fatalf("second event: %v %v", evs, err)
	}
	// The hub does not send on the telemetry node.
	if _, err := s.NewReceiver(ctxT(t), "/devices/dev1/messages/events", nil); remoteErr(err) == nil ||
		remoteErr(err).Condition != amqp.ErrCondNotAllowed {
		t.Fatalf("receiver on the telemetry node: %v, want not-allowed", err)
	}
}

func TestLargePayloads(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	// A small client max-frame-size makes every message span many frames
	// in both directions.
	c := f.mustConnect(&amqp.ConnOptions{MaxFrameSize: 4096}, nil)
	s := newSession(t, c)
	cb := newCBS(t, s)
	if code, _ := cb.putToken(t, testHost+"/devices/dev1", token(t, "dev1", key, time.Now().Add(time.Hour))); code != 200 {
		t.Fatal("put-token failed")
	}
	d := mustAttachMethods(t, s, "dev1")
	f.waitOnline("dev1")
	big := `"` + strings.Repeat("a", engine.MaxPayload-2) + `"`
	call := f.invoke("dev1", "big", []byte(big), 10*time.Second)
	r := d.next(t)
	if string(r.payload) != big {
		t.Fatalf("request payload of %d bytes, want %d", len(r.payload), len(big))
	}
	resp := bytes.Repeat([]byte("b"), 200*1024)
	if err := d.respond(t, r.corr, int32(200), resp); err != nil {
		t.Fatal(err)
	}
	if res := waitInvoke(t, call); res.err != nil || !bytes.Equal(res.res.Payload, resp) {
		t.Fatalf("invoke: %v, payload %d bytes", res.err, len(res.res.Payload))
	}
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
		{"expired", "servicebus.windows.net:sastoken", testHost + "/devices/dev1", token(t, "dev1", key, time.Now().Add(-auth.MaxClockSkew-time.Minute)), 401},
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
			if code != tc.want {
				t.Fatalf("put-token = %d %q, want %d", code, desc, tc.want)
			}
			if desc == "" {
				t.Fatal("empty status-description")
			}
			if strings.Contains(desc, "sig=") {
				t.Fatalf("status-description leaks the token: %q", desc)
			}
		})
	}
}

func TestAttachRefused(t *testing.T) {
	f := newFixture(t)
	f.addDevice("dev1")
	c := f.mustConnect(nil, nil)
	s := newSession(t, c)
	_, err := attachMethods(t, s, "dev1", 1)
	e := remoteErr(err)
	if e == nil || e.Condition != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("attach without a token: %v, want amqp:unauthorized-access", err)
	}
	var desc struct {
		ErrorCode  int    `json:"errorCode"`
		Message    string `json:"message"`
		TrackingID string `json:"trackingId"`
	}
	if err := json.Unmarshal([]byte(e.Description), &desc); err != nil || desc.ErrorCode != 401002 || desc.TrackingID == "" || desc.Message == "" {
		t.Fatalf("description %q is not IoT Hub's JSON error (%v)", e.Description, err)
	}
	if e.Info["com.microsoft:tracking-id"] != desc.TrackingID {
		t.Fatalf("info %v lacks the tracking id", e.Info)
	}

	_, err = s.NewReceiver(ctxT(t), "/devices/dev1/messages/deviceBound", nil)
	if e := remoteErr(err); e == nil || e.Condition != amqp.ErrCondNotFound {
		t.Fatalf("attach to an unknown address: %v, want amqp:not-found", err)
	}
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
	soon := time.Now().Add(-auth.MaxClockSkew + 2*time.Second).Truncate(time.Second).Add(time.Second)
	for _, id := range []string{"dev1", "dev2"} {
		k := map[string]string{"dev1": key, "dev2": key2}[id]
		if code, desc := cb.putToken(t, testHost+"/devices/"+id, token(t, id, k, soon)); code != 200 {
			t.Fatalf("put-token %s = %d %q", id, code, desc)
		}
	}
	d1 := mustAttachMethods(t, s, "dev1")
	d2 := mustAttachMethods(t, s, "dev2")
	f.waitOnline("dev1")
	f.waitOnline("dev2")
	// Refresh dev2 only.
	if code, desc := cb.putToken(t, testHost+"/devices/dev2", token(t, "dev2", key2, time.Now().Add(time.Hour))); code != 200 {
		t.Fatalf("refresh = %d %q", code, desc)
	}
	_, err := d1.req.Receive(ctxT(t), nil)
	if e := remoteErr(err); e == nil || e.Condition != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("dev1 request link: %v, want detached with unauthorized-access", err)
	}
	if !strings.Contains(remoteErr(err).Description, `"errorCode":401002`) {
		t.Fatalf("description %q", remoteErr(err).Description)
	}
	time.Sleep(time.Until(soon) + 300*time.Millisecond)
	roundTrip(t, f, d2, `{"refreshed":true}`)
	if r := waitInvoke(t, f.invoke("dev1", "m", nil, 5*time.Second)); r.err == nil || r.err.Code != engine.CodeDeviceNotOnline {
		t.Fatalf("invoke on the expired identity: %v, want 404103", r.err)
	}
	// A new token lets the identity attach again on the same connection.
	if code, _ := cb.putToken(t, testHost+"/devices/dev1", token(t, "dev1", key, time.Now().Add(time.Hour))); code != 200 {
		t.Fatal("put-token after expiry failed")
	}
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
	if code, desc := cb.putToken(t, testHost, f.ownerToken(testHost, time.Now().Add(time.Hour))); code != 200 {
		t.Fatalf("put-token = %d %q", code, desc)
	}
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
			if code, _ := cb.putToken(t, testHost+"/devices/"+id, token(t, id, k, time.Now().Add(time.Hour))); code != 200 {
				t.Fatal("put-token failed")
			}
			ds[id] = mustAttachMethods(t, s, id)
		}
		return c, s, ds
	}
	c1, _, old := open("dev1", "dev2")
	f.waitOnline("dev1")
	_, _, newer := open("dev1")
	_, err := old["dev1"].req.Receive(ctxT(t), nil)
	if e := remoteErr(err); e == nil || e.Condition != amqp.ErrCondStolen || !strings.Contains(e.Description, `"errorCode":409002`) {
		t.Fatalf("old link: %v, want amqp:link:stolen with 409002 LinkCreationConflict", err)
	}
	roundTrip(t, f, newer["dev1"], `"new"`)
	// The other identity on the first connection is untouched.
	roundTrip(t, f, old["dev2"], `"other"`)
	select {
	case <-c1.Done():
		t.Fatalf("first connection closed: %v", c1.Err())
	default:
	}
}

func TestX509(t *testing.T) {
	f := newFixture(t)
	cert := pkitest.SelfSigned(t, "certdev")
	tp := auth.ComputeThumbprints(cert.Certificate[0]).SHA256
	if _, herr := f.e.PutDevice("certdev", engine.Device{Authentication: engine.Authentication{
		Type: engine.AuthSelfSigned, X509Thumbprint: engine.X509Thumbprint{PrimaryThumbprint: &tp},
	}}, ""); herr != nil {
		t.Fatal(herr)
	}
	c := f.mustConnect(nil, &cert)
	roundTrip(t, f, mustAttachMethods(t, newSession(t, c), "certdev"), `{"x509":true}`)

	wrong := pkitest.SelfSigned(t, "certdev")
	c2 := f.mustConnect(nil, &wrong)
	_, err := attachMethods(t, newSession(t, c2), "certdev", 1)
	if e := remoteErr(err); e == nil || e.Condition != amqp.ErrCondUnauthorizedAccess || !strings.Contains(e.Description, "humbprint") {
		t.Fatalf("wrong certificate: %v, want unauthorized-access about the thumbprint", err)
	}
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
	if code, _ := cb.putToken(t, testHost+"/devices/dev1", token(t, "dev1", key, time.Now().Add(time.Hour))); code != 200 {
		t.Fatal("put-token failed")
	}
	d, err := attachMethods(t, s, "dev1", -1) // manual credit, none issued
	if err != nil {
		t.Fatal(err)
	}
	f.waitOnline("dev1")
	var calls []<-chan invokeResult
	for i := 0; i < maxQueued; i++ {
		calls = append(calls, f.invoke("dev1", "m", []byte(fmt.Sprint(i)), 2*time.Second))
	}
	time.Sleep(200 * time.Millisecond) // let them queue
	r := waitInvoke(t, f.invoke("dev1", "m", nil, 2*time.Second))
	if r.err == nil || r.err.Code != engine.CodeDeviceNotOnline {
		t.Fatalf("call beyond the queue: %v, want 404103 (not a 504 after the response timeout)", r.err)
	}
	for _, ch := range calls {
		if r := waitInvoke(t, ch); r.err == nil || r.err.Code != engine.CodeGatewayTimeout {
			t.Fatalf("queued call: %v, want 504101", r.err)
		}
	}
	// Credit releases the queue (stale requests; their answers are dropped).
	if err := d.req.IssueCredit(100); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < maxQueued; i++ {
		m, err := d.req.Receive(ctxT(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		checkRequest(t, m)
		_ = d.req.AcceptMessage(ctxT(t), m)
	}
	call := f.invoke("dev1", "fresh", []byte(`1`), 10*time.Second)
	fresh := d.next(t)
	if err := d.respond(t, fresh.corr, int32(200), []byte(`2`)); err != nil {
		t.Fatal(err)
	}
	if r := waitInvoke(t, call); r.err != nil || string(r.res.Payload) != `2` {
		t.Fatalf("fresh call: %+v %v", r.res, r.err)
	}
}

// Malformed input ends only its own connection, with an AMQP close that
// says why.
func TestMalformedFrames(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	c := f.mustConnect(nil, nil)
	s := newSession(t, c)
	cb := newCBS(t, s)
	if code, _ := cb.putToken(t, testHost+"/devices/dev1", token(t, "dev1", key, time.Now().Add(time.Hour))); code != 200 {
		t.Fatal("put-token failed")
	}
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
			if e == nil || e.condition != tc.cond {
				t.Fatalf("close error %v, want %s", e, tc.cond)
			}
		})
	}
	t.Run("bad protocol header", func(t *testing.T) {
		r := f.rawDial()
		r.write([]byte("AMQP\x01\x01\x00\x00"))
		if h := r.readHeader(); string(h) != string(headerAMQP) {
			t.Fatalf("server answered %q, want its supported header", h)
		}
	})
	t.Run("http", func(t *testing.T) {
		r := f.rawDial()
		r.write([]byte("GET / HTTP/1.1\r\n\r\n"))
		if h := r.readHeader(); string(h) != string(headerAMQP) {
			t.Fatalf("server answered %q, want its supported header", h)
		}
	})
	t.Run("frame before open", func(t *testing.T) {
		r := f.rawDial()
		r.write(headerAMQP)
		r.readHeader()
		r.frame(frameTypeAMQP, 0, performative(descBegin, nil, uint32(0), uint32(10), uint32(10)), nil)
		if e := r.expectClose(); e == nil || e.condition != condFramingError {
			t.Fatalf("close error %v", e)
		}
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
				if e.err == nil || e.err.condition != condUnattachedHandle {
					t.Fatalf("end error %v", e.err)
				}
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
	if err != nil {
		tb.Fatal(err)
	}
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
			if dt.err == nil || dt.err.condition != condMessageSize {
				t.Fatalf("detach error %v, want %s", dt.err, condMessageSize)
			}
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
		t.Fatalf("quiet connection closed: %v", c.Err())
	default:
	}
	// A client that sends nothing is closed with resource-limit-exceeded.
	r := f.rawDial()
	r.open()
	if e := r.expectClose(); e == nil || e.condition != condResourceLimit {
		t.Fatalf("close error %v, want %s", e, condResourceLimit)
	}
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
	if err != nil {
		t.Fatal(err)
	}
	nc := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
	c, err := amqp.NewConn(ctx, nc, &amqp.ConnOptions{HostName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := newSession(t, c)
	cb := newCBS(t, s)
	if code, _ := cb.putToken(t, testHost+"/devices/wsdev", token(t, "wsdev", key, time.Now().Add(time.Hour))); code != 200 {
		t.Fatal("put-token failed")
	}
	roundTrip(t, f, mustAttachMethods(t, s, "wsdev"), `{"ws":true}`)
	calls := f.e.Calls()
	if p := calls[len(calls)-1].Protocol; p != "amqp-ws" {
		t.Fatalf("protocol = %q, want amqp-ws", p)
	}
}

// Close ends open connections with amqp:connection:forced.
func TestServerClose(t *testing.T) {
	if _, err := New(nil, nil); err == nil {
		t.Fatal("New(nil engine) did not fail")
	}
	f := newFixture(t)
	c := f.mustConnect(nil, nil)
	if err := f.srv.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-time.After(waitLong):
		t.Fatal("connection still open after Close")
	}
	if e := remoteErr(c.Err()); e == nil || e.Condition != amqp.ErrCondConnectionForced {
		t.Fatalf("connection error %v, want amqp:connection:forced", c.Err())
	}
	p1, p2 := net.Pipe()
	defer p2.Close()
	if err := f.srv.ServeConn(p1, ConnInfo{}); err != ErrServerClosed {
		t.Fatalf("ServeConn after Close = %v, want ErrServerClosed", err)
	}
	if err := f.srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
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
		if strings.Contains(out, secret) {
			t.Fatalf("log leaks %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "amqp cbs put-token") {
		t.Fatalf("log has no put-token events:\n%s", out)
	}
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
	if _, ok := r.mustNext().body.(*begin); !ok {
		t.Fatal("no begin")
	}
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
			t.Fatal("transfer sent into a closed session window")
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
		if tr.handle != 0 || tr.settled {
			t.Fatalf("reply transfer %+v", tr)
		}
		m, err := decodeMessage(fr.payload)
		if err != nil {
			t.Fatal(err)
		}
		if m.correlationID != uint64(42) {
			t.Fatalf("reply correlation-id %#v, want ulong 42", m.correlationID)
		}
		if v, _ := m.appProps.Get("status-code"); v != int32(200) {
			t.Fatalf("status-code %#v", v)
		}
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
		if !fl.drain || *fl.linkCredit != 0 || *fl.deliveryCount != 8 {
			t.Fatalf("drain answer: delivery-count %d credit %d drain %v, want 8 0 true", *fl.deliveryCount, *fl.linkCredit, fl.drain)
		}
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
		if code, _ := cb.putToken(t, testHost+"/devices/"+id, token(t, id, keys[id], time.Now().Add(time.Hour))); code != 200 {
			t.Fatal("put-token failed")
		}
		d := mustAttachMethods(t, s, id)
		f.waitOnline(id)
		return c, d
	}

	_, d := open("gone")
	if herr := f.e.DeleteDevice("gone", "*"); herr != nil {
		t.Fatal(herr)
	}
	_, err := d.req.Receive(ctxT(t), nil)
	if e := remoteErr(err); e == nil || e.Condition != amqp.ErrCondNotFound || !strings.Contains(e.Description, "404001") {
		t.Fatalf("deleted device's link: %v, want amqp:not-found with 404001", err)
	}

	c, d := open("revoked")
	f.e.ExpireTokens(ident("revoked"))
	_, err = d.req.Receive(ctxT(t), nil)
	if e := remoteErr(err); e == nil || e.Condition != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("revoked identity's link: %v, want amqp:unauthorized-access", err)
	}
	// The revoked token no longer attaches; the connection is still up.
	if _, err := attachMethods(t, newSession(t, c), "revoked", 1); remoteErr(err) == nil || remoteErr(err).Condition != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("attach with a revoked token: %v", err)
	}

	c, _ = open("dropped")
	if !f.e.DropConnection(ident("dropped")) {
		t.Fatal("DropConnection found no connection")
	}
	select {
	case <-c.Done():
	case <-time.After(waitLong):
		t.Fatal("connection survived DropConnection")
	}
	if e := remoteErr(c.Err()); e != nil {
		t.Fatalf("dropped connection got a close frame %v, want a bare drop", e)
	}
}

// TestUnauthenticatedConnectionIsClosed: a connection that authenticates
// no identity within authWait is closed with amqp:unauthorized-access,
// though it sends heartbeats; one that authenticated stays.
func TestUnauthenticatedConnectionIsClosed(t *testing.T) {
	f := newFixture(t, func(s *Server) { s.authWait = 300 * time.Millisecond })
	key := f.addDevice("dev1")
	authed := f.mustConnect(nil, nil)
	s := newSession(t, authed)
	if code, _ := newCBS(t, s).putToken(t, testHost+"/devices/dev1", token(t, "dev1", key, time.Now().Add(time.Hour))); code != 200 {
		t.Fatal("put-token failed")
	}
	d := mustAttachMethods(t, s, "dev1")

	idle := f.mustConnect(&amqp.ConnOptions{IdleTimeout: 10 * time.Second}, nil) // the hub heartbeats it
	newSession(t, idle)
	select {
	case <-idle.Done():
		var ce *amqp.ConnError
		if err := idle.Err(); !errors.As(err, &ce) || ce.RemoteErr == nil || ce.RemoteErr.Condition != amqp.ErrCondUnauthorizedAccess {
			t.Fatalf("closed with %v, want amqp:unauthorized-access", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("an unauthenticated connection is still open")
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
	if _, ok := r.mustNext().body.(*begin); !ok {
		t.Fatal("no begin")
	}
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
			t.Fatal("transfer sent into a closed session window")
		case *end:
			if p.err == nil || p.err.condition != condResourceLimit {
				t.Fatalf("session ended with %+v, want amqp:resource-limit-exceeded", p.err)
			}
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
		if req, err = appendValue(req, sec); err != nil {
			t.Fatal(err)
		}
	}
	return req
}
