package hubauth

import (
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/iothub-go/iothub/auth"
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
	got := auth.ComputeThumbprints(cert.Raw)
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
func CheckCASigned(chain []*x509.Certificate, roots *x509.CertPool, id auth.Identity, now time.Time) error {
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
