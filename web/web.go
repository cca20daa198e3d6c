// Package web is bouncer's dashboard: HTML pages on the admin HTTP
// listener, under /ui/, that show what bounced, where and why, and let an
// operator change the suppression list, the storm holds and the outbox.
//
//	GET  /ui/                      overview: 30 days by class, suppressions per
//	                               day, storms, outbox, the last bounces
//	GET  /ui/domains               most bounced domains, 5.4.x routing
//	                               failures, recovered domains
//	GET  /ui/domain?name=D         one domain: statuses, MTAs, MX check, bounces
//	GET  /ui/bounces?FILTERS       records, newest first, paged
//	GET  /ui/bounce?id=ID          one record, every decoded field, its events
//	GET  /ui/bounce/raw?id=ID      the raw message, as an attachment
//	GET  /ui/suppressions?q=       search by address or domain
//	POST /ui/suppressions/add      address, reason
//	POST /ui/suppressions/remove   address, reason (logged)
//	GET  /ui/storms                storms, holds, outbox and dead letters
//	POST /ui/storms/release|drop   domain
//	POST /ui/outbox                op=retry|drop, seq=... or all=1
//	GET  /ui/login, POST /ui/login, POST /ui/logout
//
// Pages are html/template (every string from a bounce is escaped by it;
// none is ever passed as template.HTML), charts are SVG drawn on the
// server, and the CSS is embedded: nothing is loaded from elsewhere and
// no page needs JavaScript. Every answer carries a Content-Security-Policy
// that allows no script at all (security.go).
//
// Authentication follows the admin API's rule: without tokens (allowed on
// loopback only, which cmd/bouncer enforces) every page is open; with
// tokens a page needs a session cookie from the login form, which takes
// one of the tokens, or the API's "Authorization: Bearer TOKEN" header.
// Every POST carries a CSRF token tied to the session cookie (auth.go) and
// passes net/http's cross-origin protection (Origin, Sec-Fetch-Site).
//
// Changes go through the store's own methods, as the CLI and the API do
// (AddSuppression, RemoveSuppression, ReleaseHolds, DropHolds,
// OutboxRetry, OutboxDrop), and each one is logged.
package web

import (
	"bytes"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/bouncer/bouncer/store"
)

// Store is what the dashboard reads and changes; store/bolt and
// store/postgres both offer it.
type Store interface {
	Page(f store.Filter, before string) ([]store.Record, string, error)
	Record(id string) (*store.Record, error)
	Raw(msgID string) ([]byte, error)
	Domains(status string) ([]store.DomainStat, error)
	RecentDomains(f store.DomainFilter) ([]store.DomainStat, error)
	Suppressed(addr string) (*store.Suppression, error)
	AddSuppression(s store.Suppression) error
	RemoveSuppression(addr string) error
	Suppressions(domain string, fn func(store.Suppression) error) error
	Storms() ([]store.Storm, error)
	Holds(domain string) ([]store.Hold, error)
	ReleaseHolds(domain string) (int, error)
	DropHolds(domain string) (int, error)
	OutboxEvents(dead bool, fn func(store.OutboxEvent) error) error
	OutboxStats() (queued, dead int, err error)
	OutboxRetry(seqs ...uint64) (int, error)
	OutboxDrop(seqs ...uint64) (int, error)
	Daily(from, to time.Time) ([]store.Day, error)
}

// Prefix is the path under which the dashboard is served.
const Prefix = "/ui/"

// Options configure the dashboard.
type Options struct {
	// Tokens are the admin API's tokens; empty means no authentication
	// (the caller allows that on loopback only).
	Tokens []string
	// HostAllowed reports whether a request's Host header names this
	// server (the admin API's check against DNS rebinding); nil accepts
	// localhost and loopback addresses only.
	HostAllowed func(host string) bool
	// Logger receives one line per change and per refused request.
	Logger *slog.Logger
	// Now is the clock (time.Now if nil).
	Now func() time.Time
}

// Handler serves the dashboard.
type Handler struct {
	db       Store
	opts     Options
	log      *slog.Logger
	now      func() time.Time
	tokens   [][]byte
	sessions *sessions
	pages    map[string]*template.Template
	static   fs.FS
	handler  http.Handler
}

//go:embed templates/*.html static/*
var files embed.FS

// New returns the dashboard handler over db.
func New(db Store, opts Options) (*Handler, error) {
	h := &Handler{db: db, opts: opts, log: opts.Logger, now: opts.Now}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.opts.HostAllowed == nil {
		h.opts.HostAllowed = loopbackHost
	}
	for _, t := range opts.Tokens {
		h.tokens = append(h.tokens, []byte(t))
	}
	var err error
	if h.sessions, err = newSessions(h.now); err != nil {
		return nil, err
	}
	if h.pages, err = parsePages(); err != nil {
		return nil, err
	}
	if h.static, err = fs.Sub(files, "static"); err != nil {
		return nil, err
	}
	h.handler = h.guard(h.routes())
	return h, nil
}

func (h *Handler) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(h.static)))
	mux.HandleFunc("GET /ui/login", h.loginPage)
	mux.HandleFunc("POST /ui/login", h.csrf(h.login))
	mux.HandleFunc("POST /ui/logout", h.csrf(h.logout))
	mux.HandleFunc("GET /ui/{$}", h.auth(h.overview))
	mux.HandleFunc("GET /ui/domains", h.auth(h.domains))
	mux.HandleFunc("GET /ui/domain", h.auth(h.domain))
	mux.HandleFunc("GET /ui/bounces", h.auth(h.bounces))
	mux.HandleFunc("GET /ui/bounce", h.auth(h.bounce))
	mux.HandleFunc("GET /ui/bounce/raw", h.auth(h.raw))
	mux.HandleFunc("GET /ui/suppressions", h.auth(h.suppressions))
	mux.HandleFunc("POST /ui/suppressions/add", h.auth(h.csrf(h.addSuppression)))
	mux.HandleFunc("POST /ui/suppressions/remove", h.auth(h.csrf(h.removeSuppression)))
	mux.HandleFunc("GET /ui/storms", h.auth(h.storms))
	mux.HandleFunc("POST /ui/storms/release", h.auth(h.csrf(h.endStorm(true))))
	mux.HandleFunc("POST /ui/storms/drop", h.auth(h.csrf(h.endStorm(false))))
	mux.HandleFunc("POST /ui/outbox", h.auth(h.csrf(h.outboxMove)))
	mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		h.error(w, r, http.StatusNotFound, "No such page.")
	})
	return mux
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.handler.ServeHTTP(w, r)
}

// parsePages parses each page template together with the layout.
func parsePages() (map[string]*template.Template, error) {
	names, err := fs.Glob(files, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		base := n[len("templates/") : len(n)-len(".html")]
		if base == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(files, "templates/layout.html", n)
		if err != nil {
			return nil, err
		}
		pages[base] = t
	}
	return pages, nil
}

// page is what every template gets: the layout's fields and the page's
// own data in Data.
type page struct {
	Title  string
	Nav    string // the active menu entry
	CSRF   string
	Authed bool // a session to log out of
	Flash  string
	Error  string
	Now    time.Time
	Data   any
}

// render executes the page template name into a buffer and sends it, so
// that a template error becomes a clean 500.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, code int, name string, p page) {
	t := h.pages[name]
	if t == nil {
		h.log.Error("dashboard template missing", "page", name)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	p.CSRF = h.csrfToken(w, r)
	p.Authed = len(h.tokens) > 0 && h.sessions.valid(sessionCookie(r))
	p.Now = h.now().UTC()
	var buf bytes.Buffer
	if err := t.Execute(&buf, p); err != nil {
		h.log.Error("rendering dashboard page", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

// error answers an error page with a fixed message (never err.Error()).
func (h *Handler) error(w http.ResponseWriter, r *http.Request, code int, msg string) {
	h.render(w, r, code, "error", page{Title: http.StatusText(code), Error: msg})
}

// fail answers a store error: 404 for ErrNotFound, else a logged 500.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, what string, err error) {
	if errors.Is(err, store.ErrNotFound) {
		h.error(w, r, http.StatusNotFound, "Not found.")
		return
	}
	h.log.Error(what, "err", err)
	h.error(w, r, http.StatusInternalServerError, "The store could not answer; see the server log.")
}
