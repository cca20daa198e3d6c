// Command pgserver runs a private PostgreSQL server for benchmarks: initdb
// into a folder (or reuse the cluster already there), postgres on
// 127.0.0.1 on a free port with fsync on unless -fsync=false, and a
// database for bouncer. The first line on stdout is the connection URL;
// the server runs until SIGINT or SIGTERM and is then stopped cleanly
// (PostgreSQL's fast shutdown). The folder is kept.
//
//	go run ./bench/pgserver -dir /var/tmp/pg
//	postgres://postgres@127.0.0.1:41235/bouncer?sslmode=disable
//
// It uses the Debian binaries under /usr/lib/postgresql/*/bin (or initdb
// on PATH), as the postgres user when run as root.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/bouncer/bouncer/store/postgres/pgtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "pgserver:", err)
		os.Exit(1)
	}
}

type settings []string

func (s *settings) String() string     { return fmt.Sprint(*s) }
func (s *settings) Set(v string) error { *s = append(*s, v); return nil }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o pgtest.Options
	db := "bouncer"
	fs := flag.NewFlagSet("pgserver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Dir, "dir", "", "`folder` for the cluster (data/ and postgres.log); reused if it holds one (required)")
	fs.BoolVar(&o.Fsync, "fsync", true, "fsync and full_page_writes on, as in production")
	fs.StringVar(&db, "db", db, "`database` to create (if missing) and name in the URL")
	fs.Var((*settings)(&o.Settings), "c", "more server settings, `name=value` (repeatable), e.g. -c shared_buffers=1GB")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.Dir == "" || fs.NArg() > 0 {
		return errors.New("usage: pgserver -dir FOLDER [-fsync=false] [-db NAME] [-c name=value ...]")
	}
	c, err := pgtest.StartClusterWith(o)
	if err != nil {
		return err
	}
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = c.CreateDatabase(cctx, db)
	cancel()
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, c.URL(db))
	fmt.Fprintf(stderr, "pgserver: running (fsync %v, folder %s); SIGINT or SIGTERM stops it\n", o.Fsync, o.Dir)
	<-ctx.Done()
	fmt.Fprintln(stderr, "pgserver: stopping")
	return c.Close()
}
