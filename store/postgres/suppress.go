package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/bouncer/bouncer/store"

	"github.com/jackc/pgx/v5"
)

// Suppressed returns the suppression entry of addr, or ErrNotFound.
func (db *DB) Suppressed(addr string) (*store.Suppression, error) {
	ctx, cancel := db.ctx()
	defer cancel()
	s, err := readSuppression(ctx, db.pool, store.NormalizeAddr(addr))
	if err != nil {
		return nil, wrapErr("reading suppression", err)
	}
	if s == nil {
		return nil, store.ErrNotFound
	}
	return s, nil
}

// AddSuppression puts s.Address on the list (s.Created defaults to now,
// s.Source to "manual"). It fails with ErrExists if the address is
// already suppressed; the existing entry is kept.
func (db *DB) AddSuppression(s store.Suppression) error {
	s, err := store.ValidSuppression(s, db.now())
	if err != nil {
		return err
	}
	return db.update("adding suppression", func(ctx context.Context, tx pgx.Tx) error {
		old, err := readSuppression(ctx, tx, s.Address)
		if err != nil {
			return err
		}
		if old != nil {
			return fmt.Errorf("adding suppression of %s: %w", s.Address, store.ErrExists)
		}
		b := &pgx.Batch{}
		if err := queueSuppression(b, &s); err != nil {
			return err
		}
		queueDaily(b, []store.DayCount{{Day: store.DayOf(s.Created), Key: store.DaySuppressed, N: 1}})
		return tx.SendBatch(ctx, b).Close()
	})
}

// RemoveSuppression takes addr off the list and resets its soft counter,
// so that it is not suppressed again by past events. It returns
// ErrNotFound if addr was not suppressed.
func (db *DB) RemoveSuppression(addr string) error {
	addr = store.NormalizeAddr(addr)
	return db.update("removing suppression", func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "DELETE FROM suppressions WHERE address = $1", []byte(addr))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrNotFound
		}
		_, err = tx.Exec(ctx, "DELETE FROM soft WHERE address = $1", []byte(addr))
		return err
	})
}

// suppressChunk is how many entries Suppressions reads per query.
const suppressChunk = 500

// Suppressions calls fn for each suppressed address of domain (all if
// ""), in address order. fn runs between queries of suppressChunk
// entries, outside any transaction; an error from it stops the walk.
func (db *DB) Suppressions(domain string, fn func(store.Suppression) error) error {
	domain = strings.ToLower(domain)
	after := []byte{}
	for {
		chunk, last, err := db.suppressionChunk(domain, after)
		if err != nil {
			return err
		}
		for _, s := range chunk {
			if err := fn(s); err != nil {
				return err
			}
		}
		if last == nil {
			return nil
		}
		after = last
	}
}

// suppressionChunk reads the entries after address after; last is the
// last address read, nil at the end.
func (db *DB) suppressionChunk(domain string, after []byte) ([]store.Suppression, []byte, error) {
	ctx, cancel := db.ctx()
	defer cancel()
	q := "SELECT address, data FROM suppressions WHERE address > $1 ORDER BY address LIMIT $2"
	args := []any{after, suppressChunk}
	if domain != "" {
		q = "SELECT address, data FROM suppressions WHERE domain = $3 AND address > $1 ORDER BY address LIMIT $2"
		args = append(args, []byte(domain))
	}
	rows, err := db.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, nil, wrapErr("listing suppressions", err)
	}
	defer rows.Close()
	var out []store.Suppression
	var last []byte
	for rows.Next() {
		var addr, j []byte
		if err := rows.Scan(&addr, &j); err != nil {
			return nil, nil, wrapErr("listing suppressions", err)
		}
		var s store.Suppression
		if err := json.Unmarshal(j, &s); err != nil {
			return nil, nil, fmt.Errorf("decoding suppression of %s: %w", addr, err)
		}
		out, last = append(out, s), addr
	}
	if err := rows.Err(); err != nil {
		return nil, nil, wrapErr("listing suppressions", err)
	}
	if len(out) < suppressChunk {
		last = nil
	}
	return out, last, nil
}
