package amqpd

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

// c2dFixture is a hub whose feedback batches hold one record each, so
// that a batch is ready as soon as an outcome happens.
func c2dFixture(t *testing.T, c2d engine.C2DConfig) *fixture {
	t.Helper()
	if c2d.FeedbackBatchMax == 0 {
		c2d.FeedbackBatchMax = 1
	}
	return newFixtureConfig(t, engine.Config{HostName: testHost, Logger: testLogger(), C2D: c2d})
}

// deviceConn connects and puts a device token for id.
func (f *fixture) deviceConn(t *testing.T, id, key string) *amqp.Session {
	t.Helper()
	s := newSession(t, f.mustConnect(nil, nil))
	code, desc := newCBS(t, s).putToken(t, ident(id).Resource(), token(t, id, key, time.Now().Add(time.Hour)))
	require.Equal(t, int32(200), code, "device put-token: %s", desc)
	return s
}

// policyToken signs a hub-scoped token of a policy.
func (f *fixture) policyToken(policy string) string {
	f.tb.Helper()
	p, ok := f.e.Policy(policy)
	require.True(f.tb, ok, "policy %s", policy)
	tok, err := auth.SignSAS(testHost, p.Name, p.PrimaryKey, time.Now().Add(time.Hour))
	require.NoError(f.tb, err)
	return tok
}

// serviceConn connects and puts a hub-scoped token of a policy with the
// audience the .NET service SDK uses.
func (f *fixture) serviceConn(t *testing.T, policy string) *amqp.Session {
	t.Helper()
	s := newSession(t, f.mustConnect(nil, nil))
	code, desc := newCBS(t, s).putTokenWith(t, newUUID().String(), "servicebus.windows.net:sastoken",
		"amqps://"+testHost+":5671/", f.policyToken(policy))
	require.Equal(t, int32(200), code, "service put-token: %s", desc)
	return s
}

func c2dReceiver(t *testing.T, s *amqp.Session, addr string, mode amqp.ReceiverSettleMode, credit int32) *amqp.Receiver {
	t.Helper()
	r, err := s.NewReceiver(ctxT(t), addr, &amqp.ReceiverOptions{Credit: credit, SettlementMode: &mode})
	require.NoError(t, err, "attach %s", addr)
	return r
}

func (f *fixture) enqueue(t *testing.T, dev string, m engine.C2DMessage) engine.C2DMessage {
	t.Helper()
	q, herr := f.e.EnqueueC2D(dev, m)
	require.Nil(t, herr, "EnqueueC2D")
	return q
}

func receive(t *testing.T, r *amqp.Receiver) *amqp.Message {
	t.Helper()
	m, err := r.Receive(ctxT(t), nil)
	require.NoError(t, err, "receive")
	return m
}

func ann(m *amqp.Message, name string) any {
	if v, ok := m.Annotations[amqp.Symbol(name)]; ok {
		return v
	}
	return m.Annotations[name]
}

// A message queued for a device reaches its devicebound link with the
// properties, annotations and delivery tag the SDKs read; accepting it
// completes it in the engine and makes a feedback record.
func TestC2DDelivery(t *testing.T) {
	f := c2dFixture(t, engine.C2DConfig{})
	key := f.addDevice("dev1")
	exp := time.Now().Add(10 * time.Minute).Truncate(time.Millisecond)
	q := f.enqueue(t, "dev1", engine.C2DMessage{
		MessageID: "mid-1", CorrelationID: "cid-1", UserID: "svc", To: "/devices/dev1/messages/deviceBound",
		ContentType: "text/plain", ContentEncoding: "utf-8", Ack: "full", ExpiryTime: exp,
		Properties: map[string]string{"k": "v", "z": ""}, Body: []byte("hello"),
	})
	s := f.deviceConn(t, "dev1", key)
	r := c2dReceiver(t, s, "amqps://"+testHost+":5671/devices/dev1/messages/deviceBound", amqp.ReceiverSettleModeSecond, 5)
	m := receive(t, r)

	assert.Len(t, m.DeliveryTag, 16, "delivery tag (a GUID)")
	require.NotNil(t, m.Properties)
	assert.Equal(t, "mid-1", m.Properties.MessageID)
	assert.Equal(t, "cid-1", m.Properties.CorrelationID)
	assert.Equal(t, []byte("svc"), m.Properties.UserID)
	assert.Equal(t, "/devices/dev1/messages/deviceBound", *m.Properties.To)
	assert.Equal(t, "text/plain", *m.Properties.ContentType)
	assert.Equal(t, "utf-8", *m.Properties.ContentEncoding)
	require.NotNil(t, m.Properties.AbsoluteExpiryTime)
	assert.True(t, exp.Equal(*m.Properties.AbsoluteExpiryTime), "absolute-expiry-time %v, want %v", *m.Properties.AbsoluteExpiryTime, exp)
	assert.Equal(t, map[string]any{"iothub-ack": "full", "k": "v", "z": ""}, m.ApplicationProperties)
	assert.Equal(t, [][]byte{[]byte("hello")}, m.Data)
	et, ok := ann(m, annEnqueuedTime).(time.Time)
	require.True(t, ok, "iothub-enqueuedtime %#v is not a timestamp", ann(m, annEnqueuedTime))
	assert.True(t, q.EnqueuedTime.Truncate(time.Millisecond).Equal(et), "iothub-enqueuedtime %v, want %v", et, q.EnqueuedTime)
	assert.Equal(t, uint8(0), ann(m, annDeliveryCount), "iothub-deliverycount is a ubyte")
	assert.Equal(t, uint64(q.SequenceNumber), ann(m, annSequenceNumber), "x-opt-sequence-number is a ulong")

	queued := f.e.C2DQueue("dev1")
	require.Len(t, queued, 1)
	assert.True(t, queued[0].Locked, "a delivered message is locked")

	require.NoError(t, r.AcceptMessage(ctxT(t), m), "accept (the hub settles in mode second)")
	assert.Empty(t, f.e.C2DQueue("dev1"), "completed")
	b, ok := f.e.ReceiveFeedback()
	require.True(t, ok, "feedback batch")
	require.Len(t, b.Records, 1)
	assert.Equal(t, "Success", b.Records[0].StatusCode)
	assert.Equal(t, "mid-1", b.Records[0].OriginalMessageID)
}

// rejected dead-letters, released and modified abandon (delivery count
// +1, redelivered), and a settlement after the lock expired is answered
// with com.microsoft:message-lock-lost.
func TestC2DSettleOutcomes(t *testing.T) {
	f := c2dFixture(t, engine.C2DConfig{})
	key := f.addDevice("dev1")
	s := f.deviceConn(t, "dev1", key)
	r := c2dReceiver(t, s, "/devices/dev1/messages/devicebound", amqp.ReceiverSettleModeSecond, 1)
	ctx := ctxT(t)

	f.enqueue(t, "dev1", engine.C2DMessage{MessageID: "a", Ack: "negative"})
	m := receive(t, r)
	require.NoError(t, r.RejectMessage(ctx, m, nil))
	assert.Empty(t, f.e.C2DQueue("dev1"), "rejected: dead-lettered")
	b, ok := f.e.ReceiveFeedback()
	require.True(t, ok)
	assert.Equal(t, "Rejected", b.Records[0].StatusCode)

	f.enqueue(t, "dev1", engine.C2DMessage{MessageID: "b"})
	m = receive(t, r)
	require.NoError(t, r.ReleaseMessage(ctx, m))
	m = receive(t, r)
	assert.Equal(t, "b", m.Properties.MessageID, "released: delivered again")
	assert.Equal(t, uint8(1), ann(m, annDeliveryCount), "one earlier delivery")
	require.NotNil(t, m.Header)
	assert.Equal(t, uint32(1), m.Header.DeliveryCount, "header delivery-count")
	require.NoError(t, r.ModifyMessage(ctx, m, nil))
	m = receive(t, r)
	assert.Equal(t, uint8(2), ann(m, annDeliveryCount), "modified abandons too")

	// The lock expires: the settlement is refused, the message comes again.
	f.e.AdvanceJobClock(2 * time.Minute)
	err := r.AcceptMessage(ctx, m)
	e := requireCondition(t, err, amqp.ErrCond(condLockLost), "accept after the lock expired: %v", err)
	assert.Contains(t, e.Description, "412002")
	m = receive(t, r)
	assert.Equal(t, "b", m.Properties.MessageID, "delivered again after the lock expired")
	assert.Equal(t, uint8(2), ann(m, annDeliveryCount), "an expired lock does not count")
	require.NoError(t, r.AcceptMessage(ctx, m))
	assert.Empty(t, f.e.C2DQueue("dev1"))
}

// A device in rcv-settle-mode first (C, Node) settles alone; the hub
// completes the message.
func TestC2DSettleModeFirst(t *testing.T) {
	f := c2dFixture(t, engine.C2DConfig{})
	key := f.addDevice("dev1")
	s := f.deviceConn(t, "dev1", key)
	r := c2dReceiver(t, s, "/devices/dev1/messages/devicebound", amqp.ReceiverSettleModeFirst, 10)
	f.enqueue(t, "dev1", engine.C2DMessage{MessageID: "a"})
	m := receive(t, r)
	require.NoError(t, r.AcceptMessage(ctxT(t), m))
	require.Eventually(t, func() bool { return len(f.e.C2DQueue("dev1")) == 0 }, waitLong, 5*time.Millisecond, "completed")
}

// Unsettled messages go back to the queue, delivery count unchanged, when
// the link detaches or the connection ends; a later link gets them.
func TestC2DRedeliveryAfterDetachAndOffline(t *testing.T) {
	f := c2dFixture(t, engine.C2DConfig{})
	key := f.addDevice("dev1")
	// Queued while the device is offline.
	f.enqueue(t, "dev1", engine.C2DMessage{MessageID: "a"})
	f.enqueue(t, "dev1", engine.C2DMessage{MessageID: "b"})

	s := f.deviceConn(t, "dev1", key)
	r := c2dReceiver(t, s, "/devices/dev1/messages/devicebound", amqp.ReceiverSettleModeSecond, 5)
	assert.Equal(t, "a", receive(t, r).Properties.MessageID)
	assert.Equal(t, "b", receive(t, r).Properties.MessageID)
	require.NoError(t, r.Close(ctxT(t)), "detach with two unsettled")
	for _, q := range f.e.C2DQueue("dev1") {
		assert.False(t, q.Locked, "%s released at detach", q.MessageID)
		assert.Equal(t, 0, q.DeliveryCount, "%s: a release does not count", q.MessageID)
	}

	r = c2dReceiver(t, s, "/devices/dev1/messages/devicebound", amqp.ReceiverSettleModeSecond, 5)
	m := receive(t, r)
	assert.Equal(t, "a", m.Properties.MessageID)
	assert.Equal(t, uint8(0), ann(m, annDeliveryCount))
	require.NoError(t, r.AcceptMessage(ctxT(t), m))
	assert.Equal(t, "b", receive(t, r).Properties.MessageID)

	// A message sent while the link waits with credit is delivered at once.
	f.enqueue(t, "dev1", engine.C2DMessage{MessageID: "c"})
	assert.Equal(t, "c", receive(t, r).Properties.MessageID)

	// The connection ends with b and c unsettled.
	require.NoError(t, s.Close(ctxT(t)))
	require.Eventually(t, func() bool {
		q := f.e.C2DQueue("dev1")
		return len(q) == 2 && !q[0].Locked && !q[1].Locked
	}, waitLong, 5*time.Millisecond, "released when the session ended")
	s2 := f.deviceConn(t, "dev1", key)
	r = c2dReceiver(t, s2, "/devices/dev1/messages/devicebound", amqp.ReceiverSettleModeSecond, 5)
	assert.Equal(t, "b", receive(t, r).Properties.MessageID)
	assert.Equal(t, "c", receive(t, r).Properties.MessageID)
}

// Modules have no cloud-to-device link; a device cannot send on it; a
// device token does not open another device's link.
func TestC2DAttachRefused(t *testing.T) {
	f := c2dFixture(t, engine.C2DConfig{})
	key := f.addDevice("dev1")
	f.addDevice("dev2")
	mkey := f.addModule("dev1", "m1")
	s := f.deviceConn(t, "dev1", key)
	_, err := s.NewSender(ctxT(t), "/devices/dev1/messages/devicebound", nil)
	requireCondition(t, err, amqp.ErrCondNotAllowed, "device sender on devicebound: %v", err)
	_, err = s.NewReceiver(ctxT(t), "/devices/dev2/messages/devicebound", nil)
	requireCondition(t, err, amqp.ErrCondUnauthorizedAccess, "another device's link: %v", err)

	ms := f.deviceConn(t, "dev1/m1", mkey)
	_, err = ms.NewReceiver(ctxT(t), "/devices/dev1/modules/m1/messages/devicebound", nil)
	requireCondition(t, err, amqp.ErrCond(condNotImplemented), "module link: %v", err)

	// A device session cannot attach the service nodes.
	_, err = s.NewSender(ctxT(t), "/messages/devicebound", nil)
	requireCondition(t, err, amqp.ErrCondUnauthorizedAccess, "service send link with a device token: %v", err)
}

// hubErrorCode returns the errorCode of IoT Hub's JSON error description.
func hubErrorCode(t *testing.T, e *amqp.Error) int {
	t.Helper()
	var desc struct {
		ErrorCode int `json:"errorCode"`
	}
	require.NoError(t, json.Unmarshal([]byte(e.Description), &desc), "description %q", e.Description)
	return desc.ErrorCode
}

// A service with a ServiceConnect token sends on /messages/devicebound:
// the message is queued as sent; refusals carry the conditions and codes
// the service SDKs map (facts §2.2).
func TestServiceSend(t *testing.T) {
	f := c2dFixture(t, engine.C2DConfig{MaxQueueDepth: 2})
	f.addDevice("dev+1")
	s := f.serviceConn(t, "service")
	snd, err := s.NewSender(ctxT(t), "amqps://"+testHost+":5671/messages/deviceBound", nil)
	require.NoError(t, err, "attach the send link")
	ctx := ctxT(t)

	to := "/devices/dev%2B1/messages/deviceBound"
	exp := time.Now().Add(5 * time.Minute).Truncate(time.Millisecond)
	ct, ce := "application/json", "utf-8"
	mid := amqp.UUID(newUUID())
	require.NoError(t, snd.Send(ctx, &amqp.Message{
		Properties: &amqp.MessageProperties{MessageID: mid, CorrelationID: uint64(7), To: &to, UserID: []byte("me"),
			ContentType: &ct, ContentEncoding: &ce, AbsoluteExpiryTime: &exp},
		ApplicationProperties: map[string]any{"iothub-ack": "full", "k": "v", "n": int32(3)},
		Data:                  [][]byte{[]byte(`{"a":`), []byte(`1}`)},
	}, nil), "send")
	q := f.e.C2DQueue("dev+1")
	require.Len(t, q, 1)
	got := q[0].C2DMessage
	assert.Equal(t, mid.String(), got.MessageID, "uuid message-id as text")
	assert.Equal(t, "7", got.CorrelationID)
	assert.Equal(t, "me", got.UserID)
	assert.Equal(t, to, got.To, "to as sent")
	assert.Equal(t, ct, got.ContentType)
	assert.Equal(t, ce, got.ContentEncoding)
	assert.Equal(t, "full", got.Ack)
	assert.True(t, exp.Equal(got.ExpiryTime), "expiry %v, want %v", got.ExpiryTime, exp)
	assert.Equal(t, map[string]string{"k": "v", "n": "3"}, got.Properties)
	assert.Equal(t, `{"a":1}`, string(got.Body))

	// header.ttl when there is no absolute-expiry-time (Node lowercase to).
	to2 := "/devices/dev%2B1/messages/devicebound"
	before := f.e.JobClock()
	require.NoError(t, snd.Send(ctx, &amqp.Message{
		Header:     &amqp.MessageHeader{TTL: time.Minute},
		Properties: &amqp.MessageProperties{To: &to2}, Data: [][]byte{nil},
	}, nil), "send with ttl")
	q = f.e.C2DQueue("dev+1")
	require.Len(t, q, 2)
	assert.WithinDuration(t, before.Add(time.Minute), q[1].ExpiryTime, 5*time.Second, "expiry from ttl")

	for _, tc := range []struct {
		name string
		to   string
		body []byte
		ack  any
		cond amqp.ErrCond
		code int
	}{
		{"queue full", to, nil, nil, amqp.ErrCondResourceLimitExceeded, 403004},
		{"unknown device", "/devices/nobody/messages/devicebound", nil, nil, amqp.ErrCondNotFound, 404001},
		{"too large", "/devices/nobody/messages/devicebound", make([]byte, 65*1024), nil, amqp.ErrCondMessageSizeExceeded, 413001},
		{"bad to", "/devices/dev1/messages/events", nil, nil, amqp.ErrCond(condArgumentError), 400004},
		{"no to", "", nil, nil, amqp.ErrCond(condArgumentError), 400004},
		{"bad ack", to2, nil, "sometimes", amqp.ErrCond(condArgumentError), 400004},
		{"module", "/devices/dev1/modules/m1/messages/devicebound", nil, nil, amqp.ErrCond(condNotImplemented), 0},
	} {
		m := &amqp.Message{Properties: &amqp.MessageProperties{}, Data: [][]byte{tc.body}}
		if tc.to != "" {
			m.Properties.To = &tc.to
		}
		if tc.ack != nil {
			m.ApplicationProperties = map[string]any{"iothub-ack": tc.ack}
		}
		err := snd.Send(ctx, m, nil)
		e := requireCondition(t, err, tc.cond, "%s: %v", tc.name, err)
		if tc.code != 0 {
			assert.Equal(t, tc.code, hubErrorCode(t, e), "%s: errorCode in %q", tc.name, e.Description)
			assert.NotEmpty(t, e.Info["com.microsoft:tracking-id"], "%s: tracking id", tc.name)
		}
	}
	assert.Len(t, f.e.C2DQueue("dev+1"), 2, "nothing more queued")
}

// A ServiceConnect token opens only the service nodes, a DeviceConnect
// policy token only device links; iothubowner both. Every audience
// spelling of the hub is accepted.
func TestServiceTokenScopes(t *testing.T) {
	f := c2dFixture(t, engine.C2DConfig{})
	f.addDevice("dev1")
	for _, aud := range []string{testHost, "amqps://" + testHost, "amqps://" + testHost + ":5671/", "amqps://" + strings.ToUpper(testHost) + "/"} {
		s := newSession(t, f.mustConnect(nil, nil))
		code, desc := newCBS(t, s).putToken(t, aud, f.policyToken("service"))
		require.Equal(t, int32(200), code, "audience %q: %s", aud, desc)
		_, err := s.NewSender(ctxT(t), "/messages/devicebound", nil)
		require.NoError(t, err, "audience %q: send link", aud)
		_, err = attachMethods(t, s, "dev1", 1)
		requireCondition(t, err, amqp.ErrCondUnauthorizedAccess, "a ServiceConnect token opened a device link: %v", err)
	}
	for _, bad := range []string{"amqps://" + testHost + ":x/", "amqps://" + testHost + "x", "other.azure-devices.net"} {
		s := newSession(t, f.mustConnect(nil, nil))
		code, _ := newCBS(t, s).putToken(t, bad, f.policyToken("service"))
		assert.Equal(t, int32(401), code, "audience %q", bad)
	}

	s := newSession(t, f.mustConnect(nil, nil))
	code, desc := newCBS(t, s).putToken(t, testHost, f.policyToken("device"))
	require.Equal(t, int32(200), code, desc)
	_, err := s.NewSender(ctxT(t), "/messages/devicebound", nil)
	requireCondition(t, err, amqp.ErrCondUnauthorizedAccess, "a DeviceConnect token opened the service link: %v", err)
	_, err = s.NewReceiver(ctxT(t), "/messages/servicebound/feedback", nil)
	requireCondition(t, err, amqp.ErrCondUnauthorizedAccess, "a DeviceConnect token opened the feedback link: %v", err)

	s = newSession(t, f.mustConnect(nil, nil))
	code, desc = newCBS(t, s).putToken(t, testHost, f.policyToken("registryRead"))
	require.Equal(t, int32(401), code, "registryRead has neither right")
	assert.Contains(t, desc, "ServiceConnect")

	s = newSession(t, f.mustConnect(nil, nil))
	code, desc = newCBS(t, s).putToken(t, testHost, f.policyToken("iothubowner"))
	require.Equal(t, int32(200), code, desc)
	_, err = s.NewSender(ctxT(t), "/messages/devicebound", nil)
	require.NoError(t, err, "iothubowner: service link")
	_, err = attachMethods(t, s, "dev1", 1)
	require.NoError(t, err, "iothubowner: device links")

	// Wrong directions.
	s = f.serviceConn(t, "service")
	_, err = s.NewReceiver(ctxT(t), "/messages/devicebound", nil)
	requireCondition(t, err, amqp.ErrCondNotAllowed, "receiver on the send node: %v", err)
	_, err = s.NewSender(ctxT(t), "/messages/serviceBound/feedback", nil)
	requireCondition(t, err, amqp.ErrCondNotAllowed, "sender on the feedback node: %v", err)
}

// Feedback batches reach the service's feedback link as .NET reads them;
// accepted removes the batch, released delivers it again, and a batch
// unsettled at detach goes to the next receiver.
func TestFeedbackLink(t *testing.T) {
	f := c2dFixture(t, engine.C2DConfig{})
	s := f.serviceConn(t, "service")
	second := amqp.ReceiverSettleModeSecond
	// As .NET attaches it: mode second, no credit until a receive.
	r, err := s.NewReceiver(ctxT(t), "amqps://"+testHost+":5671/messages/serviceBound/feedback",
		&amqp.ReceiverOptions{Credit: -1, SettlementMode: &second})
	require.NoError(t, err)
	ctx := ctxT(t)
	at := time.Date(2026, 1, 2, 3, 4, 5, 678e6, time.UTC)
	f.e.InjectFeedback(engine.FeedbackRecord{OriginalMessageID: "m1", DeviceGenerationID: "g1", DeviceID: "dev1",
		EnqueuedTime: at, StatusCode: "Success", Description: "Success"})

	require.NoError(t, r.IssueCredit(1))
	m := receive(t, r)
	assert.Len(t, m.DeliveryTag, 16)
	require.NotNil(t, m.Properties)
	assert.Equal(t, feedbackContentType, *m.Properties.ContentType)
	assert.Equal(t, []byte("test-hub"), m.Properties.UserID, "user-id = hub name")
	_, ok := ann(m, annEnqueuedTime).(time.Time)
	assert.True(t, ok, "iothub-enqueuedtime %#v", ann(m, annEnqueuedTime))
	require.Len(t, m.Data, 1)
	var recs []map[string]any
	require.NoError(t, json.Unmarshal(m.Data[0], &recs), "body %s", m.Data[0])
	assert.Equal(t, []map[string]any{{"originalMessageId": "m1", "deviceGenerationId": "g1", "deviceId": "dev1",
		"enqueuedTimeUtc": "2026-01-02T03:04:05.678Z", "statusCode": "Success", "description": "Success"}}, recs)

	require.NoError(t, r.ReleaseMessage(ctx, m), "abandon")
	require.NoError(t, r.IssueCredit(1))
	m = receive(t, r)
	require.NoError(t, r.Close(ctx), "detach with the batch unsettled")

	r2, err := s.NewReceiver(ctx, "/messages/servicebound/feedback", &amqp.ReceiverOptions{Credit: 5, SettlementMode: &second})
	require.NoError(t, err)
	m = receive(t, r2)
	require.NoError(t, r2.AcceptMessage(ctx, m), "complete")
	_, ok = f.e.ReceiveFeedback()
	assert.False(t, ok, "accepted: gone")

	// End to end: a device completes a message sent with ack=positive.
	key := f.addDevice("dev1")
	f.enqueue(t, "dev1", engine.C2DMessage{MessageID: "e2e", Ack: "positive"})
	d := c2dReceiver(t, f.deviceConn(t, "dev1", key), "/devices/dev1/messages/devicebound", amqp.ReceiverSettleModeFirst, 1)
	require.NoError(t, d.AcceptMessage(ctx, receive(t, d)))
	m = receive(t, r2)
	require.NoError(t, json.Unmarshal(m.Data[0], &recs))
	require.Len(t, recs, 1)
	assert.Equal(t, "e2e", recs[0]["originalMessageId"])
	assert.Equal(t, "Success", recs[0]["statusCode"])
	require.NoError(t, r2.AcceptMessage(ctx, m))
}
