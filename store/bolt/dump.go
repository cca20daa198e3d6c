package bolt

// Export, Import and Counts move a store's content to and from another
// engine (bouncer copy); store/dump.go describes the items.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/bouncer/bouncer/store"

	bbolt "go.etcd.io/bbolt"
)

// Export calls fn with every stored item, kind by kind in the order of
// store.DumpKinds, each kind in key order (records and raw messages
// oldest first, events by seq), all from one read transaction. Items are
// decoded one at a time and share nothing with the file, so fn may keep
// them; memory does not grow with the store. An error from fn stops
// the export and is returned.
func (db *DB) Export(ctx context.Context, fn func(*store.Item) error) error {
	return db.view(func(tx *bbolt.Tx) error {
		steps := []struct {
			kind string
			fn   func(*bbolt.Tx, func(*store.Item) error) error
		}{
			{store.DumpRaw, exportRaw},
			{store.DumpRecords, exportRecords},
			{store.DumpSeen, exportSeen},
			{store.DumpSuppressions, jsonExporter(bucketSuppress, func(_ []byte, s *store.Suppression) *store.Item { return &store.Item{Suppression: s} })},
			{store.DumpSoft, jsonExporter(bucketSoft, func(k []byte, c *store.SoftCounter) *store.Item {
				return &store.Item{Soft: &store.SoftUpdate{Addr: string(k), Counter: *c}}
			})},
			{store.DumpStormSets, exportStormSets},
			{store.DumpStorms, jsonExporter(bucketStormFlag, func(_ []byte, s *store.Storm) *store.Item { return &store.Item{Storm: s} })},
			{store.DumpHolds, jsonExporter(bucketHeld, func(_ []byte, h *store.Hold) *store.Item { return &store.Item{Hold: h} })},
			{store.DumpDomains, exportDomains},
			{store.DumpMX, jsonExporter(bucketMXHealth, func(k []byte, h *mxHealth) *store.Item {
				return &store.Item{MX: &store.MXHealth{Domain: string(k), Last: h.Last, Recovered: h.Recovered}}
			})},
			{store.DumpDaily, jsonExporter(bucketDaily, func(k []byte, m *map[string]int) *store.Item {
				return &store.Item{Day: &store.Day{Day: string(k), Counts: *m}}
			})},
			{store.DumpTargets, jsonExporter(bucketOutboxTargets, func(_ []byte, t *store.OutboxTarget) *store.Item { return &store.Item{Target: t} })},
			{store.DumpOutbox, eventExporter(bucketOutbox, false)},
			{store.DumpDead, eventExporter(bucketOutboxDead, true)},
			{store.DumpMeta, exportMeta},
		}
		for _, s := range steps {
			err := s.fn(tx, func(it *store.Item) error {
				if err := ctx.Err(); err != nil {
					return err
				}
				return fn(it)
			})
			if err != nil {
				return fmt.Errorf("exporting %s: %w", s.kind, err)
			}
		}
		return nil
	})
}

// exportRaw gives each raw message, decompressed, whatever its parts.
func exportRaw(tx *bbolt.Tx, fn func(*store.Item) error) error {
	b := tx.Bucket(bucketRaw)
	c := b.Cursor()
	for k, _ := c.First(); k != nil; {
		msg := rawKeyMsg(k)
		if msg == nil {
			return fmt.Errorf("raw key %x: unexpected length %d", k, len(k))
		}
		msg = bytes.Clone(msg)
		v, err := getRaw(b, msg)
		if err != nil {
			return err
		}
		data, err := decompressRaw(v)
		if err != nil {
			return fmt.Errorf("raw message %s: %w", encodeID(msg), err)
		}
		if err := fn(&store.Item{Raw: &store.RawMessage{MsgID: encodeID(msg), Data: data}}); err != nil {
			return err
		}
		k, _ = c.Seek(prefixEnd(msg))
	}
	return nil
}

func exportRecords(tx *bbolt.Tx, fn func(*store.Item) error) error {
	b := tx.Bucket(bucketRecords)
	return b.ForEach(func(k, v []byte) error {
		rec, err := decodeRecord(b, k, v)
		if err != nil {
			return err
		}
		return fn(&store.Item{Record: &rec})
	})
}

func exportSeen(tx *bbolt.Tx, fn func(*store.Item) error) error {
	return tx.Bucket(bucketSeen).ForEach(func(k, v []byte) error {
		if len(v) != keyLen {
			return fmt.Errorf("dedupe key %x: record key of %d bytes", k, len(v))
		}
		return fn(&store.Item{Seen: &store.SeenKey{Key: bytes.Clone(k), ID: encodeID(v), At: keyTime(v)}})
	})
}

// jsonExporter gives each JSON value of bucket name (if it exists) as
// the item item makes of it.
func jsonExporter[T any](name []byte, item func(k []byte, v *T) *store.Item) func(*bbolt.Tx, func(*store.Item) error) error {
	return func(tx *bbolt.Tx, fn func(*store.Item) error) error {
		b := tx.Bucket(name)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			x := new(T)
			if err := json.Unmarshal(v, x); err != nil {
				return fmt.Errorf("decoding %s %q: %w", name, store.Truncate(string(k), 80), err)
			}
			return fn(item(bytes.Clone(k), x))
		})
	}
}

// exportStormSets gives each storm counter, its key decoded from
// stormCountKey (the sweep's bookmark, key 0, is not a counter).
func exportStormSets(tx *bbolt.Tx, fn func(*store.Item) error) error {
	b := tx.Bucket(bucketStormCount)
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error {
		if len(k) > 0 && k[0] < 'a' {
			return nil
		}
		c, ok := parseStormCountKey(k)
		if !ok {
			return fmt.Errorf("storm counter key %x: malformed", k)
		}
		var s store.StormSet
		if err := json.Unmarshal(v, &s); err != nil {
			return fmt.Errorf("decoding storm counter %x: %w", k, err)
		}
		return fn(&store.Item{StormSet: &store.StormSetUpdate{Counter: c, Set: s}})
	})
}

// parseStormCountKey undoes stormCountKey: kind, lp(value), lp(status).
func parseStormCountKey(k []byte) (store.StormCounter, bool) {
	var c store.StormCounter
	if len(k) < 3 {
		return c, false
	}
	c.Key.Kind = k[0]
	n := int(k[1])
	if len(k) < 3+n {
		return c, false
	}
	c.Key.Value = string(k[2 : 2+n])
	m := int(k[2+n])
	if len(k) != 3+n+m {
		return c, false
	}
	c.Status = string(k[3+n:])
	return c, true
}

func exportDomains(tx *bbolt.Tx, fn func(*store.Item) error) error {
	return tx.Bucket(bucketDomains).ForEach(func(k, v []byte) error {
		st, err := decodeDomainStat(k, v)
		if err != nil {
			return err
		}
		return fn(&store.Item{Domain: &st})
	})
}

func eventExporter(name []byte, dead bool) func(*bbolt.Tx, func(*store.Item) error) error {
	return func(tx *bbolt.Tx, fn func(*store.Item) error) error {
		b := tx.Bucket(name)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return fmt.Errorf("%s key %x: not a seq", name, k)
			}
			var ev store.OutboxEvent
			if err := json.Unmarshal(v, &ev); err != nil {
				return fmt.Errorf("decoding %s event %d: %w", name, binary.BigEndian.Uint64(k), err)
			}
			ev.Seq = binary.BigEndian.Uint64(k)
			return fn(&store.Item{Event: &ev, Dead: dead})
		})
	}
}

func exportMeta(tx *bbolt.Tx, fn func(*store.Item) error) error {
	if t := rawPrunedBefore(tx); !t.IsZero() {
		return fn(&store.Item{Meta: &store.Meta{RawPrunedBefore: t}})
	}
	return nil
}

// Counts returns how many items of each kind of store.DumpKinds the
// file holds, counted from the file itself.
func (db *DB) Counts(ctx context.Context) (map[string]int, error) {
	out := map[string]int{}
	err := db.view(func(tx *bbolt.Tx) error {
		keys := func(name []byte) int {
			if b := tx.Bucket(name); b != nil {
				return b.Stats().KeyN
			}
			return 0
		}
		for kind, name := range map[string][]byte{
			store.DumpRecords: bucketRecords, store.DumpSeen: bucketSeen, store.DumpSuppressions: bucketSuppress,
			store.DumpSoft: bucketSoft, store.DumpStorms: bucketStormFlag, store.DumpHolds: bucketHeld,
			store.DumpDomains: bucketDomains, store.DumpMX: bucketMXHealth, store.DumpDaily: bucketDaily,
			store.DumpTargets: bucketOutboxTargets, store.DumpOutbox: bucketOutbox, store.DumpDead: bucketOutboxDead,
		} {
			out[kind] = keys(name)
		}
		// Raw messages may be stored in parts, and the storm counters
		// hold the sweep's bookmark: count those by key.
		c := tx.Bucket(bucketRaw).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Seek(prefixEnd(k[:min(len(k), keyLen)])) {
			if err := ctx.Err(); err != nil {
				return err
			}
			out[store.DumpRaw]++
		}
		if b := tx.Bucket(bucketStormCount); b != nil {
			b.ForEach(func(k, _ []byte) error {
				if len(k) > 0 && k[0] >= 'a' {
					out[store.DumpStormSets]++
				}
				return nil
			})
		}
		if !rawPrunedBefore(tx).IsZero() {
			out[store.DumpMeta] = 1
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("counting: %w", err)
	}
	return out, nil
}

// Import writes items exported from another store (Export of this or
// another engine) in one transaction, as they were: records keep their
// IDs, events their seqs; the indexes are written with them (domains by
// status from the aggregates' statuses). It is meant for a file that
// nothing saves to meanwhile; a value stored under the same key is
// replaced, with replace or not (it is there for the engines whose bulk
// path cannot replace). The key generator and the outbox sequence
// continue after what was imported.
func (db *DB) Import(ctx context.Context, items []store.Item, replace bool) error {
	if db.opts.ReadOnly {
		return store.ErrReadOnly
	}
	// Compress outside the transaction, as Save does.
	raws := make([][]byte, len(items))
	for i := range items {
		if r := items[i].Raw; r != nil {
			var err error
			if raws[i], err = db.storedRaw(ctx, r.Data); err != nil {
				return fmt.Errorf("importing raw message %s: %w", r.MsgID, err)
			}
		}
	}
	err := db.update(func(tx *bbolt.Tx) error {
		im := &importer{w: newTxWriter(db, tx)}
		for i := range items {
			if err := im.put(&items[i], raws[i]); err != nil {
				return fmt.Errorf("importing %s: %w", items[i].Kind(), err)
			}
		}
		if err := im.w.flushDomains(); err != nil {
			return err
		}
		if err := im.setSequence(); err != nil {
			return err
		}
		return db.idgen.init(tx)
	})
	if err != nil {
		return fmt.Errorf("importing: %w", err)
	}
	return nil
}

// storedRaw is raw as the writer stores it: codec byte and compressed.
func (db *DB) storedRaw(ctx context.Context, raw []byte) ([]byte, error) {
	if len(raw) <= rawS2Max {
		return compressSmall(raw), nil
	}
	return db.compressRaw(ctx, raw)
}

// importer writes imported items to one transaction.
type importer struct {
	w *txWriter
	// The first record of the message being imported and its message:
	// the message's later records name it as their base.
	baseID, baseMsg string
	maxSeq          uint64
}

func (im *importer) put(it *store.Item, raw []byte) error {
	w := im.w
	tx := w.tx
	switch {
	case it.Raw != nil:
		k, err := decodeID(it.Raw.MsgID)
		if err != nil {
			return err
		}
		return putRaw(w.raw, k, raw, w.db.rawPart)
	case it.Record != nil:
		return im.putRecord(it.Record)
	case it.Seen != nil:
		k, err := decodeID(it.Seen.ID)
		if err != nil {
			return err
		}
		return w.seenB.Put(it.Seen.Key, k)
	case it.Suppression != nil:
		return putSuppression(tx, it.Suppression)
	case it.Soft != nil:
		return putJSON(tx.Bucket(bucketSoft), []byte(it.Soft.Addr), &it.Soft.Counter, "soft counter")
	case it.StormSet != nil:
		return putIn(tx, bucketStormCount, stormCountKey(it.StormSet.Counter), &it.StormSet.Set)
	case it.Storm != nil:
		return putIn(tx, bucketStormFlag, []byte(it.Storm.Domain), it.Storm)
	case it.Hold != nil:
		return putIn(tx, bucketHeld, heldKey(it.Hold.Domain, it.Hold.Address), it.Hold)
	case it.Domain != nil:
		return im.putDomain(it.Domain)
	case it.MX != nil:
		return putIn(tx, bucketMXHealth, []byte(it.MX.Domain), &mxHealth{Last: it.MX.Last, Recovered: it.MX.Recovered})
	case it.Day != nil:
		return putIn(tx, bucketDaily, []byte(it.Day.Day), it.Day.Counts)
	case it.Target != nil:
		for _, name := range [][]byte{bucketOutbox, bucketOutboxDead} { // as SetOutboxTargets
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return putIn(tx, bucketOutboxTargets, []byte(it.Target.Name), it.Target)
	case it.Event != nil:
		name := bucketOutbox
		if it.Dead {
			name = bucketOutboxDead
		}
		b, err := tx.CreateBucketIfNotExists(name)
		if err != nil {
			return err
		}
		im.maxSeq = max(im.maxSeq, it.Event.Seq)
		return putEvent(b, it.Event)
	case it.Meta != nil:
		return raisePrunedMark(tx, it.Meta.RawPrunedBefore)
	}
	return errors.New("empty item")
}

// putRecord writes rec under its ID with its index entries, naming the
// first record of its message as base when that was imported just before.
func (im *importer) putRecord(rec *store.Record) error {
	k, err := decodeID(rec.ID)
	if err != nil {
		return err
	}
	base := ""
	if rec.MsgID == im.baseMsg {
		base = im.baseID
	} else {
		im.baseID, im.baseMsg = rec.ID, rec.MsgID
	}
	v, err := encodeRecord(rec, base, &im.w.recJSON)
	if err != nil {
		return err
	}
	if err := im.w.records.Put(k, v); err != nil {
		return fmt.Errorf("writing record: %w", err)
	}
	return im.w.putIndexes(k, rec)
}

// putDomain writes an aggregate (at commit, with its dom_time key) and
// its domain-by-status entries.
func (im *importer) putDomain(st *store.DomainStat) error {
	w := im.w
	if _, err := w.DomainStat(st.Domain); err != nil { // sets lastSeen for flushDomains
		return err
	}
	c := st.Clone()
	c.Storm, c.LastMX, c.Recovered = nil, nil, nil
	w.domains[st.Domain] = c
	for status := range st.Counts {
		if err := w.domStatus.Put(append(lp(nil, status), st.Domain...), nil); err != nil {
			return fmt.Errorf("writing domain status index: %w", err)
		}
	}
	return nil
}

// setSequence makes the outbox number new events after the imported ones.
func (im *importer) setSequence() error {
	if im.maxSeq == 0 {
		return nil
	}
	b, err := im.w.tx.CreateBucketIfNotExists(bucketOutbox)
	if err != nil {
		return err
	}
	if b.Sequence() < im.maxSeq {
		return b.SetSequence(im.maxSeq)
	}
	return nil
}

// putIn writes v as JSON under k in bucket name, creating it.
func putIn(tx *bbolt.Tx, name, k []byte, v any) error {
	b, err := tx.CreateBucketIfNotExists(name)
	if err != nil {
		return fmt.Errorf("creating %s bucket: %w", name, err)
	}
	return putJSON(b, k, v, string(name))
}
