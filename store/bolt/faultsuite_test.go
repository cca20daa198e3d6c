//go:build linux

package bolt

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/faulttest"
)

// TestFaultSuite runs the engines' fault-injection suite on a real file
// whose log and bbolt writes fail through faultFS.
func TestFaultSuite(t *testing.T) {
	t.Parallel()
	// open opens a DB on fs: with the log (commit > 0) at a short commit
	// interval, so that the file is committed while the savers run, not
	// only the log synced; or without it (0, the default).
	open := func(t *testing.T, path string, fs *faultFS, commit time.Duration) *DB {
		t.Helper()
		db, err := Open(path, Options{files: fs.hooks(), CommitInterval: commit, LockTimeout: time.Second})
		tcheck(t, err, "open")
		t.Cleanup(func() { db.Close() })
		return db
	}
	reopen := func(t *testing.T, s store.Store) store.Store {
		s.Close()
		db, err := Open(s.(*DB).Path(), Options{LockTimeout: time.Second})
		tcheck(t, err, "opening again")
		t.Cleanup(func() { db.Close() })
		return db
	}
	const withLog = 2 * time.Millisecond
	disk := func(name string, commit time.Duration, set func(fs *faultFS, on bool)) faulttest.Fault {
		return faulttest.Fault{Name: name, Persistent: true, Open: func(t *testing.T) (store.Store, faulttest.Injector) {
			fs := newFaultFS(t)
			db := open(t, filepath.Join(t.TempDir(), "bouncer.db"), fs, commit)
			return db, faulttest.Injector{
				Start:  func(*testing.T) { set(fs, true) },
				Stop:   func(*testing.T) store.Store { set(fs, false); return db },
				Reopen: reopen,
			}
		}}
	}
	// stopped: the process dies mid-commit: from one instant nothing
	// more reaches the disk (what the log had not synced is lost), then
	// a new process opens the files.
	stopped := func(name string, commit time.Duration) faulttest.Fault {
		return faulttest.Fault{Name: name, Persistent: true, Open: func(t *testing.T) (store.Store, faulttest.Injector) {
			fs := newFaultFS(t)
			path := filepath.Join(t.TempDir(), "bouncer.db")
			db := open(t, path, fs, commit)
			return db, faulttest.Injector{
				Start: func(*testing.T) {
					// bbolt's file first: setDBFull reads its
					// descriptor, which a reopen after a failed
					// log write would close.
					fs.setDBFull(true)
					fs.setLog(syscall.EIO, syscall.EIO)
				},
				Stop: func(t *testing.T) store.Store {
					db.Close()
					fs.setLog(nil, nil)
					fs.setDBFull(false)
					return open(t, path, newFaultFS(t), commit)
				},
				Reopen: reopen,
			}
		}}
	}
	faulttest.Run(t, []faulttest.Fault{
		disk("commit ENOSPC", 0, (*faultFS).setDBFull),
		stopped("process stopped mid-commit", 0),
		disk("log write EIO", withLog, func(fs *faultFS, on bool) { fs.setLog(errIf(on, syscall.EIO), nil) }),
		disk("log fsync EIO", withLog, func(fs *faultFS, on bool) { fs.setLog(nil, errIf(on, syscall.EIO)) }),
		disk("commit ENOSPC behind the log", withLog, (*faultFS).setDBFull),
		stopped("process stopped mid-commit behind the log", withLog),
	})
}
