package postgres

// Per-domain aggregates, their storm flag and route health (the last MX
// check and whether the domain recovered; store/bolt/mxhealth.go).

import (
	"context"
	"encoding/json"

	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/bouncer/bouncer/store"

	"github.com/jackc/pgx/v5"
)

// mxHealth is what mx_health keeps per domain (as store/bolt does).
type mxHealth struct {
	Last      store.MXCheck `json:"last"`
	Recovered time.Time     `json:"recovered,omitzero"` // first routed check after a failure
}

// routeFailure selects the ID of the newest 5.4.x record (RFC 3463
// routing failures: "5.4." and one to three digits) of domain d.domain.
const routeFailure = `(SELECT r.id FROM records r WHERE r.domain = d.domain
	AND r.status >= '\x352e342e'::bytea AND r.status < '\x352e342f'::bytea AND length(r.status) BETWEEN 5 AND 7
	ORDER BY r.id DESC LIMIT 1)`

// domainSelect reads aggregates with their storm flag, MX health and the
// newest route failure (only looked up for domains with MX health).
const domainSelect = `SELECT d.data, f.data, m.data, CASE WHEN m.domain IS NOT NULL THEN ` + routeFailure + ` END
	FROM domains d LEFT JOIN storm_flags f ON f.domain = d.domain LEFT JOIN mx_health m ON m.domain = d.domain`

const statusFilter = ` WHERE EXISTS (SELECT 1 FROM dom_status s WHERE s.status = $1 AND s.domain = d.domain)`

// Domains returns the aggregates of the recipient domains, in domain
// order; with status set, only domains with records of that status.
func (db *DB) Domains(status string) ([]store.DomainStat, error) {
	if status == "" {
		return db.readDomains(domainSelect + " ORDER BY d.domain")
	}
	return db.readDomains(domainSelect+statusFilter+" ORDER BY d.domain", ix(status))
}

// RecentDomains returns the aggregates matching f, the most recently
// bounced first (of those bounced at the same time, the greater domain
// first), up to f.Limit (all if 0).
func (db *DB) RecentDomains(f store.DomainFilter) ([]store.DomainStat, error) {
	if f.Limit < 0 {
		return nil, fmt.Errorf("listing domains: negative limit %d", f.Limit)
	}
	q, args := domainSelect, []any{}
	if f.Status != "" {
		q, args = q+statusFilter, append(args, ix(f.Status))
	}
	q += " ORDER BY d.last_seen DESC, d.domain DESC"
	if f.Limit > 0 {
		q += " LIMIT " + strconv.Itoa(f.Limit)
	}
	return db.readDomains(q, args...)
}

// DomainStat returns the aggregate of one domain with its storm flag and
// route health, or ErrNotFound; the dashboard's domain page reads it.
func (db *DB) DomainStat(domain string) (*store.DomainStat, error) {
	out, err := db.readDomains(domainSelect+" WHERE d.domain = $1", []byte(domain))
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, store.ErrNotFound
	}
	return &out[0], nil
}

func (db *DB) readDomains(q string, args ...any) ([]store.DomainStat, error) {
	ctx, cancel := db.ctx()
	defer cancel()
	rows, err := db.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, wrapErr("listing domains", err)
	}
	defer rows.Close()
	var out []store.DomainStat
	for rows.Next() {
		var dj, fj, mj, fail []byte
		if err := rows.Scan(&dj, &fj, &mj, &fail); err != nil {
			return nil, wrapErr("listing domains", err)
		}
		var st store.DomainStat
		if err := json.Unmarshal(dj, &st); err != nil {
			return nil, fmt.Errorf("decoding domain aggregate: %w", err)
		}
		addHealth(&st, fj, mj, keyTime(fail))
		out = append(out, st)
	}
	return out, wrapErr("listing domains", rows.Err())
}

// addHealth fills the storm flag, last MX check and recovery time of st.
// A recovery older than the domain's newest 5.4.x bounce is not shown.
func addHealth(st *store.DomainStat, flag, health []byte, lastFailure time.Time) {
	if flag != nil {
		var f store.Storm
		if json.Unmarshal(flag, &f) == nil {
			st.Storm = &f
		}
	}
	if health == nil {
		return
	}
	var h mxHealth
	if json.Unmarshal(health, &h) != nil {
		return
	}
	last := h.Last
	st.LastMX = &last
	if !h.Recovered.IsZero() && !h.Recovered.Before(lastFailure) {
		r := h.Recovered
		st.Recovered = &r
	}
}

// lastRouteFailure is the time of the newest 5.4.x record of domain, or
// the zero time.
func lastRouteFailure(ctx context.Context, q querier, domain string) (time.Time, error) {
	var id []byte
	err := q.QueryRow(ctx, "SELECT "+routeFailure+" FROM (SELECT $1::bytea AS domain) d", ix(domain)).Scan(&id)
	return keyTime(id), err
}

// SetMXCheck stores the result of an MX check of domain. A routed check
// marks the domain recovered when it follows a failed check or a 5.4.x
// bounce newer than the last recovery; a failed check clears the mark.
// With lift set, a new recovery also removes the policy suppressions of
// the domain with 5.4.x statuses (and their soft counters). It returns
// whether this check marked the domain recovered and how many
// suppressions it lifted.
func (db *DB) SetMXCheck(domain string, c store.MXCheck, lift bool) (recovered bool, lifted int, err error) {
	domain = strings.ToLower(strings.TrimSpace(domain))
	if err := store.ValidateMXCheck(domain, c); err != nil {
		return false, 0, err
	}
	if c.Checked.IsZero() {
		c.Checked = db.now()
	}
	err = db.update("storing MX check", func(ctx context.Context, tx pgx.Tx) error {
		recovered, lifted = false, 0
		var h mxHealth
		ok, err := getJSON(ctx, tx, &h, "SELECT data FROM mx_health WHERE domain = $1", []byte(domain))
		if err != nil {
			return err
		}
		prevFailed := !ok || !h.Last.Routed
		fail, err := lastRouteFailure(ctx, tx, domain)
		if err != nil {
			return err
		}
		switch {
		case !c.Routed:
			h.Recovered = time.Time{}
		case prevFailed || h.Recovered.IsZero() || h.Recovered.Before(fail):
			h.Recovered = c.Checked
			recovered = true
		}
		h.Last = c
		j, err := marshal(&h, "MX health")
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO mx_health (domain, data) VALUES ($1, $2)
			ON CONFLICT (domain) DO UPDATE SET data = excluded.data`, []byte(domain), j); err != nil {
			return err
		}
		if recovered && lift {
			lifted, err = liftRouteSuppressions(ctx, tx, domain)
		}
		return err
	})
	if err != nil {
		return false, 0, err
	}
	return recovered, lifted, nil
}

// liftRouteSuppressions removes the policy suppressions of domain whose
// status is 5.4.x, and their soft counters.
func liftRouteSuppressions(ctx context.Context, tx pgx.Tx, domain string) (int, error) {
	var lift [][]byte
	err := queryJSON(ctx, tx, func(j []byte) error {
		var s store.Suppression
		if err := json.Unmarshal(j, &s); err != nil {
			return fmt.Errorf("decoding suppression: %w", err)
		}
		if strings.HasPrefix(s.Source, "policy") && store.RouteStatus(s.Status) {
			lift = append(lift, []byte(s.Address))
		}
		return nil
	}, "SELECT data FROM suppressions WHERE domain = $1", []byte(domain))
	if err != nil || len(lift) == 0 {
		return 0, err
	}
	b := &pgx.Batch{}
	b.Queue("DELETE FROM suppressions WHERE address = ANY($1)", lift)
	b.Queue("DELETE FROM soft WHERE address = ANY($1)", lift)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return 0, err
	}
	return len(lift), nil
}
