package mailbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/bouncer/bouncer/mailbox/dovecottest"
	"github.com/bouncer/bouncer/server"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
)

// testWriter sends log output to t.Log, so a failing test shows its log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

const bounceDomain = "bounce.example.org"

// dsn is an RFC 3464 report for addr, delivered by the MTA to the VERP
// address of addr at the bounce domain. n makes each report distinct.
func dsn(n int, addr string) []byte {
	verpAddr := "bounces+" + strings.Replace(addr, "@", "=", 1) + "@" + bounceDomain
	return []byte(strings.ReplaceAll(fmt.Sprintf(`Return-Path: <>
Delivered-To: %[2]s
From: MAILER-DAEMON@mx.example.net
To: %[2]s
Subject: Undelivered Mail Returned to Sender
Message-ID: <dsn%[1]d@mx.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: text/plain

Your message could not be delivered.

--b
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
Arrival-Date: Mon, 1 Dec 2026 10:00:%02[1]d +0000

Final-Recipient: rfc822; %[3]s
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 user unknown

--b
Content-Type: text/rfc822-headers

Message-ID: <orig%[1]d@sender.example.org>
From: news@sender.example.org
To: %[3]s

--b--
`, n, verpAddr, addr), "\n", "\r\n"))
}

// human is a reply written by a person to the bounce address.
func human(n int) []byte {
	return []byte(strings.ReplaceAll(fmt.Sprintf(`Return-Path: <alice@example.net>
Delivered-To: bounces@%s
From: Alice <alice@example.net>
To: bounces@%s
Subject: please take me off your list
Message-ID: <human%d@example.net>

Hello, I do not want these mails.
`, bounceDomain, bounceDomain, n), "\n", "\r\n"))
}

// harness is a reader on a private Dovecot, saving into a bbolt file.
type harness struct {
	t      *testing.T
	d      *dovecottest.Server
	db     *bolt.DB
	r      *Reader
	cancel context.CancelFunc
	done   chan struct{}
}

func testOptions(d *dovecottest.Server) Options {
	return Options{
		Name: "test", Addr: d.Addr(), TLS: TLSNone, User: dovecottest.User, Password: dovecottest.Password,
		Idle: true, PollInterval: 200 * time.Millisecond, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Timeout: 5 * time.Second,
	}
}

func newHarness(t *testing.T, d *dovecottest.Server, opts Options) *harness {
	t.Helper()
	if d == nil {
		d = dovecottest.Start(t)
	}
	db, err := bolt.Open(filepath.Join(t.TempDir(), "bouncer.db"), bolt.Options{})
	tcheck(t, err, "opening store")
	t.Cleanup(func() { db.Close() })
	if err := opts.Validate(); err != nil {
		t.Fatal(err)
	}
	in := server.NewIntake(server.Options{Domains: []string{bounceDomain}})
	return &harness{t: t, d: d, db: db, r: New(opts, in, db, testLogger(t))}
}

// start runs the reader until the test ends.
func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan struct{})
	go func() {
		defer close(h.done)
		h.r.Run(ctx)
	}()
	h.t.Cleanup(h.stop)
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	select {
	case <-h.done:
	case <-time.After(20 * time.Second):
		h.t.Error("reader did not stop within 20s of its context's end")
	}
	h.cancel = nil
}

// waitFor polls cond for up to 20s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// records returns the stored records.
func (h *harness) records() []store.Record {
	h.t.Helper()
	var out []store.Record
	tcheck(h.t, h.db.ForEach(store.Filter{}, func(r store.Record) error {
		out = append(out, r)
		return nil
	}), "reading records")
	return out
}

func (h *harness) count(folder string) int { return len(h.d.Messages(folder)) }

func tcheck(t testing.TB, err error, msg string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
}

func hasFlag(flags []imap.Flag, f imap.Flag) bool {
	for _, g := range flags {
		if strings.EqualFold(string(g), string(f)) {
			return true
		}
	}
	return false
}

// TestWaitingAndArriving: bounces waiting at the start are stored and
// moved, and one that arrives later is found, in IDLE and by polling.
func TestWaitingAndArriving(t *testing.T) {
	d := dovecottest.Start(t)
	for _, idle := range []bool{true, false} {
		t.Run(fmt.Sprintf("idle=%v", idle), func(t *testing.T) {
			opts := testOptions(d)
			opts.Idle = idle
			opts.PollInterval = 300 * time.Millisecond
			if idle {
				opts.PollInterval = time.Hour // only IDLE can wake it
			}
			opts.MoveFolder = fmt.Sprintf("done-%v", idle)
			h := newHarness(t, d, opts)
			base := 10
			if idle {
				base = 0
			}
			d.Deliver("INBOX", dsn(base+1, "one@dead.test"))
			d.Deliver("INBOX", dsn(base+2, "two@dead.test"))
			h.start()
			waitFor(t, "two waiting bounces stored and moved", func() bool {
				return len(h.records()) == 2 && h.count("INBOX") == 0 && h.count(opts.MoveFolder) == 2
			})
			if idle {
				waitFor(t, "IDLE", func() bool { return h.r.Stats().Connected })
				time.Sleep(300 * time.Millisecond) // into IDLE
			}
			d.Deliver("INBOX", dsn(base+3, "three@dead.test"))
			waitFor(t, "the new bounce stored and moved", func() bool {
				return len(h.records()) == 3 && h.count("INBOX") == 0 && h.count(opts.MoveFolder) == 3
			})
			for _, r := range h.records() {
				if r.Envelope.Source != "mailbox:test" || !strings.HasSuffix(r.Envelope.VERP, "@dead.test") || r.Status != "5.1.1" {
					t.Errorf("record %+v: want source mailbox:test, a VERP address at dead.test, status 5.1.1", r.Envelope)
				}
			}
			if st := h.r.Stats(); st.Stored != 3 {
				t.Errorf("stats %+v, want 3 stored", st)
			}
		})
	}
}

// TestActions: after the commit a message is moved, flagged or deleted;
// a flagged one is not taken again.
func TestActions(t *testing.T) {
	d := dovecottest.Start(t)
	for i, action := range []string{ActionMove, ActionFlag, ActionDelete} {
		t.Run(action, func(t *testing.T) {
			folder := "in-" + action
			d.Deliver(folder, dsn(20+i, action+"@dead.test"))
			opts := testOptions(d)
			opts.Folder, opts.Action, opts.MoveFolder = folder, action, "done-"+action
			h := newHarness(t, d, opts)
			h.start()
			waitFor(t, "the bounce stored", func() bool { return len(h.records()) == 1 })
			switch action {
			case ActionMove:
				waitFor(t, "the move", func() bool { return h.count(folder) == 0 && h.count("done-move") == 1 })
			case ActionFlag:
				waitFor(t, "the flag", func() bool {
					m := h.d.Messages(folder)
					return len(m) == 1 && hasFlag(m[0].Flags, imap.FlagSeen)
				})
				time.Sleep(500 * time.Millisecond) // a few polls
				if n := len(h.records()); n != 1 {
					t.Fatalf("%d records after a few polls, want 1: the flagged message was taken again", n)
				}
			case ActionDelete:
				waitFor(t, "the deletion", func() bool { return h.count(folder) == 0 })
			}
		})
	}
}

// TestNonBounceLeftAlone: a person's reply, an auto-reply and a message to
// a foreign domain are not saved and stay where they are, unread, even
// with action = delete; with not_bounce_folder they move there.
func TestNonBounceLeftAlone(t *testing.T) {
	d := dovecottest.Start(t)
	autoReply := []byte(strings.ReplaceAll(`Return-Path: <bob@example.net>
Delivered-To: bounces+bob=example.net@`+bounceDomain+`
From: bob@example.net
To: bounces+bob=example.net@`+bounceDomain+`
Subject: Out of office
Auto-Submitted: auto-replied
Message-ID: <auto1@example.net>

I am away until Monday.
`, "\n", "\r\n"))
	foreign := []byte(strings.ReplaceAll(string(dsn(31, "x@dead.test")), bounceDomain, "other.example.com"))
	for _, moveTo := range []string{"", "not-bounces"} {
		t.Run("not_bounce_folder="+moveTo, func(t *testing.T) {
			folder := "in-" + moveTo
			d.Deliver(folder, human(30))
			d.Deliver(folder, autoReply)
			d.Deliver(folder, foreign)
			d.Deliver(folder, dsn(32, "real@dead.test"))
			opts := testOptions(d)
			opts.Folder, opts.Action, opts.NotBounceFolder = folder, ActionDelete, moveTo
			h := newHarness(t, d, opts)
			h.start()
			waitFor(t, "the bounce stored and deleted", func() bool {
				st := h.r.Stats()
				return len(h.records()) == 1 && st.NotBounce == 2 && st.Refused == 1
			})
			time.Sleep(500 * time.Millisecond) // more polls: nothing is taken twice
			if n := len(h.records()); n != 1 {
				t.Fatalf("%d records, want only the bounce's", n)
			}
			left := h.d.Messages(folder)
			want := 3
			if moveTo != "" {
				want = 0
				if n := h.count(moveTo); n != 3 {
					t.Errorf("%d messages in %s, want 3", n, moveTo)
				}
			}
			if len(left) != want {
				t.Fatalf("%d messages left in %s, want %d", len(left), folder, want)
			}
			for _, m := range left {
				if hasFlag(m.Flags, imap.FlagSeen) || hasFlag(m.Flags, imap.FlagDeleted) {
					t.Errorf("a message left alone has flags %v", m.Flags)
				}
			}
			if st := h.r.Stats(); st.NotBounce != 2 || st.Refused != 1 {
				t.Errorf("stats %+v: want 2 not bounces and 1 refused, each counted once", st)
			}
		})
	}
}

// TestTooLarge: a message over the size limit is left in the mailbox and
// counted once; the next one is taken.
func TestTooLarge(t *testing.T) {
	d := dovecottest.Start(t)
	big := dsn(40, "big@dead.test")
	big = append(big[:len(big)-len("--b--\r\n")], []byte("Content-Type: text/plain\r\n\r\n"+strings.Repeat("x", 70_000)+"\r\n--b--\r\n")...)
	d.Deliver("INBOX", big)
	d.Deliver("INBOX", dsn(41, "small@dead.test"))
	opts := testOptions(d)
	opts.MaxMessageBytes = 64 << 10
	h := newHarness(t, d, opts)
	h.start()
	waitFor(t, "the small bounce", func() bool { return len(h.records()) == 1 && h.count("INBOX") == 1 })
	time.Sleep(500 * time.Millisecond)
	if st := h.r.Stats(); st.TooLarge != 1 || st.Stored != 1 {
		t.Fatalf("stats %+v: want 1 too large (counted once) and 1 stored", st)
	}
	if r := h.records()[0]; r.Addr != "small@dead.test" {
		t.Fatalf("stored %s, want small@dead.test", r.Addr)
	}
}

// TestBadCredentials: one line that says the login was refused and for
// whom, never the password.
func TestBadCredentials(t *testing.T) {
	d := dovecottest.Start(t)
	opts := testOptions(d)
	opts.Password = "wrong-password"
	h := newHarness(t, d, opts)
	_, _, err := h.r.Test(context.Background())
	if !errors.Is(err, ErrLogin) {
		t.Fatalf("got %v, want ErrLogin", err)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || !strings.Contains(msg, dovecottest.User) || strings.Contains(msg, "wrong-password") {
		t.Fatalf("error %q: want one line naming the user, without the password", msg)
	}
	t.Log(msg)
}

// TestTLS: implicit TLS and STARTTLS with the server's CA work; without
// it the error is one line about the certificate.
func TestTLS(t *testing.T) {
	d := dovecottest.Start(t)
	d.Deliver("INBOX", dsn(50, "tls@dead.test"))
	for _, mode := range []string{TLSImplicit, TLSStartTLS} {
		t.Run(mode, func(t *testing.T) {
			opts := testOptions(d)
			opts.TLS, opts.TLSConfig = mode, d.TLSConfig()
			if mode == TLSImplicit {
				opts.Addr = d.TLSAddr()
			}
			h := newHarness(t, d, opts)
			total, waiting, err := h.r.Test(context.Background())
			tcheck(t, err, "testing the mailbox over "+mode)
			if total != 1 || waiting != 1 {
				t.Fatalf("got %d messages, %d waiting, want 1 and 1", total, waiting)
			}
			opts.TLSConfig = nil
			h = newHarness(t, d, opts)
			_, _, err = h.r.Test(context.Background())
			if !errors.Is(err, ErrCertificate) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("without the CA: got %v, want one line with ErrCertificate", err)
			}
			t.Log(err)
		})
	}
}

// TestServerRestart: the server goes away and comes back; the reader
// notices, backs off, reconnects and takes what arrived meanwhile.
func TestServerRestart(t *testing.T) {
	d := dovecottest.Start(t)
	h := newHarness(t, d, testOptions(d))
	d.Deliver("INBOX", dsn(60, "before@dead.test"))
	h.start()
	waitFor(t, "the first bounce", func() bool { return len(h.records()) == 1 })
	d.Stop()
	waitFor(t, "the reader to notice", func() bool { st := h.r.Stats(); return !st.Connected && st.Errors > 0 })
	time.Sleep(300 * time.Millisecond) // a few failed reconnections
	d.Start()
	d.Deliver("INBOX", dsn(61, "after@dead.test"))
	waitFor(t, "the bounce delivered after the restart", func() bool { return len(h.records()) == 2 && h.count("INBOX") == 0 })
}

// TestShutdownWaitsForTheMove: a shutdown while a message is between its
// Save and its move lets the move finish.
func TestShutdownWaitsForTheMove(t *testing.T) {
	d := dovecottest.Start(t)
	opts := testOptions(d)
	var once sync.Once
	saved := make(chan struct{})
	release := make(chan struct{})
	opts.AfterSave = func() {
		once.Do(func() { close(saved) })
		<-release
	}
	h := newHarness(t, d, opts)
	d.Deliver("INBOX", dsn(70, "shutdown@dead.test"))
	h.start()
	<-saved
	h.cancel()
	time.Sleep(100 * time.Millisecond)
	close(release)
	h.stop()
	if n, m := h.count("INBOX"), h.count(opts.withDefaults().MoveFolder); n != 0 || m != 1 {
		t.Fatalf("%d left in INBOX, %d moved: want the move finished before the shutdown", n, m)
	}
}

func TestValidate(t *testing.T) {
	base := Options{Name: "m", Addr: "imap.example.com:993", User: "u", Password: "p"}
	if err := base.Validate(); err != nil {
		t.Fatalf("valid options: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"plain off loopback", func(o *Options) { o.TLS = TLSNone }, "plain text"},
		{"bad tls", func(o *Options) { o.TLS = "ssl" }, "tls"},
		{"no port", func(o *Options) { o.Addr = "imap.example.com" }, "host:port"},
		{"bad action", func(o *Options) { o.Action = "archive" }, "action"},
		{"move to itself", func(o *Options) { o.MoveFolder = "INBOX" }, "move_folder"},
		{"no user", func(o *Options) { o.User = "" }, "user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			tc.mod(&o)
			err := o.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("got %v, want one line about %s", err, tc.want)
			}
		})
	}
	o := base
	o.TLS, o.Addr = TLSNone, "127.0.0.1:143"
	if err := o.Validate(); err != nil {
		t.Fatalf("plain to loopback: %v", err)
	}
}
