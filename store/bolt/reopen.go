package bolt

import (
	"errors"
	"sync/atomic"
	"time"
)

// The failed state.
//
// A write or sync of bbolt's file that fails (EIO, ENOSPC) leaves the DB
// in doubt: after a failed fsync the kernel may have dropped the dirty
// pages or kept them marked clean (PostgreSQL's "fsyncgate", 2018: a
// retried fsync then succeeds without writing them), and bbolt may have
// written some pages of the commit, maybe its meta page. So the writer
// does not retry the write. It enters the failed state: the deliveries
// of the group and every Save queued or arriving get a *failedError
// (server: 451 4.3.0). Then it closes bbolt, asks the kernel to drop the
// file's cached pages (dropCache), and opens it again as Open does: bbolt
// reads its last committed meta page. Only once that succeeds does a
// Save succeed again. A reopen that fails (the disk still failing)
// leaves the files closed and is tried again after a back-off that
// doubles up to maxBackoff; a reopen that succeeds while the next write
// fails again keeps doubling it, so a disk that stays broken costs an
// attempt every few seconds, not a busy loop.

// Back-off between reopen attempts.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Faults counts the DB's failed writes and reopens since Open.
type Faults struct {
	// WriteErrors counts failed writes and syncs by operation: OpCommit
	// (the only one since the write-ahead log is gone).
	WriteErrors map[string]int64
	// Reopens counts the times the files were opened again after a
	// failure; ReopenErrors the attempts that failed.
	Reopens, ReopenErrors int64
	// Failed is set while Saves fail because of a failed write.
	Failed bool
}

// faultCounters are the counters behind Faults.
type faultCounters struct {
	commit                atomic.Int64
	reopens, reopenErrors atomic.Int64
}

// Faults returns the counters of failed writes and reopens.
func (db *DB) Faults() Faults {
	c := &db.faults
	return Faults{
		WriteErrors: map[string]int64{OpCommit: c.commit.Load()},
		Reopens:     c.reopens.Load(), ReopenErrors: c.reopenErrors.Load(),
		Failed: db.failed.Load() != nil,
	}
}

// enterFailed puts the DB in the failed state after err, a *diskError
// (from the writer goroutine). Called again while failed it only counts.
func (db *DB) enterFailed(err error) {
	db.faults.commit.Add(1)
	db.rollback()
	if db.failErr != nil {
		return
	}
	db.failErr = &failedError{cause: err}
	db.failed.Store(db.failErr)
	db.retryAt = time.Now().Add(db.backoff)
	db.backoff = min(max(2*db.backoff, minBackoff), maxBackoff)
}

// errNotOpen is the cause given when the files are closed.
var errNotOpen = errors.New("database file not open")

// failedErr is the error of a Save or read while the DB is failed.
func (db *DB) failedErr() error {
	if fe := db.failed.Load(); fe != nil {
		return fe
	}
	return &failedError{cause: errNotOpen}
}

// reopen closes the file and opens it again from the disk (from the
// writer goroutine, while failed). Readers wait for it.
func (db *DB) reopen() {
	db.fileMu.Lock()
	defer db.fileMu.Unlock()
	db.closeFiles()
	dropCache(db.path)
	fe, backoff := db.failErr, db.backoff
	db.failErr = nil
	err := db.openFiles()
	if err != nil {
		// A failed commit in openFiles entered the state again:
		// this attempt is what counts.
		db.closeFiles()
		db.faults.reopenErrors.Add(1)
		db.failErr = &failedError{cause: fe.cause, reopen: err}
		db.failed.Store(db.failErr)
		db.retryAt = time.Now().Add(backoff)
		db.backoff = min(max(2*backoff, minBackoff), maxBackoff)
		if db.opts.OnReopen != nil {
			db.opts.OnReopen(db.failErr)
		}
		return
	}
	db.faults.reopens.Add(1)
	db.failed.Store(nil)
	// Opening the file is no proof that the disk works again: only a
	// new group made durable resets the back-off (process).
	db.backoff = backoff
	if db.opts.OnReopen != nil {
		db.opts.OnReopen(nil)
	}
}

// closeFiles closes bbolt, if open (from the writer).
func (db *DB) closeFiles() {
	db.rollback()
	if db.bolt != nil {
		db.bolt.Close()
		db.bolt = nil
	}
}
