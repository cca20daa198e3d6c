package postgres

import (
	"errors"
	"fmt"

	"github.com/bouncer/bouncer/store"
)

// maxCheckErrors caps the problems Check reports.
const maxCheckErrors = 100

// checks are the invariants Check verifies: each query returns a
// description of up to maxCheckErrors rows that break it. The server
// keeps its own pages consistent; these are bouncer's invariants, each
// one index or anti-join scan.
var checks = []struct{ what, sql string }{
	{"record without raw message", `SELECT encode(r.msg_id, 'hex') FROM records r
		WHERE r.msg_id >= coalesce((SELECT decode(lpad(to_hex(value::int8), 16, '0'), 'hex') FROM meta WHERE key = 'raw_pruned_before'), '\x'::bytea)
		AND NOT EXISTS (SELECT 1 FROM raw WHERE raw.id = r.msg_id) LIMIT 100`},
	{"record with a bad id", `SELECT encode(id, 'hex') FROM records WHERE length(id) <> 12 OR length(msg_id) <> 12 LIMIT 100`},
	{"dedupe key of a missing record", `SELECT encode(s.key, 'hex') FROM seen s
		WHERE NOT EXISTS (SELECT 1 FROM records r WHERE r.id = s.id) LIMIT 100`},
	{"domain status index without aggregate", `SELECT encode(s.domain, 'escape') FROM dom_status s
		WHERE NOT EXISTS (SELECT 1 FROM domains d WHERE d.domain = s.domain) LIMIT 100`},
	{"hold whose key disagrees with its value", `SELECT encode(h.address, 'escape') FROM holds h
		WHERE h.data->>'domain' IS DISTINCT FROM convert_from(h.domain, 'UTF8') LIMIT 100`},
	{"outbox event numbered after the sequence", `SELECT seq::text FROM outbox
		WHERE seq > (SELECT last_value FROM outbox_seq) LIMIT 100`},
	{"event both queued and dead", `SELECT o.seq::text FROM outbox o JOIN outbox_dead d USING (seq) LIMIT 100`},
}

// Check verifies the schema version and the store's invariants: every
// record has its raw message (unless pruned) and a well-formed ID, every
// dedupe key names a record, every domain status entry an aggregate,
// every hold's key agrees with its value, and outbox numbers are sane.
// It returns nil or the problems found (at most 100), joined.
func (db *DB) Check() error {
	ctx, cancel := db.ctx()
	defer cancel()
	var v int
	if err := db.pool.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_version").Scan(&v); err != nil {
		return wrapErr("checking schema version", err)
	}
	var errs []error
	if v != SchemaVersion() {
		errs = append(errs, fmt.Errorf("%w: database has %d, this program writes %d", ErrSchema, v, SchemaVersion()))
	}
	for _, c := range checks {
		rows, err := db.pool.Query(ctx, c.sql)
		if err != nil {
			return wrapErr("checking "+c.what, err)
		}
		for rows.Next() && len(errs) < maxCheckErrors {
			var s string
			if err := rows.Scan(&s); err != nil {
				rows.Close()
				return wrapErr("checking "+c.what, err)
			}
			errs = append(errs, fmt.Errorf("%s: %s", c.what, store.Truncate(s, 80)))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return wrapErr("checking "+c.what, err)
		}
	}
	return errors.Join(errs...)
}
