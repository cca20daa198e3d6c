package bolt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/bouncer/bouncer/store"

	bbolt "go.etcd.io/bbolt"
)

// putSuppression writes s and its domain index entry.
func putSuppression(tx *bbolt.Tx, s *store.Suppression) error {
	v, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encoding suppression: %w", err)
	}
	if err := tx.Bucket(bucketSuppress).Put([]byte(s.Address), v); err != nil {
		return fmt.Errorf("writing suppression: %w", err)
	}
	k := lp(nil, store.AddrDomain(s.Address))
	k = append(k, s.Address...)
	if err := tx.Bucket(bucketSupDomain).Put(k, nil); err != nil {
		return fmt.Errorf("writing suppression index: %w", err)
	}
	return nil
}

// Suppressed returns the suppression entry of addr, or ErrNotFound.
func (db *DB) Suppressed(addr string) (*store.Suppression, error) {
	addr = store.NormalizeAddr(addr)
	var s *store.Suppression
	err := db.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketSuppress).Get([]byte(addr))
		if v == nil {
			return store.ErrNotFound
		}
		s = new(store.Suppression)
		if err := json.Unmarshal(v, s); err != nil {
			return fmt.Errorf("decoding suppression of %s: %w", addr, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// AddSuppression puts s.Address on the list (s.Created defaults to now,
// s.Source to "manual"). It fails with ErrExists if the address is already
// suppressed; the existing entry is kept.
func (db *DB) AddSuppression(s store.Suppression) error {
	s, err := store.ValidSuppression(s, db.now())
	if err != nil {
		return err
	}
	return db.update(func(tx *bbolt.Tx) error {
		if tx.Bucket(bucketSuppress).Get([]byte(s.Address)) != nil {
			return fmt.Errorf("adding suppression of %s: %w", s.Address, store.ErrExists)
		}
		if err := putSuppression(tx, &s); err != nil {
			return err
		}
		return countDayTx(tx, s.Created, store.DaySuppressed, 1)
	})
}

// RemoveSuppression takes addr off the list and resets its soft counter,
// so that it is not suppressed again by past events. It returns
// ErrNotFound if addr was not suppressed.
func (db *DB) RemoveSuppression(addr string) error {
	addr = store.NormalizeAddr(addr)
	return db.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketSuppress)
		if b.Get([]byte(addr)) == nil {
			return store.ErrNotFound
		}
		if err := b.Delete([]byte(addr)); err != nil {
			return fmt.Errorf("removing suppression: %w", err)
		}
		k := append(lp(nil, store.AddrDomain(addr)), addr...)
		if err := tx.Bucket(bucketSupDomain).Delete(k); err != nil {
			return fmt.Errorf("removing suppression index: %w", err)
		}
		if err := tx.Bucket(bucketSoft).Delete([]byte(addr)); err != nil {
			return fmt.Errorf("removing soft counter: %w", err)
		}
		return nil
	})
}

// suppressChunk is how many entries Suppressions reads per transaction.
const suppressChunk = 500

// Suppressions calls fn for each suppressed address, in address order, of
// domain (all domains if domain is ""). fn runs outside any transaction,
// so a slow consumer does not hold the database; entries are read in
// chunks. An error from fn stops the walk and is returned.
func (db *DB) Suppressions(domain string, fn func(store.Suppression) error) error {
	var prefix []byte
	name := bucketSuppress
	if domain != "" {
		prefix = lp(nil, strings.ToLower(domain))
		name = bucketSupDomain
	}
	after := bytes.Clone(prefix)
	first := true
	for {
		var chunk []store.Suppression
		visited := 0
		err := db.view(func(tx *bbolt.Tx) error {
			c := tx.Bucket(name).Cursor()
			k, _ := c.Seek(after)
			if !first && bytes.Equal(k, after) {
				k, _ = c.Next()
			}
			sup := tx.Bucket(bucketSuppress)
			for ; k != nil && bytes.HasPrefix(k, prefix) && visited < suppressChunk; k, _ = c.Next() {
				visited++
				after = append(after[:0], k...)
				addr := k[len(prefix):]
				v := sup.Get(addr)
				if v == nil {
					continue // index without entry; Check reports it
				}
				var s store.Suppression
				if err := json.Unmarshal(v, &s); err != nil {
					return fmt.Errorf("decoding suppression of %s: %w", addr, err)
				}
				chunk = append(chunk, s)
			}
			return nil
		})
		if err != nil {
			return err
		}
		first = false
		for _, s := range chunk {
			if err := fn(s); err != nil {
				return err
			}
		}
		if visited < suppressChunk {
			return nil
		}
	}
}
