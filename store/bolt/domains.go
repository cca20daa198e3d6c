package bolt

// Per-domain aggregates: listing them newest first through the dom_time
// index, and keeping that index in step with the domains bucket.

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/bouncer/bouncer/store"

	bbolt "go.etcd.io/bbolt"
)

var bucketDomTime = []byte("dom_time")

// RecentDomains returns the aggregates of the domains matching f, the
// most recently bounced (DomainStat.LastSeen) first, up to f.Limit. It
// walks the dom_time index backwards and decodes only the aggregates it
// returns, so a small limit costs the same on any number of domains; a
// status held by few domains (at most smallStatusSet) is answered from
// dom_status instead, and a limit of 0 (all) by Domains and a sort.
// Domains(status) lists all domains in domain order.
func (db *DB) RecentDomains(f store.DomainFilter) ([]store.DomainStat, error) {
	return db.recentDomains(f, smallStatusSet)
}

// DomainStat returns the aggregate of one domain (as stored: lower case),
// with its storm flag and MX health, or ErrNotFound. It is not part of
// store.Store: the dashboard uses it where an engine has it and otherwise
// looks the domain up among all of them.
func (db *DB) DomainStat(domain string) (*store.DomainStat, error) {
	var st store.DomainStat
	err := db.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketDomains).Get([]byte(domain))
		if v == nil {
			return store.ErrNotFound
		}
		var err error
		if st, err = decodeDomainStat([]byte(domain), v); err != nil {
			return err
		}
		addHealth(tx, &st)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &st, nil
}

// smallStatusSet is the most domains of one status that RecentDomains
// decodes and sorts rather than walking dom_time for them.
const smallStatusSet = 256

// recentDomains is RecentDomains with the small-set size as a parameter,
// so that tests can take either path.
func (db *DB) recentDomains(f store.DomainFilter, small int) ([]store.DomainStat, error) {
	if f.Limit < 0 {
		return nil, fmt.Errorf("listing domains: negative limit %d", f.Limit)
	}
	if f.Limit == 0 {
		// All of them: one pass over the aggregates (or over the status's
		// domains) in domain order and a sort read far fewer pages than a
		// walk of dom_time with a lookup for each of its keys.
		out, err := db.Domains(f.Status)
		if err != nil {
			return nil, err
		}
		sortNewest(out)
		return out, nil
	}
	var out []store.DomainStat
	err := db.view(func(tx *bbolt.Tx) error {
		doms, byStatus := tx.Bucket(bucketDomains), tx.Bucket(bucketDomStatus)
		var prefix []byte
		if f.Status != "" {
			prefix = lp(nil, f.Status)
			if names, ok := statusDomains(byStatus, prefix, small); ok {
				var err error
				out, err = newestOf(tx, doms, names, f.Limit)
				return err
			}
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

// statusDomains lists the domains under prefix in dom_status, if there
// are at most small of them.
func statusDomains(b *bbolt.Bucket, prefix []byte, small int) ([][]byte, bool) {
	var names [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if len(names) >= small {
			return nil, false
		}
		names = append(names, k[len(prefix):])
	}
	return names, true
}

// newestOf decodes the aggregates of names and returns the limit (all if
// 0) most recently bounced, in the order of a backward dom_time walk.
func newestOf(tx *bbolt.Tx, doms *bbolt.Bucket, names [][]byte, limit int) ([]store.DomainStat, error) {
	out := make([]store.DomainStat, 0, len(names))
	for _, dom := range names {
		v := doms.Get(dom)
		if v == nil {
			continue
		}
		st, err := decodeDomainStat(dom, v)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	sortNewest(out)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	for i := range out {
		addHealth(tx, &out[i])
	}
	return out, nil
}

// sortNewest sorts ds as a backward dom_time walk lists them: the most
// recently bounced first, and of those bounced at the same time the
// greater domain first.
func sortNewest(ds []store.DomainStat) {
	slices.SortFunc(ds, func(a, b store.DomainStat) int {
		return cmp.Or(b.LastSeen.Compare(a.LastSeen), strings.Compare(b.Domain, a.Domain))
	})
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
func moveDomTime(b *bbolt.Bucket, dom string, old, now time.Time) error {
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
func migrateDomTime(tx *bbolt.Tx) error {
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
func checkDomTime(tx *bbolt.Tx, add func(error) bool) bool {
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
		if err != nil && !add(fmt.Errorf("%s %x: %w", bucketDomTime, store.Truncate(string(k), 80), err)) {
			return false
		}
	}
	if m := doms.Stats().KeyN; m != n {
		return add(fmt.Errorf("%s: %d keys for %d domain aggregates", bucketDomTime, n, m))
	}
	return true
}

// domainCodec is the first byte of a binary domain aggregate. Schema 3
// files hold JSON ('{'), which decodeDomainStat still reads; Save writes
// the binary form, which decodes about ten times faster (a full
// `bouncer domains --limit 0` decodes every aggregate).
const domainCodec = 1

// encodeDomainStat renders the stored part of st (not Storm, LastMX,
// Recovered): the codec byte, then uvarint-length-prefixed strings and
// uvarint numbers in field order, times as a presence byte and varint
// Unix nanoseconds, and a flags byte (1: MTAsCapped).
func encodeDomainStat(st *store.DomainStat) []byte {
	b := make([]byte, 0, 64+len(st.Domain)+16*(len(st.Counts)+len(st.Kinds)+len(st.RemoteMTAs)+len(st.ReportingMTAs)))
	b = append(b, domainCodec)
	b = appendStr(b, st.Domain)
	b = binary.AppendUvarint(b, uint64(max(st.Total, 0)))
	for _, m := range []map[string]int{st.Counts, st.Kinds} {
		b = binary.AppendUvarint(b, uint64(len(m)))
		for _, k := range slices.Sorted(maps.Keys(m)) {
			b = appendStr(b, k)
			b = binary.AppendUvarint(b, uint64(max(m[k], 0)))
		}
	}
	for _, t := range []time.Time{st.FirstSeen, st.LastSeen} {
		if t.IsZero() {
			b = append(b, 0)
		} else {
			b = binary.AppendVarint(append(b, 1), t.UnixNano())
		}
	}
	for _, set := range [][]string{st.RemoteMTAs, st.ReportingMTAs} {
		b = binary.AppendUvarint(b, uint64(len(set)))
		for _, s := range set {
			b = appendStr(b, s)
		}
	}
	var flags byte
	if st.MTAsCapped {
		flags |= 1
	}
	return append(b, flags)
}

func appendStr(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// decodeDomainStat decodes the aggregate of dom, binary or JSON.
func decodeDomainStat(dom, v []byte) (store.DomainStat, error) {
	var st store.DomainStat
	var err error
	if len(v) > 0 && v[0] == '{' {
		err = json.Unmarshal(v, &st)
	} else {
		err = decodeBinaryStat(v, &st)
	}
	if err != nil {
		return store.DomainStat{}, fmt.Errorf("decoding domain aggregate of %s: %w", store.Truncate(string(dom), 80), err)
	}
	return st, nil
}

// statReader reads the binary aggregate; the first error sticks. b is
// the value converted to a string once, so that the strings read are
// slices of one allocation.
type statReader struct {
	b   string
	err error
}

var errStatShort = errors.New("value ends early")

func (r *statReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	n, w := uvarintString(r.b)
	if w <= 0 {
		r.err = errStatShort
		return 0
	}
	r.b = r.b[w:]
	return n
}

// count reads a number of items that must each take at least one byte.
func (r *statReader) count() int {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.err = cmp.Or(r.err, errStatShort)
		return 0
	}
	return int(n)
}

// number reads a non-negative int.
func (r *statReader) number() int {
	n := r.uvarint()
	if n > math.MaxInt32 {
		r.err = cmp.Or(r.err, errors.New("number out of range"))
		return 0
	}
	return int(n)
}

func (r *statReader) str() string {
	n := r.count()
	if r.err != nil {
		return ""
	}
	s := r.b[:n]
	r.b = r.b[n:]
	return s
}

func (r *statReader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.err = cmp.Or(r.err, errStatShort)
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *statReader) time() time.Time {
	switch r.byte() {
	case 0:
		return time.Time{}
	case 1:
		u, w := uvarintString(r.b)
		n := int64(u >> 1) // zig-zag, as binary.AppendVarint writes
		if u&1 != 0 {
			n = ^n
		}
		if w <= 0 {
			r.err = cmp.Or(r.err, errStatShort)
			return time.Time{}
		}
		r.b = r.b[w:]
		return time.Unix(0, n).UTC()
	}
	r.err = cmp.Or(r.err, errors.New("bad time"))
	return time.Time{}
}

// decodeBinaryStat undoes encodeDomainStat.
func decodeBinaryStat(v []byte, st *store.DomainStat) error {
	if len(v) == 0 || v[0] != domainCodec {
		return errors.New("unknown codec")
	}
	r := &statReader{b: string(v[1:])}
	st.Domain = r.str()
	st.Total = r.number()
	for _, m := range []*map[string]int{&st.Counts, &st.Kinds} {
		n := r.count()
		*m = make(map[string]int, n)
		for range n {
			k := r.str()
			(*m)[k] = r.number()
		}
	}
	st.FirstSeen, st.LastSeen = r.time(), r.time()
	for _, set := range []*[]string{&st.RemoteMTAs, &st.ReportingMTAs} {
		n := r.count()
		if n > 0 {
			*set = make([]string, 0, n)
		}
		for range n {
			*set = append(*set, r.str())
		}
	}
	st.MTAsCapped = r.byte()&1 != 0
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return errors.New("trailing bytes")
	}
	return nil
}

// uvarintString is binary.Uvarint on a string: the value and the bytes
// read, 0 if s ends early, negative on overflow.
func uvarintString(s string) (uint64, int) {
	var x uint64
	var shift uint
	for i := 0; i < len(s); i++ {
		if i == binary.MaxVarintLen64 {
			return 0, -(i + 1)
		}
		c := s[i]
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				return 0, -(i + 1)
			}
			return x | uint64(c)<<shift, i + 1
		}
		x |= uint64(c&0x7f) << shift
		shift += 7
	}
	return 0, 0
}
