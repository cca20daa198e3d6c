package bolt_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/policy"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
	"github.com/bouncer/bouncer/store/storetest"
)

func tcheck(t testing.TB, err error, msg string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
}

// clock is a settable clock for bolt.Options.Now.
type clock = storetest.Clock

func newPolicyClock() *clock { return storetest.ClockAt(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)) }

// openPolicyStore opens a store in t.TempDir with the default policy table
// and the storm guard at threshold.
func openPolicyStore(t *testing.T, threshold int) (*bolt.DB, *clock) {
	t.Helper()
	tab, err := policy.Compile(policy.DefaultRules())
	tcheck(t, err, "compiling policy")
	c := newPolicyClock()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "bouncer.db"), bolt.Options{
		Decide: tab.Decide, Now: c.Now,
		Storm: store.StormOptions{Threshold: threshold, Window: time.Hour},
	})
	tcheck(t, err, "open")
	t.Cleanup(func() { db.Close() })
	return db, c
}

// dsn is an RFC 3464 report from one reporting MTA about rcpt, with the
// remote MTA named after rcpt's domain.
func dsn(rcpt, status, diag string) string {
	dom := rcpt[strings.IndexByte(rcpt, '@')+1:]
	return "From: MAILER-DAEMON@mta.sender.example\r\nTo: bounces@bounce.example.org\r\n" +
		"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n" +
		"\r\n--b1\r\nContent-Type: text/plain\r\n\r\nDelivery to " + rcpt + " failed.\r\n" +
		"\r\n--b1\r\nContent-Type: message/delivery-status\r\n\r\n" +
		"Reporting-MTA: dns; mta.sender.example\r\n\r\n" +
		"Final-Recipient: rfc822; " + rcpt + "\r\nAction: failed\r\nStatus: " + status + "\r\n" +
		"Remote-MTA: dns; mx." + dom + "\r\nDiagnostic-Code: smtp; " + diag + "\r\n" +
		"\r\n--b1--\r\n"
}

// saveDSN decodes raw with the real parser and stores it.
func saveDSN(t *testing.T, db *bolt.DB, c *clock, raw string) store.Record {
	t.Helper()
	return saveDSNFrom(t, db, c, raw, true)
}

// saveDSNFrom is saveDSN from a trusted relay (relay) or any other client.
func saveDSNFrom(t *testing.T, db *bolt.DB, c *clock, raw string, relay bool) store.Record {
	t.Helper()
	rep, err := parse.Message(strings.NewReader(raw), parse.Limits{})
	tcheck(t, err, "parsing")
	recs, err := db.Save(context.Background(), &store.Delivery{
		Received: c.Now(), Envelope: store.Envelope{RcptTo: []string{"bounces@bounce.example.org"}, Relay: relay},
		Raw: []byte(raw), Report: rep,
	})
	tcheck(t, err, "saving")
	if len(recs) != 1 {
		t.Fatalf("got %d records, want 1", len(recs))
	}
	return recs[0]
}

func save543(t *testing.T, db *bolt.DB, c *clock, addr string) store.Record {
	t.Helper()
	return saveDSN(t, db, c, dsn(addr, "5.4.3", "550 5.4.3 Routing server failure"))
}

func suppressed(t *testing.T, db *bolt.DB, addr string) *store.Suppression {
	t.Helper()
	s, err := db.Suppressed(addr)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	tcheck(t, err, "looking up suppression")
	return s
}

func domainStat(t *testing.T, db *bolt.DB, domain string) store.DomainStat {
	t.Helper()
	ds, err := db.Domains("")
	tcheck(t, err, "listing domains")
	for _, d := range ds {
		if d.Domain == domain {
			return d
		}
	}
	t.Fatalf("domain %s not listed", domain)
	return store.DomainStat{}
}

func TestStormHeldAndReleased(t *testing.T) {
	const threshold = 5
	db, c := openPolicyStore(t, threshold)
	var addrs []string
	for i := range 12 {
		addr := fmt.Sprintf("user%02d@dead.example", i)
		addrs = append(addrs, addr)
		rec := save543(t, db, c, addr)
		c.Add(time.Minute)
		if i < threshold {
			if rec.Verdict != store.ActionSuppress || !rec.Suppressed || suppressed(t, db, addr) == nil {
				t.Fatalf("%s (below threshold): verdict %q suppressed %v", addr, rec.Verdict, rec.Suppressed)
			}
			continue
		}
		if rec.Verdict != store.ActionHeld || rec.Suppressed || suppressed(t, db, addr) != nil {
			t.Fatalf("%s (storm): verdict %q suppressed %v, want held", addr, rec.Verdict, rec.Suppressed)
		}
	}
	// The same DSN delivered again is a duplicate: not held again.
	if rec := save543(t, db, c, addrs[8]); rec.Verdict != store.ActionDuplicate || !rec.Duplicate {
		t.Fatalf("repeated DSN: verdict %q, want duplicate", rec.Verdict)
	}
	holds, err := db.Holds("dead.example")
	tcheck(t, err, "listing holds")
	if len(holds) != 12-threshold {
		t.Fatalf("got %d holds, want %d", len(holds), 12-threshold)
	}
	if h := holds[0]; h.Status != "5.4.3" || h.RecordID == "" || h.Key != "domain:dead.example" || h.Reason == "" {
		t.Errorf("hold: %+v", h)
	}
	st := domainStat(t, db, "dead.example").Storm
	if st == nil || st.Status != "5.4.3" || st.Count != threshold+1 || st.Held != 12-threshold {
		t.Fatalf("storm flag: %+v", st)
	}

	n, err := db.ReleaseHolds("dead.example")
	tcheck(t, err, "releasing")
	if n != 12-threshold {
		t.Errorf("released %d, want %d", n, 12-threshold)
	}
	for _, addr := range addrs[threshold:] {
		s := suppressed(t, db, addr)
		if s == nil || s.Source != "policy (released)" || s.Status != "5.4.3" || s.RecordID == "" {
			t.Errorf("%s after release: %+v", addr, s)
		}
	}
	if holds, _ := db.Holds("dead.example"); len(holds) != 0 {
		t.Errorf("%d holds left after release", len(holds))
	}
	if st := domainStat(t, db, "dead.example").Storm; st != nil {
		t.Errorf("storm flag left after release: %+v", st)
	}
	// The counters were reset: the next address is suppressed, not held.
	if rec := save543(t, db, c, "late@dead.example"); rec.Verdict != store.ActionSuppress || !rec.Suppressed {
		t.Errorf("after release: verdict %q suppressed %v", rec.Verdict, rec.Suppressed)
	}
	if _, err := db.ReleaseHolds("dead.example"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second release: %v, want ErrNotFound", err)
	}
	tcheck(t, db.Check(), "check")
}

func TestStormDropped(t *testing.T) {
	db, c := openPolicyStore(t, 3)
	for i := range 6 {
		save543(t, db, c, fmt.Sprintf("u%d@outage.example", i))
	}
	n, err := db.DropHolds("outage.example")
	tcheck(t, err, "dropping")
	if n != 3 {
		t.Errorf("dropped %d, want 3", n)
	}
	for i := range 6 {
		s := suppressed(t, db, fmt.Sprintf("u%d@outage.example", i))
		if (s != nil) != (i < 3) {
			t.Errorf("u%d after drop: suppressed %v", i, s != nil)
		}
	}
	if st := domainStat(t, db, "outage.example").Storm; st != nil {
		t.Errorf("storm flag left after drop: %+v", st)
	}
}

func TestStormBelowThreshold(t *testing.T) {
	db, c := openPolicyStore(t, 5)
	// One address bouncing many times is one address.
	for range 10 {
		save543(t, db, c, "same@slow.example")
	}
	// With it, five within the window, then five more after it: never
	// more than five distinct addresses in one hour.
	for i := range 9 {
		if i == 4 {
			c.Add(2 * time.Hour)
		}
		rec := save543(t, db, c, fmt.Sprintf("u%d@slow.example", i))
		if rec.Verdict != store.ActionSuppress || !rec.Suppressed {
			t.Fatalf("u%d: verdict %q suppressed %v, want suppress", i, rec.Verdict, rec.Suppressed)
		}
	}
	if st := domainStat(t, db, "slow.example").Storm; st != nil {
		t.Errorf("flagged below the threshold: %+v", st)
	}
	// Records the policy does not suppress never count: a 5.7.1
	// block-list rejection only records.
	for i := range 10 {
		rec := saveDSN(t, db, c, dsn(fmt.Sprintf("b%d@listed.example", i), "5.7.1", "554 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org"))
		if rec.Verdict != store.ActionRecord {
			t.Fatalf("5.7.1: verdict %q", rec.Verdict)
		}
	}
	if storms, err := db.Storms(); err != nil || len(storms) != 0 {
		t.Errorf("storms: %v %+v", err, storms)
	}
}

func TestForgedMTAStormHoldsNothing(t *testing.T) {
	// Issue 21: forged reports from an untrusted client, one address at
	// each of many domains, all naming the operator's relay as
	// Reporting-MTA, start no storm: a real bounce for another domain is
	// suppressed, not held.
	db, c := openPolicyStore(t, 4)
	for i := range 30 {
		rec := saveDSNFrom(t, db, c, dsn(fmt.Sprintf("x@d%d.example", i), "5.4.3", "550 5.4.3 Routing server failure"), false)
		if rec.Verdict != store.ActionSuppress {
			t.Fatalf("forged d%d: verdict %q", i, rec.Verdict)
		}
	}
	rec := saveDSNFrom(t, db, c, dsn("real@other.example", "5.4.3", "550 5.4.3 Routing server failure"), false)
	if rec.Verdict != store.ActionSuppress || suppressed(t, db, "real@other.example") == nil {
		t.Fatalf("real bounce after forged ones: verdict %q", rec.Verdict)
	}
	if storms, _ := db.Storms(); len(storms) != 0 {
		t.Fatalf("storms: %+v", storms)
	}
}

func TestStormExpires(t *testing.T) {
	// A storm nobody ends lasts HoldFor: then Prune drops its holds, and
	// the next bounce of a held address is judged afresh.
	db, c := openPolicyStore(t, 2)
	for i := range 4 {
		save543(t, db, c, fmt.Sprintf("u%d@isp.example", i))
	}
	if h, _ := db.Holds("isp.example"); len(h) != 2 {
		t.Fatalf("holds %+v", h)
	}
	c.Add(store.DefaultStormHoldFor + time.Minute)
	_, err := db.Prune(context.Background())
	tcheck(t, err, "prune")
	if h, _ := db.Holds("isp.example"); len(h) != 0 {
		t.Fatalf("holds after expiry %+v", h)
	}
	if st, _ := db.Storms(); len(st) != 0 {
		t.Fatalf("storm after expiry %+v", st)
	}
	rec := saveDSN(t, db, c, dsn("u3@isp.example", "5.4.3", "550 5.4.3 again"))
	if rec.Verdict != store.ActionSuppress || suppressed(t, db, "u3@isp.example") == nil {
		t.Fatalf("held address bounced again after expiry: verdict %q", rec.Verdict)
	}
}

func TestStormBehindOneMTA(t *testing.T) {
	// One address at each of many domains, all reported through a
	// trusted relay by the same reporting MTA: the storm is that MTA's,
	// and the domains behind it are flagged as their suppressions arrive.
	db, c := openPolicyStore(t, 4)
	for i := range 7 {
		rec := save543(t, db, c, fmt.Sprintf("x@d%d.example", i))
		if want := i >= 4; (rec.Verdict == store.ActionHeld) != want {
			t.Fatalf("d%d: verdict %q", i, rec.Verdict)
		}
	}
	storms, err := db.Storms()
	tcheck(t, err, "listing storms")
	if len(storms) != 3 || storms[0].Key != "reporting-mta:mta.sender.example" {
		t.Fatalf("storms: %+v", storms)
	}
}

// BenchmarkStormSave saves 5.4.3 bounces of distinct addresses at a few
// domains, each suppressed by the default policy: with the guard off, on
// below its threshold (counting only) and on in a storm (holding).
func BenchmarkStormSave(b *testing.B) {
	tab, err := policy.Compile(policy.DefaultRules())
	tcheck(b, err, "compiling policy")
	for _, bc := range []struct {
		name      string
		threshold int
		domains   int
	}{{"off", 0, 1}, {"counting", 20, 1 << 20}, {"storm", 20, 1}} {
		b.Run(bc.name, func(b *testing.B) {
			db, err := bolt.Open(filepath.Join(b.TempDir(), "bouncer.db"), bolt.Options{
				Decide: tab.Decide, Storm: store.StormOptions{Threshold: bc.threshold, Window: time.Hour},
			})
			tcheck(b, err, "open")
			defer db.Close()
			var deliveries []*store.Delivery
			for i := range 64 {
				rep, err := parse.Message(strings.NewReader(dsn(fmt.Sprintf("u%d@d.example", i), "5.4.3", "550 5.4.3 Routing server failure")), parse.Limits{})
				tcheck(b, err, "parsing")
				deliveries = append(deliveries, &store.Delivery{Raw: []byte("x"), Report: rep})
			}
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				d := *deliveries[i%len(deliveries)]
				rep := *d.Report
				rc := rep.Recipients[0]
				rc.FinalRecipient = fmt.Sprintf("u%d@d%d.example", i, i%bc.domains)
				rc.RemoteMTA = fmt.Sprintf("mx.d%d.example", i%bc.domains)
				rep.Recipients = []parse.Recipient{rc}
				rep.ReportingMTA = fmt.Sprintf("mta.d%d.example", i%bc.domains)
				d.Report = &rep
				if _, err := db.Save(context.Background(), &d); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestOnStormCalledOnce(t *testing.T) {
	var mu sync.Mutex
	var started []store.Storm
	c := newPolicyClock()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "bouncer.db"), bolt.Options{
		Now: c.Now, Storm: store.StormOptions{Threshold: 2},
		OnStorm: func(st store.Storm) { mu.Lock(); started = append(started, st); mu.Unlock() },
	})
	tcheck(t, err, "open")
	defer db.Close()
	for i := range 5 {
		save543(t, db, c, fmt.Sprintf("u%d@isp.example", i))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(started) != 1 || started[0].Domain != "isp.example" || started[0].Count != 3 {
		t.Fatalf("OnStorm got %+v, want one storm of isp.example at 3 addresses", started)
	}
}
