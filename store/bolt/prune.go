package bolt

// Retention. Records, indexes and suppressions are kept; raw messages
// older than Options.RawRetention, dedupe keys older than the dedupe
// window and soft counters whose events have all decayed are deleted in
// small transactions, so that Save never waits long for the file.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/bouncer/bouncer/store"

	bbolt "go.etcd.io/bbolt"
)

// keyRawPruned is the meta key holding the Unix-nanosecond time before
// which raw messages have been pruned (decimal ASCII).
var keyRawPruned = []byte("raw_pruned_before")

// pruneChunk is how many keys one prune transaction deletes; pruneScan is
// how many it reads at most while looking for them.
const (
	pruneChunk = 1000
	pruneScan  = 20_000
)

// Prune applies the configured retention at the current time: raw
// messages older than Options.RawRetention (none if 0), dedupe keys older
// than the dedupe window and decayed soft counters. It is meant to run
// periodically while the server takes deliveries.
func (db *DB) Prune(ctx context.Context) (store.PruneStats, error) {
	var st store.PruneStats
	now := db.now()
	var err error
	if db.opts.RawRetention > 0 {
		if st.Raw, err = db.PruneRaw(ctx, now.Add(-db.opts.RawRetention)); err != nil {
			return st, err
		}
	}
	if st.Seen, err = db.PruneSeen(ctx, now.Add(-db.rules.DedupeWindowOrDefault())); err != nil {
		return st, err
	}
	if st.Soft, err = db.PruneSoft(ctx, now); err != nil {
		return st, err
	}
	st.Storms, err = db.ExpireStorms(now)
	return st, err
}

// PruneRaw deletes the raw messages stored before the cutoff, whole
// messages of about 1000 keys (parts) per transaction, and returns how
// many messages it deleted. The records of
// those messages stay; Raw reports ErrRawPruned for them.
func (db *DB) PruneRaw(ctx context.Context, before time.Time) (int, error) {
	if db.opts.ReadOnly {
		return 0, store.ErrReadOnly
	}
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, fmt.Errorf("pruning raw messages: %w", err)
		}
		n, more := 0, false
		err := db.update(func(tx *bbolt.Tx) error {
			b := tx.Bucket(bucketRaw)
			var keys [][]byte
			var last []byte // message key of the last key taken
			n = 0
			c := b.Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				msg := rawKeyMsg(k)
				if msg == nil {
					continue // Check reports it
				}
				if !keyTime(msg).Before(before) {
					break
				}
				// A transaction deletes whole messages, so Raw never
				// sees some of the parts of one.
				if !bytes.Equal(msg, last) {
					if len(keys) >= pruneChunk {
						more = true
						break
					}
					last = msg
					n++
				}
				keys = append(keys, bytes.Clone(k))
			}
			for _, k := range keys {
				if err := b.Delete(k); err != nil {
					return fmt.Errorf("deleting raw message: %w", err)
				}
			}
			mark := before
			if more {
				mark = keyTime(keys[len(keys)-1]).Add(1)
			}
			return raisePrunedMark(tx, mark)
		})
		if err != nil {
			return total, fmt.Errorf("pruning raw messages: %w", err)
		}
		total += n
		if !more {
			return total, nil
		}
	}
}

// raisePrunedMark sets the raw retention mark to t unless it is later
// already.
func raisePrunedMark(tx *bbolt.Tx, t time.Time) error {
	if t.Before(rawPrunedBefore(tx)) {
		return nil
	}
	v := strconv.FormatInt(t.UnixNano(), 10)
	if err := tx.Bucket(bucketMeta).Put(keyRawPruned, []byte(v)); err != nil {
		return fmt.Errorf("writing retention mark: %w", err)
	}
	return nil
}

// rawPrunedBefore returns the time before which raw messages may have been
// deleted by PruneRaw (the zero time if never).
func rawPrunedBefore(tx *bbolt.Tx) time.Time {
	v := tx.Bucket(bucketMeta).Get(keyRawPruned)
	n, err := strconv.ParseInt(string(v), 10, 64)
	if v == nil || err != nil {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// PruneSeen deletes the dedupe keys first seen before the cutoff and
// returns how many it deleted.
func (db *DB) PruneSeen(ctx context.Context, before time.Time) (int, error) {
	return db.pruneScan(ctx, bucketSeen, "dedupe keys", func(_, v []byte) bool {
		return len(v) != keyLen || keyTime(v).Before(before)
	})
}

// PruneSoft deletes the soft counters whose events have all decayed at
// now, and returns how many it deleted. A counter from a rule without a
// window never decays and is kept.
func (db *DB) PruneSoft(ctx context.Context, now time.Time) (int, error) {
	return db.pruneScan(ctx, bucketSoft, "soft counters", func(_, v []byte) bool {
		var c store.SoftCounter
		if json.Unmarshal(v, &c) != nil {
			return false // Check reports it
		}
		return c.Decayed(now)
	})
}

// pruneScan walks bucket name in transactions that read at most pruneScan
// keys and delete at most pruneChunk, deleting the keys stale reports.
func (db *DB) pruneScan(ctx context.Context, name []byte, what string, stale func(k, v []byte) bool) (int, error) {
	if db.opts.ReadOnly {
		return 0, store.ErrReadOnly
	}
	total := 0
	var after []byte
	for {
		if err := ctx.Err(); err != nil {
			return total, fmt.Errorf("pruning %s: %w", what, err)
		}
		done, n := false, 0
		err := db.update(func(tx *bbolt.Tx) error {
			b := tx.Bucket(name)
			c := b.Cursor()
			k, v := c.Seek(after)
			if after != nil && bytes.Equal(k, after) {
				k, v = c.Next()
			}
			var del [][]byte
			for read := 0; k != nil && read < pruneScan && len(del) < pruneChunk; read++ {
				after = append(after[:0], k...)
				if stale(k, v) {
					del = append(del, bytes.Clone(k))
				}
				k, v = c.Next()
			}
			done = k == nil
			for _, k := range del {
				if err := b.Delete(k); err != nil {
					return fmt.Errorf("deleting: %w", err)
				}
			}
			n = len(del)
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("pruning %s: %w", what, err)
		}
		total += n
		if done {
			return total, nil
		}
	}
}
