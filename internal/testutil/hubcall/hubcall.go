// Package hubcall sends service API requests to a local hub the way a
// back-end would (HTTPS, SAS from the hub's iothubowner connection string),
// for tests that must not depend on this SDK's own service client.
//
// The functions taking a testing.TB fail the test on a transport error and
// must be called from the test's goroutine; TryInvoke returns the error
// instead, for goroutines of the test's own.
package hubcall

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/apiversion"
	"github.com/iothub-go/iothub/iothubtest"
)

// Do sends one request with the given Authorization header and returns the
// status and body.
func Do(t testing.TB, s *iothubtest.Server, method, path, body, authorization string) (int, string) {
	t.Helper()
	st, b, err := do(s, method, path, body, authorization)
	require.NoError(t, err, "%s %s", method, path)
	return st, b
}

func do(s *iothubtest.Server, method, path, body, authorization string) (int, string, error) {
	req, err := http.NewRequest(method, "https://"+s.Addr()+path, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", authorization)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	hc := s.HTTPClient()
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", err
	}
	return resp.StatusCode, string(b), nil
}

// ownerToken returns a SAS token of the hub's iothubowner policy.
func ownerToken(s *iothubtest.Server) (string, error) {
	cs, err := auth.ParseServiceConnectionString(s.ServiceConnectionString())
	if err != nil {
		return "", err
	}
	tp, err := cs.TokenProvider(nil)
	if err != nil {
		return "", err
	}
	tok, err := tp.Token(context.Background())
	if err != nil {
		return "", err
	}
	return tok.Value, nil
}

// Service sends a request authorized by the hub's iothubowner policy.
func Service(t testing.TB, s *iothubtest.Server, method, path, body string) (int, string) {
	t.Helper()
	tok, err := ownerToken(s)
	require.NoError(t, err, "iothubowner token")
	return Do(t, s, method, path, body, tok)
}

func methodsPath(id string) string {
	dev, mod, _ := strings.Cut(id, "/")
	if mod != "" {
		return "/twins/" + dev + "/modules/" + mod + "/methods?api-version=" + apiversion.Current
	}
	return "/twins/" + dev + "/methods?api-version=" + apiversion.Current
}

// Invoke posts a method invocation body to id ("deviceID" or
// "deviceID/moduleID").
func Invoke(t testing.TB, s *iothubtest.Server, id, body string) (int, string) {
	t.Helper()
	return Service(t, s, "POST", methodsPath(id), body)
}

// TryInvoke is Invoke for goroutines other than the test's: it returns
// transport errors instead of failing the test.
func TryInvoke(s *iothubtest.Server, id, body string) (int, string, error) {
	tok, err := ownerToken(s)
	if err != nil {
		return 0, "", fmt.Errorf("service token: %w", err)
	}
	return do(s, "POST", methodsPath(id), body, tok)
}
