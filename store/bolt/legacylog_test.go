package bolt

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"

	bbolt "go.etcd.io/bbolt"
)

// Old logs. This version writes no log, but Open still applies one left
// by an older version (wal.go). The tests write such logs themselves:
// a DB collects the requests its writer commits (Options.beforeCommit),
// with the clock and key-generator state the writer gave each, and
// appendFrame frames them as the old writer did. A copy of the file
// taken before they were saved, with their frames as its log, is what a
// crash of an older version left: acknowledged deliveries that only the
// log holds.

// oldLog collects the requests a DB commits, each once, in order.
type oldLog struct {
	mu   sync.Mutex
	reqs []*request
	seen map[*request]bool
}

// collect is an Options.beforeCommit.
func (l *oldLog) collect(batch []*request) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = map[*request]bool{}
	}
	for _, r := range batch {
		if !l.seen[r] {
			l.seen[r] = true
			l.reqs = append(l.reqs, r)
		}
	}
	return nil
}

// take returns the requests collected since the last take.
func (l *oldLog) take() []*request {
	l.mu.Lock()
	defer l.mu.Unlock()
	reqs := l.reqs
	l.reqs = nil
	return reqs
}

// appendFrame appends r's frame, numbered seq, to b, in the format of
// the old write-ahead log (wal.go). The old writer encoded the metadata
// with its own encoder, tested to write what json.Marshal writes.
func appendFrame(b []byte, seq uint64, r *request) ([]byte, error) {
	start := len(b)
	b = binary.BigEndian.AppendUint32(b, 0) // length, below
	b = binary.BigEndian.AppendUint32(b, 0) // CRC, below
	b = binary.BigEndian.AppendUint64(b, seq)
	b = binary.BigEndian.AppendUint64(b, uint64(r.now.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, r.ids.nanos)
	b = binary.BigEndian.AppendUint32(b, r.ids.seq)
	b = append(b, r.body[:]...)
	meta, err := json.Marshal(&walMeta{Received: r.d.Received, Envelope: r.d.Envelope, Report: r.d.Report, ParseError: r.d.ParseError})
	if err != nil {
		return b[:start], fmt.Errorf("encoding log frame: %w", err)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(meta)))
	b = append(b, meta...)
	b = append(b, r.raw...)
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-8))
	binary.BigEndian.PutUint32(b[start+4:], crc32.Checksum(b[start+8:], crcTable))
	return b, nil
}

// frames returns the frames of reqs, numbered from first.
func frames(t testing.TB, first uint64, reqs []*request) []byte {
	t.Helper()
	var b []byte
	for i, r := range reqs {
		var err error
		b, err = appendFrame(b, first+uint64(i), r)
		tcheck(t, err, "framing")
	}
	return b
}

// withOldLog opens a database with opts, copies its file as it is, then
// runs fill on it. It returns the live database and the copy, beside
// which it writes the log of an older version holding every delivery
// fill saved, numbered from 1: a crash left the copy so.
func withOldLog(t *testing.T, opts Options, fill func(db *DB)) (live *DB, crashed string) {
	t.Helper()
	var l oldLog
	opts.beforeCommit = l.collect
	live, path := mustOpen(t, opts)
	crashed = snapshot(t, path)
	fill(live)
	reqs := l.take()
	if len(reqs) == 0 {
		t.Fatal("no delivery to log")
	}
	tcheck(t, os.WriteFile(walPath(crashed), oldLogFile(frames(t, 1, reqs)), 0o600), "writing the old log")
	return live, crashed
}

// oldLogFile is a log file holding frames b as the old writer left it:
// it wrote zeros over the first MB of the file when it opened it, and
// frames over them from the start.
func oldLogFile(b []byte) []byte {
	const prealloc = 1 << 20
	if len(b) < prealloc {
		b = append(b, make([]byte, prealloc-len(b))...)
	}
	return b
}

// setAppliedSeq sets the file's meta "wal_seq", the last frame of an
// old log it holds, to n.
func setAppliedSeq(t *testing.T, path string, n uint64) {
	t.Helper()
	b, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	tcheck(t, err, "bbolt open")
	tcheck(t, b.Update(func(tx *bbolt.Tx) error { return putAppliedSeq(tx, n) }), "setting wal_seq")
	tcheck(t, b.Close(), "bbolt close")
}

// TestOldLogAppliedWithoutLog: a database and the write-ahead log of an
// older version as a crash left them: every acknowledged delivery is
// there after Open, with the same records, suppressions and aggregates
// as the live database, the log is gone, no new log is written, and a
// second open does not apply anything twice.
func TestOldLogAppliedWithoutLog(t *testing.T) {
	t.Parallel()
	clock := newClock()
	live, crashed := withOldLog(t, Options{Now: clock.Now}, func(db *DB) { saveMix(t, db, 0, 30) })
	// Nothing but the log holds the deliveries.
	if n := fileRecords(t, crashed); n != 0 {
		t.Fatalf("the crashed copy's file holds %d records, want 0 (all in the log)", n)
	}
	logged, err := os.ReadFile(walPath(crashed))
	tcheck(t, err, "reading the old log")

	var infos []LogInfo
	db, err := Open(crashed, Options{Now: clock.Now, OnLog: func(li LogInfo) { infos = append(infos, li) }})
	tcheck(t, err, "opening the crashed copy")
	sameContents(t, "applied from the old log", db, live)
	tcheck(t, db.Check(), "check after applying")
	if len(infos) != 1 || infos[0].Applied != 30 || infos[0].Damaged != "" || infos[0].Torn {
		t.Errorf("OnLog told %+v, want one LogInfo with 30 frames applied", infos)
	}
	if _, err := os.Stat(walPath(crashed)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the log is still there after it was applied: %v", err)
	}
	saveMix(t, db, 30, 3)
	if _, err := os.Stat(walPath(crashed)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a log was written: %v", err)
	}
	tcheck(t, db.Close(), "closing")
	if n := fileRecords(t, crashed); n != 33 {
		t.Fatalf("the file holds %d records after close, want 33", n)
	}

	// The log left again beside the file (say, a copy restored with it):
	// its frames are numbered at most the file's wal_seq, so nothing is
	// applied twice, and it is removed.
	tcheck(t, os.WriteFile(walPath(crashed), logged, 0o600), "putting the log back")
	infos = nil
	db, err = Open(crashed, Options{Now: clock.Now, OnLog: func(li LogInfo) { infos = append(infos, li) }})
	tcheck(t, err, "reopening")
	defer db.Close()
	if recs, _, _ := contents(t, db); len(recs) != 33 {
		t.Fatalf("after a second open: %d records, want 33 (applied twice?)", len(recs))
	}
	if len(infos) != 0 {
		t.Errorf("OnLog told %+v for a log already applied", infos)
	}
	if _, err := os.Stat(walPath(crashed)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the applied log is still there: %v", err)
	}
}

// TestNoLogWritten: saving, reading and closing never create a log file.
func TestNoLogWritten(t *testing.T) {
	t.Parallel()
	db, path := mustOpen(t, Options{})
	saveMix(t, db, 0, 5)
	if _, err := db.Query(store.Filter{}); err != nil {
		t.Fatal(err)
	}
	tcheck(t, db.Close(), "closing")
	if m, _ := filepath.Glob(path + "-*"); len(m) != 0 {
		t.Fatalf("files beside the database: %v", m)
	}
}

// fileRecords counts the records in bbolt's file at path as it is, with
// no log applied.
func fileRecords(t *testing.T, path string) int {
	t.Helper()
	bdb, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	tcheck(t, err, "opening "+path+" with bbolt")
	defer bdb.Close()
	n := 0
	tcheck(t, bdb.View(func(tx *bbolt.Tx) error {
		n = tx.Bucket(bucketRecords).Stats().KeyN
		return nil
	}), "counting records")
	return n
}
