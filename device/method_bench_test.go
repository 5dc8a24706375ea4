package device_test

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/internal/bench"
	"github.com/iothub-go/iothub/internal/hub"
	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/transport"
	"github.com/iothub-go/iothub/transport/amqp"
	"github.com/iothub-go/iothub/transport/mqtt"
)

// BenchmarkMethodRoundTrip measures one direct method round trip from the
// hub's engine to a device and back: the hub's protocol endpoint, TLS over
// loopback, the device client (transport, dispatch, handler, answer).
// There is no HTTP and no service client here (iothub bench measures the
// whole path). "paho-raw" is the floor: a responder written directly on
// paho, answering from paho's callback; "amqp-raw" the same on go-amqp
// (iothub bench's). The "-handoff" floors answer off the library's
// delivery goroutine. Allocations are the hub's and the
// device's together; "parallel" keeps GOMAXPROCS calls in flight over 8
// devices.
//
//	go test -run '^$' -bench MethodRoundTrip -benchmem ./device
func BenchmarkMethodRoundTrip(b *testing.B) {
	h, err := hub.Start(hub.Options{})
	require.NoError(b, err)
	defer h.Close()
	tlsConf := &tls.Config{RootCAs: h.CA.Pool(), MinVersion: tls.VersionTLS12}
	addr := h.Addrs()[0].String()
	payload := []byte(`{"data":"` + strings.Repeat("x", 89) + `"}`) // 100 bytes, as iothub bench
	for _, bc := range []struct {
		name string
		tr   transport.Transport // nil: a floor, named
	}{
		{"sdk/mqtt", mqtt.New(nil)},
		{"paho-raw/mqtt", nil},
		{"paho-handoff/mqtt", nil},
		{"sdk/mqtt-ws", mqtt.New(&mqtt.Options{WebSocket: true})},
		{"sdk/amqp", amqp.New(nil)},
		{"amqp-raw/amqp", nil},
		{"amqp-handoff/amqp", nil},
		{"sdk/amqp-ws", amqp.New(&amqp.Options{WebSocket: true})},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ids := make([]auth.Identity, 8)
			for i := range ids {
				id := strings.ReplaceAll(bc.name, "/", "-") + "-" + string(rune('a'+i))
				d, herr := h.Engine.PutDevice(id, engine.Device{}, "")
				require.Nil(b, herr, "PutDevice")
				ids[i] = auth.Identity{DeviceID: id}
				cs := auth.ConnectionString{HostName: h.Engine.HostName(), DeviceID: id,
					SharedAccessKey: *d.Authentication.SymmetricKey.PrimaryKey, GatewayHostName: addr}.Reveal()
				switch handoff := strings.Contains(bc.name, "-handoff/"); {
				case strings.HasPrefix(bc.name, "amqp-"):
					closeFn, err := bench.RawAMQPResponder(context.Background(), cs, handoff, tlsConf)
					require.NoError(b, err, "go-amqp responder")
					b.Cleanup(closeFn)
				case bc.tr == nil:
					rawEchoDevice(b, cs, tlsConf, handoff)
				default:
					sdkEchoDevice(b, cs, tlsConf, bc.tr)
				}
			}
			call := engine.MethodCall{Name: "bench", Payload: payload, ResponseTimeout: 30 * time.Second}
			ctx := context.Background()
			b.Run("serial", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					res, herr := h.Engine.Invoke(ctx, ids[0], call)
					require.Nil(b, herr, "invoke")
					require.Equal(b, 200, res.Status, "invoke: %+v", res)
				}
			})
			b.Run("parallel", func(b *testing.B) {
				b.ReportAllocs()
				next := make(chan int, len(ids))
				for i := range ids {
					next <- i
				}
				b.RunParallel(func(pb *testing.PB) {
					i := <-next
					defer func() { next <- i }()
					for pb.Next() {
						res, herr := h.Engine.Invoke(ctx, ids[i], call)
						// Off the benchmark's goroutine: assert, then stop.
						if !assert.Nil(b, herr, "invoke") || !assert.Equal(b, 200, res.Status, "invoke: %+v", res) {
							return
						}
					}
				})
			})
		})
	}
}

func sdkEchoDevice(b *testing.B, cs string, tlsConf *tls.Config, tr transport.Transport) {
	b.Helper()
	c, err := device.NewClientFromConnectionString(cs, &device.ClientOptions{Transport: tr, TLSConfig: tlsConf})
	require.NoError(b, err)
	require.NoError(b, c.SetMethodHandler("bench", echo))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(b, c.Connect(ctx))
	b.Cleanup(func() { _ = c.Close(context.Background()) })
}

// rawEchoDevice is the floor: paho, one SUBSCRIBE, and a PUBLISH of the
// request payload from paho's callback. With handoff, the PUBLISH is made
// on a goroutine of its own, the least a client that runs handlers off
// paho's goroutine pays ("paho-handoff", as in iothub bench).
func rawEchoDevice(b *testing.B, connStr string, tlsConf *tls.Config, handoff bool) {
	b.Helper()
	cs, err := auth.ParseDeviceConnectionString(connStr)
	require.NoError(b, err)
	tp, err := cs.TokenProvider(nil)
	require.NoError(b, err)
	tok, err := tp.Token(context.Background())
	require.NoError(b, err)
	id := cs.Identity()
	conf := tlsConf.Clone()
	conf.ServerName = "127.0.0.1"
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tls://" + cs.Address()).SetClientID(id.String()).
		SetUsername(id.HostName + "/" + id.String() + "/?api-version=2021-04-12").SetPassword(tok.Value).
		SetTLSConfig(conf).SetProtocolVersion(4).SetAutoReconnect(false).SetCleanSession(false))
	t := c.Connect()
	require.True(b, t.WaitTimeout(30*time.Second), "paho connect: no CONNACK")
	require.NoError(b, t.Error(), "paho connect")
	b.Cleanup(func() { c.Disconnect(50) })
	answer := func(c paho.Client, m paho.Message) {
		topic := m.Topic()
		if i := strings.Index(topic, "?$rid="); i >= 0 {
			c.Publish("$iothub/methods/res/200/?$rid="+topic[i+6:], 0, false, m.Payload())
		}
	}
	if handoff {
		raw := answer
		answer = func(c paho.Client, m paho.Message) { go raw(c, m) }
	}
	t = c.Subscribe("$iothub/methods/POST/#", 0, answer)
	require.True(b, t.WaitTimeout(30*time.Second), "paho subscribe: no SUBACK")
	require.NoError(b, t.Error(), "paho subscribe")
}
