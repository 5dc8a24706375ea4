package httpd

import (
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

func TestC2DHTTPReceiveAndSettle(t *testing.T) {
	h := newTestHub(t)
	dev := h.createDevice("dev1")
	tok := deviceToken(t, auth.Identity{DeviceID: "dev1"}, *dev.Authentication.SymmetricKey.PrimaryKey, time.Now().Add(time.Hour))
	get := func(path string) response {
		return h.do(request{method: http.MethodGet, path: path, auth: tok})
	}
	recvPath := "/devices/dev1/messages/deviceBound?" + apiVersion + "&iothub-messagelocktimeout=60"

	res := get(recvPath)
	require.Equal(t, http.StatusNoContent, res.status, "empty queue: %s", res.body)

	q, herr := h.e.EnqueueC2D("dev1", engine.C2DMessage{MessageID: "m1", CorrelationID: "c1", UserID: "u1",
		To: "/devices/dev1/messages/deviceBound", Ack: "full", ContentType: "application/json", ContentEncoding: "utf-8",
		Properties: map[string]string{"color": "red"}, Body: []byte(`{"x":1}`)})
	require.Nil(t, herr)
	_, herr = h.e.EnqueueC2D("dev1", engine.C2DMessage{MessageID: "m2", Body: []byte("two")})
	require.Nil(t, herr)

	res = get("/devices/dev1/messages/devicebound?" + apiVersion) // Node's spelling
	require.Equal(t, http.StatusOK, res.status, "%s", res.body)
	assert.Equal(t, `{"x":1}`, string(res.body))
	etag := res.header.Get("ETag")
	require.Regexp(t, `^"[0-9a-f-]{36}"$`, etag)
	lock := etag[1 : len(etag)-1]
	hd := res.header
	assert.Equal(t, "m1", hd.Get("iothub-messageid"))
	assert.Equal(t, "c1", hd.Get("iothub-correlationid"))
	assert.Equal(t, "u1", hd.Get("iothub-userid"))
	assert.Equal(t, "/devices/dev1/messages/deviceBound", hd.Get("iothub-to"))
	assert.Equal(t, "full", hd.Get("iothub-ack"))
	assert.Equal(t, "1", hd.Get("iothub-sequencenumber"))
	assert.Equal(t, "0", hd.Get("iothub-deliverycount"))
	assert.Equal(t, "red", hd.Get("iothub-app-color"))
	assert.Equal(t, "application/json", hd.Get("iothub-contenttype"))
	assert.Equal(t, "utf-8", hd.Get("iothub-contentencoding"))
	exp, err := time.Parse(time.RFC3339Nano, hd.Get("iothub-expiry"))
	require.NoError(t, err)
	assert.True(t, exp.Equal(q.ExpiryTime))
	enq, err := time.Parse(time.RFC3339Nano, hd.Get("iothub-enqueuedtime"))
	require.NoError(t, err)
	assert.True(t, enq.Equal(q.EnqueuedTime))

	// m1 is locked: the next receive gets m2, which is abandoned (POST with
	// a bare If-Match, as .NET) and comes back with delivery count 1.
	res = get(recvPath)
	require.Equal(t, http.StatusOK, res.status)
	require.Equal(t, "m2", res.header.Get("iothub-messageid"))
	assert.Equal(t, "/devices/dev1/messages/deviceBound", res.header.Get("iothub-to"), "default iothub-to")
	lock2 := res.header.Get("ETag")
	lock2 = lock2[1 : len(lock2)-1]
	res = h.do(request{method: http.MethodPost, path: "/devices/dev1/messages/deviceBound/" + lock2 + "/abandon?" + apiVersion,
		auth: tok, headers: map[string]string{"If-Match": lock2}})
	require.Equal(t, http.StatusNoContent, res.status, "%s", res.body)
	res = get(recvPath)
	require.Equal(t, http.StatusOK, res.status)
	require.Equal(t, "m2", res.header.Get("iothub-messageid"))
	assert.Equal(t, "1", res.header.Get("iothub-deliverycount"))
	lock2 = res.header.Get("ETag")
	lock2 = lock2[1 : len(lock2)-1]

	// Complete m1 with a quoted If-Match (.NET), reject m2 (Node: no If-Match needed).
	res = h.do(request{method: http.MethodDelete, path: "/devices/dev1/messages/deviceBound/" + lock + "?" + apiVersion,
		auth: tok, headers: map[string]string{"If-Match": etag}})
	require.Equal(t, http.StatusNoContent, res.status, "%s", res.body)
	res = h.do(request{method: http.MethodDelete, path: "/Devices/dev1/Messages/DeviceBound/" + lock2 + "?" + apiVersion + "&reject",
		auth: tok})
	require.Equal(t, http.StatusNoContent, res.status, "%s", res.body)
	assert.Empty(t, h.e.C2DQueue("dev1"))

	// Settling again: 412 DeviceMessageLockLost.
	res = h.do(request{method: http.MethodDelete, path: "/devices/dev1/messages/deviceBound/" + lock + "?" + apiVersion, auth: tok})
	wantRegistryError(t, res, engine.CodeDeviceMessageLockLost)
	res = h.do(request{method: http.MethodPost, path: "/devices/dev1/messages/deviceBound/" + lock + "/abandon?" + apiVersion, auth: tok})
	wantRegistryError(t, res, engine.CodeDeviceMessageLockLost)

	h.e.AdvanceJobClock(15 * time.Second)
	var got []string
	for {
		b, ok := h.e.ReceiveFeedback()
		if !ok {
			break
		}
		for _, r := range b.Records {
			got = append(got, r.OriginalMessageID+":"+r.StatusCode)
		}
		require.Nil(t, h.e.SettleFeedback(b.LockToken, engine.C2DComplete))
	}
	assert.Equal(t, []string{"m1:Success"}, got)
}

func TestC2DHTTPLockExpiry(t *testing.T) {
	h := newTestHub(t)
	dev := h.createDevice("dev1")
	tok := deviceToken(t, auth.Identity{DeviceID: "dev1"}, *dev.Authentication.SymmetricKey.PrimaryKey, time.Now().Add(time.Hour))
	_, herr := h.e.EnqueueC2D("dev1", engine.C2DMessage{MessageID: "m1"})
	require.Nil(t, herr)
	path := "/devices/dev1/messages/deviceBound?" + apiVersion
	res := h.do(request{method: http.MethodGet, path: path, auth: tok})
	require.Equal(t, http.StatusOK, res.status)
	lock := res.header.Get("ETag")
	res = h.do(request{method: http.MethodGet, path: path, auth: tok})
	require.Equal(t, http.StatusNoContent, res.status, "locked")
	h.e.AdvanceJobClock(time.Minute)
	res = h.do(request{method: http.MethodGet, path: path, auth: tok})
	require.Equal(t, http.StatusOK, res.status, "redelivered after the lock expired")
	assert.NotEqual(t, lock, res.header.Get("ETag"))
	assert.Equal(t, "0", res.header.Get("iothub-deliverycount"))
	res = h.do(request{method: http.MethodDelete, path: "/devices/dev1/messages/deviceBound/" + lock[1:len(lock)-1] + "?" + apiVersion, auth: tok})
	wantRegistryError(t, res, engine.CodeDeviceMessageLockLost)
}

func TestC2DHTTPRefused(t *testing.T) {
	h := newTestHub(t)
	dev := h.createDevice("dev1")
	dev2 := h.createDevice("dev2")
	mod := h.createModule("dev1", "mod1")
	tok := deviceToken(t, auth.Identity{DeviceID: "dev1"}, *dev.Authentication.SymmetricKey.PrimaryKey, time.Now().Add(time.Hour))
	tok2 := deviceToken(t, auth.Identity{DeviceID: "dev2"}, *dev2.Authentication.SymmetricKey.PrimaryKey, time.Now().Add(time.Hour))
	modTok := deviceToken(t, auth.Identity{DeviceID: "dev1", ModuleID: "mod1"}, *mod.Authentication.SymmetricKey.PrimaryKey, time.Now().Add(time.Hour))
	recv := "/devices/dev1/messages/deviceBound?" + apiVersion

	wantError(t, h.do(request{method: http.MethodGet, path: recv}), engine.CodeUnauthorized)
	wantError(t, h.do(request{method: http.MethodGet, path: recv, auth: tok2}), engine.CodeUnauthorized)
	wantError(t, h.do(request{method: http.MethodGet, path: recv, auth: h.token("service")}), engine.CodeUnauthorized)
	wantError(t, h.do(request{method: http.MethodGet, path: "/devices/dev1/messages/deviceBound", auth: tok}), engine.CodeInvalidProtocolVersion)
	res := h.do(request{method: http.MethodPost, path: recv, auth: tok})
	assert.Equal(t, http.StatusMethodNotAllowed, res.status)
	assert.Equal(t, http.MethodGet, res.header.Get("Allow"))
	res = h.do(request{method: http.MethodGet, path: "/devices/dev1/messages/deviceBound/x/abandon?" + apiVersion, auth: tok})
	assert.Equal(t, http.StatusMethodNotAllowed, res.status)
	res = h.do(request{method: http.MethodGet, path: "/devices/dev1/modules/mod1/messages/deviceBound?" + apiVersion, auth: modTok})
	wantError(t, res, engine.CodeArgumentInvalid)
	// A policy token with DeviceConnect may poll for any device.
	res = h.do(request{method: http.MethodGet, path: recv, auth: h.token("device")})
	assert.Equal(t, http.StatusNoContent, res.status, "%s", res.body)
}

func TestC2DHTTPPurge(t *testing.T) {
	h := newTestHub(t)
	h.createDevice("dev1")
	for i := 0; i < 3; i++ {
		_, herr := h.e.EnqueueC2D("dev1", engine.C2DMessage{MessageID: strconv.Itoa(i)})
		require.Nil(t, herr)
	}
	d, _ := h.e.GetDevice("dev1")
	require.Equal(t, 3, d.CloudToDeviceMessageCount)
	res := h.do(request{method: http.MethodDelete, path: "/devices/dev1/commands?" + apiVersion, auth: h.token("service")})
	require.Equal(t, http.StatusOK, res.status, "%s", res.body)
	assert.Equal(t, "application/json; charset=utf-8", res.header.Get("Content-Type"))
	var got struct {
		TotalMessagesPurged int    `json:"totalMessagesPurged"`
		DeviceID            string `json:"deviceId"`
	}
	require.NoError(t, json.Unmarshal(res.body, &got))
	assert.Equal(t, 3, got.TotalMessagesPurged)
	assert.Equal(t, "dev1", got.DeviceID)
	assert.Empty(t, h.e.C2DQueue("dev1"))

	res = h.do(request{method: http.MethodDelete, path: "/devices/nope/commands?" + apiVersion, auth: h.token("service")})
	wantRegistryError(t, res, engine.CodeDeviceNotFound)
	res = h.do(request{method: http.MethodDelete, path: "/devices/dev1/commands?" + apiVersion, auth: h.token("registryRead")})
	wantError(t, res, engine.CodeUnauthorized)
	res = h.do(request{method: http.MethodGet, path: "/devices/dev1/commands?" + apiVersion, auth: h.token("service")})
	assert.Equal(t, http.StatusMethodNotAllowed, res.status)
}

func TestMatchDeviceBoundRoute(t *testing.T) {
	for _, tc := range []struct {
		path string
		ok   bool
		dev  string
		mod  string
		op   deviceBoundOp
		lock string
	}{
		{"/devices/d1/messages/deviceBound", true, "d1", "", opReceive, ""},
		{"/devices/d%2F1/messages/devicebound/", true, "d/1", "", opReceive, ""},
		{"/devices/d1/messages/deviceBound/abc", true, "d1", "", opSettle, "abc"},
		{"/devices/d1/messages/deviceBound/abc/Abandon", true, "d1", "", opAbandon, "abc"},
		{"/devices/d1/modules/m1/messages/deviceBound", true, "d1", "m1", opReceive, ""},
		{"/devices/d1/modules/m1/messages/deviceBound/l/abandon", true, "d1", "m1", opAbandon, "l"},
		{"/devices/d1/messages/events", false, "", "", 0, ""},
		{"/devices/d1/messages/deviceBound/a/b", false, "", "", 0, ""},
		{"/devices//messages/deviceBound", false, "", "", 0, ""},
		{"/devices/d1/modules//messages/deviceBound", false, "", "", 0, ""},
		{"/devices/d1/messages/deviceBound/%zz", false, "", "", 0, ""},
	} {
		id, op, lock, ok := matchDeviceBoundRoute(tc.path)
		require.Equal(t, tc.ok, ok, tc.path)
		assert.Equal(t, tc.dev, id.DeviceID, tc.path)
		assert.Equal(t, tc.mod, id.ModuleID, tc.path)
		assert.Equal(t, tc.op, op, tc.path)
		assert.Equal(t, tc.lock, lock, tc.path)
	}
}
