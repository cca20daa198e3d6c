package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/policy"
	"github.com/bouncer/bouncer/store"
)

// sample reads a real DSN of the integration run. The engines' tests run
// two folders below the repository's root.
func sample(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "integration", "testdata", name))
	tcheck(t, err, "reading sample")
	return string(b)
}

// decodeNow is the current decoder, as `bouncer reclassify` runs it.
func decodeNow(raw []byte) (*parse.Report, error) {
	return parse.Message(bytes.NewReader(raw), parse.Limits{})
}

// reclassRules is a policy table: 5.4.3 suppresses, 4.4.3 counts (two
// within 14 days suppress), the rest is recorded.
func reclassRules(t *testing.T) store.Rules {
	t.Helper()
	tab, err := policy.Compile([]policy.Rule{
		{Status: "5.4.3", Kind: "bounce", Action: "suppress"},
		{Status: "5.4.4", Kind: "bounce", Action: "suppress"},
		{Status: "4.4.3", Kind: "bounce", Action: "count", Threshold: 2, Window: "14d"},
	})
	tcheck(t, err, "compiling policy")
	return store.Rules{Decide: tab.Decide}
}

// saveAs stores raw as an older decoder had decoded it: the real
// report, changed by old (a nil report with a parse error if old returns
// false).
func saveAs(t *testing.T, db store.Store, raw string, old func(*parse.Report) bool) []store.Record {
	t.Helper()
	d := Delivery(t, raw)
	if !old(d.Report) {
		d.Report, d.ParseError = nil, "no delivery-status part found"
	}
	recs, err := db.Save(context.Background(), d)
	tcheck(t, err, "save")
	return recs
}

// snapshot is everything reclassification may change that Store shows:
// the records, the suppression list and the queued events, as JSON.
func snapshot(t *testing.T, db store.Store) string {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	tcheck(t, db.ForEach(store.Filter{}, func(r store.Record) error { return enc.Encode(r) }), "records")
	tcheck(t, db.Suppressions("", func(s store.Suppression) error { return enc.Encode(s) }), "suppressions")
	tcheck(t, db.OutboxEvents(false, func(e store.OutboxEvent) error { return enc.Encode(e) }), "outbox")
	return b.String()
}

// reclassifyAll runs the reclassification of every stored message, as
// the command does, and returns the results by message.
func reclassifyAll(t *testing.T, db store.Store, opts store.ReclassOptions) map[string]*store.Reclass {
	t.Helper()
	rc, ok := db.(store.Reclassifier)
	if !ok {
		t.Fatalf("%T does not reclassify", db)
	}
	var ids []string
	tcheck(t, db.ForEach(store.Filter{}, func(r store.Record) error {
		if !slices.Contains(ids, r.MsgID) {
			ids = append(ids, r.MsgID)
		}
		return nil
	}), "listing")
	// Batches of three: messages judged in one transaction after others
	// and first in one.
	out := map[string]*store.Reclass{}
	for len(ids) > 0 {
		n := min(3, len(ids))
		res, err := rc.Reclassify(context.Background(), ids[:n], decodeNow, opts)
		tcheck(t, err, "reclassifying")
		for i, r := range res {
			if r.MsgID != ids[i] || r.Err != nil || r.Reclass == nil {
				t.Fatalf("result %d of %v: %+v", i, ids[:n], r)
			}
			out[r.MsgID] = r.Reclass
		}
		ids = ids[n:]
	}
	return out
}

// changed returns the record changes of all results, by old record ID.
func changed(res map[string]*store.Reclass) map[string]store.RecordChange {
	m := map[string]store.RecordChange{}
	for _, r := range res {
		for _, c := range r.Changed {
			m[c.Old.ID] = c
		}
	}
	return m
}

func testReclassify(t *testing.T, open Opener) {
	db := open(t, Config{Now: NewClock().Now, Rules: reclassRules(t)})
	tcheck(t, db.SetOutboxTargets([]store.OutboxTarget{{Name: "hook",
		Events: []string{store.EventHard, store.EventSoft, store.EventSuppressed}}}), "targets")

	// A: two recipients the old decoder could not decode at all.
	a := saveAs(t, db, sample(t, "postfix-5.4.3-and-5.1.1.eml"), func(*parse.Report) bool { return false })
	// B: a 5.4.3 failure the old decoder took for a soft 4.4.3 (counted
	// once), and C, the same report again (a duplicate of B).
	soft := func(rep *parse.Report) bool {
		rc := &rep.Recipients[0]
		rc.Class, rc.Status, rc.Reason = parse.ClassSoft, "4.4.3", ""
		return true
	}
	raw := sample(t, "exim-5.4.3-envid-orcpt.eml")
	b := saveAs(t, db, raw, soft)
	c := saveAs(t, db, raw, soft)
	// D: a delay the old decoder took for a 5.4.4 failure (suppressed).
	d := saveAs(t, db, sample(t, "postfix-4.4.3-delayed.eml"), func(rep *parse.Report) bool {
		rc := &rep.Recipients[0]
		rep.Kind, rc.Kind, rc.Class, rc.Status, rc.Action = parse.KindBounce, parse.KindBounce, parse.ClassHard, "5.4.4", parse.Failed
		return true
	})
	if a[0].Addr != "" || b[0].Verdict != store.ActionCount || !c[0].Duplicate || !d[0].Suppressed {
		t.Fatalf("old records not as set up: %+v %+v %+v %+v", a[0], b[0], c[0], d[0])
	}
	checkCounts(t, db, "before", 2, map[string]int{"4.4.3": 1, "5.4.4": 1},
		map[string]int{store.DayOther: 1, store.DaySoft: 1, store.DayHard: 1, store.DaySuppressed: 1})
	before := snapshot(t, db)

	// A dry run says what would change and changes nothing.
	dry := changed(reclassifyAll(t, db, store.ReclassOptions{DryRun: true}))
	if got := snapshot(t, db); got != before {
		t.Fatal("dry run changed the store")
	}
	checkCounts(t, db, "after the dry run", 2, map[string]int{"4.4.3": 1, "5.4.4": 1},
		map[string]int{store.DayOther: 1, store.DaySoft: 1, store.DayHard: 1, store.DaySuppressed: 1})
	checkReclass(t, dry, a[0], b[0], c[0], d[0])

	// Apply does it, once.
	res := reclassifyAll(t, db, store.ReclassOptions{})
	checkReclass(t, changed(res), a[0], b[0], c[0], d[0])
	if ex := res[a[0].MsgID].Extra; len(ex) != 1 || ex[0].Addr != "unknown-a@dead.test" {
		t.Errorf("A's second recipient: %+v, want it reported as not stored", ex)
	}
	got, err := db.Record(a[0].ID)
	tcheck(t, err, "record A")
	if got.Addr != "route-a@dead.test" || got.Status != "5.4.3" || !got.Suppressed || got.ParseError != "" {
		t.Errorf("A stored as %+v", got)
	}
	if got, err := db.Query(store.Filter{Recipient: "route-a@dead.test"}); err != nil || len(got) != 1 {
		t.Errorf("A not found by its new recipient: %d, %v", len(got), err)
	}
	if got, err := db.Query(store.Filter{Status: "4.4.3", Domain: "dead.test"}); err != nil || len(got) != 1 || got[0].ID != d[0].ID {
		t.Errorf("by status 4.4.3: %+v, %v; want D only (B and C moved to 5.4.3)", got, err)
	}
	for _, addr := range []string{"route-a@dead.test", "route-b@dead.test", "later-c@dead.test"} {
		if _, err := db.Suppressed(addr); err != nil {
			t.Errorf("%s: %v, want suppressed", addr, err)
		}
	}
	var evs []store.OutboxEvent
	tcheck(t, db.OutboxEvents(false, func(e store.OutboxEvent) error { evs = append(evs, e); return nil }), "outbox")
	// On arrival: B soft, C nothing (duplicate), D hard+suppressed; now
	// A hard+suppressed and B hard+suppressed.
	if len(evs) != 4 {
		t.Errorf("%d events queued, want 4: %+v", len(evs), evs)
	}
	// The aggregate and the daily counters follow: A counts now, B is a
	// 5.4.3, D a 4.4.3 delay (no 5.4.4 left); two new suppressions.
	after := snapshot(t, db)
	wantDay := map[string]int{store.DayOther: 0, store.DaySoft: 1, store.DayHard: 2, store.DaySuppressed: 3}
	checkCounts(t, db, "after apply", 3, map[string]int{"5.4.3": 2, "4.4.3": 1}, wantDay)

	// A second run finds nothing to do; D's suppression is still stale.
	again := reclassifyAll(t, db, store.ReclassOptions{})
	if got := snapshot(t, db); got != after {
		t.Fatal("second apply changed the store")
	}
	checkCounts(t, db, "after the second apply", 3, map[string]int{"5.4.3": 2, "4.4.3": 1}, wantDay)
	for id, r := range again {
		if r.Writes() || len(r.Changed) > 1 || len(r.Changed) == 1 && !r.Changed[0].Stale {
			t.Errorf("second apply of %s: %+v", id, r)
		}
	}

	// With Lift, D's suppression goes, once.
	lift := changed(reclassifyAll(t, db, store.ReclassOptions{Lift: true}))
	if cd := lift[d[0].ID]; !cd.Lifted || cd.New.Suppressed || len(lift) != 1 {
		t.Errorf("lift: %+v", lift)
	}
	if _, err := db.Suppressed("later-c@dead.test"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("later-c after lift: %v, want ErrNotFound", err)
	}
	if _, err := db.Suppressed("route-b@dead.test"); err != nil {
		t.Errorf("route-b after lift: %v, want still suppressed", err)
	}
	lifted := snapshot(t, db)
	if res := reclassifyAll(t, db, store.ReclassOptions{Lift: true}); len(changed(res)) != 0 || snapshot(t, db) != lifted {
		t.Errorf("second lift: %+v", changed(res))
	}
}

// checkCounts checks the aggregate of dead.test, the status index of
// domains and the daily counters of the test's day.
func checkCounts(t *testing.T, db store.Store, when string, total int, counts, day map[string]int) {
	t.Helper()
	ds, err := db.Domains("")
	tcheck(t, err, "domains")
	if len(ds) != 1 || ds[0].Domain != "dead.test" || ds[0].Total != total || fmt.Sprint(ds[0].Counts) != fmt.Sprint(counts) {
		t.Errorf("%s: aggregates %+v, want dead.test %d %v", when, ds, total, counts)
	}
	for _, status := range []string{"4.4.3", "5.4.3", "5.4.4"} {
		ds, err := db.Domains(status)
		tcheck(t, err, "domains by status")
		if want := counts[status] > 0; (len(ds) == 1) != want {
			t.Errorf("%s: domains with %s: %+v, want dead.test: %v", when, status, ds, want)
		}
	}
	days, err := db.Daily(NewClock().Now(), NewClock().Now())
	tcheck(t, err, "daily")
	if len(days) != 1 {
		t.Fatalf("%s: days %+v", when, days)
	}
	for k, n := range day {
		if days[0].Counts[k] != n {
			t.Errorf("%s: daily %s = %d, want %d (%v)", when, k, days[0].Counts[k], n, days[0].Counts)
		}
	}
}

// checkReclass checks what reclassifying the records of testReclassify
// decides.
func checkReclass(t *testing.T, ch map[string]store.RecordChange, a, b, c, d store.Record) {
	t.Helper()
	if ca := ch[a.ID]; ca.New.Addr != "route-a@dead.test" || ca.New.Verdict != store.ActionSuppress || !ca.Suppressed || ca.Events != 1 {
		t.Errorf("A: %+v", ca)
	}
	if cb := ch[b.ID]; cb.New.Status != "5.4.3" || !cb.Suppressed || !cb.Uncounted || cb.Counted || cb.Events != 1 {
		t.Errorf("B: %+v", cb)
	}
	if cc := ch[c.ID]; !cc.New.Duplicate || cc.New.Verdict != store.ActionDuplicate || cc.New.Status != "5.4.3" ||
		cc.Suppressed || cc.Counted || cc.Uncounted || cc.Events != 0 {
		t.Errorf("C: %+v", cc)
	}
	if cd := ch[d.ID]; cd.New.Kind != parse.KindDelay || cd.New.Verdict != store.ActionRecord || !cd.Stale || cd.Lifted ||
		cd.New.Suppressed || cd.Events != 0 {
		t.Errorf("D: %+v", cd)
	}
	if len(ch) != 4 {
		t.Errorf("%d records change, want 4", len(ch))
	}
}

// testReclassifyCountsOnce: a record that becomes soft counts one event,
// however often it is reclassified. Two events suppress: a second count
// would suppress the address.
func testReclassifyCountsOnce(t *testing.T, open Opener) {
	db := open(t, Config{Now: NewClock().Now, Rules: reclassRules(t)})
	e := saveAs(t, db, sample(t, "postfix-4.4.3-failed.eml"), func(rep *parse.Report) bool {
		rc := &rep.Recipients[0]
		rep.Kind, rc.Kind, rc.Class, rc.Status = parse.KindAutoReply, parse.KindAutoReply, parse.ClassNone, ""
		return true
	})
	if e[0].Verdict == store.ActionCount {
		t.Fatalf("old record already counts: %+v", e[0])
	}
	first := changed(reclassifyAll(t, db, store.ReclassOptions{}))
	if ce := first[e[0].ID]; !ce.Counted || ce.Suppressed || ce.New.Verdict != store.ActionCount {
		t.Fatalf("first apply: %+v", ce)
	}
	for range 2 {
		if res := changed(reclassifyAll(t, db, store.ReclassOptions{})); len(res) != 0 {
			t.Fatalf("apply again: %+v", res)
		}
	}
	if s, err := db.Suppressed("later-c@dead.test"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("suppressed after reclassifying one soft bounce: %+v %v", s, err)
	}

	// A message that is not stored fails alone; a batch too big fails whole.
	rc := db.(store.Reclassifier)
	res, err := rc.Reclassify(context.Background(), []string{"000000000000000000000001", e[0].MsgID}, decodeNow, store.ReclassOptions{})
	tcheck(t, err, "reclassifying with an unknown message")
	if len(res) != 2 || !errors.Is(res[0].Err, store.ErrNotFound) || res[1].Err != nil || res[1].Reclass.Unchanged != 1 {
		t.Fatalf("unknown message: %+v", res)
	}
	big := make([]string, store.MaxReclassBatch+1)
	for i := range big {
		big[i] = e[0].MsgID
	}
	if _, err := rc.Reclassify(context.Background(), big, decodeNow, store.ReclassOptions{}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("batch of %d: %v, want ErrInvalid", len(big), err)
	}
}
