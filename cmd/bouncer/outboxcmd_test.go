package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
)

// deadLetters makes a store in dir whose outbox for target "lm" holds n
// dead letters, as the push worker leaves them after a permanent error.
func deadLetters(t *testing.T, dir string, n int) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, "bouncer.db"), bolt.Options{})
	tcheck(t, err, "opening store")
	defer db.Close()
	tcheck(t, db.SetOutboxTargets([]store.OutboxTarget{{Name: "lm", Events: []string{store.EventHard}}}), "targets")
	for i := range n {
		_, err := db.Save(context.Background(), &store.Delivery{
			Raw: fmt.Appendf(nil, "Subject: bounce %d\r\n\r\nx\r\n", i),
			Report: &parse.Report{Kind: parse.KindBounce, Recipients: []parse.Recipient{{
				FinalRecipient: fmt.Sprintf("u%d@d.example", i), Status: "5.1.1", Kind: parse.KindBounce, Class: parse.ClassHard,
			}}},
		})
		tcheck(t, err, "saving")
	}
	var results []store.OutboxResult
	tcheck(t, db.OutboxEvents(false, func(ev store.OutboxEvent) error {
		results = append(results, store.OutboxResult{Seq: ev.Seq, Err: errors.New("answer 400"), Dead: true})
		return nil
	}), "listing")
	if len(results) != n {
		t.Fatalf("%d events queued, want %d", len(results), n)
	}
	_, err = db.OutboxUpdate(results)
	tcheck(t, err, "moving to dead letters")
}

func TestOutboxCommandsThroughAPIAndFile(t *testing.T) {
	dir := t.TempDir()
	deadLetters(t, dir, 3)
	fileCfg := writeConfig(t, t.TempDir(), fmt.Sprintf("[http]\nlisten = \"\"\n[store]\npath = %q\n", filepath.Join(dir, "bouncer.db")))

	// From the file: retry one dead letter, drop nothing by mistake.
	dead := outboxJSON(t, "--dead", "-config", fileCfg)
	if len(dead) != 3 {
		t.Fatalf("dead letters in the file: %d, want 3", len(dead))
	}
	if out, code := runCLI(t, "outbox", "retry", fmt.Sprint(dead[0].Seq), "-config", fileCfg); code != 0 || out != "retry: 1 events\n" {
		t.Fatalf("retry from the file: exit %d, %q", code, out)
	}
	if q := outboxJSON(t, "-config", fileCfg); len(q) != 1 || q[0].Seq != dead[0].Seq || q[0].Attempts != 0 {
		t.Fatalf("queue after retry: %+v", q)
	}

	// Through a running server's API: the target is down, so the retried
	// event stays queued while we look.
	lm := &fakeListmonk{down: true}
	recv := httptest.NewServer(lm)
	defer recv.Close()
	ts := serveIn(t, dir, pushConfig(recv.URL))
	if d := outboxJSON(t, "--dead", "-config", ts.cliConfig); len(d) != 2 || d[0].Seq != dead[1].Seq {
		t.Fatalf("dead letters through the API: %+v", d)
	}
	if out, code := runCLI(t, "outbox", "retry", "999999", "-config", ts.cliConfig); code != 1 || out != "" {
		t.Errorf("retry of an unknown event: exit %d, %q, want 1", code, out)
	}
	if _, code := runCLI(t, "outbox", "drop", "-config", ts.cliConfig); code != 2 {
		t.Errorf("drop with no events and no --all: exit %d, want 2", code)
	}
	if out, code := runCLI(t, "outbox", "retry", fmt.Sprint(dead[1].Seq), "-config", ts.cliConfig); code != 0 || out != "retry: 1 events\n" {
		t.Errorf("retry through the API: exit %d, %q", code, out)
	}
	if out, code := runCLI(t, "outbox", "drop", "--all", "-config", ts.cliConfig); code != 0 || out != "drop: 1 events\n" {
		t.Errorf("drop --all through the API: exit %d, %q", code, out)
	}
	out, code := runCLI(t, "outbox", "list", "-config", ts.cliConfig)
	if code != 0 || !strings.HasPrefix(out, "SEQ") || strings.Count(out, "u") < 2 || !strings.Contains(out, "lm") {
		t.Errorf("outbox list: exit %d:\n%s", code, out)
	}

	// The target comes back: both retried events arrive, once each.
	lm.setDown(false)
	waitFor(t, "an empty queue", func() bool { return len(outboxJSON(t, "-config", ts.cliConfig)) == 0 })
	keys := map[string]int{}
	for _, r := range lm.requests(http.StatusOK) {
		keys[r.key]++
	}
	if len(keys) != 2 || keys[dead[0].ID] != 1 || keys[dead[1].ID] != 1 {
		t.Errorf("delivered %v, want %s and %s once each", keys, dead[0].ID, dead[1].ID)
	}
}

func TestOutboxAndExportWhileDatabaseHeld(t *testing.T) {
	// A server holds the file and its API does not answer: each command
	// fails within the lock timeout, saying the database is busy.
	cfg := heldDatabase(t)
	for _, args := range [][]string{
		{"outbox", "list"}, {"outbox", "retry", "--all"}, {"outbox", "drop", "1"},
		{"export", "bounces"}, {"export", "suppressions", "--format", "postfix"},
	} {
		a := &app{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := a.run(ctx, append(args, "-config", cfg))
		cancel()
		if err == nil || !strings.Contains(err.Error(), "database") || !strings.Contains(err.Error(), "busy") {
			t.Errorf("%v: got %v, want a 'database ... busy' error", args, err)
		}
	}
}

func TestExportThroughAPI(t *testing.T) {
	ts := newTestServer(t, "")
	tcheck(t, deliver(t, ts.smtpAddr, "bounces+user=dead.test@localhost", readTestdata(t, "postfix-543.eml")), "delivering postfix DSN")
	tcheck(t, deliver(t, ts.smtpAddr, "bounces+other=dead.test@localhost", readTestdata(t, "exim-500.eml")), "delivering exim DSN")

	out, code := runCLI(t, "export", "suppressions", "--format", "postfix", "-config", ts.cliConfig)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[1], "other@dead.test REJECT 5.4.3 ") ||
		!strings.HasPrefix(lines[2], "user@dead.test REJECT 5.4.3 ") {
		t.Fatalf("postfix export through the API (exit %d):\n%s", code, out)
	}
	live, code := runCLI(t, "export", "bounces", "--format", "csv", "--domain", "dead.test", "-config", ts.cliConfig)
	if code != 0 || strings.Count(live, "\n") != 3 || !strings.Contains(live, "relay.dead.test") {
		t.Fatalf("csv export through the API (exit %d):\n%s", code, live)
	}
	if _, code := runCLI(t, "export", "bounces", "--format", "postfix", "-config", ts.cliConfig); code != 2 {
		t.Errorf("postfix bounces: exit %d, want 2", code)
	}
	// The same export from the file, once the server stopped, is the
	// same bytes.
	ts.stop(t)
	fromFile, code := runCLI(t, "export", "bounces", "--format", "csv", "--domain", "dead.test", "-config", ts.cliConfig)
	if code != 0 || fromFile != live {
		t.Errorf("csv export from the file differs (exit %d):\n%s\nvs API:\n%s", code, fromFile, live)
	}
}

func TestOutboxExportHelp(t *testing.T) {
	for _, args := range [][]string{{"outbox", "--help"}, {"export", "--help"}, {"export", "bounces", "--help"}} {
		if _, code := runCLI(t, args...); code != 0 {
			t.Errorf("%v: exit %d, want 0", args, code)
		}
	}
	if _, code := runCLI(t, "outbox", "frob"); code != 2 {
		t.Errorf("outbox frob: exit %d, want 2", code)
	}
}
