package web

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Sessions. The dashboard sets one cookie, bouncer_ui: 32 random bytes.
// With tokens configured, logging in with a token creates a session under
// a new cookie value (never the one the browser came with, so a planted
// cookie gains nothing); the value is then valid for sessionTTL or until
// logout. Sessions live in memory: a restart logs everyone out.
//
// The CSRF token of every form is an HMAC of the cookie value under a key
// made at start: a page on another site can neither read the cookie nor
// compute the token, and the cookie is SameSite=Strict besides. Without
// tokens the cookie grants nothing and only carries the CSRF token's
// seed, so the loopback dashboard is protected the same way.
const (
	cookieName  = "bouncer_ui"
	sessionTTL  = 12 * time.Hour
	maxSessions = 1000
	idLen       = 43 // base64url of 32 bytes, no padding
)

type sessions struct {
	mu  sync.Mutex
	m   map[string]time.Time // cookie value → expiry
	key []byte               // HMAC key of CSRF tokens
	now func() time.Time
}

func newSessions(now func() time.Time) (*sessions, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("making CSRF key: %w", err)
	}
	return &sessions{m: map[string]time.Time{}, key: key, now: now}, nil
}

// newID returns a new random cookie value.
func newID() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session and returns its cookie value. When the table
// is full the session closest to its end goes.
func (s *sessions) create() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for id, exp := range s.m {
		if !now.Before(exp) {
			delete(s.m, id)
		}
	}
	if len(s.m) >= maxSessions {
		var oldest string
		for id, exp := range s.m {
			if oldest == "" || exp.Before(s.m[oldest]) {
				oldest = id
			}
		}
		delete(s.m, oldest)
	}
	id := newID()
	s.m[id] = now.Add(sessionTTL)
	return id
}

func (s *sessions) valid(id string) bool {
	if id == "" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.m[id]
	return ok && s.now().Before(exp)
}

func (s *sessions) end(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
}

// csrf is the CSRF token of a cookie value.
func (s *sessions) csrf(id string) string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte("csrf\x00" + id))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// sessionCookie is the request's well-formed cookie value, or "".
func sessionCookie(r *http.Request) string {
	c, err := r.Cookie(cookieName)
	if err != nil || len(c.Value) != idLen {
		return ""
	}
	if _, err := base64.RawURLEncoding.DecodeString(c.Value); err != nil {
		return ""
	}
	return c.Value
}

// setCookie sends the cookie: HttpOnly, SameSite=Strict, Secure on TLS
// connections, for the dashboard's paths only. maxAge 0 makes it last
// the browser session, negative deletes it.
func setCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: value, Path: Prefix, MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
}

// csrfToken is the CSRF token for the forms of a page; a request without
// a cookie gets one.
func (h *Handler) csrfToken(w http.ResponseWriter, r *http.Request) string {
	id := sessionCookie(r)
	if id == "" {
		id = newID()
		setCookie(w, r, id, 0)
		r.AddCookie(&http.Cookie{Name: cookieName, Value: id}) // for a second call in this request
	}
	return h.sessions.csrf(id)
}

// validBearer reports whether the request carries one of the tokens as
// the API's bearer header.
func (h *Handler) validBearer(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && h.validToken(tok)
}

func (h *Handler) validToken(tok string) bool {
	valid := 0
	for _, t := range h.tokens {
		valid |= subtle.ConstantTimeCompare([]byte(tok), t)
	}
	return valid == 1
}

// auth lets a request through when no tokens are configured, or it has
// a valid session or bearer token; else a GET goes to the login form.
func (h *Handler) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if len(h.tokens) == 0 || h.sessions.valid(sessionCookie(r)) || h.validBearer(r) {
			next(w, r)
			return
		}
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			http.Redirect(w, r, "/ui/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		h.error(w, r, http.StatusUnauthorized, "Log in first.")
	}
}

// csrf checks a POST's form token against its cookie. A request with a
// valid bearer token needs none: no other site can make a browser send
// that header.
func (h *Handler) csrf(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			h.error(w, r, http.StatusBadRequest, "Bad form.")
			return
		}
		id := sessionCookie(r)
		got := r.PostForm.Get("csrf")
		ok := id != "" && hmac.Equal([]byte(got), []byte(h.sessions.csrf(id)))
		if !ok && !(len(h.tokens) > 0 && h.validBearer(r)) {
			h.log.Info("dashboard request refused", "reason", "csrf token", "path", r.URL.Path, "remote", r.RemoteAddr)
			h.error(w, r, http.StatusForbidden, "The form is stale or came from another site; reload the page and try again.")
			return
		}
		next(w, r)
	}
}

// localNext is a dashboard path to go to after login, or the overview:
// never another site ("//evil.example", "/\evil.example").
func localNext(next string) string {
	if !strings.HasPrefix(next, Prefix) || strings.ContainsAny(next, "\\\r\n") || strings.HasPrefix(next, "//") {
		return Prefix
	}
	return next
}

type loginData struct {
	Next  string
	Open  bool // no tokens configured
	Wrong bool
}

func (h *Handler) loginPage(w http.ResponseWriter, r *http.Request) {
	d := loginData{Next: localNext(r.URL.Query().Get("next")), Open: len(h.tokens) == 0}
	h.render(w, r, http.StatusOK, "login", page{Title: "Log in", Data: d})
}

func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	next := localNext(r.PostForm.Get("next"))
	if len(h.tokens) == 0 {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	if !h.validToken(r.PostForm.Get("token")) {
		h.log.Info("dashboard login failed", "remote", r.RemoteAddr)
		h.render(w, r, http.StatusUnauthorized, "login", page{Title: "Log in", Data: loginData{Next: next, Wrong: true}})
		return
	}
	h.sessions.end(sessionCookie(r))
	setCookie(w, r, h.sessions.create(), int(sessionTTL/time.Second))
	h.log.Info("dashboard login", "remote", r.RemoteAddr)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	h.sessions.end(sessionCookie(r))
	setCookie(w, r, "", -1)
	h.log.Info("dashboard logout", "remote", r.RemoteAddr)
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}
