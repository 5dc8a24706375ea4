// Package ui is the local hub's web dashboard, served under /ui on the
// hub's HTTPS port by "iothub hub --ui".
//
// The page is server-rendered HTML with a little vanilla JavaScript, all
// embedded (no front-end build step). Its script reads devices, modules and
// twins and invokes methods through the hub's own service API (POST
// /devices/query, GET /twins/{id}, POST /twins/{id}/methods), like any
// back end, with a short-lived iothubowner SAS token that the dashboard
// hands the logged-in session.
//
// Endpoints (all under /ui):
//
//	GET  /ui/                 the dashboard (or a redirect to the login page)
//	GET  /ui/login?token=T    log in with a one-time link (see LoginToken)
//	GET  /ui/login            the login form
//	POST /ui/login            log in with the iothubowner key (form field "key")
//	POST /ui/logout           end the session
//	GET  /ui/token            {"authorization": SAS, "expiresOn": RFC 3339} for the service API
//	GET  /ui/feed             the recent method calls and telemetry (read-only)
//	GET  /ui/static/...       the page's script and style sheet
//
// /ui/feed is the one dashboard-specific data endpoint: IoT Hub has no
// service API for the log of method calls or for peeking at telemetry, so
// it reads the engine's call records and stored events. It is read-only.
//
// A session is an HttpOnly, Secure, SameSite=Strict cookie. Logging in
// needs either a one-time token (single use, printed by the hub at start)
// or the iothubowner policy's primary or secondary key; the key is never
// logged or echoed.
package ui

import (
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

// Prefix is the path under which the dashboard is served.
const Prefix = "/ui"

// Lifetimes and bounds.
const (
	// SessionLifetime is how long a login lasts.
	SessionLifetime = 12 * time.Hour
	// TokenLifetime is the lifetime of the SAS tokens handed to a session
	// for the service API; the page fetches a new one before expiry.
	TokenLifetime = 15 * time.Minute
	// maxSessions and maxLoginTokens bound memory: the oldest entries go
	// first when the maps are full.
	maxSessions    = 1000
	maxLoginTokens = 100
	// feedItems is how many calls and events /ui/feed returns.
	feedItems = 50
	// maxFeedBody is how many bytes of an event body or call payload
	// /ui/feed shows.
	maxFeedBody = 512
	// maxLoginBody bounds the login form.
	maxLoginBody = 4096
)

const (
	cookieName = "iothub_ui_session"
	ownerName  = "iothubowner"
)

//go:embed static templates
var assets embed.FS

var pages = template.Must(template.ParseFS(assets, "templates/*.html"))

// Server is the dashboard's HTTP handler. Its zero value is not usable;
// call New.
type Server struct {
	e      *engine.Engine
	static http.Handler

	mu       sync.Mutex
	logins   map[string]time.Time // one-time login tokens → when issued
	sessions map[string]time.Time // session ids → expiry
}

// New returns the dashboard for the hub run by e.
func New(e *engine.Engine) *Server {
	sub, _ := fs.Sub(assets, "static") // cannot fail: the directory is embedded
	return &Server{
		e:        e,
		static:   http.StripPrefix(Prefix+"/static/", http.FileServer(http.FS(sub))),
		logins:   map[string]time.Time{},
		sessions: map[string]time.Time{},
	}
}

// Handles reports whether path (escaped) belongs to the dashboard: "/ui" or
// anything under "/ui/".
func Handles(path string) bool {
	return path == Prefix || strings.HasPrefix(path, Prefix+"/")
}

// LoginToken issues a one-time login token: the first GET
// /ui/login?token=... with it starts a session, and it is then forgotten.
// Tokens do not expire otherwise; at most maxLoginTokens unused ones are
// kept (the oldest go first).
func (s *Server) LoginToken() string {
	tok := randomID()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.logins) >= maxLoginTokens {
		dropOldest(s.logins)
	}
	s.logins[tok] = s.e.Now()
	return tok
}

// LoginURL returns base (e.g. "https://localhost:443") followed by the
// one-time login path for a new LoginToken.
func (s *Server) LoginURL(base string) string {
	return strings.TrimSuffix(base, "/") + Prefix + "/login?token=" + url.QueryEscape(s.LoginToken())
}

// ServeHTTP serves the dashboard's endpoints. It answers every error as a
// short plain-text or JSON message; it never panics on bad input.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Referrer-Policy", "no-referrer")
	p := r.URL.Path
	switch {
	case p == Prefix:
		if !allow(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		http.Redirect(w, r, Prefix+"/", http.StatusFound)
	case p == Prefix+"/":
		if !allow(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		s.dashboard(w, r)
	case p == Prefix+"/login":
		s.login(w, r)
	case p == Prefix+"/logout":
		if !allow(w, r, http.MethodPost) {
			return
		}
		s.logout(w, r)
	case p == Prefix+"/token":
		if !allow(w, r, http.MethodGet) || !s.authenticated(w, r) {
			return
		}
		s.token(w)
	case p == Prefix+"/feed":
		if !allow(w, r, http.MethodGet) || !s.authenticated(w, r) {
			return
		}
		s.feed(w)
	case strings.HasPrefix(p, Prefix+"/static/"):
		if !allow(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		s.static.ServeHTTP(w, r)
	default:
		http.Error(w, "iothub: no dashboard page at "+truncate(p, 128), http.StatusNotFound)
	}
}

// allow answers 405 unless r uses one of methods.
func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	http.Error(w, "iothub: method "+truncate(r.Method, 32)+" not allowed here", http.StatusMethodNotAllowed)
	return false
}

// session reports whether r carries a live session cookie.
func (s *Server) session(r *http.Request) bool {
	c, err := r.Cookie(cookieName)
	if err != nil || c.Value == "" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.sessions[c.Value]
	if !ok {
		return false
	}
	if !s.e.Now().Before(exp) {
		delete(s.sessions, c.Value)
		return false
	}
	return true
}

// authenticated answers 401 in JSON unless r has a session.
func (s *Server) authenticated(w http.ResponseWriter, r *http.Request) bool {
	if s.session(r) {
		return true
	}
	writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "iothub: not logged in to the dashboard"})
	return false
}

// startSession sets a new session cookie and redirects to the dashboard.
func (s *Server) startSession(w http.ResponseWriter, r *http.Request) {
	id := randomID()
	now := s.e.Now()
	s.mu.Lock()
	for k, exp := range s.sessions {
		if !now.Before(exp) {
			delete(s.sessions, k)
		}
	}
	if len(s.sessions) >= maxSessions {
		dropOldest(s.sessions)
	}
	s.sessions[id] = now.Add(SessionLifetime)
	s.mu.Unlock()
	http.SetCookie(w, &http.Cookie{
		Name:     cookieName,
		Value:    id,
		Path:     Prefix + "/",
		MaxAge:   int(SessionLifetime / time.Second),
		HttpOnly: true,
		Secure:   true,
		SameSite: http.SameSiteStrictMode,
	})
	http.Redirect(w, r, Prefix+"/", http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(cookieName); err == nil {
		s.mu.Lock()
		delete(s.sessions, c.Value)
		s.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: Prefix + "/", MaxAge: -1,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, Prefix+"/login", http.StatusSeeOther)
}

// login serves the one-time link (GET with token), the form (GET) and the
// key login (POST).
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		tok := r.URL.Query().Get("token")
		if tok == "" || r.Method == http.MethodHead { // a HEAD does not spend the link
			s.loginPage(w, http.StatusOK, "")
			return
		}
		s.mu.Lock()
		_, ok := s.logins[tok]
		delete(s.logins, tok)
		s.mu.Unlock()
		if !ok {
			s.loginPage(w, http.StatusUnauthorized, "This login link is not valid or was already used. Log in with the iothubowner key instead.")
			return
		}
		s.startSession(w, r)
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
		if err := r.ParseForm(); err != nil {
			s.loginPage(w, http.StatusBadRequest, "The login form could not be read.")
			return
		}
		if !s.ownerKey(r.PostForm.Get("key")) {
			s.loginPage(w, http.StatusUnauthorized, "That is not a key of the iothubowner policy.")
			return
		}
		s.startSession(w, r)
	default:
		allow(w, r, http.MethodGet, http.MethodHead, http.MethodPost)
	}
}

// ownerKey reports, in constant time per key, whether key is the
// iothubowner policy's primary or secondary key.
func (s *Server) ownerKey(key string) bool {
	p, ok := s.e.Policy(ownerName)
	key = strings.TrimSpace(key)
	if !ok || key == "" {
		return false
	}
	m1 := subtle.ConstantTimeCompare([]byte(key), []byte(p.PrimaryKey))
	m2 := 0
	if p.SecondaryKey != "" {
		m2 = subtle.ConstantTimeCompare([]byte(key), []byte(p.SecondaryKey))
	}
	return m1|m2 == 1
}

func (s *Server) loginPage(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Cache-Control", "no-store")
	renderPage(w, status, "login.html", map[string]any{"HostName": s.e.HostName(), "Error": msg})
}

func (s *Server) dashboard(w http.ResponseWriter, r *http.Request) {
	if !s.session(r) {
		http.Redirect(w, r, Prefix+"/login", http.StatusFound)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	renderPage(w, http.StatusOK, "dashboard.html", map[string]any{"HostName": s.e.HostName()})
}

func renderPage(w http.ResponseWriter, status int, name string, data any) {
	var b strings.Builder
	if err := pages.ExecuteTemplate(&b, name, data); err != nil {
		http.Error(w, "iothub: the dashboard page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}

// tokenResponse is /ui/token's answer.
type tokenResponse struct {
	Authorization string `json:"authorization"`
	ExpiresOn     string `json:"expiresOn"`
}

// token mints an iothubowner SAS token for the hub, valid TokenLifetime.
func (s *Server) token(w http.ResponseWriter) {
	p, ok := s.e.Policy(ownerName)
	if !ok {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "iothub: the hub has no iothubowner policy"})
		return
	}
	exp := s.e.Now().Add(TokenLifetime)
	tok, err := auth.SignSAS(s.e.HostName(), p.Name, p.PrimaryKey, exp)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "iothub: a service token could not be signed"})
		return
	}
	writeJSON(w, http.StatusOK, tokenResponse{Authorization: tok, ExpiresOn: exp.UTC().Format(time.RFC3339)})
}

// feedCall is one method call in /ui/feed.
type feedCall struct {
	DeviceID  string  `json:"deviceId"`
	ModuleID  string  `json:"moduleId,omitempty"`
	Method    string  `json:"method"`
	Status    int     `json:"status"`
	ErrorCode int     `json:"errorCode,omitempty"`
	Protocol  string  `json:"protocol"`
	Start     string  `json:"start"`
	LatencyMS float64 `json:"latencyMs"`
}

// feedEvent is one device-to-cloud message in /ui/feed.
type feedEvent struct {
	DeviceID     string            `json:"deviceId"`
	ModuleID     string            `json:"moduleId,omitempty"`
	Protocol     string            `json:"protocol"`
	EnqueuedTime string            `json:"enqueuedTime"`
	Body         string            `json:"body"`
	Binary       bool              `json:"binary,omitempty"`
	Size         int               `json:"size"`
	Properties   map[string]string `json:"properties,omitempty"`
}

// feedResponse is /ui/feed's answer: the newest feedItems calls and
// events, newest first.
type feedResponse struct {
	Calls      []feedCall  `json:"calls"`
	Events     []feedEvent `json:"events"`
	EventCount uint64      `json:"eventCount"`
}

func (s *Server) feed(w http.ResponseWriter) {
	calls := s.e.RecentCalls(feedItems)
	events, total := s.e.RecentEvents(feedItems)
	out := feedResponse{Calls: make([]feedCall, 0, len(calls)), Events: make([]feedEvent, 0, len(events)), EventCount: total}
	for i := len(calls) - 1; i >= 0; i-- {
		c := calls[i]
		out.Calls = append(out.Calls, feedCall{
			DeviceID: c.Identity.DeviceID, ModuleID: c.Identity.ModuleID, Method: c.Method,
			Status: c.Status, ErrorCode: c.ErrorCode, Protocol: c.Protocol,
			Start: c.Start.UTC().Format(time.RFC3339Nano), LatencyMS: float64(c.Latency.Microseconds()) / 1000,
		})
	}
	for i := len(events) - 1; i >= 0; i-- {
		ev := events[i]
		fe := feedEvent{DeviceID: ev.Identity.DeviceID, ModuleID: ev.Identity.ModuleID, Protocol: ev.Protocol,
			EnqueuedTime: ev.EnqueuedTime.UTC().Format(time.RFC3339Nano), Size: len(ev.Body), Properties: ev.Properties}
		fe.Body, fe.Binary = showBody(ev.Body)
		out.Events = append(out.Events, fe)
	}
	writeJSON(w, http.StatusOK, out)
}

// showBody returns b as text, cut at maxFeedBody bytes, or base64 when it
// is not UTF-8.
func showBody(b []byte) (string, bool) {
	cut := b
	if len(cut) > maxFeedBody {
		cut = cut[:maxFeedBody]
		for i := 0; i < utf8.UTFMax-1 && !utf8.Valid(cut); i++ {
			cut = cut[:len(cut)-1] // do not split a rune at the cut
		}
	}
	if utf8.Valid(cut) {
		s := string(cut)
		if len(cut) < len(b) {
			s += "…"
		}
		return s, false
	}
	return base64.StdEncoding.EncodeToString(cut), true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"iothub: the answer could not be encoded"}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// randomID returns 32 random bytes, base64url-encoded.
func randomID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// dropOldest removes the entry with the earliest time.
func dropOldest(m map[string]time.Time) {
	var first string
	var at time.Time
	for k, t := range m {
		if first == "" || t.Before(at) {
			first, at = k, t
		}
	}
	delete(m, first)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
