package bolt

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/bouncer/bouncer/store"

	bbolt "go.etcd.io/bbolt"
)

// maxBatchBytes caps the compressed raw bytes committed in one transaction.
const maxBatchBytes = 32 << 20

// request is one Save waiting for the writer.
type request struct {
	d            *store.Delivery
	raw          []byte            // codec byte + (compressed) raw message
	src          []byte            // raw message the writer compresses (small ones), until it has
	body         [sha256.Size]byte // bodyHash of the raw message
	store.Ticket                   // queue state: Take, Done

	// Set by the writer when it first applies the request, and kept so
	// that applying it again (after a rollback) writes the same keys. A
	// frame of an old version's log (wal.go) carries them from its run.
	now time.Time // the writer's clock for this delivery
	ids idGen     // the key generator before it
	seq uint64    // its frame number, for a frame of an old log

	recs   []store.Record // outcome, valid after done is closed
	storms []store.Storm  // storms it started, for Options.OnStorm
	err    error
}

// Save stores d: its raw message, one Record per recipient, the index
// entries, the soft counters and suppressions the policy asks for, and
// the domain aggregates, all in one transaction. It returns the records
// only after the transaction is committed and synced to disk.
//
// Saves from many goroutines are committed together by one writer
// (group commit). If a group's transaction fails, each of its deliveries
// is retried in a transaction of its own, so one bad delivery fails only
// its own caller; an error that persists (a full disk, a closed file)
// fails every caller.
//
// ctx is respected while the delivery waits in the queue. Once the writer
// has taken it into a transaction, Save waits for the commit, so that a
// caller never reports failure for a delivery that was in fact stored.
// d.Raw may be read until Save returns (the writer compresses small
// messages itself): the caller must not change it before.
func (db *DB) Save(ctx context.Context, d *store.Delivery) ([]store.Record, error) {
	if db.opts.ReadOnly {
		return nil, store.ErrReadOnly
	}
	if d == nil {
		return nil, errors.New("saving delivery: nil delivery")
	}
	req, err := db.newRequest(ctx, d)
	if err != nil {
		return nil, err
	}

	if err := db.queue.Submit(ctx, req); err != nil {
		return nil, err
	}
	return req.recs, req.err
}

// newRequest prepares d for the writer: the work that needs no
// transaction (compression, hashing) is done here, in the caller's
// goroutine. It fails only when ctx ends while waiting for a compressor.
func (db *DB) newRequest(ctx context.Context, d *store.Delivery) (*request, error) {
	// The writer may hold the request until the next commit: it keeps
	// the compressed copy, not the caller's raw message.
	dc := *d
	dc.Raw = nil
	r := &request{d: &dc, body: store.BodyHash(d.Raw)}
	if len(d.Raw) <= rawS2Max {
		// S2 keeps a 64 KB table on the stack: in a session's new
		// goroutine that meant growing and copying its stack for every
		// connection (4 % of serve's CPU under load); the writer's
		// stack has grown once. It takes about 3 µs for a 2 KB bounce.
		r.src = d.Raw
		return r, nil
	}
	raw, err := db.compressRaw(ctx, d.Raw)
	if err != nil {
		return nil, fmt.Errorf("saving delivery: %w", err)
	}
	r.raw = raw
	return r, nil
}

// writer applies queued requests until the queue is closed: each group
// of queued requests is applied to one bbolt write transaction and
// committed (bbolt syncs the file), and only then acknowledged. While
// the DB is failed it answers every request at once and tries to open the
// files again after a back-off (reopen.go).
func (db *DB) writer() {
	defer close(db.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var timeout <-chan time.Time
		if db.failErr != nil {
			timer.Reset(time.Until(db.retryAt))
			timeout = timer.C
		}
		var req *request
		var ok bool
		select {
		case req, ok = <-db.queue.C():
		case <-timeout:
			db.reopen()
			continue
		case err := <-db.faultc:
			if db.failErr == nil {
				db.enterFailed(err)
			}
			continue
		}
		if !ok {
			return
		}
		if db.failErr != nil {
			// Failed: answer at once, until the files are open again.
			if req.Take() {
				db.failWith(req, db.failErr)
			}
			continue
		}
		batch := []*request{req}
		size := len(req.raw) + len(req.src)
	drain:
		for len(batch) < db.opts.MaxBatch && size < maxBatchBytes {
			select {
			case r, ok := <-db.queue.C():
				if !ok {
					break drain
				}
				batch = append(batch, r)
				size += len(r.raw) + len(r.src)
			default:
				break drain
			}
		}
		db.group(batch)
	}
}

// group applies and makes durable the requests of batch that are still
// queued, and wakes their callers. If the group cannot be made durable,
// each request is tried alone, so one bad delivery fails only its own
// caller; an error that persists (a full disk, a closed file) fails every
// caller.
func (db *DB) group(batch []*request) {
	taken := batch[:0]
	for _, r := range batch {
		if r.Take() {
			if r.src != nil {
				r.raw, r.src = compressSmall(r.src), nil
			}
			taken = append(taken, r)
		}
	}
	if len(taken) > 0 {
		db.process(taken)
	}
	// Nothing left open holds bbolt's write lock against update.
	db.rollback()
}

// process is group for requests already taken.
func (db *DB) process(taken []*request) {
	if db.failErr != nil {
		for _, r := range taken {
			db.failWith(r, db.failErr)
		}
		return
	}
	applied := db.applyAll(taken)
	if len(applied) == 0 {
		return
	}
	err := db.durable(applied)
	if err == nil {
		db.backoff = 0
		for _, r := range applied {
			r.Done()
		}
		if db.opts.OnStorm != nil {
			for _, r := range applied {
				for _, st := range r.storms {
					db.opts.OnStorm(st)
				}
			}
		}
		// The callers just woken wait in this P's run queue, each with a
		// reply to write, while the writer would take the next group
		// and then block in its fdatasync, which hands the P on only
		// 20-40 µs in. Letting them go first cut their wait for a CPU
		// after the wake from 243-254 to 90-94 µs (mean; go tool trace
		// of serve under smtp-source, 20 sessions); the next group
		// waits for their few writes instead.
		runtime.Gosched()
		return
	}
	if db.failErr != nil {
		// A write or sync of a file failed (enterFailed): every caller
		// of the group gets the failure, none is retried alone.
		for _, r := range applied {
			db.failWith(r, db.failErr)
		}
		return
	}
	// Undo the group: back to the last committed state.
	db.rollback()
	if len(applied) == 1 {
		db.fail(applied[0], err)
		return
	}
	for _, r := range applied {
		db.process([]*request{r})
	}
}

// applyAll applies reqs to the open transaction (beginning one if need
// be) and returns those applied; the others have failed. A failed apply
// leaves the transaction half written, so it is rolled back and the
// requests applied before are applied again to a new one.
func (db *DB) applyAll(reqs []*request) []*request {
	applied := reqs[:0:0]
	for _, r := range reqs {
		if db.tx == nil {
			// None yet, or reapply could not begin one: those applied
			// before have failed.
			if err := db.beginTx(); err != nil {
				db.fail(r, err)
				continue
			}
		}
		err := db.apply(r)
		if err == nil {
			applied = append(applied, r)
			continue
		}
		db.fail(r, err)
		if err := db.reapply(applied); err != nil {
			for _, a := range applied {
				db.fail(a, err)
			}
			applied = applied[:0]
		}
	}
	return applied
}

// reapply rolls the transaction back and applies reqs to a new one,
// stopping at the first that fails; on failure no transaction is open.
func (db *DB) reapply(reqs []*request) error {
	db.rollback()
	if err := db.beginTx(); err != nil {
		return err
	}
	for _, r := range reqs {
		if err := db.apply(r); err != nil {
			db.rollback()
			return err
		}
	}
	return nil
}

// fail ends r with err.
func (db *DB) fail(r *request, err error) {
	db.failWith(r, fmt.Errorf("committing deliveries: %w", err))
}

// failWith ends r with err as it is.
func (db *DB) failWith(r *request, err error) {
	r.recs, r.err = nil, err
	r.Done()
}

// apply writes r into the open transaction and sets its records.
func (db *DB) apply(r *request) error {
	recs, err := db.applyAgain(r)
	r.recs = recs
	if db.txw != nil {
		r.storms = db.txw.lastStorms
	}
	return err
}

// applyAgain writes r into the open transaction and returns its records,
// leaving r's own alone: r may be a frame of an old log (bolt.go), with
// no caller.
func (db *DB) applyAgain(r *request) (recs []store.Record, err error) {
	defer func() {
		// A panic (say in a policy's Decide) fails this request
		// instead of the writer, which serves every caller.
		if p := recover(); p != nil {
			err = fmt.Errorf("panic in write transaction: %v", p)
		}
	}()
	if r.now.IsZero() {
		r.now, r.ids = db.now(), db.idgen
	} else {
		db.idgen = r.ids
	}
	return db.txw.write(r)
}

// durable makes the applied group reqs durable: it commits the open
// transaction.
func (db *DB) durable(reqs []*request) error {
	if db.opts.beforeCommit != nil {
		if err := db.opts.beforeCommit(reqs); err != nil {
			return err
		}
	}
	return db.commit()
}

// beginTx begins the writer's transaction.
func (db *DB) beginTx() error {
	tx, err := db.bolt.Begin(true)
	if err != nil {
		return err
	}
	db.tx, db.txw = tx, newTxWriter(db, tx)
	return nil
}

// rollback drops the open transaction, if any.
func (db *DB) rollback() {
	if db.tx != nil {
		db.tx.Rollback()
		db.tx, db.txw = nil, nil
	}
}

// commit commits the open transaction. A failed commit of bbolt's file
// puts the DB in the failed state; either way the transaction is gone.
func (db *DB) commit() error {
	if db.tx == nil {
		return errors.New("committing deliveries: no transaction open")
	}
	tx := db.tx
	err := db.txw.flushDomains()
	if err == nil {
		err = db.txw.flushDaily()
	}
	if err != nil {
		db.rollback()
		return fmt.Errorf("committing deliveries: %w", err)
	}
	db.tx, db.txw = nil, nil
	if cerr := tx.Commit(); cerr != nil {
		// bbolt has written some pages, maybe its meta page: what the
		// file holds now is known only by reading it again.
		err := &diskError{Op: OpCommit, Err: cerr}
		db.enterFailed(err)
		return fmt.Errorf("committing deliveries: %w", err)
	}
	return nil
}

// view runs fn in a read transaction that sees every acknowledged Save.
// While the writer reopens the file (reopen.go) it waits; when the file
// could not be opened again it fails with the writer's error.
func (db *DB) view(fn func(*bbolt.Tx) error) (err error) {
	db.fileMu.RLock()
	defer db.fileMu.RUnlock()
	if db.bolt == nil {
		return db.failedErr()
	}
	defer guard(db.path, "", &err)
	return db.bolt.View(fn)
}

// update runs fn in a write transaction of its own, between the writer's.
// It fails while the DB is failed; a failed commit puts it in the failed
// state, as a failed commit of the writer does.
func (db *DB) update(fn func(*bbolt.Tx) error) (err error) {
	db.fileMu.RLock()
	defer db.fileMu.RUnlock()
	if fe := db.failed.Load(); fe != nil || db.bolt == nil {
		return db.failedErr()
	}
	defer guard(db.path, "", &err)
	tx, err := db.bolt.Begin(true)
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			tx.Rollback()
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	done = true
	if err := tx.Commit(); err != nil {
		de := &diskError{Op: OpCommit, Err: err}
		select {
		case db.faultc <- de:
		default: // the writer has one to handle already
		}
		return fmt.Errorf("committing: %w", de)
	}
	return nil
}

// txWriter writes deliveries in one transaction.
type txWriter struct {
	db      *DB
	tx      *bbolt.Tx
	domains map[string]*store.DomainStat // aggregates changed in this transaction
	// lastSeen holds the stored LastSeen of each aggregate in domains
	// (zero for a new one), whose dom_time key flushDomains moves.
	lastSeen map[string]time.Time

	// The buckets every delivery writes, looked up once per transaction.
	raw, records, seenB                       *bbolt.Bucket
	idxRcpt, idxDomain, idxStatus, idxDStatus *bbolt.Bucket
	domainsB, domStatus, domTime              *bbolt.Bucket
	scratch                                   []byte   // index key being built
	keys                                      [][]byte // record keys of the delivery being written
	targets                                   []store.OutboxTarget
	targetsRead                               bool
	daily                                     map[string]map[string]int // days changed in this transaction
	lastStorms                                []store.Storm             // storms the last write started
	recJSON                                   []byte                    // JSON of the record being encoded
}

// newTxWriter prepares a txWriter for tx.
func newTxWriter(db *DB, tx *bbolt.Tx) *txWriter {
	w := &txWriter{db: db, tx: tx, domains: map[string]*store.DomainStat{}, lastSeen: map[string]time.Time{},
		raw: tx.Bucket(bucketRaw), records: tx.Bucket(bucketRecords), seenB: tx.Bucket(bucketSeen),
		idxRcpt: tx.Bucket(bucketIdxRcpt), idxDomain: tx.Bucket(bucketIdxDomain),
		idxStatus: tx.Bucket(bucketIdxStatus), idxDStatus: tx.Bucket(bucketIdxDStatus),
		domainsB: tx.Bucket(bucketDomains), domStatus: tx.Bucket(bucketDomStatus), domTime: tx.Bucket(bucketDomTime),
	}
	// Keys are appended in order.
	w.records.FillPercent, w.domTime.FillPercent, w.idxStatus.FillPercent = 0.95, 0.95, 0.9
	// Four raw parts fill a page exactly (rawPartSize) at 1.0.
	w.raw.FillPercent = 1
	return w
}

// write stores one delivery: its raw message, then what the rules
// decide for it (state.go).
func (w *txWriter) write(r *request) ([]store.Record, error) {
	now := r.now
	w.lastStorms = nil
	msgKey := w.db.idgen.next(now)
	if err := putRaw(w.raw, msgKey, r.raw, w.db.rawPart); err != nil {
		return nil, err
	}
	keys := w.keys[:0]
	newID := func() string {
		k := w.db.idgen.next(now)
		keys = append(keys, k)
		return encodeID(k)
	}
	ch, err := w.db.rules.Plan(w, r.d, &r.body, now, encodeID(msgKey), newID)
	w.keys = keys
	if err != nil {
		return nil, err
	}
	w.lastStorms = ch.NewStorms
	if err := w.apply(ch, keys, now); err != nil {
		return nil, err
	}
	return ch.Records, nil
}

// indexEntries lists the index keys of a record, by bucket.
func indexEntries(key []byte, rec *store.Record) map[string][]byte {
	m := map[string][]byte{}
	if rec.Addr != "" {
		m[string(bucketIdxRcpt)] = indexKey(key, rec.Addr)
	}
	if rec.Domain != "" {
		m[string(bucketIdxDomain)] = indexKey(key, rec.Domain)
	}
	if rec.Status != "" {
		m[string(bucketIdxStatus)] = indexKey(key, rec.Status)
	}
	if rec.Domain != "" && rec.Status != "" {
		m[string(bucketIdxDStatus)] = indexKey(key, rec.Domain, rec.Status)
	}
	return m
}

// putIndexes writes the index entries of a record, the same as
// indexEntries lists, building each key in one scratch buffer (bbolt
// copies keys).
func (w *txWriter) putIndexes(key []byte, rec *store.Record) error {
	put := func(b *bbolt.Bucket, name []byte, values ...string) error {
		w.scratch = w.scratch[:0]
		for _, v := range values {
			w.scratch = lp(w.scratch, v)
		}
		w.scratch = append(w.scratch, key...)
		if err := b.Put(w.scratch, nil); err != nil {
			return fmt.Errorf("writing index %s: %w", name, err)
		}
		return nil
	}
	var err error
	if rec.Addr != "" {
		err = put(w.idxRcpt, bucketIdxRcpt, rec.Addr)
	}
	if rec.Domain != "" && err == nil {
		err = put(w.idxDomain, bucketIdxDomain, rec.Domain)
	}
	if rec.Status != "" && err == nil {
		err = put(w.idxStatus, bucketIdxStatus, rec.Status)
	}
	if rec.Domain != "" && rec.Status != "" && err == nil {
		err = put(w.idxDStatus, bucketIdxDStatus, rec.Domain, rec.Status)
	}
	return err
}

// flushDomains writes the aggregates changed in this transaction.
func (w *txWriter) flushDomains() error {
	b := w.domainsB
	for dom, st := range w.domains {
		if err := b.Put([]byte(dom), encodeDomainStat(st)); err != nil {
			return fmt.Errorf("writing domain aggregate: %w", err)
		}
		if err := moveDomTime(w.domTime, dom, w.lastSeen[dom], st.LastSeen); err != nil {
			return err
		}
	}
	return nil
}
