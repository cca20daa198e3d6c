package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/bouncer/bouncer/store/bolt"
)

// checkCmd verifies the database file: bbolt's page consistency and the
// store's own invariants (indexes against records, suppressions against
// their domain index). It needs the file, so the server must be stopped.
// A damaged file gets the list of its damaged pages, never a panic.
func (a *app) checkCmd(_ context.Context, args []string) error {
	fs := newFlags("check", "check [-config FILE]\n\nVerifies the database; run it while the server is stopped.", a.stderr)
	cfgPath := commonFlags(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError("check: unexpected argument %q", pos[0])
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	db, err := openStore(cfg, true, nil, a.logNote)
	if errors.Is(err, bolt.ErrDamaged) {
		return a.damageReport(cfg, err)
	}
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.Check(); errors.Is(err, bolt.ErrDamaged) {
		return a.damageReport(cfg, err)
	} else if err != nil {
		return fmt.Errorf("database %s has problems:\n%w", cfg.Store.Path, err)
	}
	fmt.Fprintf(a.stdout, "database %s: ok\n", cfg.Store.Path)
	return nil
}

// logNote tells a command's user what opening the database did with its
// write-ahead log (frames applied, a damaged log kept aside).
func (a *app) logNote(li bolt.LogInfo) {
	fmt.Fprintf(a.stderr, "bouncer: database %s\n", li)
}

// damageReport prints every damaged page of the database (walking the
// file without bbolt) and the way back; exit status 1.
func (a *app) damageReport(cfg Config, err error) error {
	if werr := bolt.CheckFile(cfg.Store.Path); werr != nil {
		err = werr
	}
	var de *bolt.DamageError
	if errors.As(err, &de) {
		err = de
	}
	fmt.Fprintln(a.stdout, err)
	return &exitError{code: 1, err: fmt.Errorf("database %s is damaged: run `%s` to copy what it still holds, or restore a backup",
		cfg.Store.Path, hintCommand(cfg, "salvage", "--to", "NEW.db"))}
}

// damagedError is the one line a command gives for a damaged database:
// its first problem and what to run.
// It still matches bolt.ErrDamaged.
func damagedError(cfg Config, err error) error {
	return &exitError{code: 1, err: &oneLine{err: err, msg: fmt.Sprintf("database %s is damaged (%s): run `%s` to see where, then `%s` or restore a backup",
		cfg.Store.Path, firstProblem(err), hintCommand(cfg, "check"), hintCommand(cfg, "salvage", "--to", "NEW.db"))}}
}

// oneLine is an error with a message of its own for err.
type oneLine struct {
	err error
	msg string
}

func (e *oneLine) Error() string { return e.msg }
func (e *oneLine) Unwrap() error { return e.err }

// firstProblem says, on one line, where err finds the damage.
func firstProblem(err error) string {
	var de *bolt.DamageError
	if !errors.As(err, &de) {
		return "unreadable"
	}
	if len(de.Problems) > 0 {
		return de.Problems[0].String()
	}
	var parts []string
	if de.Page != 0 {
		parts = append(parts, fmt.Sprintf("page %d", de.Page))
	}
	if de.Bucket != "" {
		parts = append(parts, "bucket "+de.Bucket)
	}
	if de.Detail != "" {
		parts = append(parts, strings.SplitN(de.Detail, "\n", 2)[0])
	}
	if len(parts) == 0 {
		return "unreadable"
	}
	return strings.Join(parts, ": ")
}

// hintCommand is a bouncer command line for a hint, with the -config the
// user gave.
func hintCommand(cfg Config, args ...string) string {
	parts := []string{"bouncer", args[0]}
	if cfg.file != "" {
		parts = append(parts, "-config", shellQuote(cfg.file))
	}
	for _, a := range args[1:] {
		parts = append(parts, shellQuote(a))
	}
	return strings.Join(parts, " ")
}
