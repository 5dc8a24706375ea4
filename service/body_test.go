package service_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"reflect"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// bodyRecorder passes requests on and records the type of each request
// body and its length as net/http sees them.
type bodyRecorder struct {
	inner policy.Transporter
	mu    sync.Mutex
	types []reflect.Type
	lens  []int64
}

func (b *bodyRecorder) Do(req *http.Request) (*http.Response, error) {
	b.mu.Lock()
	b.types = append(b.types, reflect.TypeOf(req.Body))
	b.lens = append(b.lens, req.ContentLength)
	b.mu.Unlock()
	return b.inner.Do(req)
}

// TestMethodBodyInMemory checks that a method call hands net/http its body
// as io.NopCloser(*bytes.Reader), a body net/http knows to be in memory and
// writes with the headers in one write (memBodyPolicy), with SAS and with
// Entra ID.
func TestMethodBodyInMemory(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	echoDevice(t, hub, hub.AddDevice(t, "dev1"), nil, 200)
	want := reflect.TypeOf(io.NopCloser(bytes.NewReader(nil)))
	for _, entra := range []bool{false, true} {
		o, _ := testOptions(t, hub)
		rec := &bodyRecorder{inner: o.Transport}
		o.Transport = rec
		var c *service.Client
		var err error
		if entra {
			o.Endpoint = "https://" + hub.Addr()
			c, err = service.NewClient("localhost", hub.Credential(), o)
		} else {
			c, err = service.NewClientFromConnectionString(hub.ServiceConnectionString(), o)
		}
		require.NoError(t, err)
		res, err := c.InvokeDeviceMethod(context.Background(), "dev1", echo)
		require.NoError(t, err, "entra %v", entra)
		assert.Equal(t, 200, res.Status, "entra %v", entra)
		rec.mu.Lock()
		require.NotEmpty(t, rec.types, "entra %v: no request seen", entra)
		assert.Equal(t, want, rec.types[len(rec.types)-1], "entra %v: the body net/http got", entra)
		assert.Positive(t, rec.lens[len(rec.lens)-1], "entra %v: a known length", entra)
		rec.mu.Unlock()
	}
}
