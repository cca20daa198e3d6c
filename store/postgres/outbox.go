package postgres

// The outbox: events for push targets, written by Save in the record's
// transaction, leased by OutboxDue so that each is pushed by one host.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/bouncer/bouncer/store"

	"github.com/jackc/pgx/v5"
)

// SetOutboxTargets replaces the routing table of the outbox: from now on
// Save queues events for these targets. Events already queued for a
// target no longer listed stay in the outbox (see OutboxDrop).
func (db *DB) SetOutboxTargets(targets []store.OutboxTarget) error {
	if err := store.ValidTargets(targets); err != nil {
		return err
	}
	return db.update("setting outbox targets", func(ctx context.Context, tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue("DELETE FROM outbox_targets")
		for i := range targets {
			j, err := marshal(&targets[i], "outbox target")
			if err != nil {
				return err
			}
			b.Queue("INSERT INTO outbox_targets (name, data) VALUES ($1, $2)", targets[i].Name, j)
		}
		return tx.SendBatch(ctx, b).Close()
	})
}

// decodeEvent decodes an event stored under seq.
func decodeEvent(seq int64, j []byte) (store.OutboxEvent, error) {
	var ev store.OutboxEvent
	if err := json.Unmarshal(j, &ev); err != nil {
		return ev, fmt.Errorf("decoding outbox event %d: %w", seq, err)
	}
	ev.Seq = uint64(seq)
	return ev, nil
}

// OutboxDue returns up to limit queued events whose NextTry is not after
// now and that no host holds a lease on, oldest first, skipping targets
// in skip; it visits at most maxScan events. It leases what it returns
// until now + Options.Lease: another host's OutboxDue skips them (rows
// being leased are skipped with SKIP LOCKED), and OutboxUpdate ends the
// lease. A host that dies leaves its events due again when the lease
// ends.
func (db *DB) OutboxDue(now time.Time, limit, maxScan int, skip func(target string) bool) ([]store.OutboxEvent, error) {
	if limit <= 0 || maxScan <= 0 {
		return nil, nil
	}
	ctx, cancel := db.ctx()
	defer cancel()
	var out []store.OutboxEvent
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		out = out[:0]
		var picked []int64
		after, visited := int64(-1<<63), 0
		for visited < maxScan && len(out) < limit {
			n := min(scanChunk, maxScan-visited)
			rows, err := tx.Query(ctx, `SELECT seq, target, data FROM outbox
				WHERE seq > $1 AND next_try <= $2 AND lease_until <= $2
				ORDER BY seq LIMIT $3 FOR UPDATE SKIP LOCKED`, after, nanos(now), n)
			if err != nil {
				return err
			}
			read := 0
			for rows.Next() {
				var seq int64
				var target string
				var j []byte
				if err := rows.Scan(&seq, &target, &j); err != nil {
					rows.Close()
					return err
				}
				read++
				after = seq
				if len(out) >= limit || (skip != nil && skip(target)) {
					continue
				}
				ev, err := decodeEvent(seq, j)
				if err != nil {
					rows.Close()
					return err
				}
				out, picked = append(out, ev), append(picked, seq)
			}
			if err := rows.Err(); err != nil {
				return err
			}
			visited += read
			if read < n {
				break
			}
		}
		if len(picked) == 0 {
			return nil
		}
		_, err := tx.Exec(ctx, "UPDATE outbox SET lease_until = $1 WHERE seq = ANY($2)", now.Add(db.opts.Lease).UnixNano(), picked)
		return err
	})
	if err != nil {
		return nil, wrapErr("reading outbox", err)
	}
	return out, nil
}

// OutboxUpdate applies the outcomes of delivery attempts in one
// transaction: delivered events are removed, failed ones rescheduled (and
// their lease ended) or moved to the dead-letter list. It returns how
// many went dead.
func (db *DB) OutboxUpdate(results []store.OutboxResult) (dead int, err error) {
	if len(results) == 0 {
		return 0, nil
	}
	ctx, cancel := db.ctx()
	defer cancel()
	err = pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		dead = 0
		for _, r := range results {
			seq := int64(r.Seq)
			var j []byte
			err := tx.QueryRow(ctx, "SELECT data FROM outbox WHERE seq = $1 FOR UPDATE", seq).Scan(&j)
			if errors.Is(err, pgx.ErrNoRows) {
				continue // dropped meanwhile
			}
			if err != nil {
				return err
			}
			if r.Err == nil {
				if _, err := tx.Exec(ctx, "DELETE FROM outbox WHERE seq = $1", seq); err != nil {
					return err
				}
				continue
			}
			ev, err := decodeEvent(seq, j)
			if err != nil {
				return err
			}
			ev.Attempts++
			ev.LastError = store.Truncate(r.Err.Error(), 500)
			ev.NextTry = r.NextTry
			if j, err = marshal(&ev, "outbox event"); err != nil {
				return err
			}
			if r.Dead {
				dead++
				_, err = tx.Exec(ctx, `WITH d AS (DELETE FROM outbox WHERE seq = $1)
					INSERT INTO outbox_dead (seq, data) VALUES ($1, $2)`, seq, j)
			} else {
				_, err = tx.Exec(ctx, "UPDATE outbox SET data = $2, next_try = $3, lease_until = 0 WHERE seq = $1",
					seq, j, nanos(ev.NextTry))
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, wrapErr("updating outbox", err)
	}
	return dead, nil
}

// OutboxEvents calls fn for each queued event (dead: each dead letter),
// oldest first, outside any transaction.
func (db *DB) OutboxEvents(dead bool, fn func(store.OutboxEvent) error) error {
	table := "outbox"
	if dead {
		table = "outbox_dead"
	}
	after := int64(-1 << 63)
	for {
		chunk, err := db.eventChunk(table, after)
		if err != nil {
			return err
		}
		for _, ev := range chunk {
			if err := fn(ev); err != nil {
				return err
			}
		}
		if len(chunk) < scanChunk {
			return nil
		}
		after = int64(chunk[len(chunk)-1].Seq)
	}
}

func (db *DB) eventChunk(table string, after int64) ([]store.OutboxEvent, error) {
	ctx, cancel := db.ctx()
	defer cancel()
	rows, err := db.pool.Query(ctx, "SELECT seq, data FROM "+table+" WHERE seq > $1 ORDER BY seq LIMIT $2", after, scanChunk)
	if err != nil {
		return nil, wrapErr("reading outbox", err)
	}
	defer rows.Close()
	var out []store.OutboxEvent
	for rows.Next() {
		var seq int64
		var j []byte
		if err := rows.Scan(&seq, &j); err != nil {
			return nil, wrapErr("reading outbox", err)
		}
		ev, err := decodeEvent(seq, j)
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, wrapErr("reading outbox", rows.Err())
}

// OutboxStats returns the number of queued events and dead letters.
func (db *DB) OutboxStats() (queued, dead int, err error) {
	ctx, cancel := db.ctx()
	defer cancel()
	err = db.pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM outbox), (SELECT count(*) FROM outbox_dead)").Scan(&queued, &dead)
	return queued, dead, wrapErr("counting outbox", err)
}

// OutboxRetry moves dead letters back to the outbox, due now, with their
// attempts reset. With no seqs it moves every dead letter. It returns how
// many moved; a seq that is not a dead letter is ErrNotFound.
func (db *DB) OutboxRetry(seqs ...uint64) (int, error) {
	return db.outboxMove(true, seqs)
}

// OutboxDrop deletes dead letters (all with no seqs) and returns how many.
func (db *DB) OutboxDrop(seqs ...uint64) (int, error) {
	return db.outboxMove(false, seqs)
}

func (db *DB) outboxMove(retry bool, seqs []uint64) (int, error) {
	ctx, cancel := db.ctx()
	defer cancel()
	n := 0
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		n = 0
		keys := make([]int64, len(seqs))
		for i, s := range seqs {
			keys[i] = int64(s)
		}
		if len(seqs) == 0 {
			rows, err := tx.Query(ctx, "SELECT seq FROM outbox_dead ORDER BY seq")
			if err != nil {
				return err
			}
			if keys, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil {
				return err
			}
		}
		now := db.now()
		for _, seq := range keys {
			var j []byte
			err := tx.QueryRow(ctx, "DELETE FROM outbox_dead WHERE seq = $1 RETURNING data", seq).Scan(&j)
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("dead letter %d: %w", seq, store.ErrNotFound)
			}
			if err != nil {
				return err
			}
			n++
			if !retry {
				continue
			}
			ev, err := decodeEvent(seq, j)
			if err != nil {
				return err
			}
			if ev.Held {
				ev.LastError = "" // the reason it was held, not an error
			}
			ev.Attempts, ev.NextTry, ev.Held = 0, now, false
			if j, err = marshal(&ev, "outbox event"); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "INSERT INTO outbox (seq, target, next_try, data) VALUES ($1, $2, $3, $4)",
				seq, ev.Target, nanos(now), j); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, wrapErr("moving dead letters", err)
	}
	return n, nil
}
