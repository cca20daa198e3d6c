// Package api is bouncer's admin HTTP API: JSON over versioned paths, for
// the query commands of the bouncer CLI and for operators' scripts.
//
//	GET /healthz                     liveness: 200 "ok" when the store answers
//	GET /readyz                      readiness: 200 "ready" when the store
//	                                 can also commit (WithReady), else 503
//	GET /v1/bounces?status=&domain=&recipient=&kind=&since=&limit=&before=
//	                                 a page, newest first; "next" is the
//	                                 before= of the following page
//	GET /v1/bounces/{id}             one record
//	GET /v1/bounces/{id}/raw         the raw message of a record (message/rfc822)
//	GET /v1/suppressions?domain=     the suppression list (JSON lines)
//	GET /v1/suppressions/{addr}      one entry, 404 when not suppressed
//	GET /v1/domains?status=&limit=   recipient domains with bounces: without
//	                                 limit all, in domain order; with limit
//	                                 the most recently bounced first, at
//	                                 most limit (0: all)
//	POST /v1/suppressions            add {"address","reason"}: 201, 409 when listed
//	DELETE /v1/suppressions/{addr}   remove: 204, 404 when not suppressed
//	GET /v1/storms                   domains flagged by the storm guard
//	GET /v1/holds?domain=            suppressions held back by the storm guard
//	POST /v1/storms/{domain}/release suppress the held addresses, clear the flag
//	POST /v1/storms/{domain}/drop    forget the held addresses, clear the flag
//	PUT /v1/domains/{domain}/mx      store an MX check {"check":{...},"lift":bool}
//	GET /v1/outbox?dead=1&after=&limit=  push events queued (or dead), oldest first
//	POST /v1/outbox/retry            dead letters back to the queue {"seqs":[..]} or {"all":true}
//	POST /v1/outbox/drop             delete dead letters, same body
//	GET /v1/backup                   a consistent copy of the database file,
//	                                 streamed; trailers give its size or
//	                                 why it broke off (backup.go)
//	GET /v1/export/bounces?format=csv|json&filters
//	GET /v1/export/suppressions?format=csv|json|postfix&domain=
//	                                 streamed; a failure after the headers
//	                                 sets the X-Bouncer-Export-Error trailer
//
// With tokens configured every request but /healthz and /readyz needs
// "Authorization: Bearer TOKEN". Requests from browsers are refused as
// browser.go describes: a Host that is not this server, a cross-site
// state-changing request, a body that is not application/json. Ids and
// addresses that cannot be valid get 400 with a message.
package api

import (
	"context"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
)

// Store is what the API reads and changes: every method of store.Store
// but Save, Prune and Close, which belong to intake and the server.
type Store interface {
	Query(f store.Filter) ([]store.Record, error)
	ForEach(f store.Filter, fn func(store.Record) error) error
	Page(f store.Filter, before string) ([]store.Record, string, error)
	Record(id string) (*store.Record, error)
	Raw(msgID string) ([]byte, error)
	Domains(status string) ([]store.DomainStat, error)
	RecentDomains(f store.DomainFilter) ([]store.DomainStat, error)
	SetMXCheck(domain string, c store.MXCheck, lift bool) (bool, int, error)
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
}

// Handler serves the API from a store.
type Handler struct {
	db      Store
	tokens  [][]byte
	log     *slog.Logger
	mux     *http.ServeMux
	handler http.Handler // mux behind the browser checks (browser.go)
	hosts   map[string]bool
	anyHost bool
	ready   func(context.Context) error
}

// New returns the API handler. An empty tokens list means no
// authentication (the caller only allows that on loopback).
func New(db Store, tokens []string, logger *slog.Logger) *Handler {
	h := &Handler{db: db, log: logger, mux: http.NewServeMux(), hosts: map[string]bool{}}
	h.handler = h.guard(h.mux)
	for _, t := range tokens {
		h.tokens = append(h.tokens, []byte(t))
	}
	h.mux.HandleFunc("GET /healthz", h.healthz)
	h.mux.HandleFunc("GET /readyz", h.readyz)
	h.mux.HandleFunc("GET /v1/bounces", h.auth(h.bounces))
	h.mux.HandleFunc("GET /v1/bounces/{id}", h.auth(h.bounce))
	h.mux.HandleFunc("GET /v1/bounces/{id}/raw", h.auth(h.raw))
	h.mux.HandleFunc("GET /v1/suppressions", h.auth(h.suppressions))
	h.mux.HandleFunc("GET /v1/suppressions/{addr}", h.auth(h.suppressed))
	h.mux.HandleFunc("GET /v1/domains", h.auth(h.domains))
	h.mux.HandleFunc("POST /v1/suppressions", h.auth(h.addSuppression))
	h.mux.HandleFunc("DELETE /v1/suppressions/{addr}", h.auth(h.removeSuppression))
	h.mux.HandleFunc("GET /v1/storms", h.auth(h.storms))
	h.mux.HandleFunc("GET /v1/holds", h.auth(h.holds))
	h.mux.HandleFunc("POST /v1/storms/{domain}/release", h.auth(h.endStorm(true)))
	h.mux.HandleFunc("POST /v1/storms/{domain}/drop", h.auth(h.endStorm(false)))
	h.mux.HandleFunc("PUT /v1/domains/{domain}/mx", h.auth(h.setMX))
	h.mux.HandleFunc("GET /v1/outbox", h.auth(h.outbox))
	h.mux.HandleFunc("POST /v1/outbox/retry", h.auth(h.outboxMove(true)))
	h.mux.HandleFunc("POST /v1/outbox/drop", h.auth(h.outboxMove(false)))
	h.mux.HandleFunc("GET /v1/export/{what}", h.auth(h.export))
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.handler.ServeHTTP(w, r)
}

func (h *Handler) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if len(h.tokens) > 0 && !h.validToken(r.Header.Get("Authorization")) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="bouncer"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		next(w, r)
	}
}

func (h *Handler) validToken(header string) bool {
	tok, ok := strings.CutPrefix(header, "Bearer ")
	if !ok {
		return false
	}
	valid := 0
	for _, t := range h.tokens {
		valid |= subtle.ConstantTimeCompare([]byte(tok), t)
	}
	return valid == 1
}

// healthz is liveness: the process serves and the store can be read.
// A full disk does not fail it; restarting would not help.
func (h *Handler) healthz(w http.ResponseWriter, r *http.Request) {
	if _, err := h.db.Query(store.Filter{Limit: 1}); err != nil {
		h.log.Error("health check failed", "err", err)
		writeError(w, http.StatusServiceUnavailable, "store unavailable")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}

// readyz is readiness: liveness and, if WithReady set a check, whether the
// store can commit now. While it fails, deliveries get 451 and a load
// balancer should send them elsewhere.
func (h *Handler) readyz(w http.ResponseWriter, r *http.Request) {
	if _, err := h.db.Query(store.Filter{Limit: 1}); err != nil {
		h.log.Error("readiness check failed", "err", err)
		writeError(w, http.StatusServiceUnavailable, "store unavailable")
		return
	}
	if h.ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := h.ready(ctx); err != nil {
			h.log.Warn("readiness check failed", "err", err)
			writeError(w, http.StatusServiceUnavailable, "store cannot commit")
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ready\n"))
}

// filterFrom reads a store.Filter from query parameters.
func filterFrom(r *http.Request) (store.Filter, error) {
	q := r.URL.Query()
	f := store.Filter{
		Status:    q.Get("status"),
		Domain:    q.Get("domain"),
		Recipient: q.Get("recipient"),
		Kind:      parse.Kind(q.Get("kind")),
	}
	if s := q.Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return f, errors.New("since: want an RFC 3339 time")
		}
		f.Since = t
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return f, errors.New("limit: want a non-negative number")
		}
		f.Limit = n
	}
	return f, nil
}

// BouncesResponse is the body of GET /v1/bounces. Next is the before=
// cursor of the following page, "" on the last page.
type BouncesResponse struct {
	Records []store.Record `json:"records"`
	Next    string         `json:"next,omitempty"`
}

// validID reports whether id looks like a record id (24 hex digits).
func validID(id string) bool {
	if len(id) != 24 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

func (h *Handler) bounces(w http.ResponseWriter, r *http.Request) {
	f, err := filterFrom(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	before := r.URL.Query().Get("before")
	if before != "" && !validID(before) {
		writeError(w, http.StatusBadRequest, "before: want a record id")
		return
	}
	recs, next, err := h.db.Page(f, before)
	if err != nil {
		h.fail(w, "querying bounces", err)
		return
	}
	if recs == nil {
		recs = []store.Record{}
	}
	writeJSON(w, BouncesResponse{Records: recs, Next: next})
}

// errBadID answers a path id that is not a record id.
const errBadID = "id: want a record id (24 hex digits)"

func (h *Handler) bounce(w http.ResponseWriter, r *http.Request) {
	if !validID(r.PathValue("id")) {
		writeError(w, http.StatusBadRequest, errBadID)
		return
	}
	rec, err := h.db.Record(r.PathValue("id"))
	if err != nil {
		h.fail(w, "reading record", err)
		return
	}
	writeJSON(w, rec)
}

func (h *Handler) raw(w http.ResponseWriter, r *http.Request) {
	if !validID(r.PathValue("id")) {
		writeError(w, http.StatusBadRequest, errBadID)
		return
	}
	rec, err := h.db.Record(r.PathValue("id"))
	if err != nil {
		h.fail(w, "reading record", err)
		return
	}
	raw, err := h.db.Raw(rec.MsgID)
	if err != nil {
		h.fail(w, "reading raw message", err)
		return
	}
	w.Header().Set("Content-Type", "message/rfc822")
	w.Write(raw)
}

func (h *Handler) suppressions(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	err := h.db.Suppressions(r.URL.Query().Get("domain"), func(s store.Suppression) error {
		return enc.Encode(s)
	})
	if err != nil {
		// Headers may be out already; the client sees a truncated stream.
		h.log.Error("listing suppressions", "err", err)
	}
}

func (h *Handler) suppressed(w http.ResponseWriter, r *http.Request) {
	if msg := badAddress(r.PathValue("addr")); msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	s, err := h.db.Suppressed(r.PathValue("addr"))
	if err != nil {
		h.fail(w, "reading suppression", err)
		return
	}
	writeJSON(w, s)
}

// DomainsResponse is the body of GET /v1/domains.
type DomainsResponse struct {
	Domains []store.DomainStat `json:"domains"`
}

func (h *Handler) domains(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var ds []store.DomainStat
	var err error
	if s := q.Get("limit"); s != "" {
		n, cerr := strconv.Atoi(s)
		if cerr != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "limit: want a non-negative number")
			return
		}
		ds, err = h.db.RecentDomains(store.DomainFilter{Status: q.Get("status"), Limit: n})
	} else {
		ds, err = h.db.Domains(q.Get("status"))
	}
	if err != nil {
		h.fail(w, "listing domains", err)
		return
	}
	if ds == nil {
		ds = []store.DomainStat{}
	}
	writeJSON(w, DomainsResponse{Domains: ds})
}

// fail answers 404 for ErrNotFound and a generic 500 otherwise, logging
// the cause; internals never reach the client.
func (h *Handler) fail(w http.ResponseWriter, what string, err error) {
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "not found")
		return
	}
	h.log.Error(what, "err", err)
	writeError(w, http.StatusInternalServerError, "internal error")
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(errorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}
