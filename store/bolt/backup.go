package bolt

import (
	"fmt"
	"io"

	bbolt "go.etcd.io/bbolt"
)

// Backup writes a consistent copy of the database file to w while Saves
// go on, and returns the bytes written: every Save acknowledged before
// the call is in the file, which is streamed as one read transaction
// sees it (bbolt's Tx.WriteTo). The copy is a database file to open as
// it is; its log position says the frames of an old log applied to the
// file are in it.
func (db *DB) Backup(w io.Writer) (n int64, err error) {
	err = db.view(func(tx *bbolt.Tx) error {
		var werr error
		n, werr = tx.WriteTo(w)
		return werr
	})
	if err != nil {
		return n, fmt.Errorf("backing up %s: %w", db.Path(), err)
	}
	return n, nil
}
