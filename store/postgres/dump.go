package postgres

// Export, Import and Counts move a store's content to and from another
// engine (bouncer copy); store/dump.go describes the items.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/bouncer/bouncer/store"

	"github.com/jackc/pgx/v5"
)

// Export calls fn with every stored item, kind by kind in the order of
// store.DumpKinds, each in key order (records and raw messages oldest
// first, events by seq), from one REPEATABLE READ transaction: a
// consistent snapshot even while other hosts write. Rows are read as
// they arrive, so memory does not grow with the store. ctx bounds the
// whole export (Options.Timeout does not).
func (db *DB) Export(ctx context.Context, fn func(*store.Item) error) error {
	tx, err := db.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return wrapErr("exporting", err)
	}
	defer tx.Rollback(context.Background())
	for _, s := range exportSteps {
		if err := s.fn(ctx, tx, fn); err != nil {
			return wrapErr("exporting "+s.kind, err)
		}
	}
	return nil
}

type exportStep struct {
	kind string
	fn   func(context.Context, pgx.Tx, func(*store.Item) error) error
}

var exportSteps = []exportStep{
	{store.DumpRaw, exportRows("SELECT id, data FROM raw ORDER BY id", func(id, data []byte) (*store.Item, error) {
		if len(id) != keyLen {
			return nil, fmt.Errorf("raw message id %x: want %d bytes", id, keyLen)
		}
		return &store.Item{Raw: &store.RawMessage{MsgID: encodeID(id), Data: data}}, nil
	})},
	{store.DumpRecords, exportJSON("SELECT rec FROM records ORDER BY id", func(r *store.Record) *store.Item { return &store.Item{Record: r} })},
	{store.DumpSeen, exportRows("SELECT key, id FROM seen ORDER BY key", func(k, id []byte) (*store.Item, error) {
		if len(id) != keyLen {
			return nil, fmt.Errorf("dedupe key %x: record id of %d bytes", k, len(id))
		}
		return &store.Item{Seen: &store.SeenKey{Key: k, ID: encodeID(id), At: keyTime(id)}}, nil
	})},
	{store.DumpSuppressions, exportJSON("SELECT data FROM suppressions ORDER BY address", func(s *store.Suppression) *store.Item { return &store.Item{Suppression: s} })},
	{store.DumpSoft, exportRows("SELECT address, data FROM soft ORDER BY address", func(addr, data []byte) (*store.Item, error) {
		u := &store.SoftUpdate{Addr: string(addr)}
		if err := json.Unmarshal(data, &u.Counter); err != nil {
			return nil, fmt.Errorf("decoding soft counter of %q: %w", store.Truncate(u.Addr, 80), err)
		}
		return &store.Item{Soft: u}, nil
	})},
	{store.DumpStormSets, exportStormSets},
	{store.DumpStorms, exportJSON("SELECT data FROM storm_flags ORDER BY domain", func(s *store.Storm) *store.Item { return &store.Item{Storm: s} })},
	{store.DumpHolds, exportJSON("SELECT data FROM holds ORDER BY domain, address", func(h *store.Hold) *store.Item { return &store.Item{Hold: h} })},
	{store.DumpDomains, exportJSON("SELECT data FROM domains ORDER BY domain", func(st *store.DomainStat) *store.Item {
		st.Storm, st.LastMX, st.Recovered = nil, nil, nil
		return &store.Item{Domain: st}
	})},
	{store.DumpMX, exportRows("SELECT domain, data FROM mx_health ORDER BY domain", func(dom, data []byte) (*store.Item, error) {
		var h mxHealth
		if err := json.Unmarshal(data, &h); err != nil {
			return nil, fmt.Errorf("decoding MX health of %q: %w", store.Truncate(string(dom), 80), err)
		}
		return &store.Item{MX: &store.MXHealth{Domain: string(dom), Last: h.Last, Recovered: h.Recovered}}, nil
	})},
	{store.DumpDaily, exportDaily},
	{store.DumpTargets, exportJSON("SELECT data FROM outbox_targets ORDER BY name", func(t *store.OutboxTarget) *store.Item { return &store.Item{Target: t} })},
	{store.DumpOutbox, exportEvents("outbox", false)},
	{store.DumpDead, exportEvents("outbox_dead", true)},
	{store.DumpMeta, func(ctx context.Context, tx pgx.Tx, fn func(*store.Item) error) error {
		t, err := rawPrunedBefore(ctx, tx)
		if err != nil || t.IsZero() {
			return err
		}
		return fn(&store.Item{Meta: &store.Meta{RawPrunedBefore: t}})
	}},
}

// exportRows gives an item made of each row of two bytea columns.
func exportRows(sql string, item func(a, b []byte) (*store.Item, error)) func(context.Context, pgx.Tx, func(*store.Item) error) error {
	return func(ctx context.Context, tx pgx.Tx, fn func(*store.Item) error) error {
		rows, err := tx.Query(ctx, sql)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var a, b []byte
			if err := rows.Scan(&a, &b); err != nil {
				return err
			}
			it, err := item(a, b)
			if err != nil {
				return err
			}
			if err := fn(it); err != nil {
				return err
			}
		}
		return rows.Err()
	}
}

// exportJSON gives an item made of each row's one JSON column.
func exportJSON[T any](sql string, item func(*T) *store.Item) func(context.Context, pgx.Tx, func(*store.Item) error) error {
	return func(ctx context.Context, tx pgx.Tx, fn func(*store.Item) error) error {
		rows, err := tx.Query(ctx, sql)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var b []byte
			if err := rows.Scan(&b); err != nil {
				return err
			}
			v := new(T)
			if err := json.Unmarshal(b, v); err != nil {
				return fmt.Errorf("decoding %s: %w", store.Truncate(string(b), 80), err)
			}
			if err := fn(item(v)); err != nil {
				return err
			}
		}
		return rows.Err()
	}
}

func exportStormSets(ctx context.Context, tx pgx.Tx, fn func(*store.Item) error) error {
	rows, err := tx.Query(ctx, "SELECT kind, key, status, data FROM storm_sets ORDER BY kind, key, status")
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var kind string
		var key, status, data []byte
		if err := rows.Scan(&kind, &key, &status, &data); err != nil {
			return err
		}
		if len(kind) != 1 {
			return fmt.Errorf("storm counter kind %q: want one letter", store.Truncate(kind, 20))
		}
		u := &store.StormSetUpdate{Counter: store.StormCounter{Key: store.StormKey{Kind: kind[0], Value: string(key)}, Status: string(status)}}
		if err := json.Unmarshal(data, &u.Set); err != nil {
			return fmt.Errorf("decoding storm counter: %w", err)
		}
		if err := fn(&store.Item{StormSet: u}); err != nil {
			return err
		}
	}
	return rows.Err()
}

// exportDaily gives one item per day (the table has a row per counter).
func exportDaily(ctx context.Context, tx pgx.Tx, fn func(*store.Item) error) error {
	rows, err := tx.Query(ctx, "SELECT day, key, n FROM daily ORDER BY day, key")
	if err != nil {
		return err
	}
	defer rows.Close()
	var day *store.Day
	for rows.Next() {
		var d, key string
		var n int64
		if err := rows.Scan(&d, &key, &n); err != nil {
			return err
		}
		if day != nil && day.Day != d {
			if err := fn(&store.Item{Day: day}); err != nil {
				return err
			}
			day = nil
		}
		if day == nil {
			day = &store.Day{Day: d, Counts: map[string]int{}}
		}
		day.Counts[key] = int(n)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if day != nil {
		return fn(&store.Item{Day: day})
	}
	return nil
}

// exportEvents gives the events of table with the seq of their row (the
// JSON of a queued event is written before its seq is known).
func exportEvents(table string, dead bool) func(context.Context, pgx.Tx, func(*store.Item) error) error {
	return func(ctx context.Context, tx pgx.Tx, fn func(*store.Item) error) error {
		rows, err := tx.Query(ctx, "SELECT seq, data FROM "+table+" ORDER BY seq")
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var seq int64
			var data []byte
			if err := rows.Scan(&seq, &data); err != nil {
				return err
			}
			var ev store.OutboxEvent
			if err := json.Unmarshal(data, &ev); err != nil {
				return fmt.Errorf("decoding event %d: %w", seq, err)
			}
			ev.Seq = uint64(seq)
			if err := fn(&store.Item{Event: &ev, Dead: dead}); err != nil {
				return err
			}
		}
		return rows.Err()
	}
}

// countSQL counts every kind of store.DumpKinds in one statement.
const countSQL = `SELECT (SELECT count(*) FROM raw), (SELECT count(*) FROM records), (SELECT count(*) FROM seen),
	(SELECT count(*) FROM suppressions), (SELECT count(*) FROM soft), (SELECT count(*) FROM storm_sets),
	(SELECT count(*) FROM storm_flags), (SELECT count(*) FROM holds), (SELECT count(*) FROM domains),
	(SELECT count(*) FROM mx_health), (SELECT count(DISTINCT day) FROM daily), (SELECT count(*) FROM outbox_targets),
	(SELECT count(*) FROM outbox), (SELECT count(*) FROM outbox_dead),
	(SELECT count(*) FROM meta WHERE key = 'raw_pruned_before')`

// Counts returns how many items of each kind of store.DumpKinds the
// database holds, counted by the server.
func (db *DB) Counts(ctx context.Context) (map[string]int, error) {
	n := make([]int64, len(store.DumpKinds))
	dst := make([]any, len(n))
	for i := range n {
		dst[i] = &n[i]
	}
	if err := db.pool.QueryRow(ctx, countSQL).Scan(dst...); err != nil {
		return nil, wrapErr("counting", err)
	}
	out := map[string]int{}
	for i, k := range store.DumpKinds {
		out[k] = int(n[i])
	}
	return out, nil
}

// table is the rows of one table that an Import writes; the first keys
// columns are its primary key.
type table struct {
	name string
	cols []string
	keys int
	rows [][]any
}

// importTables makes the tables an Import writes, in the order it
// writes them.
func importTables() []*table {
	return []*table{
		{name: "raw", cols: []string{"id", "data"}, keys: 1},
		{name: "records", cols: []string{"id", "msg_id", "addr", "domain", "status", "kind", "rec"}, keys: 1},
		{name: "seen", cols: []string{"key", "id"}, keys: 1},
		{name: "suppressions", cols: []string{"address", "domain", "data"}, keys: 1},
		{name: "soft", cols: []string{"address", "data", "last", "win"}, keys: 1},
		{name: "storm_sets", cols: []string{"kind", "key", "status", "data", "last"}, keys: 3},
		{name: "storm_flags", cols: []string{"domain", "data"}, keys: 1},
		{name: "holds", cols: []string{"domain", "address", "data"}, keys: 2},
		{name: "domains", cols: []string{"domain", "data", "last_seen"}, keys: 1},
		{name: "dom_status", cols: []string{"status", "domain"}, keys: 2},
		{name: "mx_health", cols: []string{"domain", "data"}, keys: 1},
		{name: "daily", cols: []string{"day", "key", "n"}, keys: 2},
		{name: "outbox_targets", cols: []string{"name", "data"}, keys: 1},
		{name: "outbox", cols: []string{"seq", "target", "next_try", "data"}, keys: 1},
		{name: "outbox_dead", cols: []string{"seq", "data"}, keys: 1},
	}
}

// Import writes items exported from another store (Export of this or
// another engine) in one transaction holding the writer lock, as they
// were: records keep their IDs, events their seqs, and the ID generator
// and outbox sequence continue after them. Without replace it uses COPY,
// which fails on a row whose key is stored already (meant for a copy
// into an empty database); with replace, rows go in as INSERT ... ON
// CONFLICT and replace stored rows with the same key (a copy run again
// after one that failed half way).
func (db *DB) Import(ctx context.Context, items []store.Item, replace bool) error {
	tabs := importTables()
	byName := map[string]*table{}
	for _, t := range tabs {
		byName[t.name] = t
	}
	var maxID []byte
	var maxSeq, pruned int64
	for i := range items {
		it := &items[i]
		id, seq, err := addRow(byName, it)
		if err != nil {
			return fmt.Errorf("importing %s: %w", it.Kind(), err)
		}
		if string(id) > string(maxID) {
			maxID = id
		}
		maxSeq = max(maxSeq, seq)
		if it.Meta != nil {
			pruned = max(pruned, it.Meta.RawPrunedBefore.UnixNano())
		}
	}
	ctx, cancel := context.WithTimeout(ctx, db.opts.Timeout)
	defer cancel()
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", db.lockID); err != nil {
			return err
		}
		for _, t := range tabs {
			if err := t.write(ctx, tx, replace); err != nil {
				return fmt.Errorf("writing %s: %w", t.name, err)
			}
		}
		return finishImport(ctx, tx, maxID, maxSeq, pruned)
	})
	return wrapErr("importing", err)
}

// finishImport moves the ID generator and the outbox sequence past what
// was imported, and the raw retention mark up to the source's.
func finishImport(ctx context.Context, tx pgx.Tx, maxID []byte, maxSeq, pruned int64) error {
	if maxID != nil {
		n, s := int64(keyTime(maxID).UnixNano()), int64(uint32(maxID[8])<<24|uint32(maxID[9])<<16|uint32(maxID[10])<<8|uint32(maxID[11]))
		if _, err := tx.Exec(ctx, "UPDATE idgen SET nanos = $1, seq = $2 WHERE (nanos, seq) < ($1, $2)", n, s+1); err != nil {
			return fmt.Errorf("moving the id generator: %w", err)
		}
	}
	if maxSeq > 0 {
		if _, err := tx.Exec(ctx, "SELECT setval('outbox_seq', greatest($1, (SELECT last_value FROM outbox_seq)))", maxSeq); err != nil {
			return fmt.Errorf("moving the outbox sequence: %w", err)
		}
	}
	if pruned != 0 {
		_, err := tx.Exec(ctx, `INSERT INTO meta (key, value) VALUES ('raw_pruned_before', $1)
			ON CONFLICT (key) DO UPDATE SET value = greatest(meta.value::int8, excluded.value::int8)::text`,
			strconv.FormatInt(pruned, 10))
		if err != nil {
			return fmt.Errorf("writing the retention mark: %w", err)
		}
	}
	return nil
}

// addRow adds the rows of it to their tables; it returns the item's
// record or message ID and event seq, if any.
func addRow(t map[string]*table, it *store.Item) (id []byte, seq int64, err error) {
	add := func(name string, vals ...any) { t[name].rows = append(t[name].rows, vals) }
	js := func(v any) []byte {
		b, e := json.Marshal(v)
		if e != nil && err == nil {
			err = e
		}
		return b
	}
	switch {
	case it.Raw != nil:
		if id, err = decodeID(it.Raw.MsgID); err != nil {
			return nil, 0, err
		}
		data := it.Raw.Data
		if data == nil {
			data = []byte{}
		}
		add("raw", id, data)
	case it.Record != nil:
		r := it.Record
		if id, err = decodeID(r.ID); err != nil {
			return nil, 0, err
		}
		msg, err := decodeID(r.MsgID)
		if err != nil {
			return nil, 0, err
		}
		add("records", id, msg, ix(r.Addr), ix(r.Domain), ix(r.Status), ix(string(r.Kind)), js(r))
	case it.Seen != nil:
		k, err := decodeID(it.Seen.ID)
		if err != nil {
			return nil, 0, err
		}
		add("seen", it.Seen.Key, k)
	case it.Suppression != nil:
		s := it.Suppression
		add("suppressions", []byte(s.Address), []byte(store.AddrDomain(s.Address)), js(s))
	case it.Soft != nil:
		c := &it.Soft.Counter
		last := int64(0)
		if n := len(c.Events); n > 0 {
			last = c.Events[n-1]
		}
		add("soft", []byte(it.Soft.Addr), js(c), last, c.Window)
	case it.StormSet != nil:
		u := it.StormSet
		last := int64(0)
		if n := len(u.Set.Times); n > 0 {
			last = u.Set.Times[n-1]
		}
		add("storm_sets", string(u.Counter.Key.Kind), ix(u.Counter.Key.Value), ix(u.Counter.Status), js(&u.Set), last)
	case it.Storm != nil:
		add("storm_flags", []byte(it.Storm.Domain), js(it.Storm))
	case it.Hold != nil:
		add("holds", []byte(it.Hold.Domain), []byte(it.Hold.Address), js(it.Hold))
	case it.Domain != nil:
		c := *it.Domain
		c.Storm, c.LastMX, c.Recovered = nil, nil, nil
		add("domains", []byte(c.Domain), js(&c), max(c.LastSeen.UnixNano(), 0))
		for status := range c.Counts {
			add("dom_status", ix(status), []byte(c.Domain))
		}
	case it.MX != nil:
		add("mx_health", []byte(it.MX.Domain), js(&mxHealth{Last: it.MX.Last, Recovered: it.MX.Recovered}))
	case it.Day != nil:
		for k, n := range it.Day.Counts {
			add("daily", it.Day.Day, k, int64(n))
		}
	case it.Target != nil:
		add("outbox_targets", it.Target.Name, js(it.Target))
	case it.Event != nil:
		ev := it.Event
		if ev.Seq == 0 || ev.Seq > 1<<62 {
			return nil, 0, fmt.Errorf("event seq %d out of range", ev.Seq)
		}
		seq = int64(ev.Seq)
		if it.Dead {
			add("outbox_dead", seq, js(ev))
		} else {
			add("outbox", seq, ev.Target, nanos(ev.NextTry), js(ev))
		}
	case it.Meta != nil:
	default:
		return nil, 0, errors.New("empty item")
	}
	return id, seq, err
}

// write sends the rows of t: by COPY, or with replace as INSERT ... ON
// CONFLICT replacing stored rows with the same key.
func (t *table) write(ctx context.Context, tx pgx.Tx, replace bool) error {
	if len(t.rows) == 0 {
		return nil
	}
	if !replace {
		_, err := tx.CopyFrom(ctx, pgx.Identifier{t.name}, t.cols, pgx.CopyFromRows(t.rows))
		return err
	}
	ph := make([]string, len(t.cols))
	for i := range ph {
		ph[i] = "$" + strconv.Itoa(i+1)
	}
	sql := "INSERT INTO " + t.name + " (" + strings.Join(t.cols, ", ") + ") VALUES (" + strings.Join(ph, ", ") +
		") ON CONFLICT (" + strings.Join(t.cols[:t.keys], ", ") + ") DO "
	if t.keys == len(t.cols) {
		sql += "NOTHING"
	} else {
		set := make([]string, 0, len(t.cols)-t.keys)
		for _, c := range t.cols[t.keys:] {
			set = append(set, c+" = excluded."+c)
		}
		sql += "UPDATE SET " + strings.Join(set, ", ")
	}
	var b pgx.Batch
	for _, r := range t.rows {
		b.Queue(sql, r...)
	}
	return tx.SendBatch(ctx, &b).Close()
}

// FinishImport updates the planner's statistics of every table (ANALYZE),
// so that the queries after a bulk copy get the plans of a database that
// filled up slowly, without waiting for autovacuum.
func (db *DB) FinishImport(ctx context.Context) error {
	var names []string
	for _, t := range importTables() {
		names = append(names, t.name)
	}
	_, err := db.pool.Exec(ctx, "ANALYZE "+strings.Join(names, ", "))
	return wrapErr("analyzing the copied tables", err)
}
