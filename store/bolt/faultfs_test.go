//go:build linux

package bolt

import (
	"os"
	"sync"
	"syscall"
	"testing"
)

// faultFS opens a DB's file so that a test can make it fail where the
// kernel cannot be asked to: bbolt's file is made to write to /dev/full
// (ENOSPC from the kernel, in bbolt's own commit).
type faultFS struct {
	t  testing.TB
	mu sync.Mutex
	// dbFull sends the writes of bbolt's open files to /dev/full and
	// fails opening it again with ENOSPC.
	dbFull bool
	dbFd   int   // descriptor of bbolt's file, the last opened (-1: none)
	saved  []int // real descriptors of files sent to /dev/full
}

func newFaultFS(t testing.TB) *faultFS {
	fs := &faultFS{t: t, dbFd: -1}
	t.Cleanup(func() { fs.setDBFull(false) })
	return fs
}

// hooks are the Options.files of a DB on fs. The large mmap keeps bbolt
// from mapping its file again while it points to /dev/full.
func (fs *faultFS) hooks() *fileHooks {
	return &fileHooks{openDB: fs.openDB, mmapSize: 64 << 20}
}

// setDBFull sends bbolt's open file to /dev/full, so that its writes
// fail with ENOSPC, and fails opening it again; false lets it be opened
// again (the file sent to /dev/full stays there: the DB reopens after
// its failed commit, or after the first commit that fails later). Turn
// it on only while the DB is serving: the descriptor it redirects is the
// one bbolt opened last.
func (fs *faultFS) setDBFull(full bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.dbFull == full {
		return
	}
	fs.dbFull = full
	if !full {
		for _, real := range fs.saved {
			syscall.Close(real) // also drops the file lock it holds
		}
		fs.saved = nil
		return
	}
	if fs.dbFd < 0 {
		return
	}
	dev, err := os.OpenFile("/dev/full", os.O_RDWR, 0)
	if err != nil {
		fs.t.Fatalf("opening /dev/full: %v", err)
	}
	defer dev.Close()
	// The current file: bbolt closes it only in the writer's reopen,
	// which needs a failed write first. (Its number was read when it
	// was opened: os.File.Fd here would race with that close.)
	fd := fs.dbFd
	real, err := syscall.Dup(fd)
	if err != nil {
		fs.t.Fatalf("dup: %v", err)
	}
	if err := syscall.Dup3(int(dev.Fd()), fd, syscall.O_CLOEXEC); err != nil {
		fs.t.Fatalf("dup3: %v", err)
	}
	fs.saved = append(fs.saved, real)
}

func (fs *faultFS) openDB(name string, flag int, perm os.FileMode) (*os.File, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.dbFull {
		return nil, &os.PathError{Op: "open", Path: name, Err: syscall.ENOSPC}
	}
	f, err := os.OpenFile(name, flag, perm)
	if err == nil {
		fs.dbFd = int(f.Fd())
	}
	return f, err
}
