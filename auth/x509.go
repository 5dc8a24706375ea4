package auth

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// X509Credential is a client certificate with its private key, used for
// mutual TLS by identities whose connection string says x509=true. String and
// %v show the subject and thumbprint, never the key.
type X509Credential struct {
	cert tls.Certificate
}

// NewX509Credential wraps a certificate chain and key. The first certificate
// is the identity's own (leaf) certificate.
func NewX509Credential(cert tls.Certificate) (*X509Credential, error) {
	if len(cert.Certificate) == 0 {
		return nil, errors.New("iothub: X.509 credential has no certificate")
	}
	if cert.PrivateKey == nil {
		return nil, errors.New("iothub: X.509 credential has no private key")
	}
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("iothub: X.509 credential: %w", err)
		}
		cert.Leaf = leaf
	}
	return &X509Credential{cert: cert}, nil
}

// LoadX509Credential reads a PEM certificate (chain) and its PEM private key
// from files.
func LoadX509Credential(certFile, keyFile string) (*X509Credential, error) {
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("iothub: loading X.509 credential: %w", err)
	}
	return NewX509Credential(c)
}

// ParseX509Credential parses a PEM certificate (chain) and its PEM private key.
func ParseX509Credential(certPEM, keyPEM []byte) (*X509Credential, error) {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("iothub: parsing X.509 credential: %w", err)
	}
	return NewX509Credential(c)
}

// Certificate returns the certificate for tls.Config.Certificates.
func (c *X509Credential) Certificate() tls.Certificate { return c.cert }

// Leaf returns the identity's own certificate.
func (c *X509Credential) Leaf() *x509.Certificate { return c.cert.Leaf }

// Thumbprints returns the leaf certificate's thumbprints as the registry
// stores them.
func (c *X509Credential) Thumbprints() Thumbprints { return ComputeThumbprints(c.cert.Leaf.Raw) }

// String shows the subject common name and SHA-256 thumbprint.
func (c *X509Credential) String() string {
	return fmt.Sprintf("X509Credential(CN=%s, SHA256=%s)", c.cert.Leaf.Subject.CommonName, c.Thumbprints().SHA256)
}

// GoString is String: the private key never appears.
func (c *X509Credential) GoString() string { return c.String() }

// Thumbprints are the hex digests of a certificate's DER encoding, in upper
// case, as IoT Hub's registry and tooling show them.
type Thumbprints struct {
	SHA1   string // 40 hex digits
	SHA256 string // 64 hex digits
}

// ComputeThumbprints hashes a DER certificate with SHA-1 and SHA-256.
func ComputeThumbprints(der []byte) Thumbprints {
	s1 := sha1.Sum(der)
	s256 := sha256.Sum256(der)
	return Thumbprints{
		SHA1:   strings.ToUpper(hex.EncodeToString(s1[:])),
		SHA256: strings.ToUpper(hex.EncodeToString(s256[:])),
	}
}
