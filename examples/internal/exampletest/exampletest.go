// Package exampletest holds helpers for the examples' tests: a buffer that
// handler goroutines may write to, an in-order output check, and a local
// hub's CA certificate written to a file as `iothub hub --ca-file` would.
package exampletest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/internal/testutil/syncbuf"
	"github.com/iothub-go/iothub/iothubtest"
)

// Buffer is a bytes.Buffer that is safe for concurrent writes, for the
// output of an example whose handlers print from their own goroutines.
type Buffer = syncbuf.Buffer

// Context returns a context that ends with the test or after a minute.
func Context(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// WantInOrder fails the test unless out contains each of want, in order.
func WantInOrder(t *testing.T, out string, want ...string) {
	t.Helper()
	rest := out
	for _, w := range want {
		i := strings.Index(rest, w)
		require.GreaterOrEqual(t, i, 0, "output lacks %q (in this order); got:\n%s", w, out)
		rest = rest[i+len(w):]
	}
}

// CAFile writes the hub's CA certificate to a PEM file in a temporary
// directory and returns its path.
func CAFile(t *testing.T, hub *iothubtest.Server) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(file, hub.CACertPEM(), 0o600))
	return file
}
