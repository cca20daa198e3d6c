package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bouncer/bouncer/store/bolt"
)

// salvageCmd copies what the (damaged) database still holds into a new
// file and prints, per bucket, what it kept and lost. The damaged file is
// only read; the server must be stopped.
func (a *app) salvageCmd(args []string) error {
	fs := newFlags("salvage", "salvage --to NEW.db [-config FILE]\n\n"+
		"Copies every record, raw message, suppression and outbox event that can still be read\n"+
		"from the database into the new file NEW.db (which must not exist), rebuilds the indexes\n"+
		"and domain aggregates, and prints what was kept and lost. Stop the server first; then\n"+
		"point store.path at NEW.db (or move it over the old file) and start it again.", a.stderr)
	cfgPath := commonFlags(fs)
	to := fs.String("to", "", "the new database `file` to write (must not exist)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError("salvage: unexpected argument %q", pos[0])
	}
	if *to == "" {
		return usageError("salvage: --to NEW.db is required")
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if same(cfg.Store.Path, *to) {
		return usageError("salvage: --to must name a new file, not the database itself")
	}
	rep, err := bolt.Salvage(cfg.Store.Path, *to, bolt.Options{})
	if errors.Is(err, bolt.ErrExists) {
		return fmt.Errorf("salvage: %s exists: name a new file", *to)
	}
	if err != nil {
		return err
	}
	a.printSalvage(rep)
	if rep.Check != nil {
		return fmt.Errorf("salvage: the new file %s fails its check:\n%w", *to, rep.Check)
	}
	return nil
}

// same reports whether two paths name one file.
func same(a, b string) bool {
	aa, err1 := filepath.Abs(a)
	bb, err2 := filepath.Abs(b)
	if err1 == nil && err2 == nil && aa == bb {
		return true
	}
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

// printSalvage writes the per-bucket table and the notes.
func (a *app) printSalvage(rep *bolt.SalvageReport) {
	fmt.Fprintf(a.stdout, "salvaged %s into %s (%d damaged pages; %d pages read outside the page tree)\n",
		rep.From, rep.To, len(rep.Problems), rep.Orphans)
	tw := newTable(a.stdout, "BUCKET\tKEPT\tDROPPED\tLOST\tDAMAGED PAGES\tNOTE", "no buckets")
	for _, b := range rep.Buckets {
		note := b.Note
		if b.Rebuilt && note == "" {
			note = "rebuilt from the records"
		}
		tw.row(fmt.Sprintf("%s\t%d\t%d\t%d\t%d\t%s", b.Name, b.Kept, b.Dropped, b.Lost, b.Pages, note))
	}
	tw.close()
	fmt.Fprintln(a.stdout, "DROPPED: read but not decodable; LOST: known to be missing (named by what was read); more may have been on the damaged pages.")
	if rep.Stale {
		fmt.Fprintln(a.stdout, "The freelist was lost: pages outside the page tree may be old copies; check suppressions removed recently (bouncer suppress list).")
	}
	if rep.LogApplied > 0 {
		fmt.Fprintf(a.stdout, "applied %d deliveries from the old database's log\n", rep.LogApplied)
	}
	if rep.LogNote != "" {
		fmt.Fprintln(a.stdout, rep.LogNote)
	}
	fmt.Fprintf(a.stdout, "%s passes its check\n", rep.To)
}
