package bolt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/bouncer/bouncer/store"

	bbolt "go.etcd.io/bbolt"
)

// maxCheckErrors caps the problems Check reports.
const maxCheckErrors = 100

// Check verifies the file (bbolt's page consistency check) and the
// store's own invariants: every record decodes, its message is in the raw
// bucket and its index entries exist; every index entry points to a record
// that belongs there; every suppression has its domain index entry and
// back; the values of every other bucket (soft counters, domain
// aggregates, dedupe keys, storm guard, MX health, outbox) decode and
// agree with their keys; the raw messages' parts are complete and start
// with a known codec. It returns nil or the problems found (at most 100),
// joined.
func (db *DB) Check() error {
	// bbolt's own check runs in a goroutine that panics on a damaged
	// page, beyond any recover: walk the file without bbolt first.
	if err := CheckFile(db.path); err != nil {
		return err
	}
	var errs []error
	add := func(err error) bool {
		errs = append(errs, err)
		return len(errs) < maxCheckErrors
	}
	err := db.view(func(tx *bbolt.Tx) error {
		for err := range tx.Check() { // read to the end so the checker goroutine ends
			if len(errs) < maxCheckErrors {
				errs = append(errs, fmt.Errorf("bbolt: %w", err))
			}
		}
		if len(errs) >= maxCheckErrors {
			return nil
		}
		if !checkRecords(tx, add) {
			return nil
		}
		if !checkIndexes(tx, add) {
			return nil
		}
		if !checkSuppressions(tx, add) {
			return nil
		}
		if !checkOthers(tx, add) {
			return nil
		}
		if !checkRaw(tx, add) {
			return nil
		}
		checkDomTime(tx, add)
		return nil
	})
	if err != nil {
		return err
	}
	if len(errs) > maxCheckErrors {
		errs = errs[:maxCheckErrors]
	}
	return errors.Join(errs...)
}

// checkRecords checks each record against the raw bucket and indexes.
func checkRecords(tx *bbolt.Tx, add func(error) bool) bool {
	raw, lost := tx.Bucket(bucketRaw), tx.Bucket(bucketRawLost)
	pruned := rawPrunedBefore(tx)
	c := tx.Bucket(bucketRecords).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) != keyLen {
			if !add(fmt.Errorf("record key %x: wrong length", k)) {
				return false
			}
			continue
		}
		r, err := decodeRecord(tx.Bucket(bucketRecords), k, v)
		if err != nil {
			if !add(err) {
				return false
			}
			continue
		}
		if mk, err := decodeID(r.MsgID); err != nil || (!hasRaw(raw, mk) && !keyTime(mk).Before(pruned) &&
			(lost == nil || lost.Get(mk) == nil)) {
			if !add(fmt.Errorf("record %s: raw message %q missing", encodeID(k), r.MsgID)) {
				return false
			}
		}
		for name, ik := range indexEntries(k, &r) {
			if tx.Bucket([]byte(name)).Get(ik) == nil {
				if !add(fmt.Errorf("record %s: entry missing in %s", encodeID(k), name)) {
					return false
				}
			}
		}
	}
	return true
}

// hasRaw reports whether the raw bucket holds message msgKey.
func hasRaw(raw *bbolt.Bucket, msgKey []byte) bool {
	k, _ := raw.Cursor().Seek(msgKey)
	return k != nil && bytes.Equal(rawKeyMsg(k), msgKey)
}

// checkIndexes checks that each index entry points to a record that
// has that entry.
func checkIndexes(tx *bbolt.Tx, add func(error) bool) bool {
	records := tx.Bucket(bucketRecords)
	for _, name := range [][]byte{bucketIdxRcpt, bucketIdxDomain, bucketIdxStatus, bucketIdxDStatus} {
		c := tx.Bucket(name).Cursor()
		for ik, _ := c.First(); ik != nil; ik, _ = c.Next() {
			if len(ik) < keyLen+1 {
				if !add(fmt.Errorf("%s: short key %x", name, ik)) {
					return false
				}
				continue
			}
			k := ik[len(ik)-keyLen:]
			v := records.Get(k)
			var r store.Record
			var err error
			if v != nil {
				r, err = decodeRecord(tx.Bucket(bucketRecords), k, v)
			}
			if v == nil || err != nil {
				if !add(fmt.Errorf("%s: entry for missing record %s", name, encodeID(k))) {
					return false
				}
				continue
			}
			if !bytes.Equal(indexEntries(k, &r)[string(name)], ik) {
				if !add(fmt.Errorf("%s: entry %x does not match record %s", name, ik, encodeID(k))) {
					return false
				}
			}
		}
	}
	return true
}

// checkSuppressions checks the suppression list against its domain index.
func checkSuppressions(tx *bbolt.Tx, add func(error) bool) bool {
	sup, idx := tx.Bucket(bucketSuppress), tx.Bucket(bucketSupDomain)
	c := sup.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		var s store.Suppression
		if err := json.Unmarshal(v, &s); err != nil || s.Address != string(k) {
			if !add(fmt.Errorf("suppression %q: bad entry", k)) {
				return false
			}
		}
		if idx.Get(append(lp(nil, store.AddrDomain(string(k))), k...)) == nil {
			if !add(fmt.Errorf("suppression %q: domain index entry missing", k)) {
				return false
			}
		}
	}
	c = idx.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if len(k) < 1 || len(k) < 1+int(k[0]) || sup.Get(k[1+int(k[0]):]) == nil {
			if !add(fmt.Errorf("sup_domain: entry %q without suppression", k)) {
				return false
			}
		}
	}
	return true
}

// checkOthers checks that the values of the remaining buckets decode and
// agree with their keys. Buckets created on first use may be missing.
func checkOthers(tx *bbolt.Tx, add func(error) bool) bool {
	records, domains := tx.Bucket(bucketRecords), tx.Bucket(bucketDomains)
	checks := []struct {
		name  []byte
		check func(k, v []byte) error
	}{
		{bucketSoft, func(_, v []byte) error {
			var c store.SoftCounter
			if err := json.Unmarshal(v, &c); err != nil {
				return err
			}
			if !slices.IsSorted(c.Events) {
				return errors.New("events out of order")
			}
			return nil
		}},
		{bucketDomains, func(k, v []byte) error {
			st, err := decodeDomainStat(k, v)
			if err == nil && st.Domain != string(k) {
				err = fmt.Errorf("value names %q", store.Truncate(st.Domain, 80))
			}
			return err
		}},
		{bucketDomStatus, func(k, _ []byte) error {
			if len(k) < 1+int(k[0]) || domains.Get(k[1+int(k[0]):]) == nil {
				return errors.New("no domain aggregate")
			}
			return nil
		}},
		{bucketSeen, func(k, v []byte) error {
			if len(k) != store.DedupeKeyLen || len(v) != keyLen {
				return errors.New("wrong key or value length")
			}
			if records.Get(v) == nil {
				return fmt.Errorf("record %s missing", encodeID(v))
			}
			return nil
		}},
		{bucketHeld, func(k, v []byte) error {
			var h store.Hold
			if err := json.Unmarshal(v, &h); err != nil {
				return err
			}
			if !bytes.Equal(k, append(lp(nil, h.Domain), h.Address...)) {
				return fmt.Errorf("key does not match hold of %s", h.Address)
			}
			return nil
		}},
		{bucketStormCount, func(k, v []byte) error {
			if bytes.Equal(k, sweepKey) {
				return nil
			}
			var set store.StormSet
			if err := json.Unmarshal(v, &set); err != nil {
				return err
			}
			if len(set.Addrs) != len(set.Times) {
				return errors.New("addresses and times differ in number")
			}
			return nil
		}},
		{bucketStormFlag, func(k, v []byte) error {
			var st store.Storm
			return decodeKeyed(v, &st, k, func() string { return st.Domain })
		}},
		{bucketMXHealth, func(_, v []byte) error {
			var h mxHealth
			return json.Unmarshal(v, &h)
		}},
		{bucketOutboxTargets, func(k, v []byte) error {
			var t store.OutboxTarget
			return decodeKeyed(v, &t, k, func() string { return t.Name })
		}},
		{bucketOutbox, checkEvent},
		{bucketOutboxDead, checkEvent},
		{bucketDaily, func(k, v []byte) error {
			if _, err := time.Parse(store.DayLayout, string(k)); err != nil {
				return fmt.Errorf("key is not a day: %w", err)
			}
			var m map[string]int
			return json.Unmarshal(v, &m)
		}},
	}
	for _, c := range checks {
		b := tx.Bucket(c.name)
		if b == nil {
			continue
		}
		cur := b.Cursor()
		for k, v := cur.First(); k != nil; k, v = cur.Next() {
			if err := c.check(k, v); err != nil {
				if !add(fmt.Errorf("%s %q: %w", c.name, store.Truncate(string(k), 80), err)) {
					return false
				}
			}
		}
	}
	return true
}

// decodeKeyed decodes v into dst and checks that the name it holds is
// the key.
func decodeKeyed(v []byte, dst any, k []byte, name func() string) error {
	if err := json.Unmarshal(v, dst); err != nil {
		return err
	}
	if name() != string(k) {
		return fmt.Errorf("value names %q", store.Truncate(name(), 80))
	}
	return nil
}

// checkEvent checks an outbox event against its sequence key.
func checkEvent(k, v []byte) error {
	var ev store.OutboxEvent
	if err := json.Unmarshal(v, &ev); err != nil {
		return err
	}
	if len(k) != 8 || !bytes.Equal(k, seqKey(ev.Seq)) {
		return fmt.Errorf("key does not match event %d", ev.Seq)
	}
	return nil
}
