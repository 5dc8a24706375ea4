package auth_test

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
)

var clientAuth = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}

// selfSignedDevice returns a self-signed client certificate for dev1.
func selfSignedDevice(t *testing.T) *certKey {
	t.Helper()
	o := validFor("dev1")
	o.ExtKeyUsage = clientAuth
	return issueCert(t, o, nil)
}

func TestX509CredentialConstructors(t *testing.T) {
	dev := selfSignedDevice(t)
	wantTP := auth.Thumbprints{
		SHA1:   strings.ToUpper(hex.EncodeToString(sha1Sum(dev.Cert.Raw))),
		SHA256: strings.ToUpper(hex.EncodeToString(sha256Sum(dev.Cert.Raw))),
	}
	check := func(t *testing.T, c *auth.X509Credential, chainLen int) {
		t.Helper()
		require.NotNil(t, c.Leaf(), "Leaf()")
		require.True(t, bytes.Equal(c.Leaf().Raw, dev.Cert.Raw), "Leaf() is not the device certificate")
		assert.Equal(t, "dev1", c.Leaf().Subject.CommonName, "Leaf CN")
		tc := c.Certificate()
		if assert.Len(t, tc.Certificate, chainLen, "Certificate() chain") {
			assert.True(t, bytes.Equal(tc.Certificate[0], dev.Cert.Raw), "Certificate() does not have the leaf first")
		}
		assert.NotNil(t, tc.PrivateKey, "Certificate() has no private key")
		assert.NotNil(t, tc.Leaf, "Certificate().Leaf")
		assert.Equal(t, wantTP, c.Thumbprints(), "Thumbprints()")
		assert.Contains(t, c.String(), "CN=dev1", "String() lacks the CN")
		assert.Contains(t, c.String(), wantTP.SHA256, "String() lacks the SHA-256 thumbprint")
	}

	t.Run("New", func(t *testing.T) {
		c, err := auth.NewX509Credential(tls.Certificate{Certificate: [][]byte{dev.Cert.Raw}, PrivateKey: dev.Key})
		require.NoError(t, err)
		check(t, c, 1)
	})
	t.Run("New with Leaf set", func(t *testing.T) {
		c, err := auth.NewX509Credential(tls.Certificate{Certificate: [][]byte{dev.Cert.Raw}, PrivateKey: dev.Key, Leaf: dev.Cert})
		require.NoError(t, err)
		check(t, c, 1)
	})
	t.Run("Parse", func(t *testing.T) {
		c, err := auth.ParseX509Credential(certsPEM(dev.Cert), keyPEM(t, dev.Key))
		require.NoError(t, err)
		check(t, c, 1)
	})
	t.Run("Parse chain", func(t *testing.T) {
		// A chain PEM keeps the leaf first and carries the rest along.
		other := newCA(t, "some CA", nil)
		c, err := auth.ParseX509Credential(certsPEM(dev.Cert, other.Cert), keyPEM(t, dev.Key))
		require.NoError(t, err)
		check(t, c, 2)
	})
	t.Run("Load", func(t *testing.T) {
		dir := t.TempDir()
		certFile, keyFile := filepath.Join(dir, "dev1.pem"), filepath.Join(dir, "dev1.key.pem")
		require.NoError(t, os.WriteFile(certFile, certsPEM(dev.Cert), 0o600))
		require.NoError(t, os.WriteFile(keyFile, keyPEM(t, dev.Key), 0o600))
		c, err := auth.LoadX509Credential(certFile, keyFile)
		require.NoError(t, err)
		check(t, c, 1)
	})
}

func TestX509CredentialErrors(t *testing.T) {
	dev := selfSignedDevice(t)
	other := selfSignedDevice(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	require.NoError(t, os.WriteFile(certFile, certsPEM(dev.Cert), 0o600))
	require.NoError(t, os.WriteFile(keyFile, keyPEM(t, other.Key), 0o600))
	tests := []struct {
		name string
		make func() (*auth.X509Credential, error)
	}{
		{"New: no certificate", func() (*auth.X509Credential, error) {
			return auth.NewX509Credential(tls.Certificate{PrivateKey: dev.Key})
		}},
		{"New: no private key", func() (*auth.X509Credential, error) {
			return auth.NewX509Credential(tls.Certificate{Certificate: [][]byte{dev.Cert.Raw}})
		}},
		{"New: bad DER", func() (*auth.X509Credential, error) {
			return auth.NewX509Credential(tls.Certificate{Certificate: [][]byte{[]byte("not DER")}, PrivateKey: dev.Key})
		}},
		{"Parse: garbage", func() (*auth.X509Credential, error) {
			return auth.ParseX509Credential([]byte("garbage"), []byte("garbage"))
		}},
		{"Parse: no key", func() (*auth.X509Credential, error) {
			return auth.ParseX509Credential(certsPEM(dev.Cert), nil)
		}},
		{"Parse: key of another certificate", func() (*auth.X509Credential, error) {
			return auth.ParseX509Credential(certsPEM(dev.Cert), keyPEM(t, other.Key))
		}},
		{"Load: missing files", func() (*auth.X509Credential, error) {
			return auth.LoadX509Credential(filepath.Join(dir, "missing.pem"), filepath.Join(dir, "missing.key"))
		}},
		{"Load: key of another certificate", func() (*auth.X509Credential, error) {
			return auth.LoadX509Credential(certFile, keyFile)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.make()
			require.Error(t, err, "got %v", c)
			assert.Nil(t, c, "credential returned with the error")
			assert.True(t, strings.HasPrefix(err.Error(), "iothub: "), "error %q lacks the package prefix", err)
		})
	}
}

func sha1Sum(b []byte) []byte   { s := sha1.Sum(b); return s[:] }
func sha256Sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

func TestComputeThumbprints(t *testing.T) {
	for _, der := range [][]byte{selfSignedDevice(t).Cert.Raw, {}, []byte("abc")} {
		got := auth.ComputeThumbprints(der)
		want := auth.Thumbprints{
			SHA1:   strings.ToUpper(hex.EncodeToString(sha1Sum(der))),
			SHA256: strings.ToUpper(hex.EncodeToString(sha256Sum(der))),
		}
		assert.Equal(t, want, got, "ComputeThumbprints")
	}
	// Known answer: SHA-1 and SHA-256 of "abc".
	got := auth.ComputeThumbprints([]byte("abc"))
	assert.Equal(t, "A9993E364706816ABA3E25717850C26C9CD0D89D", got.SHA1, "SHA1(abc)")
	assert.Equal(t, "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD", got.SHA256, "SHA256(abc)")
}
