package iothubtest_test

import (
	"context"
	"errors"
	"io"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/iothubtest"
)

// deviceToken mints a SAS token from a device connection string.
func deviceToken(t *testing.T, connStr string) string {
	t.Helper()
	cs, err := auth.ParseDeviceConnectionString(connStr)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := cs.TokenProvider(nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tp.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
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
	if !errors.Is(err, context.DeadlineExceeded) || len(evs) != 0 {
		t.Fatalf("WaitEvents before any event: %d, %v", len(evs), err)
	}

	// MQTT, QoS 1: the message is listed once the PUBACK is in.
	dev := mustConnect(t, s, devCS, nil)
	tok := dev.Publish("devices/dev1/messages/events/%24.mid=m-1&%24.cid=c-1&%24.ct=application%2Fjson&%24.ce=utf-8&odd%20name=a%26b%3Dc%2F%C3%A9", 1, false, `{"temp":21.5}`)
	if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	if n := len(s.Events()); n != 1 {
		t.Fatalf("after the PUBACK the hub lists %d events", n)
	}
	// MQTT, QoS 0, a module.
	mod := mustConnect(t, s, modCS, nil)
	mod.Publish("devices/dev1/modules/mod1/messages/events/", 0, false, "module says hi")
	if _, err := s.WaitEvents(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
	// HTTPS with the device's own token.
	req, _ := http.NewRequest(http.MethodPost, "https://"+s.Addr()+"/devices/dev-http/messages/events?api-version=2021-04-12", strings.NewReader("over https"))
	req.Header.Set("Authorization", deviceToken(t, httpCS))
	req.Header.Set("iothub-messageid", "h-1")
	req.Header.Set("iothub-app-Kind", "reading")
	hc := s.HTTPClient()
	defer hc.CloseIdleConnections()
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("HTTPS telemetry: %d %s", res.StatusCode, b)
	}

	ctx, cancel = context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	evs, err = s.WaitEvents(ctx, 3)
	if err != nil || len(evs) != 3 {
		t.Fatalf("WaitEvents(3): %d, %v", len(evs), err)
	}
	for i, want := range []iothubtest.Event{
		{DeviceID: "dev1", Protocol: "mqtt", Body: []byte(`{"temp":21.5}`), MessageID: "m-1", CorrelationID: "c-1",
			ContentType: "application/json", ContentEncoding: "utf-8", Properties: map[string]string{"odd name": "a&b=c/é"}},
		{DeviceID: "dev1", ModuleID: "mod1", Protocol: "mqtt", Body: []byte("module says hi")},
		{DeviceID: "dev-http", Protocol: "http", Body: []byte("over https"), MessageID: "h-1", Properties: map[string]string{"kind": "reading"}},
	} {
		got := evs[i]
		if got.DeviceID != want.DeviceID || got.ModuleID != want.ModuleID || got.Protocol != want.Protocol ||
			string(got.Body) != string(want.Body) || got.MessageID != want.MessageID || got.CorrelationID != want.CorrelationID ||
			got.ContentType != want.ContentType || got.ContentEncoding != want.ContentEncoding ||
			!maps.Equal(got.Properties, want.Properties) || got.EnqueuedTime.IsZero() {
			t.Errorf("event %d = %+v\nwant %+v", i, got, want)
		}
	}
	// Callers get copies.
	evs[0].Body[0] = 'X'
	if string(s.Events()[0].Body) != `{"temp":21.5}` {
		t.Fatal("changing a returned event changed the hub's")
	}

	// Another device's topic: the hub closes the connection, stores nothing.
	lost := make(chan error, 1)
	c, err := connect(t, s, devCS, nil, func(err error) { lost <- err })
	if err != nil {
		t.Fatal(err)
	}
	c.Publish("devices/dev-http/messages/events/", 1, false, "spoofed")
	select {
	case <-lost:
	case <-time.After(15 * time.Second):
		t.Fatal("publishing to another device's topic did not close the connection")
	}
	if n := len(s.Events()); n != 3 {
		t.Fatalf("the hub lists %d events, want 3", n)
	}
}
