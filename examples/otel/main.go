// Command otel traces direct methods with OpenTelemetry on both sides: the
// back-end's service client and the device's method handlers.
//
//	go run ./examples/otel        # an in-process hub; spans go to stdout as JSON
//
// The service client needs no code of its own for tracing: it is an Azure
// SDK for Go client, so azcore's TracingProvider option, fed an
// OpenTelemetry TracerProvider through azotel, gives one span per call
// ("Client.InvokeDeviceMethod", "Client.CreateDevice", …) with azcore's
// HTTP span as its child. A call the hub refuses ends its span with status
// Error and the attribute iothub.error_code (here DeviceNotFound).
//
// The device side has no Azure pipeline, so device.ClientOptions.WrapHandler
// is the hook: it wraps every method handler once, and the wrapper here
// starts a server span per call, records the method name and the status
// the device answered, and marks failures. The same hook serves a metric or
// a log line.
//
// The program prints what it does, then the spans, one JSON document per
// line, as OpenTelemetry's stdout exporter writes them.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/tracing/azotel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "otel:", err)
		os.Exit(1)
	}
}

// run does the whole flow, printing progress to out and the spans to spans.
func run(ctx context.Context, out, spans io.Writer) error {
	// 1. OpenTelemetry: a tracer provider that exports every span to
	// spans as it ends. A real program would export with OTLP instead.
	exp, err := stdouttrace.New(stdouttrace.WithWriter(spans))
	if err != nil {
		return err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tp.Shutdown(context.WithoutCancel(ctx))

	// 2. A hub in-process, with a device registered through the traced
	// service client.
	hub, err := iothubtest.Start(nil)
	if err != nil {
		return err
	}
	defer hub.Close()
	httpClient := hub.HTTPClient()
	defer httpClient.CloseIdleConnections()
	svcOpts := &service.ClientOptions{}
	svcOpts.Transport = httpClient
	svcOpts.TracingProvider = azotel.NewTracingProvider(tp, nil)
	svc, err := service.NewClientFromConnectionString(hub.ServiceConnectionString(), svcOpts)
	if err != nil {
		return err
	}
	d, err := svc.CreateDevice(ctx, &service.Device{DeviceID: "traced-device"})
	if err != nil {
		return err
	}
	devCS, err := svc.DeviceConnectionString(d, service.KeyKindPrimary)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "service: registered %s\n", d.DeviceID)

	// 3. The device: every handler wrapped in a span.
	dev, err := device.NewClientFromConnectionString(devCS, &device.ClientOptions{
		TLSConfig:   hub.TLSConfig(),
		WrapHandler: traceHandler(tp.Tracer("iothub-device-example")),
	})
	if err != nil {
		return err
	}
	defer dev.Close(context.WithoutCancel(ctx))
	err = dev.SetMethodHandler("reboot", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
		return device.JSONResponse(200, map[string]string{"result": "Reboot started."})
	})
	if err != nil {
		return err
	}
	err = dev.SetMethodHandler("firmwareUpdate", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
		return nil, &device.MethodError{Status: 400, Message: "firmwareUpdate needs a fwPackageURI"}
	})
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := dev.Connect(cctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "device:  %s connected\n", d.DeviceID)

	// 4. Three calls: one the device answers 200, one it refuses with 400,
	// and one for a device the hub does not know (404 DeviceNotFound).
	call := service.CloudToDeviceMethod{MethodName: "reboot", ResponseTimeout: 30 * time.Second}
	res, err := svc.InvokeDeviceMethod(ctx, d.DeviceID, call)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "service: reboot answered %d %s\n", res.Status, res.Payload)
	call.MethodName = "firmwareUpdate"
	if res, err = svc.InvokeDeviceMethod(ctx, d.DeviceID, call); err != nil {
		return err
	}
	fmt.Fprintf(out, "service: firmwareUpdate answered %d %s\n", res.Status, res.Payload)
	call.MethodName = "reboot"
	_, err = svc.InvokeDeviceMethod(ctx, "no-such-device", call)
	var re *service.ResponseError
	if !errors.As(err, &re) {
		return fmt.Errorf("invoking a device that does not exist: got %v, want a hub error", err)
	}
	fmt.Fprintf(out, "service: no-such-device: %d %s\n", re.StatusCode, re.ErrorCode)
	fmt.Fprintln(out, "spans:")
	return tp.ForceFlush(ctx)
}

// traceHandler is the device's middleware: a server span around each
// method call, named after the method, with the answered status.
func traceHandler(tracer trace.Tracer) func(device.MethodHandler) device.MethodHandler {
	return func(next device.MethodHandler) device.MethodHandler {
		return func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
			ctx, span := tracer.Start(ctx, "method "+req.Name, trace.WithSpanKind(trace.SpanKindServer),
				trace.WithAttributes(attribute.String("iothub.method.name", req.Name)))
			defer span.End()
			resp, err := next(ctx, req)
			status := http.StatusInternalServerError // what the client answers for a plain error
			var me *device.MethodError
			switch {
			case err == nil && resp != nil:
				status = resp.Status
			case errors.As(err, &me) && me.Status != 0:
				status = me.Status
			}
			span.SetAttributes(attribute.Int("iothub.method.status", status))
			if err != nil {
				span.RecordError(err)
			}
			if status >= 400 {
				span.SetStatus(codes.Error, http.StatusText(status))
			}
			return resp, err
		}
	}
}
