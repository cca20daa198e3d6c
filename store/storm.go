package store

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
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ActionHeld is the Record.Verdict of a suppression held back by the storm
// guard.
const ActionHeld = "held"

// MaxStormThreshold is the largest StormOptions.Threshold.
const MaxStormThreshold = 10_000

var (
	bucketStormCount = []byte("storm_count")
	bucketStormFlag  = []byte("storm_flag")
	bucketHeld       = []byte("held")
)

// StormOptions configure the storm guard. A zero Threshold switches it
// off.
type StormOptions struct {
	// Threshold is the number of distinct addresses with the same status
	// within Window that may be suppressed; the next one starts a storm.
	Threshold int
	// Window is how far back addresses count (default 1h).
	Window time.Duration
}

// Storm flags a domain whose new suppressions are held.
type Storm struct {
	Domain string `json:"domain"`
	// Key is what crossed the threshold: "domain:D", "remote-mta:M" or
	// "reporting-mta:M".
	Key    string    `json:"key"`
	Status string    `json:"status"`
	Since  time.Time `json:"since"`
	Count  int       `json:"count"` // distinct addresses within the window when it started
	Held   int       `json:"held"`  // suppressions held since
}

// Hold is a suppression held back by the storm guard.
type Hold struct {
	Address  string    `json:"address"`
	Domain   string    `json:"domain"`
	Status   string    `json:"status"`
	Reason   string    `json:"reason"`
	RecordID string    `json:"record_id"`
	Key      string    `json:"key"` // the storm key of the domain's flag
	Created  time.Time `json:"created"`
}

// stormSet is the recent distinct addresses of one storm key. It keeps at
// most Threshold+1 addresses, the most recent, which is all the decision
// needs.
type stormSet struct {
	Addrs []string `json:"a"`
	Times []int64  `json:"t"` // Unix nanoseconds of the last event of each address, ascending
}

// stormWindow is the window of opts, with its default.
func (o StormOptions) window() time.Duration {
	if o.Window <= 0 {
		return time.Hour
	}
	return o.Window
}

// stormGuard runs after the policy for rec: if it has just suppressed
// rec.Addr and rec's domain is in a storm, or this suppression starts one,
// the suppression is turned into a hold.
func (db *DB) stormGuard(tx *bolt.Tx, rec *Record, now time.Time) error {
	opts := db.opts.Storm
	if opts.Threshold <= 0 || !rec.Suppressed || rec.Domain == "" || rec.Status == "" {
		return nil
	}
	flags, err := tx.CreateBucketIfNotExists(bucketStormFlag)
	if err != nil {
		return fmt.Errorf("creating storm bucket: %w", err)
	}
	var st Storm
	if v := flags.Get([]byte(rec.Domain)); v != nil {
		if err := json.Unmarshal(v, &st); err != nil {
			return fmt.Errorf("decoding storm flag of %s: %w", rec.Domain, err)
		}
	} else {
		st, err = db.countStorm(tx, rec, now)
		if err != nil || st.Key == "" {
			return err
		}
	}
	added, err := holdSuppression(tx, rec, st.Key)
	if err != nil {
		return err
	}
	if added {
		st.Held++
	}
	v, err := json.Marshal(&st)
	if err != nil {
		return fmt.Errorf("encoding storm flag: %w", err)
	}
	if err := flags.Put([]byte(rec.Domain), v); err != nil {
		return fmt.Errorf("writing storm flag: %w", err)
	}
	return nil
}

// countStorm adds rec.Addr to the sets of its domain, remote MTA and
// reporting MTA with its status, and returns a new Storm (Key set) if one
// of them now holds more than Threshold addresses.
func (db *DB) countStorm(tx *bolt.Tx, rec *Record, now time.Time) (Storm, error) {
	b, err := tx.CreateBucketIfNotExists(bucketStormCount)
	if err != nil {
		return Storm{}, fmt.Errorf("creating storm bucket: %w", err)
	}
	var found Storm
	for _, k := range stormKeys(rec) {
		n, err := db.addToSet(b, k.bucketKey(rec.Status), rec.Addr, now)
		if err != nil {
			return Storm{}, err
		}
		if n > db.opts.Storm.Threshold && found.Key == "" {
			found = Storm{Domain: rec.Domain, Key: k.String(), Status: rec.Status, Since: now, Count: n}
		}
	}
	return found, db.sweepStorm(b, now)
}

// sweepBatch is how many counter keys one sweep step looks at.
const sweepBatch = 8

// sweepKey holds the key where the next sweep step starts (counter keys
// start with a kind letter, never with 0).
var sweepKey = []byte{0}

// sweepStorm deletes a few counters whose newest address is older than
// the window, continuing where the last call stopped, so that the bucket
// does not keep the counters of every domain and MTA ever seen.
func (db *DB) sweepStorm(b *bolt.Bucket, now time.Time) error {
	cut := now.Add(-db.opts.Storm.window()).UnixNano()
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
		var s stormSet
		if json.Unmarshal(v, &s) != nil || len(s.Times) == 0 || s.Times[len(s.Times)-1] < cut {
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

// stormKey is one thing addresses are counted by.
type stormKey struct {
	kind  byte // 'd' domain, 'r' remote MTA, 'g' reporting MTA
	value string
}

func (k stormKey) String() string {
	switch k.kind {
	case 'r':
		return "remote-mta:" + k.value
	case 'g':
		return "reporting-mta:" + k.value
	}
	return "domain:" + k.value
}

func (k stormKey) bucketKey(status string) []byte {
	return lp(lp([]byte{k.kind}, k.value), status)
}

// parseStormKey undoes stormKey.String.
func parseStormKey(s string) (stormKey, bool) {
	for kind, p := range map[byte]string{'d': "domain:", 'r': "remote-mta:", 'g': "reporting-mta:"} {
		if v, ok := strings.CutPrefix(s, p); ok {
			return stormKey{kind, v}, true
		}
	}
	return stormKey{}, false
}

// stormKeys lists what rec counts towards.
func stormKeys(rec *Record) []stormKey {
	keys := []stormKey{{'d', rec.Domain}}
	if m := normMTA(rec.RemoteMTA); m != "" {
		keys = append(keys, stormKey{'r', m})
	}
	if m := normMTA(rec.ReportingMTA); m != "" {
		keys = append(keys, stormKey{'g', m})
	}
	return keys
}

func normMTA(m string) string {
	m = strings.ToLower(strings.TrimSpace(m))
	if len(m) > maxMTALen {
		m = m[:maxMTALen]
	}
	return m
}

// addToSet records addr at now in the set under key, drops addresses
// older than the window and returns how many remain. An address already in
// the set only has its time refreshed, so a report delivered twice counts
// once.
func (db *DB) addToSet(b *bolt.Bucket, key []byte, addr string, now time.Time) (int, error) {
	var s stormSet
	if v := b.Get(key); v != nil {
		if err := json.Unmarshal(v, &s); err != nil || len(s.Addrs) != len(s.Times) {
			s = stormSet{} // damaged: start over rather than fail every save
		}
	}
	if i := slices.Index(s.Addrs, addr); i >= 0 {
		s.Addrs = slices.Delete(s.Addrs, i, i+1)
		s.Times = slices.Delete(s.Times, i, i+1)
	}
	s.Addrs = append(s.Addrs, addr)
	s.Times = append(s.Times, now.UnixNano())
	cut := now.Add(-db.opts.Storm.window()).UnixNano()
	i := 0
	for i < len(s.Times) && s.Times[i] < cut {
		i++
	}
	keep := min(db.opts.Storm.Threshold, MaxStormThreshold) + 1
	i = max(i, len(s.Addrs)-keep)
	s.Addrs, s.Times = s.Addrs[i:], s.Times[i:]
	v, err := json.Marshal(&s)
	if err != nil {
		return 0, fmt.Errorf("encoding storm set: %w", err)
	}
	if err := b.Put(key, v); err != nil {
		return 0, fmt.Errorf("writing storm set: %w", err)
	}
	return len(s.Addrs), nil
}

// holdSuppression turns the suppression just written for rec into a
// hold, and reports whether the hold is new.
func holdSuppression(tx *bolt.Tx, rec *Record, key string) (bool, error) {
	sup, err := readSuppression(tx, rec.Addr)
	if err != nil {
		return false, err
	}
	if err := deleteSuppression(tx, rec.Addr); err != nil {
		return false, err
	}
	held, err := tx.CreateBucketIfNotExists(bucketHeld)
	if err != nil {
		return false, fmt.Errorf("creating held bucket: %w", err)
	}
	rec.Suppressed = false
	rec.Verdict = ActionHeld
	hk := append(lp(nil, rec.Domain), rec.Addr...)
	if held.Get(hk) != nil {
		return false, nil // held already; the first hold is kept
	}
	h := Hold{
		Address: rec.Addr, Domain: rec.Domain, Status: rec.Status, Reason: sup.Reason,
		RecordID: rec.ID, Key: key, Created: sup.Created,
	}
	v, err := json.Marshal(&h)
	if err != nil {
		return false, fmt.Errorf("encoding hold: %w", err)
	}
	if err := held.Put(hk, v); err != nil {
		return false, fmt.Errorf("writing hold: %w", err)
	}
	return true, nil
}

// readSuppression reads the entry of addr in tx.
func readSuppression(tx *bolt.Tx, addr string) (*Suppression, error) {
	v := tx.Bucket(bucketSuppress).Get([]byte(addr))
	if v == nil {
		return nil, ErrNotFound
	}
	var s Suppression
	if err := json.Unmarshal(v, &s); err != nil {
		return nil, fmt.Errorf("decoding suppression of %s: %w", addr, err)
	}
	return &s, nil
}

// deleteSuppression removes the entry of addr and its index entry.
func deleteSuppression(tx *bolt.Tx, addr string) error {
	if err := tx.Bucket(bucketSuppress).Delete([]byte(addr)); err != nil {
		return fmt.Errorf("removing suppression: %w", err)
	}
	k := append(lp(nil, addrDomain(addr)), addr...)
	if err := tx.Bucket(bucketSupDomain).Delete(k); err != nil {
		return fmt.Errorf("removing suppression index: %w", err)
	}
	return nil
}

// Storms returns the flagged domains, in domain order.
func (db *DB) Storms() ([]Storm, error) {
	var out []Storm
	err := db.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketStormFlag)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var st Storm
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
func stormOf(tx *bolt.Tx, domain string) *Storm {
	b := tx.Bucket(bucketStormFlag)
	if b == nil {
		return nil
	}
	v := b.Get([]byte(domain))
	if v == nil {
		return nil
	}
	var st Storm
	if json.Unmarshal(v, &st) != nil {
		return nil
	}
	return &st
}

// maxHoldsListed caps what Holds returns.
const maxHoldsListed = 100_000

// Holds returns the held suppressions of domain (all domains if ""), in
// domain and address order, at most 100,000.
func (db *DB) Holds(domain string) ([]Hold, error) {
	var out []Hold
	err := db.view(func(tx *bolt.Tx) error {
		return forHolds(tx, domain, func(_ []byte, h Hold) error {
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
func forHolds(tx *bolt.Tx, domain string, fn func(k []byte, h Hold) error) error {
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
		var h Hold
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
		return 0, ErrReadOnly
	}
	domain = strings.ToLower(strings.TrimSpace(domain))
	n := 0
	err := db.update(func(tx *bolt.Tx) error {
		st := stormOf(tx, domain)
		var keys [][]byte
		err := forHolds(tx, domain, func(k []byte, h Hold) error {
			keys = append(keys, k)
			if !release {
				n++
				return nil
			}
			if tx.Bucket(bucketSuppress).Get([]byte(h.Address)) != nil {
				return nil
			}
			n++
			return putSuppression(tx, &Suppression{
				Address: h.Address, Reason: h.Reason, Status: h.Status, RecordID: h.RecordID,
				Created: db.now(), Source: "policy (released)",
			})
		})
		if err != nil {
			return err
		}
		if st == nil && len(keys) == 0 {
			return ErrNotFound
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
func resetStormCounts(tx *bolt.Tx, domain string, st *Storm) error {
	b := tx.Bucket(bucketStormCount)
	if b == nil {
		return nil
	}
	prefixes := [][]byte{lp([]byte{'d'}, domain)}
	if st != nil {
		if k, ok := parseStormKey(st.Key); ok {
			prefixes = append(prefixes, lp([]byte{k.kind}, k.value))
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
