package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bouncer/bouncer/parse"
	bolt "go.etcd.io/bbolt"
)

// maxBatchBytes caps the compressed raw bytes committed in one transaction.
const maxBatchBytes = 32 << 20

// Request states.
const (
	stateQueued    int32 = iota
	stateTaken           // in a transaction; the caller waits for its outcome
	stateCancelled       // the caller gave up while queued
)

// request is one Save waiting for the writer.
type request struct {
	d     *Delivery
	raw   []byte            // codec byte + (compressed) raw message
	body  [sha256.Size]byte // bodyHash of the raw message
	state atomic.Int32
	done  chan struct{}

	recs []Record // outcome, valid after done is closed
	err  error
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
func (db *DB) Save(ctx context.Context, d *Delivery) ([]Record, error) {
	if db.opts.ReadOnly {
		return nil, ErrReadOnly
	}
	if d == nil {
		return nil, errors.New("saving delivery: nil delivery")
	}
	req, err := db.newRequest(ctx, d)
	if err != nil {
		return nil, err
	}

	db.mu.RLock()
	if db.closed {
		db.mu.RUnlock()
		return nil, ErrClosed
	}
	select {
	case db.queue <- req:
		db.mu.RUnlock()
	case <-ctx.Done():
		db.mu.RUnlock()
		return nil, fmt.Errorf("saving delivery: %w", ctx.Err())
	}

	select {
	case <-req.done:
	case <-ctx.Done():
		if req.state.CompareAndSwap(stateQueued, stateCancelled) {
			return nil, fmt.Errorf("saving delivery: %w", ctx.Err())
		}
		<-req.done
	}
	return req.recs, req.err
}

// newRequest prepares d for the writer: the work that needs no
// transaction (compression, hashing) is done here, in the caller's
// goroutine. It fails only when ctx ends while waiting for a compressor.
func (db *DB) newRequest(ctx context.Context, d *Delivery) (*request, error) {
	raw, err := db.compressRaw(ctx, d.Raw)
	if err != nil {
		return nil, fmt.Errorf("saving delivery: %w", err)
	}
	return &request{d: d, done: make(chan struct{}), raw: raw, body: bodyHash(d.Raw)}, nil
}

// writer commits queued requests until the queue is closed.
func (db *DB) writer() {
	defer close(db.done)
	for req := range db.queue {
		batch := []*request{req}
		size := len(req.raw)
	drain:
		for len(batch) < db.opts.MaxBatch && size < maxBatchBytes {
			select {
			case r, ok := <-db.queue:
				if !ok {
					break drain
				}
				batch = append(batch, r)
				size += len(r.raw)
			default:
				break drain
			}
		}
		db.commit(batch)
	}
}

// commit writes batch in one transaction, or each request alone if that
// fails, and wakes every caller.
func (db *DB) commit(batch []*request) {
	taken := batch[:0]
	for _, r := range batch {
		if r.state.CompareAndSwap(stateQueued, stateTaken) {
			taken = append(taken, r)
		}
	}
	if len(taken) == 0 {
		return
	}
	err := db.update(taken)
	if err != nil && len(taken) > 1 {
		for _, r := range taken {
			r.err = db.update([]*request{r})
			if r.err != nil {
				r.recs = nil
			}
			close(r.done)
		}
		return
	}
	for _, r := range taken {
		r.err = err
		if err != nil {
			r.recs = nil
		}
		close(r.done)
	}
}

// update writes reqs in one transaction and sets their records.
func (db *DB) update(reqs []*request) error {
	err := db.bolt.Update(func(tx *bolt.Tx) (err error) {
		defer func() {
			// A panic (say in a policy's Decide) fails this transaction
			// instead of the writer, which serves every caller.
			if p := recover(); p != nil {
				err = fmt.Errorf("panic in write transaction: %v", p)
			}
		}()
		w := newTxWriter(db, tx)
		for _, r := range reqs {
			recs, err := w.write(r)
			if err != nil {
				return err
			}
			r.recs = recs
		}
		if err := w.flushDomains(); err != nil {
			return err
		}
		if db.opts.beforeCommit != nil {
			return db.opts.beforeCommit(reqs)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("committing deliveries: %w", err)
	}
	return nil
}

// txWriter writes deliveries in one transaction.
type txWriter struct {
	db      *DB
	tx      *bolt.Tx
	domains map[string]*DomainStat // aggregates changed in this transaction
	// lastSeen holds the stored LastSeen of each aggregate in domains
	// (zero for a new one), whose dom_time key flushDomains moves.
	lastSeen map[string]time.Time

	// The buckets every delivery writes, looked up once per transaction.
	raw, records, seenB                       *bolt.Bucket
	idxRcpt, idxDomain, idxStatus, idxDStatus *bolt.Bucket
	domainsB, domStatus, domTime              *bolt.Bucket
	scratch                                   []byte // index key being built
}

// newTxWriter prepares a txWriter for tx.
func newTxWriter(db *DB, tx *bolt.Tx) *txWriter {
	w := &txWriter{db: db, tx: tx, domains: map[string]*DomainStat{}, lastSeen: map[string]time.Time{},
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

// write stores one delivery.
func (w *txWriter) write(r *request) ([]Record, error) {
	now := w.db.now()
	msgKey := w.db.idgen.next(now)
	if err := putRaw(w.raw, msgKey, r.raw, w.db.rawPart); err != nil {
		return nil, err
	}
	recs := buildRecords(r.d, now)
	records := w.records
	for i := range recs {
		rec := &recs[i]
		key := w.db.idgen.next(now)
		rec.ID = encodeID(key)
		rec.MsgID = encodeID(msgKey)
		first, err := w.seen(dedupeKey(r.d, &r.body, i, &rec.Recipient), key, now)
		if err != nil {
			return nil, err
		}
		if err := w.judge(rec, first, now); err != nil {
			return nil, err
		}
		base := ""
		if i > 0 {
			base = recs[0].ID
		}
		v, err := encodeRecord(rec, base)
		if err != nil {
			return nil, err
		}
		if err := records.Put(key, v); err != nil {
			return nil, fmt.Errorf("writing record: %w", err)
		}
		if err := w.putIndexes(key, rec); err != nil {
			return nil, err
		}
		if rec.Duplicate || rec.Mismatch != "" {
			continue
		}
		if err := w.countDomain(rec); err != nil {
			return nil, err
		}
		if err := w.db.outboxAdd(w.tx, rec); err != nil {
			return nil, err
		}
	}
	return recs, nil
}

// judge gives rec its verdict: a duplicate of the record with key first
// (if not nil) or a mismatch is only recorded; any other record goes
// through the policy and the storm guard.
func (w *txWriter) judge(rec *Record, first []byte, now time.Time) error {
	if first != nil {
		rec.Duplicate, rec.DuplicateOf, rec.Verdict = true, encodeID(first), ActionDuplicate
		return nil
	}
	if m := crossCheck(&rec.Envelope, &rec.Recipient); m != "" {
		rec.Mismatch, rec.Verdict = m, ActionMismatch
		return nil
	}
	if err := w.db.applyPolicy(w.tx, rec, now); err != nil {
		return err
	}
	return w.db.stormGuard(w.tx, rec, now)
}

// indexEntries lists the index keys of a record, by bucket.
func indexEntries(key []byte, rec *Record) map[string][]byte {
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
func (w *txWriter) putIndexes(key []byte, rec *Record) error {
	put := func(b *bolt.Bucket, name []byte, values ...string) error {
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

// buildRecords makes the records of one delivery: one per recipient of
// its report, or one with the report's kind (or unknown) when there is no
// recipient. The address is the VERP-decoded one when the envelope has
// it, else the report's final (or original) recipient.
func buildRecords(d *Delivery, now time.Time) []Record {
	base := Record{
		Received:   d.Received,
		Envelope:   d.Envelope,
		ParseError: d.ParseError,
	}
	if base.Received.IsZero() {
		base.Received = now
	}
	kind := parse.KindUnknown
	var rcpts []parse.Recipient
	if rep := d.Report; rep != nil {
		base.ReportingMTA = rep.ReportingMTA
		base.OriginalEnvelopeID = rep.OriginalEnvelopeID
		base.DSNGateway = rep.DSNGateway
		base.ReceivedFromMTA = rep.ReceivedFromMTA
		base.ArrivalDate = rep.ArrivalDate
		base.Original = rep.Original
		base.Feedback = rep.Feedback
		if rep.Kind != "" {
			kind = rep.Kind
		}
		rcpts = rep.Recipients
	}
	if len(rcpts) == 0 {
		rcpts = []parse.Recipient{{Kind: kind, Class: parse.ClassNone}}
	}
	recs := make([]Record, len(rcpts))
	for i, rc := range rcpts {
		rec := base
		rec.Recipient = rc
		if rec.Kind == "" {
			rec.Kind = kind
		}
		addr := d.Envelope.VERP
		if addr == "" {
			addr = rc.Address()
		}
		rec.Status = strings.ToValidUTF8(rec.Status, "\uFFFD")
		rec.Addr = NormalizeAddr(addr)
		rec.Domain = addrDomain(rec.Addr)
		recs[i] = rec
	}
	return recs
}

// Bounds on the per-domain aggregate, whose contents an attacker chooses.
const (
	maxDomainStatuses = 64  // distinct status keys; more count as "other"
	maxDomainMTAs     = 32  // remote and reporting MTAs kept per domain
	maxMTALen         = 255 // bytes of one MTA name
)

// DomainStat aggregates the records of one recipient domain.
type DomainStat struct {
	Domain        string         `json:"domain"`
	Total         int            `json:"total"`
	Counts        map[string]int `json:"counts"` // by status; "" for records without one
	Kinds         map[string]int `json:"kinds"`  // by kind
	FirstSeen     time.Time      `json:"first_seen"`
	LastSeen      time.Time      `json:"last_seen"`
	RemoteMTAs    []string       `json:"remote_mtas,omitempty"`
	ReportingMTAs []string       `json:"reporting_mtas,omitempty"`
	// MTAsCapped is set once an MTA was not kept because a set was full.
	MTAsCapped bool `json:"mtas_capped,omitempty"`

	// Storm, LastMX and Recovered are filled in by Domains from the
	// storm_flag and mx_health buckets (storm.go, mxhealth.go); they are
	// not part of the stored aggregate.
	Storm     *Storm     `json:"storm,omitempty"`
	LastMX    *MXCheck   `json:"last_mx,omitempty"`
	Recovered *time.Time `json:"recovered,omitempty"` // route works again since
}

// countDomain adds rec to its domain's aggregate.
func (w *txWriter) countDomain(rec *Record) error {
	if rec.Domain == "" {
		return nil
	}
	dom := rec.Domain
	if len(dom) > maxIndexValue {
		dom = dom[:maxIndexValue]
	}
	st, err := w.domain(dom)
	if err != nil {
		return err
	}
	status := rec.Status
	if _, ok := st.Counts[status]; !ok && len(st.Counts) >= maxDomainStatuses {
		status = "other"
	}
	if st.Counts[status] == 0 {
		k := append(lp(nil, status), dom...)
		if err := w.domStatus.Put(k, nil); err != nil {
			return fmt.Errorf("writing domain status index: %w", err)
		}
	}
	st.Counts[status]++
	if _, ok := st.Kinds[string(rec.Kind)]; ok || len(st.Kinds) < maxDomainStatuses {
		st.Kinds[string(rec.Kind)]++
	}
	st.Total++
	if st.FirstSeen.IsZero() || rec.Received.Before(st.FirstSeen) {
		st.FirstSeen = rec.Received
	}
	if rec.Received.After(st.LastSeen) {
		st.LastSeen = rec.Received
	}
	st.RemoteMTAs = addMTA(st, st.RemoteMTAs, rec.RemoteMTA)
	st.ReportingMTAs = addMTA(st, st.ReportingMTAs, rec.ReportingMTA)
	return nil
}

// addMTA adds mta to a bounded set.
func addMTA(st *DomainStat, set []string, mta string) []string {
	mta = strings.ToLower(strings.TrimSpace(mta))
	if mta == "" {
		return set
	}
	if len(mta) > maxMTALen {
		mta = mta[:maxMTALen]
	}
	for _, m := range set {
		if m == mta {
			return set
		}
	}
	if len(set) >= maxDomainMTAs {
		st.MTAsCapped = true
		return set
	}
	return append(set, mta)
}

// domain returns the aggregate of dom, loading it on first use.
func (w *txWriter) domain(dom string) (*DomainStat, error) {
	if st, ok := w.domains[dom]; ok {
		return st, nil
	}
	st := &DomainStat{Domain: dom}
	if v := w.domainsB.Get([]byte(dom)); v != nil {
		d, err := decodeDomainStat([]byte(dom), v)
		if err != nil {
			return nil, err
		}
		*st = d
	}
	if st.Counts == nil {
		st.Counts = map[string]int{}
	}
	if st.Kinds == nil {
		st.Kinds = map[string]int{}
	}
	w.domains[dom] = st
	w.lastSeen[dom] = st.LastSeen
	return st, nil
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
