package netdial

import (
	"crypto/tls"
	"testing"

	"github.com/stretchr/testify/assert"
)

// Devices dialing one hub with one configuration share one copy of it,
// which names the hub; the caller's configuration is left as it was.
func TestSharedClientTLS(t *testing.T) {
	base := &tls.Config{MinVersion: tls.VersionTLS12}
	a := SharedClientTLS(base, "hub.example")
	assert.Same(t, a, SharedClientTLS(base, "hub.example"))
	assert.NotSame(t, base, a)
	assert.Equal(t, "hub.example", a.ServerName)
	assert.Empty(t, base.ServerName)

	other := SharedClientTLS(base, "other.example")
	assert.Equal(t, "other.example", other.ServerName)
	assert.NotSame(t, a, other)
	named := &tls.Config{ServerName: "given"}
	assert.Equal(t, "given", SharedClientTLS(named, "hub.example").ServerName, "a configuration's own server name stays")
	assert.NotSame(t, SharedClientTLS(&tls.Config{}, "hub.example"), SharedClientTLS(&tls.Config{}, "hub.example"), "another configuration, another copy")
}
