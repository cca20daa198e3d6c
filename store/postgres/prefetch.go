package postgres

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/bouncer/bouncer/store"

	"github.com/jackc/pgx/v5"
)

// prefetch takes the writer lock, reads the ID generator and reads, in
// the same round trip, the state the rules will ask about for reqs: the
// keys follow from each delivery's records (store.BuildRecords), so a
// group costs a few round trips, not a few per delivery. The statements
// of one pipeline run in order, each with a snapshot taken after the lock
// (READ COMMITTED). What the rules ask beyond this is read on demand.
func (w *txState) prefetch(reqs []*request) error {
	var seen, addrs, doms [][]byte
	var hd, ha [][]byte
	var sk []string
	var sv, ss [][]byte
	for _, r := range reqs {
		for i, rec := range store.BuildRecords(r.d, w.db.now()) {
			k := store.DedupeKey(r.d, &r.body, i, &rec.Recipient)
			seen = append(seen, k)
			w.seen[string(k)] = nil
			if len(rec.Addr) <= store.MaxAddrLen && strings.Contains(rec.Addr, "@") {
				addrs = append(addrs, []byte(rec.Addr))
				w.sups[rec.Addr], w.soft[rec.Addr] = nil, nil
			}
			if dom := store.DomainKey(&rec); dom != "" {
				doms = append(doms, []byte(dom))
				w.domRead[dom] = nil
			}
			if rec.Domain == "" || rec.Status == "" {
				continue
			}
			w.flags[rec.Domain] = nil
			hd, ha = append(hd, []byte(rec.Domain)), append(ha, []byte(rec.Addr))
			w.held[[2]string{rec.Domain, rec.Addr}] = false
			for _, key := range store.StormKeys(&rec) {
				c := setKeyOf(store.StormCounter{Key: key, Status: rec.Status})
				sk, sv, ss = append(sk, string(c.kind)), append(sv, []byte(c.key)), append(ss, []byte(c.status))
				w.sets[c] = nil
			}
		}
	}
	b := &pgx.Batch{}
	b.Queue("SELECT pg_advisory_xact_lock($1)", w.db.lockID)
	b.Queue("SELECT nanos, seq FROM idgen").QueryRow(func(row pgx.Row) error {
		return row.Scan(&w.ids.nanos, &w.ids.seq)
	})
	rowsOf := func(sql string, fn func(rows pgx.Rows) error, args ...any) {
		b.Queue(sql, args...).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				if err := fn(rows); err != nil {
					return err
				}
			}
			return rows.Err()
		})
	}
	rowsOf("SELECT key, id FROM seen WHERE key = ANY($1)", func(rows pgx.Rows) error {
		var k, id []byte
		err := rows.Scan(&k, &id)
		w.seen[string(k)] = id
		return err
	}, seen)
	rowsOf("SELECT address, data FROM suppressions WHERE address = ANY($1)", func(rows pgx.Rows) error {
		var a, j []byte
		var s store.Suppression
		if err := scanJSON(rows, &a, &j, &s, "suppression"); err != nil {
			return err
		}
		w.sups[string(a)] = &s
		return nil
	}, addrs)
	rowsOf("SELECT address, data FROM soft WHERE address = ANY($1)", func(rows pgx.Rows) error {
		var a, j []byte
		var c store.SoftCounter
		if err := scanJSON(rows, &a, &j, &c, "soft counter"); err != nil {
			return err
		}
		w.soft[string(a)] = &c
		return nil
	}, addrs)
	rowsOf("SELECT domain, data FROM domains WHERE domain = ANY($1)", func(rows pgx.Rows) error {
		var d, j []byte
		var st store.DomainStat
		if err := scanJSON(rows, &d, &j, &st, "domain aggregate"); err != nil {
			return err
		}
		w.domRead[string(d)] = &st
		return nil
	}, doms)
	if len(hd) > 0 {
		w.prefetchStorm(rowsOf, hd, ha, sk, sv, ss)
	}
	b.Queue("SELECT data FROM outbox_targets ORDER BY name").Query(func(rows pgx.Rows) error {
		w.targetsRead = true
		for rows.Next() {
			var j []byte
			var t store.OutboxTarget
			if err := rows.Scan(&j); err != nil {
				return err
			}
			if err := json.Unmarshal(j, &t); err != nil {
				return fmt.Errorf("decoding outbox target: %w", err)
			}
			w.targets = append(w.targets, t)
		}
		return rows.Err()
	})
	return w.tx.SendBatch(w.ctx, b).Close()
}

// prefetchStorm queues the reads of storm flags, holds and counters.
func (w *txState) prefetchStorm(rowsOf func(string, func(pgx.Rows) error, ...any), hd, ha [][]byte, sk []string, sv, ss [][]byte) {
	rowsOf("SELECT domain, data FROM storm_flags WHERE domain = ANY($1)", func(rows pgx.Rows) error {
		var d, j []byte
		var f store.Storm
		if err := scanJSON(rows, &d, &j, &f, "storm flag"); err != nil {
			return err
		}
		w.flags[string(d)] = &f
		return nil
	}, hd)
	rowsOf(`SELECT domain, address FROM holds WHERE (domain, address) IN
		(SELECT * FROM unnest($1::bytea[], $2::bytea[]))`, func(rows pgx.Rows) error {
		var d, a []byte
		err := rows.Scan(&d, &a)
		w.held[[2]string{string(d), string(a)}] = true
		return err
	}, hd, ha)
	rowsOf(`SELECT kind, key, status, data FROM storm_sets WHERE (kind, key, status) IN
		(SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[]))`, func(rows pgx.Rows) error {
		var kind string
		var k, st, j []byte
		if err := rows.Scan(&kind, &k, &st, &j); err != nil {
			return err
		}
		var s store.StormSet
		if json.Unmarshal(j, &s) != nil || len(s.Addrs) != len(s.Times) {
			s = store.StormSet{} // damaged: the counter starts over
		}
		if len(kind) == 1 {
			w.sets[setKey{kind[0], string(k), string(st)}] = &s
		}
		return nil
	}, sk, sv, ss)
}

// scanJSON scans a key and a JSON column and decodes the JSON into v.
func scanJSON(rows pgx.Rows, k, j *[]byte, v any, what string) error {
	if err := rows.Scan(k, j); err != nil {
		return err
	}
	if err := json.Unmarshal(*j, v); err != nil {
		return fmt.Errorf("decoding %s: %w", what, err)
	}
	return nil
}
