// Package pkitest gives tests certificates from internal/pki, failing the
// test instead of returning errors.
package pkitest

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/internal/pki"
)

// ServerCert returns a leaf for 127.0.0.1 and localhost issued by a fresh
// ECDSA CA, and a pool trusting the CA.
func ServerCert(tb testing.TB) (tls.Certificate, *x509.CertPool) {
	tb.Helper()
	ca, err := pki.NewCA("test CA")
	require.NoError(tb, err, "pkitest: new CA")
	leaf, err := ca.IssueServer("127.0.0.1", "localhost")
	require.NoError(tb, err, "pkitest: issue server certificate")
	return leaf, ca.Pool()
}

// SelfSigned returns a self-signed client certificate with CN = cn, valid
// for a day.
func SelfSigned(tb testing.TB, cn string) tls.Certificate {
	tb.Helper()
	cert, err := pki.SelfSigned(cn, 24*time.Hour)
	require.NoError(tb, err, "pkitest: self-signed certificate")
	return cert
}
