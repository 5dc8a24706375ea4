package amqpd

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

// twinLinks is a client's twin link pair for one identity.
type twinLinks struct {
	id  string
	snd *amqp.Sender   // requests to the hub
	rcv *amqp.Receiver // answers and desired patches from the hub
}

func twinAddress(clientID string) string {
	dev, mod, ok := strings.Cut(clientID, "/")
	if ok {
		return "/devices/" + dev + "/modules/" + mod + "/twin"
	}
	return "/devices/" + dev + "/twin"
}

// twinProps are the attach properties the SDKs put on both twin links.
func twinProps() map[string]any {
	return map[string]any{
		"com.microsoft:api-version":            "2021-04-12",
		"com.microsoft:channel-correlation-id": "twin:" + newUUID().String(),
		"com.microsoft:client-version":         "amqpd-test/1.0",
	}
}

// attachTwin attaches the twin links as the SDKs do: sender then
// receiver, settled / first, the same properties on both (senderProps,
// if not nil, replace them on the sender).
func attachTwin(tb testing.TB, s *amqp.Session, addr string, senderProps map[string]any) (*twinLinks, error) {
	tb.Helper()
	ctx := ctxT(tb)
	props := twinProps()
	if senderProps == nil {
		senderProps = props
	}
	settled, first := amqp.SenderSettleModeSettled, amqp.ReceiverSettleModeFirst
	snd, err := s.NewSender(ctx, addr, &amqp.SenderOptions{Properties: senderProps, SettlementMode: &settled, RequestedReceiverSettleMode: &first})
	if err != nil {
		return nil, err
	}
	rcv, err := s.NewReceiver(ctx, addr, &amqp.ReceiverOptions{Properties: props, Credit: 10, SettlementMode: &first, RequestedSenderSettleMode: &settled})
	if err != nil {
		return nil, err
	}
	return &twinLinks{snd: snd, rcv: rcv}, nil
}

func mustAttachTwin(tb testing.TB, s *amqp.Session, clientID string) *twinLinks {
	tb.Helper()
	tl, err := attachTwin(tb, s, twinAddress(clientID), nil)
	require.NoError(tb, err, "attach twin links of %s", clientID)
	tl.id = clientID
	return tl
}

// deviceSession connects, begins a session and puts a token for clientID.
func (f *fixture) deviceSession(clientID, key string) (*amqp.Conn, *amqp.Session) {
	f.tb.Helper()
	c := f.mustConnect(nil, nil)
	s := newSession(f.tb, c)
	cb := newCBS(f.tb, s)
	code, desc := cb.putToken(f.tb, ident(clientID).Resource(), token(f.tb, clientID, key, time.Now().Add(time.Hour)))
	require.Equal(f.tb, int32(200), code, "put-token: %q", desc)
	return c, s
}

// twinMsg builds a twin request as the Node and C SDKs send it: string
// annotations, a string correlation-id, a data section.
func twinMsg(op, resource string, corr any, body string) *amqp.Message {
	ann := amqp.Annotations{"operation": op}
	if resource != "" {
		ann["resource"] = resource
	}
	m := &amqp.Message{Annotations: ann, Data: [][]byte{[]byte(body)}}
	if corr != nil {
		m.Properties = &amqp.MessageProperties{CorrelationID: corr}
	}
	return m
}

func (tl *twinLinks) send(tb testing.TB, m *amqp.Message) {
	tb.Helper()
	require.NoError(tb, tl.snd.Send(ctxT(tb), m, nil), "%s: send twin request", tl.id)
}

// next receives the hub's next twin message.
func (tl *twinLinks) next(tb testing.TB) *amqp.Message {
	tb.Helper()
	ctx := ctxT(tb)
	m, err := tl.rcv.Receive(ctx, nil)
	require.NoError(tb, err, "%s: receive twin message", tl.id)
	require.NoError(tb, tl.rcv.AcceptMessage(ctx, m))
	return m
}

// twinAnswer is an answer as a test reads it.
type twinAnswer struct {
	corr    any
	status  int32
	version any // nil if absent
	body    string
	msg     *amqp.Message
}

// answer receives the next message and checks it is an answer: a
// correlation-id and an int status annotation.
func (tl *twinLinks) answer(tb testing.TB) twinAnswer {
	tb.Helper()
	m := tl.next(tb)
	require.NotNil(tb, m.Properties, "answer has no properties")
	require.NotNil(tb, m.Properties.CorrelationID, "answer has no correlation-id")
	status, ok := m.Annotations["status"].(int32)
	require.True(tb, ok, "status annotation %#v is not an int", m.Annotations["status"])
	a := twinAnswer{corr: m.Properties.CorrelationID, status: status, version: m.Annotations["version"], msg: m}
	for _, d := range m.Data {
		a.body += string(d)
	}
	return a
}

// do sends a request with a fresh string correlation-id and returns the
// answer, checking the correlation-id came back.
func (tl *twinLinks) do(tb testing.TB, op, resource, body string) twinAnswer {
	tb.Helper()
	corr := newUUID().String()
	tl.send(tb, twinMsg(op, resource, corr, body))
	a := tl.answer(tb)
	require.Equal(tb, corr, a.corr, "answer correlation-id")
	return a
}

func (tl *twinLinks) get(tb testing.TB) (desired, reported map[string]any) {
	tb.Helper()
	a := tl.do(tb, "GET", "", " ")
	require.Equal(tb, int32(200), a.status, "GET: %s", a.body)
	var doc struct {
		Desired  map[string]any `json:"desired"`
		Reported map[string]any `json:"reported"`
	}
	require.NoError(tb, json.Unmarshal([]byte(a.body), &doc), "GET body %q", a.body)
	return doc.Desired, doc.Reported
}

// requireHubError checks a refusal: the status and IoT Hub's JSON error
// body with the code, {"message","errorCode","trackingId","details"}.
func requireHubError(tb testing.TB, a twinAnswer, status int32, code int) {
	tb.Helper()
	require.Equal(tb, status, a.status, "status (body %s)", a.body)
	var e struct {
		ErrorCode  int    `json:"errorCode"`
		Message    string `json:"message"`
		TrackingID string `json:"trackingId"`
	}
	require.NoError(tb, json.Unmarshal([]byte(a.body), &e), "error body %q", a.body)
	assert.Equal(tb, code, e.ErrorCode, "errorCode in %s", a.body)
	assert.NotEmpty(tb, e.Message, "message in %s", a.body)
	assert.NotEmpty(tb, e.TrackingID, "trackingId in %s", a.body)
	assert.Contains(tb, a.body, `"details":null`)
}

const desiredResource = "/notifications/twin/properties/desired"

// GET answers 200 with the device's view of the twin; PATCH answers 204
// with the new reported version as a long annotation; null deletes.
func TestTwinGetAndPatch(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	_, s := f.deviceSession("dev1", key)
	tl := mustAttachTwin(t, s, "dev1")

	a := tl.do(t, "GET", "", " ")
	require.Equal(t, int32(200), a.status)
	assert.Nil(t, a.version, "a GET answer has no version")
	assert.JSONEq(t, `{"desired":{"$version":1},"reported":{"$version":1}}`, a.body)

	for i, patch := range []string{`{"temp":21,"fw":{"v":"1.0","ok":true}}`, `{"temp":22}`, `{"fw":{"ok":null}}`, `{"temp":null}`} {
		a := tl.do(t, "PATCH", "/properties/reported", patch)
		require.Equal(t, int32(204), a.status, "PATCH %s: %s", patch, a.body)
		assert.Empty(t, a.msg.Data, "a PATCH answer has no body")
		assert.Equal(t, int64(i+2), a.version, "PATCH %s: version annotation (a long)", patch)
	}
	_, reported := tl.get(t)
	assert.Equal(t, map[string]any{"fw": map[string]any{"v": "1.0"}, "$version": float64(5)}, reported)
	tw, herr := f.e.GetTwin("dev1", "")
	require.Nil(t, herr)
	assert.Contains(t, string(tw.Properties), `"fw":{"v":"1.0"}`)
}

// The hub accepts the request shapes of every SDK: a body of " ",
// none at all (.NET) or an amqp-value; symbol annotations; an operation
// in another case; correlation-ids of every id type, echoed as they came.
func TestTwinRequestShapes(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	_, s := f.deviceSession("dev1", key)
	tl := mustAttachTwin(t, s, "dev1")

	corrs := []any{"Get" + newUUID().String(), amqp.UUID(newUUID()), uint64(42), []byte{1, 2, 3}}
	for _, corr := range corrs {
		tl.send(t, twinMsg("GET", "", corr, " "))
		a := tl.answer(t)
		assert.Equal(t, int32(200), a.status)
		assert.True(t, sameID(corr, a.corr), "correlation-id %#v echoed as %#v", corr, a.corr)
	}
	// No body, symbol annotation values, lower case.
	tl.send(t, &amqp.Message{
		Annotations: amqp.Annotations{"operation": amqp.Symbol("get")},
		Properties:  &amqp.MessageProperties{CorrelationID: "c1"},
	})
	a := tl.answer(t)
	assert.Equal(t, int32(200), a.status)
	assert.Equal(t, "c1", a.corr)
	// An amqp-value body for PATCH.
	tl.send(t, &amqp.Message{
		Annotations: amqp.Annotations{"operation": "PATCH", "resource": "/properties/reported", "version": nil},
		Properties:  &amqp.MessageProperties{CorrelationID: "c2"},
		Value:       `{"v":1}`,
	})
	a = tl.answer(t)
	assert.Equal(t, int32(204), a.status, a.body)
	// PUT with no body (.NET).
	tl.send(t, &amqp.Message{
		Annotations: amqp.Annotations{"operation": "PUT", "resource": desiredResource},
		Properties:  &amqp.MessageProperties{CorrelationID: "c3"},
	})
	a = tl.answer(t)
	assert.Equal(t, int32(200), a.status, a.body)
	assert.Equal(t, "c3", a.corr)
}

// Requests IoT Hub refuses are answered with 400 and its JSON error; a
// refused patch changes nothing. A request without a correlation-id is
// dropped, and the links stay usable.
func TestTwinRefusals(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	_, s := f.deviceSession("dev1", key)
	tl := mustAttachTwin(t, s, "dev1")

	for _, tc := range []struct{ name, op, resource, body string }{
		{"no operation", "", "", " "},
		{"unknown operation", "POST", "/properties/reported", "{}"},
		{"PATCH of desired", "PATCH", "/properties/desired", `{"a":1}`},
		{"PATCH without resource", "PATCH", "", `{"a":1}`},
		{"PUT elsewhere", "PUT", "/properties/desired", " "},
		{"DELETE elsewhere", "DELETE", "/notifications/twin/properties/reported", " "},
		{"not JSON", "PATCH", "/properties/reported", `{"a":`},
		{"not an object", "PATCH", "/properties/reported", `[1]`},
		{"dollar key", "PATCH", "/properties/reported", `{"$a":1,"b":2}`},
		{"dot key", "PATCH", "/properties/reported", `{"a.b":1}`},
		{"empty body", "PATCH", "/properties/reported", ``},
	} {
		t.Run(tc.name, func(t *testing.T) {
			corr := newUUID().String()
			m := twinMsg(tc.op, tc.resource, corr, tc.body)
			if tc.op == "" {
				m.Annotations = amqp.Annotations{"resource": "/properties/reported"}
			}
			tl.send(t, m)
			a := tl.answer(t)
			assert.Equal(t, corr, a.corr)
			requireHubError(t, a, 400, engine.CodeArgumentInvalid)
		})
	}
	// Not even the good key of a refused patch is stored.
	_, reported := tl.get(t)
	assert.Equal(t, map[string]any{"$version": float64(1)}, reported)

	// A patch without a correlation-id is neither carried out nor answered.
	tl.send(t, twinMsg("PATCH", "/properties/reported", nil, `{"lost":true}`))
	_, reported = tl.get(t)
	assert.Equal(t, map[string]any{"$version": float64(1)}, reported)

	// The size limit: 403100 DeviceModelMaxPropertiesExceeded.
	big := `{"a":"` + strings.Repeat("x", 4000) + `"`
	for i := 0; i < 9; i++ {
		big += `,"k` + string(rune('0'+i)) + `":"` + strings.Repeat("y", 4000) + `"`
	}
	a := tl.do(t, "PATCH", "/properties/reported", big+"}")
	requireHubError(t, a, 403, engine.CodeDeviceModelMaxPropertiesExceeded)
}

// PUT subscribes to desired patches: each service update is pushed in
// version order, without a correlation-id, with resource and version
// annotations and "$version" in the body; DELETE unsubscribes.
func TestTwinDesiredNotifications(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	_, s := f.deviceSession("dev1", key)
	tl := mustAttachTwin(t, s, "dev1")

	// Before the PUT, nothing is pushed.
	_, herr := f.e.UpdateTwin("dev1", "", []byte(`{"properties":{"desired":{"before":1}}}`), "")
	require.Nil(t, herr)
	a := tl.do(t, "PUT", desiredResource, " ")
	require.Equal(t, int32(200), a.status, a.body)
	assert.Empty(t, a.msg.Data, "a PUT answer has no body")
	a = tl.do(t, "PUT", desiredResource, " ") // again: .NET sends it before every operation
	require.Equal(t, int32(200), a.status, a.body)

	const n = 20
	for i := 1; i <= n; i++ {
		_, herr := f.e.UpdateTwin("dev1", "", []byte(`{"properties":{"desired":{"n":`+strconv.Itoa(i)+`,"before":null}}}`), "")
		require.Nil(t, herr)
	}
	for i := 1; i <= n; i++ {
		m := tl.next(t)
		if m.Properties != nil {
			assert.Nil(t, m.Properties.CorrelationID, "a desired patch has no correlation-id")
		}
		assert.Equal(t, "/properties/desired", m.Annotations["resource"], "resource annotation")
		assert.Equal(t, int64(i+2), m.Annotations["version"], "version annotation (a long)")
		require.Len(t, m.Data, 1)
		var body map[string]any
		require.NoError(t, json.Unmarshal(m.Data[0], &body), "body %q", m.Data[0])
		// A patch carries its nulls.
		assert.Equal(t, map[string]any{"n": float64(i), "before": nil, "$version": float64(i + 2)}, body, "patch %d", i)
	}

	a = tl.do(t, "DELETE", desiredResource, " ")
	require.Equal(t, int32(200), a.status, a.body)
	_, herr = f.e.UpdateTwin("dev1", "", []byte(`{"properties":{"desired":{"after":1}}}`), "")
	require.Nil(t, herr)
	// The next message is the GET's answer: nothing was pushed.
	desired, _ := tl.get(t)
	assert.Equal(t, float64(1), desired["after"])
}

// A detached twin link ends the desired subscription: a new pair must
// PUT again.
func TestTwinDetachEndsSubscription(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	_, s := f.deviceSession("dev1", key)
	tl := mustAttachTwin(t, s, "dev1")
	require.Equal(t, int32(200), tl.do(t, "PUT", desiredResource, " ").status)
	require.NoError(t, tl.rcv.Close(ctxT(t)))
	require.NoError(t, tl.snd.Close(ctxT(t)))

	tl = mustAttachTwin(t, s, "dev1")
	_, herr := f.e.UpdateTwin("dev1", "", []byte(`{"properties":{"desired":{"x":1}}}`), "")
	require.Nil(t, herr)
	desired, _ := tl.get(t) // the first message is the GET's answer
	assert.Equal(t, float64(1), desired["x"])
	require.Equal(t, int32(200), tl.do(t, "PUT", desiredResource, " ").status)
	_, herr = f.e.UpdateTwin("dev1", "", []byte(`{"properties":{"desired":{"x":2}}}`), "")
	require.Nil(t, herr)
	m := tl.next(t)
	assert.Equal(t, int64(3), m.Annotations["version"])
}

// A newer twin link pair of the identity replaces the older one, which is
// detached with amqp:link:stolen.
func TestTwinLinksReplaced(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	_, s := f.deviceSession("dev1", key)
	old := mustAttachTwin(t, s, "dev1")
	tl := mustAttachTwin(t, s, "dev1")
	_, err := old.rcv.Receive(ctxT(t), nil)
	requireCondition(t, err, amqp.ErrCondStolen, "old twin receiver: %v", err)
	tl.get(t)
}

// Module twins live on /devices/{id}/modules/{mid}/twin, in the C and
// .NET spellings too; a twin link of an identity the connection has no
// token for is refused.
func TestModuleTwin(t *testing.T) {
	f := newFixture(t)
	f.addDevice("edge1")
	key := f.addModule("edge1", "mod1")
	_, s := f.deviceSession("edge1/mod1", key)
	tl, err := attachTwin(t, s, "amqps://"+testHost+":5671/devices/edge1/modules/mod1/twin", nil)
	require.NoError(t, err)
	tl.id = "edge1/mod1"
	a := tl.do(t, "PATCH", "/properties/reported", `{"m":1}`)
	require.Equal(t, int32(204), a.status, a.body)
	tw, herr := f.e.GetTwin("edge1", "mod1")
	require.Nil(t, herr)
	assert.Contains(t, string(tw.Properties), `"m":1`)
	dtw, herr := f.e.GetTwin("edge1", "")
	require.Nil(t, herr)
	assert.NotContains(t, string(dtw.Properties), `"m":1`, "the device twin is another twin")

	_, err = attachTwin(t, s, twinAddress("edge1"), nil)
	requireCondition(t, err, amqp.ErrCondUnauthorizedAccess, "twin link of the device on the module's connection: %v", err)
	_, err = attachTwin(t, s, twinAddress("other"), nil)
	requireCondition(t, err, amqp.ErrCondUnauthorizedAccess, "twin link of another device: %v", err)
}

// The model id in the attach properties of a device's sending link is
// the twin's modelId.
func TestTwinModelID(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("pnp")
	_, s := f.deviceSession("pnp", key)
	props := twinProps()
	props["com.microsoft:model-id"] = "dtmi:com:example:Thermostat;1"
	tl, err := attachTwin(t, s, twinAddress("pnp"), props)
	require.NoError(t, err)
	tl.id = "pnp"
	tw, herr := f.e.GetTwin("pnp", "")
	require.Nil(t, herr)
	assert.Equal(t, "dtmi:com:example:Thermostat;1", tw.ModelID)

	// On a telemetry link, as the .NET SDK sends it first.
	key2 := f.addDevice("pnp2")
	_, s2 := f.deviceSession("pnp2", key2)
	_, err = s2.NewSender(ctxT(t), "/devices/pnp2/messages/events", &amqp.SenderOptions{
		Properties: map[string]any{"com.microsoft:model-id": "dtmi:com:example:Other;2"},
	})
	require.NoError(t, err)
	tw, herr = f.e.GetTwin("pnp2", "")
	require.Nil(t, herr)
	assert.Equal(t, "dtmi:com:example:Other;2", tw.ModelID)
}

// Methods and twins share one connection, session and identity.
func TestTwinWithMethods(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	_, s := f.deviceSession("dev1", key)
	d := mustAttachMethods(t, s, "dev1")
	tl := mustAttachTwin(t, s, "dev1")
	f.waitOnline("dev1")

	// Twin requests from another goroutine while methods run here; the
	// goroutine reports instead of failing the test.
	ctx := ctxT(t)
	twinErr := make(chan error, 1)
	go func() {
		for i := 0; i < 5; i++ {
			corr := newUUID().String()
			if err := tl.snd.Send(ctx, twinMsg("PATCH", "/properties/reported", corr, `{"i":`+strconv.Itoa(i)+`}`), nil); err != nil {
				twinErr <- err
				return
			}
			m, err := tl.rcv.Receive(ctx, nil)
			if err != nil {
				twinErr <- err
				return
			}
			if m.Properties == nil || m.Properties.CorrelationID != corr || m.Annotations["status"] != int32(204) {
				twinErr <- fmt.Errorf("PATCH %d answered %+v %v", i, m.Properties, m.Annotations)
				return
			}
		}
		twinErr <- nil
	}()
	for i := 0; i < 5; i++ {
		roundTrip(t, f, d, `{}`)
	}
	select {
	case err := <-twinErr:
		require.NoError(t, err)
	case <-ctx.Done():
		require.FailNow(t, "the twin requests did not finish")
	}
	tw, herr := f.e.GetTwin("dev1", "")
	require.Nil(t, herr)
	assert.Contains(t, string(tw.Properties), `"i":4`)
	// Detaching the twin links leaves the device subscribed to methods.
	require.NoError(t, tl.rcv.Close(ctxT(t)))
	roundTrip(t, f, d, `{}`)
}

func TestTwinAddressSpellings(t *testing.T) {
	for _, tc := range []struct {
		addr string
		id   auth.Identity
		node int
	}{
		{"/devices/dev1/twin", auth.Identity{DeviceID: "dev1"}, nodeTwin},
		{"amqps://" + testHost + "/devices/dev1/twin", auth.Identity{DeviceID: "dev1"}, nodeTwin},
		{"amqps://" + testHost + ":5671/devices/d%231/modules/m%2F1/Twin", auth.Identity{DeviceID: "d#1", ModuleID: "m/1"}, nodeTwin},
		{"/devices/modules/twin", auth.Identity{DeviceID: "modules"}, nodeTwin},
		{"/devices/dev1/modules/twin", auth.Identity{}, nodeNone},
		{"/devices/dev1/modules//twin", auth.Identity{}, nodeNone},
		{"/devices//twin", auth.Identity{}, nodeNone},
		{"/devices/dev1/twins", auth.Identity{}, nodeNone},
		{"/devices/dev1/twin/x", auth.Identity{}, nodeNone},
		{"/devices/dev1/modules/m1/methods/devicebound", auth.Identity{DeviceID: "dev1", ModuleID: "m1"}, nodeMethods},
	} {
		id, node := parseIdentityAddress(tc.addr)
		assert.Equal(t, tc.node, node, "parseIdentityAddress(%q): node", tc.addr)
		assert.Equal(t, tc.id, id, "parseIdentityAddress(%q): identity", tc.addr)
	}
}

// twinRequestSeeds are encoded twin requests of every SDK's shape, and
// broken ones.
func twinRequestSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	enc := func(ann Map, corr any, body []any) []byte {
		var b []byte
		var err error
		if ann != nil {
			b, err = appendValue(b, Described{Descriptor: uint64(descMessageAnnotations), Value: ann})
			require.NoError(tb, err)
		}
		if corr != nil {
			b, err = appendValue(b, performative(descProperties, nil, nil, nil, nil, nil, corr))
			require.NoError(tb, err)
		}
		for _, sec := range body {
			b, err = appendValue(b, sec)
			require.NoError(tb, err)
		}
		return b
	}
	data := func(s string) any { return Described{Descriptor: uint64(descData), Value: []byte(s)} }
	op := func(o, r string) Map {
		m := Map{{Key: Symbol("operation"), Value: o}}
		if r != "" {
			m = append(m, MapEntry{Key: Symbol("resource"), Value: r})
		}
		return m
	}
	return [][]byte{
		enc(op("GET", ""), "c1", []any{data(" ")}),
		enc(op("GET", ""), newUUID(), nil),
		enc(op("PATCH", "/properties/reported"), "c2", []any{data(`{"a":1}`)}),
		enc(append(op("PATCH", "/properties/reported"), MapEntry{Key: Symbol("version"), Value: nil}), uint64(7), []any{data(`{"a":`), data(`null}`)}),
		enc(op("PUT", desiredResource), []byte{1, 2}, nil),
		enc(op("DELETE", desiredResource), "c3", []any{Described{Descriptor: uint64(descAMQPValue), Value: " "}}),
		enc(Map{{Key: Symbol("operation"), Value: int32(1)}}, "c4", nil),
		enc(Map{{Key: "operation", Value: Symbol("patch")}, {Key: "resource", Value: int64(3)}}, "c5", nil),
		enc(nil, "c6", []any{data("{}")}),
		enc(op("POST", "/x"), nil, nil),
	}
}

// FuzzTwinRequest feeds the hub's twin request parsing arbitrary message
// payloads: it never panics, a request it accepts has a known operation
// (and PATCH its resource), and the answer to any correlation-id it
// admits encodes and decodes back to the same id.
func FuzzTwinRequest(f *testing.F) {
	for _, s := range twinRequestSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		m, err := decodeMessage(payload)
		if err != nil {
			return
		}
		req, herr := parseTwinRequest(m)
		if herr == nil {
			require.Contains(t, []string{opGet, opPatch, opPut, opDelete}, req.op)
		} else {
			require.Equal(t, 400, herr.Status)
		}
		if req.corr == nil {
			return
		}
		ans := outMessage{correlationID: req.corr, annotations: Map{{Key: Symbol(annStatus), Value: int32(200)}}}
		enc, err := ans.encode()
		require.NoError(t, err, "encoding an answer to %#v", req.corr)
		back, err := decodeMessage(enc)
		require.NoError(t, err)
		require.True(t, sameID(req.corr, back.correlationID) || keyEqual(req.corr, back.correlationID),
			"correlation-id %#v came back as %#v", req.corr, back.correlationID)
	})
}

// The seeds parse as intended.
func TestParseTwinRequest(t *testing.T) {
	seeds := twinRequestSeeds(t)
	want := []struct {
		op   string
		body string
		ok   bool
	}{
		{opGet, " ", true}, {opGet, "", true}, {opPatch, `{"a":1}`, true}, {opPatch, `{"a":null}`, true},
		{opPut, "", true}, {opDelete, " ", true}, {"", "", false}, {"", "", false}, {"", "{}", false}, {"", "", false},
	}
	require.Len(t, seeds, len(want))
	for i, s := range seeds {
		m, err := decodeMessage(s)
		require.NoError(t, err, "seed %d", i)
		req, herr := parseTwinRequest(m)
		assert.Equal(t, want[i].ok, herr == nil, "seed %d: %v", i, herr)
		assert.Equal(t, want[i].op, req.op, "seed %d", i)
		assert.Equal(t, want[i].body, string(req.body), "seed %d", i)
	}
}
