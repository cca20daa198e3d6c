package main

import (
	"context"
	"fmt"
)

// checkCmd verifies the database file: bbolt's page consistency and the
// store's own invariants (indexes against records, suppressions against
// their domain index). It needs the file, so the server must be stopped.
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
	db, err := openStore(cfg, true, nil)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.Check(); err != nil {
		return fmt.Errorf("database %s has problems:\n%w", cfg.Store.Path, err)
	}
	fmt.Fprintf(a.stdout, "database %s: ok\n", cfg.Store.Path)
	return nil
}
