package bolt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"

	"github.com/bouncer/bouncer/parse"
	bbolt "go.etcd.io/bbolt"
)

// snapshot copies the database file and its log as they are on disk now
// into a new folder, as a crash would leave them, and returns the copy's
// path.
func snapshot(t *testing.T, path string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "bouncer.db")
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(path + suffix)
		tcheck(t, err, "reading "+path+suffix)
		tcheck(t, os.WriteFile(dst+suffix, b, 0o600), "writing copy")
	}
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

// TestLogReplaysAfterCrash acknowledges deliveries that are only in the
// log (the writer's transaction is never committed), copies the files as
// a crash would leave them, and opens the copy: the replay must give the
// same records (same IDs, verdicts, duplicates), suppressions and
// aggregates as the live database, once.
func TestLogReplaysAfterCrash(t *testing.T) {
	t.Parallel()
	clock := newClock()
	opts := Options{CommitInterval: time.Hour, Now: clock.Now}
	live, path := mustOpen(t, opts)
	saveMix(t, live, 0, 30)
	crashed := snapshot(t, path)
	if n := len(mustRecords(t, crashed, Options{CommitInterval: -1, ReadOnly: true, Now: clock.Now})); n != 30 {
		// The read-only open applied the log (through a read-write
		// open, there being no writer on the copy).
		t.Fatalf("read-only open of the crashed copy: %d records, want 30", n)
	}

	crashed = snapshot(t, path)
	db, err := Open(crashed, opts)
	tcheck(t, err, "opening the crashed copy")
	sameContents(t, "replayed", db, live)
	tcheck(t, db.Check(), "check after replay")
	saveMix(t, db, 30, 3)
	tcheck(t, db.Close(), "closing")

	db, err = Open(crashed, opts)
	tcheck(t, err, "reopening")
	defer db.Close()
	if recs, _, _ := contents(t, db); len(recs) != 33 {
		t.Fatalf("after a second open: %d records, want 33 (replayed twice?)", len(recs))
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

// TestLogTornTail damages the last frame of the log (a crash in the
// middle of its write, which was therefore never acknowledged): the
// frames before it are replayed, the damaged one is not, and the file
// opens.
func TestLogTornTail(t *testing.T) {
	t.Parallel()
	live, path := mustOpen(t, Options{CommitInterval: time.Hour})
	saveMix(t, live, 0, 4)
	// The log's frames so far, then one more.
	before, err := os.ReadFile(walPath(path))
	tcheck(t, err, "reading log")
	reqs, _, err := readFrames(before, 0)
	tcheck(t, err, "reading frames")
	if len(reqs) != 4 {
		t.Fatalf("log holds %d frames, want 4", len(reqs))
	}
	saveMix(t, live, 4, 1)
	for name, damage := range map[string]func(b []byte, end int){
		"cut":     func(b []byte, end int) { clear(b[end-10:]) },
		"changed": func(b []byte, end int) { b[end-20] ^= 0xff },
	} {
		crashed := snapshot(t, path)
		b, err := os.ReadFile(walPath(crashed))
		tcheck(t, err, "reading log")
		end := frameEnd(t, b, 5)
		damage(b, end)
		tcheck(t, os.WriteFile(walPath(crashed), b, 0o600), "damaging log")
		if n := len(mustRecords(t, crashed, Options{})); n != 4 {
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

// TestLogStaleFramesIgnored commits, then logs fewer frames than before
// over the start of the log: the older frames after them (already in the
// file) must not be applied again.
func TestLogStaleFramesIgnored(t *testing.T) {
	t.Parallel()
	live, path := mustOpen(t, Options{CommitInterval: time.Hour})
	saveMix(t, live, 0, 6)
	if _, err := live.Query(store.Filter{}); err != nil { // commits
		t.Fatal(err)
	}
	saveMix(t, live, 6, 2)
	crashed := snapshot(t, path)
	b, err := os.ReadFile(walPath(crashed))
	tcheck(t, err, "reading log")
	if _, last, err := readFrames(b, 0); err != nil || last != 8 {
		t.Fatalf("log's last frame %d (%v), want 8", last, err)
	}
	// The two new frames are the size of the first two old ones, so
	// old frames 3 to 6 follow them whole: what must stop the replay is
	// their numbers.
	if _, last, err := readFrames(b[frameEnd(t, b, 2):], 0); err != nil || last != 6 {
		t.Fatalf("stale frames after the new ones: last %d (%v), want 6", last, err)
	}
	db, err := Open(crashed, Options{})
	tcheck(t, err, "opening the crashed copy")
	defer db.Close()
	sameContents(t, "replayed", db, live)
}

// TestLogUnappliedReadOnly: a read-only open of a file whose log holds
// deliveries, while another reader holds the file so that the log can't
// be applied, says so instead of answering without them.
func TestLogUnappliedReadOnly(t *testing.T) {
	t.Parallel()
	live, path := mustOpen(t, Options{CommitInterval: time.Hour})
	saveMix(t, live, 0, 2)
	crashed := snapshot(t, path)
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

// TestCommitFailureKeepsLogged fails every commit of the file after the
// deliveries were logged and acknowledged: Close reports it, and the
// next Open applies them from the log.
func TestCommitFailureKeepsLogged(t *testing.T) {
	t.Parallel()
	fail := errors.New("disk on fire")
	path := filepath.Join(t.TempDir(), "bouncer.db")
	db, err := Open(path, Options{CommitInterval: time.Hour, beforeCommit: func(batch []*request) error {
		if batch == nil { // the commit of the file, not a group
			return fail
		}
		return nil
	}})
	tcheck(t, err, "open")
	saveMix(t, db, 0, 3)
	if err := db.Close(); !errors.Is(err, fail) {
		t.Fatalf("close: %v, want %v", err, fail)
	}
	if n := len(mustRecords(t, path, Options{})); n != 3 {
		t.Fatalf("after reopening: %d records, want 3", n)
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

// TestCommitRetried: after a failed commit of the file, a reader's next
// request commits the logged deliveries, so it sees them.
func TestCommitRetried(t *testing.T) {
	t.Parallel()
	var failing atomic.Bool
	failing.Store(true)
	db, _ := mustOpen(t, Options{CommitInterval: time.Hour, beforeCommit: func(batch []*request) error {
		if batch == nil && failing.Load() {
			return errors.New("disk on fire")
		}
		return nil
	}})
	saveMix(t, db, 0, 3)
	if recs, _ := db.Query(store.Filter{}); len(recs) != 0 {
		t.Fatalf("%d records visible while every commit fails", len(recs))
	}
	failing.Store(false)
	if recs, err := db.Query(store.Filter{}); err != nil || len(recs) != 3 {
		t.Fatalf("after the disk recovered: %d records (%v), want 3", len(recs), err)
	}
}
