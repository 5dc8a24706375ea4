package amqpd

import (
	"fmt"
	"testing"
	"time"

	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Many identities on one connection, with a session per device as the
// Java and .NET SDKs lay them out: more than 255 sessions (IoT Hub
// announces channel-max 8191), each device authenticated by its own
// put-token on one shared $cbs link pair, each answering its own methods.
func TestManyDevicesOneConnection(t *testing.T) {
	f := newFixture(t)
	c := f.mustConnect(nil, nil)
	cbsLinks := newCBS(t, newSession(t, c))
	const n = 300
	devs := make([]*device, n)
	for i := range n {
		id := fmt.Sprintf("mux-%03d", i)
		key := f.addDevice(id)
		st, desc := cbsLinks.putToken(t, testHost+"/devices/"+id, token(t, id, key, time.Now().Add(time.Hour)))
		require.EqualValues(t, 200, st, "put-token %s: %s", id, desc)
		devs[i] = mustAttachMethods(t, newSession(t, c), id)
	}
	for _, i := range []int{0, 254, 255, n - 1} {
		roundTrip(t, f, devs[i], fmt.Sprintf(`{"device":%d}`, i))
	}
}

// IoT Hub refuses the 1,001st identity on one connection at put-token,
// with status 500 and its own description; the identities already there
// keep working.
func TestTokensPerConnectionLimit(t *testing.T) {
	f := newFixture(t)
	c := f.mustConnect(nil, nil)
	s := newSession(t, c)
	cbsLinks := newCBS(t, s)
	keys := map[string]string{}
	for i := range maxIdentities + 1 {
		id := fmt.Sprintf("tok-%04d", i)
		keys[id] = f.addDevice(id)
	}
	for i := range maxIdentities {
		id := fmt.Sprintf("tok-%04d", i)
		st, desc := cbsLinks.putToken(t, testHost+"/devices/"+id, token(t, id, keys[id], time.Now().Add(time.Hour)))
		require.EqualValues(t, 200, st, "put-token %d: %s", i, desc)
	}
	last := fmt.Sprintf("tok-%04d", maxIdentities)
	st, desc := cbsLinks.putToken(t, testHost+"/devices/"+last, token(t, last, keys[last], time.Now().Add(time.Hour)))
	assert.EqualValues(t, 500, st)
	assert.Equal(t, "The maximum number of tokens per connection (1000) has been reached.", desc)
	// A renewal of an identity already on the connection is not a new token.
	st, desc = cbsLinks.putToken(t, testHost+"/devices/tok-0000", token(t, "tok-0000", keys["tok-0000"], time.Now().Add(2*time.Hour)))
	assert.EqualValues(t, 200, st, "renewal: %s", desc)
	roundTrip(t, f, mustAttachMethods(t, s, "tok-0999"), `"still here"`)
}

// One device's trouble stays with that device on a shared connection: a
// put-token with a wrong key is refused for it alone, and disabling
// another device detaches only that device's links.
func TestOneDeviceFailsAlone(t *testing.T) {
	f := newFixture(t)
	keys := map[string]string{}
	for _, id := range []string{"good", "badkey", "disabled"} {
		keys[id] = f.addDevice(id)
	}
	c := f.mustConnect(nil, nil)
	cb := newCBS(t, newSession(t, c))
	st, desc := cb.putToken(t, testHost+"/devices/badkey", token(t, "badkey", keys["good"], time.Now().Add(time.Hour)))
	assert.EqualValues(t, 401, st, "a token signed with another device's key: %s", desc)
	devs := map[string]*device{}
	for _, id := range []string{"good", "disabled"} {
		st, desc := cb.putToken(t, testHost+"/devices/"+id, token(t, id, keys[id], time.Now().Add(time.Hour)))
		require.EqualValues(t, 200, st, "put-token %s: %s", id, desc)
		devs[id] = mustAttachMethods(t, newSession(t, c), id)
	}
	roundTrip(t, f, devs["good"], `"before"`)

	_, herr := f.e.PutDevice("disabled", engine.Device{Status: "disabled"}, "*")
	require.Nil(t, herr)
	_, err := devs["disabled"].req.Receive(ctxT(t), nil)
	require.Error(t, err, "the disabled device's links stay attached")
	roundTrip(t, f, devs["good"], `"after"`)
}
