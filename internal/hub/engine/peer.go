package engine

import (
	"context"
	"crypto/x509"
)

type peerCertsKey struct{}

// WithPeerCertificates returns a copy of ctx carrying the TLS client
// certificate chain (leaf first) of the connection a request arrived on.
// The hub's front end terminates TLS itself, so HTTP handlers cannot use
// http.Request.TLS: it sets this in the http.Server's ConnContext instead.
func WithPeerCertificates(ctx context.Context, chain []*x509.Certificate) context.Context {
	return context.WithValue(ctx, peerCertsKey{}, chain)
}

// PeerCertificates returns the chain stored by WithPeerCertificates; nil
// when the client presented no certificate or none was stored.
func PeerCertificates(ctx context.Context) []*x509.Certificate {
	chain, _ := ctx.Value(peerCertsKey{}).([]*x509.Certificate)
	return chain
}
