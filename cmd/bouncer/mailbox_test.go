package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bouncer/bouncer/mailbox/dovecottest"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
)

// mailboxDSN is a DSN for user@dead.test as a mailbox holds it: the MTA
// wrote the VERP address in Delivered-To.
const mailboxDSN = "Return-Path: <>\r\n" +
	"Delivered-To: bounces+user=dead.test@bounce.example.org\r\n" +
	"From: MAILER-DAEMON@mx.example.net\r\n" +
	"To: bounces+user=dead.test@bounce.example.org\r\n" +
	"Subject: Undelivered Mail Returned to Sender\r\n" +
	"Message-ID: <kill1@mx.example.net>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n" +
	"\r\n--b\r\nContent-Type: text/plain\r\n\r\nUndeliverable.\r\n" +
	"\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n" +
	"Reporting-MTA: dns; mx.example.net\r\nArrival-Date: Mon, 1 Dec 2026 10:00:00 +0000\r\n\r\n" +
	"Final-Recipient: rfc822; user@dead.test\r\nAction: failed\r\nStatus: 5.1.1\r\n" +
	"Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n" +
	"\r\n--b--\r\n"

// mailboxConfig is a serve config reading the test Dovecot over STARTTLS
// with its CA, the password in a file.
func mailboxConfig(t *testing.T, d *dovecottest.Server, password string) string {
	t.Helper()
	dir := t.TempDir()
	tcheck(t, os.WriteFile(filepath.Join(dir, "imap-password"), []byte(password+"\n"), 0o600), "writing password file")
	port := strings.TrimPrefix(d.Addr(), "127.0.0.1:")
	return writeConfig(t, dir, fmt.Sprintf(`
[smtp]
listen = "127.0.0.1:0"
domains = ["bounce.example.org"]
[http]
listen = ""
[store]
path = "bouncer.db"

[[mailbox]]
name = "test"
host = "127.0.0.1"
port = %s
tls = "starttls"
tls_ca_file = %q
user = %q
password_file = "imap-password"
poll_interval = "1s"
min_backoff = "50ms"
max_backoff = "1s"
`, port, d.CAFile, dovecottest.User))
}

// TestMailboxKilledBetweenSaveAndMove runs the real binary, which SIGKILLs
// itself after the record is committed and before the message is moved
// (BOUNCER_TEST_KILL_AFTER_SAVE); the message is still in the INBOX. A
// second run takes it again: it is moved, and the store holds one counted
// record (the second copy is a duplicate, which counts nothing).
func TestMailboxKilledBetweenSaveAndMove(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary; skipped with -short")
	}
	d := dovecottest.Start(t)
	d.Deliver("INBOX", []byte(mailboxDSN))
	cfg := mailboxConfig(t, d, dovecottest.Password)
	bin := buildBinary(t)

	cmd := exec.Command(bin, "serve", "-config", cfg)
	cmd.Env = append(os.Environ(), killAfterSaveEnv+"=1")
	cmd.Stderr = &testWriter{t: t}
	tcheck(t, cmd.Start(), "starting bouncer")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("bouncer ended with %v, want killed by SIGKILL after the save", err)
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatal("bouncer did not kill itself after saving within 60s")
	}
	if n := len(d.Messages("INBOX")); n != 1 {
		t.Fatalf("%d messages in INBOX after the kill, want the message still there", n)
	}

	srv, _ := startBinary(t, bin, cfg)
	deadline := time.Now().Add(30 * time.Second)
	for len(d.Messages("INBOX")) != 0 || len(d.Messages("bouncer-processed")) != 1 {
		if time.Now().After(deadline) {
			srv.Process.Kill()
			t.Fatal("the second run did not move the message within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	tcheck(t, srv.Process.Signal(syscall.SIGTERM), "stopping bouncer")
	tcheck(t, srv.Wait(), "bouncer's exit")

	db, err := bolt.Open(filepath.Join(filepath.Dir(cfg), "bouncer.db"), bolt.Options{ReadOnly: true})
	tcheck(t, err, "opening the store")
	defer db.Close()
	var counted, dups int
	tcheck(t, db.ForEach(store.Filter{}, func(r store.Record) error {
		if r.Envelope.Source != "mailbox:test" {
			t.Errorf("record source %q, want mailbox:test", r.Envelope.Source)
		}
		if r.Duplicate {
			dups++
		} else {
			counted++
		}
		return nil
	}), "reading records")
	if counted != 1 || dups > 1 {
		t.Fatalf("%d counted records and %d duplicates, want 1 and at most 1", counted, dups)
	}
	doms, err := db.Domains("")
	tcheck(t, err, "reading domains")
	if len(doms) != 1 || doms[0].Total != 1 {
		t.Fatalf("domain aggregates %+v, want dead.test counted once", doms)
	}
	if s, err := db.Suppressed("user@dead.test"); err != nil || s == nil {
		t.Fatalf("user@dead.test not suppressed: %v", err)
	}
}

// TestMailboxTestCommand: "bouncer mailbox test NAME" says what waits, and
// a wrong password gives exit 1 and one line.
func TestMailboxTestCommand(t *testing.T) {
	d := dovecottest.Start(t)
	d.Deliver("INBOX", []byte(mailboxDSN))
	out, code := runCLI(t, "mailbox", "test", "test", "-config", mailboxConfig(t, d, dovecottest.Password))
	if code != 0 || !strings.Contains(out, "INBOX holds 1 messages, 1 to read") {
		t.Fatalf("exit %d, output %q: want the counts", code, out)
	}
	var stderr strings.Builder
	a := &app{stdout: &strings.Builder{}, stderr: &stderr}
	err := a.run(t.Context(), []string{"mailbox", "test", "test", "-config", mailboxConfig(t, d, "wrong")})
	if code := exitCode(err, &stderr); code != 1 {
		t.Fatalf("wrong password: exit %d, want 1", code)
	}
	msg := strings.TrimSuffix(stderr.String(), "\n")
	if strings.Contains(msg, "\n") || !strings.Contains(msg, "login refused") || strings.Contains(msg, "wrong") {
		t.Fatalf("wrong password: %q, want one line saying the login was refused, without the password", msg)
	}
	if f := d.Messages("bouncer-processed"); f != nil {
		t.Error("mailbox test created the move folder: it must change nothing")
	}
	if _, code := runCLI(t, "mailbox", "test", "nope", "-config", mailboxConfig(t, d, "x")); code != 1 {
		t.Fatalf("unknown mailbox: exit %d, want 1", code)
	}
}
