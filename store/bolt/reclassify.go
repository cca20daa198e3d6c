package bolt

// Reclassification of stored messages (store.Reclassifier): the raw
// messages of a batch are read and decoded again outside any
// transaction, then one write transaction reads each message's records
// and the state, lets store.Rules.Reclassify decide, and writes the
// result.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bouncer/bouncer/store"
	bbolt "go.etcd.io/bbolt"
)

// maxMessageRecords bounds the records read for one message; the decoder
// caps the recipients of a report far below it.
const maxMessageRecords = 10_000

// Reclassify implements store.Reclassifier.
func (db *DB) Reclassify(ctx context.Context, msgIDs []string, decode store.Decoder, opts store.ReclassOptions) ([]store.ReclassResult, error) {
	if db.opts.ReadOnly && !opts.DryRun {
		return nil, store.ErrReadOnly
	}
	decs, err := store.DecodeStored(ctx, msgIDs, db.Raw, decode)
	if err != nil {
		return nil, err
	}
	out := make([]store.ReclassResult, len(decs))
	run := db.update
	if opts.DryRun {
		run = db.view
	}
	err = run(func(tx *bbolt.Tx) error {
		for i, d := range decs {
			out[i] = store.ReclassResult{MsgID: d.MsgID, Err: d.Err}
			if d.Err != nil {
				continue
			}
			rc, err := db.reclassify(tx, &d, opts)
			if errors.Is(err, store.ErrNotFound) {
				out[i].Err = err
				continue
			}
			if err != nil {
				return fmt.Errorf("reclassifying message %s: %w", d.MsgID, err)
			}
			out[i].Reclass = rc
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// reclassify decides, and applies in tx unless opts.DryRun, what the new
// decoding d does to its message's records.
func (db *DB) reclassify(tx *bbolt.Tx, d *store.Decoded, opts store.ReclassOptions) (*store.Reclass, error) {
	msgKey, err := decodeID(d.MsgID)
	if err != nil {
		return nil, err
	}
	old, err := messageRecords(tx, msgKey)
	if err != nil {
		return nil, err
	}
	// A writer of its own per message: it reads what the messages before
	// it in the batch wrote.
	w := reclassWriter(db, tx)
	rc, err := db.rules.Reclassify(w, old, d.Report, d.ParseError, db.now(), opts)
	if err != nil || opts.DryRun || !rc.Writes() {
		return rc, err
	}
	return rc, w.applyReclass(rc, old[0].ID)
}

// reclassWriter is a txWriter for what reclassification reads and
// writes: the records, their indexes, the suppressions, soft counters and
// outbox (newTxWriter also tunes the buckets a Save fills, which a
// read-only transaction must not).
func reclassWriter(db *DB, tx *bbolt.Tx) *txWriter {
	return &txWriter{db: db, tx: tx, records: tx.Bucket(bucketRecords),
		domains: map[string]*store.DomainStat{}, lastSeen: map[string]time.Time{},
		idxRcpt: tx.Bucket(bucketIdxRcpt), idxDomain: tx.Bucket(bucketIdxDomain),
		idxStatus: tx.Bucket(bucketIdxStatus), idxDStatus: tx.Bucket(bucketIdxDStatus),
		domainsB: tx.Bucket(bucketDomains), domStatus: tx.Bucket(bucketDomStatus), domTime: tx.Bucket(bucketDomTime)}
}

// messageRecords reads the records of the message msgKey: the keys that
// follow it in the records bucket, as the writer numbers them, while
// their MsgID is the message's.
func messageRecords(tx *bbolt.Tx, msgKey []byte) ([]store.Record, error) {
	b := tx.Bucket(bucketRecords)
	c := b.Cursor()
	msgID := encodeID(msgKey)
	var out []store.Record
	for k, v := c.Seek(msgKey); k != nil && len(out) < maxMessageRecords; k, v = c.Next() {
		r, err := decodeRecord(b, k, v)
		if err != nil {
			return nil, err
		}
		if r.MsgID != msgID {
			break
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("message %s: %w: no record", msgID, store.ErrNotFound)
	}
	return out, nil
}

// applyReclass writes what reclassification decided; first is the ID of
// the message's first record, which holds the message's fields for the
// others.
func (w *txWriter) applyReclass(rc *store.Reclass, first string) error {
	for i := range rc.Changed {
		c := &rc.Changed[i]
		if err := w.rewriteRecord(&c.Old, &c.New, first); err != nil {
			return err
		}
	}
	for i := range rc.Suppressions {
		if err := putSuppression(w.tx, &rc.Suppressions[i]); err != nil {
			return err
		}
	}
	for _, addr := range rc.Lift {
		if err := w.tx.Bucket(bucketSuppress).Delete([]byte(addr)); err != nil {
			return fmt.Errorf("lifting suppression: %w", err)
		}
		k := append(lp(nil, store.AddrDomain(addr)), addr...)
		if err := w.tx.Bucket(bucketSupDomain).Delete(k); err != nil {
			return fmt.Errorf("lifting suppression index: %w", err)
		}
	}
	for _, u := range rc.Soft {
		if len(u.Counter.Events) == 0 {
			if err := w.tx.Bucket(bucketSoft).Delete([]byte(u.Addr)); err != nil {
				return fmt.Errorf("removing soft counter: %w", err)
			}
			continue
		}
		if err := putJSON(w.tx.Bucket(bucketSoft), []byte(u.Addr), &u.Counter, "soft counter"); err != nil {
			return err
		}
	}
	for _, u := range rc.Domains {
		dom := u.Stat.Domain
		w.domains[dom] = u.Stat
		for _, status := range u.GoneStatuses {
			if err := w.domStatus.Delete(append(lp(nil, status), dom...)); err != nil {
				return fmt.Errorf("removing domain status index: %w", err)
			}
		}
		for _, status := range u.NewStatuses {
			if err := w.domStatus.Put(append(lp(nil, status), dom...), nil); err != nil {
				return fmt.Errorf("writing domain status index: %w", err)
			}
		}
	}
	if err := w.flushDomains(); err != nil {
		return err
	}
	if err := w.addDaily(rc.Daily); err != nil {
		return err
	}
	if err := w.flushDaily(); err != nil {
		return err
	}
	return w.putEvents(rc.Events)
}

// rewriteRecord replaces the stored record old with nw under the same
// key, and moves its index entries.
func (w *txWriter) rewriteRecord(old, nw *store.Record, first string) error {
	key, err := decodeID(nw.ID)
	if err != nil {
		return err
	}
	base := first
	if nw.ID == first {
		base = ""
	}
	v, err := encodeRecord(nw, base, &w.recJSON)
	if err != nil {
		return err
	}
	for name, k := range indexEntries(key, old) {
		if err := w.tx.Bucket([]byte(name)).Delete(k); err != nil {
			return fmt.Errorf("removing index %s: %w", name, err)
		}
	}
	if err := w.records.Put(key, v); err != nil {
		return fmt.Errorf("writing record: %w", err)
	}
	return w.putIndexes(key, nw)
}
