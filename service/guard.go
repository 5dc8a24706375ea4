package service

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// Limits on the bodies of the hub's answers. An answer whose body is
// longer than what its request can legitimately return fails with an error
// matching ErrResponseTooLarge as soon as the limit is passed: a hostile or
// broken server cannot make the client buffer more.
const (
	// maxErrorBody bounds the body of any non-2xx answer: IoT Hub's error
	// bodies are a few hundred bytes.
	maxErrorBody = 64 << 10
	// maxResultBody bounds a method result, {"status":…,"payload":…}: a
	// payload of at most 128 KB plus the envelope, with room for the hub
	// re-encoding the payload's JSON.
	maxResultBody = 512 << 10
	// maxDocBody bounds one registry document (a device or a module,
	// about 1 KB in practice).
	maxDocBody = 1 << 20
	// maxListBody bounds a list of a device's modules (at most 50, of
	// about 1 KB each, with room to spare).
	maxListBody = 16 << 20
	// A twin is bounded by maxTwinBody (twins.go).
)

// ErrResponseTooLarge matches the error returned when the hub's answer has
// a body larger than its request can legitimately return (64 KiB for an
// error answer, 512 KiB for a method result, 1 MiB for a registry document,
// 2 MiB for a twin, 16 MiB for a list). Reading stops at the limit. Use errors.Is.
var ErrResponseTooLarge = errors.New("iothub: the hub's answer is larger than the client accepts")

// ErrMalformedResponse matches the error returned when a success answer
// of the hub is not what the request returns: a method result or a
// registry document that does not decode. The request reached the hub, and
// may have taken effect (a method may have run). The error never quotes
// the body. Use errors.Is.
var ErrMalformedResponse = errors.New("iothub: the hub's answer is malformed")

// ErrRedirect matches the error returned when the hub answers with a
// redirect. The client never follows one: it would send the credential to
// wherever the answer points, plain http included, and run a method call a
// second time. Use errors.Is.
//
// With the client's own HTTP client (ClientOptions.Transport nil), and with
// an *http.Client given as ClientOptions.Transport (the client uses a copy
// whose CheckRedirect refuses redirects), no request ever follows a
// redirect. Another policy.Transporter given as Transport may follow
// redirects itself, and then has already sent the request, and its
// Authorization header, to the new address: the client can only refuse its
// answer, by comparing the final request's URL (resp.Request.URL) with the
// one it sent.
var ErrRedirect = errors.New("iothub: redirect refused")

// guardError is an error of guardTransport: it stops azcore's retries, and
// the client returns the error it wraps as is.
type guardError struct{ err error }

func (e *guardError) Error() string { return e.err.Error() }
func (e *guardError) Unwrap() error { return e.err }
func (e *guardError) NonRetriable() {}

// guarded returns the error of guardTransport in err's chain, unwrapped
// from what azcore's policies added, or nil.
func guarded(err error) error {
	var ge *guardError
	if errors.As(err, &ge) {
		return ge.err
	}
	return nil
}

// bodyLimitKey is the context key of a request's success-body limit.
type bodyLimitKey struct{}

// withBodyLimit sets the limit of a 2xx answer's body for requests made
// with ctx (maxDocBody when unset).
func withBodyLimit(ctx context.Context, n int64) context.Context {
	return context.WithValue(ctx, bodyLimitKey{}, n)
}

// refuseRedirect is the CheckRedirect of every http.Client the client
// uses: the redirect answer itself is returned, and guardTransport turns it
// into an ErrRedirect error.
func refuseRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// defaultHTTPClient is the HTTP client of clients without
// ClientOptions.Transport, shared as azcore shares its own default.
var defaultHTTPClient = sync.OnceValue(func() *http.Client { return newHTTPClient(nil) })

// newHTTPClient returns an HTTP client like azcore's default (proxy from the
// environment, HTTP/2 with health-check pings, TLS 1.2 or later) that never
// follows redirects. roots nil means the system roots.
func newHTTPClient(roots *x509.CertPool) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	tr.MaxIdleConnsPerHost = 10
	tr.HTTP2 = &http.HTTP2Config{SendPingTimeout: 10 * time.Second, PingTimeout: 5 * time.Second}
	return &http.Client{Transport: tr, CheckRedirect: refuseRedirect}
}

// guardTransport is the transport of the client's pipeline, around the
// caller's or the default one. It refuses redirects and bounds the bodies of
// answers.
type guardTransport struct{ inner policy.Transporter }

// newGuardTransport wraps t; a *http.Client is used through a copy that
// refuses redirects.
func newGuardTransport(t policy.Transporter) guardTransport {
	switch hc := t.(type) {
	case nil:
		t = defaultHTTPClient()
	case *http.Client:
		if hc != nil {
			c := *hc
			c.CheckRedirect = refuseRedirect
			t = &c
		}
	}
	return guardTransport{inner: t}
}

func (g guardTransport) Do(req *http.Request) (*http.Response, error) {
	resp, err := g.inner.Do(req)
	if err != nil || resp == nil {
		return resp, err
	}
	// Without a redirect the answer's request is req itself: only another
	// request needs its URL compared (a string each, on every call else).
	if resp.Request != nil && resp.Request != req && resp.Request.URL != nil && resp.Request.URL.String() != req.URL.String() {
		resp.Body.Close()
		return nil, &guardError{fmt.Errorf("%w: the HTTP transport followed a redirect from %s to %s (and may have sent the request there); the client accepts no answer from another address",
			ErrRedirect, showURL(req.URL), showURL(resp.Request.URL))}
	}
	if isRedirect(resp.StatusCode) {
		resp.Body.Close()
		return nil, &guardError{fmt.Errorf("%w: the hub answered %s with Location %q; the client never follows redirects",
			ErrRedirect, resp.Status, clipID(resp.Header.Get("Location")))}
	}
	limit := int64(maxErrorBody)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		limit = maxDocBody
		if n, ok := req.Context().Value(bodyLimitKey{}).(int64); ok {
			limit = n
		}
	}
	if resp.ContentLength > limit {
		resp.Body.Close()
		return nil, tooLargeError(resp.StatusCode, limit)
	}
	if resp.Body != nil {
		resp.Body = &limitedBody{rc: resp.Body, left: limit, status: resp.StatusCode, limit: limit}
	}
	return resp, nil
}

// tooLargeError is the error of an answer with more than limit bytes.
func tooLargeError(status int, limit int64) error {
	return &guardError{fmt.Errorf("%w: the answer (HTTP %d) has more than %d bytes, the most this request can legitimately return",
		ErrResponseTooLarge, status, limit)}
}

func isRedirect(status int) bool {
	switch status {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return false
}

// showURL shows scheme, host and path: the query is not needed to tell
// where a request went.
func showURL(u *url.URL) string {
	return strconv.Quote(clipID(u.Scheme + "://" + u.Host + u.EscapedPath()))
}

// limitedBody reads at most left bytes of rc; a body with more fails with
// tooLarge (io.LimitReader would cut it silently).
type limitedBody struct {
	rc     io.ReadCloser
	left   int64
	status int   // the answer's, for the error
	limit  int64 // the limit, for the error
	err    error
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if b.left <= 0 {
		var one [1]byte
		n, err := b.rc.Read(one[:])
		if n > 0 {
			b.err = tooLargeError(b.status, b.limit)
			return 0, b.err
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }
