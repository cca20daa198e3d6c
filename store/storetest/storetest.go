// Package storetest is the conformance suite of the store engines: the
// same tests, run against store/bolt and store/postgres, on real
// databases, with reports decoded by the real parser.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
)

// Config is what a test asks of the engine it opens.
type Config struct {
	Rules store.Rules
	Now   func() time.Time
}

// Opener opens a new, empty store for one test; the engine closes it in
// t.Cleanup.
type Opener func(t *testing.T, c Config) store.Store

// Run runs every conformance test against the engine open gives.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(*testing.T, Opener)
	}{
		{"SaveQuery", testSaveQuery},
		{"Duplicate", testDuplicate},
		{"PolicySuppress", testPolicySuppress},
		{"Suppressions", testSuppressions},
		{"StormHoldRelease", testStorm},
		{"Outbox", testOutbox},
		{"OutboxHeld", testOutboxHeld},
		{"Domains", testDomains},
		{"Page", testPage},
		{"MXRecovery", testMXRecovery},
		{"Concurrent", testConcurrent},
		{"Daily", testDaily},
		{"Reclassify", testReclassify},
		{"ReclassifyCountsOnce", testReclassifyCountsOnce},
		{"ImportBadBatch", testImportBadBatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open) })
	}
}

// Clock is a settable clock for Config.Now.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock starts a clock at a fixed time.
func NewClock() *Clock { return ClockAt(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)) }

// ClockAt starts a clock at t.
func ClockAt(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Add moves the clock on.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// DSN is an RFC 3464 report about rcpt with status; arrival names the
// attempt (the same arrival is the same report).
func DSN(rcpt, status, arrival string) string {
	dom := rcpt[strings.IndexByte(rcpt, '@')+1:]
	return "From: MAILER-DAEMON@mta.sender.example\r\nTo: bounces@bounce.example.org\r\n" +
		"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n" +
		"\r\n--b1\r\nContent-Type: text/plain\r\n\r\nDelivery to " + rcpt + " failed.\r\n" +
		"\r\n--b1\r\nContent-Type: message/delivery-status\r\n\r\n" +
		"Reporting-MTA: dns; mta.sender.example\r\nArrival-Date: " + arrival + "\r\n\r\n" +
		"Final-Recipient: rfc822; " + rcpt + "\r\nAction: failed\r\nStatus: " + status + "\r\n" +
		"Remote-MTA: dns; mx." + dom + "\r\nDiagnostic-Code: smtp; " + status + " failed\r\n" +
		"\r\n--b1--\r\n"
}

// Save decodes raw with the real parser and stores it.
func Save(t *testing.T, db store.Store, raw string) []store.Record {
	t.Helper()
	recs, err := db.Save(context.Background(), Delivery(t, raw))
	if err != nil {
		t.Fatalf("save: %v", err)
	}
	return recs
}

// Delivery is raw decoded as the server would.
func Delivery(t testing.TB, raw string) *store.Delivery {
	t.Helper()
	rep, err := parse.Message(strings.NewReader(raw), parse.Limits{})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return &store.Delivery{Raw: []byte(raw), Report: rep,
		Envelope: store.Envelope{RcptTo: []string{"bounces@bounce.example.org"}, ClientIP: "127.0.0.1"}}
}

// arrival is a distinct Arrival-Date for report n.
func arrival(n int) string {
	return time.Date(2026, 2, 1, 0, 0, n, 0, time.UTC).Format(time.RFC1123Z)
}

func tcheck(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func testSaveQuery(t *testing.T, open Opener) {
	c := NewClock()
	db := open(t, Config{Now: c.Now})
	raw := DSN("User@Dead.Example", "5.1.1", arrival(1))
	recs := Save(t, db, raw)
	if len(recs) != 1 || recs[0].Addr != "User@dead.example" || recs[0].Domain != "dead.example" || recs[0].Status != "5.1.1" {
		t.Fatalf("saved %+v", recs)
	}
	for _, f := range []store.Filter{{Status: "5.1.1"}, {Domain: "DEAD.example"}, {Recipient: "User@dead.EXAMPLE"}, {Kind: parse.KindBounce}, {}} {
		got, err := db.Query(f)
		tcheck(t, err, "query")
		if len(got) != 1 || got[0].ID != recs[0].ID {
			t.Fatalf("query %+v: %d records", f, len(got))
		}
	}
	for _, f := range []store.Filter{{Status: "5.4.3"}, {Domain: "other.example"}, {Recipient: "user@dead.example"}} {
		got, err := db.Query(f)
		tcheck(t, err, "query")
		if len(got) != 0 {
			t.Fatalf("query %+v matched %+v", f, got)
		}
	}
	rec, err := db.Record(recs[0].ID)
	tcheck(t, err, "record")
	if rec.DiagnosticCode != recs[0].DiagnosticCode || rec.ReportingMTA != "dns; mta.sender.example" && rec.ReportingMTA != "mta.sender.example" {
		t.Fatalf("record read back %+v", rec)
	}
	b, err := db.Raw(rec.MsgID)
	tcheck(t, err, "raw")
	if string(b) != raw {
		t.Fatalf("raw message differs: %d bytes, want %d", len(b), len(raw))
	}
	if _, err := db.Record("0123456789abcdef01234567"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown record: %v, want ErrNotFound", err)
	}
}

func testDuplicate(t *testing.T, open Opener) {
	db := open(t, Config{Now: NewClock().Now})
	first := Save(t, db, DSN("a@dead.example", "5.4.3", arrival(1)))
	again := Save(t, db, DSN("a@dead.example", "5.4.3", arrival(1)))
	if !again[0].Duplicate || again[0].DuplicateOf != first[0].ID || again[0].Suppressed {
		t.Fatalf("second copy %+v", again[0])
	}
	ds, err := db.Domains("")
	tcheck(t, err, "domains")
	if len(ds) != 1 || ds[0].Total != 1 {
		t.Fatalf("duplicate counted in the aggregate: %+v", ds)
	}
}

func testPolicySuppress(t *testing.T, open Opener) {
	db := open(t, Config{Now: NewClock().Now})
	recs := Save(t, db, DSN("a@dead.example", "5.4.3", arrival(1)))
	if !recs[0].Suppressed || recs[0].Verdict != store.ActionSuppress {
		t.Fatalf("5.4.3 record %+v", recs[0])
	}
	s, err := db.Suppressed("a@DEAD.example")
	tcheck(t, err, "suppressed")
	if s.Source != "policy" || s.RecordID != recs[0].ID || s.Status != "5.4.3" {
		t.Fatalf("suppression %+v", s)
	}
	// The reason says what the record is, once: the default rule's
	// label ("5.4.3") is not appended.
	if !strings.HasPrefix(s.Reason, "bounce hard 5.4.3") || strings.Count(s.Reason, "5.4.3") != 1 {
		t.Fatalf("suppression reason %q repeats itself", s.Reason)
	}
	recs = Save(t, db, DSN("b@dead.example", "5.1.1", arrival(2)))
	if recs[0].Suppressed {
		t.Fatal("5.1.1 suppressed by the default policy")
	}
	if _, err := db.Suppressed("b@dead.example"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("b: %v, want ErrNotFound", err)
	}
}

func testSuppressions(t *testing.T, open Opener) {
	db := open(t, Config{Now: NewClock().Now})
	for _, a := range []string{"c@x.example", "a@x.example", "b@y.example"} {
		tcheck(t, db.AddSuppression(store.Suppression{Address: a, Reason: "test"}), "add")
	}
	if err := db.AddSuppression(store.Suppression{Address: "a@X.example"}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second add: %v, want ErrExists", err)
	}
	if err := db.AddSuppression(store.Suppression{Address: "no-at-sign"}); err == nil {
		t.Fatal("added an address without @")
	}
	var got []string
	tcheck(t, db.Suppressions("x.example", func(s store.Suppression) error {
		got = append(got, s.Address+"/"+s.Source)
		return nil
	}), "list")
	if want := []string{"a@x.example/manual", "c@x.example/manual"}; !slices.Equal(got, want) {
		t.Fatalf("x.example: %v, want %v", got, want)
	}
	n := 0
	tcheck(t, db.Suppressions("", func(store.Suppression) error { n++; return nil }), "list all")
	if n != 3 {
		t.Fatalf("%d suppressions, want 3", n)
	}
	tcheck(t, db.RemoveSuppression("a@x.example"), "remove")
	if err := db.RemoveSuppression("a@x.example"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second remove: %v, want ErrNotFound", err)
	}
	if _, err := db.Suppressed("a@x.example"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("removed address: %v", err)
	}
}

func testStorm(t *testing.T, open Opener) {
	db := open(t, Config{Now: NewClock().Now, Rules: store.Rules{Storm: store.StormOptions{Threshold: 2, Window: time.Hour}}})
	var verdicts []string
	for i := range 4 {
		recs := Save(t, db, DSN(fmt.Sprintf("u%d@isp.example", i), "5.4.3", arrival(i)))
		verdicts = append(verdicts, recs[0].Verdict)
	}
	if want := "[suppress suppress held held]"; fmt.Sprint(verdicts) != want {
		t.Fatalf("verdicts %v, want %s", verdicts, want)
	}
	storms, err := db.Storms()
	tcheck(t, err, "storms")
	if len(storms) != 1 || storms[0].Domain != "isp.example" || storms[0].Held != 2 {
		t.Fatalf("storms %+v", storms)
	}
	holds, err := db.Holds("isp.example")
	tcheck(t, err, "holds")
	if len(holds) != 2 || holds[0].Address != "u2@isp.example" || holds[1].Address != "u3@isp.example" {
		t.Fatalf("holds %+v", holds)
	}
	if st, err := domainStatter(t, db).DomainStat("isp.example"); err != nil || st.Storm == nil || st.Storm.Held != 2 {
		t.Fatalf("domain stat during the storm: %+v, %v", st, err)
	}
	n, err := db.ReleaseHolds("isp.example")
	tcheck(t, err, "release")
	if n != 2 {
		t.Fatalf("released %d, want 2", n)
	}
	if _, err := db.Suppressed("u3@isp.example"); err != nil {
		t.Fatalf("released hold not suppressed: %v", err)
	}
	if storms, _ := db.Storms(); len(storms) != 0 {
		t.Fatalf("storm still flagged: %+v", storms)
	}
	if _, err := db.ReleaseHolds("isp.example"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second release: %v, want ErrNotFound", err)
	}
}

func testOutbox(t *testing.T, open Opener) {
	c := NewClock()
	db := open(t, Config{Now: c.Now})
	tcheck(t, db.SetOutboxTargets([]store.OutboxTarget{{Name: "hook", Events: []string{store.EventHard}}, {Name: "lm", Events: []string{store.EventSuppressed}}}), "targets")
	hard := Save(t, db, DSN("a@dead.example", "5.1.1", arrival(1)))  // hard: hook only
	supp := Save(t, db, DSN("b@route.example", "5.4.3", arrival(2))) // hard and suppressed: both
	Save(t, db, DSN("c@later.example", "4.2.2", arrival(3)))         // soft: none
	evs, err := db.OutboxDue(c.Now(), 10, 100, nil)
	tcheck(t, err, "due")
	var got []string
	for _, e := range evs {
		got = append(got, e.ID)
	}
	want := []string{hard[0].ID + ".hook", supp[0].ID + ".hook", supp[0].ID + ".lm"}
	if !slices.Equal(got, want) {
		t.Fatalf("due %v, want %v", got, want)
	}
	q, d, err := db.OutboxStats()
	tcheck(t, err, "stats")
	if q != 3 || d != 0 {
		t.Fatalf("stats %d queued %d dead", q, d)
	}
	dead, err := db.OutboxUpdate([]store.OutboxResult{
		{Seq: evs[0].Seq},
		{Seq: evs[1].Seq, Err: errors.New("503"), NextTry: c.Now().Add(time.Hour)},
		{Seq: evs[2].Seq, Err: errors.New("400"), Dead: true},
	})
	tcheck(t, err, "update")
	if dead != 1 {
		t.Fatalf("%d dead, want 1", dead)
	}
	if evs, _ := db.OutboxDue(c.Now(), 10, 100, nil); len(evs) != 0 {
		t.Fatalf("due before the retry time: %+v", evs)
	}
	c.Add(2 * time.Hour)
	evs, err = db.OutboxDue(c.Now(), 10, 100, nil)
	tcheck(t, err, "due later")
	if len(evs) != 1 || evs[0].ID != supp[0].ID+".hook" || evs[0].Attempts != 1 || evs[0].LastError == "" {
		t.Fatalf("rescheduled %+v", evs)
	}
	var deadIDs []string
	tcheck(t, db.OutboxEvents(true, func(e store.OutboxEvent) error { deadIDs = append(deadIDs, e.ID); return nil }), "dead list")
	if !slices.Equal(deadIDs, []string{supp[0].ID + ".lm"}) {
		t.Fatalf("dead %v", deadIDs)
	}
	n, err := db.OutboxRetry()
	tcheck(t, err, "retry")
	if q, d, _ := db.OutboxStats(); n != 1 || q != 2 || d != 0 {
		t.Fatalf("retry moved %d: %d queued %d dead", n, q, d)
	}
	if _, err := db.OutboxDrop(999999); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("drop unknown: %v", err)
	}
}

// testOutboxHeld: a delivery whose pushes are held (Delivery.HoldPush)
// is stored and judged as any other, but its events go to the dead-letter
// list, marked held with the reason, numbered after the queued ones; a
// retry queues them unmarked.
func testOutboxHeld(t *testing.T, open Opener) {
	c := NewClock()
	db := open(t, Config{Now: c.Now})
	tcheck(t, db.SetOutboxTargets([]store.OutboxTarget{{Name: "hook", Events: []string{store.EventHard}}}), "targets")
	first := Save(t, db, DSN("a@dead.example", "5.1.1", arrival(1)))
	d := Delivery(t, DSN("b@dead.example", "5.1.1", arrival(2)))
	d.HoldPush = "held: over budget"
	held, err := db.Save(context.Background(), d)
	tcheck(t, err, "save held")
	if len(held) != 1 || held[0].Verdict == "" || held[0].Duplicate {
		t.Fatalf("held delivery stored as %+v", held)
	}
	q, dead, err := db.OutboxStats()
	tcheck(t, err, "stats")
	if q != 1 || dead != 1 {
		t.Fatalf("stats: %d queued %d dead, want 1 and 1", q, dead)
	}
	evs, err := db.OutboxDue(c.Now(), 10, 100, nil)
	tcheck(t, err, "due")
	if len(evs) != 1 || evs[0].ID != first[0].ID+".hook" {
		t.Fatalf("due %+v, want only the first record's event", evs)
	}
	var deadEvs []store.OutboxEvent
	tcheck(t, db.OutboxEvents(true, func(e store.OutboxEvent) error { deadEvs = append(deadEvs, e); return nil }), "dead list")
	if len(deadEvs) != 1 || deadEvs[0].ID != held[0].ID+".hook" || !deadEvs[0].Held ||
		deadEvs[0].LastError != d.HoldPush || deadEvs[0].Seq <= evs[0].Seq {
		t.Fatalf("dead %+v", deadEvs)
	}
	n, err := db.OutboxRetry(deadEvs[0].Seq)
	tcheck(t, err, "retry")
	evs, err = db.OutboxDue(c.Now(), 10, 100, nil)
	tcheck(t, err, "due after retry")
	// (An engine shared by hosts leased the first event above: it is not
	// due again yet.)
	last := evs[len(evs)-1]
	if n != 1 || last.ID != held[0].ID+".hook" || last.Held || last.LastError != "" {
		t.Fatalf("after retry (%d moved): due %+v", n, evs)
	}
}

func testDomains(t *testing.T, open Opener) {
	c := NewClock()
	db := open(t, Config{Now: c.Now})
	for i, a := range []string{"a@one.example", "b@two.example", "c@one.example", "d@three.example"} {
		c.Add(time.Minute)
		status := "5.1.1"
		if i == 1 {
			status = "5.4.3"
		}
		d := Delivery(t, DSN(a, status, arrival(i)))
		d.Received = c.Now()
		_, err := db.Save(context.Background(), d)
		tcheck(t, err, "save")
	}
	recent, err := db.RecentDomains(store.DomainFilter{Limit: 2})
	tcheck(t, err, "recent")
	if len(recent) != 2 || recent[0].Domain != "three.example" || recent[1].Domain != "one.example" || recent[1].Total != 2 {
		t.Fatalf("recent %+v", recent)
	}
	all, err := db.Domains("")
	tcheck(t, err, "domains")
	var names []string
	for _, d := range all {
		names = append(names, d.Domain)
	}
	if !slices.Equal(names, []string{"one.example", "three.example", "two.example"}) {
		t.Fatalf("domains %v", names)
	}
	route, err := db.Domains("5.4.3")
	tcheck(t, err, "domains 5.4.3")
	if len(route) != 1 || route[0].Domain != "two.example" || route[0].Counts["5.4.3"] != 1 || len(route[0].RemoteMTAs) != 1 {
		t.Fatalf("5.4.3 domains %+v", route)
	}
	if rs, _ := db.RecentDomains(store.DomainFilter{Status: "5.1.1"}); len(rs) != 2 {
		t.Fatalf("recent 5.1.1: %+v", rs)
	}
	for _, want := range all {
		checkDomainStat(t, db, want)
	}
	if _, err := domainStatter(t, db).DomainStat("none.example"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("domain stat of an unknown domain: %v, want ErrNotFound", err)
	}
}

// statter is the one-domain read of the dashboard's domain page (web).
type statter interface {
	DomainStat(domain string) (*store.DomainStat, error)
}

func domainStatter(t *testing.T, db store.Store) statter {
	t.Helper()
	s, ok := db.(statter)
	if !ok {
		t.Fatalf("%T has no DomainStat", db)
	}
	return s
}

// checkDomainStat checks that DomainStat of want's domain reads what
// Domains listed, storm flag and route health included.
func checkDomainStat(t *testing.T, db store.Store, want store.DomainStat) {
	t.Helper()
	got, err := domainStatter(t, db).DomainStat(want.Domain)
	tcheck(t, err, "domain stat "+want.Domain)
	if g, w := fmt.Sprintf("%+v", jsonOf(t, got)), fmt.Sprintf("%+v", jsonOf(t, &want)); g != w {
		t.Fatalf("DomainStat(%s)\n got %s\nwant %s", want.Domain, g, w)
	}
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	tcheck(t, err, "encoding")
	return string(b)
}

func testPage(t *testing.T, open Opener) {
	c := NewClock()
	db := open(t, Config{Now: c.Now})
	var ids []string
	for i := range 7 {
		c.Add(time.Second)
		ids = append(ids, Save(t, db, DSN(fmt.Sprintf("p%d@page.example", i), "5.1.1", arrival(i)))[0].ID)
	}
	slices.Reverse(ids)
	var got []string
	before := ""
	for range 10 {
		recs, next, err := db.Page(store.Filter{Domain: "page.example", Limit: 3}, before)
		tcheck(t, err, "page")
		for _, r := range recs {
			got = append(got, r.ID)
		}
		if next == "" {
			break
		}
		before = next
	}
	if !slices.Equal(got, ids) {
		t.Fatalf("pages %v, want %v", got, ids)
	}
	n := 0
	tcheck(t, db.ForEach(store.Filter{Limit: 4}, func(store.Record) error { n++; return nil }), "foreach")
	if n != 4 {
		t.Fatalf("ForEach with limit 4 gave %d", n)
	}
}

func testMXRecovery(t *testing.T, open Opener) {
	c := NewClock()
	db := open(t, Config{Now: c.Now})
	Save(t, db, DSN("a@route.example", "5.4.3", arrival(1)))
	c.Add(time.Hour)
	rec, lifted, err := db.SetMXCheck("route.example", store.MXCheck{Verdict: "ok", Routed: true, Checked: c.Now()}, true)
	tcheck(t, err, "mx check")
	if !rec || lifted != 1 {
		t.Fatalf("recovered %v lifted %d, want true 1", rec, lifted)
	}
	if _, err := db.Suppressed("a@route.example"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("route suppression not lifted: %v", err)
	}
	ds, err := db.Domains("")
	tcheck(t, err, "domains")
	if len(ds) != 1 || ds[0].LastMX == nil || !ds[0].LastMX.Routed || ds[0].Recovered == nil {
		t.Fatalf("domain health %+v", ds)
	}
	checkDomainStat(t, db, ds[0])
	if _, _, err := db.SetMXCheck("bad domain", store.MXCheck{}, false); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("invalid domain: %v", err)
	}
}

func testConcurrent(t *testing.T, open Opener) {
	db := open(t, Config{Now: NewClock().Now})
	// The same report from 8 sessions at once: one record is first, the
	// others are its duplicates; one suppression.
	var wg sync.WaitGroup
	recs := make([][]store.Record, 8)
	errs := make([]error, 8)
	for i := range recs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs[i], errs[i] = db.Save(context.Background(), Delivery(t, DSN("a@dead.example", "5.4.3", arrival(1))))
		}()
	}
	wg.Wait()
	firsts := 0
	for i := range recs {
		tcheck(t, errs[i], "save")
		if !recs[i][0].Duplicate {
			firsts++
		}
	}
	if firsts != 1 {
		t.Fatalf("%d of 8 copies not marked duplicate, want 1", firsts)
	}
	ds, err := db.Domains("")
	tcheck(t, err, "domains")
	if len(ds) != 1 || ds[0].Total != 1 {
		t.Fatalf("aggregate %+v", ds)
	}
}

func testDaily(t *testing.T, open Opener) {
	c := NewClock()
	db := open(t, Config{Now: c.Now})
	day1 := c.Now()
	Save(t, db, DSN("a@dead.example", "5.4.3", arrival(1))) // hard, suppressed
	Save(t, db, DSN("a@dead.example", "5.4.3", arrival(1))) // duplicate: not counted
	Save(t, db, DSN("b@full.example", "4.2.2", arrival(2))) // soft
	c.Add(24 * time.Hour)
	Save(t, db, DSN("c@dead.example", "5.1.1", arrival(3))) // hard, next day
	tcheck(t, db.AddSuppression(store.Suppression{Address: "d@x.example"}), "add")
	days, err := db.Daily(day1.Add(-48*time.Hour), c.Now())
	tcheck(t, err, "daily")
	got := fmt.Sprint(days)
	want := fmt.Sprint([]store.Day{
		{Day: store.DayOf(day1), Counts: map[string]int{"hard": 1, "soft": 1, "suppressed": 1}},
		{Day: store.DayOf(c.Now()), Counts: map[string]int{"hard": 1, "suppressed": 1}},
	})
	if got != want {
		t.Fatalf("daily %s, want %s", got, want)
	}
	if days, _ := db.Daily(c.Now(), c.Now()); len(days) != 1 {
		t.Fatalf("one day asked, %d given", len(days))
	}
}

// mover is the bulk path of bouncer copy (both engines have it).
type mover interface {
	Export(ctx context.Context, fn func(*store.Item) error) error
	Import(ctx context.Context, items []store.Item, replace bool) error
	Counts(ctx context.Context) (map[string]int, error)
}

// testImportBadBatch: a batch with one bad item is refused whole, with
// an error naming the kind, and leaves nothing behind; a good batch
// exported from another store goes in as it was.
func testImportBadBatch(t *testing.T, open Opener) {
	src := open(t, Config{Now: NewClock().Now})
	Save(t, src, DSN("a@import.example", "5.1.1", arrival(1)))
	sm, ok := src.(mover)
	if !ok {
		t.Fatalf("%T has no Export/Import/Counts", src)
	}
	var items []store.Item
	tcheck(t, sm.Export(context.Background(), func(it *store.Item) error { items = append(items, *it); return nil }), "export")
	if len(items) < 3 {
		t.Fatalf("exported %d items, want raw, record, dedupe key and more", len(items))
	}
	dst := open(t, Config{Now: NewClock().Now}).(mover)
	bad := []store.Item{
		{Record: &store.Record{ID: "not-an-id", MsgID: "x"}},
		{}, // no field set
	}
	for i, b := range bad {
		err := dst.Import(context.Background(), append(slices.Clone(items), b), false)
		if err == nil || !strings.Contains(err.Error(), "importing") {
			t.Fatalf("bad item %d: %v, want an import error", i, err)
		}
		n, err := dst.Counts(context.Background())
		tcheck(t, err, "counts")
		for k, v := range n {
			if v != 0 {
				t.Fatalf("bad item %d: the refused batch left %d %s", i, v, k)
			}
		}
	}
	tcheck(t, dst.Import(context.Background(), items, false), "import")
	want, err := sm.Counts(context.Background())
	tcheck(t, err, "counts")
	got, err := dst.Counts(context.Background())
	tcheck(t, err, "counts")
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("counts after import %v, want %v", got, want)
	}
}
