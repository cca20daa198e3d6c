package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
)

// TestExportRoundTrip fills a real store, exports it as JSON and CSV,
// parses the output back and compares it with the store's own listing.
func TestExportRoundTrip(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "bouncer.db")
	db, err := bolt.Open(dbPath, bolt.Options{})
	tcheck(t, err, "open")
	for i := range 40 {
		st, class := "5.4.3", parse.ClassHard
		if i%3 == 0 {
			st, class = "4.2.2", parse.ClassSoft
		}
		d := &store.Delivery{
			Raw: fmt.Appendf(nil, "Subject: bounce %d\r\n\r\nx\r\n", i),
			Report: &parse.Report{Kind: parse.KindBounce, Recipients: []parse.Recipient{{
				FinalRecipient: fmt.Sprintf("u%d@d%d.example", i, i%4), Status: st,
				Kind: parse.KindBounce, Class: class, DiagnosticCode: "smtp; 550 \"quoted\", with comma\nand line",
			}}},
		}
		_, err := db.Save(context.Background(), d)
		tcheck(t, err, "save")
	}
	var wantSup, wantRecs []string
	tcheck(t, db.Suppressions("", func(s store.Suppression) error { wantSup = append(wantSup, s.Address+" "+s.Reason); return nil }), "list")
	tcheck(t, db.ForEach(store.Filter{Domain: "d1.example"}, func(r store.Record) error {
		wantRecs = append(wantRecs, r.ID+" "+r.DiagnosticCode)
		return nil
	}), "foreach")
	tcheck(t, db.Close(), "close")
	cfg := writeConfig(t, dir, fmt.Sprintf("[store]\npath = %q\n[http]\nlisten = \"\"\n", dbPath))

	out, code := runCLI(t, "export", "suppressions", "--format", "json", "-config", cfg)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var gotSup []string
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var s store.Suppression
		tcheck(t, dec.Decode(&s), "decoding export")
		gotSup = append(gotSup, s.Address+" "+s.Reason)
	}
	if len(wantSup) == 0 || !slices.Equal(gotSup, wantSup) {
		t.Fatalf("suppressions\n got %q\nwant %q", gotSup, wantSup)
	}

	out, code = runCLI(t, "export", "suppressions", "--format", "postfix", "-config", cfg)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != len(wantSup)+1 || !strings.HasPrefix(lines[1], strings.Fields(wantSup[0])[0]+" REJECT 5.4.3 address suppressed by bouncer: bounce hard 5.4.3") {
		t.Fatalf("postfix map (exit %d):\n%s", code, out)
	}

	for _, format := range []string{"json", "csv"} {
		out, code = runCLI(t, "export", "bounces", "--domain", "d1.example", "--format", format, "-config", cfg)
		if code != 0 {
			t.Fatalf("%s: exit %d", format, code)
		}
		var got []string
		if format == "json" {
			dec := json.NewDecoder(strings.NewReader(out))
			for dec.More() {
				var r store.Record
				tcheck(t, dec.Decode(&r), "decoding export")
				got = append(got, r.ID+" "+r.DiagnosticCode)
			}
		} else {
			rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
			tcheck(t, err, "reading csv")
			for _, row := range rows[1:] {
				got = append(got, row[0]+" "+row[10])
			}
		}
		if len(wantRecs) == 0 || !slices.Equal(got, wantRecs) {
			t.Fatalf("%s bounces\n got %q\nwant %q", format, got, wantRecs)
		}
	}
}

// TestQueryPaging follows the "more: bouncer query --before ID" hints
// through a store and gets every record once, newest first.
func TestQueryPaging(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "bouncer.db")
	db, err := bolt.Open(dbPath, bolt.Options{})
	tcheck(t, err, "open")
	for i := range 7 {
		_, err := db.Save(context.Background(), &store.Delivery{
			Raw: fmt.Appendf(nil, "Subject: bounce %d\r\n\r\nx\r\n", i),
			Report: &parse.Report{Kind: parse.KindBounce, Recipients: []parse.Recipient{{
				FinalRecipient: fmt.Sprintf("u%d@page.example", i), Status: "5.1.1", Kind: parse.KindBounce, Class: parse.ClassHard,
			}}},
		})
		tcheck(t, err, "save")
	}
	var want []string
	tcheck(t, db.ForEach(store.Filter{}, func(r store.Record) error { want = append(want, r.ID); return nil }), "foreach")
	tcheck(t, db.Close(), "close")
	cfg := writeConfig(t, dir, fmt.Sprintf("[store]\npath = %q\n[http]\nlisten = \"\"\n", dbPath))

	var got []string
	// The "more:" hint is run as printed: it keeps -config, --limit,
	// --json and the filters.
	args := []string{"query", "--json", "--limit", "3", "--domain", "page.example", "-config", cfg}
	for pages := 1; ; pages++ {
		var stdout, stderr bytes.Buffer
		a := &app{stdout: &stdout, stderr: &stderr}
		tcheck(t, a.run(context.Background(), args), "query")
		dec := json.NewDecoder(&stdout)
		for dec.More() {
			var r store.Record
			tcheck(t, dec.Decode(&r), "decoding")
			got = append(got, r.ID)
		}
		hint, ok := strings.CutPrefix(strings.TrimSpace(stderr.String()), "more: bouncer ")
		if !ok {
			if pages != 3 || stderr.Len() != 0 {
				t.Fatalf("page %d ended with %q, want the last of 3 pages", pages, stderr.String())
			}
			break
		}
		if pages > 3 {
			t.Fatalf("more than 3 pages")
		}
		args = shellWords(t, hint)
		if !slices.Contains(args, "--domain") || !slices.Contains(args, "--limit") || !slices.Contains(args, cfg) {
			t.Fatalf("more: hint lost flags: %q", hint)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("paged query gave %v, want %v", got, want)
	}
}
