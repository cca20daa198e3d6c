package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
	"github.com/bouncer/bouncer/store/postgres"
)

// mover is a store whose whole content can be read out and written in
// (bolt.DB, postgres.DB): bouncer copy.
type mover interface {
	Export(ctx context.Context, fn func(*store.Item) error) error
	Import(ctx context.Context, items []store.Item, replace bool) error
	Counts(ctx context.Context) (map[string]int, error)
	Close() error
}

// finisher is a target with work to do after a bulk copy (postgres.DB:
// ANALYZE).
type finisher interface {
	FinishImport(ctx context.Context) error
}

const copyUsage = `copy -from STORE -to STORE [-schema S] [-into-nonempty] [-batch N]

Copies everything a store holds into another: records, raw messages,
dedupe keys, suppressions, soft counters, storm counters, flags and holds,
domain aggregates (copied, with their status index), MX checks, daily
counters, outbox targets and events (queued and dead, with their seqs).
STORE is bbolt:PATH (a file; the source is opened read-only, so bouncer
serve must not hold it: stop it, or copy a "bouncer backup"), a
postgres:// URL (the password may also come from PGPASSWORD), or
"config" for the store of the -config file. The target must be empty
unless -into-nonempty; a new bbolt file is created. The copy goes in
batches, each one transaction; at the end the counts of each kind are
read back from both sides and compared.`

// copyCmd is bouncer copy.
func (a *app) copyCmd(ctx context.Context, args []string) error {
	fs := newFlags("copy", copyUsage, a.stderr)
	cfgPath := commonFlags(fs)
	from := fs.String("from", "", "the store to copy from: bbolt:PATH, postgres://URL or config")
	to := fs.String("to", "", "the store to copy into: bbolt:PATH, postgres://URL or config")
	schema := fs.String("schema", "bouncer", "PostgreSQL schema of a postgres:// store")
	intoNonempty := fs.Bool("into-nonempty", false, "copy into a store that holds data already (items with the same key are replaced)")
	batch := fs.Int("batch", 5000, "items per transaction (1-100000)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 || *from == "" || *to == "" {
		return usageError("copy: want -from STORE and -to STORE, and no arguments")
	}
	if sameStore(*from, *to) {
		return usageError("copy: -from and -to name the same store")
	}
	if *batch < 1 || *batch > 100_000 {
		return usageError("copy: -batch %d: want 1 to 100000", *batch)
	}
	var cfg *Config
	if *from == "config" || *to == "config" {
		c, err := loadConfig(*cfgPath)
		if err != nil {
			return err
		}
		cfg = &c
	}
	src, err := openMover(ctx, *from, *schema, cfg, true)
	if err != nil {
		return fmt.Errorf("copy: source: %w", err)
	}
	defer src.Close()
	dst, err := openMover(ctx, *to, *schema, cfg, false)
	if err != nil {
		return fmt.Errorf("copy: target: %w", err)
	}
	defer dst.Close()
	c := copier{src: src, dst: dst, batch: *batch, replace: *intoNonempty, progress: a.stderr}
	if err := c.run(ctx); err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	if err := dst.Close(); err != nil {
		return fmt.Errorf("copy: closing the target: %w", err)
	}
	return c.report(a.stdout)
}

// sameStore reports whether two store arguments name the same bbolt file
// or the same PostgreSQL URL (schemas are compared by the caller's flag,
// which both share).
func sameStore(a, b string) bool {
	canon := func(s string) string {
		if p, ok := strings.CutPrefix(s, "bbolt:"); ok {
			if abs, err := filepath.Abs(p); err == nil {
				return "bbolt:" + abs
			}
		}
		return s
	}
	return canon(a) == canon(b)
}

// openMover opens the store spec names: the source read-only where the
// engine can.
func openMover(ctx context.Context, spec, schema string, cfg *Config, source bool) (mover, error) {
	switch {
	case spec == "config":
		if cfg.Store.Driver == "postgres" {
			return openMoverPostgres(ctx, cfg.Store.URL, cfg.Store.Schema, cfg.Store.PasswordFile)
		}
		return openMoverBolt(cfg.Store.Path, source)
	case strings.HasPrefix(spec, "bbolt:"):
		return openMoverBolt(strings.TrimPrefix(spec, "bbolt:"), source)
	case strings.HasPrefix(spec, "postgres://"), strings.HasPrefix(spec, "postgresql://"):
		return openMoverPostgres(ctx, spec, schema, "")
	}
	return nil, usageError("store %q: want bbolt:PATH, postgres://URL or config", store.Truncate(spec, 80))
}

func openMoverBolt(path string, source bool) (mover, error) {
	if path == "" {
		return nil, usageError("bbolt: needs a file name")
	}
	opts := bolt.Options{LockTimeout: time.Second, ReadOnly: source}
	if source {
		if _, err := os.Stat(path); err != nil {
			return nil, err
		}
	}
	db, err := bolt.Open(path, opts)
	switch {
	case errors.Is(err, bolt.ErrLocked) && source:
		return nil, fmt.Errorf("database %s is locked: a bouncer process (serve?) has it open; stop it first, or copy from a \"bouncer backup\" of it", path)
	case errors.Is(err, bolt.ErrLocked):
		return nil, fmt.Errorf("database %s is locked: a bouncer process (serve?) has it open; stop it first", path)
	case err != nil:
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	return db, nil
}

func openMoverPostgres(ctx context.Context, url, schema, passwordFile string) (mover, error) {
	opts := postgres.Options{URL: url, Schema: schema}
	if passwordFile != "" {
		b, err := os.ReadFile(passwordFile)
		if err != nil {
			return nil, fmt.Errorf("reading store.password_file: %w", err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		opts.Password = strings.TrimRight(line, "\r")
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	db, err := postgres.Open(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("opening PostgreSQL schema %s: %w", schema, err)
	}
	return db, nil
}

// copier moves the items of src into dst in batches.
type copier struct {
	src, dst mover
	batch    int
	replace  bool
	progress io.Writer // a line now and then, and what failed

	before, srcCounts, dstCounts map[string]int
	items                        int
	took                         time.Duration
}

// maxBatchBytes caps the raw bytes of one batch (RET=FULL bounces can be
// large), so a batch's memory stays bounded whatever -batch says.
const maxBatchBytes = 16 << 20

func (c *copier) run(ctx context.Context) error {
	var err error
	if c.srcCounts, err = c.src.Counts(ctx); err != nil {
		return fmt.Errorf("counting the source: %w", err)
	}
	if c.before, err = c.dst.Counts(ctx); err != nil {
		return fmt.Errorf("counting the target: %w", err)
	}
	if n := total(c.before); n > 0 && !c.replace {
		return fmt.Errorf("the target holds data already (%s); nothing copied (-into-nonempty copies into it, replacing items with the same key)", summary(c.before))
	}
	if total(c.srcCounts) == 0 {
		return errors.New("the source holds nothing: nothing copied (wrong file or schema?)")
	}
	start := time.Now()
	if err := c.pipe(ctx); err != nil {
		return err
	}
	if f, ok := c.dst.(finisher); ok {
		if err := f.FinishImport(ctx); err != nil {
			return err
		}
	}
	c.took = time.Since(start)
	if c.dstCounts, err = c.dst.Counts(ctx); err != nil {
		return fmt.Errorf("counting the target after the copy: %w", err)
	}
	return nil
}

// pipe exports in one goroutine and imports in this one, a batch at a
// time, so that reading and writing overlap; at most three batches are
// in memory.
func (c *copier) pipe(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := make(chan []store.Item, 1)
	exportErr := make(chan error, 1)
	go func() {
		defer close(batches)
		var b []store.Item
		size := 0
		send := func() error {
			select {
			case batches <- b:
			case <-ctx.Done():
				return ctx.Err()
			}
			b, size = nil, 0
			return nil
		}
		err := c.src.Export(ctx, func(it *store.Item) error {
			b = append(b, *it)
			if it.Raw != nil {
				size += len(it.Raw.Data)
			}
			if len(b) >= c.batch || size >= maxBatchBytes {
				return send()
			}
			return nil
		})
		if err == nil && len(b) > 0 {
			err = send()
		}
		exportErr <- err
	}()
	start := time.Now()
	next := start.Add(10 * time.Second)
	for b := range batches {
		if err := c.dst.Import(ctx, b, c.replace); err != nil {
			cancel()
			for range batches {
			}
			return fmt.Errorf("writing %s (items %d to %d; the %d before are committed): %w",
				batchKinds(b), c.items+1, c.items+len(b), c.items, err)
		}
		c.items += len(b)
		if time.Now().After(next) {
			fmt.Fprintf(c.progress, "copy: %d items in %s (%.0f/s), last batch: %s\n", c.items,
				time.Since(start).Round(time.Second), float64(c.items)/time.Since(start).Seconds(), batchKinds(b))
			next = time.Now().Add(10 * time.Second)
		}
	}
	if err := <-exportErr; err != nil {
		return fmt.Errorf("reading the source (the %d items before are committed): %w", c.items, err)
	}
	return nil
}

// report prints the counts of each kind on both sides; it fails when the
// target does not hold what the source does.
func (c *copier) report(w io.Writer) error {
	t := newTable(w, "KIND\tSOURCE\tTARGET", "")
	var bad []string
	for _, k := range store.DumpKinds {
		s, d, b := c.srcCounts[k], c.dstCounts[k], c.before[k]
		note := ""
		if b > 0 {
			note = fmt.Sprintf("\t(%d before)", b)
		}
		if d < s || (!c.replace && d != s) {
			bad = append(bad, k)
			note += "\tDIFFERS"
		}
		t.row(fmt.Sprintf("%s\t%d\t%d%s", k, s, d, note))
	}
	if err := t.close(); err != nil {
		return err
	}
	rate := float64(c.srcCounts[store.DumpRecords]) / c.took.Seconds()
	fmt.Fprintf(w, "copied %d items in %s (%.0f records/s)\n", c.items, c.took.Round(time.Millisecond), rate)
	if len(bad) > 0 {
		return fmt.Errorf("copy: the target's counts differ from the source's for %s", strings.Join(bad, ", "))
	}
	return nil
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// summary names the kinds a store holds, with their counts.
func summary(m map[string]int) string {
	var parts []string
	for _, k := range store.DumpKinds {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
		}
	}
	return strings.Join(parts, ", ")
}

// batchKinds names the kinds in a batch, with the first and last key of
// records and raw messages, for an error.
func batchKinds(b []store.Item) string {
	n := map[string]int{}
	var first, last string
	for i := range b {
		n[b[i].Kind()]++
		id := ""
		if r := b[i].Record; r != nil {
			id = r.ID
		} else if r := b[i].Raw; r != nil {
			id = r.MsgID
		}
		if id != "" {
			if first == "" {
				first = id
			}
			last = id
		}
	}
	s := summary(n)
	if first != "" {
		s += fmt.Sprintf(", ids %s to %s", first, last)
	}
	return s
}
