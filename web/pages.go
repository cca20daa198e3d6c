package web

import (
	"cmp"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
)

// Page sizes. Each page reads a bounded amount whatever the store holds.
const (
	chartDays      = 30
	lastBounces    = 20
	recentDomains  = 500 // domains read for the domains page
	topDomains     = 50
	domainBounces  = 50
	bouncesPerPage = 50
	listMax        = 200    // suppressions, holds, dead letters shown
	eventScanMax   = 100000 // outbox events looked through for one record
)

// bounceKeys are the classes stacked in the overview's bounce chart.
var bounceKeys = []string{store.DayHard, store.DaySoft, store.DayComplaint, store.DayAutoReply}

// errEnough stops a walk once a list is full.
var errEnough = errors.New("enough")

type dayRow struct {
	Day    string
	Counts map[string]int
}

type overviewData struct {
	Chart, Supp barChart
	Keys        []string // table columns
	Rows        []dayRow // newest first
	Totals      map[string]int
	Storms      []store.Storm
	Queued      int
	Dead        int
	Last        []store.Record
}

// overview reads the daily counters (not the records), the storm flags,
// the outbox counts and one page of the newest records.
func (h *Handler) overview(w http.ResponseWriter, r *http.Request) {
	now := h.now()
	order := days(now, chartDays)
	from, _ := time.Parse(store.DayLayout, order[0])
	ds, err := h.db.Daily(from, now)
	if err != nil {
		h.fail(w, r, "reading daily counters", err)
		return
	}
	counts := map[string]map[string]int{}
	for _, d := range ds {
		counts[d.Day] = d.Counts
	}
	d := overviewData{Keys: store.DayKeys, Totals: map[string]int{},
		Chart: newBarChart("chart-bounces", "Bounces per day by class, last 30 days (UTC)", order, counts, bounceKeys),
		Supp:  newBarChart("chart-suppressions", "New suppressions and holds per day", order, counts, []string{store.DaySuppressed, store.DayHeld}),
	}
	for i := len(order) - 1; i >= 0; i-- {
		c := counts[order[i]]
		d.Rows = append(d.Rows, dayRow{Day: order[i], Counts: c})
		for k, n := range c {
			d.Totals[k] += n
		}
	}
	if d.Storms, err = h.db.Storms(); err != nil {
		h.fail(w, r, "listing storms", err)
		return
	}
	if d.Queued, d.Dead, err = h.db.OutboxStats(); err != nil {
		h.fail(w, r, "counting outbox", err)
		return
	}
	if d.Last, _, err = h.db.Page(store.Filter{Limit: lastBounces}, ""); err != nil {
		h.fail(w, r, "reading bounces", err)
		return
	}
	h.render(w, r, http.StatusOK, "overview", page{Title: "Overview", Nav: "overview", Data: d})
}

type domainsData struct {
	Read      int // aggregates read
	Top       []store.DomainStat
	Routing   []routeRow
	Recovered []store.DomainStat
}

type routeRow struct {
	store.DomainStat
	Failures int // records with a 5.4.x status
	Statuses string
}

// domains reads the recentDomains most recently bounced aggregates and
// ranks them: a page costs the same on any number of domains.
func (h *Handler) domains(w http.ResponseWriter, r *http.Request) {
	ds, err := h.db.RecentDomains(store.DomainFilter{Limit: recentDomains})
	if err != nil {
		h.fail(w, r, "listing domains", err)
		return
	}
	d := domainsData{Read: len(ds)}
	for _, st := range ds {
		if n, codes := routeFailures(st); n > 0 {
			d.Routing = append(d.Routing, routeRow{DomainStat: st, Failures: n, Statuses: codes})
		}
		if st.Recovered != nil {
			d.Recovered = append(d.Recovered, st)
		}
	}
	d.Top = slices.Clone(ds)
	slices.SortStableFunc(d.Top, func(a, b store.DomainStat) int { return cmp.Compare(b.Total, a.Total) })
	d.Top = d.Top[:min(len(d.Top), topDomains)]
	slices.SortStableFunc(d.Routing, func(a, b routeRow) int { return cmp.Compare(b.Failures, a.Failures) })
	h.render(w, r, http.StatusOK, "domains", page{Title: "Domains", Nav: "domains", Data: d})
}

// routeFailures counts the 5.4.x records of a domain and names their codes.
func routeFailures(st store.DomainStat) (int, string) {
	n := 0
	var codes []string
	for code, c := range st.Counts {
		if store.RouteStatus(code) {
			n += c
			codes = append(codes, code)
		}
	}
	slices.Sort(codes)
	return n, strings.Join(codes, " ")
}

type domainData struct {
	Name    string
	Stat    *store.DomainStat
	Chart   hbarChart
	Kinds   []kv
	Bounces []store.Record
	Next    string
}

type kv struct {
	Key string
	N   int
}

// sortedCounts lists a count map largest first, then by key.
func sortedCounts(m map[string]int) []kv {
	out := make([]kv, 0, len(m))
	for k, n := range m {
		out = append(out, kv{k, n})
	}
	slices.SortFunc(out, func(a, b kv) int { return cmp.Or(cmp.Compare(b.N, a.N), strings.Compare(a.Key, b.Key)) })
	return out
}

// domainReader looks up one domain's aggregate; store/bolt has it, and
// an engine without it costs the domain page a pass over all aggregates
// for a domain that has not bounced recently.
type domainReader interface {
	DomainStat(domain string) (*store.DomainStat, error)
}

// domain shows one domain's aggregate and its newest records.
func (h *Handler) domain(w http.ResponseWriter, r *http.Request) {
	name := strings.ToLower(strings.TrimSpace(r.URL.Query().Get("name")))
	if name == "" {
		http.Redirect(w, r, "/ui/domains", http.StatusSeeOther)
		return
	}
	st, err := h.findDomain(name)
	if err != nil {
		h.fail(w, r, "reading domain", err)
		return
	}
	d := domainData{Name: name, Stat: st}
	if st != nil {
		cs := sortedCounts(st.Counts)
		labels, ns := make([]string, len(cs)), make([]int, len(cs))
		for i, c := range cs {
			labels[i], ns[i] = cmp.Or(c.Key, "(none)"), c.N
		}
		d.Chart = newHBarChart("chart-statuses", "Records by status", labels, ns)
		d.Kinds = sortedCounts(st.Kinds)
	}
	d.Bounces, d.Next, err = h.db.Page(store.Filter{Domain: name, Limit: domainBounces}, "")
	if err != nil {
		h.fail(w, r, "reading bounces", err)
		return
	}
	h.render(w, r, http.StatusOK, "domain", page{Title: name, Nav: "domains", Data: d})
}

func (h *Handler) findDomain(name string) (*store.DomainStat, error) {
	if dr, ok := h.db.(domainReader); ok {
		st, err := dr.DomainStat(name)
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil
		}
		return st, err
	}
	ds, err := h.db.RecentDomains(store.DomainFilter{Limit: recentDomains})
	if err != nil {
		return nil, err
	}
	if len(ds) == recentDomains && !slices.ContainsFunc(ds, func(st store.DomainStat) bool { return st.Domain == name }) {
		if ds, err = h.db.Domains(""); err != nil {
			return nil, err
		}
	}
	for i := range ds {
		if ds[i].Domain == name {
			return &ds[i], nil
		}
	}
	return nil, nil
}

type bouncesData struct {
	Filter  store.Filter
	Records []store.Record
	Before  string
	Next    string
	Kinds   []parse.Kind
}

// validID reports whether id looks like a record id (24 hex digits).
func validID(id string) bool {
	if len(id) != 24 {
		return false
	}
	for _, c := range id {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func (h *Handler) bounces(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.Filter{Status: strings.TrimSpace(q.Get("status")), Domain: q.Get("domain"),
		Recipient: q.Get("recipient"), Kind: parse.Kind(q.Get("kind")), Limit: bouncesPerPage}
	before := q.Get("before")
	if before != "" && !validID(before) {
		h.error(w, r, http.StatusBadRequest, "before: want a record id.")
		return
	}
	recs, next, err := h.db.Page(f, before)
	if err != nil {
		h.fail(w, r, "reading bounces", err)
		return
	}
	d := bouncesData{Filter: f, Records: recs, Before: before, Next: next,
		Kinds: []parse.Kind{parse.KindBounce, parse.KindDelay, parse.KindComplaint, parse.KindAutoReply, parse.KindDelivered, parse.KindUnknown}}
	h.render(w, r, http.StatusOK, "bounces", page{Title: "Bounces", Nav: "bounces", Data: d})
}

type bounceData struct {
	Rec    *store.Record
	Fields []field
	Events []eventRow
	// Scanned is set when the outbox was longer than eventScanMax.
	Scanned bool
	Queued  int
	DeadN   int
}

type eventRow struct {
	store.OutboxEvent
	Dead bool
}

func (h *Handler) bounce(w http.ResponseWriter, r *http.Request) {
	rec, ok := h.record(w, r)
	if !ok {
		return
	}
	d := bounceData{Rec: rec, Fields: fields(rec)}
	for _, dead := range []bool{false, true} {
		n := 0
		err := h.db.OutboxEvents(dead, func(ev store.OutboxEvent) error {
			if n++; n > eventScanMax {
				d.Scanned = true
				return errEnough
			}
			if ev.RecordID == rec.ID {
				d.Events = append(d.Events, eventRow{OutboxEvent: ev, Dead: dead})
			}
			return nil
		})
		if err != nil && !errors.Is(err, errEnough) {
			h.fail(w, r, "listing outbox", err)
			return
		}
	}
	h.render(w, r, http.StatusOK, "bounce", page{Title: "Bounce " + rec.ID, Nav: "bounces", Data: d})
}

// record reads the record named by the id parameter, answering the
// error itself.
func (h *Handler) record(w http.ResponseWriter, r *http.Request) (*store.Record, bool) {
	id := r.URL.Query().Get("id")
	if !validID(id) {
		h.error(w, r, http.StatusBadRequest, "id: want a record id (24 hex digits).")
		return nil, false
	}
	rec, err := h.db.Record(id)
	if err != nil {
		h.fail(w, r, "reading record", err)
		return nil, false
	}
	return rec, true
}

// raw sends the raw message as a download: a browser must never render
// it (it is the attacker's text), hence attachment and nosniff.
func (h *Handler) raw(w http.ResponseWriter, r *http.Request) {
	rec, ok := h.record(w, r)
	if !ok {
		return
	}
	raw, err := h.db.Raw(rec.MsgID)
	if errors.Is(err, store.ErrRawPruned) {
		h.error(w, r, http.StatusNotFound, "The raw message was deleted by the retention (store.raw_retention).")
		return
	}
	if err != nil {
		h.fail(w, r, "reading raw message", err)
		return
	}
	w.Header().Set("Content-Type", "message/rfc822")
	w.Header().Set("Content-Disposition", `attachment; filename="`+rec.ID+`.eml"`)
	w.Header().Set("Content-Length", strconv.Itoa(len(raw)))
	w.Write(raw)
}
