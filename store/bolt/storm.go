package bolt

// Storm guard. When many distinct addresses of one recipient domain, or
// behind one remote or reporting MTA, get the same status within a short
// window, the cause is more likely an outage (the provider's DNS, our own
// IP on a block list) than dead mailboxes. New suppressions of the domain
// are then held back instead of written, the domain is flagged, and the
// operator releases (ReleaseHolds) or drops (DropHolds) them.
//
// Buckets (created on first use):
//
//	storm_count  kind byte, lp(key), lp(status) → stormSet as JSON
//	             (kind 'd' domain, 'r' remote MTA, 'g' reporting MTA)
//	storm_flag   domain → Storm as JSON
//	held         lp(domain) address → Hold as JSON

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bouncer/bouncer/store"

	bbolt "go.etcd.io/bbolt"
)

var (
	bucketStormCount = []byte("storm_count")
	bucketStormFlag  = []byte("storm_flag")
	bucketHeld       = []byte("held")
)

// sweepBatch is how many counter keys one sweep step looks at.
const sweepBatch = 8

// sweepKey holds the key where the next sweep step starts (counter keys
// start with a kind letter, never with 0).
var sweepKey = []byte{0}

// sweepStorm deletes a few counters whose newest address is older than
// the window, continuing where the last call stopped, so that the bucket
// does not keep the counters of every domain and MTA ever seen.
func (db *DB) sweepStorm(b *bbolt.Bucket, now time.Time) error {
	from := bytes.Clone(b.Get(sweepKey))
	c := b.Cursor()
	k, v := c.Seek(from)
	if len(from) > 0 && bytes.Equal(k, from) {
		k, v = c.Next()
	}
	var stale [][]byte
	next := []byte{1}
	for i := 0; i < sweepBatch && k != nil; i++ {
		if bytes.Equal(k, sweepKey) {
			k, v = c.Next()
			continue
		}
		var s store.StormSet
		if json.Unmarshal(v, &s) != nil || s.Stale(now, db.opts.Storm) {
			stale = append(stale, bytes.Clone(k))
		}
		next = bytes.Clone(k)
		k, v = c.Next()
	}
	if k == nil {
		next = []byte{1} // start over
	}
	for _, k := range stale {
		if err := b.Delete(k); err != nil {
			return fmt.Errorf("removing storm counter: %w", err)
		}
	}
	if err := b.Put(sweepKey, next); err != nil {
		return fmt.Errorf("writing storm sweep position: %w", err)
	}
	return nil
}

// readSuppression reads the entry of addr in tx.
func readSuppression(tx *bbolt.Tx, addr string) (*store.Suppression, error) {
	v := tx.Bucket(bucketSuppress).Get([]byte(addr))
	if v == nil {
		return nil, store.ErrNotFound
	}
	var s store.Suppression
	if err := json.Unmarshal(v, &s); err != nil {
		return nil, fmt.Errorf("decoding suppression of %s: %w", addr, err)
	}
	return &s, nil
}

// deleteSuppression removes the entry of addr and its index entry.
func deleteSuppression(tx *bbolt.Tx, addr string) error {
	if err := tx.Bucket(bucketSuppress).Delete([]byte(addr)); err != nil {
		return fmt.Errorf("removing suppression: %w", err)
	}
	k := append(lp(nil, store.AddrDomain(addr)), addr...)
	if err := tx.Bucket(bucketSupDomain).Delete(k); err != nil {
		return fmt.Errorf("removing suppression index: %w", err)
	}
	return nil
}

// Storms returns the flagged domains, in domain order.
func (db *DB) Storms() ([]store.Storm, error) {
	var out []store.Storm
	err := db.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketStormFlag)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var st store.Storm
			if err := json.Unmarshal(v, &st); err != nil {
				return fmt.Errorf("decoding storm flag of %s: %w", k, err)
			}
			out = append(out, st)
			return nil
		})
	})
	return out, err
}

// stormOf returns the flag of domain in tx, or nil.
func stormOf(tx *bbolt.Tx, domain string) *store.Storm {
	b := tx.Bucket(bucketStormFlag)
	if b == nil {
		return nil
	}
	v := b.Get([]byte(domain))
	if v == nil {
		return nil
	}
	var st store.Storm
	if json.Unmarshal(v, &st) != nil {
		return nil
	}
	return &st
}

// maxHoldsListed caps what Holds returns.
const maxHoldsListed = 100_000

// Holds returns the held suppressions of domain (all domains if ""), in
// domain and address order, at most 100,000.
func (db *DB) Holds(domain string) ([]store.Hold, error) {
	var out []store.Hold
	err := db.view(func(tx *bbolt.Tx) error {
		return forHolds(tx, domain, func(_ []byte, h store.Hold) error {
			if len(out) >= maxHoldsListed {
				return errStop
			}
			out = append(out, h)
			return nil
		})
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	return out, err
}

var errStop = errors.New("stop")

// forHolds calls fn for each hold of domain ("" for all) in tx.
func forHolds(tx *bbolt.Tx, domain string, fn func(k []byte, h store.Hold) error) error {
	b := tx.Bucket(bucketHeld)
	if b == nil {
		return nil
	}
	var prefix []byte
	if domain != "" {
		prefix = lp(nil, strings.ToLower(domain))
	}
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var h store.Hold
		if err := json.Unmarshal(v, &h); err != nil {
			return fmt.Errorf("decoding hold %q: %w", k, err)
		}
		if err := fn(bytes.Clone(k), h); err != nil {
			return err
		}
	}
	return nil
}

// ReleaseHolds puts the held suppressions of domain on the suppression
// list (Source "policy (released)"), removes them from the held list and
// clears the domain's storm flag and counters. It returns how many
// addresses were suppressed; held addresses suppressed meanwhile keep
// their entry. A domain without flag or holds gives ErrNotFound.
func (db *DB) ReleaseHolds(domain string) (int, error) {
	return db.endStorm(domain, true)
}

// DropHolds forgets the held suppressions of domain and clears its storm
// flag and counters. It returns how many holds were dropped. A domain
// without flag or holds gives ErrNotFound.
func (db *DB) DropHolds(domain string) (int, error) {
	return db.endStorm(domain, false)
}

func (db *DB) endStorm(domain string, release bool) (int, error) {
	if db.opts.ReadOnly {
		return 0, store.ErrReadOnly
	}
	domain = strings.ToLower(strings.TrimSpace(domain))
	n := 0
	err := db.update(func(tx *bbolt.Tx) error {
		st := stormOf(tx, domain)
		var keys [][]byte
		err := forHolds(tx, domain, func(k []byte, h store.Hold) error {
			keys = append(keys, k)
			if !release {
				n++
				return nil
			}
			if tx.Bucket(bucketSuppress).Get([]byte(h.Address)) != nil {
				return nil
			}
			n++
			return putSuppression(tx, &store.Suppression{
				Address: h.Address, Reason: h.Reason, Status: h.Status, RecordID: h.RecordID,
				Created: db.now(), Source: "policy (released)",
			})
		})
		if err != nil {
			return err
		}
		if st == nil && len(keys) == 0 {
			return store.ErrNotFound
		}
		for _, k := range keys {
			if err := tx.Bucket(bucketHeld).Delete(k); err != nil {
				return fmt.Errorf("removing hold: %w", err)
			}
		}
		if b := tx.Bucket(bucketStormFlag); b != nil {
			if err := b.Delete([]byte(domain)); err != nil {
				return fmt.Errorf("removing storm flag: %w", err)
			}
		}
		return resetStormCounts(tx, domain, st)
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// resetStormCounts forgets the counted addresses of domain, of the key
// that started its storm and of the MTAs seen for the domain, so that the
// next suppression does not start the same storm again at once.
func resetStormCounts(tx *bbolt.Tx, domain string, st *store.Storm) error {
	b := tx.Bucket(bucketStormCount)
	if b == nil {
		return nil
	}
	prefixes := [][]byte{lp([]byte{'d'}, domain)}
	if st != nil {
		if k, ok := store.ParseStormKey(st.Key); ok {
			prefixes = append(prefixes, lp([]byte{k.Kind}, k.Value))
		}
	}
	if v := tx.Bucket(bucketDomains).Get([]byte(domain)); v != nil {
		if ds, err := decodeDomainStat([]byte(domain), v); err == nil {
			for _, m := range ds.RemoteMTAs {
				prefixes = append(prefixes, lp([]byte{'r'}, m))
			}
			for _, m := range ds.ReportingMTAs {
				prefixes = append(prefixes, lp([]byte{'g'}, m))
			}
		}
	}
	for _, p := range prefixes {
		var del [][]byte
		c := b.Cursor()
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
			del = append(del, bytes.Clone(k))
		}
		for _, k := range del {
			if err := b.Delete(k); err != nil {
				return fmt.Errorf("resetting storm counter: %w", err)
			}
		}
	}
	return nil
}

// ExpireStorms ends the storms that have lasted StormOptions.HoldFor at
// now, dropping their holds (the next bounce of each address is judged
// afresh), and returns how many it ended.
func (db *DB) ExpireStorms(now time.Time) (int, error) {
	storms, err := db.Storms()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, st := range storms {
		if !db.opts.Storm.Expired(&st, now) {
			continue
		}
		if _, err := db.endStorm(st.Domain, false); err != nil && !errors.Is(err, store.ErrNotFound) {
			return n, err
		}
		n++
	}
	return n, nil
}
