package service_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// The checks inside the measured loops stay plain ifs: an assertion
// library's reflection must not add to the allocations reported.

// BenchmarkInvokeDeviceMethod measures a whole direct method round trip
// through the local hub: client pipeline, HTTPS, the hub, MQTT to a paho
// echo device and back. Allocations are the client's and the in-process
// hub's together.
//
//	go test -run '^$' -bench InvokeDeviceMethod -benchmem ./service
func BenchmarkInvokeDeviceMethod(b *testing.B) {
	hub := iothubtest.NewServer(b, nil)
	echoDevice(b, hub, hub.AddDevice(b, "bench"), nil, 200)
	c, _ := newClient(b, hub, "", nil)
	ctx := context.Background()
	for _, bc := range []struct {
		name    string
		payload any
	}{
		{"null", nil},
		{"raw 1KB", json.RawMessage(`"` + string(make1K()) + `"`)},
		{"map", map[string]any{"delaySeconds": 5, "reason": "update"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			m := service.CloudToDeviceMethod{MethodName: "reboot", Payload: bc.payload, ResponseTimeout: 10 * time.Second}
			b.ReportAllocs()
			for b.Loop() {
				res, err := c.InvokeDeviceMethod(ctx, "bench", m)
				if err != nil || res.Status != 200 {
					b.Fatalf("invoke: %v %v", res, err)
				}
			}
		})
	}
}

func make1K() []byte {
	p := make([]byte, 1022)
	for i := range p {
		p[i] = 'a' + byte(i%26)
	}
	return p
}

// BenchmarkClientOverhead measures the service client alone against an
// HTTPS server that answers every call at once, next to a bare net/http
// client posting the same request to the same server: the difference is
// the cost of the client (azcore pipeline, validation, encoding,
// decoding). Run both and compare their ns/op and allocs/op:
//
//	go test -run '^$' -bench ClientOverhead -benchmem ./service
func BenchmarkClientOverhead(b *testing.B) {
	answer := []byte(`{"status":200,"payload":{"delaySeconds":5,"reason":"update"}}`)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_, _ = w.Write(answer)
	}))
	b.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "https://")
	key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	cs := "HostName=bench.azure-devices.net;GatewayHostName=" + host + ";SharedAccessKeyName=service;SharedAccessKey=" + key
	hc := srv.Client()
	hc.Transport.(*http.Transport).TLSClientConfig.ServerName = "example.com" // httptest's certificate name
	c, err := service.NewClientFromConnectionString(cs, &service.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: hc}})
	require.NoError(b, err)
	ctx := context.Background()
	m := service.CloudToDeviceMethod{MethodName: "reboot", Payload: map[string]any{"delaySeconds": 5, "reason": "update"}, ResponseTimeout: 10 * time.Second}
	b.Run("service", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if res, err := c.InvokeDeviceMethod(ctx, "bench", m); err != nil || res.Status != 200 {
				b.Fatalf("invoke: %v %v", res, err)
			}
		}
	})
	body := []byte(`{"methodName":"reboot","responseTimeoutInSeconds":10,"payload":{"delaySeconds":5,"reason":"update"}}`)
	// The payload as iothub bench sends it: JSON text, nothing to encode.
	raw := m
	raw.Payload = json.RawMessage(`{"delaySeconds":5,"reason":"update"}`)
	b.Run("service-raw", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if res, err := c.InvokeDeviceMethod(ctx, "bench", raw); err != nil || res.Status != 200 {
				b.Fatalf("invoke: %v %v", res, err)
			}
		}
	})
	// A bare azcore pipeline (the policies azcore always installs) posting
	// the same request: the floor of a client built on azcore.
	pl := runtime.NewPipeline("bench", "v0.0.0", runtime.PipelineOptions{}, &policy.ClientOptions{Transport: hc})
	b.Run("azcore", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			req, err := runtime.NewRequest(ctx, http.MethodPost, srv.URL+"/twins/bench/methods?api-version=2021-04-12")
			if err != nil {
				b.Fatal(err)
			}
			req.Raw().Header.Set("Authorization", "SharedAccessSignature sr=bench.azure-devices.net&sig=x&se=1&skn=service")
			if err := req.SetBody(streaming.NopCloser(bytes.NewReader(body)), "application/json; charset=utf-8"); err != nil {
				b.Fatal(err)
			}
			res, err := pl.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	})
	b.Run("net-http", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/twins/bench/methods?api-version=2021-04-12", bytes.NewReader(body))
			req.Header.Set("Authorization", "SharedAccessSignature sr=bench.azure-devices.net&sig=x&se=1&skn=service")
			req.Header.Set("Content-Type", "application/json; charset=utf-8")
			res, err := hc.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	})
}
