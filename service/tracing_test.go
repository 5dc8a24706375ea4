package service_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/tracing"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub"
	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// recordedSpan is a span of the recording tracer.
type recordedSpan struct {
	name   string
	kind   tracing.SpanKind
	parent *recordedSpan
	attrs  map[string]any
	status tracing.SpanStatus
	desc   string
	ended  bool
}

// spanRecorder is a tracing provider that records every span, as azotel
// would hand them to OpenTelemetry.
type spanRecorder struct {
	mu      sync.Mutex
	tracers []string // "name version" of each tracer created
	spans   []*recordedSpan
	all     []*recordedSpan // every span, take or not
}

type recordedSpanKey struct{}

func (r *spanRecorder) provider() tracing.Provider {
	return tracing.NewProvider(func(name, version string) tracing.Tracer {
		r.mu.Lock()
		r.tracers = append(r.tracers, name+" "+version)
		r.mu.Unlock()
		return tracing.NewTracer(r.start, nil)
	}, nil)
}

func (r *spanRecorder) start(ctx context.Context, name string, o *tracing.SpanOptions) (context.Context, tracing.Span) {
	s := &recordedSpan{name: name, attrs: map[string]any{}}
	s.parent, _ = ctx.Value(recordedSpanKey{}).(*recordedSpan)
	if o != nil {
		s.kind = o.Kind
		for _, a := range o.Attributes {
			s.attrs[a.Key] = a.Value
		}
	}
	r.mu.Lock()
	r.spans = append(r.spans, s)
	r.all = append(r.all, s)
	r.mu.Unlock()
	return context.WithValue(ctx, recordedSpanKey{}, s), tracing.NewSpan(tracing.SpanImpl{
		End: func() {
			r.mu.Lock()
			s.ended = true
			r.mu.Unlock()
		},
		SetAttributes: func(attrs ...tracing.Attribute) {
			r.mu.Lock()
			for _, a := range attrs {
				s.attrs[a.Key] = a.Value
			}
			r.mu.Unlock()
		},
		SetStatus: func(code tracing.SpanStatus, desc string) {
			r.mu.Lock()
			s.status, s.desc = code, desc
			r.mu.Unlock()
		},
	})
}

// take returns the spans recorded since the last call. Take them once the
// calls have returned: they are read without the lock.
func (r *spanRecorder) take() []*recordedSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.spans
	r.spans = nil
	return out
}

// roots returns the spans without a parent, and children the spans under
// parent.
func roots(spans []*recordedSpan) []*recordedSpan { return children(spans, nil) }

func children(spans []*recordedSpan, parent *recordedSpan) []*recordedSpan {
	var out []*recordedSpan
	for _, s := range spans {
		if s.parent == parent {
			out = append(out, s)
		}
	}
	return out
}

// oneCall checks that spans are one ended call span named name with the
// Microsoft.Devices namespace and, when http, one HTTP span under it, and
// returns the call span.
func oneCall(t *testing.T, spans []*recordedSpan, name string, http bool) *recordedSpan {
	t.Helper()
	top := roots(spans)
	require.Len(t, top, 1, "root spans of %s: %+v", name, spans)
	call := top[0]
	assert.Equal(t, name, call.name, "span name")
	assert.Equal(t, tracing.SpanKindInternal, call.kind, "%s: span kind", name)
	assert.True(t, call.ended, "%s: span ended", name)
	assert.Equal(t, "Microsoft.Devices", call.attrs["az.namespace"], "%s: az.namespace", name)
	if http {
		h := children(spans, call)
		require.Len(t, h, 1, "%s: HTTP spans under the call's", name)
		assert.Equal(t, tracing.SpanKindClient, h[0].kind, "%s: HTTP span kind", name)
		assert.True(t, h[0].ended, "%s: HTTP span ended", name)
		assert.Len(t, spans, 2, "%s: spans in all", name)
	} else {
		assert.Len(t, spans, 1, "%s: spans in all (nothing sent)", name)
	}
	return call
}

// With ClientOptions.TracingProvider, every call of the client is one
// span named like the Azure SDKs', over HTTPS to a real local hub; a
// refusal of the hub marks it failed with IoT Hub's error code.
func TestTracing(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	echoDevice(t, hub, hub.AddDevice(t, "online"), nil, 200)
	hub.AddDevice(t, "offline")
	rec := &spanRecorder{}
	c, _ := newClient(t, hub, "", func(o *service.ClientOptions) { o.TracingProvider = rec.provider() })
	ctx := context.Background()
	require.Equal(t, []string{"iothub-service v" + iothub.Version}, rec.tracers, "the tracer the client asked for")

	_, err := c.InvokeDeviceMethod(ctx, "online", echo)
	require.NoError(t, err)
	call := oneCall(t, rec.take(), "Client.InvokeDeviceMethod", true)
	assert.Equal(t, tracing.SpanStatusUnset, call.status, "a successful call's status")
	assert.NotContains(t, call.attrs, "iothub.error_code")

	// 404001 DeviceNotFound.
	_, err = c.GetDevice(ctx, "nobody")
	require.ErrorIs(t, err, service.ErrDeviceNotFound)
	call = oneCall(t, rec.take(), "Client.GetDevice", true)
	assert.Equal(t, tracing.SpanStatusError, call.status, "a failed call's status")
	assert.Contains(t, call.desc, "DeviceNotFound", "the status description")
	assert.Equal(t, "DeviceNotFound", call.attrs["iothub.error_code"])

	// An invalid call fails its span before anything is sent.
	_, err = c.InvokeDeviceMethod(ctx, "online", service.CloudToDeviceMethod{MethodName: "a b"})
	require.ErrorIs(t, err, service.ErrArgumentInvalid)
	call = oneCall(t, rec.take(), "Client.InvokeDeviceMethod", false)
	assert.Equal(t, tracing.SpanStatusError, call.status, "a refused call's status")
	assert.NotContains(t, call.attrs, "iothub.error_code", "no hub, no hub error code")

	listPage := func(o *service.ListDevicesOptions) error {
		_, err := c.NewListDevicesPager(o).NextPage(ctx)
		return err
	}
	// Every call's span records its failure, here an argument refused
	// before anything is sent.
	for name, call := range map[string]func() error{
		"Client.InvokeModuleMethod": func() error { _, err := c.InvokeModuleMethod(ctx, "online", "", echo); return err },
		"Client.CreateDevice":       func() error { _, err := c.CreateDevice(ctx, nil); return err },
		"Client.GetDevice":          func() error { _, err := c.GetDevice(ctx, ""); return err },
		"Client.UpdateDevice":       func() error { _, err := c.UpdateDevice(ctx, &service.Device{DeviceID: "x"}, nil); return err },
		"Client.DeleteDevice":       func() error { return c.DeleteDevice(ctx, "", nil) },
		"Client.ListDevices":        func() error { return listPage(&service.ListDevicesOptions{PageSize: -1}) },
		"Client.CreateModule":       func() error { _, err := c.CreateModule(ctx, nil); return err },
		"Client.GetModule":          func() error { _, err := c.GetModule(ctx, "d", ""); return err },
		"Client.UpdateModule":       func() error { _, err := c.UpdateModule(ctx, nil, nil); return err },
		"Client.DeleteModule":       func() error { return c.DeleteModule(ctx, "d", "", nil) },
		"Client.ListModules":        func() error { _, err := c.ListModules(ctx, ""); return err },
		"Client.GetTwin":            func() error { _, err := c.GetTwin(ctx, ""); return err },
		"Client.UpdateTwin":         func() error { _, err := c.UpdateTwin(ctx, "d", nil, nil); return err },
		"Client.ReplaceTwin":        func() error { _, err := c.ReplaceTwin(ctx, "d", &service.Twin{}, nil); return err },
		"Client.GetModuleTwin":      func() error { _, err := c.GetModuleTwin(ctx, "d", ""); return err },
		"Client.UpdateModuleTwin": func() error {
			_, err := c.UpdateModuleTwin(ctx, "d", "m", &service.TwinPatch{Tags: map[string]any{"a.b": 1}}, nil)
			return err
		},
		"Client.ReplaceModuleTwin": func() error { _, err := c.ReplaceModuleTwin(ctx, "d", "m", nil, nil); return err },
	} {
		require.ErrorIs(t, call(), service.ErrArgumentInvalid, name)
		call := oneCall(t, rec.take(), name, false)
		assert.Equal(t, tracing.SpanStatusError, call.status, "%s: a refused call's status", name)
	}

	// Each registry call, and a module invocation.
	var d *service.Device
	var m *service.Module
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"Client.CreateDevice", func() (err error) { d, err = c.CreateDevice(ctx, &service.Device{DeviceID: "traced"}); return err }},
		{"Client.UpdateDevice", func() (err error) { d, err = c.UpdateDevice(ctx, d, nil); return err }},
		{"Client.ListDevices", func() error { return listPage(nil) }},
		{"Client.CreateModule", func() (err error) {
			m, err = c.CreateModule(ctx, &service.Module{DeviceID: "traced", ModuleID: "m"})
			return err
		}},
		{"Client.GetModule", func() error { _, err := c.GetModule(ctx, "traced", "m"); return err }},
		{"Client.UpdateModule", func() error { _, err := c.UpdateModule(ctx, m, &service.UpdateOptions{IfMatch: "*"}); return err }},
		{"Client.ListModules", func() error { _, err := c.ListModules(ctx, "traced"); return err }},
		{"Client.GetTwin", func() error { _, err := c.GetTwin(ctx, "traced"); return err }},
		{"Client.UpdateTwin", func() error {
			_, err := c.UpdateTwin(ctx, "traced", &service.TwinPatch{Desired: map[string]any{"a": 1}}, nil)
			return err
		}},
		{"Client.ReplaceTwin", func() error {
			_, err := c.ReplaceTwin(ctx, "traced", &service.Twin{}, &service.UpdateOptions{IfMatch: "*"})
			return err
		}},
		{"Client.GetModuleTwin", func() error { _, err := c.GetModuleTwin(ctx, "traced", "m"); return err }},
		{"Client.UpdateModuleTwin", func() error {
			_, err := c.UpdateModuleTwin(ctx, "traced", "m", &service.TwinPatch{Tags: map[string]any{"a": 1}}, nil)
			return err
		}},
		{"Client.ReplaceModuleTwin", func() error {
			_, err := c.ReplaceModuleTwin(ctx, "traced", "m", &service.Twin{}, &service.UpdateOptions{IfMatch: "*"})
			return err
		}},
		{"Client.DeleteModule", func() error { return c.DeleteModule(ctx, "traced", "m", nil) }},
		{"Client.DeleteDevice", func() error { return c.DeleteDevice(ctx, "traced", nil) }},
	} {
		require.NoError(t, tc.call(), tc.name)
		call := oneCall(t, rec.take(), tc.name, true)
		assert.Equal(t, tracing.SpanStatusUnset, call.status, "%s: status", tc.name)
	}
	_, err = c.InvokeModuleMethod(ctx, "online", "nomod", echo)
	require.ErrorIs(t, err, service.ErrModuleNotFound)
	call = oneCall(t, rec.take(), "Client.InvokeModuleMethod", true)
	assert.Equal(t, "ModuleNotFound", call.attrs["iothub.error_code"])

	// DeviceConnectionString does no I/O and has no span.
	_, _ = c.DeviceConnectionString(d, service.KeyKindPrimary)
	assert.Empty(t, rec.take(), "spans of DeviceConnectionString")

	// No span shows a token or a key.
	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.NotEmpty(t, rec.all)
	for _, s := range rec.all {
		text := fmt.Sprint(s.name, s.desc, s.attrs)
		assert.NotContains(t, text, "SharedAccessSignature", "span %s", s.name)
		assert.NotContains(t, text, "sig=", "span %s", s.name)
		assert.NotContains(t, text, d.Authentication.SymmetricKey.PrimaryKey, "span %s", s.name)
	}
}

// InvokeDeviceMethods makes one span per call, like InvokeDeviceMethod's,
// each with its own outcome; they run concurrently (under -race).
func TestTracingInvokeDeviceMethods(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	for _, id := range []string{"online1", "online2"} {
		echoDevice(t, hub, hub.AddDevice(t, id), nil, 200)
	}
	hub.AddDevice(t, "offline")
	rec := &spanRecorder{}
	c, _ := newClient(t, hub, "", func(o *service.ClientOptions) { o.TracingProvider = rec.provider() })

	res := c.InvokeDeviceMethods(context.Background(), []string{"online1", "online2", "offline", "bad id"}, echo, nil)
	require.Len(t, res, 4)
	require.NoError(t, res[0].Err)
	require.NoError(t, res[1].Err)
	require.ErrorIs(t, res[2].Err, service.ErrDeviceNotOnline)
	require.ErrorIs(t, res[3].Err, service.ErrArgumentInvalid)

	spans := rec.take()
	calls := roots(spans)
	require.Len(t, calls, 4, "call spans: %+v", spans)
	var failed, http int
	for _, call := range calls {
		assert.Equal(t, "Client.InvokeDeviceMethod", call.name)
		assert.True(t, call.ended, "a call's span ended")
		assert.Equal(t, "Microsoft.Devices", call.attrs["az.namespace"])
		http += len(children(spans, call))
		if call.status == tracing.SpanStatusError {
			failed++
		}
		if code, ok := call.attrs["iothub.error_code"]; ok {
			assert.Equal(t, "DeviceNotOnline", code, "the one hub error")
		}
	}
	assert.Equal(t, 2, failed, "failed call spans")
	assert.Equal(t, 3, http, "HTTP spans under the calls' (the bad id sends nothing)")
	assert.Len(t, spans, 4+3, "spans in all")
}

// Without a TracingProvider nothing is traced, and nothing breaks.
func TestTracingOff(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c, _ := newClient(t, hub, "", nil)
	_, err := c.GetDevice(context.Background(), "nobody")
	require.ErrorIs(t, err, service.ErrDeviceNotFound)
	res := c.InvokeDeviceMethods(context.Background(), []string{"nobody"}, echo, nil)
	require.ErrorIs(t, res[0].Err, service.ErrDeviceNotFound, fmt.Sprint(res))
}
