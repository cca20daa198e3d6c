//go:build linux

package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bouncer/bouncer/metrics"
	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/server"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/verp"
)

// smtpStore is a real SMTP server on loopback storing into db.
func smtpStore(t *testing.T, db *DB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(t, err, "listen")
	logger := slog.New(slog.NewTextHandler(testLogWriter{t}, nil))
	srv := server.New(server.Options{Hostname: "mx.test", Domains: []string{"bounce.example.org"},
		VERP: verp.NewDecoder(verp.Options{})}, db, logger)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	return l.Addr().String()
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// sendBounce delivers the real Postfix DSN of testdata, about addr.
func sendBounce(t *testing.T, addr, rcpt string) error {
	t.Helper()
	msg, err := os.ReadFile("testdata/postfix-5.1.1.eml")
	tcheck(t, err, "reading sample")
	msg = bytes.ReplaceAll(msg, []byte("kijitora@gmail.com"), []byte(rcpt))
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SendMail("", []string{"bounces@bounce.example.org"}, bytes.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}

// want451 fails unless err is the reply to a storage failure.
func want451(t *testing.T, err error, what string) {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 0}) {
		t.Fatalf("%s: got %v, want 451 4.3.0", what, err)
	}
}

// TestDiskFaults makes a write of bbolt's file fail while
// a real SMTP server stores into the DB: the delivery gets 451 4.3.0,
// so does every delivery while the disk keeps failing, the failure is
// counted in the metrics, and once the disk works again the DB has
// reopened its file from disk and stores again without being restarted.
// Every delivery that got 250 is there, once, after a restart.
func TestDiskFaults(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		op   string
		set  func(fs *faultFS, on bool)
	}{
		{"commit ENOSPC", OpCommit, (*faultFS).setDBFull},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			fs := newFaultFS(t)
			var mu sync.Mutex
			var reopens []error // what OnReopen was told
			db, path := mustOpen(t, Options{files: fs.hooks(), LockTimeout: time.Second,
				OnReopen: func(err error) { mu.Lock(); reopens = append(reopens, err); mu.Unlock() }})
			reg := prometheus.NewRegistry()
			_, err := metrics.New(reg, metrics.Sources{StoreFaults: func() metrics.StoreFaults {
				f := db.Faults()
				return metrics.StoreFaults{WriteErrors: f.WriteErrors, Reopens: f.Reopens, ReopenErrors: f.ReopenErrors, Failed: f.Failed}
			}})
			tcheck(t, err, "metrics")
			addr := smtpStore(t, db)

			var acked, refused []string
			send := func(rcpt string) error {
				err := sendBounce(t, addr, rcpt)
				if err == nil {
					acked = append(acked, rcpt)
				} else {
					refused = append(refused, rcpt)
				}
				return err
			}
			for i := range 3 {
				tcheck(t, send(fmt.Sprintf("before%d@example.net", i)), "delivering before the fault")
			}
			c.set(fs, true)
			want451(t, send("during0@example.net"), "delivery on the failing disk")
			want451(t, send("during1@example.net"), "second delivery on the failing disk")
			if _, err := db.Save(context.Background(), bounce("direct@example.net", "5.1.1", parse.KindBounce, parse.ClassHard)); !errors.Is(err, ErrFailed) || !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("Save on the failing disk: %v, want ErrFailed and ErrUnavailable", err)
			}
			if n := metricValue(t, reg, "bouncer_store_write_errors_total", c.op); n < 1 {
				t.Fatalf("bouncer_store_write_errors_total{op=%q} = %v after the fault", c.op, n)
			}

			c.set(fs, false)
			var last error
			for i := 0; i < 100; i++ { // the reopen backs off up to maxBackoff
				if last = send(fmt.Sprintf("after%d@example.net", i)); last == nil {
					break
				}
				want451(t, last, "delivery while the DB reopens")
				time.Sleep(100 * time.Millisecond)
			}
			tcheck(t, last, "delivering after the disk recovered")
			f := db.Faults()
			t.Logf("faults: %+v; acked %d, refused %d", f, len(acked), len(refused))
			if f.Reopens < 1 || f.Failed {
				t.Fatalf("after recovery: %+v, want a reopen and not failed", f)
			}
			if n := metricValue(t, reg, "bouncer_store_reopens_total", "ok"); n < 1 {
				t.Fatalf("bouncer_store_reopens_total{result=ok} = %v", n)
			}
			mu.Lock()
			told := slices.Clone(reopens)
			mu.Unlock()
			if len(told) == 0 || told[len(told)-1] != nil {
				t.Fatalf("OnReopen was told %v, want a successful reopen last", told)
			}
			if told[0] == nil {
				// bbolt's file cannot be opened while the disk is full.
				t.Fatalf("OnReopen was told %v, want a failed reopen first", told)
			}
			checkDeliveries(t, db, acked, refused)

			db.Close()
			again, err := Open(path, Options{})
			tcheck(t, err, "opening after the restart")
			defer again.Close()
			tcheck(t, again.Check(), "check")
			checkDeliveries(t, again, acked, refused)
		})
	}
}

// metricValue reads the counter name{...=label} from reg.
func metricValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	tcheck(t, err, "gather")
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{%s} in the metrics", name, label)
	return 0
}

// checkDeliveries checks that every acknowledged recipient has exactly
// one record in db and every refused one at most one.
func checkDeliveries(t *testing.T, db *DB, acked, refused []string) {
	t.Helper()
	count := func(rcpt string) int {
		recs, err := db.Query(store.Filter{Recipient: rcpt, Limit: 10})
		tcheck(t, err, "query "+rcpt)
		return len(recs)
	}
	for _, a := range acked {
		if n := count(a); n != 1 {
			t.Errorf("%s got 250 and has %d records, want 1", a, n)
		}
	}
	for _, r := range refused {
		if n := count(r); n > 1 {
			t.Errorf("%s got 451 and has %d records, want at most 1", r, n)
		}
	}
}

// TestUpdateCommitFault: a write transaction of its own (here adding a
// suppression by hand) whose commit fails on a full disk fails, and puts
// the DB in the failed state as the writer's own commit would; once the
// disk has room the DB reopens, the failed change is not there, and
// Saves succeed again.
func TestUpdateCommitFault(t *testing.T) {
	t.Parallel()
	fs := newFaultFS(t)
	db, _ := mustOpen(t, Options{files: fs.hooks(), LockTimeout: time.Second})
	save(t, db, bounce("before@example.net", "5.1.1", parse.KindBounce, parse.ClassHard))
	fs.setDBFull(true)
	err := db.AddSuppression(store.Suppression{Address: "hand@example.net", Reason: "by hand", Source: "test"})
	if err == nil {
		t.Fatal("adding a suppression on a full disk succeeded")
	}
	for i := 0; db.Faults().WriteErrors[OpCommit] == 0; i++ {
		if i == 1000 {
			t.Fatalf("the failed commit was not counted: %+v", db.Faults())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := db.Save(context.Background(), bounce("during@example.net", "5.1.1", parse.KindBounce, parse.ClassHard)); !errors.Is(err, ErrFailed) {
		t.Fatalf("Save after the failed commit: %v, want ErrFailed", err)
	}
	if err := db.AddSuppression(store.Suppression{Address: "hand2@example.net", Reason: "by hand", Source: "test"}); !errors.Is(err, ErrFailed) {
		t.Fatalf("a second suppression while failed: %v, want ErrFailed", err)
	}
	fs.setDBFull(false)
	var last error
	for i := 0; i < 100; i++ {
		if _, last = db.Save(context.Background(), bounce(fmt.Sprintf("after%d@example.net", i), "5.1.1", parse.KindBounce, parse.ClassHard)); last == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	tcheck(t, last, "saving after the disk recovered")
	if _, err := db.Suppressed("hand@example.net"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the suppression whose commit failed: %v, want ErrNotFound", err)
	}
	if recs, err := db.Query(store.Filter{Recipient: "before@example.net"}); err != nil || len(recs) != 1 {
		t.Fatalf("the bounce saved before the fault: %d records, %v", len(recs), err)
	}
}

// TestReopenBacksOff: while the disk stays full, Saves are refused at
// once and do not each cost a reopen; the attempts follow the back-off
// (doubling from minBackoff, at most maxBackoff apart), however many
// Saves arrive meanwhile.
func TestReopenBacksOff(t *testing.T) {
	t.Parallel()
	fs := newFaultFS(t)
	db, _ := mustOpen(t, Options{files: fs.hooks(), LockTimeout: time.Second})
	save(t, db, bounce("before@example.net", "5.1.1", parse.KindBounce, parse.ClassHard))
	fs.setDBFull(true)
	// Save until the third reopen attempt has failed: the first is at
	// once, the next after 50 and 100 ms more.
	start := time.Now()
	saves := 0
	for db.Faults().ReopenErrors < 3 {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("no third reopen attempt in 30s: %+v", db.Faults())
		}
		_, err := db.Save(context.Background(), bounce(fmt.Sprintf("full%d@example.net", saves), "5.1.1", parse.KindBounce, parse.ClassHard))
		if !errors.Is(err, ErrFailed) {
			t.Fatalf("save %d on the full disk: %v, want ErrFailed", saves, err)
		}
		saves++
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	f := db.Faults()
	// Attempts at 0, then after 50, 100, 200 ms ... (capped): within
	// elapsed there are at most 2 + log2(elapsed/min + 1) + elapsed/max.
	bound := 2 + int64(math.Log2(float64(elapsed)/float64(minBackoff)+1)) + int64(elapsed/maxBackoff)
	if f.ReopenErrors > bound || f.WriteErrors[OpCommit] != 1 {
		t.Fatalf("%d saves in %s: %+v, want one failed commit and at most %d reopen attempts", saves, elapsed, f, bound)
	}
	fs.setDBFull(false)
	var last error
	for i := 0; i < 100; i++ {
		if _, last = db.Save(context.Background(), bounce(fmt.Sprintf("after%d@example.net", i), "5.1.1", parse.KindBounce, parse.ClassHard)); last == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	tcheck(t, last, "saving after the disk recovered")
}
