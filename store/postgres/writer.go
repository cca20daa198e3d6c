package postgres

import (
	"context"
	"crypto/sha256"
	"errors"

	"github.com/bouncer/bouncer/store"

	"github.com/jackc/pgx/v5"
)

// request is one Save waiting for the writer.
type request struct {
	d            *store.Delivery
	body         [sha256.Size]byte
	store.Ticket // queue state: Take, Done

	recs   []store.Record // outcome, valid after done is closed
	storms []store.Storm  // storms it started, for Options.OnStorm
	err    error
}

// Save stores d: its raw message and what the rules decide for it, in one
// transaction with the other queued deliveries, and returns its records
// once COMMIT has returned. When a group fails, each of its deliveries is
// retried alone. ctx is respected while d is queued; once the writer has
// taken it, Save waits for the outcome (at most Options.Timeout), so a
// caller never reports failure for a delivery that was stored. When the
// server cannot be reached the error wraps store.ErrUnavailable. d.Raw is
// read until Save returns.
func (db *DB) Save(ctx context.Context, d *store.Delivery) ([]store.Record, error) {
	if d == nil {
		return nil, errors.New("saving delivery: nil delivery")
	}
	req := &request{d: d, body: store.BodyHash(d.Raw)}
	if err := db.queue.Submit(ctx, req); err != nil {
		return nil, err
	}
	return req.recs, req.err
}

// writer commits queued requests in groups until the queue is closed.
func (db *DB) writer() {
	defer close(db.done)
	for r := range db.queue.C() {
		batch := []*request{r}
	fill:
		for len(batch) < db.opts.MaxBatch {
			select {
			case r, ok := <-db.queue.C():
				if !ok {
					break fill
				}
				batch = append(batch, r)
			default:
				break fill
			}
		}
		db.group(batch)
	}
}

// group commits the live requests of batch in one transaction, or each
// alone if that fails, and wakes their callers.
func (db *DB) group(batch []*request) {
	var live []*request
	for _, r := range batch {
		if r.Take() {
			live = append(live, r)
		}
	}
	if len(live) == 0 {
		return
	}
	err := db.commit(live)
	if err != nil && len(live) > 1 && !errors.Is(err, store.ErrUnavailable) {
		for _, r := range live {
			if r.err = db.commit([]*request{r}); r.err != nil {
				r.recs, r.storms = nil, nil
			}
			r.Done()
			db.tellStorms(r)
		}
		return
	}
	for _, r := range live {
		if err != nil {
			r.recs, r.err, r.storms = nil, err, nil
		}
		r.Done()
		db.tellStorms(r)
	}
}

// commit writes reqs in one transaction and sets their records.
func (db *DB) commit(reqs []*request) error {
	ctx, cancel := db.ctx()
	defer cancel()
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		w, err := newTxState(ctx, db, tx)
		if err != nil {
			return err
		}
		if err := w.prefetch(reqs); err != nil {
			return err
		}
		for _, r := range reqs {
			if r.recs, err = w.write(r); err != nil {
				return err
			}
		}
		return w.finish()
	})
	return wrapErr("saving delivery", err)
}

// write stores one delivery: its raw message, then what the rules decide
// for it.
func (w *txState) write(r *request) ([]store.Record, error) {
	now := w.db.now()
	msgKey := w.ids.next(now)
	var keys [][]byte
	newID := func() string {
		k := w.ids.next(now)
		keys = append(keys, k)
		return encodeID(k)
	}
	ch, err := w.db.rules.Plan(w, r.d, &r.body, now, encodeID(msgKey), newID)
	if err != nil {
		return nil, err
	}
	if err := w.apply(ch, msgKey, r.d.Raw, keys, now); err != nil {
		return nil, err
	}
	r.storms = ch.NewStorms
	return ch.Records, nil
}

// tellStorms passes the storms a committed request started to
// Options.OnStorm.
func (db *DB) tellStorms(r *request) {
	if db.opts.OnStorm == nil {
		return
	}
	for _, st := range r.storms {
		db.opts.OnStorm(st)
	}
}
