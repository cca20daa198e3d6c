package bolt

// Reading a damaged file for Salvage (salvage.go), never through bbolt:
// the page tree is walked from the newest valid meta page (pages.go),
// then every page the walk did not read and the freelist does not hold
// is read on its own, like SQLite's .recover: a leaf below a damaged
// branch page, or a leaf whose header (and first element) is
// overwritten, still holds its other elements. Such a page names no
// bucket: its entries go to the bucket whose values they decode as.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"strings"
	"time"

	"github.com/bouncer/bouncer/store"
)

// salvaged is what was read of a damaged file, by bucket and key.
type salvaged struct {
	tree     map[string]map[string][]byte // read through the page tree
	orphan   map[string]map[string][]byte // read from pages outside it
	seqs     map[string]uint64            // bucket sequences (outbox numbers)
	exists   map[string]bool              // buckets the root names
	problems []PageProblem
	orphans  int  // pages read outside the tree
	freeOK   bool // the freelist was read: orphan pages are not stale
	noMeta   bool // no valid meta page: only orphan pages were read
}

// readDamaged reads every entry it can from the bbolt file at path.
func readDamaged(path string) (*salvaged, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := &salvaged{tree: map[string]map[string][]byte{}, orphan: map[string]map[string][]byte{},
		seqs: map[string]uint64{}, exists: map[string]bool{}}
	w := &fileWalk{data: data, seen: map[uint64]bool{}, read: map[uint64]bool{}}
	w.leaf = func(bucket []string, k, v []byte) {
		if len(bucket) == 1 {
			s.add(s.tree, bucket[0], k, v)
		}
	}
	w.seq = func(bucket []string, seq uint64) {
		if len(bucket) == 1 {
			s.seqs[bucket[0]], s.exists[bucket[0]] = seq, true
		}
	}
	root, err := w.meta()
	if err != nil {
		// Both meta pages fail: take one whose checksum alone fails.
		w.lenient, w.pageSize, w.problems = true, 0, nil
		root, err = w.meta()
	}
	if err != nil {
		// Without a meta page there is no tree, but the pages are
		// still there: read them all, at this store's page size.
		s.noMeta = true
		w.problem(0, nil, "%v", err)
		w.pageSize = 16 << 10
		w.maxPage = uint64(len(data) / w.pageSize)
		w.freelist = noFreelist
	} else {
		w.tree(root, nil, 0)
	}
	free, ok := w.freePages()
	s.freeOK = ok
	s.readOrphans(w, free)
	s.problems = w.problems
	return s, nil
}

// add records k → v of bucket in m, keeping the first value read.
func (s *salvaged) add(m map[string]map[string][]byte, bucket string, k, v []byte) {
	b := m[bucket]
	if b == nil {
		b = map[string][]byte{}
		m[bucket] = b
	}
	if _, ok := b[string(k)]; !ok {
		b[string(k)] = v
	}
}

// merged returns the entries of bucket: the tree's, then the orphan
// pages' for keys the tree lacks. When the freelist was lost an orphan
// page may be an old copy the file no longer uses (a suppression removed
// since, an older counter): the report says so, but losing every
// suppression on such pages would be worse.
func (s *salvaged) merged(bucket string) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range s.tree[bucket] {
		out[k] = v
	}
	for k, v := range s.orphan[bucket] {
		if _, ok := out[k]; !ok {
			out[k] = v
		}
	}
	return out
}

// freePages reads the freelist page of the meta page used; ok is false
// when it cannot be read (then the caller cannot tell stale pages).
func (w *fileWalk) freePages() (map[uint64]bool, bool) {
	free := map[uint64]bool{}
	id := w.freelist
	if id == noFreelist || id < 2 || id >= w.maxPage {
		return free, false
	}
	off := int(id) * w.pageSize
	p := w.data[off:]
	if binary.LittleEndian.Uint64(p) != id || binary.LittleEndian.Uint16(p[8:]) != flagFreelist {
		return free, false
	}
	over := uint64(binary.LittleEndian.Uint32(p[12:]))
	n, start := uint64(binary.LittleEndian.Uint16(p[10:])), pageHeader
	if n == 0xFFFF {
		n, start = binary.LittleEndian.Uint64(p[pageHeader:]), pageHeader+8
	}
	if id+over >= w.maxPage || uint64(start)+8*n > (over+1)*uint64(w.pageSize) {
		return free, false
	}
	for i := id; i <= id+over; i++ {
		free[i] = true
	}
	for i := range n {
		free[binary.LittleEndian.Uint64(p[uint64(start)+8*i:])] = true
	}
	return free, true
}

// kv is one element of an orphan leaf.
type kv struct{ k, v []byte }

// readOrphans reads every page below the high-water mark that the walk
// did not read and that is not free, and files its entries.
func (s *salvaged) readOrphans(w *fileWalk, free map[uint64]bool) {
	damaged := map[string]bool{}
	for _, p := range w.problems {
		damaged[strings.SplitN(p.Bucket, "/", 2)[0]] = true
	}
	for id := uint64(2); id < w.maxPage; id++ {
		if w.read[id] || free[id] {
			continue
		}
		elems, over := w.orphanLeaf(id)
		if len(elems) == 0 {
			continue
		}
		id += over
		name := classify(elems, damaged)
		if name == "" {
			continue
		}
		s.orphans++
		ok := salvageBuckets[name].ok
		for _, e := range elems {
			if ok(e.k, e.v) {
				s.add(s.orphan, name, e.k, e.v)
			}
		}
	}
}

// orphanLeaf reads page id as a leaf: whole if its header says leaf,
// else from its second element on (a header overwritten with the first
// element, as a bad disk block does). over is the number of overflow
// pages its header gives.
func (w *fileWalk) orphanLeaf(id uint64) ([]kv, uint64) {
	off := int(id) * w.pageSize
	p := w.data[off : off+w.pageSize]
	flags, count := binary.LittleEndian.Uint16(p[8:]), int(binary.LittleEndian.Uint16(p[10:]))
	over := uint64(binary.LittleEndian.Uint32(p[12:]))
	// The page number in the header is not required to match: a page
	// that is neither read nor free is in use, whatever its header says.
	if flags == flagLeaf && id+over < w.maxPage && pageHeader+count*elemSize <= len(p) {
		ext := w.data[off : off+int(over+1)*w.pageSize]
		var out []kv
		for i := range count {
			if e, ok := leafElem(ext, i); ok {
				out = append(out, e)
			}
		}
		return out, over
	}
	// Headless: the data of element i follows element i-1's, and the
	// element array ends before the first data.
	ext := w.data[off:min(len(w.data), off+64*w.pageSize)]
	var out []kv
	dataStart, prevEnd := len(p), 0
	for i := 1; pageHeader+(i+1)*elemSize <= dataStart; i++ {
		e := pageHeader + i*elemSize
		pos := int(binary.LittleEndian.Uint32(p[e+4:]))
		if i > 1 && e+pos != prevEnd {
			break
		}
		el, ok := leafElem(ext, i)
		if !ok {
			break
		}
		if i == 1 {
			dataStart = e + pos
		}
		prevEnd = e + pos + len(el.k) + len(el.v)
		out = append(out, el)
	}
	return out, 0
}

// leafElem reads leaf element i of p, if it is a plain key and value
// inside p (not a bucket).
func leafElem(p []byte, i int) (kv, bool) {
	e := pageHeader + i*elemSize
	if e+elemSize > len(p) {
		return kv{}, false
	}
	flags, pos := binary.LittleEndian.Uint32(p[e:]), uint64(binary.LittleEndian.Uint32(p[e+4:]))
	ksz, vsz := uint64(binary.LittleEndian.Uint32(p[e+8:])), uint64(binary.LittleEndian.Uint32(p[e+12:]))
	start := uint64(e) + pos
	if flags != 0 || pos == 0 || ksz == 0 || start+ksz+vsz > uint64(len(p)) {
		return kv{}, false
	}
	return kv{p[start : start+ksz], p[start+ksz : start+ksz+vsz]}, true
}

// classify names the bucket most of elems decode as (at least half), or
// "". Of buckets that tie (outbox and outbox_dead hold the same values),
// one with damaged pages wins, then the first listed.
func classify(elems []kv, damaged map[string]bool) string {
	best, bestN := "", 0
	for _, name := range salvageOrder {
		n := 0
		for _, e := range elems {
			if salvageBuckets[name].ok(e.k, e.v) {
				n++
			}
		}
		if n > bestN || (n == bestN && n > 0 && damaged[name] && !damaged[best]) {
			best, bestN = name, n
		}
	}
	if 2*bestN < len(elems) {
		return ""
	}
	return best
}

// A salvageBucket says which values belong to a bucket.
type salvageBucket struct {
	ok func(k, v []byte) bool
}

// salvageOrder is the order classify tries buckets in.
var salvageOrder = []string{"records", "raw", "seen", "suppress", "soft", "held", "storm_flag",
	"storm_count", "outbox", "outbox_dead", "outbox_targets", "mx_health", "daily", "meta", "domains", "index"}

// salvageBuckets holds the test of each bucket Salvage copies, and of
// "domains" and "index" (every bucket of empty values), which it
// rebuilds: their pages are recognised so that they go nowhere else.
var salvageBuckets = map[string]salvageBucket{
	"records": {func(k, v []byte) bool {
		if len(k) != keyLen || !plausibleKey(k) {
			return false
		}
		r, _, err := decodeOwn(k, v)
		if err != nil {
			return false
		}
		// A record's key follows its message's, from the same clock
		// reading (idGen.next): a key changed by damage does not.
		mk, err := decodeID(r.MsgID)
		return err == nil && bytes.Equal(k[:8], mk[:8]) && bytes.Compare(k, mk) > 0 &&
			binary.BigEndian.Uint32(k[8:])-binary.BigEndian.Uint32(mk[8:]) <= maxRecipientsKey
	}},
	"raw": {func(k, v []byte) bool {
		return len(k) == rawPartKeyLen && plausibleKey(k) && binary.BigEndian.Uint32(k[keyLen:]) < 1<<20 && len(v) > 0
	}},
	"seen": {func(k, v []byte) bool { return len(k) == store.DedupeKeyLen && len(v) == keyLen && plausibleKey(v) }},
	"suppress": {func(k, v []byte) bool {
		var s store.Suppression
		return json.Unmarshal(v, &s) == nil && s.Address == string(k) && len(k) > 0
	}},
	"soft": {func(k, v []byte) bool {
		var c store.SoftCounter
		return bytes.IndexByte(k, '@') > 0 && strictJSON(v, &c) && len(c.Events) > 0
	}},
	"held": {func(k, v []byte) bool {
		var h store.Hold
		return json.Unmarshal(v, &h) == nil && h.Address != "" && bytes.Equal(k, heldKey(h.Domain, h.Address))
	}},
	"storm_flag": {func(k, v []byte) bool {
		var st store.Storm
		return decodeKeyed(v, &st, k, func() string { return st.Domain }) == nil && len(k) > 0
	}},
	"storm_count": {func(k, v []byte) bool {
		if bytes.Equal(k, sweepKey) {
			return true
		}
		var set store.StormSet
		return len(k) > 1 && k[0] != 0 && strictJSON(v, &set) && len(set.Addrs) == len(set.Times) && len(set.Addrs) > 0
	}},
	"outbox":      {func(k, v []byte) bool { return checkEvent(k, v) == nil }},
	"outbox_dead": {func(k, v []byte) bool { return checkEvent(k, v) == nil }},
	"outbox_targets": {func(k, v []byte) bool {
		var t store.OutboxTarget
		return decodeKeyed(v, &t, k, func() string { return t.Name }) == nil && len(k) > 0
	}},
	"mx_health": {func(k, v []byte) bool {
		var h mxHealth
		return bytes.IndexByte(k, '@') < 0 && strictJSON(v, &h) && !h.Last.Checked.IsZero()
	}},
	"daily": {func(k, v []byte) bool {
		var m map[string]int
		_, err := time.Parse(store.DayLayout, string(k))
		return err == nil && json.Unmarshal(v, &m) == nil
	}},
	"meta": {func(k, v []byte) bool {
		return bytes.Equal(k, keyVersion) || bytes.Equal(k, keyWALSeq) || bytes.Equal(k, keyRawPruned)
	}},
	"domains": {func(k, v []byte) bool {
		st, err := decodeDomainStat(k, v)
		return err == nil && st.Domain == string(k)
	}},
	"index": {func(k, v []byte) bool { return len(v) == 0 && len(k) > 0 }},
}

// maxRecipientsKey bounds how far a record's key is from its message's:
// a message has at most a few thousand recipients.
const maxRecipientsKey = 1 << 16

// plausibleKey reports whether the time at the start of a record or
// message key k lies between 2000 and 2200, as a stored key's does.
func plausibleKey(k []byte) bool {
	t := int64(binary.BigEndian.Uint64(k))
	return t > 946684800e9 && t < 7258118400e9
}

// strictJSON decodes v into dst, failing on fields dst lacks.
func strictJSON(v []byte, dst any) bool {
	d := json.NewDecoder(bytes.NewReader(v))
	d.DisallowUnknownFields()
	return d.Decode(dst) == nil && !d.More()
}
