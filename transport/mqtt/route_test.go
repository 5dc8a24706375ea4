package mqtt

import (
	"testing"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/assert"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/transport"
)

func TestUnder(t *testing.T) {
	for _, tc := range []struct {
		topic, filter string
		want          bool
	}{
		{"$iothub/methods/POST/reboot/?$rid=1", methodsFilter, true},
		{"$iothub/methods/POST/", methodsFilter, true},
		{"$iothub/methods/POST", methodsFilter, true}, // '#' matches the parent level
		{"$iothub/methods/POSTX/a", methodsFilter, false},
		{"$iothub/methods/res/200/?$rid=1", methodsFilter, false},
		{"$iothub/twin/res/200/?$rid=1", twinResponseFilter, true},
		{"$iothub/twin/PATCH/properties/desired/?$version=2", desiredFilter, true},
		{"$iothub/twin/PATCH/properties/reported/?$rid=1", desiredFilter, false},
		{"", methodsFilter, false},
	} {
		assert.Equal(t, tc.want, under(tc.topic, tc.filter), "%q under %q", tc.topic, tc.filter)
	}
}

func TestUnderCloud(t *testing.T) {
	for _, tc := range []struct {
		topic, id string
		want      bool
	}{
		{"devices/d1/messages/devicebound/%24.mid=1", "d1", true},
		{"devices/d1/messages/devicebound/", "d1", true},
		{"devices/d1/messages/devicebound", "d1", true},
		{"devices/d1/messages/deviceboundX", "d1", false},
		{"devices/d10/messages/devicebound/", "d1", false},
		{"devices/d/messages/devicebound/", "d1", false},
		{"devices/a+b/messages/devicebound/x", "a+b", true}, // a literal level, not a wildcard
		{"modules/d1/messages/devicebound/", "d1", false},
	} {
		assert.Equal(t, tc.want, underCloud(tc.topic, tc.id), "%q for %q", tc.topic, tc.id)
	}
}

// fakeMessage is a paho.Message with a topic and a payload.
type fakeMessage struct {
	paho.Message
	topic   string
	payload []byte
}

func (m *fakeMessage) Topic() string   { return m.topic }
func (m *fakeMessage) Payload() []byte { return m.payload }
func (m *fakeMessage) Ack()            {}

// TestRoute checks that route, paho's only handler, hands each topic to
// its handler and drops the others, and that modules get no
// cloud-to-device messages.
func TestRoute(t *testing.T) {
	var methods []string
	var patches int
	var cloud int
	c := &conn{
		id:       auth.Identity{HostName: "h", DeviceID: "d1"},
		log:      discard{},
		methods:  func(r *transport.MethodRequest) { methods = append(methods, r.Name+"/"+r.RequestID) },
		desired:  func([]byte) { patches++ },
		messages: func(*transport.CloudMessage) { cloud++ },
	}
	for _, topic := range []string{
		"$iothub/methods/POST/reboot/?$rid=7",
		"$iothub/twin/PATCH/properties/desired/?$version=3",
		"devices/d1/messages/devicebound/%24.mid=m1",
		"devices/d2/messages/devicebound/%24.mid=m2", // another device's: dropped
		"$iothub/unknown/x",                          // no filter: dropped
	} {
		c.route(nil, &fakeMessage{topic: topic, payload: []byte(`{"a":1}`)})
	}
	assert.Equal(t, []string{"reboot/7"}, methods)
	assert.Equal(t, 1, patches)
	assert.Equal(t, 1, cloud)

	c.id.ModuleID = "m1"
	c.route(nil, &fakeMessage{topic: "devices/d1/messages/devicebound/%24.mid=m3"})
	assert.Equal(t, 1, cloud, "a module routes no cloud-to-device message")
}

// discard is a logger that drops everything.
type discard struct{}

func (discard) Debug(string, ...any) {}
