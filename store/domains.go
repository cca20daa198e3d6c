package store

// Per-domain aggregates: listing them newest first through the dom_time
// index, and keeping that index in step with the domains bucket.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

var bucketDomTime = []byte("dom_time")

// DefaultDomainLimit is the number of domains `bouncer domains` lists
// unless told otherwise.
const DefaultDomainLimit = 100

// DomainFilter selects domain aggregates for RecentDomains.
type DomainFilter struct {
	// Status keeps only domains with records of this enhanced status code.
	Status string
	// Limit is the most domains returned; 0 returns all of them.
	Limit int
}

// RecentDomains returns the aggregates of the domains matching f, the
// most recently bounced (DomainStat.LastSeen) first, up to f.Limit. It
// walks the dom_time index backwards and decodes only the aggregates it
// returns, so a small limit costs the same on any number of domains.
// Domains(status) lists all domains in domain order.
func (db *DB) RecentDomains(f DomainFilter) ([]DomainStat, error) {
	if f.Limit < 0 {
		return nil, fmt.Errorf("listing domains: negative limit %d", f.Limit)
	}
	var out []DomainStat
	err := db.bolt.View(func(tx *bolt.Tx) error {
		doms, byStatus := tx.Bucket(bucketDomains), tx.Bucket(bucketDomStatus)
		var prefix []byte
		if f.Status != "" {
			prefix = lp(nil, f.Status)
		}
		c := tx.Bucket(bucketDomTime).Cursor()
		for k, _ := c.Last(); k != nil; k, _ = c.Prev() {
			if f.Limit > 0 && len(out) >= f.Limit {
				break
			}
			if len(k) <= 8 {
				continue // Check reports it
			}
			dom := k[8:]
			if prefix != nil && byStatus.Get(append(prefix, dom...)) == nil {
				continue
			}
			v := doms.Get(dom)
			if v == nil {
				continue
			}
			st, err := decodeDomainStat(dom, v)
			if err != nil {
				return err
			}
			addHealth(tx, &st)
			out = append(out, st)
		}
		return nil
	})
	return out, err
}

// decodeDomainStat decodes the aggregate of dom.
func decodeDomainStat(dom, v []byte) (DomainStat, error) {
	var st DomainStat
	if err := json.Unmarshal(v, &st); err != nil {
		return DomainStat{}, fmt.Errorf("decoding domain aggregate of %s: %w", dom, err)
	}
	return st, nil
}

// domTimeKey is the dom_time key of a domain last seen at t: t in
// big-endian Unix nanoseconds (0 before 1970), then the domain.
func domTimeKey(t time.Time, dom string) []byte {
	k := make([]byte, 8, 8+len(dom))
	binary.BigEndian.PutUint64(k, uint64(max(t.UnixNano(), 0)))
	return append(k, dom...)
}

// moveDomTime replaces the dom_time key of dom, last seen at old (zero
// for a new domain), by the one for now.
func moveDomTime(b *bolt.Bucket, dom string, old, now time.Time) error {
	if !old.IsZero() {
		if old.Equal(now) {
			return nil
		}
		if err := b.Delete(domTimeKey(old, dom)); err != nil {
			return fmt.Errorf("moving domain time index: %w", err)
		}
	}
	if err := b.Put(domTimeKey(now, dom), nil); err != nil {
		return fmt.Errorf("writing domain time index: %w", err)
	}
	return nil
}

// migrateDomTime upgrades a schema 3 file to 4: it fills the dom_time
// index from the domain aggregates.
func migrateDomTime(tx *bolt.Tx) error {
	b, err := tx.CreateBucketIfNotExists(bucketDomTime)
	if err != nil {
		return fmt.Errorf("creating bucket %s: %w", bucketDomTime, err)
	}
	return tx.Bucket(bucketDomains).ForEach(func(k, v []byte) error {
		st, err := decodeDomainStat(k, v)
		if err != nil {
			return err
		}
		return b.Put(domTimeKey(st.LastSeen, string(k)), nil)
	})
}

// checkDomTime checks that every domain aggregate has exactly the
// dom_time key of its LastSeen, and every dom_time key an aggregate.
func checkDomTime(tx *bolt.Tx, add func(error) bool) bool {
	doms, times := tx.Bucket(bucketDomains), tx.Bucket(bucketDomTime)
	n := 0
	c := times.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		n++
		var err error
		if len(k) <= 8 {
			err = errors.New("key too short")
		} else if v := doms.Get(k[8:]); v == nil {
			err = errors.New("no domain aggregate")
		} else if st, derr := decodeDomainStat(k[8:], v); derr != nil {
			err = derr
		} else if !bytes.Equal(k, domTimeKey(st.LastSeen, string(k[8:]))) {
			err = fmt.Errorf("time differs from last seen %s", st.LastSeen.Format(time.RFC3339Nano))
		}
		if err != nil && !add(fmt.Errorf("%s %x: %w", bucketDomTime, truncate(string(k), 80), err)) {
			return false
		}
	}
	if m := doms.Stats().KeyN; m != n {
		return add(fmt.Errorf("%s: %d keys for %d domain aggregates", bucketDomTime, n, m))
	}
	return true
}
