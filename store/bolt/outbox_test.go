package bolt

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"

	"github.com/bouncer/bouncer/parse"
)

func outboxEvents(t *testing.T, db *DB, dead bool) []store.OutboxEvent {
	t.Helper()
	var out []store.OutboxEvent
	tcheck(t, db.OutboxEvents(dead, func(ev store.OutboxEvent) error { out = append(out, ev); return nil }), "outbox events")
	return out
}

func TestOutboxRouting(t *testing.T) {
	db, _ := mustOpen(t, Options{})
	// Nothing is queued before targets are set.
	save(t, db, bounce("early@example.com", "5.1.1", parse.KindBounce, parse.ClassHard))
	tcheck(t, db.SetOutboxTargets([]store.OutboxTarget{
		{Name: "lm", Events: []string{store.EventHard, store.EventComplaint}},
		{Name: "hook", Events: []string{store.EventSoft}},
		{Name: "sup", Events: []string{store.EventSuppressed}},
	}), "set targets")

	hard := save(t, db, bounce("hard@example.com", "5.1.1", parse.KindBounce, parse.ClassHard))
	save(t, db, bounce("soft@example.com", "4.2.2", parse.KindBounce, parse.ClassSoft))
	sup := save(t, db, bounce("gone@example.com", "5.4.3", parse.KindBounce, parse.ClassHard))
	save(t, db, bounce("auto@example.com", "", parse.KindAutoReply, parse.ClassNone))
	save(t, db, bounce("abuse@example.com", "", parse.KindComplaint, parse.ClassNone))
	save(t, db, bounce("", "5.1.1", parse.KindBounce, parse.ClassHard)) // no address: nothing to push

	var got []string
	for _, ev := range outboxEvents(t, db, false) {
		got = append(got, ev.Target+":"+ev.Type+":"+ev.Addr)
	}
	want := []string{
		"lm:hard:hard@example.com",
		"hook:soft:soft@example.com",
		"lm:hard:gone@example.com", "sup:hard:gone@example.com",
		"lm:complaint:abuse@example.com",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events\n got %q\nwant %q", got, want)
	}
	evs := outboxEvents(t, db, false)
	if evs[0].ID != hard[0].ID+".lm" || evs[0].RecordID != hard[0].ID {
		t.Fatalf("event id %q record %q, want %s.lm", evs[0].ID, evs[0].RecordID, hard[0].ID)
	}
	if !evs[3].Suppressed || !sup[0].Suppressed {
		t.Fatalf("suppressed flag lost: %+v", evs[3])
	}
	if err := db.SetOutboxTargets([]store.OutboxTarget{{Name: "x", Events: []string{"bogus"}}}); err == nil {
		t.Fatal("unknown event type accepted")
	}
}

func TestOutboxCampaign(t *testing.T) {
	db, _ := mustOpen(t, Options{})
	tcheck(t, db.SetOutboxTargets([]store.OutboxTarget{{Name: "lm", Events: []string{store.EventHard}}}), "set targets")
	d := bounce("a@example.com", "5.1.1", parse.KindBounce, parse.ClassHard)
	d.Report.Original = &parse.Original{XHeaders: map[string]string{"X-Listmonk-Campaign": " 9f86b50d-5711-41c8-ab03-bc91c43d711b "}}
	save(t, db, d)
	d = bounce("b@example.com", "5.1.1", parse.KindBounce, parse.ClassHard)
	d.Envelope.Campaign = "spring"
	d.Report.Original = &parse.Original{XHeaders: map[string]string{"X-Listmonk-Campaign": "other"}}
	save(t, db, d)
	evs := outboxEvents(t, db, false)
	if evs[0].Campaign != "9f86b50d-5711-41c8-ab03-bc91c43d711b" || evs[1].Campaign != "spring" {
		t.Fatalf("campaigns %q %q", evs[0].Campaign, evs[1].Campaign)
	}
}

func TestOutboxLifecycle(t *testing.T) {
	clock := newClock()
	db, path := mustOpen(t, Options{Now: clock.Now})
	tcheck(t, db.SetOutboxTargets([]store.OutboxTarget{{Name: "lm", Events: []string{store.EventHard}}}), "set targets")
	for _, a := range []string{"a@x.example", "b@x.example", "c@x.example"} {
		save(t, db, bounce(a, "5.1.1", parse.KindBounce, parse.ClassHard))
	}
	due, err := db.OutboxDue(clock.Now(), 10, 100, nil)
	tcheck(t, err, "due")
	if len(due) != 3 {
		t.Fatalf("%d due, want 3", len(due))
	}
	fail := errors.New("connection refused")
	dead, err := db.OutboxUpdate([]store.OutboxResult{
		{Seq: due[0].Seq},
		{Seq: due[1].Seq, Err: fail, NextTry: clock.Now().Add(time.Minute)},
		{Seq: due[2].Seq, Err: fail, Dead: true},
	})
	tcheck(t, err, "update")
	if dead != 1 {
		t.Fatalf("dead %d, want 1", dead)
	}
	q, d, err := db.OutboxStats()
	tcheck(t, err, "stats")
	if q != 1 || d != 1 {
		t.Fatalf("queued %d dead %d, want 1 1", q, d)
	}
	// The rescheduled event is not due until its time, and survives a reopen.
	due, _ = db.OutboxDue(clock.Now(), 10, 100, nil)
	if len(due) != 0 {
		t.Fatalf("%d due before the backoff ended", len(due))
	}
	tcheck(t, db.Close(), "close")
	db, err = Open(path, Options{Now: clock.Now})
	tcheck(t, err, "reopen")
	defer db.Close()
	clock.Add(time.Minute)
	due, _ = db.OutboxDue(clock.Now(), 10, 100, nil)
	if len(due) != 1 || due[0].Addr != "b@x.example" || due[0].Attempts != 1 || due[0].LastError != "connection refused" {
		t.Fatalf("after backoff: %+v", due)
	}
	deadEvs := outboxEvents(t, db, true)
	if len(deadEvs) != 1 || deadEvs[0].Addr != "c@x.example" {
		t.Fatalf("dead letters %+v", deadEvs)
	}
	if _, err := db.OutboxRetry(12345); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("retry of unknown: %v", err)
	}
	n, err := db.OutboxRetry(deadEvs[0].Seq)
	tcheck(t, err, "retry")
	due, _ = db.OutboxDue(clock.Now(), 10, 100, nil)
	if n != 1 || len(due) != 2 || due[1].Attempts != 0 {
		t.Fatalf("after retry: n=%d %+v", n, due)
	}
	_, err = db.OutboxUpdate([]store.OutboxResult{{Seq: due[1].Seq, Err: fail, Dead: true}})
	tcheck(t, err, "update")
	n, err = db.OutboxDrop()
	tcheck(t, err, "drop")
	if q, d, _ := db.OutboxStats(); n != 1 || q != 1 || d != 0 {
		t.Fatalf("after drop: n=%d queued %d dead %d", n, q, d)
	}
	// skip leaves a target's events queued.
	due, _ = db.OutboxDue(clock.Now(), 10, 100, func(string) bool { return true })
	if len(due) != 0 {
		t.Fatalf("skipped target delivered: %+v", due)
	}
}

func TestPage(t *testing.T) {
	clock := newClock()
	db, _ := mustOpen(t, Options{Now: clock.Now})
	all := fixture(t, db, clock, 57)
	for _, f := range []store.Filter{{}, {Domain: "b.example"}, {Status: "5.1.1"}} {
		f.Limit = 10
		wantIDs := want(all, func(r store.Record) bool { return f.Match(&r) }, 0)
		var got []string
		before := ""
		for pages := 0; ; pages++ {
			recs, next, err := db.Page(f, before)
			tcheck(t, err, "page")
			got = append(got, ids(recs)...)
			if next == "" {
				break
			}
			if pages > 100 {
				t.Fatal("paging does not end")
			}
			before = next
		}
		if !slices.Equal(got, wantIDs) {
			t.Fatalf("filter %+v: paged\n%v\nwant\n%v", f, got, wantIDs)
		}
	}
	if _, _, err := db.Page(store.Filter{}, "zz"); err == nil {
		t.Fatal("bad cursor accepted")
	}
}
