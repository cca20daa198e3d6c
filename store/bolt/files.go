package bolt

import (
	"errors"
	"fmt"
	"os"

	"github.com/bouncer/bouncer/store"
)

// The file a DB writes, and what a failed write of it means.
//
// bbolt opens its file through fileHooks.openDB (bbolt's
// Options.OpenFile), so that tests can make the disk fail where the
// kernel cannot be asked to (faultfs_test.go).

// fileHooks opens the database's file; nil opens it with the os
// package. Only tests set one (Options.files).
type fileHooks struct {
	openDB func(name string, flag int, perm os.FileMode) (*os.File, error)
	// mmapSize is bbolt's InitialMmapSize (0: bbolt's default).
	mmapSize int
}

// OpCommit is the operation whose failure puts the DB in the failed
// state, as counted in Faults.WriteErrors: bbolt's commit, its page
// writes and fsyncs.
const OpCommit = "commit"

// diskError is a failed write or sync of the DB's file. After one
// the writer trusts neither its open transaction nor the page cache: it
// closes the file and opens it again from the disk (reopen.go).
type diskError struct {
	Op  string
	Err error
}

func (e *diskError) Error() string { return fmt.Sprintf("%s failed: %v", e.Op, e.Err) }
func (e *diskError) Unwrap() error { return e.Err }

// ErrFailed is wrapped (with store.ErrUnavailable) by the error of every
// Save while the DB is in the failed state: a write or sync of its files
// failed, and it has not yet been opened again from the disk.
var ErrFailed = errors.New("database write failed; reopening it from disk")

// failedError is what Saves get while the DB is failed: the write that
// failed, and why the last attempt to reopen failed, if one did.
type failedError struct{ cause, reopen error }

func (e *failedError) Error() string {
	if e.reopen != nil {
		return fmt.Sprintf("%v: %v (reopening: %v)", ErrFailed, e.cause, e.reopen)
	}
	return fmt.Sprintf("%v: %v", ErrFailed, e.cause)
}

func (e *failedError) Is(target error) bool {
	return target == ErrFailed || target == store.ErrUnavailable
}

func (e *failedError) Unwrap() error { return e.cause }
