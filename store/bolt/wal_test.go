package bolt

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"

	"github.com/bouncer/bouncer/parse"
	bbolt "go.etcd.io/bbolt"
)

// snapshot copies the database file as it is on disk now into a new
// folder, as a crash would leave it, and returns the copy's path.
func snapshot(t *testing.T, path string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "bouncer.db")
	b, err := os.ReadFile(path)
	tcheck(t, err, "reading "+path)
	tcheck(t, os.WriteFile(dst, b, 0o600), "writing copy")
	return dst
}

// contents is everything a database answers about its deliveries, as
// JSON: records, suppressions and domain aggregates.
func contents(t *testing.T, db *DB) (recs []string, sups []string, doms string) {
	t.Helper()
	tcheck(t, db.ForEach(store.Filter{}, func(r store.Record) error {
		recs = append(recs, mustJSON(t, r))
		return nil
	}), "records")
	tcheck(t, db.Suppressions("", func(s store.Suppression) error {
		sups = append(sups, mustJSON(t, s))
		return nil
	}), "suppressions")
	ds, err := db.Domains("")
	tcheck(t, err, "domains")
	return recs, sups, mustJSON(t, ds)
}

// saveMix saves n deliveries: hard bounces (suppressing), soft ones
// (counted), and every fifth a copy of the one before (a duplicate).
func saveMix(t *testing.T, db *DB, from, n int) {
	t.Helper()
	var last *store.Delivery
	for i := from; i < from+n; i++ {
		d := bounce(fmt.Sprintf("u%d@d%d.example", i, i%3), "5.4.3", parse.KindBounce, parse.ClassHard)
		switch {
		case i%5 == 4 && last != nil:
			d = last
		case i%2 == 1:
			d = bounce(fmt.Sprintf("u%d@d%d.example", i, i%3), "4.4.3", parse.KindBounce, parse.ClassSoft)
		}
		save(t, db, d)
		last = d
	}
}

func sameContents(t *testing.T, what string, got, want *DB) {
	t.Helper()
	gr, gs, gd := contents(t, got)
	wr, ws, wd := contents(t, want)
	if fmt.Sprint(gr) != fmt.Sprint(wr) {
		t.Errorf("%s: records differ:\n got %d: %v\nwant %d: %v", what, len(gr), gr, len(wr), wr)
	}
	if fmt.Sprint(gs) != fmt.Sprint(ws) {
		t.Errorf("%s: suppressions differ:\n got %v\nwant %v", what, gs, ws)
	}
	if gd != wd {
		t.Errorf("%s: domains differ:\n got %s\nwant %s", what, gd, wd)
	}
}

// TestLogReplaysAfterCrash: a read-only open (bouncer query) of a file
// whose old log holds acknowledged deliveries applies the log through a
// read-write open, there being no writer on the file: it answers with
// the same records as the live database, and the log is gone.
func TestLogReplaysAfterCrash(t *testing.T) {
	t.Parallel()
	clock := newClock()
	live, crashed := withOldLog(t, Options{Now: clock.Now}, func(db *DB) { saveMix(t, db, 0, 30) })
	db, err := Open(crashed, Options{ReadOnly: true, Now: clock.Now})
	tcheck(t, err, "read-only open of the crashed copy")
	defer db.Close()
	sameContents(t, "read-only, replayed", db, live)
	if _, err := os.Stat(walPath(crashed)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the log is still there after the read-only open applied it: %v", err)
	}
}

// mustRecords opens path with opts, reads its records and closes it.
func mustRecords(t *testing.T, path string, opts Options) []string {
	t.Helper()
	db, err := Open(path, opts)
	tcheck(t, err, "opening "+path)
	defer db.Close()
	recs, _, _ := contents(t, db)
	return recs
}

// TestLogTornTail damages the last frame of an old log (a crash in the
// middle of its write, which was therefore never acknowledged): the
// frames before it are replayed, the damaged one is not, and the file
// opens.
func TestLogTornTail(t *testing.T) {
	t.Parallel()
	_, crashed := withOldLog(t, Options{}, func(db *DB) { saveMix(t, db, 0, 5) })
	log, err := os.ReadFile(walPath(crashed))
	tcheck(t, err, "reading log")
	for name, damage := range map[string]func(b []byte, end int){
		"cut":     func(b []byte, end int) { clear(b[end-10:]) },
		"changed": func(b []byte, end int) { b[end-20] ^= 0xff },
	} {
		path := snapshot(t, crashed)
		b := bytes.Clone(log)
		damage(b, frameEnd(t, b, 5))
		tcheck(t, os.WriteFile(walPath(path), b, 0o600), "damaging log")
		if n := len(mustRecords(t, path, Options{})); n != 4 {
			t.Errorf("%s last frame: %d records, want 4", name, n)
		}
	}
}

// frameEnd returns the offset after the nth frame of log b.
func frameEnd(t *testing.T, b []byte, n int) int {
	t.Helper()
	off := 0
	for range n {
		if off+8 > len(b) {
			t.Fatalf("log ends before frame %d", n)
		}
		off += 8 + int(uint32(b[off])<<24|uint32(b[off+1])<<16|uint32(b[off+2])<<8|uint32(b[off+3]))
	}
	return off
}

// TestLogStaleFramesIgnored: an old log was written from its start
// again after each commit, so a log may hold fewer new frames than before
// followed by older ones, already in the file: those must not be applied
// again.
func TestLogStaleFramesIgnored(t *testing.T) {
	t.Parallel()
	var l oldLog
	live, path := mustOpen(t, Options{beforeCommit: l.collect})
	saveMix(t, live, 0, 6)
	old := frames(t, 1, l.take())
	crashed := snapshot(t, path) // frames 1-6 committed
	setAppliedSeq(t, crashed, 6)
	saveMix(t, live, 6, 2)
	b := append(frames(t, 7, l.take()), old[frameEnd(t, old, 2):]...)
	tcheck(t, os.WriteFile(walPath(crashed), oldLogFile(b), 0o600), "writing log")
	if _, last, err := readFrames(b, 0); err != nil || last != 8 {
		t.Fatalf("log's last frame %d (%v), want 8", last, err)
	}
	// Old frames 3 to 6 follow the new ones whole: what must stop the
	// replay is their numbers.
	if _, last, err := readFrames(b[frameEnd(t, b, 2):], 0); err != nil || last != 6 {
		t.Fatalf("stale frames after the new ones: last %d (%v), want 6", last, err)
	}
	var infos []LogInfo
	db, err := Open(crashed, Options{OnLog: func(li LogInfo) { infos = append(infos, li) }})
	tcheck(t, err, "opening the crashed copy")
	defer db.Close()
	sameContents(t, "replayed", db, live)
	if len(infos) != 1 || infos[0].Applied != 2 || infos[0].Damaged != "" {
		t.Errorf("OnLog told %+v, want 2 frames applied", infos)
	}
}

// TestLogUnappliedReadOnly: a read-only open of a file whose old log
// holds deliveries, while another reader holds the file so that the log
// can't be applied, says so instead of answering without them.
func TestLogUnappliedReadOnly(t *testing.T) {
	t.Parallel()
	_, crashed := withOldLog(t, Options{}, func(db *DB) { saveMix(t, db, 0, 2) })
	holder, err := bbolt.Open(crashed, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	tcheck(t, err, "holding the file")
	_, err = Open(crashed, Options{ReadOnly: true, LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrUnapplied) || !errors.Is(err, ErrLocked) {
		t.Fatalf("read-only open of a held file with a log: %v, want ErrUnapplied and ErrLocked", err)
	}
	holder.Close()
	if n := len(mustRecords(t, crashed, Options{ReadOnly: true})); n != 2 {
		t.Fatalf("once the file is free: %d records, want 2", n)
	}
}

// FuzzReadFrames reads arbitrary bytes as a log, and as one frame's body:
// never a panic, and what readFrames returns is a run of consecutive
// frame numbers.
func FuzzReadFrames(f *testing.F) {
	r := &request{d: bounce("a@b.example", "5.4.3", parse.KindBounce, parse.ClassHard), raw: []byte{rawStored, 'x'}, now: time.Unix(1, 0)}
	var log []byte
	for seq := uint64(1); seq <= 3; seq++ {
		var err error
		if log, err = appendFrame(log, seq, r); err != nil {
			f.Fatal(err)
		}
	}
	f.Add(log)
	f.Add(log[:len(log)-3])
	f.Add(append(append([]byte{}, log...), make([]byte, 64)...))
	f.Add([]byte{0, 0, 0, 60, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, data []byte) {
		// A frame body past its CRC (a file written by something else):
		// an error, never a panic.
		decodeFrame(data)
		reqs, last, err := readFrames(data, 1)
		if err != nil {
			return
		}
		if len(reqs) > 0 && reqs[len(reqs)-1].seq != last {
			t.Fatalf("last frame %d, returned up to %d", last, reqs[len(reqs)-1].seq)
		}
		for i := 1; i < len(reqs); i++ {
			if reqs[i].seq != reqs[i-1].seq+1 {
				t.Fatalf("frames %d then %d", reqs[i-1].seq, reqs[i].seq)
			}
		}
	})
}
