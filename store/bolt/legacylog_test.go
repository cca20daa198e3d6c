package bolt

import (
	"errors"
	"os"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"
)

// TestOldLogAppliedWithoutLog: a database and its write-ahead log as a
// crash left them while the log was on (an older version, or
// commit_interval > 0), opened with the default Options (no log): every
// acknowledged delivery is there, with the same records, suppressions
// and aggregates as the live database, the log is gone, and a second
// open does not apply anything twice.
func TestOldLogAppliedWithoutLog(t *testing.T) {
	t.Parallel()
	clock := newClock()
	live, path := mustOpen(t, Options{CommitInterval: time.Hour, Now: clock.Now})
	saveMix(t, live, 0, 30)
	crashed := snapshot(t, path)
	if fi, err := os.Stat(walPath(crashed)); err != nil || fi.Size() == 0 {
		t.Fatalf("the crashed copy has no log to apply: %v", err)
	}
	// Nothing but the log holds the deliveries.
	if n := fileRecords(t, crashed); n != 0 {
		t.Fatalf("the crashed copy's file holds %d records, want 0 (all in the log)", n)
	}

	var infos []LogInfo
	db, err := Open(crashed, Options{Now: clock.Now, OnLog: func(li LogInfo) { infos = append(infos, li) }})
	tcheck(t, err, "opening the crashed copy without the log")
	sameContents(t, "applied without the log", db, live)
	tcheck(t, db.Check(), "check after applying")
	if len(infos) != 1 || infos[0].Applied != 30 {
		t.Errorf("OnLog told %+v, want one LogInfo with 30 frames applied", infos)
	}
	if _, err := os.Stat(walPath(crashed)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the log is still there after it was applied without the log: %v", err)
	}
	saveMix(t, db, 30, 3)
	if _, err := os.Stat(walPath(crashed)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a log was written without the log: %v", err)
	}
	tcheck(t, db.Close(), "closing")
	if n := fileRecords(t, crashed); n != 33 {
		t.Fatalf("the file holds %d records after close, want 33", n)
	}

	// The log left again beside the file (say, a copy restored with it):
	// its frames are numbered at most the file's wal_seq, so nothing is
	// applied twice.
	b, err := os.ReadFile(walPath(path))
	tcheck(t, err, "reading the live log")
	tcheck(t, os.WriteFile(walPath(crashed), b, 0o600), "putting the log back")
	db, err = Open(crashed, Options{Now: clock.Now})
	tcheck(t, err, "reopening")
	defer db.Close()
	if recs, _, _ := contents(t, db); len(recs) != 33 {
		t.Fatalf("after a second open: %d records, want 33 (applied twice?)", len(recs))
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
