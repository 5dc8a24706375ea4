package ui

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/internal/hubauth"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newServer(t *testing.T) (*Server, *engine.Engine) {
	t.Helper()
	e, err := engine.New(engine.Config{HostName: "localhost"})
	require.NoError(t, err)
	t.Cleanup(e.Close)
	return New(e), e
}

func do(s *Server, method, target, body string, cookie *http.Cookie) *httptest.ResponseRecorder {
	var r *http.Request
	if body != "" {
		r = httptest.NewRequest(method, target, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		r = httptest.NewRequest(method, target, nil)
	}
	if cookie != nil {
		r.AddCookie(cookie)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w
}

func sessionCookie(t *testing.T, w *httptest.ResponseRecorder) *http.Cookie {
	t.Helper()
	for _, c := range w.Result().Cookies() {
		if c.Name == cookieName {
			return c
		}
	}
	t.Fatalf("no session cookie in %v", w.Header())
	return nil
}

func TestLoginLinkIsSingleUse(t *testing.T) {
	s, _ := newServer(t)
	link := s.LoginURL("https://localhost:443/")
	require.True(t, strings.HasPrefix(link, "https://localhost:443/ui/login?token="), link)
	u, err := url.Parse(link)
	require.NoError(t, err)

	w := do(s, "HEAD", u.RequestURI(), "", nil)
	require.Equal(t, http.StatusOK, w.Code, "a HEAD (a link preview) does not log in")
	assert.Empty(t, w.Result().Cookies())
	w = do(s, "GET", u.RequestURI(), "", nil)
	require.Equal(t, http.StatusSeeOther, w.Code, "nor spend the link")
	assert.Equal(t, "/ui/", w.Header().Get("Location"))
	c := sessionCookie(t, w)
	assert.True(t, c.HttpOnly, "HttpOnly")
	assert.True(t, c.Secure, "Secure")
	assert.Equal(t, http.SameSiteStrictMode, c.SameSite)
	assert.Equal(t, "/ui/", c.Path)

	w = do(s, "GET", "/ui/", "", c)
	require.Equal(t, http.StatusOK, w.Code)
	assert.Contains(t, w.Body.String(), `id="method-form"`)

	w = do(s, "GET", u.RequestURI(), "", nil)
	assert.Equal(t, http.StatusUnauthorized, w.Code, "the link works once")
	assert.Contains(t, w.Body.String(), "already used")
	assert.Empty(t, w.Result().Cookies())

	w = do(s, "GET", "/ui/login?token=nope", "", nil)
	assert.Equal(t, http.StatusUnauthorized, w.Code)
}

func TestLoginWithOwnerKey(t *testing.T) {
	s, e := newServer(t)
	owner, ok := e.Policy("iothubowner")
	require.True(t, ok)

	w := do(s, "POST", "/ui/login", "key="+url.QueryEscape(owner.PrimaryKey), nil)
	require.Equal(t, http.StatusSeeOther, w.Code)
	sessionCookie(t, w)
	w = do(s, "POST", "/ui/login", "key="+url.QueryEscape(owner.SecondaryKey), nil)
	require.Equal(t, http.StatusSeeOther, w.Code, "the secondary key")

	service, _ := e.Policy("service")
	for name, body := range map[string]string{
		"another policy's key": "key=" + url.QueryEscape(service.PrimaryKey),
		"a wrong key":          "key=c2VjcmV0",
		"no key":               "key=",
		"no form":              "other=1",
	} {
		w := do(s, "POST", "/ui/login", body, nil)
		assert.Equal(t, http.StatusUnauthorized, w.Code, name)
		assert.Empty(t, w.Result().Cookies(), name)
		assert.NotContains(t, w.Body.String(), service.PrimaryKey, name)
		assert.NotContains(t, w.Body.String(), owner.PrimaryKey, name)
	}
	w = do(s, "POST", "/ui/login", "key="+strings.Repeat("A", 2*maxLoginBody), nil)
	assert.Equal(t, http.StatusBadRequest, w.Code, "an oversized form")
	w = do(s, "POST", "/ui/login", "key=%zz", nil)
	assert.Equal(t, http.StatusBadRequest, w.Code, "a broken form")
	w = do(s, "PUT", "/ui/login", "", nil)
	assert.Equal(t, http.StatusMethodNotAllowed, w.Code)
}

func TestEndpointsNeedSession(t *testing.T) {
	s, _ := newServer(t)
	bogus := &http.Cookie{Name: cookieName, Value: "bogus"}
	for _, c := range []*http.Cookie{nil, bogus} {
		for _, p := range []string{"/ui/token", "/ui/feed"} {
			w := do(s, "GET", p, "", c)
			assert.Equal(t, http.StatusUnauthorized, w.Code, p)
			assert.Equal(t, "application/json; charset=utf-8", w.Header().Get("Content-Type"), p)
			assert.Contains(t, w.Body.String(), "iothub: not logged in", p)
		}
		w := do(s, "GET", "/ui/", "", c)
		assert.Equal(t, http.StatusFound, w.Code)
		assert.Equal(t, "/ui/login", w.Header().Get("Location"))
	}
	w := do(s, "GET", "/ui", "", nil)
	assert.Equal(t, http.StatusFound, w.Code)
	assert.Equal(t, "/ui/", w.Header().Get("Location"))
	w = do(s, "GET", "/ui/login", "", nil)
	assert.Equal(t, http.StatusOK, w.Code)
	assert.Contains(t, w.Body.String(), `name="key"`)
	w = do(s, "GET", "/ui/static/app.js", "", nil)
	assert.Equal(t, http.StatusOK, w.Code, "the assets are public")
	w = do(s, "GET", "/ui/nothing", "", nil)
	assert.Equal(t, http.StatusNotFound, w.Code)
	assert.Contains(t, w.Body.String(), "iothub: ")
	w = do(s, "DELETE", "/ui/feed", "", nil)
	assert.Equal(t, http.StatusMethodNotAllowed, w.Code, "the feed is read-only")
	assert.Equal(t, "GET", w.Header().Get("Allow"))
	w = do(s, "GET", "/ui/logout", "", nil)
	assert.Equal(t, http.StatusMethodNotAllowed, w.Code)

	assert.True(t, Handles("/ui"))
	assert.True(t, Handles("/ui/x"))
	assert.False(t, Handles("/uix"))
	assert.False(t, Handles("/devices/ui"))
}

func login(t *testing.T, s *Server) *http.Cookie {
	t.Helper()
	w := do(s, "GET", "/ui/login?token="+url.QueryEscape(s.LoginToken()), "", nil)
	require.Equal(t, http.StatusSeeOther, w.Code)
	return sessionCookie(t, w)
}

func TestLogout(t *testing.T) {
	s, _ := newServer(t)
	c := login(t, s)
	require.Equal(t, http.StatusOK, do(s, "GET", "/ui/feed", "", c).Code)
	w := do(s, "POST", "/ui/logout", "", c)
	require.Equal(t, http.StatusSeeOther, w.Code)
	assert.Equal(t, http.StatusUnauthorized, do(s, "GET", "/ui/feed", "", c).Code)
}

func TestTokenAuthorizesTheServiceAPI(t *testing.T) {
	s, e := newServer(t)
	w := do(s, "GET", "/ui/token", "", login(t, s))
	require.Equal(t, http.StatusOK, w.Code)
	assert.Equal(t, "no-store", w.Header().Get("Cache-Control"))
	var tr tokenResponse
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &tr))
	exp, err := time.Parse(time.RFC3339, tr.ExpiresOn)
	require.NoError(t, err)
	assert.WithinDuration(t, time.Now().Add(TokenLifetime), exp, time.Minute)
	assert.True(t, strings.HasPrefix(tr.Authorization, "SharedAccessSignature "), tr.Authorization)
	for _, c := range []struct {
		path string
		need hubauth.Rights
	}{
		{"/devices/query", hubauth.RightsRegistryRead},
		{"/twins/dev1", hubauth.RightsRegistryRead},
		{"/twins/dev1/methods", hubauth.RightsServiceConnect},
	} {
		assert.Nil(t, e.AuthorizeService(tr.Authorization, c.path, c.need), c.path)
	}
}

func TestFeed(t *testing.T) {
	s, e := newServer(t)
	_, herr := e.PutDevice("dev1", engine.Device{}, "")
	require.Nil(t, herr)
	id := auth.Identity{DeviceID: "dev1"}
	require.Nil(t, e.ReceiveEvent(engine.Event{Identity: id, Protocol: "mqtt", Body: []byte(`{"t":1}`)}))
	require.Nil(t, e.ReceiveEvent(engine.Event{Identity: id, Protocol: "http", Body: []byte{0xff, 0xfe}}))
	long := strings.Repeat("é", maxFeedBody) // 2 bytes a rune: the cut falls inside one
	require.Nil(t, e.ReceiveEvent(engine.Event{Identity: id, Protocol: "amqp", Body: []byte("x" + long)}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, herr = e.Invoke(ctx, id, engine.MethodCall{Name: "reboot", ResponseTimeout: 5 * time.Second, ConnectTimeout: 0})
	require.NotNil(t, herr, "dev1 is not connected")

	w := do(s, "GET", "/ui/feed", "", login(t, s))
	require.Equal(t, http.StatusOK, w.Code)
	var f feedResponse
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &f))
	require.EqualValues(t, 3, f.EventCount)
	require.Len(t, f.Events, 3)
	assert.Equal(t, "amqp", f.Events[0].Protocol, "newest first")
	assert.True(t, strings.HasSuffix(f.Events[0].Body, "…"), "a long body is cut")
	assert.LessOrEqual(t, len(f.Events[0].Body), maxFeedBody+len("…"))
	assert.False(t, f.Events[0].Binary, "the cut does not split a rune")
	assert.True(t, f.Events[1].Binary)
	assert.Equal(t, "//4=", f.Events[1].Body)
	assert.Equal(t, `{"t":1}`, f.Events[2].Body)
	require.Len(t, f.Calls, 1)
	assert.Equal(t, "dev1", f.Calls[0].DeviceID)
	assert.Equal(t, "reboot", f.Calls[0].Method)
	assert.Equal(t, herr.Code, f.Calls[0].ErrorCode)
}
