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
	// open opens a DB on fs with a short commit interval, so that the
	// file is committed while the savers run, not only the log synced.
	open := func(t *testing.T, path string, fs *faultFS) *DB {
		t.Helper()
		db, err := Open(path, Options{files: fs.hooks(), CommitInterval: 2 * time.Millisecond, LockTimeout: time.Second})
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
	disk := func(name string, set func(fs *faultFS, on bool)) faulttest.Fault {
		return faulttest.Fault{Name: name, Persistent: true, Open: func(t *testing.T) (store.Store, faulttest.Injector) {
			fs := newFaultFS(t)
			db := open(t, filepath.Join(t.TempDir(), "bouncer.db"), fs)
			return db, faulttest.Injector{
				Start:  func(*testing.T) { set(fs, true) },
				Stop:   func(*testing.T) store.Store { set(fs, false); return db },
				Reopen: reopen,
			}
		}}
	}
	faulttest.Run(t, []faulttest.Fault{
		disk("log write EIO", func(fs *faultFS, on bool) { fs.setLog(errIf(on, syscall.EIO), nil) }),
		disk("log fsync EIO", func(fs *faultFS, on bool) { fs.setLog(nil, errIf(on, syscall.EIO)) }),
		disk("commit ENOSPC", (*faultFS).setDBFull),
		// The process dies mid-commit: from one instant nothing more
		// reaches the disk (what the log had not synced is lost), then
		// a new process opens the files.
		{Name: "process stopped mid-commit", Persistent: true, Open: func(t *testing.T) (store.Store, faulttest.Injector) {
			fs := newFaultFS(t)
			path := filepath.Join(t.TempDir(), "bouncer.db")
			db := open(t, path, fs)
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
					return open(t, path, newFaultFS(t))
				},
				Reopen: reopen,
			}
		}},
	})
}
