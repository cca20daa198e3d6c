package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/bouncer/bouncer/api"
	"github.com/bouncer/bouncer/store"
)

const exportUsage = `export suppressions|bounces [--format csv|json|postfix] [query filters]

Streams the suppression list (csv, json lines, or a Postfix access map) or
the bounce records (csv, json lines) to standard output. Through the admin
API when a server runs, else from the database file, read-only.`

// exportCmd streams the suppression list or bounce records one at a
// time, never the whole set in memory.
func (a *app) exportCmd(ctx context.Context, args []string) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		fmt.Fprintf(a.stdout, "Usage: bouncer %s\n", exportUsage)
		return nil
	}
	if len(args) == 0 || (args[0] != "suppressions" && args[0] != "bounces") {
		return usageError("usage: bouncer %s", exportUsage)
	}
	what := args[0]
	fs := newFlags("export", exportUsage, a.stderr)
	cfgPath := commonFlags(fs)
	format := fs.String("format", "json", "output `format`: csv, json (one object per line), postfix (suppressions: an access(5) map)")
	var f store.Filter
	finishFilter := recordFilterFlags(fs, &f, "export") // suppressions: only --domain applies
	pos, err := parseFlags(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError("export: unexpected arguments %q", pos)
	}
	if !api.ValidExportFormat(what, *format) {
		return usageError("export %s: --format %q: want csv or json (or postfix for suppressions)", what, *format)
	}
	if err := finishFilter(); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	q, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer q.Close()
	w := bufio.NewWriterSize(a.stdout, 64<<10)
	switch q := q.(type) {
	case apiQuerier:
		c := *q.Client
		c.HTTP = streamClient()
		err = c.Export(ctx, what, *format, f, w)
	case dbQuerier:
		err = exportFile(q.db, what, *format, f, w)
	}
	if err != nil {
		return err
	}
	return w.Flush()
}

// streamClient is an HTTP client for exports: no cap on the whole answer,
// which may be long, but bounded waits to connect and for the headers.
func streamClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		ResponseHeaderTimeout: apiTimeout,
	}}
}

// exportFile writes the export from the database file.
func exportFile(db store.Store, what, format string, f store.Filter, w *bufio.Writer) error {
	if what == "suppressions" {
		return api.WriteSuppressions(w, format, func(fn func(store.Suppression) error) error {
			return db.Suppressions(f.Domain, fn)
		})
	}
	f.Limit = 0 // all
	return api.WriteBounces(w, format, func(fn func(store.Record) error) error {
		return db.ForEach(f, fn)
	})
}
