package main

import (
	"testing"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/examples/internal/exampletest"
)

func TestRun(t *testing.T) {
	var out exampletest.Buffer
	if err := run(exampletest.Context(t), &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	exampletest.WantInOrder(t, out.String(),
		"cert:    self-signed CN=x509-device",
		"service: registered x509-device as selfSigned",
		"device:  x509-device connected over mqtt with its certificate",
		`service: reboot -> 200 {"result":"Reboot started."}`,
		"another certificate for the same id is refused",
	)
}

func TestSelfSigned(t *testing.T) {
	a, err := selfSigned("dev-1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := selfSigned("dev-1")
	if err != nil {
		t.Fatal(err)
	}
	if cn := a.Leaf().Subject.CommonName; cn != "dev-1" {
		t.Errorf("CN = %q, want dev-1", cn)
	}
	if leaf := a.Leaf(); leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature) != nil || leaf.Issuer.String() != leaf.Subject.String() {
		t.Error("not self-signed")
	}
	if auth.ComputeThumbprints(a.Leaf().Raw) == auth.ComputeThumbprints(b.Leaf().Raw) {
		t.Error("two certificates share a thumbprint")
	}
}
