package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/service"
	"github.com/iothub-go/iothub/transport"
	"github.com/iothub-go/iothub/transport/amqp"
	"github.com/iothub-go/iothub/transport/mqtt"
)

// freePort returns a loopback address with a port free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// TestRebootFlowAgainstHubCommand runs the seed's device management flow
// against `iothub hub`, with the connection strings it prints, over MQTT and
// AMQP: the back-end invokes "reboot", the device answers and reports
// iothubDM.reboot.lastReboot, the back-end reads it from the twin, and a
// desired property the back-end sets reaches the device.
func TestRebootFlowAgainstHubCommand(t *testing.T) {
	for _, tc := range []struct {
		name string
		tr   transport.Transport
	}{
		{"mqtt", mqtt.New(nil)},
		{"amqp", amqp.New(nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			amqpAddr := freePort(t)
			next, caFile := startedHub(t, "--device", "dev1", "--amqp-addr", amqpAddr)
			svcCS, ok := strings.CutPrefix(next(), "IOTHUB_SERVICE_CONNECTION_STRING=")
			require.True(t, ok, "service connection string line")
			devCS, ok := strings.CutPrefix(next(), "IOTHUB_DEVICE_CONNECTION_STRING=")
			require.True(t, ok, "device connection string line")
			if tc.name == "amqp" {
				// The printed GatewayHostName names the MQTT port.
				i := strings.Index(devCS, "GatewayHostName=")
				require.GreaterOrEqual(t, i, 0, "device connection string without GatewayHostName: %s", devCS)
				devCS = devCS[:i] + "GatewayHostName=" + amqpAddr
			}
			pem, err := os.ReadFile(caFile)
			require.NoError(t, err)
			pool := x509.NewCertPool()
			require.True(t, pool.AppendCertsFromPEM(pem))
			conf := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()

			// The device: answer "reboot", then report when it rebooted.
			dev, err := device.NewClientFromConnectionString(devCS, &device.ClientOptions{Transport: tc.tr, TLSConfig: conf})
			require.NoError(t, err)
			reported := make(chan error, 1)
			require.NoError(t, dev.SetMethodHandler("reboot", func(context.Context, *device.MethodRequest) (*device.MethodResponse, error) {
				go func() {
					_, err := dev.UpdateReportedProperties(ctx, map[string]any{
						"iothubDM": map[string]any{"reboot": map[string]any{"lastReboot": "2026-12-05T10:00:00Z"}},
					})
					reported <- err
				}()
				return device.JSONResponse(200, map[string]string{"result": "Reboot started."})
			}))
			desired := make(chan device.TwinProperties, 4)
			require.NoError(t, dev.SetDesiredPropertiesHandler(func(_ context.Context, p device.TwinProperties) { desired <- p }))
			require.NoError(t, dev.Connect(ctx))
			defer dev.Close(context.Background())

			// The back-end.
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: conf}}
			defer hc.CloseIdleConnections()
			opts := &service.ClientOptions{}
			opts.Transport = hc
			svc, err := service.NewClientFromConnectionString(svcCS, opts)
			require.NoError(t, err)
			res, err := svc.InvokeDeviceMethod(ctx, "dev1", service.CloudToDeviceMethod{MethodName: "reboot", ResponseTimeout: 30 * time.Second})
			require.NoError(t, err)
			assert.Equal(t, 200, res.Status)
			select {
			case err := <-reported:
				require.NoError(t, err, "reporting lastReboot")
			case <-ctx.Done():
				require.FailNow(t, "the device never reported lastReboot")
			}
			tw, err := svc.GetTwin(ctx, "dev1")
			require.NoError(t, err)
			assert.JSONEq(t, `{"reboot":{"lastReboot":"2026-12-05T10:00:00Z"}}`, string(tw.Reported.Properties["iothubDM"]), "the twin the back-end reads")

			var first device.TwinProperties
			select {
			case first = <-desired: // the whole desired section, once connected
			case <-ctx.Done():
				require.FailNow(t, "the desired handler was never called")
			}
			assert.Equal(t, int64(1), first.Version)
			_, err = svc.UpdateTwin(ctx, "dev1", &service.TwinPatch{Desired: map[string]any{"telemetryInterval": 30}}, nil)
			require.NoError(t, err)
			select {
			case p := <-desired:
				assert.Equal(t, int64(2), p.Version)
				var v int
				require.NoError(t, json.Unmarshal(p.Properties["telemetryInterval"], &v))
				assert.Equal(t, 30, v)
			case <-ctx.Done():
				require.FailNow(t, "the desired change never reached the device")
			}
		})
	}
}
