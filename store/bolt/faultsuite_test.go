//go:build linux

package bolt

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/faulttest"
)

// TestFaultSuite runs the engines' fault-injection suite on a real file
// whose bbolt writes fail through faultFS.
func TestFaultSuite(t *testing.T) {
	t.Parallel()
	open := func(t *testing.T, path string, fs *faultFS) *DB {
		t.Helper()
		db, err := Open(path, Options{files: fs.hooks(), LockTimeout: time.Second})
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
	// stopped: the process dies mid-commit: from one instant nothing
	// more reaches the disk, then a new process opens the file.
	stopped := func(name string) faulttest.Fault {
		return faulttest.Fault{Name: name, Persistent: true, Open: func(t *testing.T) (store.Store, faulttest.Injector) {
			fs := newFaultFS(t)
			path := filepath.Join(t.TempDir(), "bouncer.db")
			db := open(t, path, fs)
			return db, faulttest.Injector{
				Start: func(*testing.T) { fs.setDBFull(true) },
				Stop: func(t *testing.T) store.Store {
					db.Close()
					fs.setDBFull(false)
					return open(t, path, newFaultFS(t))
				},
				Reopen: reopen,
			}
		}}
	}
	faulttest.Run(t, []faulttest.Fault{
		disk("commit ENOSPC", (*faultFS).setDBFull),
		stopped("process stopped mid-commit"),
	})
}
