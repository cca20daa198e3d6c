package bolt

// Route health of recipient domains: the last MX check of each domain
// (run by cmd/bouncer with package mx, which store does not import) and
// whether the domain has recovered, i.e. its route works again after
// bounces that said it did not (RFC 3463 5.4.x: routing failures).
//
// Bucket (created on first use):
//
//	mx_health  domain → mxHealth as JSON

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/bouncer/bouncer/store"

	bbolt "go.etcd.io/bbolt"
)

var bucketMXHealth = []byte("mx_health")

// mxHealth is what the mx_health bucket keeps per domain.
type mxHealth struct {
	Last      store.MXCheck `json:"last"`
	Recovered time.Time     `json:"recovered,omitzero"` // first routed check after a failure
}

// SetMXCheck stores the result of an MX check of domain. A routed check
// marks the domain recovered when it follows a failed check or a 5.4.x
// bounce newer than the last recovery; a failed check clears the mark.
// With lift set, a new recovery also removes the policy suppressions of
// the domain with 5.4.x statuses. It returns whether this check marked
// the domain recovered and how many suppressions it lifted.
func (db *DB) SetMXCheck(domain string, c store.MXCheck, lift bool) (recovered bool, lifted int, err error) {
	if db.opts.ReadOnly {
		return false, 0, store.ErrReadOnly
	}
	domain = strings.ToLower(strings.TrimSpace(domain))
	if err := store.ValidateMXCheck(domain, c); err != nil {
		return false, 0, err
	}
	if c.Checked.IsZero() {
		c.Checked = db.now()
	}
	err = db.update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketMXHealth)
		if err != nil {
			return fmt.Errorf("creating mx_health bucket: %w", err)
		}
		var h mxHealth
		prevFailed := true
		if v := b.Get([]byte(domain)); v != nil {
			if err := json.Unmarshal(v, &h); err != nil {
				return fmt.Errorf("decoding MX health of %s: %w", domain, err)
			}
			prevFailed = !h.Last.Routed
		}
		switch {
		case !c.Routed:
			h.Recovered = time.Time{}
		case prevFailed || h.Recovered.IsZero() || h.Recovered.Before(lastRouteFailure(tx, domain)):
			h.Recovered = c.Checked
			recovered = true
		}
		h.Last = c
		v, err := json.Marshal(&h)
		if err != nil {
			return fmt.Errorf("encoding MX health: %w", err)
		}
		if err := b.Put([]byte(domain), v); err != nil {
			return fmt.Errorf("writing MX health: %w", err)
		}
		if recovered && lift {
			lifted, err = liftRouteSuppressions(tx, domain)
		}
		return err
	})
	if err != nil {
		return false, 0, err
	}
	return recovered, lifted, nil
}

// lastRouteFailure is the time of the newest 5.4.x record of domain, or
// the zero time. It seeks the last key of each 5.4.x status of the domain
// in idx_dstatus, so it reads a few keys, not every record.
func lastRouteFailure(tx *bbolt.Tx, domain string) time.Time {
	var last time.Time
	c := tx.Bucket(bucketIdxDStatus).Cursor()
	dp := lp(nil, domain)
	// Status codes are "5.4." and one to three digits (RFC 3463 §2).
	for n := 5; n <= 7; n++ {
		p := append(append(bytes.Clone(dp), byte(n)), "5.4."...)
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); {
			if len(k) < len(dp)+1+n {
				break
			}
			sp := bytes.Clone(k[:len(dp)+1+n]) // dp lp(status)
			end := prefixEnd(sp)
			if lk := seekBefore(c, end); len(lk) == len(sp)+keyLen {
				if t := keyTime(lk[len(sp):]); t.After(last) {
					last = t
				}
			}
			if end == nil {
				break
			}
			k, _ = c.Seek(end)
		}
	}
	return last
}

// liftRouteSuppressions removes the policy suppressions of domain whose
// status is 5.4.x, and their soft counters.
func liftRouteSuppressions(tx *bbolt.Tx, domain string) (int, error) {
	prefix := lp(nil, domain)
	var lift []string
	c := tx.Bucket(bucketSupDomain).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		addr := string(k[len(prefix):])
		s, err := readSuppression(tx, addr)
		if err != nil {
			continue // index without entry; Check reports it
		}
		if strings.HasPrefix(s.Source, "policy") && store.RouteStatus(s.Status) {
			lift = append(lift, addr)
		}
	}
	for _, addr := range lift {
		if err := deleteSuppression(tx, addr); err != nil {
			return 0, err
		}
		if err := tx.Bucket(bucketSoft).Delete([]byte(addr)); err != nil {
			return 0, fmt.Errorf("removing soft counter: %w", err)
		}
	}
	return len(lift), nil
}

// addHealth fills the storm flag, last MX check and recovery time of st
// from their buckets. A recovery older than the domain's newest 5.4.x
// bounce is not shown.
func addHealth(tx *bbolt.Tx, st *store.DomainStat) {
	st.Storm = stormOf(tx, st.Domain)
	b := tx.Bucket(bucketMXHealth)
	if b == nil {
		return
	}
	v := b.Get([]byte(st.Domain))
	if v == nil {
		return
	}
	var h mxHealth
	if json.Unmarshal(v, &h) != nil {
		return
	}
	last := h.Last
	st.LastMX = &last
	if !h.Recovered.IsZero() && !h.Recovered.Before(lastRouteFailure(tx, st.Domain)) {
		r := h.Recovered
		st.Recovered = &r
	}
}
