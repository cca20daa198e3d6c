package bolt

// Daily counters (store.Day), one key per UTC day:
//
//	daily  "2006-01-02" → counters as JSON ({"hard": 3, "suppressed": 1})
//
// created on first use. The writer keeps the days a transaction changes
// in memory and writes them at commit, like the domain aggregates.
// Counting started with this bucket: days before it read as empty.

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/bouncer/bouncer/store"
	bbolt "go.etcd.io/bbolt"
)

var bucketDaily = []byte("daily")

// addDaily adds the counts of one delivery to the transaction's days.
func (w *txWriter) addDaily(counts []store.DayCount) error {
	for _, c := range counts {
		day, ok := w.daily[c.Day]
		if !ok {
			var err error
			if day, err = readDay(w.tx, c.Day); err != nil {
				return err
			}
			if w.daily == nil {
				w.daily = map[string]map[string]int{}
			}
			w.daily[c.Day] = day
		}
		day[c.Key] += c.N
	}
	return nil
}

// readDay reads the counters of day (an empty map if none).
func readDay(tx *bbolt.Tx, day string) (map[string]int, error) {
	m := map[string]int{}
	if b := tx.Bucket(bucketDaily); b != nil {
		if v := b.Get([]byte(day)); v != nil {
			if err := json.Unmarshal(v, &m); err != nil {
				return nil, fmt.Errorf("decoding daily counters of %s: %w", day, err)
			}
		}
	}
	return m, nil
}

// flushDaily writes the days changed in this transaction.
func (w *txWriter) flushDaily() error {
	if len(w.daily) == 0 {
		return nil
	}
	b, err := w.tx.CreateBucketIfNotExists(bucketDaily)
	if err != nil {
		return fmt.Errorf("creating daily bucket: %w", err)
	}
	for day, m := range w.daily {
		if err := putJSON(b, []byte(day), m, "daily counters"); err != nil {
			return err
		}
	}
	return nil
}

// countDayTx adds n to key of today's counters in tx (a suppression
// added by hand).
func countDayTx(tx *bbolt.Tx, now time.Time, key string, n int) error {
	day := store.DayOf(now)
	m, err := readDay(tx, day)
	if err != nil {
		return err
	}
	m[key] += n
	b, err := tx.CreateBucketIfNotExists(bucketDaily)
	if err != nil {
		return fmt.Errorf("creating daily bucket: %w", err)
	}
	return putJSON(b, []byte(day), m, "daily counters")
}

// Daily implements store.Store.
func (db *DB) Daily(from, to time.Time) ([]store.Day, error) {
	lo, hi := []byte(store.DayOf(from)), store.DayOf(to)
	var out []store.Day
	err := db.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketDaily)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Seek(lo); k != nil && string(k) <= hi; k, v = c.Next() {
			d := store.Day{Day: string(k)}
			if err := json.Unmarshal(v, &d.Counts); err != nil {
				return fmt.Errorf("decoding daily counters of %s: %w", k, err)
			}
			out = append(out, d)
		}
		return nil
	})
	return out, err
}
