package bolt

// The rules' view of the open write transaction (store.State), and the
// application of what they decide (store.Changes) to it.

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/bouncer/bouncer/store"
	bbolt "go.etcd.io/bbolt"
)

// Seen implements store.State: the seen bucket maps a dedupe key to the
// key of the first record with it, whose time prefix says when.
func (w *txWriter) Seen(k []byte) (string, time.Time, error) {
	first := w.seenB.Get(k)
	if len(first) != keyLen {
		return "", time.Time{}, nil
	}
	return encodeID(first), keyTime(first), nil
}

// Suppression implements store.State.
func (w *txWriter) Suppression(addr string) (*store.Suppression, error) {
	s, err := readSuppression(w.tx, addr)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	return s, err
}

// SoftCounter implements store.State.
func (w *txWriter) SoftCounter(addr string) (store.SoftCounter, error) {
	var c store.SoftCounter
	if v := w.tx.Bucket(bucketSoft).Get([]byte(addr)); v != nil {
		if err := json.Unmarshal(v, &c); err != nil {
			return c, fmt.Errorf("decoding soft counter of %s: %w", addr, err)
		}
	}
	return c, nil
}

// StormFlag implements store.State.
func (w *txWriter) StormFlag(domain string) (*store.Storm, error) {
	b := w.tx.Bucket(bucketStormFlag)
	if b == nil {
		return nil, nil
	}
	v := b.Get([]byte(domain))
	if v == nil {
		return nil, nil
	}
	var st store.Storm
	if err := json.Unmarshal(v, &st); err != nil {
		return nil, fmt.Errorf("decoding storm flag of %s: %w", domain, err)
	}
	return &st, nil
}

// stormCountKey is the storm_count key of c.
func stormCountKey(c store.StormCounter) []byte {
	return lp(lp([]byte{c.Key.Kind}, c.Key.Value), c.Status)
}

// StormSet implements store.State. A damaged set reads as empty: the
// counter starts over rather than fail every save.
func (w *txWriter) StormSet(c store.StormCounter) (store.StormSet, error) {
	var s store.StormSet
	b := w.tx.Bucket(bucketStormCount)
	if b == nil {
		return s, nil
	}
	if v := b.Get(stormCountKey(c)); v != nil {
		if json.Unmarshal(v, &s) != nil || len(s.Addrs) != len(s.Times) {
			s = store.StormSet{}
		}
	}
	return s, nil
}

// heldKey is the held key of addr in domain.
func heldKey(domain, addr string) []byte {
	return append(lp(nil, domain), addr...)
}

// Held implements store.State.
func (w *txWriter) Held(domain, addr string) (bool, error) {
	b := w.tx.Bucket(bucketHeld)
	return b != nil && b.Get(heldKey(domain, addr)) != nil, nil
}

// DomainStat implements store.State from the aggregates this transaction
// changed, else the domains bucket (flushDomains writes them at commit).
func (w *txWriter) DomainStat(dom string) (*store.DomainStat, error) {
	if st, ok := w.domains[dom]; ok {
		return st, nil
	}
	var st *store.DomainStat
	if v := w.domainsB.Get([]byte(dom)); v != nil {
		d, err := decodeDomainStat([]byte(dom), v)
		if err != nil {
			return nil, err
		}
		st = &d
		w.lastSeen[dom] = d.LastSeen
	} else {
		w.lastSeen[dom] = time.Time{}
	}
	return st, nil
}

// OutboxTargets implements store.State, reading the targets once per
// transaction (SetOutboxTargets commits the writer's first).
func (w *txWriter) OutboxTargets() ([]store.OutboxTarget, error) {
	if w.targetsRead {
		return w.targets, nil
	}
	var out []store.OutboxTarget
	if tb := w.tx.Bucket(bucketOutboxTargets); tb != nil {
		err := tb.ForEach(func(name, v []byte) error {
			var t store.OutboxTarget
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("decoding outbox target %s: %w", name, err)
			}
			out = append(out, t)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	w.targets, w.targetsRead = out, true
	return out, nil
}

// apply writes the changes of one delivery; keys are the keys of its
// records, in order.
func (w *txWriter) apply(ch *store.Changes, keys [][]byte, now time.Time) error {
	if err := w.putRecords(ch.Records, keys); err != nil {
		return err
	}
	for _, s := range ch.Seen {
		k, err := decodeID(s.ID)
		if err != nil {
			return err
		}
		if err := w.seenB.Put(s.Key, k); err != nil {
			return fmt.Errorf("writing dedupe key: %w", err)
		}
	}
	for i := range ch.Suppressions {
		if err := putSuppression(w.tx, &ch.Suppressions[i]); err != nil {
			return err
		}
	}
	for _, u := range ch.Soft {
		if err := putJSON(w.tx.Bucket(bucketSoft), []byte(u.Addr), &u.Counter, "soft counter"); err != nil {
			return err
		}
	}
	if err := w.applyStorm(ch, now); err != nil {
		return err
	}
	for _, u := range ch.Domains {
		dom := u.Stat.Domain
		w.domains[dom] = u.Stat
		for _, status := range u.NewStatuses {
			if err := w.domStatus.Put(append(lp(nil, status), dom...), nil); err != nil {
				return fmt.Errorf("writing domain status index: %w", err)
			}
		}
	}
	if err := w.addDaily(ch.Daily); err != nil {
		return err
	}
	return w.putEvents(ch.Events)
}

// putRecords writes records under keys, with their index entries; the
// second and later records of a message name the first as their base.
func (w *txWriter) putRecords(recs []store.Record, keys [][]byte) error {
	for i := range recs {
		base := ""
		if i > 0 {
			base = recs[0].ID
		}
		v, err := encodeRecord(&recs[i], base, &w.recJSON)
		if err != nil {
			return err
		}
		if err := w.records.Put(keys[i], v); err != nil {
			return fmt.Errorf("writing record: %w", err)
		}
		if err := w.putIndexes(keys[i], &recs[i]); err != nil {
			return err
		}
	}
	return nil
}

// applyStorm writes storm counters, flags and holds, and sweeps a few
// stale counters after counting.
func (w *txWriter) applyStorm(ch *store.Changes, now time.Time) error {
	if len(ch.StormSets) > 0 {
		b, err := w.tx.CreateBucketIfNotExists(bucketStormCount)
		if err != nil {
			return fmt.Errorf("creating storm bucket: %w", err)
		}
		for _, u := range ch.StormSets {
			if err := putJSON(b, stormCountKey(u.Counter), &u.Set, "storm set"); err != nil {
				return err
			}
		}
		if err := w.db.sweepStorm(b, now); err != nil {
			return err
		}
	}
	if len(ch.StormFlags) > 0 {
		b, err := w.tx.CreateBucketIfNotExists(bucketStormFlag)
		if err != nil {
			return fmt.Errorf("creating storm bucket: %w", err)
		}
		for i := range ch.StormFlags {
			if err := putJSON(b, []byte(ch.StormFlags[i].Domain), &ch.StormFlags[i], "storm flag"); err != nil {
				return err
			}
		}
	}
	if len(ch.Holds) > 0 {
		b, err := w.tx.CreateBucketIfNotExists(bucketHeld)
		if err != nil {
			return fmt.Errorf("creating held bucket: %w", err)
		}
		for i := range ch.Holds {
			h := &ch.Holds[i]
			if err := putJSON(b, heldKey(h.Domain, h.Address), h, "hold"); err != nil {
				return err
			}
		}
	}
	return nil
}

// putEvents numbers and writes new outbox events; held ones go to the
// dead-letter list, numbered in the same sequence.
func (w *txWriter) putEvents(evs []store.OutboxEvent) error {
	if len(evs) == 0 {
		return nil
	}
	ob, dead := w.tx.Bucket(bucketOutbox), w.tx.Bucket(bucketOutboxDead)
	if ob == nil || dead == nil {
		return fmt.Errorf("writing outbox event: no outbox bucket")
	}
	for i := range evs {
		seq, err := ob.NextSequence()
		if err != nil {
			return fmt.Errorf("numbering outbox event: %w", err)
		}
		evs[i].Seq = seq
		b := ob
		if evs[i].Held {
			b = dead
		}
		if err := putEvent(b, &evs[i]); err != nil {
			return err
		}
	}
	return nil
}

// putJSON writes v as JSON under k in b.
func putJSON(b *bbolt.Bucket, k []byte, v any, what string) error {
	j, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", what, err)
	}
	if err := b.Put(k, j); err != nil {
		return fmt.Errorf("writing %s: %w", what, err)
	}
	return nil
}

var bucketSeen = []byte("seen")
