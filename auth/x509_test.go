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
	"runtime"
	"strings"
	"testing"
	"time"

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
		if c.Leaf() == nil || !bytes.Equal(c.Leaf().Raw, dev.Cert.Raw) {
			t.Fatalf("Leaf() is not the device certificate")
		}
		if c.Leaf().Subject.CommonName != "dev1" {
			t.Errorf("Leaf CN = %q", c.Leaf().Subject.CommonName)
		}
		tc := c.Certificate()
		if len(tc.Certificate) != chainLen || !bytes.Equal(tc.Certificate[0], dev.Cert.Raw) {
			t.Errorf("Certificate() has %d certificates, want %d with the leaf first", len(tc.Certificate), chainLen)
		}
		if tc.PrivateKey == nil {
			t.Error("Certificate() has no private key")
		}
		if tc.Leaf == nil {
			t.Error("Certificate().Leaf is nil")
		}
		if got := c.Thumbprints(); got != wantTP {
			t.Errorf("Thumbprints() = %+v, want %+v", got, wantTP)
		}
		if s := c.String(); !strings.Contains(s, "CN=dev1") || !strings.Contains(s, wantTP.SHA256) {
			t.Errorf("String() = %q, want the CN and SHA-256 thumbprint", s)
		}
	}

	t.Run("New", func(t *testing.T) {
		c, err := auth.NewX509Credential(tls.Certificate{Certificate: [][]byte{dev.Cert.Raw}, PrivateKey: dev.Key})
		if err != nil {
			t.Fatal(err)
		}
		check(t, c, 1)
	})
	t.Run("New with Leaf set", func(t *testing.T) {
		c, err := auth.NewX509Credential(tls.Certificate{Certificate: [][]byte{dev.Cert.Raw}, PrivateKey: dev.Key, Leaf: dev.Cert})
		if err != nil {
			t.Fatal(err)
		}
		check(t, c, 1)
	})
	t.Run("Parse", func(t *testing.T) {
		c, err := auth.ParseX509Credential(certsPEM(dev.Cert), keyPEM(t, dev.Key))
		if err != nil {
			t.Fatal(err)
		}
		check(t, c, 1)
	})
	t.Run("Parse chain", func(t *testing.T) {
		// A chain PEM keeps the leaf first and carries the rest along.
		other := newCA(t, "some CA", nil)
		c, err := auth.ParseX509Credential(certsPEM(dev.Cert, other.Cert), keyPEM(t, dev.Key))
		if err != nil {
			t.Fatal(err)
		}
		check(t, c, 2)
	})
	t.Run("Load", func(t *testing.T) {
		dir := t.TempDir()
		certFile, keyFile := filepath.Join(dir, "dev1.pem"), filepath.Join(dir, "dev1.key.pem")
		if err := os.WriteFile(certFile, certsPEM(dev.Cert), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, keyPEM(t, dev.Key), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := auth.LoadX509Credential(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		check(t, c, 1)
	})
}

func TestX509CredentialErrors(t *testing.T) {
	dev := selfSignedDevice(t)
	other := selfSignedDevice(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := os.WriteFile(certFile, certsPEM(dev.Cert), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM(t, other.Key), 0o600); err != nil {
		t.Fatal(err)
	}
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
			if err == nil {
				t.Fatalf("got %v, want an error", c)
			}
			if c != nil {
				t.Errorf("credential returned with the error")
			}
			if !strings.HasPrefix(err.Error(), "iothub: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func sha1Sum(b []byte) []byte   { s := sha1.Sum(b); return s[:] }
func sha256Sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

func TestComputeThumbprints(t *testing.T) {
	for _, der := range [][]byte{selfSignedDevice(t).Cert.Raw, {}, []byte("abc")} {
		got := auth.ComputeThumbprints(der)
		want1 := strings.ToUpper(hex.EncodeToString(sha1Sum(der)))
		want256 := strings.ToUpper(hex.EncodeToString(sha256Sum(der)))
		if got.SHA1 != want1 || got.SHA256 != want256 {
			t.Errorf("ComputeThumbprints = %+v, want SHA1 %s SHA256 %s", got, want1, want256)
		}
		if err := auth.CheckThumbprintSyntax(got.SHA1); err != nil {
			t.Errorf("CheckThumbprintSyntax(SHA1): %v", err)
		}
		if err := auth.CheckThumbprintSyntax(got.SHA256); err != nil {
			t.Errorf("CheckThumbprintSyntax(SHA256): %v", err)
		}
	}
	// Known answer: SHA-1 and SHA-256 of "abc".
	got := auth.ComputeThumbprints([]byte("abc"))
	if got.SHA1 != "A9993E364706816ABA3E25717850C26C9CD0D89D" {
		t.Errorf("SHA1(abc) = %s", got.SHA1)
	}
	if got.SHA256 != "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD" {
		t.Errorf("SHA256(abc) = %s", got.SHA256)
	}
}

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
		err := auth.CheckThumbprintSyntax(tt.in)
		if tt.ok && err != nil {
			t.Errorf("CheckThumbprintSyntax(%q) = %v, want nil", tt.in, err)
		}
		if !tt.ok {
			if err == nil {
				t.Errorf("CheckThumbprintSyntax(%q) = nil, want an error", tt.in)
			} else if !strings.HasPrefix(err.Error(), "iothub: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		}
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
		{"SHA-1 of another cert", otherTP.SHA1, otherTP.SHA256, x509Now, auth.ErrX509Thumbprint},
		{"none configured", "", "", x509Now, auth.ErrX509Thumbprint},
		{"truncated thumbprint", tp.SHA256[:40], "", x509Now, auth.ErrX509Thumbprint},
		{"expired", tp.SHA1, tp.SHA256, dev.Cert.NotAfter.Add(time.Second), auth.ErrX509Chain},
		{"not yet valid", tp.SHA1, tp.SHA256, dev.Cert.NotBefore.Add(-time.Second), auth.ErrX509Chain},
		{"at NotAfter", tp.SHA1, "", dev.Cert.NotAfter, nil},
		{"at NotBefore", tp.SHA1, "", dev.Cert.NotBefore, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := auth.CheckThumbprint(dev.Cert, tt.primary, tt.secondary, tt.now)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("CheckThumbprint: %v", err)
				}
				return
			}
			wantErrIs(t, err, tt.wantErr)
			if tt.wantErr == auth.ErrX509Thumbprint {
				// The hub's diagnostic names both computed hashes.
				if msg := err.Error(); !strings.Contains(msg, "SHA1Hash="+tp.SHA1) || !strings.Contains(msg, "SHA2Hash="+tp.SHA256) {
					t.Errorf("error %q does not show the computed thumbprints", msg)
				}
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
		{"no certificate", nil, dev, x509Now, auth.ErrX509Chain},
		{"intermediate missing", []*x509.Certificate{devLeaf.Cert}, dev, x509Now, auth.ErrX509Chain},
		{"unknown CA", []*x509.Certificate{foreign.Cert, otherCA.inter.Cert}, dev, x509Now, auth.ErrX509Chain},
		{"self-signed leaf", []*x509.Certificate{selfSigned.Cert}, dev, x509Now, auth.ErrX509Chain},
		{"wrong CN", []*x509.Certificate{wrongCN.Cert, ca.inter.Cert}, dev, x509Now, auth.ErrX509CommonName},
		{"CN differs in case", []*x509.Certificate{upperCN.Cert, ca.inter.Cert}, dev, x509Now, auth.ErrX509CommonName},
		{"module cert for the device", []*x509.Certificate{modLeaf.Cert, ca.inter.Cert}, dev, x509Now, auth.ErrX509CommonName},
		{"device cert for a module", []*x509.Certificate{devLeaf.Cert, ca.inter.Cert}, mod, x509Now, auth.ErrX509CommonName},
		{"expired leaf", []*x509.Certificate{expired.Cert, ca.inter.Cert}, dev, x509Now, auth.ErrX509Chain},
		{"leaf not yet valid", []*x509.Certificate{notYet.Cert, ca.inter.Cert}, dev, x509Now, auth.ErrX509Chain},
		{"far future: leaf and CAs expired", []*x509.Certificate{devLeaf.Cert, ca.inter.Cert}, dev, x509Now.AddDate(6, 0, 0), auth.ErrX509Chain},
		{"serverAuth-only leaf", []*x509.Certificate{serverOnly.Cert, ca.inter.Cert}, dev, x509Now, auth.ErrX509Chain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := auth.CheckCASigned(tt.chain, ca.roots, tt.id, tt.now)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("CheckCASigned: %v", err)
				}
				return
			}
			wantErrIs(t, err, tt.wantErr)
			if !strings.HasPrefix(err.Error(), "iothub: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}

	// An empty pool trusts nothing.
	wantErrIs(t, auth.CheckCASigned([]*x509.Certificate{devLeaf.Cert, ca.inter.Cert}, x509.NewCertPool(), dev, x509Now), auth.ErrX509Chain)
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
	if err := os.WriteFile(rootFile, certsPEM(ca.root.Cert), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSL_CERT_FILE", rootFile)
	t.Setenv("SSL_CERT_DIR", dir)

	dev := auth.Identity{HostName: devHost, DeviceID: "dev1"}
	err := auth.CheckCASigned([]*x509.Certificate{leaf.Cert, ca.inter.Cert}, nil, dev, x509Now)
	wantErrIs(t, err, auth.ErrX509Chain)

	// Control: the system roots really do trust the test CA here, so the
	// check above would have passed with a fallback.
	inter := x509.NewCertPool()
	inter.AddCert(ca.inter.Cert)
	_, verr := leaf.Cert.Verify(x509.VerifyOptions{Intermediates: inter, CurrentTime: x509Now, KeyUsages: clientAuth})
	switch runtime.GOOS {
	case "linux", "freebsd", "openbsd", "netbsd", "dragonfly", "solaris", "illumos":
		if verr != nil {
			t.Fatalf("control: SSL_CERT_FILE did not make the system roots trust the test CA (%v); "+
				"was the system pool loaded earlier in this binary?", verr)
		}
	default:
		t.Logf("control not asserted on %s: system roots ignore SSL_CERT_FILE (verify error: %v)", runtime.GOOS, verr)
	}
}
