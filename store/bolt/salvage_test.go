package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/bouncer/bouncer/store"

	"github.com/bouncer/bouncer/parse"
	bbolt "go.etcd.io/bbolt"
)

// salvageSource makes a closed database with records (some of messages
// with two recipients), raw messages, suppressions, soft counters and
// outbox events, large enough for branch pages, and returns its bytes.
var salvageSource = sync.OnceValues(func() ([]byte, error) {
	dir, err := os.MkdirTemp("", "salvage")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "bouncer.db")
	db, err := Open(path, Options{})
	if err != nil {
		return nil, err
	}
	if err := db.SetOutboxTargets([]store.OutboxTarget{{Name: "hook", Events: []string{store.EventHard, store.EventSoft}}}); err != nil {
		return nil, err
	}
	const workers, each = 16, 100
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				d := salvageDelivery(w, i)
				if _, err := db.Save(context.Background(), d); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	if err := db.Close(); err != nil {
		return nil, err
	}
	return os.ReadFile(path)
})

// salvageDelivery is delivery i of worker w: hard, soft, or a hard
// bounce for two recipients.
func salvageDelivery(w, i int) *store.Delivery {
	addr := fmt.Sprintf("w%d-%d@d%d.example", w, i, i%7)
	switch i % 3 {
	case 0:
		return bounce(addr, "5.1.1", parse.KindBounce, parse.ClassHard)
	case 1:
		return bounce(addr, "4.2.2", parse.KindBounce, parse.ClassSoft)
	}
	d := bounce(addr, "5.1.1", parse.KindBounce, parse.ClassHard)
	r2 := d.Report.Recipients[0]
	r2.FinalRecipient = "second-" + addr
	d.Report.Recipients = append(d.Report.Recipients, r2)
	return d
}

// entryPages maps bucket → key → page of every entry on a leaf of the
// page tree of a good file, and the buckets' raw message keys to their
// parts' pages.
func entryPages(t *testing.T, data []byte) map[string]map[string]uint64 {
	t.Helper()
	w := &fileWalk{data: data, seen: map[uint64]bool{}, read: map[uint64]bool{}}
	inTree := map[string]map[string]bool{}
	w.leaf = func(bucket []string, k, v []byte) {
		if len(bucket) == 1 {
			if inTree[bucket[0]] == nil {
				inTree[bucket[0]] = map[string]bool{}
			}
			inTree[bucket[0]][string(k)] = true
		}
	}
	root, err := w.meta()
	tcheck(t, err, "meta")
	w.tree(root, nil, 0)
	if len(w.problems) > 0 {
		t.Fatalf("good file has problems: %v", w.problems)
	}
	out := map[string]map[string]uint64{}
	for id := range w.read {
		p := data[int(id)*w.pageSize:]
		if binary16(p[8:]) != flagLeaf {
			continue
		}
		for i := range int(binary16(p[10:])) {
			e, ok := leafElem(p[:(1+int(binary32(p[12:])))*w.pageSize], i)
			if !ok {
				continue
			}
			for name, keys := range inTree {
				if keys[string(e.k)] {
					if out[name] == nil {
						out[name] = map[string]uint64{}
					}
					out[name][string(e.k)] = id
				}
			}
		}
	}
	return out
}

func binary16(b []byte) uint16 { return uint16(b[0]) | uint16(b[1])<<8 }
func binary32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

const testPage = 16 << 10

// A damage changes a copy of the file and returns the pages it damaged
// (beyond the meta pages).
type damage func(b []byte) ([]byte, map[uint64]bool)

// pagesOfType applies fn to every page from 2 on whose header has flags.
func pagesOfType(flags uint16, fn func(p []byte)) damage {
	return func(b []byte) ([]byte, map[uint64]bool) {
		hit := map[uint64]bool{}
		for off := 2 * testPage; off+testPage <= len(b); off += testPage {
			if binary16(b[off+8:]) == flags {
				fn(b[off : off+testPage])
				hit[uint64(off/testPage)] = true
			}
		}
		return b, hit
	}
}

var damages = map[string]damage{
	// Random-looking bytes in the middle of each leaf page: its
	// elements' data, so some values no longer decode.
	"leaf data flipped": pagesOfType(flagLeaf, func(p []byte) {
		for i := testPage / 2; i < testPage/2+64; i++ {
			p[i] ^= 0x5a
		}
	}),
	// The page number in every leaf header.
	"leaf headers flipped": pagesOfType(flagLeaf, func(p []byte) { p[0] ^= 0x5a }),
	// Every branch page wiped: the leaves below are intact.
	"branch pages zeroed": func(b []byte) ([]byte, map[uint64]bool) {
		b, _ = pagesOfType(flagBranch, func(p []byte) { clear(p) })(b)
		return b, map[uint64]bool{}
	},
	"both meta pages": func(b []byte) ([]byte, map[uint64]bool) {
		b[16+20] ^= 1
		b[testPage+16+20] ^= 1
		return b, map[uint64]bool{}
	},
	// Issue 20: 32 bytes at the start of every page from the third on.
	"32 bytes per page": func(b []byte) ([]byte, map[uint64]bool) {
		hit := map[uint64]bool{}
		for off := 2 * testPage; off < len(b); off += testPage {
			for i := range 32 {
				b[off+i] = byte(0xA5 ^ i)
			}
			hit[uint64(off/testPage)] = true
		}
		return b, hit
	},
	"truncated": func(b []byte) ([]byte, map[uint64]bool) {
		n := len(b) / testPage * 2 / 3
		hit := map[uint64]bool{}
		for id := n; id < len(b)/testPage; id++ {
			hit[uint64(id)] = true
		}
		return b[:n*testPage], hit
	},
}

func TestSalvage(t *testing.T) {
	good, err := salvageSource()
	tcheck(t, err, "making the database")
	pages := entryPages(t, good)
	if len(pages["records"]) < 1000 {
		t.Fatalf("only %d records", len(pages["records"]))
	}
	origDir := t.TempDir()
	orig := filepath.Join(origDir, "bouncer.db")
	tcheck(t, os.WriteFile(orig, good, 0o600), "writing original")
	want := recordsByID(t, orig)
	for name, dmg := range damages {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			from, to := filepath.Join(dir, "damaged.db"), filepath.Join(dir, "new.db")
			data, hit := dmg(bytes.Clone(good))
			tcheck(t, os.WriteFile(from, data, 0o600), "writing damaged copy")
			if name != "leaf data flipped" && CheckFile(from) == nil {
				t.Fatal("CheckFile finds no damage")
			}
			rep, err := Salvage(from, to, Options{})
			tcheck(t, err, "salvage")
			if rep.Check != nil {
				t.Fatalf("copy fails Check: %v", rep.Check)
			}
			got := recordsByID(t, to)
			if n := rep.Bucket("records").Kept; n != len(got) {
				t.Errorf("report says %d records kept, the copy has %d", n, len(got))
			}
			// Every record read is the record that was stored.
			for id, r := range got {
				w, ok := want[id]
				if !ok || w.Addr != r.Addr || w.Status != r.Status || w.MsgID != r.MsgID || w.Verdict != r.Verdict {
					t.Fatalf("record %s in the copy is not the stored one:\n got %+v\nwant %+v", id, r, w)
				}
			}
			// Every entry on an undamaged page is in the copy.
			buckets := []string{"records", "suppress", "soft", "outbox"}
			copyDB, err := Open(to, Options{ReadOnly: true})
			tcheck(t, err, "open copy")
			defer copyDB.Close()
			missing := 0
			tcheck(t, copyDB.view(func(tx *bbolt.Tx) error {
				for _, b := range buckets {
					for k, page := range pages[b] {
						if !hit[page] && tx.Bucket([]byte(b)).Get([]byte(k)) == nil {
							if missing++; missing < 5 {
								t.Errorf("%s %x on undamaged page %d is not in the copy", b, k, page)
							}
						}
					}
				}
				return nil
			}), "reading copy")
			if missing > 0 {
				t.Fatalf("%d entries on undamaged pages missing", missing)
			}
			if name == "32 bytes per page" && len(got) < len(want)*9/10 {
				t.Errorf("only %d of %d records read from pages that lost their first element", len(got), len(want))
			}
			t.Logf("%d of %d records kept; %d orphan pages; %d problems %v; stale %v", len(got), len(want), rep.Orphans, len(rep.Problems), rep.Problems[:min(3, len(rep.Problems))], rep.Stale)
		})
	}
}

func TestSalvageRefusesExisting(t *testing.T) {
	good, err := salvageSource()
	tcheck(t, err, "making the database")
	dir := t.TempDir()
	from, to := filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")
	tcheck(t, os.WriteFile(from, good, 0o600), "write")
	tcheck(t, os.WriteFile(to, []byte("keep me"), 0o600), "write")
	if _, err := Salvage(from, to, Options{}); !errors.Is(err, ErrExists) {
		t.Fatalf("salvage onto an existing file: %v", err)
	}
	if b, _ := os.ReadFile(to); string(b) != "keep me" {
		t.Fatal("existing file changed")
	}
}

// recordsByID reads every record of the database at path.
func recordsByID(t *testing.T, path string) map[string]store.Record {
	t.Helper()
	db, err := Open(path, Options{ReadOnly: true})
	tcheck(t, err, "open "+path)
	defer db.Close()
	out := map[string]store.Record{}
	tcheck(t, db.ForEach(store.Filter{}, func(r store.Record) error {
		out[r.ID] = r
		return nil
	}), "records of "+path)
	return out
}
