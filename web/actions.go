package web

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/bouncer/bouncer/store"
)

// The changes. Each calls the store method the CLI and the API call, logs
// one line ("via" dashboard, the remote address and what changed), and
// answers with a redirect to the page it came from (post/redirect/get),
// which shows a fixed message chosen by the done parameter.

// Limits of form fields, as the API's.
const (
	maxAddrLen   = store.MaxAddrLen
	maxReasonLen = 1000
)

// flashes are the messages a redirect can ask for; n is a count.
var flashes = map[string]string{
	"added":    "Address added to the suppression list.",
	"removed":  "Address removed from the suppression list.",
	"released": "Held suppressions released: %d.",
	"dropped":  "Held suppressions dropped: %d.",
	"retried":  "Dead letters moved back to the queue: %d.",
	"deleted":  "Dead letters deleted: %d.",
}

// flash is the message of a done parameter, or "".
func flash(r *http.Request) string {
	msg := flashes[r.URL.Query().Get("done")]
	if strings.Contains(msg, "%d") {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		msg = strings.Replace(msg, "%d", strconv.Itoa(n), 1)
	}
	return msg
}

// done redirects to path with the flash key and count.
func done(w http.ResponseWriter, r *http.Request, path, key string, n int, extra url.Values) {
	q := url.Values{"done": {key}}
	if n >= 0 {
		q.Set("n", strconv.Itoa(n))
	}
	for k, v := range extra {
		q[k] = v
	}
	http.Redirect(w, r, path+"?"+q.Encode(), http.StatusSeeOther)
}

type suppressionsData struct {
	Q       string
	List    []store.Suppression
	More    bool
	Address string // the add form's values, after an error
	Reason  string
}

// suppressions searches the list: an address (with @) exactly, else a
// domain, else the first entries of all, at most listMax.
func (h *Handler) suppressions(w http.ResponseWriter, r *http.Request) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	d, err := h.searchSuppressions(q)
	if err != nil {
		h.fail(w, r, "listing suppressions", err)
		return
	}
	h.render(w, r, http.StatusOK, "suppressions", page{Title: "Suppressions", Nav: "suppressions", Flash: flash(r), Data: d})
}

func (h *Handler) searchSuppressions(q string) (suppressionsData, error) {
	d := suppressionsData{Q: q}
	if strings.Contains(q, "@") {
		s, err := h.db.Suppressed(q)
		if errors.Is(err, store.ErrNotFound) {
			return d, nil
		}
		if err != nil {
			return d, err
		}
		d.List = []store.Suppression{*s}
		return d, nil
	}
	err := h.db.Suppressions(strings.ToLower(q), func(s store.Suppression) error {
		if len(d.List) == listMax {
			d.More = true
			return errEnough
		}
		d.List = append(d.List, s)
		return nil
	})
	if errors.Is(err, errEnough) {
		err = nil
	}
	return d, err
}

// badInput says what is wrong with an address and reason from a form.
func badInput(addr, reason string) string {
	switch {
	case hasControl(addr) || !utf8.ValidString(addr):
		return "The address holds control characters or is not UTF-8."
	case !strings.Contains(addr, "@") || len(addr) > maxAddrLen:
		return "Want an address local@domain of at most 320 bytes."
	case len(reason) > maxReasonLen || hasControl(reason) || !utf8.ValidString(reason):
		return "Want a reason of at most 1000 bytes, on one line."
	}
	return ""
}

func (h *Handler) addSuppression(w http.ResponseWriter, r *http.Request) {
	addr := store.NormalizeAddr(r.PostForm.Get("address"))
	reason := strings.TrimSpace(r.PostForm.Get("reason"))
	bad := badInput(addr, reason)
	var err error
	if bad == "" {
		err = h.db.AddSuppression(store.Suppression{Address: addr, Reason: reason, Source: "dashboard"})
		switch {
		case errors.Is(err, store.ErrExists):
			bad = "That address is already on the list."
		case errors.Is(err, store.ErrInvalid):
			bad = "Want an address local@domain of at most 320 bytes."
		case err != nil:
			h.fail(w, r, "adding suppression", err)
			return
		}
	}
	if bad != "" {
		d, _ := h.searchSuppressions(addr)
		d.Address, d.Reason = addr, reason
		code := http.StatusBadRequest
		if errors.Is(err, store.ErrExists) {
			code = http.StatusConflict
		}
		h.render(w, r, code, "suppressions", page{Title: "Suppressions", Nav: "suppressions", Error: bad, Data: d})
		return
	}
	h.log.Info("suppression added", "via", "dashboard", "address", addr, "reason", reason, "remote", r.RemoteAddr)
	done(w, r, "/ui/suppressions", "added", -1, url.Values{"q": {addr}})
}

func (h *Handler) removeSuppression(w http.ResponseWriter, r *http.Request) {
	addr := store.NormalizeAddr(r.PostForm.Get("address"))
	reason := strings.TrimSpace(r.PostForm.Get("reason"))
	if bad := badInput(addr, reason); bad != "" {
		h.error(w, r, http.StatusBadRequest, bad)
		return
	}
	if err := h.db.RemoveSuppression(addr); err != nil {
		h.fail(w, r, "removing suppression", err)
		return
	}
	h.log.Info("suppression removed", "via", "dashboard", "address", addr, "reason", reason, "remote", r.RemoteAddr)
	done(w, r, "/ui/suppressions", "removed", -1, url.Values{"q": {store.AddrDomain(addr)}})
}

type stormsData struct {
	Storms    []store.Storm
	Holds     []store.Hold
	MoreHolds bool
	Queued    int
	DeadN     int
	Dead      []store.OutboxEvent
	MoreDead  bool
	Waiting   []store.OutboxEvent
}

func (h *Handler) storms(w http.ResponseWriter, r *http.Request) {
	var d stormsData
	var err error
	if d.Storms, err = h.db.Storms(); err != nil {
		h.fail(w, r, "listing storms", err)
		return
	}
	if d.Holds, err = h.db.Holds(""); err != nil {
		h.fail(w, r, "listing holds", err)
		return
	}
	if len(d.Holds) > listMax {
		d.Holds, d.MoreHolds = d.Holds[:listMax], true
	}
	if d.Queued, d.DeadN, err = h.db.OutboxStats(); err != nil {
		h.fail(w, r, "counting outbox", err)
		return
	}
	if d.Dead, d.MoreDead, err = h.events(true, listMax); err != nil {
		h.fail(w, r, "listing dead letters", err)
		return
	}
	if d.Waiting, _, err = h.events(false, 20); err != nil {
		h.fail(w, r, "listing outbox", err)
		return
	}
	h.render(w, r, http.StatusOK, "storms", page{Title: "Storms and outbox", Nav: "storms", Flash: flash(r), Data: d})
}

// events returns up to n events of the queue (or the dead letters),
// oldest first, and whether there are more.
func (h *Handler) events(dead bool, n int) ([]store.OutboxEvent, bool, error) {
	var out []store.OutboxEvent
	more := false
	err := h.db.OutboxEvents(dead, func(ev store.OutboxEvent) error {
		if len(out) == n {
			more = true
			return errEnough
		}
		out = append(out, ev)
		return nil
	})
	if errors.Is(err, errEnough) {
		err = nil
	}
	return out, more, err
}

// endStorm releases (suppresses) or drops the holds of a domain and ends
// its storm, as `bouncer storm release|drop` does.
func (h *Handler) endStorm(release bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		dom := strings.TrimSpace(r.PostForm.Get("domain"))
		if dom == "" || hasControl(dom) || len(dom) > store.MaxDomainLen {
			h.error(w, r, http.StatusBadRequest, "Name a domain.")
			return
		}
		end, key, msg := h.db.DropHolds, "dropped", "storm holds dropped"
		if release {
			end, key, msg = h.db.ReleaseHolds, "released", "storm holds released"
		}
		n, err := end(dom)
		if err != nil {
			h.fail(w, r, "ending storm", err)
			return
		}
		h.log.Info(msg, "via", "dashboard", "domain", dom, "count", n, "remote", r.RemoteAddr)
		done(w, r, "/ui/storms", key, n, nil)
	}
}

// outboxMove retries or drops dead letters: the seq values checked, or
// all=1, as `bouncer outbox retry|drop`.
func (h *Handler) outboxMove(w http.ResponseWriter, r *http.Request) {
	op := r.PostForm.Get("op")
	if op != "retry" && op != "drop" {
		h.error(w, r, http.StatusBadRequest, "Choose retry or drop.")
		return
	}
	all := r.PostForm.Get("all") == "1"
	var seqs []uint64
	for _, s := range r.PostForm["seq"] {
		n, err := store.ParseSeq(s)
		if err != nil {
			h.error(w, r, http.StatusBadRequest, "Bad event number.")
			return
		}
		seqs = append(seqs, n)
	}
	if (len(seqs) == 0) != all || len(seqs) > 5000 {
		h.error(w, r, http.StatusBadRequest, "Check the dead letters to move, or use the buttons for all of them.")
		return
	}
	move, key, msg := h.db.OutboxDrop, "deleted", "dead letters dropped"
	if op == "retry" {
		move, key, msg = h.db.OutboxRetry, "retried", "dead letters retried"
	}
	n, err := move(seqs...)
	if err != nil {
		h.fail(w, r, "moving dead letters", err)
		return
	}
	h.log.Info(msg, "via", "dashboard", "count", n, "all", all, "seqs", seqs, "remote", r.RemoteAddr)
	done(w, r, "/ui/storms", key, n, nil)
}
