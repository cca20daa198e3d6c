package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/bouncer/bouncer/parse"
	bolt "go.etcd.io/bbolt"
)

// Policy actions of a Decision.
const (
	ActionSuppress = "suppress" // put the address on the suppression list at once
	ActionCount    = "count"    // suppress after Threshold events within Window
	ActionRecord   = "record"   // keep the record, never suppress
)

// Decision is the policy verdict for one record.
type Decision struct {
	Action    string        // ActionSuppress, ActionCount or ActionRecord
	Threshold int           // for ActionCount: events within Window that suppress (≥ 1)
	Window    time.Duration // for ActionCount: age after which an event no longer counts; 0 = never
	Rule      string        // optional name of the policy rule that gave this decision
}

// DefaultDecide suppresses an address at once on a hard bounce with status
// 5.4.3 (RFC 3463: routing server failure, permanent) and records
// everything else.
func DefaultDecide(r *Record) Decision {
	if r.Kind == parse.KindBounce && r.Class == parse.ClassHard && r.Status == "5.4.3" {
		return Decision{Action: ActionSuppress, Rule: "5.4.3"}
	}
	return Decision{Action: ActionRecord}
}

// Suppression is one entry of the suppression list.
type Suppression struct {
	Address  string    `json:"address"`
	Reason   string    `json:"reason"`
	Status   string    `json:"status,omitempty"`
	RecordID string    `json:"record_id,omitempty"` // the record that caused it, if any
	Created  time.Time `json:"created"`
	Source   string    `json:"source"` // "policy" for automatic entries, else what the caller set
}

// maxAddrLen is the longest address put on the suppression list or in a
// soft counter (RFC 5321 §4.5.3.1.3 caps a path at 256 octets; we allow a
// little more for UTF-8 addresses). Longer addresses are recorded but never
// used as keys.
const maxAddrLen = 320

// maxSoftEvents caps the events kept per soft counter.
const maxSoftEvents = 1000

// NormalizeAddr trims spaces and angle brackets from an address and lower-
// cases its domain. The local part keeps its case (RFC 5321 §2.4). Invalid
// UTF-8 is replaced, as JSON encoding would do, so that index keys and
// stored records agree.
func NormalizeAddr(addr string) string {
	addr = strings.ToValidUTF8(strings.TrimSpace(addr), "\uFFFD")
	addr = strings.TrimSuffix(strings.TrimPrefix(addr, "<"), ">")
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return addr
	}
	return addr[:i+1] + strings.ToLower(addr[i+1:])
}

// addrDomain returns the lower-case domain of a normalized address.
func addrDomain(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(addr[i+1:])
}

// softCounter holds the times of recent soft events for one address.
type softCounter struct {
	Events []int64 `json:"t"`           // Unix nanoseconds, ascending
	Window int64   `json:"w,omitempty"` // decay window in nanoseconds (0: never), for PruneSoft
}

// applyPolicy runs the verdict for rec in tx: it sets rec.Verdict and
// rec.Suppressed and writes the suppression or soft counter.
func (db *DB) applyPolicy(tx *bolt.Tx, rec *Record, now time.Time) error {
	d := db.decide(rec)
	rec.Verdict = d.Action
	rec.Rule = d.Rule
	if len(rec.Addr) > maxAddrLen || !strings.Contains(rec.Addr, "@") {
		return nil
	}
	switch d.Action {
	case ActionSuppress:
		reason := describe(rec)
		return db.suppressOnce(tx, rec, reason, now)
	case ActionCount:
		n, err := countSoft(tx, rec.Addr, rec.Received, d)
		if err != nil {
			return err
		}
		threshold := max(d.Threshold, 1)
		if n < threshold {
			return nil
		}
		reason := fmt.Sprintf("%d events within %s, last: %s", n, d.Window, describe(rec))
		return db.suppressOnce(tx, rec, reason, now)
	}
	return nil
}

// describe is the reason text of a suppression caused by rec.
func describe(rec *Record) string {
	s := fmt.Sprintf("%s %s %s", rec.Kind, rec.Class, rec.Status)
	if rec.Reason != "" {
		s += " (" + string(rec.Reason) + ")"
	}
	if rec.Rule != "" {
		s += " rule " + rec.Rule
	}
	return strings.Join(strings.Fields(s), " ")
}

// suppressOnce puts rec.Addr on the list unless it is already there; the
// first entry is kept.
func (db *DB) suppressOnce(tx *bolt.Tx, rec *Record, reason string, now time.Time) error {
	b := tx.Bucket(bucketSuppress)
	if b.Get([]byte(rec.Addr)) != nil {
		return nil
	}
	s := Suppression{
		Address:  rec.Addr,
		Reason:   reason,
		Status:   rec.Status,
		RecordID: rec.ID,
		Created:  now,
		Source:   "policy",
	}
	if err := putSuppression(tx, &s); err != nil {
		return err
	}
	rec.Suppressed = true
	return nil
}

// putSuppression writes s and its domain index entry.
func putSuppression(tx *bolt.Tx, s *Suppression) error {
	v, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encoding suppression: %w", err)
	}
	if err := tx.Bucket(bucketSuppress).Put([]byte(s.Address), v); err != nil {
		return fmt.Errorf("writing suppression: %w", err)
	}
	k := lp(nil, addrDomain(s.Address))
	k = append(k, s.Address...)
	if err := tx.Bucket(bucketSupDomain).Put(k, nil); err != nil {
		return fmt.Errorf("writing suppression index: %w", err)
	}
	return nil
}

// countSoft adds an event at t to addr's counter, drops events older than
// d.Window before t, and returns how many remain.
func countSoft(tx *bolt.Tx, addr string, t time.Time, d Decision) (int, error) {
	b := tx.Bucket(bucketSoft)
	var c softCounter
	if v := b.Get([]byte(addr)); v != nil {
		if err := json.Unmarshal(v, &c); err != nil {
			return 0, fmt.Errorf("decoding soft counter of %s: %w", addr, err)
		}
	}
	ts := t.UnixNano()
	c.Window = int64(d.Window)
	i, _ := slices.BinarySearch(c.Events, ts)
	c.Events = slices.Insert(c.Events, i, ts)
	if d.Window > 0 {
		cut := t.Add(-d.Window).UnixNano()
		last := c.Events[len(c.Events)-1]
		if last > ts {
			// An event newer than t is in the counter; decay relative to it.
			cut = time.Unix(0, last).Add(-d.Window).UnixNano()
		}
		j, _ := slices.BinarySearch(c.Events, cut)
		c.Events = c.Events[j:]
	}
	// Only the latest Threshold events matter for the decision.
	keep := min(max(d.Threshold, 1), maxSoftEvents)
	if len(c.Events) > keep {
		c.Events = c.Events[len(c.Events)-keep:]
	}
	v, err := json.Marshal(&c)
	if err != nil {
		return 0, fmt.Errorf("encoding soft counter: %w", err)
	}
	if err := b.Put([]byte(addr), v); err != nil {
		return 0, fmt.Errorf("writing soft counter: %w", err)
	}
	return len(c.Events), nil
}

// Suppressed returns the suppression entry of addr, or ErrNotFound.
func (db *DB) Suppressed(addr string) (*Suppression, error) {
	addr = NormalizeAddr(addr)
	var s *Suppression
	err := db.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSuppress).Get([]byte(addr))
		if v == nil {
			return ErrNotFound
		}
		s = new(Suppression)
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
func (db *DB) AddSuppression(s Suppression) error {
	s.Address = NormalizeAddr(s.Address)
	if s.Address == "" || len(s.Address) > maxAddrLen || !strings.Contains(s.Address, "@") {
		return fmt.Errorf("adding suppression: invalid address %q", truncate(s.Address, 80))
	}
	if s.Created.IsZero() {
		s.Created = db.now()
	}
	if s.Source == "" {
		s.Source = "manual"
	}
	return db.update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketSuppress).Get([]byte(s.Address)) != nil {
			return fmt.Errorf("adding suppression of %s: %w", s.Address, ErrExists)
		}
		return putSuppression(tx, &s)
	})
}

// RemoveSuppression takes addr off the list and resets its soft counter,
// so that it is not suppressed again by past events. It returns
// ErrNotFound if addr was not suppressed.
func (db *DB) RemoveSuppression(addr string) error {
	addr = NormalizeAddr(addr)
	return db.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSuppress)
		if b.Get([]byte(addr)) == nil {
			return ErrNotFound
		}
		if err := b.Delete([]byte(addr)); err != nil {
			return fmt.Errorf("removing suppression: %w", err)
		}
		k := append(lp(nil, addrDomain(addr)), addr...)
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
func (db *DB) Suppressions(domain string, fn func(Suppression) error) error {
	var prefix []byte
	name := bucketSuppress
	if domain != "" {
		prefix = lp(nil, strings.ToLower(domain))
		name = bucketSupDomain
	}
	after := bytes.Clone(prefix)
	first := true
	for {
		var chunk []Suppression
		visited := 0
		err := db.view(func(tx *bolt.Tx) error {
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
				var s Suppression
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
