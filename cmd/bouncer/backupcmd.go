package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/bouncer/bouncer/store/bolt"
)

// backupCmd writes a consistent copy of the database to a new file: from
// the running server through the admin API (GET /v1/backup), else from
// the file, opened read-only. The copy is checked before it gets its name.
func (a *app) backupCmd(ctx context.Context, args []string) error {
	fs := newFlags("backup", "backup [-config FILE] NEW.db\n\n"+
		"Writes a consistent copy of the database to NEW.db (which must not exist), through the\n"+
		"running server's admin API, or from the file when no server runs. To restore, stop the\n"+
		"server and put the copy where store.path points (remove the old file's -wal log).", a.stderr)
	cfgPath := commonFlags(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError("backup: want one file name, the copy to write")
	}
	dst := pos[0]
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("backup: %s exists: name a new file", dst)
	}
	tmp := fmt.Sprintf("%s.tmp-%d", dst, os.Getpid())
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	n, from, err := a.backupTo(ctx, cfg, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = checkCopy(tmp)
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err == nil {
		err = syncDir(filepath.Dir(dst))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("backup: %w", err)
	}
	fmt.Fprintf(a.stdout, "backed up %s (%d bytes, %s) to %s; it passes its check\n", cfg.Store.Path, n, from, dst)
	return nil
}

// backer is a store that can copy itself (bolt.DB).
type backer interface {
	Backup(w io.Writer) (int64, error)
}

// backupTo writes the copy to w and says where it came from.
func (a *app) backupTo(ctx context.Context, cfg Config, w io.Writer) (int64, string, error) {
	q, err := connect(ctx, cfg)
	if err != nil {
		return 0, "", err
	}
	defer q.Close()
	switch q := q.(type) {
	case apiQuerier:
		c := *q.Client
		c.HTTP = &http.Client{} // a backup takes as long as the file needs
		n, err := c.Backup(ctx, w)
		return n, "from the running server", err
	case dbQuerier:
		b, ok := q.db.(backer)
		if !ok {
			return 0, "", errors.New("this store cannot be backed up by bouncer")
		}
		n, err := b.Backup(w)
		return n, "from the file", err
	}
	return 0, "", fmt.Errorf("backup: unexpected store %T", q)
}

// checkCopy runs the database check on the copy at path.
func checkCopy(path string) error {
	db, err := bolt.Open(path, bolt.Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("checking the copy: %w", err)
	}
	defer db.Close()
	if err := db.Check(); err != nil {
		return fmt.Errorf("the copy fails its check: %w", err)
	}
	return nil
}

// syncDir syncs a directory, so that a file renamed into it stays.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
