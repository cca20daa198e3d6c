package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/policy"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
)

// runCLIStderr runs a command and returns its stdout, stderr and exit code.
func runCLIStderr(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errw bytes.Buffer
	a := &app{stdout: &out, stderr: &errw}
	code := exitCode(a.run(context.Background(), args), &errw)
	return out.String(), errw.String(), code
}

// oldDecoding stores a real DSN as an older decoder had decoded it: the
// real report changed by old, or no report at all if old is nil.
func oldDecoding(t *testing.T, db *bolt.DB, raw []byte, old func(*parse.Report)) store.Record {
	t.Helper()
	d := &store.Delivery{Envelope: store.Envelope{RcptTo: []string{"bounces@localhost"}, ClientIP: "127.0.0.1"}, Raw: raw}
	rep, err := parse.Message(bytes.NewReader(raw), parse.Limits{})
	tcheck(t, err, "parsing")
	if old == nil {
		d.ParseError = "no delivery-status part found"
	} else {
		old(rep)
		d.Report = rep
	}
	recs, err := db.Save(context.Background(), d)
	tcheck(t, err, "saving")
	return recs[0]
}

// TestReclassify fills a bbolt file through Save with real DSNs stored as
// an older decoder had decoded them (one it could not decode, a delay
// taken for a 5.4.3 failure, one whose raw message the retention
// deleted), then runs `bouncer reclassify` as an operator would: the dry
// run prints the changes and changes nothing, --apply makes them, a
// second --apply finds nothing to do, --lift lifts the stale
// suppression, and a file held by another process is refused.
func TestReclassify(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "bouncer.db")
	tab, err := policy.Compile(policy.DefaultRules())
	tcheck(t, err, "policy")
	clock := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	db, err := bolt.Open(dbPath, bolt.Options{Decide: tab.Decide, RawRetention: 24 * time.Hour, Now: func() time.Time { return clock }})
	tcheck(t, err, "opening store")
	tcheck(t, db.SetOutboxTargets([]store.OutboxTarget{{Name: "hook", Events: []string{store.EventHard, store.EventSuppressed}}}), "targets")
	exim := readTestdata(t, "exim-500.eml")
	oldDecoding(t, db, exim, nil) // its raw goes with the retention
	clock = clock.Add(48 * time.Hour)
	a := oldDecoding(t, db, readTestdata(t, "postfix-543.eml"), nil)
	delayed, err := os.ReadFile(filepath.Join("..", "..", "integration", "testdata", "postfix-4.4.3-delayed.eml"))
	tcheck(t, err, "reading sample")
	b := oldDecoding(t, db, delayed, func(rep *parse.Report) {
		rc := &rep.Recipients[0]
		rep.Kind, rc.Kind, rc.Class, rc.Status, rc.Action = parse.KindBounce, parse.KindBounce, parse.ClassHard, "5.4.3", parse.Failed
	})
	st, err := db.Prune(context.Background())
	tcheck(t, err, "pruning")
	if st.Raw != 1 || a.Addr != "" || !b.Suppressed {
		t.Fatalf("set-up: pruned %d, a %+v, b %+v", st.Raw, a, b)
	}
	tcheck(t, db.Close(), "closing store")
	cfg := writeConfig(t, dir, fmt.Sprintf("[http]\nlisten = \"\"\n[store]\npath = %q\nlock_timeout = \"200ms\"\nraw_retention = \"24h\"\n", dbPath))

	aLine := regexp.MustCompile(`(?m)^` + a.ID + `  - → user@dead\.test: unknown none - record → bounce hard 5\.4\.3 suppress; suppressed, 1 push event$`)
	bLine := regexp.MustCompile(`(?m)^` + b.ID + `  later-c@dead\.test: bounce hard 5\.4\.3 suppress → delay soft 4\.4\.3 record; its suppression of later-c@dead\.test no longer follows: kept`)
	out, code := runCLI(t, "reclassify", "-config", cfg)
	if code != 0 || !aLine.MatchString(out) || !bLine.MatchString(out) ||
		!strings.Contains(out, "dry run: 3 messages, 2 records would change, 0 unchanged; 1 suppression would be added") ||
		!strings.Contains(out, "1 message skipped: raw deleted by the retention (1)") ||
		!strings.Contains(out, "nothing was changed; to apply: bouncer reclassify -config "+cfg+" --apply") {
		t.Fatalf("dry run: exit %d\n%s", code, out)
	}
	if _, code := runCLI(t, "suppressed", "-config", cfg, "user@dead.test"); code != 1 {
		t.Fatal("the dry run suppressed user@dead.test")
	}

	out, code = runCLI(t, "reclassify", "-config", cfg, "--apply")
	if code != 0 || !aLine.MatchString(out) || !bLine.MatchString(out) ||
		!strings.Contains(out, "applied: 3 messages, 2 records changed, 0 unchanged; 1 suppression added, 0 soft events counted, 0 taken back, 1 push event queued") {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	if out, code := runCLI(t, "suppressed", "-config", cfg, "user@dead.test"); code != 0 || strings.Count(out, "5.4.3") != 1 {
		t.Fatalf("after apply: %q, exit %d", out, code)
	}
	if recs := queryJSON(t, "-config", cfg, "--recipient", "user@dead.test"); len(recs) != 1 || recs[0].ID != a.ID || recs[0].ParseError != "" {
		t.Fatalf("record A after apply: %+v", recs)
	}
	if out, _ := runCLI(t, "outbox", "list", "-config", cfg); strings.Count(out, "user@dead.test") != 1 {
		t.Fatalf("outbox after apply:\n%s", out)
	}

	out, code = runCLI(t, "reclassify", "-config", cfg, "--apply")
	if code != 0 || aLine.MatchString(out) ||
		!strings.Contains(out, "applied: 3 messages, 0 records changed, 2 unchanged; 0 suppressions added, 0 soft events counted, 0 taken back, 0 push events queued; 1 suppression stale, kept") {
		t.Fatalf("second apply: exit %d\n%s", code, out)
	}
	if out, _ := runCLI(t, "outbox", "list", "-config", cfg); strings.Count(out, "user@dead.test") != 1 {
		t.Fatalf("second apply queued again:\n%s", out)
	}

	out, code = runCLI(t, "reclassify", "-config", cfg, "--apply", "--lift")
	if code != 0 || !strings.Contains(out, "its suppression of later-c@dead.test lifted") || !strings.Contains(out, "1 suppression lifted") {
		t.Fatalf("lift: exit %d\n%s", code, out)
	}
	if _, code := runCLI(t, "suppressed", "-config", cfg, "later-c@dead.test"); code != 1 {
		t.Fatal("later-c@dead.test still suppressed after --lift")
	}

	// Another process holds the file: a clear refusal.
	held, err := bolt.Open(dbPath, bolt.Options{})
	tcheck(t, err, "holding the file")
	defer held.Close()
	_, stderr, code := runCLIStderr(t, "reclassify", "-config", cfg, "--apply")
	if code != 1 || !strings.Contains(stderr, "is busy: another bouncer process holds it; stop bouncer serve before reclassify") {
		t.Fatalf("held file: exit %d, %q", code, stderr)
	}
	for _, args := range [][]string{{"--apply", "--dry-run"}, {"--lift"}, {"--limit", "-1"}, {"extra"}} {
		if _, _, code := runCLIStderr(t, append([]string{"reclassify", "-config", cfg}, args...)...); code != 2 {
			t.Errorf("reclassify %v: exit %d, want 2", args, code)
		}
	}
}

// TestPrintable: what a bounce's sender chose cannot drive the terminal.
func TestPrintable(t *testing.T) {
	if got := printable("a\x1b[2J\tb\u009bc\u00e9"); got != "a?[2J?b?c\u00e9" {
		t.Errorf("printable: %q", got)
	}
}

// TestChangeLineHeld: a held record keeps its verdict and says who decides.
func TestChangeLineHeld(t *testing.T) {
	old := store.Record{ID: "r1", Addr: "a@isp.test", Verdict: store.ActionHeld,
		Recipient: parse.Recipient{Kind: parse.KindBounce, Class: parse.ClassHard, Status: "5.4.3"}}
	nw := old
	nw.Kind, nw.Class, nw.Status = parse.KindDelay, parse.ClassSoft, "4.4.3"
	got := changeLine(&store.RecordChange{Old: old, New: nw})
	if want := "r1  a@isp.test: bounce hard 5.4.3 held → delay soft 4.4.3 held; still held: bouncer storm release or drop decides it"; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}
