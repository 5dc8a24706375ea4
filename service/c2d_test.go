package service_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/faultproxy"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// c2dClient returns a client for hub whose AMQP connection is closed at the
// end of the test.
func c2dClient(t *testing.T, hub *iothubtest.Server, connStr string, edit func(*service.ClientOptions)) *service.Client {
	t.Helper()
	c, _ := newClient(t, hub, connStr, edit)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// c2dReceived is a message as an MQTT device received it.
type c2dReceived struct {
	topic string
	body  string
	props url.Values
}

// mqttC2DDevice connects deviceID over MQTT and subscribes to its
// cloud-to-device messages at QoS 1: paho PUBACKs each one after the
// handler returns, which completes it. Messages go to the channel.
func mqttC2DDevice(t *testing.T, hub *iothubtest.Server, connStr, deviceID string) <-chan c2dReceived {
	t.Helper()
	ch := make(chan c2dReceived, 100)
	c := connect(t, hub, connStr, nil)
	prefix := "devices/" + deviceID + "/messages/devicebound/"
	tk := c.Subscribe(prefix+"#", 1, func(_ paho.Client, m paho.Message) {
		bag := strings.TrimPrefix(m.Topic(), prefix)
		props, _ := url.ParseQuery(bag)
		ch <- c2dReceived{topic: m.Topic(), body: string(m.Payload()), props: props}
	})
	require.True(t, tk.WaitTimeout(15*time.Second), "subscribe timed out")
	require.NoError(t, tk.Error())
	return ch
}

func receive(t *testing.T, ch <-chan c2dReceived) c2dReceived {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(20 * time.Second):
		t.Fatal("no cloud-to-device message reached the device")
	}
	return c2dReceived{}
}

func TestSendToOfflineDeviceIsDeliveredLater(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	devCS := hub.AddDevice(t, "dev1")
	c := c2dClient(t, hub, "", nil)
	ctx := testCtx(t)

	msg := &service.C2DMessage{
		Body:            []byte(`{"led":"on"}`),
		MessageID:       "msg-1",
		CorrelationID:   "corr-1",
		ContentType:     "application/json",
		ContentEncoding: "utf-8",
		Properties:      map[string]string{"k": "v w"},
		TTL:             time.Hour,
		Ack:             service.AckFull,
	}
	require.NoError(t, c.Send(ctx, "dev1", msg), "the device is offline: the hub queues the message")

	got := receive(t, mqttC2DDevice(t, hub, devCS, "dev1"))
	assert.Equal(t, `{"led":"on"}`, got.body)
	assert.Equal(t, "msg-1", got.props.Get("$.mid"))
	assert.Equal(t, "corr-1", got.props.Get("$.cid"))
	assert.Equal(t, "application/json", got.props.Get("$.ct"))
	assert.Equal(t, "utf-8", got.props.Get("$.ce"))
	assert.Equal(t, "v w", got.props.Get("k"))
	assert.True(t, strings.EqualFold(got.props.Get("iothub-ack"), "full"), "iothub-ack: %q", got.props.Get("iothub-ack"))
	assert.True(t, strings.EqualFold(got.props.Get("$.to"), "/devices/dev1/messages/devicebound"), "$.to: %q", got.props.Get("$.to"))
}

func TestSendUnknownDevice(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c := c2dClient(t, hub, "", nil)
	err := c.Send(testCtx(t), "nobody", &service.C2DMessage{Body: []byte("x")})
	require.ErrorIs(t, err, service.ErrDeviceNotFound)
	var re *service.ResponseError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 404001, re.Code)
	assert.Equal(t, service.ErrorCodeDeviceNotFound, re.ErrorCode)
	assert.Equal(t, 404, re.StatusCode)
	assert.Equal(t, "amqp:not-found", re.Condition)
	assert.True(t, strings.HasPrefix(err.Error(), "iothub: "), err.Error())

	// The connection survives a refused message.
	hub.AddDevice(t, "dev1")
	require.NoError(t, c.Send(testCtx(t), "dev1", &service.C2DMessage{Body: []byte("x")}))
}

func TestSendQueueFullThenPurge(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	hub.AddDevice(t, "dev1")
	c := c2dClient(t, hub, "", nil)
	ctx := testCtx(t)
	for i := range 50 {
		require.NoError(t, c.Send(ctx, "dev1", &service.C2DMessage{Body: []byte("m")}), "message %d", i)
	}
	err := c.Send(ctx, "dev1", &service.C2DMessage{Body: []byte("one too many")})
	require.ErrorIs(t, err, service.ErrDeviceQueueFull)
	var re *service.ResponseError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 403004, re.Code)
	assert.Equal(t, service.ErrorCodeDeviceMaximumQueueDepthExceeded, re.ErrorCode)

	res, err := c.PurgeMessageQueue(ctx, "dev1")
	require.NoError(t, err)
	assert.Equal(t, &service.PurgeResult{DeviceID: "dev1", TotalMessagesPurged: 50}, res)
	require.NoError(t, c.Send(ctx, "dev1", &service.C2DMessage{Body: []byte("room again")}))

	res, err = c.PurgeMessageQueue(ctx, "dev1")
	require.NoError(t, err)
	assert.Equal(t, 1, res.TotalMessagesPurged)

	_, err = c.PurgeMessageQueue(ctx, "nobody")
	require.ErrorIs(t, err, service.ErrDeviceNotFound)
	_, err = c.PurgeMessageQueue(ctx, "")
	require.ErrorIs(t, err, service.ErrArgumentInvalid)
}

func TestSendRefusedLocally(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	hub.AddDevice(t, "dev1")
	proxy := newProxy(t, hub)
	c := c2dClient(t, hub, "", func(o *service.ClientOptions) { o.Endpoint = "https://" + proxy.Addr() })
	ctx := testCtx(t)

	// The size counts the body, the "to" address and the properties.
	to := len("/devices/dev1/messages/devicebound")
	tooLarge := &service.C2DMessage{Body: make([]byte, service.MaxC2DMessageSize-to-1), Properties: map[string]string{"k": "v"}}
	err := c.Send(ctx, "dev1", tooLarge)
	require.ErrorIs(t, err, service.ErrMessageTooLarge)
	require.ErrorIs(t, err, service.ErrArgumentInvalid)

	for name, tc := range map[string]struct {
		id  string
		msg *service.C2DMessage
	}{
		"nil message":         {"dev1", nil},
		"empty device id":     {"", &service.C2DMessage{}},
		"bad device id":       {"a b", &service.C2DMessage{}},
		"bad message id":      {"dev1", &service.C2DMessage{MessageID: "a b"}},
		"long message id":     {"dev1", &service.C2DMessage{MessageID: strings.Repeat("a", 129)}},
		"bad correlation id":  {"dev1", &service.C2DMessage{CorrelationID: "é"}},
		"empty property name": {"dev1", &service.C2DMessage{Properties: map[string]string{"": "v"}}},
		"$ property":          {"dev1", &service.C2DMessage{Properties: map[string]string{"$.mid": "v"}}},
		"iothub-ack property": {"dev1", &service.C2DMessage{Properties: map[string]string{"IoTHub-Ack": "full"}}},
		"control in value":    {"dev1", &service.C2DMessage{Properties: map[string]string{"k": "a\nb"}}},
		"invalid UTF-8":       {"dev1", &service.C2DMessage{Properties: map[string]string{"k": "\xff"}}},
		"negative TTL":        {"dev1", &service.C2DMessage{TTL: -time.Second}},
		"TTL and ExpiresAt":   {"dev1", &service.C2DMessage{TTL: time.Second, ExpiresAt: time.Now()}},
		"invalid Ack":         {"dev1", &service.C2DMessage{Ack: service.AckFull + 1}},
		"bad content type":    {"dev1", &service.C2DMessage{ContentType: "a\x00"}},
	} {
		err := c.Send(ctx, tc.id, tc.msg)
		assert.ErrorIs(t, err, service.ErrArgumentInvalid, name)
		assert.NotErrorIs(t, err, service.ErrMessageTooLarge, name)
	}
	assert.Zero(t, proxy.Accepted(), "nothing is dialled for a refused message")

	atLimit := &service.C2DMessage{Body: make([]byte, service.MaxC2DMessageSize-to-2-len("full")), Properties: map[string]string{"k": "v"}, Ack: service.AckFull}
	require.NoError(t, c.Send(ctx, "dev1", atLimit), "a message of exactly MaxC2DMessageSize")
}

func newProxy(t *testing.T, hub *iothubtest.Server) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(hub.Addr())
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func TestFeedbackAfterDeviceCompletes(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	devCS := hub.AddDevice(t, "dev1")
	c := c2dClient(t, hub, "", nil)
	ctx := testCtx(t)

	fr, err := c.NewFeedbackReceiver(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = fr.Close(context.Background()) })

	require.NoError(t, c.Send(ctx, "dev1", &service.C2DMessage{Body: []byte("hi"), MessageID: "m-42", Ack: service.AckPositive}))
	got := receive(t, mqttC2DDevice(t, hub, devCS, "dev1")) // paho's PUBACK completes it
	require.Equal(t, "hi", got.body)

	b, err := fr.Receive(ctx)
	require.NoError(t, err)
	require.Len(t, b.Records, 1)
	r := b.Records[0]
	assert.Equal(t, "m-42", r.OriginalMessageID)
	assert.Equal(t, "dev1", r.DeviceID)
	assert.Equal(t, service.FeedbackSuccess, r.Status)
	assert.NotEmpty(t, r.DeviceGenerationID)
	assert.False(t, r.EnqueuedTime.IsZero())
	require.NoError(t, b.Complete(ctx))
	assert.ErrorIs(t, b.Complete(ctx), service.ErrLockLost, "a batch is settled once")

	// Nothing else is waiting: Receive waits until ctx ends.
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err = fr.Receive(short)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	require.NoError(t, fr.Close(ctx))
	_, err = fr.Receive(ctx)
	require.ErrorIs(t, err, service.ErrClosed)
	require.NoError(t, fr.Close(ctx), "Close twice")
}

func TestFeedbackAbandonRedelivers(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	hub.AddDevice(t, "dev1")
	c := c2dClient(t, hub, "", nil)
	ctx := testCtx(t)
	require.NoError(t, c.Send(ctx, "dev1", &service.C2DMessage{MessageID: "p1", Ack: service.AckNegative}))
	res, err := c.PurgeMessageQueue(ctx, "dev1")
	require.NoError(t, err)
	require.Equal(t, 1, res.TotalMessagesPurged)

	fr, err := c.NewFeedbackReceiver(ctx)
	require.NoError(t, err)
	defer fr.Close(ctx)
	b, err := fr.Receive(ctx)
	require.NoError(t, err)
	require.Len(t, b.Records, 1)
	assert.Equal(t, service.FeedbackPurged, b.Records[0].Status)
	require.NoError(t, b.Abandon(ctx))

	again, err := fr.Receive(ctx)
	require.NoError(t, err)
	require.Len(t, again.Records, 1)
	assert.Equal(t, "p1", again.Records[0].OriginalMessageID)
	require.NoError(t, again.Complete(ctx))
}

func TestSendRedialsAfterConnectionDrop(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	hub.AddDevice(t, "dev1")
	proxy := newProxy(t, hub)
	c := c2dClient(t, hub, "", func(o *service.ClientOptions) { o.Endpoint = "https://" + proxy.Addr() })
	ctx := testCtx(t)

	require.NoError(t, c.Send(ctx, "dev1", &service.C2DMessage{Body: []byte("1")}))
	require.Equal(t, 1, proxy.Accepted())
	require.Equal(t, 1, proxy.Cut())

	// The first Send after the cut either notices the dead connection
	// and dials again, or fails with ErrConnectionLost (it may have been
	// on its way); the next one dials again.
	err := c.Send(ctx, "dev1", &service.C2DMessage{Body: []byte("2")})
	if err != nil {
		require.ErrorIs(t, err, service.ErrConnectionLost)
		require.NoError(t, c.Send(ctx, "dev1", &service.C2DMessage{Body: []byte("2")}))
	}
	assert.Equal(t, 2, proxy.Accepted())

	// The hub stops answering: Send returns when its ctx ends.
	proxy.Stall()
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, c.Send(short, "dev1", &service.C2DMessage{Body: []byte("3")}), context.DeadlineExceeded)
	proxy.Resume()
}

func TestSendRefusedDial(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	hub.AddDevice(t, "dev1")
	proxy := newProxy(t, hub)
	proxy.SetRefuse(true)
	c := c2dClient(t, hub, "", func(o *service.ClientOptions) { o.Endpoint = "https://" + proxy.Addr() })
	err := c.Send(testCtx(t), "dev1", &service.C2DMessage{})
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), "iothub: "), err.Error())
	proxy.SetRefuse(false)
	require.NoError(t, c.Send(testCtx(t), "dev1", &service.C2DMessage{}), "a failed dial is not cached")
}

func TestConcurrentSendsShareOneConnection(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	hub.AddDevice(t, "dev1")
	hub.AddDevice(t, "dev2")
	proxy := newProxy(t, hub)
	c := c2dClient(t, hub, "", func(o *service.ClientOptions) { o.Endpoint = "https://" + proxy.Addr() })
	ctx := testCtx(t)

	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dev := "dev1"
			if i%2 == 1 {
				dev = "dev2"
			}
			errs <- c.Send(ctx, dev, &service.C2DMessage{Body: []byte{byte(i)}})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, 1, proxy.Accepted(), "one AMQP connection for every Send")
	for _, dev := range []string{"dev1", "dev2"} {
		res, err := c.PurgeMessageQueue(ctx, dev)
		require.NoError(t, err)
		assert.Equal(t, 20, res.TotalMessagesPurged, dev)
	}
}

func TestCloseFromAnotherGoroutine(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	hub.AddDevice(t, "dev1")
	c := c2dClient(t, hub, "", nil)
	ctx := testCtx(t)
	fr, err := c.NewFeedbackReceiver(ctx)
	require.NoError(t, err)

	recvErr := make(chan error, 1)
	go func() {
		_, err := fr.Receive(ctx)
		recvErr <- err
	}()
	sendErrs := make(chan error, 10)
	for range 10 {
		go func() { sendErrs <- c.Send(ctx, "dev1", &service.C2DMessage{Body: []byte("x")}) }()
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close(ctx) }()
	require.NoError(t, <-closed)

	select {
	case err := <-recvErr:
		require.ErrorIs(t, err, service.ErrClosed)
	case <-ctx.Done():
		t.Fatal("Receive did not end at Close")
	}
	for range 10 {
		select {
		case err := <-sendErrs:
			// Sent before Close, or refused: never anything else.
			if err != nil && !errors.Is(err, service.ErrClosed) {
				t.Errorf("Send during Close: %v", err)
			}
		case <-ctx.Done():
			t.Fatal("a Send did not end at Close")
		}
	}
	require.ErrorIs(t, c.Send(ctx, "dev1", &service.C2DMessage{}), service.ErrClosed)
	_, err = c.NewFeedbackReceiver(ctx)
	require.ErrorIs(t, err, service.ErrClosed)
	require.NoError(t, c.Close(ctx), "Close twice")
	require.NoError(t, fr.Close(ctx))

	// HTTPS keeps working.
	_, err = c.PurgeMessageQueue(ctx, "dev1")
	require.NoError(t, err)
}

func TestSendOverWebSocket(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	hub.AddDevice(t, "dev1")
	c := c2dClient(t, hub, "", func(o *service.ClientOptions) { o.AMQPOverWebSockets = true })
	ctx := testCtx(t)
	require.NoError(t, c.Send(ctx, "dev1", &service.C2DMessage{Body: []byte("ws")}))
	res, err := c.PurgeMessageQueue(ctx, "dev1")
	require.NoError(t, err)
	assert.Equal(t, 1, res.TotalMessagesPurged)
}

func TestSendWithEntraID(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	hub.AddDevice(t, "dev1")
	o, _ := testOptions(t, hub)
	o.Endpoint = "https://" + hub.Addr()
	c, err := service.NewClient(hub.HostName(), hub.Credential(), o)
	require.NoError(t, err)
	defer c.Close(context.Background())
	ctx := testCtx(t)
	require.NoError(t, c.Send(ctx, "dev1", &service.C2DMessage{Body: []byte("entra")}))
	fr, err := c.NewFeedbackReceiver(ctx)
	require.NoError(t, err)
	require.NoError(t, fr.Close(ctx))
}

func TestSendNeedsServiceConnect(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	hub.AddDevice(t, "dev1")
	c := c2dClient(t, hub, hub.PolicyConnectionString("registryRead"), nil)
	err := c.Send(testCtx(t), "dev1", &service.C2DMessage{})
	require.ErrorIs(t, err, service.ErrUnauthorized)
	assert.NotContains(t, err.Error(), "SharedAccessSignature sr=")
}

// countingTokens counts the tokens a client asks for.
type countingTokens struct {
	p     auth.TokenProvider
	calls chan struct{}
}

func (c *countingTokens) Token(ctx context.Context) (auth.Token, error) {
	select {
	case c.calls <- struct{}{}:
	default:
	}
	return c.p.Token(ctx)
}

func TestSendRenewsTokenOnTheLiveConnection(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	hub.AddDevice(t, "dev1")
	proxy := newProxy(t, hub)
	c := c2dClient(t, hub, "", func(o *service.ClientOptions) { o.Endpoint = "https://" + proxy.Addr() })
	cs, err := auth.ParseServiceConnectionString(hub.ServiceConnectionString())
	require.NoError(t, err)
	kp, err := auth.NewKeyTokenProvider(cs.HostName, cs.SharedAccessKeyName, cs.SharedAccessKey, &auth.TokenOptions{TTL: 3 * time.Second, RenewBefore: 2 * time.Second})
	require.NoError(t, err)
	tokens := &countingTokens{p: kp, calls: make(chan struct{}, 10)}
	service.SetTokenProviderForTest(c, tokens)
	ctx := testCtx(t)

	require.NoError(t, c.Send(ctx, "dev1", &service.C2DMessage{Body: []byte("1")}))
	// The first token, then two renewals (each due a second after the
	// one before): the second renewal starts once the first was accepted.
	for i := range 3 {
		select {
		case <-tokens.calls:
		case <-ctx.Done():
			t.Fatalf("token %d never asked for", i+1)
		}
	}
	require.NoError(t, c.Send(ctx, "dev1", &service.C2DMessage{Body: []byte("2")}))
	assert.Equal(t, 1, proxy.Accepted(), "renewed on the live connection")
}

func TestFeedbackReceiverCloseFromAnotherGoroutine(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c := c2dClient(t, hub, "", nil)
	ctx := testCtx(t)
	fr, err := c.NewFeedbackReceiver(ctx)
	require.NoError(t, err)
	recvErr := make(chan error, 1)
	go func() {
		_, err := fr.Receive(ctx)
		recvErr <- err
	}()
	go func() { _ = fr.Close(ctx) }()
	select {
	case err := <-recvErr:
		require.ErrorIs(t, err, service.ErrClosed)
	case <-ctx.Done():
		t.Fatal("Receive did not end at Close")
	}
	// The client's connection is still usable.
	fr2, err := c.NewFeedbackReceiver(ctx)
	require.NoError(t, err)
	require.NoError(t, fr2.Close(ctx))
}
