package mqttd

import (
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

// enqueue queues a cloud-to-device message for deviceID.
func (f *fixture) enqueue(deviceID string, m engine.C2DMessage) engine.C2DMessage {
	f.tb.Helper()
	q, herr := f.e.EnqueueC2D(deviceID, m)
	require.Nil(f.tb, herr, "EnqueueC2D")
	return q
}

// waitQueue waits until the device's queue satisfies ok.
func (f *fixture) waitQueue(deviceID string, ok func([]engine.QueuedC2D) bool, what string) {
	f.tb.Helper()
	require.Eventually(f.tb, func() bool { return ok(f.e.C2DQueue(deviceID)) }, waitLong, 5*time.Millisecond, what)
}

func emptyQueue(q []engine.QueuedC2D) bool { return len(q) == 0 }

// unlockedQueue reports a queue of n messages, none locked.
func unlockedQueue(n int) func([]engine.QueuedC2D) bool {
	return func(q []engine.QueuedC2D) bool {
		if len(q) != n {
			return false
		}
		for _, m := range q {
			if m.Locked {
				return false
			}
		}
		return true
	}
}

// bagOf returns the decoded property bag of a cloud-to-device topic.
func bagOf(tb testing.TB, topic, deviceID string) map[string]string {
	tb.Helper()
	rest, ok := strings.CutPrefix(topic, "devices/"+deviceID+"/messages/devicebound/")
	require.True(tb, ok, "topic %q", topic)
	bag := map[string]string{}
	for _, kv := range strings.Split(rest, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		dk, err := url.PathUnescape(k)
		require.NoError(tb, err, "key %q", k)
		dv, err := url.PathUnescape(v)
		require.NoError(tb, err, "value %q", v)
		bag[dk] = dv
	}
	return bag
}

func TestC2DDeliveryWithProperties(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	d := f.connect(f.sasOpts("dev1", key))
	require.Equal(t, byte(1), d.subscribe(t, "devices/dev1/messages/devicebound/#", 1))

	exp := time.Date(2030, 1, 2, 3, 4, 5, 600, time.UTC)
	q := f.enqueue("dev1", engine.C2DMessage{
		MessageID: "m 1", CorrelationID: "c/1", UserID: "u$1", To: "/devices/dev1/messages/deviceBound",
		ContentType: "text/plain; charset=UTF-8", ContentEncoding: "utf-8", Ack: "full", ExpiryTime: exp,
		Properties: map[string]string{"b": "x=y&z", "a": "", "é": "+%"},
		Body:       []byte("hello"),
	})
	m := d.next(t)
	assert.Equal(t, byte(1), m.qos)
	assert.False(t, m.retain)
	assert.False(t, m.dup)
	assert.Equal(t, []byte("hello"), m.payload)
	assert.Equal(t, "devices/dev1/messages/devicebound/"+
		"%24.mid=m%201&%24.cid=c%2F1&%24.uid=u%241&%24.to=%2Fdevices%2Fdev1%2Fmessages%2FdeviceBound"+
		"&%24.ct=text%2Fplain%3B%20charset%3DUTF-8&%24.ce=utf-8&iothub-ack=full"+
		"&%24.exp="+url.QueryEscape(q.ExpiryTime.UTC().Format(c2dExpiryLayout))+
		"&a=&b=x%3Dy%26z&%C3%A9=%2B%25", m.topic)
	assert.Equal(t, map[string]string{
		"$.mid": "m 1", "$.cid": "c/1", "$.uid": "u$1", "$.to": "/devices/dev1/messages/deviceBound",
		"$.ct": "text/plain; charset=UTF-8", "$.ce": "utf-8", "iothub-ack": "full",
		"$.exp": q.ExpiryTime.UTC().Format(c2dExpiryLayout), "a": "", "b": "x=y&z", "é": "+%",
	}, bagOf(t, m.topic, "dev1"))
	// paho acknowledged it: the PUBACK completes the message.
	f.waitQueue("dev1", emptyQueue, "the PUBACK did not complete the message")
	d.stillUp(t)
}

func TestC2DMinimalTopic(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	d := f.connect(f.sasOpts("dev1", key))
	d.subscribe(t, "devices/dev1/messages/devicebound/#", 1)
	q := f.enqueue("dev1", engine.C2DMessage{})
	m := d.next(t)
	bag := bagOf(t, m.topic, "dev1")
	// $.to is always there; the engine gives every message an id and an
	// expiry.
	assert.Equal(t, "/devices/dev1/messages/devicebound", bag["$.to"])
	assert.Equal(t, q.MessageID, bag["$.mid"])
	assert.Empty(t, m.payload)
}

func TestC2DRedeliveredAfterReconnect(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	o := f.sasOpts("dev1", key)
	o.manualAck = true
	d := f.connect(o)
	d.subscribe(t, "devices/dev1/messages/devicebound/#", 1)
	f.enqueue("dev1", engine.C2DMessage{MessageID: "once", Body: []byte("x")})
	first := d.next(t)
	require.Equal(t, "once", bagOf(t, first.topic, "dev1")["$.mid"])
	f.waitQueue("dev1", func(q []engine.QueuedC2D) bool { return len(q) == 1 && q[0].Locked }, "the delivered message is not locked")

	// No PUBACK, and the connection ends: the message goes back to the
	// queue, its delivery count unchanged.
	d.c.Disconnect(0)
	f.waitQueue("dev1", unlockedQueue(1), "the message did not go back to the queue")
	assert.Equal(t, 0, f.e.C2DQueue("dev1")[0].DeliveryCount)

	d2 := f.connect(o)
	d2.subscribe(t, "devices/dev1/messages/devicebound/#", 1)
	again := d2.next(t)
	assert.Equal(t, "once", bagOf(t, again.topic, "dev1")["$.mid"])
	assert.Equal(t, []byte("x"), again.payload)
	assert.False(t, again.dup, "a delivery on a new connection is a new PUBLISH")
	again.ack()
	f.waitQueue("dev1", emptyQueue, "the PUBACK did not complete the message")
}

func TestC2DOfflineDeviceGetsQueueOnSubscribe(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	for _, id := range []string{"m1", "m2", "m3"} {
		f.enqueue("dev1", engine.C2DMessage{MessageID: id})
	}
	o := f.sasOpts("dev1", key)
	o.ordered = true
	d := f.connect(o)
	d.none(t, 100*time.Millisecond) // nothing before the subscription
	d.subscribe(t, "devices/dev1/messages/devicebound/#", 1)
	for _, id := range []string{"m1", "m2", "m3"} {
		assert.Equal(t, id, bagOf(t, d.next(t).topic, "dev1")["$.mid"])
	}
	f.waitQueue("dev1", emptyQueue, "the PUBACKs did not complete the messages")
}

func TestC2DPersistentSessionDeliversWithoutSubscribe(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	o := f.sasOpts("dev1", key)
	o.clean = false
	d := f.connect(o)
	d.subscribe(t, "devices/dev1/messages/devicebound/#", 1)
	d.c.Disconnect(0)
	// Queue the message only once the hub saw the connection end: paho
	// may still take (and acknowledge) a PUBLISH while it disconnects.
	require.Eventually(t, func() bool {
		f.srv.mu.Lock()
		defer f.srv.mu.Unlock()
		return f.srv.live["dev1"] == nil
	}, waitLong, 5*time.Millisecond, "the hub did not see the connection end")
	f.enqueue("dev1", engine.C2DMessage{MessageID: "later"})
	// The session keeps the subscription: delivery starts after CONNACK.
	d2 := f.connect(o)
	m := d2.next(t)
	assert.Equal(t, "later", bagOf(t, m.topic, "dev1")["$.mid"])
	f.waitQueue("dev1", emptyQueue, "the PUBACK did not complete the message")
}

func TestC2DInflightWindow(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	o := f.sasOpts("dev1", key)
	o.manualAck = true
	o.ordered = true
	d := f.connect(o)
	d.subscribe(t, "devices/dev1/messages/devicebound/#", 1)
	for i := range c2dWindow + 2 {
		f.enqueue("dev1", engine.C2DMessage{MessageID: string(rune('a' + i))})
	}
	var got []msg
	for range c2dWindow {
		got = append(got, d.next(t))
	}
	ids := map[uint16]bool{}
	for i, m := range got {
		assert.Equal(t, string(rune('a'+i)), bagOf(t, m.topic, "dev1")["$.mid"])
		assert.NotZero(t, m.id)
		ids[m.id] = true
	}
	assert.Len(t, ids, c2dWindow, "distinct packet ids")
	d.none(t, 200*time.Millisecond) // the window is full
	got[0].ack()
	next := d.next(t)
	assert.Equal(t, string(rune('a'+c2dWindow)), bagOf(t, next.topic, "dev1")["$.mid"])
	d.none(t, 100*time.Millisecond)
	f.waitQueue("dev1", func(q []engine.QueuedC2D) bool { return len(q) == c2dWindow+1 }, "the first PUBACK did not complete its message")
	for _, m := range append(got[1:], next) {
		m.ack()
	}
	last := d.next(t)
	assert.Equal(t, string(rune('a'+c2dWindow+1)), bagOf(t, last.topic, "dev1")["$.mid"])
	last.ack()
	f.waitQueue("dev1", emptyQueue, "the PUBACKs did not complete the messages")
}

func TestC2DExpiredMessageIsNotDelivered(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	f.enqueue("dev1", engine.C2DMessage{MessageID: "old"})
	f.e.AdvanceJobClock(2 * time.Hour) // past the default time-to-live of 1 h
	f.waitQueue("dev1", emptyQueue, "the message did not expire")
	d := f.connect(f.sasOpts("dev1", key))
	d.subscribe(t, "devices/dev1/messages/devicebound/#", 1)
	f.enqueue("dev1", engine.C2DMessage{MessageID: "new"})
	assert.Equal(t, "new", bagOf(t, d.next(t).topic, "dev1")["$.mid"])
}

func TestC2DLockExpiryKeepsTheDeliveryInFlight(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	o := f.sasOpts("dev1", key)
	o.manualAck = true
	d := f.connect(o)
	d.subscribe(t, "devices/dev1/messages/devicebound/#", 1)
	f.enqueue("dev1", engine.C2DMessage{MessageID: "slow"})
	m := d.next(t)
	// The lock (1 min) expires before the PUBACK: the message is not
	// sent again on this connection, and the late PUBACK completes it.
	f.e.AdvanceJobClock(2 * time.Minute)
	d.none(t, 200*time.Millisecond)
	f.waitQueue("dev1", func(q []engine.QueuedC2D) bool { return len(q) == 1 && q[0].Locked }, "the connection did not take the message's new lock")
	m.ack()
	f.waitQueue("dev1", emptyQueue, "the late PUBACK did not complete the message")
}

func TestC2DUnsubscribeReleases(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	o := f.sasOpts("dev1", key)
	o.manualAck = true
	o.ordered = true
	d := f.connect(o)
	d.subscribe(t, "devices/dev1/messages/devicebound/#", 1)
	f.enqueue("dev1", engine.C2DMessage{MessageID: "m"})
	d.next(t)
	tok := d.c.Unsubscribe("devices/dev1/messages/devicebound/#")
	require.True(t, tok.WaitTimeout(waitLong))
	require.NoError(t, tok.Error())
	f.waitQueue("dev1", unlockedQueue(1), "UNSUBSCRIBE did not return the message to the queue")
	f.enqueue("dev1", engine.C2DMessage{MessageID: "m2"})
	d.none(t, 100*time.Millisecond)
	d.subscribe(t, "devices/dev1/messages/devicebound/#", 1)
	assert.Equal(t, "m", bagOf(t, d.next(t).topic, "dev1")["$.mid"])
	assert.Equal(t, "m2", bagOf(t, d.next(t).topic, "dev1")["$.mid"])
	d.stillUp(t)
}

func TestC2DQoS0Subscription(t *testing.T) {
	f := newFixture(t)
	key := f.addDevice("dev1")
	d := f.connect(f.sasOpts("dev1", key))
	require.Equal(t, byte(0), d.subscribe(t, "devices/dev1/messages/devicebound/#", 0))
	f.enqueue("dev1", engine.C2DMessage{MessageID: "m"})
	m := d.next(t)
	assert.Equal(t, byte(0), m.qos)
	// At most once: written means completed.
	f.waitQueue("dev1", emptyQueue, "a QoS 0 delivery did not complete the message")
}

func TestC2DModuleSubscribeCloses(t *testing.T) {
	f := newFixture(t)
	f.addDevice("dev1")
	key := f.addModule("dev1", "mod1")
	d := f.connect(f.sasOpts("dev1/mod1", key))
	d.c.Subscribe("devices/dev1/messages/devicebound/#", 1, nil)
	d.waitLost(t)
}

func TestFormatC2DTopic(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 123456789, time.FixedZone("x", 3600))
	assert.Equal(t, "devices/d/messages/devicebound/%24.to=%2Fdevices%2Fd%2Fmessages%2Fdevicebound",
		FormatC2DTopic("d", engine.C2DMessage{}))
	assert.Equal(t, "devices/d/messages/devicebound/%24.mid=1&%24.to=t&%24.exp=2030-01-02T02%3A04%3A05.1234567Z&k=v",
		FormatC2DTopic("d", engine.C2DMessage{MessageID: "1", To: "t", ExpiryTime: exp,
			Properties: map[string]string{"k": "v", "$.mid": "shadow", "iothub-ack": "full"}}))
}

func FuzzFormatC2DTopic(f *testing.F) {
	f.Add("dev1", "mid", "cid", "text/plain; charset=utf-8", "full", "k", "v", int64(0))
	f.Add("d", "", "", "", "", "$.mid", "x", int64(1893456000))
	f.Add("d-é", "a&b=c", "%24", "+ /", "none", "", "", int64(-1))
	f.Add("d", "\x00\xff", "#", "?", "", "a+b", "%zz", int64(42))
	f.Fuzz(func(t *testing.T, dev, mid, cid, ct, ack, k, v string, exp int64) {
		m := engine.C2DMessage{MessageID: mid, CorrelationID: cid, ContentType: ct, Ack: ack,
			Properties: map[string]string{k: v}}
		if exp != 0 {
			m.ExpiryTime = time.Unix(exp, 0)
		}
		topic := FormatC2DTopic(dev, m)
		prefix := "devices/" + dev + "/messages/devicebound/"
		require.True(t, strings.HasPrefix(topic, prefix))
		bag := topic[len(prefix):]
		// The bag is plain ASCII with no MQTT wildcard, no "/" and no "$".
		for i := 0; i < len(bag); i++ {
			require.Less(t, bag[i], byte(0x80), "bag %q", bag)
			require.NotContains(t, "+#/$ ?\x00", string(bag[i]), "bag %q", bag)
		}
		if utf8.ValidString(dev) && !strings.ContainsAny(dev, "+#\x00") && len(topic) <= 65535 {
			require.NoError(t, checkTopicName(topic))
		}
		got := map[string]string{}
		for _, kv := range strings.Split(bag, "&") {
			key, val, ok := strings.Cut(kv, "=")
			require.True(t, ok, "pair %q", kv)
			dk, err := url.PathUnescape(key)
			require.NoError(t, err)
			dv, err := url.PathUnescape(val)
			require.NoError(t, err)
			got[dk] = dv
		}
		want := map[string]string{"$.to": "/devices/" + url.PathEscape(dev) + "/messages/devicebound"}
		for _, p := range [][2]string{{"$.mid", mid}, {"$.cid", cid}, {"$.ct", ct}, {"iothub-ack", ack}} {
			if p[1] != "" {
				want[p[0]] = p[1]
			}
		}
		if !m.ExpiryTime.IsZero() {
			want["$.exp"] = m.ExpiryTime.UTC().Format(c2dExpiryLayout)
		}
		if !c2dSystemKeys[k] {
			want[k] = v
		}
		require.Equal(t, want, got)
	})
}
