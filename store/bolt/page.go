package bolt

import (
	"bytes"

	"github.com/bouncer/bouncer/store"

	bbolt "go.etcd.io/bbolt"
)

// Page returns up to f.Limit records matching f (DefaultLimit if 0, at
// most MaxLimit), newest first, that are older than the record with id
// before ("" starts at the newest). next is the cursor of the following
// page: the id of the last record returned, or "" when there is no more.
// One page is read in one short read transaction.
func (db *DB) Page(f store.Filter, before string) (recs []store.Record, next string, err error) {
	if f.Limit <= 0 {
		f.Limit = store.DefaultLimit
	}
	f.Limit = min(f.Limit, store.MaxLimit)
	f = f.Normalize()
	bucket, prefix := plan(f)
	end := prefixEnd(prefix)
	if before != "" {
		key, err := decodeID(before)
		if err != nil {
			return nil, "", err
		}
		end = append(bytes.Clone(prefix), key...)
	}
	more := false
	err = db.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucket).Cursor()
		records := tx.Bucket(bucketRecords)
		for k := seekBefore(c, end); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Prev() {
			if len(k) < keyLen+len(prefix) {
				continue
			}
			key := k[len(k)-keyLen:]
			if !f.Since.IsZero() && keyTime(key).Before(f.Since) {
				return nil
			}
			v := records.Get(key)
			if v == nil {
				continue
			}
			r, err := decodeRecord(records, key, v)
			if err != nil {
				return err
			}
			if !f.Match(&r) {
				continue
			}
			if len(recs) == f.Limit {
				more = true
				return nil
			}
			recs = append(recs, r)
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	if more {
		next = recs[len(recs)-1].ID
	}
	return recs, next, nil
}
