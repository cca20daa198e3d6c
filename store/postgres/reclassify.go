package postgres

// Reclassification of stored messages (store.Reclassifier): the raw
// messages of a batch are read and decoded again outside any
// transaction, then one transaction holding the writer lock reads each
// message's records and the state, lets store.Rules.Reclassify decide,
// and writes the result.

import (
	"context"
	"errors"
	"fmt"

	"github.com/bouncer/bouncer/store"

	"github.com/jackc/pgx/v5"
)

// Bounds on reading one message's records: they follow the message's ID
// in ID order (the writer numbers them so), read recordBatch at a time.
const (
	recordBatch       = 64
	maxMessageRecords = 10_000
)

// Reclassify implements store.Reclassifier.
func (db *DB) Reclassify(ctx context.Context, msgIDs []string, decode store.Decoder, opts store.ReclassOptions) ([]store.ReclassResult, error) {
	decs, err := store.DecodeStored(ctx, msgIDs, db.Raw, decode)
	if err != nil {
		return nil, err
	}
	out := make([]store.ReclassResult, len(decs))
	fn := func(ctx context.Context, tx pgx.Tx) error {
		for i, d := range decs {
			out[i] = store.ReclassResult{MsgID: d.MsgID, Err: d.Err}
			if d.Err != nil {
				continue
			}
			rc, err := db.reclassify(ctx, tx, &d, opts)
			if errors.Is(err, store.ErrNotFound) {
				out[i].Err = err
				continue
			}
			if err != nil {
				return fmt.Errorf("message %s: %w", d.MsgID, err)
			}
			out[i].Reclass = rc
		}
		return nil
	}
	if opts.DryRun {
		tctx, cancel := db.ctx()
		defer cancel()
		err = wrapErr("reclassifying", pgx.BeginTxFunc(tctx, db.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly},
			func(tx pgx.Tx) error { return fn(tctx, tx) }))
	} else {
		err = db.update("reclassifying", fn)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// reclassify decides, and applies in tx unless opts.DryRun, what the new
// decoding d does to its message's records.
func (db *DB) reclassify(ctx context.Context, tx pgx.Tx, d *store.Decoded, opts store.ReclassOptions) (*store.Reclass, error) {
	msgKey, err := decodeID(d.MsgID)
	if err != nil {
		return nil, err
	}
	old, err := messageRecords(ctx, tx, msgKey)
	if err != nil {
		return nil, err
	}
	// A state of its own per message: it reads what the messages before
	// it in the batch wrote (its caches would not know).
	w, err := newTxState(ctx, db, tx)
	if err != nil {
		return nil, err
	}
	rc, err := db.rules.Reclassify(w, old, d.Report, d.ParseError, db.now(), opts)
	if err != nil || opts.DryRun || !rc.Writes() {
		return rc, err
	}
	return rc, applyReclass(ctx, tx, rc)
}

// messageRecords reads the records of the message msgKey.
func messageRecords(ctx context.Context, tx pgx.Tx, msgKey []byte) ([]store.Record, error) {
	var out []store.Record
	after := msgKey
	for len(out) < maxMessageRecords {
		rows, err := tx.Query(ctx, "SELECT id, msg_id, rec FROM records WHERE id > $1 ORDER BY id LIMIT $2", after, recordBatch)
		if err != nil {
			return nil, err
		}
		n, done := 0, false
		for rows.Next() {
			var id, mid, j []byte
			if err := rows.Scan(&id, &mid, &j); err != nil {
				rows.Close()
				return nil, err
			}
			n++
			if string(mid) != string(msgKey) {
				done = true
				break
			}
			r, err := decodeRecord(id, j)
			if err != nil {
				rows.Close()
				return nil, err
			}
			out = append(out, r)
			after = id
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		if done || n < recordBatch {
			break
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("message %s: %w: no record", encodeID(msgKey), store.ErrNotFound)
	}
	return out, nil
}

// applyReclass writes what reclassification decided in tx.
func applyReclass(ctx context.Context, tx pgx.Tx, rc *store.Reclass) error {
	b := &pgx.Batch{}
	for i := range rc.Changed {
		r := &rc.Changed[i].New
		k, err := decodeID(r.ID)
		if err != nil {
			return err
		}
		j, err := marshal(r, "record")
		if err != nil {
			return err
		}
		b.Queue("UPDATE records SET addr = $2, domain = $3, status = $4, kind = $5, rec = $6 WHERE id = $1",
			k, ix(r.Addr), ix(r.Domain), ix(r.Status), ix(string(r.Kind)), j)
	}
	for i := range rc.Suppressions {
		if err := queueSuppression(b, &rc.Suppressions[i]); err != nil {
			return err
		}
	}
	for _, addr := range rc.Lift {
		b.Queue("DELETE FROM suppressions WHERE address = $1", []byte(addr))
	}
	for _, u := range rc.Soft {
		if len(u.Counter.Events) == 0 {
			b.Queue("DELETE FROM soft WHERE address = $1", []byte(u.Addr))
			continue
		}
		if err := queueSoft(b, &u); err != nil {
			return err
		}
	}
	for _, u := range rc.Domains {
		if err := queueDomain(b, u.Stat); err != nil {
			return err
		}
		c := u.Stat
		for _, status := range u.GoneStatuses {
			b.Queue("DELETE FROM dom_status WHERE status = $1 AND domain = $2", ix(status), []byte(c.Domain))
		}
		for _, status := range u.NewStatuses {
			b.Queue("INSERT INTO dom_status (status, domain) VALUES ($1, $2) ON CONFLICT DO NOTHING",
				ix(status), []byte(c.Domain))
		}
	}
	queueDaily(b, rc.Daily)
	if err := queueEvents(b, rc.Events); err != nil {
		return err
	}
	return tx.SendBatch(ctx, b).Close()
}
