package postgres

// Retention: raw messages older than Options.RawRetention, dedupe keys
// older than the dedupe window and decayed soft counters are deleted in
// transactions of pruneChunk rows, so that Saves wait at most for one.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/bouncer/bouncer/store"

	"github.com/jackc/pgx/v5"
)

// pruneChunk is how many rows one prune transaction deletes.
const pruneChunk = 1000

// Prune applies the configured retention at the current time.
func (db *DB) Prune(ctx context.Context) (store.PruneStats, error) {
	var st store.PruneStats
	now := db.now()
	var err error
	if db.opts.RawRetention > 0 {
		if st.Raw, err = db.PruneRaw(ctx, now.Add(-db.opts.RawRetention)); err != nil {
			return st, err
		}
	}
	if st.Seen, err = db.PruneSeen(ctx, now.Add(-db.rules.DedupeWindowOrDefault())); err != nil {
		return st, err
	}
	if st.Soft, err = db.PruneSoft(ctx, now); err != nil {
		return st, err
	}
	st.Storms, err = db.ExpireStorms(ctx, now)
	return st, err
}

// PruneRaw deletes the raw messages stored before the cutoff and returns
// how many it deleted; Raw reports ErrRawPruned for them. Raw messages
// are not read by the rules, so this takes no writer lock.
func (db *DB) PruneRaw(ctx context.Context, before time.Time) (int, error) {
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, fmt.Errorf("pruning raw messages: %w", err)
		}
		n := 0
		tctx, cancel := db.ctx()
		err := pgx.BeginFunc(tctx, db.pool, func(tx pgx.Tx) error {
			var last []byte
			err := tx.QueryRow(tctx, `WITH d AS (DELETE FROM raw WHERE id IN
				(SELECT id FROM raw WHERE id < $1 ORDER BY id LIMIT $2) RETURNING id)
				SELECT count(*), (SELECT id FROM d ORDER BY id DESC LIMIT 1) FROM d`, timeKey(before), pruneChunk).Scan(&n, &last)
			if err != nil {
				return err
			}
			mark := before
			if n == pruneChunk {
				mark = keyTime(last).Add(1)
			}
			_, err = tx.Exec(tctx, `INSERT INTO meta (key, value) VALUES ('raw_pruned_before', $1)
				ON CONFLICT (key) DO UPDATE SET value = greatest(meta.value::int8, excluded.value::int8)::text`,
				strconv.FormatInt(mark.UnixNano(), 10))
			return err
		})
		cancel()
		if err != nil {
			return total, wrapErr("pruning raw messages", err)
		}
		total += n
		if n < pruneChunk {
			return total, nil
		}
	}
}

// rawPrunedBefore returns the time before which raw messages may have been
// deleted by PruneRaw (the zero time if never).
func rawPrunedBefore(ctx context.Context, q querier) (time.Time, error) {
	var v string
	err := q.QueryRow(ctx, "SELECT value FROM meta WHERE key = 'raw_pruned_before'").Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, err
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, nil
	}
	return time.Unix(0, n), nil
}

// PruneSeen deletes the dedupe keys first seen before the cutoff and
// returns how many it deleted.
func (db *DB) PruneSeen(ctx context.Context, before time.Time) (int, error) {
	return db.pruneLoop(ctx, "dedupe keys", `DELETE FROM seen WHERE key IN
		(SELECT key FROM seen WHERE id < $1 LIMIT $2)`, timeKey(before))
}

// PruneSoft deletes the soft counters whose events have all decayed at
// now (a counter of a rule without a window never decays), and returns
// how many it deleted.
func (db *DB) PruneSoft(ctx context.Context, now time.Time) (int, error) {
	return db.pruneLoop(ctx, "soft counters", `DELETE FROM soft WHERE address IN
		(SELECT address FROM soft WHERE last = 0 OR (win > 0 AND last < $1 - win) LIMIT $2)`, now.UnixNano())
}

// pruneLoop runs del (with arg and pruneChunk) in transactions holding
// the writer lock until it deletes fewer than pruneChunk rows.
func (db *DB) pruneLoop(ctx context.Context, what, del string, arg any) (int, error) {
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, fmt.Errorf("pruning %s: %w", what, err)
		}
		var n int64
		err := db.update("pruning "+what, func(ctx context.Context, tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, del, arg, pruneChunk)
			n = tag.RowsAffected()
			return err
		})
		if err != nil {
			return total, err
		}
		total += int(n)
		if n < pruneChunk {
			return total, nil
		}
	}
}
