package service

import (
	"context"
	"errors"
	"strconv"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/tracing"
)

// Span names and attributes (see the package documentation, "Tracing").
const (
	// tracingNamespace is the az.namespace attribute of every span: the
	// IoT Hub resource provider, as the other Azure SDKs name it.
	tracingNamespace = "Microsoft.Devices"
	// attrErrorCode is the attribute holding IoT Hub's error code on the
	// span of a call the hub refused.
	attrErrorCode = "iothub.error_code"
)

// opSpanKey is the context key of the span an operation started, put
// there by the tracer withOpSpans returns.
type opSpanKey struct{}

// withOpSpans returns tr with each span it starts recorded in the
// returned context, so that an operation can add attributes to its own
// span without relying on the provider's SpanFromContext.
func withOpSpans(tr tracing.Tracer) tracing.Tracer {
	if !tr.Enabled() {
		return tr
	}
	return tracing.WrapTracer(tr, func(inner tracing.Tracer) tracing.Tracer {
		return tracing.NewTracer(func(ctx context.Context, name string, o *tracing.SpanOptions) (context.Context, tracing.Span) {
			ctx, span := inner.Start(ctx, name, o)
			return context.WithValue(ctx, opSpanKey{}, &span), span
		}, &tracing.TracerOptions{SpanFromContext: inner.SpanFromContext})
	})
}

// startSpan starts the span of one call of the client, named like the
// Azure SDKs' ("Client.GetDevice"), with azcore's HTTP spans as its
// children. The returned func ends it; given the call's error, it marks
// the span failed and records IoT Hub's error code.
//
// Calls must not run concurrently under one such span: azcore's spans
// share state with their children's (see InvokeDeviceMethods).
func (c *Client) startSpan(ctx context.Context, name string) (context.Context, func(error)) {
	if !c.tracer.Enabled() {
		return ctx, endNothing
	}
	parent := ctx.Value(opSpanKey{})
	ctx, end := runtime.StartSpan(ctx, name, c.tracer, nil)
	return ctx, func(err error) {
		// azcore starts no span for a call nested in another SDK call: the
		// span in ctx is then the outer call's, which this error is not.
		if span, ok := ctx.Value(opSpanKey{}).(*tracing.Span); ok && err != nil && any(span) != parent {
			span.SetAttributes(errorAttributes(err)...)
		}
		end(err)
	}
}

func endNothing(error) {}

// errorAttributes are the attributes of a failed call: IoT Hub's error
// code, by name ("DeviceNotFound") or, when the hub gave only its number,
// by number ("404001"). Other errors have none: the span's status
// describes them.
func errorAttributes(err error) []tracing.Attribute {
	var re *ResponseError
	if !errors.As(err, &re) {
		return nil
	}
	code := string(re.ErrorCode)
	if code == "" && re.Code != 0 {
		code = strconv.Itoa(re.Code)
	}
	if code == "" {
		return nil
	}
	return []tracing.Attribute{{Key: attrErrorCode, Value: code}}
}
