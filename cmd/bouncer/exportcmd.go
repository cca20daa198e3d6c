package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
)

const exportUsage = "export suppressions|bounces [--format csv|json|postfix] [query filters]"

// exportCmd streams the suppression list or bounce records from the
// database file (read-only, so with serve stopped or on a copy): one
// record at a time, never the whole set in memory.
func (a *app) exportCmd(ctx context.Context, args []string) error {
	if len(args) == 0 || (args[0] != "suppressions" && args[0] != "bounces") {
		return usageError("usage: bouncer %s", exportUsage)
	}
	what := args[0]
	fs := newFlags("export", exportUsage, a.stderr)
	cfgPath := commonFlags(fs)
	format := fs.String("format", "json", "output `format`: csv, json (one object per line), postfix (suppressions: an access(5) map)")
	domain := fs.String("domain", "", "only this recipient `domain`")
	var f store.Filter
	fs.StringVar(&f.Status, "status", "", "bounces: enhanced status `code`")
	fs.StringVar(&f.Recipient, "recipient", "", "bounces: recipient `address`")
	kind := fs.String("kind", "", "bounces: record `kind`")
	since := fs.String("since", "", "bounces: only records newer than a `duration` or time")
	pos, err := parseFlags(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError("export: unexpected arguments %q", pos)
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	f.Domain, f.Kind = *domain, parse.Kind(*kind)
	if *since != "" {
		if f.Since, err = parseSince(*since, time.Now()); err != nil {
			return usageError("export: --since: %v", err)
		}
	}
	db, err := openStore(cfg, true, nil)
	if err != nil {
		return err
	}
	defer db.Close()
	w := bufio.NewWriterSize(a.stdout, 64<<10)
	if what == "suppressions" {
		err = exportSuppressions(db, *domain, *format, w)
	} else {
		err = exportBounces(db, f, *format, w)
	}
	if err != nil {
		return err
	}
	return w.Flush()
}

// suppressionHeader is the CSV header of a suppression export.
var suppressionHeader = []string{"address", "status", "reason", "source", "created", "record_id"}

func exportSuppressions(db *store.DB, domain, format string, w io.Writer) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		return db.Suppressions(domain, func(s store.Suppression) error { return enc.Encode(s) })
	case "csv":
		cw := csv.NewWriter(w)
		cw.Write(suppressionHeader)
		err := db.Suppressions(domain, func(s store.Suppression) error {
			return cw.Write([]string{s.Address, s.Status, s.Reason, s.Source, s.Created.UTC().Format(time.RFC3339), s.RecordID})
		})
		cw.Flush()
		if err == nil {
			err = cw.Error()
		}
		return err
	case "postfix":
		fmt.Fprintf(w, "# bouncer suppression list, Postfix access(5) map; build with: postmap FILE\n")
		return db.Suppressions(domain, func(s store.Suppression) error {
			if line := postfixLine(s); line != "" {
				_, err := io.WriteString(w, line)
				return err
			}
			return nil
		})
	}
	return usageError("export: --format %q: want csv, json or postfix", format)
}

// postfixLine renders one access(5) entry: the address as the lookup key
// (lower case, as Postfix folds keys of hash and btree maps), then REJECT
// with the enhanced status code (RFC 3463) when it is a permanent one and
// a one-line text. Addresses that cannot be a map key (whitespace,
// a leading #) are left out.
func postfixLine(s store.Suppression) string {
	addr := strings.ToLower(s.Address)
	if addr == "" || strings.HasPrefix(addr, "#") || strings.ContainsFunc(addr, isSpaceOrCtl) {
		return ""
	}
	code := "5.7.1"
	if st := s.Status; strings.HasPrefix(st, "5.") && !strings.ContainsFunc(st, isSpaceOrCtl) && len(st) <= 9 {
		code = st
	}
	text := strings.Join(strings.FieldsFunc(s.Reason, isSpaceOrCtl), " ")
	if len(text) > 200 {
		text = text[:200]
	}
	text = strings.ToValidUTF8(text, "?")
	return fmt.Sprintf("%s REJECT %s address suppressed by bouncer: %s\n", addr, code, text)
}

func isSpaceOrCtl(r rune) bool { return r <= ' ' || r == 0x7f }

// bounceHeader is the CSV header of a bounce export.
var bounceHeader = []string{"id", "received", "recipient", "domain", "kind", "class", "status", "reason", "action", "remote_mta", "diagnostic", "verdict", "suppressed", "campaign"}

func exportBounces(db *store.DB, f store.Filter, format string, w io.Writer) error {
	f.Limit = 0 // all
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		return db.ForEach(f, func(r store.Record) error { return enc.Encode(r) })
	case "csv":
		cw := csv.NewWriter(w)
		cw.Write(bounceHeader)
		err := db.ForEach(f, func(r store.Record) error {
			return cw.Write([]string{r.ID, r.Received.UTC().Format(time.RFC3339Nano), r.Addr, r.Domain,
				string(r.Kind), string(r.Class), r.Status, string(r.Reason), string(r.Action), r.RemoteMTA,
				r.DiagnosticCode, r.Verdict, fmt.Sprint(r.Suppressed), r.Envelope.Campaign})
		})
		cw.Flush()
		if err == nil {
			err = cw.Error()
		}
		return err
	}
	return usageError("export: --format %q: want csv or json for bounces", format)
}
