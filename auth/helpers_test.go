package auth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Test keys. Each is the base64 of a distinctive ASCII text, so a test can
// look for both the base64 form and the raw bytes in any output.
const (
	// base64("iothub-test-key-03-0123456789abcdef"); its signature over the
	// protocol.md §2.2 vector contains '+', '/' and '='.
	primaryKey = "aW90aHViLXRlc3Qta2V5LTAzLTAxMjM0NTY3ODlhYmNkZWY="
	// base64("secondary-key-for-iothub-tests!!")
	secondaryKey = "c2Vjb25kYXJ5LWtleS1mb3ItaW90aHViLXRlc3RzISE="
	// base64("a-third-key-that-nobody-configured")
	otherKey = "YS10aGlyZC1rZXktdGhhdC1ub2JvZHktY29uZmlndXJlZA=="
)

const (
	hubHost = "myiothub.azure-devices.net"
	// the protocol.md §2.2 test vector expiry
	vectorExpiry = 1578941692
)

// mustDecode decodes a base64 test key.
func mustDecode(t testing.TB, k string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(k)
	require.NoError(t, err, "bad test key %q", k)
	return b
}

// testEncode is the test's own RFC 3986 encoder: unreserved characters are
// kept, every other byte becomes upper-case %XX.
func testEncode(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '_', c == '.', c == '~':
			b.WriteByte(c)
		default:
			const hexdig = "0123456789ABCDEF"
			b.WriteByte('%')
			b.WriteByte(hexdig[c>>4])
			b.WriteByte(hexdig[c&0xf])
		}
	}
	return b.String()
}

// testSig returns base64(HMAC-SHA256(key, sr + "\n" + se)), computed
// independently of the package.
func testSig(t testing.TB, b64Key, sr, se string) string {
	t.Helper()
	m := hmac.New(sha256.New, mustDecode(t, b64Key))
	m.Write([]byte(sr + "\n" + se))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// testToken builds "SharedAccessSignature sr=…&sig=…&se=…[&skn=…]" from a raw
// (already encoded) sr, signing exactly that raw text.
func testToken(t testing.TB, b64Key, rawSR, se, skn string) string {
	t.Helper()
	tok := "SharedAccessSignature sr=" + rawSR + "&sig=" + testEncode(testSig(t, b64Key, rawSR, se)) + "&se=" + se
	if skn != "" {
		tok += "&skn=" + testEncode(skn)
	}
	return tok
}

// fakeClock is a settable clock for TokenOptions.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// ---- X.509 helpers ----

// certKey is a generated certificate and its key.
type certKey struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// certOpts describes a certificate to generate.
type certOpts struct {
	CN        string
	CA        bool
	NotBefore time.Time
	NotAfter  time.Time
	// ExtKeyUsage of the certificate; nil means none (any usage).
	ExtKeyUsage []x509.ExtKeyUsage
}

var serialNumber atomic.Int64

// x509Now is the fixed "current time" of the X.509 tests.
var x509Now = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

// validFor returns opts for a certificate valid around x509Now.
func validFor(cn string) certOpts {
	return certOpts{CN: cn, NotBefore: x509Now.Add(-time.Hour), NotAfter: x509Now.Add(24 * time.Hour)}
}

// issueCert creates a certificate described by o, signed by parent, or
// self-signed when parent is nil.
func issueCert(t testing.TB, o certOpts, parent *certKey) *certKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serialNumber.Add(1)),
		Subject:               pkix.Name{CommonName: o.CN, Organization: []string{"iothub-go tests"}},
		NotBefore:             o.NotBefore,
		NotAfter:              o.NotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           o.ExtKeyUsage,
		BasicConstraintsValid: true,
		IsCA:                  o.CA,
	}
	if o.CA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	}
	signerCert, signerKey := tmpl, key
	if parent != nil {
		signerCert, signerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, &key.PublicKey, signerKey)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return &certKey{Cert: cert, Key: key}
}

// newCA creates a CA certificate valid for ten years around x509Now.
func newCA(t testing.TB, cn string, parent *certKey) *certKey {
	t.Helper()
	return issueCert(t, certOpts{
		CN: cn, CA: true,
		NotBefore: x509Now.AddDate(-5, 0, 0), NotAfter: x509Now.AddDate(5, 0, 0),
	}, parent)
}

// certsPEM encodes certificates as consecutive PEM CERTIFICATE blocks.
func certsPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// keyPEM encodes a private key as a PKCS#8 PEM block.
func keyPEM(t testing.TB, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
