package postgres

// The rules' view of the open write transaction (store.State), and the
// application of what they decide (store.Changes) to it.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/bouncer/bouncer/store"

	"github.com/jackc/pgx/v5"
)

// txState answers store.State from one write transaction holding the
// writer lock, and applies Changes to it.
type txState struct {
	ctx context.Context
	db  *DB
	tx  pgx.Tx
	ids idGen

	targets     []store.OutboxTarget
	targetsRead bool
	// domains holds the aggregates changed in this transaction, written
	// by finish: a busy domain's row is written once per group.
	domains map[string]*store.DomainStat

	// The state read so far (prefetch, then misses) and changed since, by
	// key; a nil value is a known absence. Writers hold the writer lock,
	// so nobody else changes these rows before COMMIT.
	seen    map[string][]byte
	sups    map[string]*store.Suppression
	soft    map[string]*store.SoftCounter
	flags   map[string]*store.Storm
	sets    map[setKey]*store.StormSet
	held    map[[2]string]bool
	domRead map[string]*store.DomainStat
	// wb holds the group's writes, sent once by finish.
	wb *pgx.Batch
}

// setKey is a storm counter as its row is keyed (values cut to
// maxIndexValue bytes, as bolt's keys are).
type setKey struct {
	kind        byte
	key, status string
}

func setKeyOf(c store.StormCounter) setKey {
	return setKey{c.Key.Kind, string(ix(c.Key.Value)), string(ix(c.Status))}
}

// newTxState prepares to write in tx; prefetch takes the writer lock.
func newTxState(ctx context.Context, db *DB, tx pgx.Tx) (*txState, error) {
	w := &txState{ctx: ctx, db: db, tx: tx, domains: map[string]*store.DomainStat{},
		seen: map[string][]byte{}, sups: map[string]*store.Suppression{}, soft: map[string]*store.SoftCounter{},
		flags: map[string]*store.Storm{}, sets: map[setKey]*store.StormSet{}, held: map[[2]string]bool{},
		domRead: map[string]*store.DomainStat{}, wb: &pgx.Batch{}}
	return w, nil
}

// getJSON reads one JSON value into v; it reports false if there is no row.
func getJSON(ctx context.Context, q querier, v any, sql string, args ...any) (bool, error) {
	var b []byte
	err := q.QueryRow(ctx, sql, args...).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("decoding: %w", err)
	}
	return true, nil
}

// querier is a pool, a connection or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Seen implements store.State: the first record's ID says when.
func (w *txState) Seen(k []byte) (string, time.Time, error) {
	id, ok := w.seen[string(k)]
	if !ok {
		err := w.tx.QueryRow(w.ctx, "SELECT id FROM seen WHERE key = $1", k).Scan(&id)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return "", time.Time{}, err
		}
		w.seen[string(k)] = id
	}
	if len(id) != keyLen {
		return "", time.Time{}, nil
	}
	return encodeID(id), keyTime(id), nil
}

// Suppression implements store.State.
func (w *txState) Suppression(addr string) (*store.Suppression, error) {
	if s, ok := w.sups[addr]; ok {
		return s, nil
	}
	s, err := readSuppression(w.ctx, w.tx, addr)
	if err == nil {
		w.sups[addr] = s
	}
	return s, err
}

func readSuppression(ctx context.Context, q querier, addr string) (*store.Suppression, error) {
	var s store.Suppression
	ok, err := getJSON(ctx, q, &s, "SELECT data FROM suppressions WHERE address = $1", []byte(addr))
	if err != nil || !ok {
		return nil, err
	}
	return &s, nil
}

// SoftCounter implements store.State.
func (w *txState) SoftCounter(addr string) (store.SoftCounter, error) {
	if c, ok := w.soft[addr]; ok {
		if c == nil {
			return store.SoftCounter{}, nil
		}
		return *c, nil
	}
	var c store.SoftCounter
	ok, err := getJSON(w.ctx, w.tx, &c, "SELECT data FROM soft WHERE address = $1", []byte(addr))
	if err == nil && ok {
		w.soft[addr] = &c
	} else if err == nil {
		w.soft[addr] = nil
	}
	return c, err
}

// StormFlag implements store.State.
func (w *txState) StormFlag(domain string) (*store.Storm, error) {
	if f, ok := w.flags[domain]; ok {
		return f, nil
	}
	f, err := readStorm(w.ctx, w.tx, domain)
	if err == nil {
		w.flags[domain] = f
	}
	return f, err
}

func readStorm(ctx context.Context, q querier, domain string) (*store.Storm, error) {
	var st store.Storm
	ok, err := getJSON(ctx, q, &st, "SELECT data FROM storm_flags WHERE domain = $1", []byte(domain))
	if err != nil || !ok {
		return nil, err
	}
	return &st, nil
}

// StormSet implements store.State. A damaged set reads as empty, as in
// store/bolt: the counter starts over rather than fail every save.
func (w *txState) StormSet(c store.StormCounter) (store.StormSet, error) {
	if s, ok := w.sets[setKeyOf(c)]; ok {
		if s == nil {
			return store.StormSet{}, nil
		}
		return *s, nil
	}
	s, err := w.readStormSet(c)
	if err == nil {
		w.sets[setKeyOf(c)] = &s
	}
	return s, err
}

func (w *txState) readStormSet(c store.StormCounter) (store.StormSet, error) {
	var b []byte
	err := w.tx.QueryRow(w.ctx, "SELECT data FROM storm_sets WHERE kind = $1 AND key = $2 AND status = $3",
		string(c.Key.Kind), ix(c.Key.Value), ix(c.Status)).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.StormSet{}, nil
	}
	if err != nil {
		return store.StormSet{}, err
	}
	var s store.StormSet
	if json.Unmarshal(b, &s) != nil || len(s.Addrs) != len(s.Times) {
		s = store.StormSet{}
	}
	return s, nil
}

// Held implements store.State.
func (w *txState) Held(domain, addr string) (bool, error) {
	if h, ok := w.held[[2]string{domain, addr}]; ok {
		return h, nil
	}
	var one int
	err := w.tx.QueryRow(w.ctx, "SELECT 1 FROM holds WHERE domain = $1 AND address = $2", []byte(domain), []byte(addr)).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		err = nil
	}
	if err == nil {
		w.held[[2]string{domain, addr}] = one == 1
	}
	return one == 1, err
}

// DomainStat implements store.State from the aggregates this transaction
// changed, else the domains table.
func (w *txState) DomainStat(dom string) (*store.DomainStat, error) {
	if st, ok := w.domains[dom]; ok {
		return st, nil
	}
	if st, ok := w.domRead[dom]; ok {
		return st, nil
	}
	var st store.DomainStat
	ok, err := getJSON(w.ctx, w.tx, &st, "SELECT data FROM domains WHERE domain = $1", []byte(dom))
	if err != nil {
		return nil, err
	}
	if !ok {
		w.domRead[dom] = nil
		return nil, nil
	}
	w.domRead[dom] = &st
	return &st, nil
}

// OutboxTargets implements store.State, reading the targets once per
// transaction (SetOutboxTargets takes the writer lock).
func (w *txState) OutboxTargets() ([]store.OutboxTarget, error) {
	if w.targetsRead {
		return w.targets, nil
	}
	ts, err := readTargets(w.ctx, w.tx)
	if err != nil {
		return nil, err
	}
	w.targets, w.targetsRead = ts, true
	return ts, nil
}

func readTargets(ctx context.Context, q querier) ([]store.OutboxTarget, error) {
	rows, err := q.Query(ctx, "SELECT data FROM outbox_targets ORDER BY name")
	if err != nil {
		return nil, err
	}
	var out []store.OutboxTarget
	for rows.Next() {
		var b []byte
		var t store.OutboxTarget
		if err := rows.Scan(&b); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(b, &t); err != nil {
			return nil, fmt.Errorf("decoding outbox target: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// marshal is json.Marshal with the error named.
func marshal(v any, what string) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding %s: %w", what, err)
	}
	return b, nil
}

// stormSweep is how many stale storm counters one delivery's changes
// delete, so the table does not keep every domain and MTA ever seen.
const stormSweep = 8

// apply queues the writes of the raw message and the changes of one
// delivery to the group's batch, and records the changes in the state
// read by the next deliveries; keys are the IDs of its records, in order.
func (w *txState) apply(ch *store.Changes, msgKey, raw []byte, keys [][]byte, now time.Time) error {
	b := w.wb
	if raw == nil {
		raw = []byte{}
	}
	b.Queue("INSERT INTO raw (id, data) VALUES ($1, $2)", msgKey, raw)
	for i := range ch.Records {
		r := &ch.Records[i]
		j, err := marshal(r, "record")
		if err != nil {
			return err
		}
		b.Queue("INSERT INTO records (id, msg_id, addr, domain, status, kind, rec) VALUES ($1, $2, $3, $4, $5, $6, $7)",
			keys[i], msgKey, ix(r.Addr), ix(r.Domain), ix(r.Status), ix(string(r.Kind)), j)
	}
	for _, s := range ch.Seen {
		k, err := decodeID(s.ID)
		if err != nil {
			return err
		}
		b.Queue("INSERT INTO seen (key, id) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET id = excluded.id", s.Key, k)
		w.seen[string(s.Key)] = k
	}
	for i := range ch.Suppressions {
		s := ch.Suppressions[i]
		if err := queueSuppression(b, &s); err != nil {
			return err
		}
		w.sups[s.Address] = &s
	}
	for _, u := range ch.Soft {
		if err := queueSoft(b, &u); err != nil {
			return err
		}
		c := u.Counter
		w.soft[u.Addr] = &c
	}
	if err := w.queueStorm(b, ch, now); err != nil {
		return err
	}
	for _, u := range ch.Domains {
		w.domains[u.Stat.Domain] = u.Stat
		for _, status := range u.NewStatuses {
			b.Queue("INSERT INTO dom_status (status, domain) VALUES ($1, $2) ON CONFLICT DO NOTHING",
				ix(status), []byte(u.Stat.Domain))
		}
	}
	queueDaily(b, ch.Daily)
	return queueEvents(b, ch.Events)
}

// queueEvents queues the inserts of new outbox events, numbered by the
// outbox sequence into their Seq as the batch runs; held ones go to the
// dead-letter list.
func queueEvents(b *pgx.Batch, evs []store.OutboxEvent) error {
	for i := range evs {
		ev := &evs[i]
		j, err := marshal(ev, "outbox event")
		if err != nil {
			return err
		}
		scan := func(row pgx.Row) error { return row.Scan(&ev.Seq) }
		if ev.Held {
			b.Queue("INSERT INTO outbox_dead (seq, data) VALUES (nextval('outbox_seq'), $1) RETURNING seq", j).QueryRow(scan)
			continue
		}
		b.Queue("INSERT INTO outbox (seq, target, next_try, data) VALUES (nextval('outbox_seq'), $1, $2, $3) RETURNING seq",
			ev.Target, nanos(ev.NextTry), j).QueryRow(scan)
	}
	return nil
}

// queueSoft queues the upsert of a soft counter.
func queueSoft(b *pgx.Batch, u *store.SoftUpdate) error {
	j, err := marshal(&u.Counter, "soft counter")
	if err != nil {
		return err
	}
	last := int64(0)
	if n := len(u.Counter.Events); n > 0 {
		last = u.Counter.Events[n-1]
	}
	b.Queue(`INSERT INTO soft (address, data, last, win) VALUES ($1, $2, $3, $4)
		ON CONFLICT (address) DO UPDATE SET data = excluded.data, last = excluded.last, win = excluded.win`,
		[]byte(u.Addr), j, last, u.Counter.Window)
	return nil
}

// queueDomain queues the upsert of a domain aggregate; its storm flag and
// route health live in their own tables.
func queueDomain(b *pgx.Batch, st *store.DomainStat) error {
	c := *st
	c.Storm, c.LastMX, c.Recovered = nil, nil, nil
	j, err := marshal(&c, "domain aggregate")
	if err != nil {
		return err
	}
	b.Queue(`INSERT INTO domains (domain, data, last_seen) VALUES ($1, $2, $3)
		ON CONFLICT (domain) DO UPDATE SET data = excluded.data, last_seen = excluded.last_seen`,
		[]byte(c.Domain), j, max(c.LastSeen.UnixNano(), 0))
	return nil
}

// queueSuppression queues the upsert of s.
func queueSuppression(b *pgx.Batch, s *store.Suppression) error {
	j, err := marshal(s, "suppression")
	if err != nil {
		return err
	}
	b.Queue(`INSERT INTO suppressions (address, domain, data) VALUES ($1, $2, $3)
		ON CONFLICT (address) DO UPDATE SET domain = excluded.domain, data = excluded.data`,
		[]byte(s.Address), []byte(store.AddrDomain(s.Address)), j)
	return nil
}

// queueStorm queues the storm counters, flags and holds of ch, and a
// sweep of a few stale counters after counting.
func (w *txState) queueStorm(b *pgx.Batch, ch *store.Changes, now time.Time) error {
	for _, u := range ch.StormSets {
		j, err := marshal(&u.Set, "storm set")
		if err != nil {
			return err
		}
		last := int64(0)
		if n := len(u.Set.Times); n > 0 {
			last = u.Set.Times[n-1]
		}
		b.Queue(`INSERT INTO storm_sets (kind, key, status, data, last) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (kind, key, status) DO UPDATE SET data = excluded.data, last = excluded.last`,
			string(u.Counter.Key.Kind), ix(u.Counter.Key.Value), ix(u.Counter.Status), j, last)
		set := u.Set
		w.sets[setKeyOf(u.Counter)] = &set
	}
	if len(ch.StormSets) > 0 {
		cut := now.Add(-w.db.rules.Storm.WindowOrDefault()).UnixNano()
		b.Queue(`DELETE FROM storm_sets WHERE (kind, key, status) IN
			(SELECT kind, key, status FROM storm_sets WHERE last < $1 LIMIT $2)`, cut, stormSweep)
	}
	for i := range ch.StormFlags {
		f := ch.StormFlags[i]
		w.flags[f.Domain] = &f
		j, err := marshal(&f, "storm flag")
		if err != nil {
			return err
		}
		b.Queue("INSERT INTO storm_flags (domain, data) VALUES ($1, $2) ON CONFLICT (domain) DO UPDATE SET data = excluded.data",
			[]byte(f.Domain), j)

	}
	for i := range ch.Holds {
		h := &ch.Holds[i]
		j, err := marshal(h, "hold")
		if err != nil {
			return err
		}
		b.Queue("INSERT INTO holds (domain, address, data) VALUES ($1, $2, $3) ON CONFLICT (domain, address) DO UPDATE SET data = excluded.data",
			[]byte(h.Domain), []byte(h.Address), j)
		w.held[[2]string{h.Domain, h.Address}] = true
	}
	return nil
}

// finish sends the group's writes, the changed aggregates and the ID
// generator in one round trip.
func (w *txState) finish() error {
	b := w.wb
	for _, st := range w.domains {
		if err := queueDomain(b, st); err != nil {
			return err
		}
	}
	b.Queue("UPDATE idgen SET nanos = $1, seq = $2", w.ids.nanos, w.ids.seq)
	return w.tx.SendBatch(w.ctx, b).Close()
}
