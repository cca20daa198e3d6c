package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"
)

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serveLog runs serve with cfg until it listens, stops it and returns
// what it logged.
func serveLog(t *testing.T, cfg string) string {
	t.Helper()
	var log syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	a := &app{stdout: &log, stderr: &log, onReady: func(net.Addr, net.Addr) { close(ready) }}
	done := make(chan error, 1)
	go func() { done <- a.run(ctx, []string{"serve", "-config", cfg}) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("serve stopped before listening: %v\n%s", err, log.String())
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not listen within 30s")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	return log.String()
}

// TestServeLogsAbsoluteDBPath: a relative store.path is taken from the
// config file's folder, and the start line gives the absolute path.
func TestServeLogsAbsoluteDBPath(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "[smtp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"\"\n[store]\npath = \"rel.db\"\n")
	log := serveLog(t, cfg)
	want := "db=" + filepath.Join(dir, "rel.db")
	if !filepath.IsAbs(dir) || !strings.Contains(log, `msg="bouncer listening"`) || !strings.Contains(log+" ", want+" ") && !strings.Contains(log, want+"\n") {
		t.Errorf("start line does not say %s:\n%s", want, log)
	}
}

// TestServeWarnsCommitInterval: a config file of an older version that
// sets store.commit_interval starts serve, which logs one warning line
// saying the write-ahead log was removed, and writes no log.
func TestServeWarnsCommitInterval(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "[smtp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"\"\n[store]\npath = \"old.db\"\ncommit_interval = \"50ms\"\n")
	log := serveLog(t, cfg)
	var warned []string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "commit_interval") {
			warned = append(warned, line)
		}
	}
	if len(warned) != 1 || !strings.Contains(warned[0], "level=WARN") || !strings.Contains(warned[0], "write-ahead log was removed") {
		t.Fatalf("lines about commit_interval: %q, want one warning saying the write-ahead log was removed; log:\n%s", warned, log)
	}
	if _, err := os.Stat(filepath.Join(dir, "old.db-wal")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a write-ahead log was written: %v", err)
	}
}

// shellWords splits a line as a POSIX shell would, for the quoting
// shellQuote does: words separated by spaces, single quotes kept whole.
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	var w strings.Builder
	inWord, quoted, escaped := false, false, false
	for _, c := range line {
		switch {
		case escaped:
			w.WriteRune(c)
			escaped = false
		case c == '\\' && !quoted:
			escaped, inWord = true, true
		case c == '\'':
			quoted, inWord = !quoted, true
		case c == ' ' && !quoted:
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(c)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("unbalanced quote in %q", line)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

func TestShellQuote(t *testing.T) {
	for _, s := range []string{"plain", "/tmp/a b/bouncer.toml", "it's", "", "5.4.3", "--x", "a;rm -rf", "$HOME"} {
		q := shellQuote(s)
		if got := shellWords(t, "x "+q); len(got) != 2 || got[1] != s {
			t.Errorf("shellQuote(%q) = %s, read back as %q", s, q, got)
		}
	}
	if q := shellQuote("/tmp/x.toml"); q != "/tmp/x.toml" {
		t.Errorf("a plain path got quoted: %s", q)
	}
}

func TestReasonText(t *testing.T) {
	for in, want := range map[string]string{
		"bounce hard 5.4.3 (routing_failure) rule 5.4.3 bounce suppress":             "bounce hard 5.4.3 (routing_failure)",
		"bounce hard 5.1.1 (user_unknown) rule 5.1.* bounce suppress":                "bounce hard 5.1.1 (user_unknown) rule 5.1.* bounce suppress",
		"bounce hard 5.4.3 rule dead-route":                                          "bounce hard 5.4.3 rule dead-route",
		"3 events within 14d, last: bounce hard 5.4.6 rule 5.4.* bounce count 3/14d": "3 events within 14d, last: bounce hard 5.4.6 rule 5.4.* bounce count 3/14d",
		"added by hand": "added by hand",
	} {
		if got := reasonText(in); got != want {
			t.Errorf("reasonText(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestCLIOutput runs the quickstart's commands on one 5.4.3 bounce and
// checks what the user reads: the verdict word is the one CSV and JSON
// use, times carry their UTC offset, the reason says each thing once, the
// domains storm column is short, and an empty list says so.
func TestCLIOutput(t *testing.T) {
	ts := newTestServer(t, "")
	tcheck(t, deliver(t, ts.smtpAddr, "bounces+user=dead.test@localhost", readTestdata(t, "postfix-543.eml")), "delivering DSN")
	cfg := ts.cliConfig
	zone := regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d\d:\d\d`)

	out, _ := runCLI(t, "query", "-config", cfg)
	rows := strings.Split(strings.TrimSpace(out), "\n")
	csv, _ := runCLI(t, "export", "bounces", "--format", "csv", "-config", cfg)
	if len(rows) != 2 || !strings.HasSuffix(rows[1], " suppress") || !strings.Contains(csv, ",suppress,") {
		t.Errorf("query and CSV do not say the same verdict:\n%s\n%s", out, csv)
	}
	if !zone.MatchString(rows[1]) {
		t.Errorf("query time has no zone: %s", rows[1])
	}

	out, code := runCLI(t, "suppressed", "-config", cfg, "user@dead.test")
	if code != 0 || strings.Count(out, "5.4.3") != 1 || strings.Count(out, "policy") != 1 || !zone.MatchString(out) {
		t.Errorf("suppressed repeats itself or lacks the zone: %q", out)
	}
	if list, _ := runCLI(t, "suppress", "list", "-config", cfg); strings.Count(list, "5.4.3") > 1 {
		t.Errorf("suppress list repeats the status")
	}

	for _, c := range []struct{ args, want string }{
		{"query --status 4.4.4", "no records match"},
		{"storm list", "no domain is held by the storm guard"},
		{"storm holds", "no suppression is held"},
		{"outbox list", "no push event is waiting"},
		{"outbox list --dead", "no dead letters"},
		{"suppress list --domain other.test", "no address at other.test is suppressed"},
		{"domains --status 4.4.4", "no domain has bounces of that status"},
		{"domains --check", "no domain with 5.4.x bounces to check"},
	} {
		out, code := runCLI(t, append(strings.Fields(c.args), "-config", cfg)...)
		if code != 0 || !strings.HasPrefix(out, c.want) {
			t.Errorf("bouncer %s: exit %d %q, want %q", c.args, code, out, c.want)
		}
	}
}

func TestDomainsStormColumn(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	d := store.DomainStat{Domain: "dead.test", Total: 25, Counts: map[string]int{"5.4.3": 25}, FirstSeen: now, LastSeen: now,
		Storm: &store.Storm{Domain: "dead.test", Status: "5.4.3", Since: now, Count: 21, Held: 4, Key: "remote:relay.dead.test"}}
	storm, _ := healthColumns(d)
	if storm != "5.4.3 held 4" {
		t.Errorf("storm column %q", storm)
	}
}
