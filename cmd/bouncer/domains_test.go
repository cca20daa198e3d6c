package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
)

// TestDomainsLimit fills a database file with bounces for 150 domains,
// each later than the one before, and lists them with `bouncer domains`
// from the file: 100 by default, the most recent first, all with
// --limit 0, fewer with --limit N.
func TestDomainsLimit(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "bouncer.db")
	db, err := bolt.Open(dbPath, bolt.Options{})
	tcheck(t, err, "opening store")
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	for i := range 150 {
		status := "5.1.1"
		if i%10 == 0 {
			status = "5.4.3"
		}
		addr := fmt.Sprintf("u@d%03d.test", i)
		_, err := db.Save(context.Background(), &store.Delivery{
			Received: t0.Add(time.Duration(i) * time.Minute),
			Envelope: store.Envelope{RcptTo: []string{"bounces@localhost"}},
			Raw:      []byte("Subject: bounce\r\n\r\n" + addr + "\r\n"),
			Report: &parse.Report{Kind: parse.KindBounce, Recipients: []parse.Recipient{{
				FinalRecipient: addr, Action: parse.Failed, Status: status,
				Kind: parse.KindBounce, Class: parse.ClassHard,
			}}},
		})
		tcheck(t, err, "saving")
	}
	tcheck(t, db.Close(), "closing store")
	cfg := writeConfig(t, dir, fmt.Sprintf("[http]\nlisten = \"\"\n[store]\npath = %q\n", dbPath))

	list := func(args ...string) []string {
		t.Helper()
		out, code := runCLI(t, append([]string{"domains", "-config", cfg, "--json"}, args...)...)
		if code != 0 {
			t.Fatalf("domains %v: exit %d: %s", args, code, out)
		}
		var names []string
		dec := json.NewDecoder(strings.NewReader(out))
		for dec.More() {
			var d store.DomainStat
			tcheck(t, dec.Decode(&d), "decoding domains")
			names = append(names, d.Domain)
		}
		return names
	}
	if got := list(); len(got) != 100 || got[0] != "d149.test" || got[99] != "d050.test" {
		t.Errorf("default: %d domains, %v ... %v", len(got), got[:min(len(got), 1)], got[max(len(got)-1, 0):])
	}
	if got := list("--limit", "0"); len(got) != 150 || got[149] != "d000.test" {
		t.Errorf("--limit 0: %d domains", len(got))
	}
	if got := strings.Join(list("--limit", "3", "--status", "5.4.3"), ","); got != "d140.test,d130.test,d120.test" {
		t.Errorf("--limit 3 --status 5.4.3: %s", got)
	}
	if out, code := runCLI(t, "domains", "-config", cfg, "--limit", "-1"); code != 2 {
		t.Errorf("--limit -1: exit %d (%s), want 2", code, out)
	}
}

// TestDomainsFit80 fills a database file with bounces of a long domain
// under a storm with an MX check and of a short one, and checks that
// `bouncer domains` fits 80 columns and `--wide` has every column.
func TestDomainsFit80(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "bouncer.db")
	t0 := time.Now().Add(-3 * time.Hour)
	clock := t0
	db, err := bolt.Open(dbPath, bolt.Options{Storm: store.StormOptions{Threshold: 3}, Now: func() time.Time { return clock }})
	tcheck(t, err, "opening store")
	const long = "a-rather-long-subdomain.of-an-example-company.test"
	save := func(addr, status string, class parse.Class) {
		t.Helper()
		clock = clock.Add(time.Minute)
		_, err := db.Save(context.Background(), &store.Delivery{
			Envelope: store.Envelope{RcptTo: []string{"bounces@localhost"}},
			Raw:      []byte("Subject: bounce\r\n\r\n" + addr + " " + status + "\r\n"),
			Report: &parse.Report{Kind: parse.KindBounce, Recipients: []parse.Recipient{{
				FinalRecipient: addr, Action: parse.Failed, Status: status, RemoteMTA: "mx1." + long,
				Kind: parse.KindBounce, Class: class,
			}}},
		})
		tcheck(t, err, "saving")
	}
	save("z@short.test", "5.1.1", parse.ClassHard)
	for i := range 5 {
		save(fmt.Sprintf("u%d@%s", i, long), "5.4.3", parse.ClassHard)
	}
	save("x@"+long, "5.1.1", parse.ClassHard)
	save("y@"+long, "4.2.2", parse.ClassSoft)
	_, _, err = db.SetMXCheck(long, store.MXCheck{Verdict: "unreachable", Checked: clock}, false)
	tcheck(t, err, "storing MX check")
	tcheck(t, db.Close(), "closing store")
	cfg := writeConfig(t, dir, fmt.Sprintf("[http]\nlisten = \"\"\n[store]\npath = %q\n", dbPath))

	out, code := runCLI(t, "domains", "-config", cfg)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "DOMAIN ") {
		t.Fatalf("domains: exit %d\n%s", code, out)
	}
	for _, l := range lines {
		if n := utf8.RuneCountInString(l); n > 80 {
			t.Errorf("%d columns: %q", n, l)
		}
	}
	row := strings.Fields(lines[1]) // the long domain bounced last
	if want := []string{long[:21] + "…", "7", "5.4.3:5", "+2", "2h", "held", "2", "unreachable"}; strings.Join(row, " ") != strings.Join(want, " ") {
		t.Errorf("row %q, want %q", row, want)
	}
	out, code = runCLI(t, "domains", "-config", cfg, "--wide")
	if code != 0 || !strings.Contains(out, "FIRST-SEEN") || !strings.Contains(out, long+" ") || !strings.Contains(out, "5.4.3 held 2") ||
		!strings.Contains(out, "mx1."+long) {
		t.Errorf("domains --wide: exit %d\n%s", code, out)
	}
}

// TestNarrowDomainsBounds: the largest values the table allows for (a
// million records, 64 statuses, 9,999 holds, a 255-byte domain with a
// tab, a long MX verdict) still give 80 columns.
func TestNarrowDomainsBounds(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	counts := map[string]int{"5.4.3": 999_999}
	for i := range 63 {
		counts[fmt.Sprintf("5.%d.%d", i/10, i%10+100)] = 1
	}
	d := store.DomainStat{Domain: strings.Repeat("d\t", 127) + ".test", Total: 999_999, Counts: counts,
		LastSeen: now.Add(-400 * 24 * time.Hour), Storm: &store.Storm{Held: 9999},
		LastMX: &store.MXCheck{Verdict: strings.Repeat("v", 300)}}
	var b strings.Builder
	tcheck(t, writeNarrowDomains(&b, []store.DomainStat{d, d}, false, now), "writing")
	for _, l := range strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n") {
		if n := utf8.RuneCountInString(l); n > 80 || strings.Count(l, "\t") > 0 {
			t.Errorf("%d columns: %q", n, l)
		}
	}
	if !strings.Contains(b.String(), " 400d ") || !strings.Contains(b.String(), " +63 ") {
		t.Errorf("table:\n%s", b.String())
	}
}
