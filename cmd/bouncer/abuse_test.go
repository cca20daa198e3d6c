package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/bouncer/bouncer/store"
)

// wantReply asserts that err is an SMTP reply with the given codes.
func wantReply(t *testing.T, what string, err error, code int, enh smtp.EnhancedCode) {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != code || se.EnhancedCode != enh {
		t.Fatalf("%s: got %v, want %d %v", what, err, code, enh)
	}
}

// TestInternetDefaults runs serve listening on every interface, as an MX
// does, with a signing key and nothing else about VERP (finding 1 of issue
// 21): a forged unsigned return path is refused, a forged DSN to
// postmaster is kept but suppresses nothing. With no trusted relays, the
// per-network message rate applies to loopback too (finding 4).
func TestInternetDefaults(t *testing.T) {
	dir := t.TempDir()
	ts := newTestServerConfig(t, writeConfig(t, dir, `
[smtp]
listen = "0.0.0.0:0"
hostname = "bouncer.test"
domains = ["bounce.example.org"]
trusted_relays = []
message_rate = 1.0
message_burst = 2
[verp]
keys = [{ id = "a", secret = "0123456789abcdef0123" }]
[http]
listen = "127.0.0.1:0"
[store]
path = "bouncer.db"
`))
	_, port, err := net.SplitHostPort(ts.smtpAddr)
	tcheck(t, err, "smtp address")
	addr := net.JoinHostPort("127.0.0.1", port)
	dsn := readTestdata(t, "postfix-543.eml") // Final-Recipient: user@dead.test

	err = deliver(t, addr, "bounces+user=dead.test@bounce.example.org", dsn)
	wantReply(t, "a forged plain return path", err, 550, smtp.EnhancedCode{5, 7, 1})
	tcheck(t, deliver(t, addr, "postmaster@bounce.example.org", dsn), "a DSN to postmaster")
	if out, code := runCLI(t, "suppressed", "-config", ts.cliConfig, "user@dead.test"); code != 1 {
		t.Fatalf("a forged DSN suppressed user@dead.test (exit %d): %s", code, out)
	}
	err = deliver(t, addr, "postmaster@bounce.example.org", dsn)
	wantReply(t, "message 3 with message_burst = 2", err, 451, smtp.EnhancedCode{4, 7, 1})
}

// TestDiskFloorEndToEnd is the free-disk floor of finding 4 on a real
// file system: once the database's tmpfs has less than
// store.min_free_bytes free, a delivery gets 451 4.3.1 (the sender
// retries) instead of the store failing, /readyz says 503 while /healthz
// stays 200 (finding 7); freed space lets it through.
func TestDiskFloorEndToEnd(t *testing.T) {
	mnt := mountTmpfs(t, "16m")
	ts := newTestServerConfig(t, writeConfig(t, t.TempDir(), fmt.Sprintf(`
[smtp]
listen = "127.0.0.1:0"
domains = ["localhost"]
[http]
listen = "127.0.0.1:0"
[store]
path = %q
min_free_bytes = 4194304
`, filepath.Join(mnt, "bouncer.db"))))
	rcpt := "bounces+user=dead.test@localhost"
	dsn := readTestdata(t, "postfix-543.eml")
	tcheck(t, deliver(t, ts.smtpAddr, rcpt, dsn), "delivering with room")
	fill(t, filepath.Join(mnt, "filler"))
	time.Sleep(1100 * time.Millisecond) // free space is read at most once a second
	wantReply(t, "below the floor", deliver(t, ts.smtpAddr, rcpt, dsn), 451, smtp.EnhancedCode{4, 3, 1})
	if got := httpStatus(t, ts.httpAddr, "/readyz"); got != 503 {
		t.Errorf("readyz on a full disk: %d, want 503", got)
	}
	if got := httpStatus(t, ts.httpAddr, "/healthz"); got != 200 {
		t.Errorf("healthz on a full disk: %d, want 200", got)
	}
	tcheck(t, os.Remove(filepath.Join(mnt, "filler")), "freeing space")
	time.Sleep(1100 * time.Millisecond)
	tcheck(t, deliver(t, ts.smtpAddr, rcpt, dsn), "delivering after space was freed")
	if got := httpStatus(t, ts.httpAddr, "/readyz"); got != 200 {
		t.Errorf("readyz after space was freed: %d, want 200", got)
	}
}

func httpStatus(t *testing.T, addr, path string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	tcheck(t, err, "GET "+path)
	resp.Body.Close()
	return resp.StatusCode
}

// TestPushRateHoldsEvents is the cap on push events per client network
// (finding 4 of issue 21: one connection once caused about 4,000 webhook
// calls in 8 seconds). With smtp.push_rate = 3 and loopback not trusted,
// six hard bounces from one client are all stored and suppressed, but
// only three events reach the webhook; the other three wait on the
// dead-letter list, marked held, and `outbox retry --all` sends them.
func TestPushRateHoldsEvents(t *testing.T) {
	hook := &fakeListmonk{}
	hookSrv := httptest.NewServer(hook)
	defer hookSrv.Close()
	ts := newTestServerConfig(t, writeConfig(t, t.TempDir(), fmt.Sprintf(`
[smtp]
listen = "127.0.0.1:0"
domains = ["localhost"]
trusted_relays = []
push_rate = 3.0
[http]
listen = "127.0.0.1:0"
[store]
path = "bouncer.db"
[push]
min_backoff = "100ms"
max_backoff = "300ms"
[[push.targets]]
name = "crm"
type = "webhook"
url = %q
secret = "hook-secret"
events = ["hard"]
`, hookSrv.URL)))
	dsn := readTestdata(t, "postfix-543.eml") // Final-Recipient: user@dead.test
	const n = 6
	for i := range n {
		user := fmt.Sprintf("user%d", i)
		msg := bytes.ReplaceAll(dsn, []byte("user@dead.test"), []byte(user+"@dead.test"))
		tcheck(t, deliver(t, ts.smtpAddr, "bounces+"+user+"=dead.test@localhost", msg), "delivering "+user)
	}
	for i := range n {
		addr := fmt.Sprintf("user%d@dead.test", i)
		if out, code := runCLI(t, "suppressed", "-config", ts.cliConfig, addr); code != 0 {
			t.Errorf("%s is not suppressed (exit %d): %s", addr, code, out)
		}
	}
	waitFor(t, "three webhook calls", func() bool { return len(hook.requests(http.StatusOK)) >= 3 })
	dead := outboxJSON(t, "-config", ts.cliConfig, "--dead")
	if len(dead) != n-3 {
		t.Fatalf("dead letters: %d, want %d held", len(dead), n-3)
	}
	for _, ev := range dead {
		if !ev.Held || !strings.Contains(ev.LastError, "push budget") || ev.Attempts != 0 {
			t.Errorf("dead letter %d: held %v, attempts %d, error %q", ev.Seq, ev.Held, ev.Attempts, ev.LastError)
		}
	}
	if got := scrape(t, ts.httpAddr, "bouncer_smtp_push_held_total", nil); got != n-3 {
		t.Errorf("bouncer_smtp_push_held_total = %v, want %d", got, n-3)
	}
	time.Sleep(500 * time.Millisecond) // a held event would have been pushed by now
	if got := len(hook.requests(http.StatusOK)); got != 3 {
		t.Fatalf("webhook calls before the retry: %d, want 3", got)
	}

	if out, code := runCLI(t, "outbox", "retry", "--all", "-config", ts.cliConfig); code != 0 {
		t.Fatalf("outbox retry --all: exit %d: %s", code, out)
	}
	waitFor(t, "every event pushed", func() bool { return len(hook.requests(http.StatusOK)) == n })
	seen := map[string]bool{}
	for _, r := range hook.requests(http.StatusOK) {
		var ev store.OutboxEvent
		tcheck(t, json.Unmarshal(r.body, &ev), "decoding webhook body")
		seen[ev.Addr] = true
	}
	if len(seen) != n {
		t.Errorf("webhook saw %d distinct recipients, want %d: %v", len(seen), n, seen)
	}
}
