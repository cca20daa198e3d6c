package postgres

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/bouncer/bouncer/store"

	"github.com/jackc/pgx/v5"
)

// scanChunk is how many records one query of a walk reads; fn runs
// between queries, so a long export holds no transaction open.
const scanChunk = 256

// recordQuery builds the SELECT of a walk over the records matching f
// (normalized), newest first, older than the ID before (nil: from the
// newest), at most limit rows. The indexed columns hold values cut to
// maxIndexValue bytes, so callers check each record with f.Match.
func recordQuery(f *store.Filter, before []byte, limit int) (string, []any) {
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.Recipient != "" {
		add("addr = $%d", ix(f.Recipient))
	}
	if f.Domain != "" {
		add("domain = $%d", ix(f.Domain))
	}
	if f.Status != "" {
		add("status = $%d", ix(f.Status))
	}
	if f.Kind != "" {
		add("kind = $%d", ix(string(f.Kind)))
	}
	if !f.Since.IsZero() {
		add("id >= $%d", timeKey(f.Since))
	}
	if before != nil {
		add("id < $%d", before)
	}
	q := "SELECT id, rec FROM records"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	return q + " ORDER BY id DESC LIMIT " + strconv.Itoa(limit), args
}

// readChunk reads one chunk of a walk: the matching records, and the ID
// of the last row read (nil when the walk is over).
func (db *DB) readChunk(f *store.Filter, before []byte, want int) ([]store.Record, []byte, error) {
	ctx, cancel := db.ctx()
	defer cancel()
	size := scanChunk
	if want > 0 {
		size = min(size, want)
	}
	q, args := recordQuery(f, before, size)
	rows, err := db.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, nil, wrapErr("querying records", err)
	}
	var out []store.Record
	var last []byte
	n := 0
	for rows.Next() {
		var id, j []byte
		if err := rows.Scan(&id, &j); err != nil {
			return nil, nil, wrapErr("querying records", err)
		}
		n++
		last = id
		r, err := decodeRecord(id, j)
		if err != nil {
			rows.Close()
			return nil, nil, err
		}
		if f.Match(&r) {
			out = append(out, r)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, wrapErr("querying records", err)
	}
	if n < size {
		last = nil
	}
	return out, last, nil
}

func decodeRecord(id, j []byte) (store.Record, error) {
	var r store.Record
	if err := json.Unmarshal(j, &r); err != nil {
		return r, fmt.Errorf("decoding record %s: %w", encodeID(id), err)
	}
	r.ID = encodeID(id)
	return r, nil
}

// Query returns the records matching f, newest first. f.Limit 0 means
// DefaultLimit; larger limits are cut to MaxLimit.
func (db *DB) Query(f store.Filter) ([]store.Record, error) {
	if f.Limit <= 0 {
		f.Limit = store.DefaultLimit
	}
	f.Limit = min(f.Limit, store.MaxLimit)
	var out []store.Record
	err := db.ForEach(f, func(r store.Record) error {
		out = append(out, r)
		return nil
	})
	return out, err
}

// ForEach calls fn for each record matching f, newest first, up to
// f.Limit records (all if 0). fn runs outside any transaction; an error
// from it stops the walk and is returned.
func (db *DB) ForEach(f store.Filter, fn func(store.Record) error) error {
	f = f.Normalize()
	var before []byte
	n := 0
	for {
		want := 0
		if f.Limit > 0 {
			want = f.Limit - n
		}
		chunk, last, err := db.readChunk(&f, before, want)
		if err != nil {
			return err
		}
		for _, r := range chunk {
			if f.Limit > 0 && n >= f.Limit {
				return nil
			}
			if err := fn(r); err != nil {
				return err
			}
			n++
		}
		if last == nil || (f.Limit > 0 && n >= f.Limit) {
			return nil
		}
		before = last
	}
}

// Page returns up to f.Limit records matching f (DefaultLimit if 0, at
// most MaxLimit), newest first, older than the record with ID before (""
// for the newest), and the ID to pass for the next page ("" after the
// last).
func (db *DB) Page(f store.Filter, before string) ([]store.Record, string, error) {
	if f.Limit <= 0 {
		f.Limit = store.DefaultLimit
	}
	f.Limit = min(f.Limit, store.MaxLimit)
	f = f.Normalize()
	var from []byte
	if before != "" {
		k, err := decodeID(before)
		if err != nil {
			return nil, "", err
		}
		from = k
	}
	var recs []store.Record
	for {
		chunk, last, err := db.readChunk(&f, from, f.Limit+1-len(recs))
		if err != nil {
			return nil, "", err
		}
		for _, r := range chunk {
			if len(recs) == f.Limit {
				return recs, recs[len(recs)-1].ID, nil
			}
			recs = append(recs, r)
		}
		if last == nil {
			return recs, "", nil
		}
		from = last
	}
}

// Record returns the record with the given ID, or ErrNotFound.
func (db *DB) Record(id string) (*store.Record, error) {
	k, err := decodeID(id)
	if err != nil {
		return nil, err
	}
	ctx, cancel := db.ctx()
	defer cancel()
	var j []byte
	err = db.pool.QueryRow(ctx, "SELECT rec FROM records WHERE id = $1", k).Scan(&j)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, wrapErr("reading record", err)
	}
	r, err := decodeRecord(k, j)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// Raw returns the raw message msgID (Record.MsgID), or ErrNotFound; for a
// message deleted by the raw retention the error also matches
// ErrRawPruned.
func (db *DB) Raw(msgID string) ([]byte, error) {
	k, err := decodeID(msgID)
	if err != nil {
		return nil, err
	}
	ctx, cancel := db.ctx()
	defer cancel()
	var data []byte
	err = db.pool.QueryRow(ctx, "SELECT data FROM raw WHERE id = $1", k).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		mark, err := rawPrunedBefore(ctx, db.pool)
		if err != nil {
			return nil, wrapErr("reading raw message", err)
		}
		if keyTime(k).Before(mark) {
			return nil, fmt.Errorf("raw message %s: %w (%w)", msgID, store.ErrRawPruned, store.ErrNotFound)
		}
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, wrapErr("reading raw message", err)
	}
	return data, nil
}
