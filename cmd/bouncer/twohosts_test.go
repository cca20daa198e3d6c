package main

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store/postgres/pgtest"
	"github.com/emersion/go-smtp"
)

// pgCluster is a private PostgreSQL server for the tests that need one
// (nil without PostgreSQL's binaries: those tests skip).
var pgCluster *pgtest.Cluster

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &pgCluster)) }

// TestTwoHostsOneDatabase runs two `bouncer serve` on one PostgreSQL
// database, as README's "Running two MX hosts" sets them up: the same
// report delivered to both gives one suppression, and a suppression
// added through one host's API answers on the other's at once.
func TestTwoHostsOneDatabase(t *testing.T) {
	url := pgCluster.Database(t)

	host := func() *testServer {
		return newTestServerConfig(t, writeConfig(t, t.TempDir(), fmt.Sprintf(`
[smtp]
listen = "127.0.0.1:0"
hostname = "bouncer.test"
domains = ["localhost"]
[http]
listen = "127.0.0.1:0"
[store]
driver = "postgres"
url = %q
schema = "bouncer_mx"
`, url)))
	}
	a, b := host(), host()
	cli := func(ts *testServer) string {
		return writeConfig(t, t.TempDir(), fmt.Sprintf("[http]\nlisten = %q\n[store]\ndriver = \"postgres\"\nurl = %q\nschema = \"bouncer_mx\"\n", ts.httpAddr, url))
	}
	msg := readTestdata(t, "postfix-543.eml")
	tcheck(t, deliver(t, a.smtpAddr, "bounces+user=dead.test@localhost", msg), "delivering to host a")
	tcheck(t, deliver(t, b.smtpAddr, "bounces+user=dead.test@localhost", msg), "delivering to host b")
	recs := queryJSON(t, "-config", cli(b), "--recipient", "user@dead.test")
	dups := 0
	for _, r := range recs {
		if r.Duplicate {
			dups++
		}
	}
	if len(recs) != 2 || dups != 1 {
		t.Fatalf("two copies on two hosts: %d records, %d duplicates, want 2 and 1", len(recs), dups)
	}
	if _, code := runCLI(t, "suppressed", "-config", cli(b), "user@dead.test"); code != 0 {
		t.Fatalf("user@dead.test not suppressed on host b (exit %d)", code)
	}
	if _, code := runCLI(t, "suppress", "add", "-config", cli(a), "other@dead.test"); code != 0 {
		t.Fatalf("suppress add on host a: exit %d", code)
	}
	if _, code := runCLI(t, "suppressed", "-config", cli(b), "other@dead.test"); code != 0 {
		t.Fatalf("suppression added on host a unknown on host b (exit %d)", code)
	}
}

// TestPostgresDown: with PostgreSQL stopped, a bounce gets 451 4.3.0 (never
// 250 without a commit) and /readyz says 503; once it is back, the same
// server stores bounces again without a restart.
func TestPostgresDown(t *testing.T) {
	url := pgCluster.Database(t)
	ts := newTestServerConfig(t, writeConfig(t, t.TempDir(), fmt.Sprintf(`
[smtp]
listen = "127.0.0.1:0"
domains = ["localhost"]
save_timeout = "3s"
[http]
listen = "127.0.0.1:0"
[store]
driver = "postgres"
url = %q
`, url)))
	msg := readTestdata(t, "postfix-543.eml")
	if got := httpStatus(t, ts.httpAddr, "/readyz"); got != 200 {
		t.Fatalf("readyz with the server up: %d", got)
	}
	tcheck(t, pgCluster.Stop(), "stopping postgres")
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			pgCluster.Start()
		}
	})
	// Asked before any delivery fails: readiness asks the server itself.
	if got := httpStatus(t, ts.httpAddr, "/readyz"); got != 503 {
		t.Fatalf("readyz with postgres down: %d, want 503", got)
	}
	err := deliver(t, ts.smtpAddr, "bounces+user=dead.test@localhost", msg)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 0}) {
		t.Fatalf("delivery with postgres down: %v, want 451 4.3.0", err)
	}
	tcheck(t, pgCluster.Start(), "starting postgres")
	restarted = true
	var last error
	for range 50 {
		if last = deliver(t, ts.smtpAddr, "bounces+user=dead.test@localhost", msg); last == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	tcheck(t, last, "delivery after postgres came back")
	if got := httpStatus(t, ts.httpAddr, "/readyz"); got != 200 {
		t.Fatalf("readyz after postgres came back: %d", got)
	}
}
