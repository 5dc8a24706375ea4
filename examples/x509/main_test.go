package main

import (
	"testing"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/examples/internal/exampletest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRun(t *testing.T) {
	var out exampletest.Buffer
	require.NoError(t, run(exampletest.Context(t), &out), "run:\n%s", out.String())
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
	require.NoError(t, err)
	b, err := selfSigned("dev-1")
	require.NoError(t, err)
	assert.Equal(t, "dev-1", a.Leaf().Subject.CommonName, "CN")
	leaf := a.Leaf()
	assert.NoError(t, leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature), "not self-signed: the signature")
	assert.Equal(t, leaf.Subject.String(), leaf.Issuer.String(), "not self-signed: the issuer")
	assert.NotEqual(t, auth.ComputeThumbprints(a.Leaf().Raw), auth.ComputeThumbprints(b.Leaf().Raw), "two certificates share a thumbprint")
}
