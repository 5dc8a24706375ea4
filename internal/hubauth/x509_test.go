package hubauth_test

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hubauth"
)

func TestCheckThumbprintSyntax(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{strings.Repeat("a", 40), true},
		{strings.Repeat("F", 40), true},
		{strings.Repeat("0", 64), true},
		{"A9993E364706816ABA3E25717850C26C9CD0D89D", true},
		{"a9993e364706816aba3e25717850c26c9cd0d89d", true},
		{"", false},
		{strings.Repeat("a", 39), false},
		{strings.Repeat("a", 41), false},
		{strings.Repeat("a", 63), false},
		{strings.Repeat("a", 65), false},
		{strings.Repeat("a", 128), false},
		{strings.Repeat("g", 40), false},
		{strings.Repeat("a", 38) + "  ", false},
		{strings.Repeat("ab:", 13) + "a", false},
		{"0x" + strings.Repeat("a", 38), false},
	}
	for _, tt := range tests {
		err := hubauth.CheckThumbprintSyntax(tt.in)
		if tt.ok {
			assert.NoError(t, err, "CheckThumbprintSyntax(%q)", tt.in)
			continue
		}
		if assert.Error(t, err, "CheckThumbprintSyntax(%q)", tt.in) {
			assert.True(t, strings.HasPrefix(err.Error(), "iothub: "), "error %q lacks the package prefix", err)
		}
	}
	// What auth.ComputeThumbprints gives passes the check.
	for _, der := range [][]byte{selfSignedDevice(t).Cert.Raw, {}, []byte("abc")} {
		got := auth.ComputeThumbprints(der)
		assert.NoError(t, hubauth.CheckThumbprintSyntax(got.SHA1), "CheckThumbprintSyntax(SHA1)")
		assert.NoError(t, hubauth.CheckThumbprintSyntax(got.SHA256), "CheckThumbprintSyntax(SHA256)")
	}
}

func TestCheckThumbprint(t *testing.T) {
	dev := selfSignedDevice(t)
	tp := auth.ComputeThumbprints(dev.Cert.Raw)
	otherTP := auth.ComputeThumbprints(selfSignedDevice(t).Cert.Raw)
	tests := []struct {
		name      string
		primary   string
		secondary string
		now       time.Time
		wantErr   error
	}{
		{"SHA-1 primary", tp.SHA1, "", x509Now, nil},
		{"SHA-256 primary", tp.SHA256, "", x509Now, nil},
		{"lower-case SHA-1", strings.ToLower(tp.SHA1), "", x509Now, nil},
		{"lower-case SHA-256", strings.ToLower(tp.SHA256), otherTP.SHA256, x509Now, nil},
		{"secondary SHA-1", otherTP.SHA1, tp.SHA1, x509Now, nil},
		{"secondary SHA-256, no primary", "", tp.SHA256, x509Now, nil},
		{"SHA-1 of another cert", otherTP.SHA1, otherTP.SHA256, x509Now, hubauth.ErrX509Thumbprint},
		{"none configured", "", "", x509Now, hubauth.ErrX509Thumbprint},
		{"truncated thumbprint", tp.SHA256[:40], "", x509Now, hubauth.ErrX509Thumbprint},
		{"expired", tp.SHA1, tp.SHA256, dev.Cert.NotAfter.Add(time.Second), hubauth.ErrX509Chain},
		{"not yet valid", tp.SHA1, tp.SHA256, dev.Cert.NotBefore.Add(-time.Second), hubauth.ErrX509Chain},
		{"at NotAfter", tp.SHA1, "", dev.Cert.NotAfter, nil},
		{"at NotBefore", tp.SHA1, "", dev.Cert.NotBefore, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := hubauth.CheckThumbprint(dev.Cert, tt.primary, tt.secondary, tt.now)
			if tt.wantErr == nil {
				require.NoError(t, err, "CheckThumbprint")
				return
			}
			require.ErrorIs(t, err, tt.wantErr)
			if tt.wantErr == hubauth.ErrX509Thumbprint {
				// The hub's diagnostic names both computed hashes.
				assert.ErrorContains(t, err, "SHA1Hash="+tp.SHA1, "the error does not show the computed SHA-1 thumbprint")
				assert.ErrorContains(t, err, "SHA2Hash="+tp.SHA256, "the error does not show the computed SHA-256 thumbprint")
			}
		})
	}
}

// testCA is a root, an intermediate under it, and the pool trusting the root.
type testCA struct {
	root, inter *certKey
	roots       *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	root := newCA(t, "Test Root CA", nil)
	inter := newCA(t, "Test Intermediate CA", root)
	roots := x509.NewCertPool()
	roots.AddCert(root.Cert)
	return &testCA{root: root, inter: inter, roots: roots}
}

// leaf issues a client certificate under the intermediate.
func (ca *testCA) leaf(t *testing.T, cn string) *certKey {
	t.Helper()
	o := validFor(cn)
	o.ExtKeyUsage = clientAuth
	return issueCert(t, o, ca.inter)
}

func TestCheckCASigned(t *testing.T) {
	ca := newTestCA(t)
	otherCA := newTestCA(t)

	devLeaf := ca.leaf(t, "dev1")
	modLeaf := ca.leaf(t, "dev1/mod1")
	wrongCN := ca.leaf(t, "dev2")
	upperCN := ca.leaf(t, "DEV1")
	foreign := otherCA.leaf(t, "dev1")

	expiredOpts := certOpts{CN: "dev1", NotBefore: x509Now.AddDate(0, 0, -30), NotAfter: x509Now.AddDate(0, 0, -1), ExtKeyUsage: clientAuth}
	expired := issueCert(t, expiredOpts, ca.inter)
	futureOpts := certOpts{CN: "dev1", NotBefore: x509Now.AddDate(0, 0, 1), NotAfter: x509Now.AddDate(0, 0, 30), ExtKeyUsage: clientAuth}
	notYet := issueCert(t, futureOpts, ca.inter)
	serverOpts := validFor("dev1")
	serverOpts.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	serverOnly := issueCert(t, serverOpts, ca.inter)
	bothOpts := validFor("dev1")
	bothOpts.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	both := issueCert(t, bothOpts, ca.inter)
	noEKU := issueCert(t, validFor("dev1"), ca.inter)
	direct := func() *certKey {
		o := validFor("dev1")
		o.ExtKeyUsage = clientAuth
		return issueCert(t, o, ca.root)
	}()
	selfSigned := selfSignedDevice(t)

	dev := auth.Identity{HostName: devHost, DeviceID: "dev1"}
	mod := auth.Identity{HostName: devHost, DeviceID: "dev1", ModuleID: "mod1"}

	tests := []struct {
		name    string
		chain   []*x509.Certificate
		id      auth.Identity
		now     time.Time
		wantErr error
	}{
		{"device through intermediate", []*x509.Certificate{devLeaf.Cert, ca.inter.Cert}, dev, x509Now, nil},
		{"device, chain includes the root", []*x509.Certificate{devLeaf.Cert, ca.inter.Cert, ca.root.Cert}, dev, x509Now, nil},
		{"device signed by the root", []*x509.Certificate{direct.Cert}, dev, x509Now, nil},
		{"module CN", []*x509.Certificate{modLeaf.Cert, ca.inter.Cert}, mod, x509Now, nil},
		{"serverAuth and clientAuth", []*x509.Certificate{both.Cert, ca.inter.Cert}, dev, x509Now, nil},
		{"no EKU", []*x509.Certificate{noEKU.Cert, ca.inter.Cert}, dev, x509Now, nil},
		{"no certificate", nil, dev, x509Now, hubauth.ErrX509Chain},
		{"intermediate missing", []*x509.Certificate{devLeaf.Cert}, dev, x509Now, hubauth.ErrX509Chain},
		{"unknown CA", []*x509.Certificate{foreign.Cert, otherCA.inter.Cert}, dev, x509Now, hubauth.ErrX509Chain},
		{"self-signed leaf", []*x509.Certificate{selfSigned.Cert}, dev, x509Now, hubauth.ErrX509Chain},
		{"wrong CN", []*x509.Certificate{wrongCN.Cert, ca.inter.Cert}, dev, x509Now, hubauth.ErrX509CommonName},
		{"CN differs in case", []*x509.Certificate{upperCN.Cert, ca.inter.Cert}, dev, x509Now, hubauth.ErrX509CommonName},
		{"module cert for the device", []*x509.Certificate{modLeaf.Cert, ca.inter.Cert}, dev, x509Now, hubauth.ErrX509CommonName},
		{"device cert for a module", []*x509.Certificate{devLeaf.Cert, ca.inter.Cert}, mod, x509Now, hubauth.ErrX509CommonName},
		{"expired leaf", []*x509.Certificate{expired.Cert, ca.inter.Cert}, dev, x509Now, hubauth.ErrX509Chain},
		{"leaf not yet valid", []*x509.Certificate{notYet.Cert, ca.inter.Cert}, dev, x509Now, hubauth.ErrX509Chain},
		{"far future: leaf and CAs expired", []*x509.Certificate{devLeaf.Cert, ca.inter.Cert}, dev, x509Now.AddDate(6, 0, 0), hubauth.ErrX509Chain},
		{"serverAuth-only leaf", []*x509.Certificate{serverOnly.Cert, ca.inter.Cert}, dev, x509Now, hubauth.ErrX509Chain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := hubauth.CheckCASigned(tt.chain, ca.roots, tt.id, tt.now)
			if tt.wantErr == nil {
				require.NoError(t, err, "CheckCASigned")
				return
			}
			require.ErrorIs(t, err, tt.wantErr)
			assert.True(t, strings.HasPrefix(err.Error(), "iothub: "), "error %q lacks the package prefix", err)
		})
	}

	// An empty pool trusts nothing.
	require.ErrorIs(t, hubauth.CheckCASigned([]*x509.Certificate{devLeaf.Cert, ca.inter.Cert}, x509.NewCertPool(), dev, x509Now), hubauth.ErrX509Chain)
}

// TestCheckCASignedNilRoots: a nil pool must not fall back to the system
// roots. The test makes the system roots trust the test CA (SSL_CERT_FILE),
// so falling back would accept the chain. It must not run in parallel, and
// must be the first user of the system roots in this test binary.
func TestCheckCASignedNilRoots(t *testing.T) {
	ca := newTestCA(t)
	leaf := ca.leaf(t, "dev1")
	dir := t.TempDir()
	rootFile := filepath.Join(dir, "roots.pem")
	require.NoError(t, os.WriteFile(rootFile, certsPEM(ca.root.Cert), 0o600))
	t.Setenv("SSL_CERT_FILE", rootFile)
	t.Setenv("SSL_CERT_DIR", dir)

	dev := auth.Identity{HostName: devHost, DeviceID: "dev1"}
	err := hubauth.CheckCASigned([]*x509.Certificate{leaf.Cert, ca.inter.Cert}, nil, dev, x509Now)
	require.ErrorIs(t, err, hubauth.ErrX509Chain)

	// Control: the system roots really do trust the test CA here, so the
	// check above would have passed with a fallback.
	inter := x509.NewCertPool()
	inter.AddCert(ca.inter.Cert)
	_, verr := leaf.Cert.Verify(x509.VerifyOptions{Intermediates: inter, CurrentTime: x509Now, KeyUsages: clientAuth})
	switch runtime.GOOS {
	case "linux", "freebsd", "openbsd", "netbsd", "dragonfly", "solaris", "illumos":
		require.NoError(t, verr, "control: SSL_CERT_FILE did not make the system roots trust the test CA; "+
			"was the system pool loaded earlier in this binary?")
	default:
		t.Logf("control not asserted on %s: system roots ignore SSL_CERT_FILE (verify error: %v)", runtime.GOOS, verr)
	}
}
