package main

import (
	"fmt"
	"os"
	"testing"

	"github.com/bouncer/bouncer/store/postgres/pgtest"
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
