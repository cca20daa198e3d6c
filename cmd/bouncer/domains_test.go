package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
