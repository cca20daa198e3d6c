package postgres

// Storm guard: flags, holds, and their release (see store/storm.go for
// the rule and store/bolt/storm.go for the reference semantics).

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/bouncer/bouncer/store"

	"github.com/jackc/pgx/v5"
)

// Storms returns the flagged domains, in domain order.
func (db *DB) Storms() ([]store.Storm, error) {
	ctx, cancel := db.ctx()
	defer cancel()
	var out []store.Storm
	err := queryJSON(ctx, db.pool, func(j []byte) error {
		var st store.Storm
		if err := json.Unmarshal(j, &st); err != nil {
			return fmt.Errorf("decoding storm flag: %w", err)
		}
		out = append(out, st)
		return nil
	}, "SELECT data FROM storm_flags ORDER BY domain")
	return out, wrapErr("listing storms", err)
}

// queryJSON calls fn with the single JSON column of each row.
func queryJSON(ctx context.Context, q querier, fn func([]byte) error, sql string, args ...any) error {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var j []byte
		if err := rows.Scan(&j); err != nil {
			return err
		}
		if err := fn(j); err != nil {
			return err
		}
	}
	return rows.Err()
}

// maxHoldsListed caps what Holds returns.
const maxHoldsListed = 100_000

// holdsOrder is the order of store/bolt's held bucket, whose keys start
// with the domain's length.
const holdsOrder = " ORDER BY length(domain), domain, address"

// Holds returns the held suppressions of domain (all domains if ""), in
// domain and address order, at most 100,000.
func (db *DB) Holds(domain string) ([]store.Hold, error) {
	ctx, cancel := db.ctx()
	defer cancel()
	out, err := readHolds(ctx, db.pool, strings.ToLower(domain), maxHoldsListed)
	return out, wrapErr("listing holds", err)
}

func readHolds(ctx context.Context, q querier, domain string, limit int) ([]store.Hold, error) {
	var out []store.Hold
	fn := func(j []byte) error {
		var h store.Hold
		if err := json.Unmarshal(j, &h); err != nil {
			return fmt.Errorf("decoding hold: %w", err)
		}
		out = append(out, h)
		return nil
	}
	if domain == "" {
		return out, queryJSON(ctx, q, fn, "SELECT data FROM holds"+holdsOrder+" LIMIT $1", limit)
	}
	return out, queryJSON(ctx, q, fn, "SELECT data FROM holds WHERE domain = $1"+holdsOrder+" LIMIT $2", []byte(domain), limit)
}

// ReleaseHolds puts the held suppressions of domain on the suppression
// list (Source "policy (released)"), removes them from the held list and
// clears the domain's storm flag and counters. It returns how many
// addresses were suppressed; held addresses suppressed meanwhile keep
// their entry. A domain without flag or holds gives ErrNotFound.
func (db *DB) ReleaseHolds(domain string) (int, error) {
	return db.endStorm(domain, true)
}

// DropHolds forgets the held suppressions of domain and clears its storm
// flag and counters. It returns how many holds were dropped. A domain
// without flag or holds gives ErrNotFound.
func (db *DB) DropHolds(domain string) (int, error) {
	return db.endStorm(domain, false)
}

func (db *DB) endStorm(domain string, release bool) (int, error) {
	domain = strings.ToLower(strings.TrimSpace(domain))
	n := 0
	err := db.update("ending storm", func(ctx context.Context, tx pgx.Tx) error {
		n = 0
		st, err := readStorm(ctx, tx, domain)
		if err != nil {
			return err
		}
		holds, err := readHolds(ctx, tx, domain, 1<<31-1)
		if err != nil {
			return err
		}
		if st == nil && len(holds) == 0 {
			return store.ErrNotFound
		}
		b := &pgx.Batch{}
		for _, h := range holds {
			if !release {
				n++
				continue
			}
			if s, err := readSuppression(ctx, tx, h.Address); err != nil || s != nil {
				if err != nil {
					return err
				}
				continue
			}
			n++
			err := queueSuppression(b, &store.Suppression{
				Address: h.Address, Reason: h.Reason, Status: h.Status, RecordID: h.RecordID,
				Created: db.now(), Source: "policy (released)",
			})
			if err != nil {
				return err
			}
		}
		b.Queue("DELETE FROM holds WHERE domain = $1", []byte(domain))
		b.Queue("DELETE FROM storm_flags WHERE domain = $1", []byte(domain))
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		return resetStormCounts(ctx, tx, domain, st)
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// resetStormCounts forgets the counted addresses of domain, of the key
// that started its storm and of the MTAs seen for the domain, so that the
// next suppression does not start the same storm again at once.
func resetStormCounts(ctx context.Context, tx pgx.Tx, domain string, st *store.Storm) error {
	kinds, keys := []string{"d"}, [][]byte{ix(domain)}
	if st != nil {
		if k, ok := store.ParseStormKey(st.Key); ok {
			kinds, keys = append(kinds, string(k.Kind)), append(keys, ix(k.Value))
		}
	}
	var ds store.DomainStat
	ok, err := getJSON(ctx, tx, &ds, "SELECT data FROM domains WHERE domain = $1", []byte(domain))
	if err != nil {
		return err
	}
	if ok {
		for _, m := range ds.RemoteMTAs {
			kinds, keys = append(kinds, "r"), append(keys, ix(m))
		}
		for _, m := range ds.ReportingMTAs {
			kinds, keys = append(kinds, "g"), append(keys, ix(m))
		}
	}
	_, err = tx.Exec(ctx, `DELETE FROM storm_sets WHERE (kind, key) IN
		(SELECT * FROM unnest($1::text[], $2::bytea[]))`, kinds, keys)
	return err
}
