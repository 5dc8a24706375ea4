// Package hubcall sends service API requests to a local hub the way a
// back-end would (HTTPS, SAS from the hub's iothubowner connection string),
// for tests that must not depend on this SDK's own service client.
package hubcall

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/iothubtest"
)

// Do sends one request with the given Authorization header and returns the
// status and body.
func Do(t testing.TB, s *iothubtest.Server, method, path, body, authorization string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "https://"+s.Addr()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", authorization)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	hc := s.HTTPClient()
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// Service sends a request authorized by the hub's iothubowner policy.
func Service(t testing.TB, s *iothubtest.Server, method, path, body string) (int, string) {
	t.Helper()
	cs, err := auth.ParseServiceConnectionString(s.ServiceConnectionString())
	if err != nil {
		t.Fatal(err)
	}
	tp, err := cs.TokenProvider(nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tp.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return Do(t, s, method, path, body, tok.Value)
}

// Invoke posts a method invocation body to id ("deviceID" or
// "deviceID/moduleID").
func Invoke(t testing.TB, s *iothubtest.Server, id, body string) (int, string) {
	t.Helper()
	dev, mod, _ := strings.Cut(id, "/")
	path := "/twins/" + dev + "/methods?api-version=2021-04-12"
	if mod != "" {
		path = "/twins/" + dev + "/modules/" + mod + "/methods?api-version=2021-04-12"
	}
	return Service(t, s, "POST", path, body)
}
