//go:build conformance

package conformance

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/service"
)

// hubTLS is a client TLS configuration that trusts the hub's --ca-file.
func hubTLS(t *testing.T, h *hubProc) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(h.caFile)
	require.NoError(t, err)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(pem), "the hub's --ca-file holds no certificate")
	return &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
}

// serviceClient is our service client for the hub process, with the
// connection string it printed and a transport trusting its --ca-file.
func serviceClient(t *testing.T, h *hubProc) *service.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: hubTLS(t, h)}
	t.Cleanup(tr.CloseIdleConnections)
	opts := &service.ClientOptions{}
	opts.Transport = &http.Client{Transport: tr}
	c, err := service.NewClientFromConnectionString(h.serviceCS, opts)
	require.NoError(t, err)
	return c
}

// TestServiceClient drives the official Node device SDK with this SDK's
// service client, through `iothub hub` on the standard ports.
func TestServiceClient(t *testing.T) {
	h := startHub(t, "svc-mqtt", "svc-offline")
	c := serviceClient(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// checkEcho invokes "reboot" and checks device.js's answer:
	// 200 {"result":"ok","payload":<the request payload>}.
	checkEcho := func(t *testing.T, deviceID string) {
		t.Helper()
		payload := `{"who":"go service","n":[1,2.5,"x",null,{"deep":true}]}`
		res, err := c.InvokeDeviceMethod(ctx, deviceID, service.CloudToDeviceMethod{
			MethodName: "reboot", Payload: json.RawMessage(payload), ResponseTimeout: 30 * time.Second})
		require.NoError(t, err, "InvokeDeviceMethod")
		require.Equal(t, 200, res.Status, "status; payload %s", res.Payload)
		want := mustJSON(map[string]any{"result": "ok", "payload": decode(t, payload)})
		require.Equal(t, want, mustJSON(decode(t, string(res.Payload))), "payload")
	}

	t.Run("invoke a Node device over mqtt", func(t *testing.T) {
		devicePeer(t, h, "svc-mqtt", "mqtt")
		checkEcho(t, "svc-mqtt")
	})

	t.Run("offline device", func(t *testing.T) {
		_, err := c.InvokeDeviceMethod(ctx, "svc-offline", service.CloudToDeviceMethod{MethodName: "reboot"})
		require.ErrorIs(t, err, service.ErrDeviceNotOnline, "invoke of an offline device")
		var re *service.ResponseError
		require.ErrorAs(t, err, &re, "invoke of an offline device")
		require.Equal(t, 404103, re.Code, "invoke of an offline device: %v", err)
	})

	t.Run("device created by the service client", func(t *testing.T) {
		for _, transport := range []string{"mqtt", "mqttws"} {
			id := "svc-created-" + transport
			d, err := c.CreateDevice(ctx, &service.Device{DeviceID: id})
			require.NoError(t, err, "CreateDevice")
			cs, err := c.DeviceConnectionString(d, service.KeyKindSecondary)
			require.NoError(t, err)
			h.deviceCS[id] = cs // what devicePeer hands to device.js
			devicePeer(t, h, id, transport)
			checkEcho(t, id)
			got, err := c.GetDevice(ctx, id)
			require.NoError(t, err, "GetDevice after connecting")
			require.Equal(t, service.DeviceConnectionStateConnected, got.ConnectionState, "GetDevice after connecting: %+v", got)
		}
	})
}
