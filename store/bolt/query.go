package bolt

import (
	"bytes"

	"github.com/bouncer/bouncer/store"

	bbolt "go.etcd.io/bbolt"
)

// scanChunk is how many records a scan reads per read transaction. fn
// runs between transactions, so a long export does not hold a read
// transaction open (which would block the writer when bbolt remaps).
const scanChunk = 256

// Query returns the records matching f, newest first. f.Limit 0 means
// DefaultLimit; larger limits are cut to MaxLimit.
func (db *DB) Query(f store.Filter) ([]store.Record, error) {
	if f.Limit <= 0 {
		f.Limit = store.DefaultLimit
	}
	f.Limit = min(f.Limit, store.MaxLimit)
	var out []store.Record
	err := db.ForEach(f, func(r store.Record) error {
		out = append(out, r)
		return nil
	})
	return out, err
}

// ForEach calls fn for each record matching f, newest first, up to
// f.Limit records (all if 0). fn runs outside any transaction; an error
// from it stops the walk and is returned.
func (db *DB) ForEach(f store.Filter, fn func(store.Record) error) error {
	f = f.Normalize()
	bucket, prefix := plan(f)
	var after []byte // last index key read; nil before the first chunk
	n := 0
	for {
		var chunk []store.Record
		visited := 0
		err := db.view(func(tx *bbolt.Tx) error {
			c := tx.Bucket(bucket).Cursor()
			records := tx.Bucket(bucketRecords)
			var k []byte
			if after == nil {
				k = seekBefore(c, prefixEnd(prefix))
			} else {
				k = seekBefore(c, after)
			}
			for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Prev() {
				if visited >= scanChunk || (f.Limit > 0 && n+len(chunk) >= f.Limit) {
					break
				}
				visited++
				after = append(after[:0], k...)
				if len(k) < keyLen+len(prefix) {
					continue
				}
				key := k[len(k)-keyLen:]
				if !f.Since.IsZero() && keyTime(key).Before(f.Since) {
					visited = -1 // older than Since: the walk is over
					break
				}
				v := records.Get(key)
				if v == nil {
					continue // index without record; Check reports it
				}
				r, err := decodeRecord(records, key, v)
				if err != nil {
					return err
				}
				if f.Match(&r) {
					chunk = append(chunk, r)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, r := range chunk {
			if err := fn(r); err != nil {
				return err
			}
		}
		n += len(chunk)
		if visited < scanChunk || (f.Limit > 0 && n >= f.Limit) {
			return nil
		}
	}
}

// plan picks the index for f: the bucket to walk and the key prefix.
func plan(f store.Filter) ([]byte, []byte) {
	switch {
	case f.Recipient != "":
		return bucketIdxRcpt, lp(nil, f.Recipient)
	case f.Domain != "" && f.Status != "":
		return bucketIdxDStatus, lp(lp(nil, f.Domain), f.Status)
	case f.Domain != "":
		return bucketIdxDomain, lp(nil, f.Domain)
	case f.Status != "":
		return bucketIdxStatus, lp(nil, f.Status)
	}
	return bucketRecords, nil
}

// seekBefore moves c to the largest key below end (the last key if end is
// nil) and returns it.
func seekBefore(c *bbolt.Cursor, end []byte) []byte {
	if end == nil {
		k, _ := c.Last()
		return k
	}
	k, _ := c.Seek(end)
	if k == nil {
		k, _ = c.Last()
		if k != nil && bytes.Compare(k, end) >= 0 {
			k, _ = c.Prev()
		}
		return k
	}
	k, _ = c.Prev()
	return k
}

// Record returns the record with the given ID, or ErrNotFound.
func (db *DB) Record(id string) (*store.Record, error) {
	key, err := decodeID(id)
	if err != nil {
		return nil, err
	}
	var r *store.Record
	err = db.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketRecords).Get(key)
		if v == nil {
			return store.ErrNotFound
		}
		rec, err := decodeRecord(tx.Bucket(bucketRecords), key, v)
		r = &rec
		return err
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// Domains returns the aggregates of the recipient domains, in domain
// order; with status set, only domains with records of that status. It
// reads the per-domain aggregates kept by Save and never scans records.
func (db *DB) Domains(status string) ([]store.DomainStat, error) {
	var out []store.DomainStat
	err := db.view(func(tx *bbolt.Tx) error {
		doms := tx.Bucket(bucketDomains)
		decode := func(dom, v []byte) error {
			st, err := decodeDomainStat(dom, v)
			if err != nil {
				return err
			}
			addHealth(tx, &st)
			out = append(out, st)
			return nil
		}
		if status == "" {
			return doms.ForEach(decode)
		}
		prefix := lp(nil, status)
		c := tx.Bucket(bucketDomStatus).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			dom := k[len(prefix):]
			if v := doms.Get(dom); v != nil {
				if err := decode(dom, v); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return out, err
}
