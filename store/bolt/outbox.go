package bolt

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/bouncer/bouncer/store"

	bbolt "go.etcd.io/bbolt"
)

// The outbox holds events for push targets (listmonk, webhooks). Buckets,
// created by SetOutboxTargets:
//
//	outbox_targets  target name → OutboxTarget as JSON
//	outbox          seq (8 bytes, big-endian) → OutboxEvent as JSON
//	outbox_dead     seq → OutboxEvent as JSON (gave up after MaxAttempts)
//
// Save writes an event for each target that wants a record in the same
// transaction as the record, so an event is never lost nor sent for a
// record that was not committed. The push worker reads and updates the
// outbox in transactions of its own.
var (
	bucketOutboxTargets = []byte("outbox_targets")
	bucketOutbox        = []byte("outbox")
	bucketOutboxDead    = []byte("outbox_dead")
)

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, seq)
}

func putEvent(b *bbolt.Bucket, ev *store.OutboxEvent) error {
	v, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encoding outbox event: %w", err)
	}
	if err := b.Put(seqKey(ev.Seq), v); err != nil {
		return fmt.Errorf("writing outbox event: %w", err)
	}
	return nil
}

// SetOutboxTargets replaces the routing table of the outbox: from now on
// Save queues events for these targets. Events already queued for a
// target no longer listed stay in the outbox (see OutboxDrop).
func (db *DB) SetOutboxTargets(targets []store.OutboxTarget) error {
	if db.opts.ReadOnly {
		return store.ErrReadOnly
	}
	if err := store.ValidTargets(targets); err != nil {
		return err
	}
	err := db.update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bucketOutbox, bucketOutboxDead} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("creating bucket %s: %w", name, err)
			}
		}
		if tx.Bucket(bucketOutboxTargets) != nil {
			if err := tx.DeleteBucket(bucketOutboxTargets); err != nil {
				return err
			}
		}
		tb, err := tx.CreateBucket(bucketOutboxTargets)
		if err != nil {
			return err
		}
		for _, t := range targets {
			v, err := json.Marshal(t)
			if err != nil {
				return err
			}
			if err := tb.Put([]byte(t.Name), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("setting outbox targets: %w", err)
	}
	return nil
}

// OutboxDue returns up to limit queued events whose NextTry is not after
// now, oldest first, skipping targets in skip. It reads in chunks of short
// read transactions and visits at most maxScan events.
func (db *DB) OutboxDue(now time.Time, limit, maxScan int, skip func(target string) bool) ([]store.OutboxEvent, error) {
	var out []store.OutboxEvent
	var after []byte
	visited := 0
	for visited < maxScan && len(out) < limit {
		n := 0
		err := db.view(func(tx *bbolt.Tx) error {
			b := tx.Bucket(bucketOutbox)
			if b == nil {
				return nil
			}
			c := b.Cursor()
			k, v := c.Seek(after)
			if after != nil && bytes.Equal(k, after) {
				k, v = c.Next()
			}
			for ; k != nil && n < scanChunk && len(out) < limit; k, v = c.Next() {
				n++
				after = append(after[:0], k...)
				var ev store.OutboxEvent
				if err := json.Unmarshal(v, &ev); err != nil {
					return fmt.Errorf("decoding outbox event %x: %w", k, err)
				}
				if ev.NextTry.After(now) || (skip != nil && skip(ev.Target)) {
					continue
				}
				out = append(out, ev)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		visited += n
		if n < scanChunk {
			break
		}
	}
	return out, nil
}

// OutboxUpdate applies the outcomes of delivery attempts in one
// transaction: delivered events are removed, failed ones rescheduled or
// moved to the dead-letter list. It returns how many went dead.
func (db *DB) OutboxUpdate(results []store.OutboxResult) (dead int, err error) {
	if len(results) == 0 {
		return 0, nil
	}
	err = db.update(func(tx *bbolt.Tx) error {
		ob, deadB := tx.Bucket(bucketOutbox), tx.Bucket(bucketOutboxDead)
		if ob == nil || deadB == nil {
			return errors.New("no outbox in this database")
		}
		for _, r := range results {
			k := seqKey(r.Seq)
			v := ob.Get(k)
			if v == nil {
				continue // dropped meanwhile
			}
			if r.Err == nil {
				if err := ob.Delete(k); err != nil {
					return err
				}
				continue
			}
			var ev store.OutboxEvent
			if err := json.Unmarshal(v, &ev); err != nil {
				return fmt.Errorf("decoding outbox event %d: %w", r.Seq, err)
			}
			ev.Attempts++
			ev.LastError = store.Truncate(r.Err.Error(), 500)
			ev.NextTry = r.NextTry
			dst := ob
			if r.Dead {
				if err := ob.Delete(k); err != nil {
					return err
				}
				dst = deadB
				dead++
			}
			if err := putEvent(dst, &ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("updating outbox: %w", err)
	}
	return dead, nil
}

// OutboxEvents calls fn for each queued event (dead: each dead letter),
// oldest first, outside any transaction.
func (db *DB) OutboxEvents(dead bool, fn func(store.OutboxEvent) error) error {
	name := bucketOutbox
	if dead {
		name = bucketOutboxDead
	}
	var after []byte
	for {
		var chunk []store.OutboxEvent
		err := db.view(func(tx *bbolt.Tx) error {
			b := tx.Bucket(name)
			if b == nil {
				return nil
			}
			c := b.Cursor()
			k, v := c.Seek(after)
			if after != nil && bytes.Equal(k, after) {
				k, v = c.Next()
			}
			for ; k != nil && len(chunk) < scanChunk; k, v = c.Next() {
				after = append(after[:0], k...)
				var ev store.OutboxEvent
				if err := json.Unmarshal(v, &ev); err != nil {
					return fmt.Errorf("decoding outbox event %x: %w", k, err)
				}
				chunk = append(chunk, ev)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, ev := range chunk {
			if err := fn(ev); err != nil {
				return err
			}
		}
		if len(chunk) < scanChunk {
			return nil
		}
	}
}

// OutboxStats returns the number of queued events and dead letters.
func (db *DB) OutboxStats() (queued, dead int, err error) {
	err = db.view(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(bucketOutbox); b != nil {
			queued = b.Stats().KeyN
		}
		if b := tx.Bucket(bucketOutboxDead); b != nil {
			dead = b.Stats().KeyN
		}
		return nil
	})
	return queued, dead, err
}

// OutboxRetry moves dead letters back to the outbox, due now, with their
// attempts reset. With no seqs it moves every dead letter. It returns how
// many moved; a seq that is not a dead letter is ErrNotFound.
func (db *DB) OutboxRetry(seqs ...uint64) (int, error) {
	return db.outboxMove(true, seqs)
}

// OutboxDrop deletes dead letters (all with no seqs) and returns how many.
func (db *DB) OutboxDrop(seqs ...uint64) (int, error) {
	return db.outboxMove(false, seqs)
}

func (db *DB) outboxMove(retry bool, seqs []uint64) (int, error) {
	if db.opts.ReadOnly {
		return 0, store.ErrReadOnly
	}
	n := 0
	err := db.update(func(tx *bbolt.Tx) error {
		ob, dead := tx.Bucket(bucketOutbox), tx.Bucket(bucketOutboxDead)
		if ob == nil || dead == nil {
			if len(seqs) > 0 {
				return store.ErrNotFound
			}
			return nil
		}
		var keys [][]byte
		if len(seqs) == 0 {
			dead.ForEach(func(k, _ []byte) error { keys = append(keys, bytes.Clone(k)); return nil })
		}
		for _, s := range seqs {
			keys = append(keys, seqKey(s))
		}
		now := db.now()
		for _, k := range keys {
			v := dead.Get(k)
			if v == nil {
				return fmt.Errorf("dead letter %d: %w", binary.BigEndian.Uint64(k), store.ErrNotFound)
			}
			if retry {
				var ev store.OutboxEvent
				if err := json.Unmarshal(v, &ev); err != nil {
					return fmt.Errorf("decoding dead letter %x: %w", hex.EncodeToString(k), err)
				}
				if ev.Held {
					ev.LastError = "" // the reason it was held, not an error
				}
				ev.Attempts, ev.NextTry, ev.Held = 0, now, false
				if err := putEvent(ob, &ev); err != nil {
					return err
				}
			}
			if err := dead.Delete(k); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("moving dead letters: %w", err)
	}
	return n, nil
}
