package iothubtest_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/iothubtest"
)

// deviceToken mints a SAS token from a device connection string.
func deviceToken(t *testing.T, connStr string) string {
	t.Helper()
	cs, err := auth.ParseDeviceConnectionString(connStr)
	require.NoError(t, err)
	tp, err := cs.TokenProvider(nil)
	require.NoError(t, err)
	tok, err := tp.Token(context.Background())
	require.NoError(t, err)
	return tok.Value
}

func TestEvents(t *testing.T) {
	s := iothubtest.NewServer(t, nil)
	devCS := s.AddDevice(t, "dev1")
	modCS := s.AddModule(t, "dev1", "mod1")
	httpCS := s.AddDevice(t, "dev-http")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	evs, err := s.WaitEvents(ctx, 1)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded, "WaitEvents before any event")
	require.Empty(t, evs, "WaitEvents before any event")

	// MQTT, QoS 1: the message is listed once the PUBACK is in.
	dev := mustConnect(t, s, devCS, nil)
	tok := dev.Publish("devices/dev1/messages/events/%24.mid=m-1&%24.cid=c-1&%24.ct=application%2Fjson&%24.ce=utf-8&odd%20name=a%26b%3Dc%2F%C3%A9", 1, false, `{"temp":21.5}`)
	require.True(t, tok.WaitTimeout(15*time.Second), "publish timed out")
	require.NoError(t, tok.Error(), "publish")
	require.Len(t, s.Events(), 1, "events after the PUBACK")
	// MQTT, QoS 0, a module.
	mod := mustConnect(t, s, modCS, nil)
	mod.Publish("devices/dev1/modules/mod1/messages/events/", 0, false, "module says hi")
	_, err = s.WaitEvents(context.Background(), 2)
	require.NoError(t, err)
	// HTTPS with the device's own token.
	req, err := http.NewRequest(http.MethodPost, "https://"+s.Addr()+"/devices/dev-http/messages/events?api-version=2021-04-12", strings.NewReader("over https"))
	require.NoError(t, err)
	req.Header.Set("Authorization", deviceToken(t, httpCS))
	req.Header.Set("iothub-messageid", "h-1")
	req.Header.Set("iothub-app-Kind", "reading")
	hc := s.HTTPClient()
	defer hc.CloseIdleConnections()
	res, err := hc.Do(req)
	require.NoError(t, err)
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusNoContent, res.StatusCode, "HTTPS telemetry: %s", b)

	ctx, cancel = context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	evs, err = s.WaitEvents(ctx, 3)
	require.NoError(t, err, "WaitEvents(3)")
	require.Len(t, evs, 3, "WaitEvents(3)")
	for i, want := range []iothubtest.Event{
		{DeviceID: "dev1", Protocol: "mqtt", Body: []byte(`{"temp":21.5}`), MessageID: "m-1", CorrelationID: "c-1",
			ContentType: "application/json", ContentEncoding: "utf-8", Properties: map[string]string{"odd name": "a&b=c/é"}},
		{DeviceID: "dev1", ModuleID: "mod1", Protocol: "mqtt", Body: []byte("module says hi")},
		{DeviceID: "dev-http", Protocol: "http", Body: []byte("over https"), MessageID: "h-1", Properties: map[string]string{"kind": "reading"}},
	} {
		got := evs[i]
		assert.False(t, got.EnqueuedTime.IsZero(), "event %d: no EnqueuedTime", i)
		want.EnqueuedTime = got.EnqueuedTime
		if len(want.Properties) == 0 && len(got.Properties) == 0 {
			want.Properties = got.Properties // nil and empty are both "none"
		}
		assert.Equal(t, want, got, "event %d", i)
	}
	// Callers get copies.
	evs[0].Body[0] = 'X'
	require.Equal(t, `{"temp":21.5}`, string(s.Events()[0].Body), "changing a returned event changed the hub's")

	// Another device's topic: the hub closes the connection, stores nothing.
	lost := make(chan error, 1)
	c, err := connect(t, s, devCS, nil, func(err error) { lost <- err })
	require.NoError(t, err)
	c.Publish("devices/dev-http/messages/events/", 1, false, "spoofed")
	select {
	case <-lost:
	case <-time.After(15 * time.Second):
		require.FailNow(t, "publishing to another device's topic did not close the connection")
	}
	require.Len(t, s.Events(), 3, "events after the spoofed message")
}
