package store

import (
	"bytes"
	"strings"
	"time"

	"github.com/bouncer/bouncer/parse"
	bolt "go.etcd.io/bbolt"
)

// Query limits.
const (
	DefaultLimit = 100    // Query's limit when Filter.Limit is 0
	MaxLimit     = 10_000 // Query's largest limit
)

// Filter selects records. Empty fields match everything; set fields must
// all match.
type Filter struct {
	Status    string     // enhanced status code, exact ("5.4.3")
	Domain    string     // recipient domain, case-insensitive
	Recipient string     // recipient address (domain case-insensitive)
	Kind      parse.Kind // record kind
	Since     time.Time  // records stored at or after this time
	Limit     int        // most records returned; see Query and ForEach
}

// scanChunk is how many records a scan reads per read transaction. fn
// runs between transactions, so a long export does not hold a read
// transaction open (which would block the writer when bbolt remaps).
const scanChunk = 256

// Query returns the records matching f, newest first. f.Limit 0 means
// DefaultLimit; larger limits are cut to MaxLimit.
func (db *DB) Query(f Filter) ([]Record, error) {
	if f.Limit <= 0 {
		f.Limit = DefaultLimit
	}
	f.Limit = min(f.Limit, MaxLimit)
	var out []Record
	err := db.ForEach(f, func(r Record) error {
		out = append(out, r)
		return nil
	})
	return out, err
}

// ForEach calls fn for each record matching f, newest first, up to
// f.Limit records (all if 0). fn runs outside any transaction; an error
// from it stops the walk and is returned.
func (db *DB) ForEach(f Filter, fn func(Record) error) error {
	f.Recipient = NormalizeAddr(f.Recipient)
	f.Domain = strings.ToValidUTF8(strings.ToLower(strings.TrimSpace(f.Domain)), "\uFFFD")
	f.Status = strings.ToValidUTF8(f.Status, "\uFFFD")
	bucket, prefix := plan(f)
	var after []byte // last index key read; nil before the first chunk
	n := 0
	for {
		var chunk []Record
		visited := 0
		err := db.view(func(tx *bolt.Tx) error {
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
				if match(&r, &f) {
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
func plan(f Filter) ([]byte, []byte) {
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

// match reports whether r matches every set field of f. Index keys cut
// long values, so the index alone does not decide.
func match(r *Record, f *Filter) bool {
	return (f.Recipient == "" || r.Addr == f.Recipient) &&
		(f.Domain == "" || r.Domain == f.Domain) &&
		(f.Status == "" || r.Status == f.Status) &&
		(f.Kind == "" || r.Kind == f.Kind)
}

// seekBefore moves c to the largest key below end (the last key if end is
// nil) and returns it.
func seekBefore(c *bolt.Cursor, end []byte) []byte {
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
func (db *DB) Record(id string) (*Record, error) {
	key, err := decodeID(id)
	if err != nil {
		return nil, err
	}
	var r *Record
	err = db.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRecords).Get(key)
		if v == nil {
			return ErrNotFound
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
func (db *DB) Domains(status string) ([]DomainStat, error) {
	var out []DomainStat
	err := db.view(func(tx *bolt.Tx) error {
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
