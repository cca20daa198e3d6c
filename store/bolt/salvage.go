package bolt

// Salvage copies what can still be read of a damaged database into a new
// one (`bouncer salvage`). The damaged file is read without bbolt
// (salvage_read.go); the new one is made by Open and written through
// bbolt. Records, raw messages, suppressions, soft counters, storm flags,
// holds and counters, MX health, daily counters, dedupe keys and the
// outbox (targets, events, dead letters, and its event numbering) are
// copied when their values decode; the indexes (idx_*, sup_domain) and
// the domain aggregates (domains, dom_status, dom_time) are rebuilt from
// the records copied.
//
// A record whose message's first record was lost keeps its own fields
// and is stored whole, with its key's time as Received. A record whose
// raw message was lost names the message in the raw_lost bucket
// (message key → ""), so that Check does not count it as missing.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/bouncer/bouncer/store"

	bbolt "go.etcd.io/bbolt"
)

// bucketRawLost names the raw messages a salvage could not read.
var bucketRawLost = []byte("raw_lost")

// SalvageBucket says what Salvage did with one bucket.
type SalvageBucket struct {
	Name    string
	Kept    int // entries in the new file (raw: messages)
	Dropped int // entries read that did not decode or agree with their key
	// Lost counts entries known to be missing: named by an entry that
	// was read (an index entry, a dedupe key, a record) but not read
	// themselves. More may have been on the damaged pages.
	Lost    int
	Pages   int  // damaged pages of the bucket
	Rebuilt bool // written from the records copied, not copied
	Note    string
}

// SalvageReport is what Salvage kept and lost.
type SalvageReport struct {
	From, To string
	Buckets  []SalvageBucket
	Problems []PageProblem // damaged pages of the old file
	Orphans  int           // pages read outside the page tree
	// Stale says the freelist was lost: pages outside the tree may be
	// old copies, so a suppression removed since may be back.
	Stale bool
	// LogApplied is the number of frames of the old file's log applied
	// to the new one; LogNote says why a log was not applied.
	LogApplied int
	LogNote    string
	// Check is the new file's Check result (nil: it passed).
	Check error
}

// Bucket returns the report of the bucket name (zero if none).
func (r *SalvageReport) Bucket(name string) SalvageBucket {
	for _, b := range r.Buckets {
		if b.Name == name {
			return b
		}
	}
	return SalvageBucket{Name: name}
}

// ErrExists is returned by Salvage when its target file exists.
var ErrExists = errors.New("file exists")

// Salvage reads the damaged database at from and writes what it can into
// a new database at to, which must not exist. opts configure the new
// file (its policy applies to the log frames replayed, if any).
func Salvage(from, to string, opts Options) (*SalvageReport, error) {
	if _, err := os.Lstat(to); err == nil {
		return nil, fmt.Errorf("salvaging to %s: %w", to, ErrExists)
	}
	if _, err := os.Lstat(walPath(to)); err == nil {
		return nil, fmt.Errorf("salvaging to %s: %w (its log %s)", to, ErrExists, walPath(to))
	}
	s, err := readDamaged(from)
	if err != nil {
		return nil, fmt.Errorf("salvaging %s: %w", from, err)
	}
	rep := &SalvageReport{From: from, To: to, Problems: s.problems, Orphans: s.orphans, Stale: !s.freeOK}
	wopts := opts
	wopts.ReadOnly = false
	db, err := Open(to, wopts)
	if err != nil {
		return nil, fmt.Errorf("salvaging to %s: %w", to, err)
	}
	c := &copier{db: db}
	err = c.copyAll(s, rep)
	if cerr := c.commit(); err == nil {
		err = cerr
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return rep, fmt.Errorf("salvaging to %s: %w", to, err)
	}
	if err := salvageLog(from, to, s, opts, rep); err != nil {
		return rep, fmt.Errorf("salvaging to %s: applying the old log: %w", to, err)
	}
	rep.Check = checkNew(to, opts)
	return rep, nil
}

// checkNew runs Check on the new file.
func checkNew(to string, opts Options) error {
	opts.ReadOnly = true
	db, err := Open(to, opts)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.Check()
}

// copier writes into the new file in transactions of batchPuts entries.
type copier struct {
	db *DB
	tx *bbolt.Tx
	n  int
}

const batchPuts = 20000

func (c *copier) bucket(name []byte) (*bbolt.Bucket, error) {
	if c.tx == nil {
		tx, err := c.db.bolt.Begin(true)
		if err != nil {
			return nil, err
		}
		c.tx = tx
	}
	b, err := c.tx.CreateBucketIfNotExists(name)
	if err != nil {
		return nil, fmt.Errorf("creating bucket %s: %w", name, err)
	}
	return b, nil
}

func (c *copier) put(name, k, v []byte) error {
	b, err := c.bucket(name)
	if err != nil {
		return err
	}
	if err := b.Put(k, v); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if c.n++; c.n >= batchPuts {
		return c.commit()
	}
	return nil
}

func (c *copier) commit() error {
	if c.tx == nil {
		return nil
	}
	err := c.tx.Commit()
	c.tx, c.n = nil, 0
	return err
}

// sortedKeys returns the keys of m in order.
func sortedKeys(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// copyAll writes everything; each step adds its buckets to rep.
func (c *copier) copyAll(s *salvaged, rep *SalvageReport) error {
	pages := map[string]int{}
	counted := map[string]map[uint64]bool{}
	for _, p := range s.problems {
		name, _, _ := bytes.Cut([]byte(p.Bucket), []byte("/"))
		if counted[string(name)] == nil {
			counted[string(name)] = map[uint64]bool{}
		}
		if !counted[string(name)][p.Page] {
			counted[string(name)][p.Page] = true
			pages[string(name)]++
		}
	}
	add := func(b SalvageBucket) {
		b.Pages = pages[b.Name]
		rep.Buckets = append(rep.Buckets, b)
	}
	recs, err := c.records(s, add)
	if err != nil {
		return err
	}
	steps := []func() error{
		func() error { return c.raw(s, recs, add) },
		func() error { return c.seen(s, recs, add) },
		func() error { return c.suppressions(s, add) },
		func() error { return c.plain(s, add) },
		func() error { return c.outbox(s, add) },
		func() error { return c.meta(s) },
		func() error { return c.indexes(recs, add) },
		func() error { return c.domains(recs, add) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// salvagedRecords are the records copied, in key order.
type salvagedRecords struct {
	keys [][]byte
	recs []store.Record
	has  map[string]bool
}

// records copies the records that decode; a record whose base is lost
// is stored whole.
func (c *copier) records(s *salvaged, add func(SalvageBucket)) (*salvagedRecords, error) {
	all := s.merged("records")
	type own struct {
		r    store.Record
		base string
		v    []byte
	}
	owns := map[string]*own{}
	b := SalvageBucket{Name: "records"}
	for k, v := range all {
		if !salvageBuckets["records"].ok([]byte(k), v) {
			b.Dropped++
			continue
		}
		r, base, _ := decodeOwn([]byte(k), v)
		owns[k] = &own{r, base, v}
	}
	out := &salvagedRecords{has: map[string]bool{}}
	whole := 0
	for _, k := range sortedKeys(all) {
		o := owns[k]
		if o == nil {
			continue
		}
		v := o.v
		if o.base != "" {
			bk, err := decodeID(o.base)
			if m := owns[string(bk)]; err == nil && m != nil && m.base == "" {
				messageFields(&o.r, &m.r)
			} else {
				// The first record of the message is lost: keep this one
				// with its own fields.
				if o.r.Received.IsZero() {
					o.r.Received = keyTime([]byte(k))
				}
				if v, err = encodeRecord(&o.r, "", nil); err != nil {
					return nil, err
				}
				whole++
			}
		}
		if err := c.put(bucketRecords, []byte(k), v); err != nil {
			return nil, err
		}
		out.keys, out.recs = append(out.keys, []byte(k)), append(out.recs, o.r)
		out.has[k] = true
	}
	b.Kept = len(out.recs)
	// Records named by what was read but not read themselves.
	lost := map[string]bool{}
	for _, name := range [][]byte{bucketIdxRcpt, bucketIdxDomain, bucketIdxStatus, bucketIdxDStatus} {
		for ik := range s.tree[string(name)] {
			if len(ik) > keyLen {
				lost[ik[len(ik)-keyLen:]] = true
			}
		}
	}
	for _, v := range s.merged("seen") {
		lost[string(v)] = true
	}
	for _, o := range owns {
		if bk, err := decodeID(o.base); err == nil {
			lost[string(bk)] = true
		}
	}
	for k := range lost {
		if _, read := all[k]; !read && len(k) == keyLen {
			b.Lost++
		}
	}
	if whole > 0 {
		b.Note = fmt.Sprintf("%d stored whole: the first record of their message was lost", whole)
	}
	add(b)
	return out, nil
}

// raw copies the raw messages whose parts are all there and decompress.
func (c *copier) raw(s *salvaged, recs *salvagedRecords, add func(SalvageBucket)) error {
	all := s.merged("raw")
	b := SalvageBucket{Name: "raw"}
	kept := map[string]bool{}
	keys := sortedKeys(all)
	for i := 0; i < len(keys); {
		msg := rawKeyMsg([]byte(keys[i]))
		j := i
		for j < len(keys) && bytes.Equal(rawKeyMsg([]byte(keys[j])), msg) {
			j++
		}
		if msg == nil {
			b.Dropped += j - i
			i = j
			continue
		}
		if ok := c.rawMessage(all, keys[i:j]); ok {
			kept[string(msg)] = true
			for _, k := range keys[i:j] {
				if err := c.put(bucketRaw, []byte(k), all[k]); err != nil {
					return err
				}
			}
		} else {
			b.Dropped++
		}
		i = j
	}
	b.Kept = len(kept)
	pruned := s.prunedBefore()
	lost := map[string]bool{}
	for i := range recs.recs {
		mk, err := decodeID(recs.recs[i].MsgID)
		if err != nil || kept[string(mk)] || lost[string(mk)] || keyTime(mk).Before(pruned) {
			continue
		}
		lost[string(mk)] = true
		if err := c.put(bucketRawLost, mk, nil); err != nil {
			return err
		}
	}
	b.Lost = len(lost)
	if b.Lost > 0 {
		b.Note = fmt.Sprintf("%d records keep no raw message (listed in %s)", b.Lost, bucketRawLost)
	}
	add(b)
	return nil
}

// rawMessage reports whether the raw keys (of one message, in order)
// form a whole value that decompresses.
func (c *copier) rawMessage(all map[string][]byte, keys []string) bool {
	var v []byte
	if len(keys) == 1 && len(keys[0]) == keyLen {
		v = all[keys[0]]
	} else {
		for i, k := range keys {
			if len(k) != rawPartKeyLen || binary.BigEndian.Uint32([]byte(k[keyLen:])) != uint32(i) {
				return false
			}
			v = append(v, all[k]...)
		}
	}
	_, err := decompressRaw(v)
	return err == nil
}

// prunedBefore reads meta raw_pruned_before of the old file.
func (s *salvaged) prunedBefore() time.Time {
	v, ok := s.merged("meta")[string(keyRawPruned)]
	if !ok {
		return time.Time{}
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// seen copies the dedupe keys whose first record was copied.
func (c *copier) seen(s *salvaged, recs *salvagedRecords, add func(SalvageBucket)) error {
	all := s.merged("seen")
	b := SalvageBucket{Name: "seen"}
	for _, k := range sortedKeys(all) {
		v := all[k]
		if !salvageBuckets["seen"].ok([]byte(k), v) || !recs.has[string(v)] {
			b.Dropped++
			continue
		}
		if err := c.put(bucketSeen, []byte(k), v); err != nil {
			return err
		}
		b.Kept++
	}
	add(b)
	return nil
}

// suppressions copies the suppression list and rebuilds sup_domain.
func (c *copier) suppressions(s *salvaged, add func(SalvageBucket)) error {
	all := s.merged("suppress")
	b := SalvageBucket{Name: "suppress"}
	for _, k := range sortedKeys(all) {
		if !salvageBuckets["suppress"].ok([]byte(k), all[k]) {
			b.Dropped++
			continue
		}
		if err := c.put(bucketSuppress, []byte(k), all[k]); err != nil {
			return err
		}
		dk := append(lp(nil, store.AddrDomain(k)), k...)
		if err := c.put(bucketSupDomain, dk, nil); err != nil {
			return err
		}
		b.Kept++
	}
	for ik := range s.tree[string(bucketSupDomain)] {
		if len(ik) > 0 && len(ik) > int(ik[0]) {
			if _, ok := all[ik[1+int(ik[0]):]]; !ok {
				b.Lost++
			}
		}
	}
	add(b)
	add(SalvageBucket{Name: string(bucketSupDomain), Kept: b.Kept, Rebuilt: true, Note: "rebuilt from the suppressions"})
	return nil
}

// plainBuckets are copied entry by entry when their values pass the test.
var plainBuckets = []string{"soft", "held", "storm_flag", "storm_count", "mx_health", "daily"}

func (c *copier) plain(s *salvaged, add func(SalvageBucket)) error {
	for _, name := range plainBuckets {
		if n, err := c.copyBucket(s, name, add); err != nil {
			return err
		} else if n == 0 && s.exists[name] && name != "soft" {
			if _, err := c.bucket([]byte(name)); err != nil {
				return err
			}
		}
	}
	return nil
}

// copyBucket copies the entries of name that pass its test.
func (c *copier) copyBucket(s *salvaged, name string, add func(SalvageBucket)) (int, error) {
	all := s.merged(name)
	if len(all) == 0 && !s.exists[name] {
		return 0, nil
	}
	b := SalvageBucket{Name: name}
	for _, k := range sortedKeys(all) {
		if !salvageBuckets[name].ok([]byte(k), all[k]) {
			b.Dropped++
			continue
		}
		if err := c.put([]byte(name), []byte(k), all[k]); err != nil {
			return 0, err
		}
		b.Kept++
	}
	add(b)
	return b.Kept, nil
}

// outbox copies targets, events and dead letters, and keeps the event
// numbering above every number used.
func (c *copier) outbox(s *salvaged, add func(SalvageBucket)) error {
	var top uint64
	for _, name := range []string{"outbox_targets", "outbox", "outbox_dead"} {
		if _, err := c.copyBucket(s, name, add); err != nil {
			return err
		}
		if name != "outbox_targets" {
			for k := range s.merged(name) {
				if len(k) == 8 {
					top = max(top, binary.BigEndian.Uint64([]byte(k)))
				}
			}
		}
	}
	if !s.exists["outbox"] && !s.exists["outbox_targets"] && top == 0 {
		return nil
	}
	for _, name := range [][]byte{bucketOutboxTargets, bucketOutboxDead} {
		if _, err := c.bucket(name); err != nil {
			return err
		}
	}
	ob, err := c.bucket(bucketOutbox)
	if err != nil {
		return err
	}
	return ob.SetSequence(max(top, s.seqs["outbox"]))
}

// meta copies the log position and the raw retention mark; Open wrote
// the schema version.
func (c *copier) meta(s *salvaged) error {
	m := s.merged("meta")
	for _, k := range [][]byte{keyWALSeq, keyRawPruned} {
		v, ok := m[string(k)]
		if _, err := strconv.ParseUint(string(v), 10, 64); !ok || err != nil {
			continue
		}
		if err := c.put(bucketMeta, k, v); err != nil {
			return err
		}
	}
	return nil
}

// indexes writes the index entries of every record copied.
func (c *copier) indexes(recs *salvagedRecords, add func(SalvageBucket)) error {
	n := map[string]int{}
	for i, k := range recs.keys {
		for name, ik := range indexEntries(k, &recs.recs[i]) {
			if err := c.put([]byte(name), ik, nil); err != nil {
				return err
			}
			n[name]++
		}
	}
	for _, name := range [][]byte{bucketIdxRcpt, bucketIdxDomain, bucketIdxStatus, bucketIdxDStatus} {
		add(SalvageBucket{Name: string(name), Kept: n[string(name)], Rebuilt: true})
	}
	return nil
}

// domains rebuilds the domain aggregates from the records as the rules
// count them (store.DomainStat.Count), in arrival order, leaving out
// duplicates and mismatches as Plan does.
func (c *copier) domains(recs *salvagedRecords, add func(SalvageBucket)) error {
	stats := map[string]*store.DomainStat{}
	for i := range recs.recs {
		r := &recs.recs[i]
		dom := store.DomainKey(r)
		if r.Duplicate || r.Mismatch != "" || dom == "" {
			continue
		}
		st := stats[dom]
		if st == nil {
			st = &store.DomainStat{Domain: dom}
			stats[dom] = st
		}
		st.Count(r)
	}
	doms := make([]string, 0, len(stats))
	for d := range stats {
		doms = append(doms, d)
	}
	slices.Sort(doms)
	for _, d := range doms {
		st := stats[d]
		if err := c.put(bucketDomains, []byte(d), encodeDomainStat(st)); err != nil {
			return err
		}
		if err := c.put(bucketDomTime, domTimeKey(st.LastSeen, d), nil); err != nil {
			return err
		}
		for status := range st.Counts {
			if err := c.put(bucketDomStatus, append(lp(nil, status), d...), nil); err != nil {
				return err
			}
		}
	}
	for _, name := range []string{"domains", "dom_status", "dom_time"} {
		add(SalvageBucket{Name: name, Kept: len(doms), Rebuilt: true})
	}
	return nil
}

// salvageLog applies the old file's log to the new one when it holds
// frames the old file lacks and the old file's log position was read.
func salvageLog(from, to string, s *salvaged, opts Options, rep *SalvageReport) error {
	f, err := os.Open(walPath(from))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	first, err := firstFrame(f, fi.Size())
	if err != nil || first == 0 {
		return err
	}
	v, ok := s.merged("meta")[string(keyWALSeq)]
	applied, perr := strconv.ParseUint(string(v), 10, 64)
	if !ok || perr != nil {
		rep.LogNote = fmt.Sprintf("log %s not applied: the old file's log position was lost", walPath(from))
		return nil
	}
	if first <= applied {
		return nil // everything in it is in the file
	}
	out, err := os.OpenFile(walPath(to), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, io.NewSectionReader(f, 0, fi.Size())); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	var info LogInfo
	opts.ReadOnly = false
	opts.OnLog = func(li LogInfo) { info = li }
	db, err := Open(to, opts)
	if err != nil {
		return err
	}
	rep.LogApplied = info.Applied
	return db.Close()
}
