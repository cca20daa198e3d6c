package bolt

import (
	"errors"
	"sync/atomic"
	"time"
)

// The failed state.
//
// A write or sync of the log or of bbolt's file that fails (EIO, ENOSPC)
// leaves the DB in doubt: the open transaction holds changes nobody can
// vouch for, and after a failed fsync the kernel may have dropped the
// dirty pages or kept them marked clean (PostgreSQL's "fsyncgate", 2018:
// a retried fsync then succeeds without writing them). So the writer
// does not retry the write. It enters the failed state: the deliveries
// of the group and every Save queued or arriving get a *failedError
// (server: 451 4.3.0), the transaction is dropped, and so are the logged
// deliveries kept for the next commit, because the log on disk has them.
// Then it closes bbolt and the log, asks the kernel to drop their cached
// pages (dropCache), and opens both again as Open does: bbolt reads its
// last committed meta page, the log replays every frame synced after it
// (each was acknowledged). Only once that replay is committed does a
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
	// WriteErrors counts failed writes and syncs by operation: OpLogWrite,
	// OpLogSync, OpCommit.
	WriteErrors map[string]int64
	// Reopens counts the times the files were opened again after a
	// failure; ReopenErrors the attempts that failed.
	Reopens, ReopenErrors int64
	// Failed is set while Saves fail because of a failed write.
	Failed bool
}

// faultCounters are the counters behind Faults.
type faultCounters struct {
	logWrite, logSync, commit atomic.Int64
	reopens, reopenErrors     atomic.Int64
}

// Faults returns the counters of failed writes and reopens.
func (db *DB) Faults() Faults {
	c := &db.faults
	return Faults{
		WriteErrors: map[string]int64{OpLogWrite: c.logWrite.Load(), OpLogSync: c.logSync.Load(), OpCommit: c.commit.Load()},
		Reopens:     c.reopens.Load(), ReopenErrors: c.reopenErrors.Load(),
		Failed: db.failed.Load() != nil,
	}
}

// count counts a failed operation.
func (c *faultCounters) count(op string) {
	switch op {
	case OpLogWrite:
		c.logWrite.Add(1)
	case OpLogSync:
		c.logSync.Add(1)
	default:
		c.commit.Add(1)
	}
}

// enterFailed puts the DB in the failed state after err, a *diskError
// (from the writer goroutine). Called again while failed it only counts.
func (db *DB) enterFailed(err error) {
	op := OpCommit
	if de, ok := err.(*diskError); ok {
		op = de.Op
	}
	db.faults.count(op)
	if db.tx != nil {
		db.tx.Rollback()
		db.tx, db.txw = nil, nil
	}
	// The log on disk holds them; what the writer remembers is not
	// what it reads back.
	db.pending, db.pendingBytes = nil, 0
	db.dirty.Store(false)
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

// reopen closes the files and opens them again from the disk, replaying
// the log (from the writer goroutine, while failed). Readers wait for it.
func (db *DB) reopen() {
	db.fileMu.Lock()
	defer db.fileMu.Unlock()
	db.closeFiles()
	dropCache(db.path)
	dropCache(walPath(db.path))
	fe, backoff := db.failErr, db.backoff
	db.failErr = nil // commitOpen refuses while it is set
	err := db.openFiles()
	if err != nil {
		// A failed commit of the replay entered the state again:
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
	// The replay's commit is no proof that the disk works again: only
	// a new group made durable resets the back-off (process).
	db.backoff = backoff
	if db.opts.OnReopen != nil {
		db.opts.OnReopen(nil)
	}
}

// closeFiles closes the log and bbolt, if open (from the writer).
func (db *DB) closeFiles() {
	if db.tx != nil {
		db.tx.Rollback()
		db.tx, db.txw = nil, nil
	}
	if db.wal != nil {
		db.wal.close()
		db.wal = nil
	}
	if db.bolt != nil {
		db.bolt.Close()
		db.bolt = nil
	}
}
