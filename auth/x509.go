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
	"time"
)

// Errors wrapped by the X.509 checks. Use errors.Is.
var (
	// ErrX509Thumbprint: a self-signed identity presented a certificate
	// whose thumbprints match neither configured thumbprint.
	ErrX509Thumbprint = errors.New("iothub: certificate thumbprint does not match")
	// ErrX509Chain: a CA-signed identity presented a certificate that does
	// not chain to a trusted CA, is outside its validity period, or is not
	// usable for client authentication.
	ErrX509Chain = errors.New("iothub: certificate is not trusted")
	// ErrX509CommonName: the certificate's CN does not name the identity.
	ErrX509CommonName = errors.New("iothub: certificate common name does not match the identity")
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

// CheckThumbprintSyntax reports whether s is a registry thumbprint: 40 (SHA-1)
// or 64 (SHA-256) hex digits, either case.
func CheckThumbprintSyntax(s string) error {
	if len(s) != 40 && len(s) != 64 {
		return fmt.Errorf("iothub: thumbprint has %d characters, want 40 (SHA-1) or 64 (SHA-256) hex digits", len(s))
	}
	if _, err := hex.DecodeString(s); err != nil {
		return errors.New("iothub: thumbprint is not hexadecimal")
	}
	return nil
}

// CheckThumbprint checks a self-signed identity's certificate as IoT Hub
// does: cert must be within its validity period at now, and its SHA-1 or
// SHA-256 thumbprint must equal primary or secondary (case-insensitive;
// empty ones are skipped).
func CheckThumbprint(cert *x509.Certificate, primary, secondary string, now time.Time) error {
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return fmt.Errorf("%w: certificate is valid from %s to %s", ErrX509Chain,
			cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
	}
	got := ComputeThumbprints(cert.Raw)
	for _, want := range []string{primary, secondary} {
		if want != "" && (strings.EqualFold(want, got.SHA1) || strings.EqualFold(want, got.SHA256)) {
			return nil
		}
	}
	return fmt.Errorf("%w: SHA1Hash=%s, SHA2Hash=%s; configuration: PrimaryThumbprint=%s, SecondaryThumbprint=%s",
		ErrX509Thumbprint, got.SHA1, got.SHA256, orNone(primary), orNone(secondary))
}

func orNone(s string) string {
	if s == "" {
		return "null"
	}
	return s
}

// CheckCASigned checks a CA-signed identity's certificate chain as IoT Hub
// does: chain[0] (the leaf) must verify up to one of roots at now, through
// the other certificates of chain as intermediates, be usable for client
// authentication, and have the common name id.String() (the device id, or
// "deviceID/moduleID" for a module). A nil roots trusts nothing (never the
// system roots).
func CheckCASigned(chain []*x509.Certificate, roots *x509.CertPool, id Identity, now time.Time) error {
	if len(chain) == 0 {
		return fmt.Errorf("%w: no certificate presented", ErrX509Chain)
	}
	if roots == nil {
		// x509.Verify would fall back to the system roots; the hub trusts
		// only the CAs registered with it.
		return fmt.Errorf("%w: no trusted CA configured", ErrX509Chain)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrX509Chain, err)
	}
	if cn := chain[0].Subject.CommonName; cn != id.String() {
		return fmt.Errorf("%w: CN is %q, want %q", ErrX509CommonName, cn, id.String())
	}
	return nil
}
