package bolt

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/bouncer/bouncer/store"
)

// The files a DB writes, and what a failed write of them means.
//
// The log is written through logFile and bbolt opens its file through
// fileHooks.openDB (bbolt's Options.OpenFile), so that tests can make
// the disk fail where the kernel cannot be asked to (faultfs_test.go).

// logFile is the write-ahead log's file: an *os.File (osFile) except in
// tests.
type logFile interface {
	io.ReaderAt
	io.WriterAt
	Stat() (os.FileInfo, error)
	Truncate(size int64) error
	// Sync is a full fsync; Datasync flushes the data and the size
	// (fdatasync where the system has it).
	Sync() error
	Datasync() error
	Close() error
}

// osFile is a logFile on the operating system's file.
type osFile struct{ *os.File }

func (f osFile) Datasync() error { return fdatasync(f.File) }

// fileHooks opens the database's files; nil opens them with the os
// package. Only tests set one (Options.files).
type fileHooks struct {
	openLog func(name string) (logFile, error)
	openDB  func(name string, flag int, perm os.FileMode) (*os.File, error)
	// mmapSize is bbolt's InitialMmapSize (0: bbolt's default).
	mmapSize int
}

func (h *fileHooks) openLogFile(name string) (logFile, error) {
	if h != nil && h.openLog != nil {
		return h.openLog(name)
	}
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

// Operations whose failure puts the DB in the failed state, as counted in
// Faults.WriteErrors.
const (
	OpLogWrite = "log_write" // writing frames to the log (or cutting it back)
	OpLogSync  = "log_sync"  // fdatasync of the log
	OpCommit   = "commit"    // bbolt's commit: its page writes and fsyncs
)

// diskError is a failed write or sync of one of the DB's files. After one
// the writer trusts neither its open transaction nor the page cache: it
// closes both files and opens them again from the disk (reopen.go).
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
