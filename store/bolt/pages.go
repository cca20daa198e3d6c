package bolt

// A reader of the bbolt file format that trusts nothing in the file:
// every page number, element offset and length is checked against the
// file before it is used. bbolt itself trusts its pages and panics (or
// reads out of bounds) on a damaged one, and its own consistency check
// runs in a goroutine whose panic no caller can recover. Check and
// salvage walk the file with this reader first.
//
// The layout (bbolt 1.4, little endian as written on amd64 and arm64):
//
//	page header  id u64, flags u16, count u16, overflow u32 (16 bytes)
//	meta         magic u32, version u32, page size u32, flags u32,
//	             root bucket {root page u64, sequence u64}, freelist u64,
//	             high-water page u64, txid u64, checksum u64 (FNV-64a of
//	             the fields before it)
//	branch elem  pos u32, key size u32, page u64; key at elem+pos
//	leaf elem    flags u32 (1: bucket), pos u32, key size u32, value
//	             size u32; key at elem+pos, value after the key
//	bucket value root page u64, sequence u64; root 0: an inline leaf
//	             page follows in the value

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
)

const (
	pageHeader      = 16
	elemSize        = 16
	flagBranch      = 0x01
	flagLeaf        = 0x02
	flagMeta        = 0x04
	flagFreelist    = 0x10
	leafBucketFlag  = 0x01
	boltMagic       = 0xED0CDAED
	boltVersion     = 2
	maxWalkDepth    = 64
	maxPageProblems = 1000
	noFreelist      = ^uint64(0)
)

// PageProblem is one damaged page found by a walk.
type PageProblem struct {
	Page   uint64 // page number
	Bucket string // bucket path ("records", "outbox/…"), "" for the root or unknown
	What   string
}

func (p PageProblem) String() string {
	if p.Bucket == "" {
		return fmt.Sprintf("page %d: %s", p.Page, p.What)
	}
	return fmt.Sprintf("page %d (bucket %s): %s", p.Page, p.Bucket, p.What)
}

// fileWalk reads a bbolt file held in memory.
type fileWalk struct {
	data     []byte
	pageSize int
	maxPage  uint64 // pages below the high-water mark
	freelist uint64 // freelist page of the meta page used
	seen     map[uint64]bool
	headOnly bool // data holds only the first pages (checkOpenPages)
	problems []PageProblem
	// leaf, if set, gets every key and value of a bucket leaf that
	// reads (bucket is the path, nil for the root's own keys).
	leaf func(bucket []string, k, v []byte)
	// Salvage's hooks (salvage.go): seq, if set, gets each bucket's
	// sequence; read, if not nil, gets every page whose elements were all
	// read, with its overflow pages.
	seq  func(bucket []string, seq uint64)
	read map[uint64]bool
	// lenient takes a meta page whose checksum fails (salvage, when
	// no meta page is valid: the walk checks what it points to).
	lenient bool
}

// walkFile reads the file at path and walks every bucket from the newest
// valid meta page, reporting damaged pages; leaf, if not nil, gets every
// readable key and value, valid only during the call (the file is mapped). It fails only when the file cannot be read or
// has no valid meta page at all.
func walkFile(path string, leaf func(bucket []string, k, v []byte)) ([]PageProblem, error) {
	data, unmap, err := mapFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	defer unmap()
	w := &fileWalk{data: data, seen: map[uint64]bool{}, leaf: leaf}
	root, err := w.meta()
	if err != nil {
		return w.problems, fmt.Errorf("%s: %w", path, err)
	}
	w.tree(root, nil, 0)
	return w.problems, nil
}

func (w *fileWalk) problem(page uint64, bucket []string, format string, args ...any) {
	if len(w.problems) < maxPageProblems {
		w.problems = append(w.problems, PageProblem{Page: page, Bucket: strings.Join(bucket, "/"), What: fmt.Sprintf(format, args...)})
	}
}

// meta picks the valid meta page with the higher txid and returns the
// root bucket's page; a damaged meta page is a problem, both damaged an
// error.
func (w *fileWalk) meta() (uint64, error) {
	type meta struct{ pageSize, root, free, pgid, txid uint64 }
	var best *meta
	for i := uint64(0); i < 2; i++ {
		// The first meta page is at 0 whatever the page size; the second
		// at the page size, read from the first valid one or guessed.
		off := 0
		if i == 1 {
			off = w.pageSize
			if best == nil {
				off = 16 << 10 // this store's page size
			}
		}
		if off+pageHeader+64 > len(w.data) {
			w.problem(i, nil, "meta page beyond the end of the file (%d bytes)", len(w.data))
			continue
		}
		m := w.data[off+pageHeader : off+pageHeader+64]
		h := fnv.New64a()
		h.Write(m[:56])
		switch {
		case binary.LittleEndian.Uint16(w.data[off+8:]) != flagMeta:
			w.problem(i, nil, "meta page has the wrong type")
			continue
		case binary.LittleEndian.Uint32(m) != boltMagic || binary.LittleEndian.Uint32(m[4:]) != boltVersion:
			w.problem(i, nil, "meta page has no bbolt magic or another version")
			continue
		case binary.LittleEndian.Uint64(m[56:]) != h.Sum64():
			w.problem(i, nil, "meta page checksum does not match")
			if !w.lenient {
				continue
			}
		}
		c := &meta{pageSize: uint64(binary.LittleEndian.Uint32(m[8:])), root: binary.LittleEndian.Uint64(m[16:]), free: binary.LittleEndian.Uint64(m[32:]),
			pgid: binary.LittleEndian.Uint64(m[40:]), txid: binary.LittleEndian.Uint64(m[48:])}
		if c.pageSize < 1024 || c.pageSize > 1<<20 {
			w.problem(i, nil, "meta page gives page size %d", c.pageSize)
			continue
		}
		if best == nil || c.txid > best.txid {
			best = c
		}
		if w.pageSize == 0 {
			w.pageSize = int(c.pageSize)
		}
	}
	if best == nil {
		return 0, errors.New("no valid meta page: not a bbolt file, or both meta pages are damaged")
	}
	w.pageSize = int(best.pageSize)
	w.maxPage, w.freelist = best.pgid, best.free
	if n := uint64(len(w.data) / w.pageSize); n < w.maxPage && !w.headOnly {
		w.problem(n, nil, "file ends at page %d, the database says %d pages (truncated)", n, w.maxPage)
		w.maxPage = n
	}
	return best.root, nil
}

// page returns the bytes of page id with its overflow, or nil after
// reporting why it cannot be read.
func (w *fileWalk) page(id uint64, bucket []string) []byte {
	if id < 2 || id >= w.maxPage {
		w.problem(id, bucket, "page number out of range (2 to %d)", w.maxPage-1)
		return nil
	}
	if w.seen[id] {
		w.problem(id, bucket, "page reached twice")
		return nil
	}
	w.seen[id] = true
	off := int(id) * w.pageSize
	p := w.data[off : off+w.pageSize]
	if got := binary.LittleEndian.Uint64(p); got != id {
		w.problem(id, bucket, "page header names page %d", got)
		return nil
	}
	over := uint64(binary.LittleEndian.Uint32(p[12:]))
	if id+over >= w.maxPage {
		w.problem(id, bucket, "overflow of %d pages runs past the end", over)
		return nil
	}
	if w.read != nil {
		for i := id + 1; i <= id+over; i++ {
			w.read[i] = true
		}
	}
	return w.data[off : off+int(over+1)*w.pageSize]
}

// tree walks the page tree rooted at id of bucket.
func (w *fileWalk) tree(id uint64, bucket []string, depth int) {
	if depth > maxWalkDepth {
		w.problem(id, bucket, "tree deeper than %d", maxWalkDepth)
		return
	}
	p := w.page(id, bucket)
	if p == nil {
		return
	}
	w.node(id, p, bucket, depth)
}

// node reads one branch or leaf page (p), following its children.
func (w *fileWalk) node(id uint64, p []byte, bucket []string, depth int) {
	flags, count := binary.LittleEndian.Uint16(p[8:]), int(binary.LittleEndian.Uint16(p[10:]))
	if pageHeader+count*elemSize > len(p) {
		w.problem(id, bucket, "%d elements do not fit in the page", count)
		return
	}
	switch flags {
	case flagBranch:
		if w.read != nil {
			w.read[id] = true
		}
		for i := range count {
			e := pageHeader + i*elemSize
			if _, ok := w.span(p, e, binary.LittleEndian.Uint32(p[e:]), binary.LittleEndian.Uint32(p[e+4:])); !ok {
				w.problem(id, bucket, "branch element %d points outside the page", i)
				continue
			}
			w.tree(binary.LittleEndian.Uint64(p[e+8:]), bucket, depth+1)
		}
	case flagLeaf:
		whole := true
		defer func() {
			if whole && w.read != nil {
				w.read[id] = true
			}
		}()
		for i := range count {
			e := pageHeader + i*elemSize
			eflags := binary.LittleEndian.Uint32(p[e:])
			ksz, vsz := binary.LittleEndian.Uint32(p[e+8:]), binary.LittleEndian.Uint32(p[e+12:])
			kv, ok := w.span(p, e, binary.LittleEndian.Uint32(p[e+4:]), ksz+vsz)
			if !ok || ksz+vsz < ksz {
				w.problem(id, bucket, "leaf element %d points outside the page", i)
				whole = false
				continue
			}
			k, v := kv[:ksz], kv[ksz:]
			if eflags&leafBucketFlag != 0 {
				w.bucket(id, k, v, bucket, depth)
				continue
			}
			if w.leaf != nil {
				w.leaf(bucket, k, v)
			}
		}
	default:
		w.problem(id, bucket, "page type %#x is neither branch nor leaf", flags)
	}
}

// span returns the n bytes at elem+pos of p, if they are inside it.
func (w *fileWalk) span(p []byte, elem int, pos, n uint32) ([]byte, bool) {
	start := uint64(elem) + uint64(pos)
	end := start + uint64(n)
	if pos == 0 || end > uint64(len(p)) {
		return nil, false
	}
	return p[start:end], true
}

// bucket follows the sub-bucket k (value v) of a leaf on page id.
func (w *fileWalk) bucket(id uint64, k, v []byte, parent []string, depth int) {
	path := append(append([]string(nil), parent...), string(k))
	if len(v) < 16 {
		w.problem(id, path, "bucket header of %d bytes", len(v))
		return
	}
	root := binary.LittleEndian.Uint64(v)
	if w.seq != nil {
		w.seq(path, binary.LittleEndian.Uint64(v[8:]))
	}
	if root != 0 {
		w.tree(root, path, depth+1)
		return
	}
	inline := v[16:]
	if len(inline) < pageHeader {
		w.problem(id, path, "inline bucket of %d bytes", len(inline))
		return
	}
	w.node(id, inline, path, depth+1)
}
