package postgres

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/postgres/pgtest"
	"github.com/bouncer/bouncer/store/storetest"
)

var cluster *pgtest.Cluster

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &cluster)) }

func tcheck(t testing.TB, err error, msg string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
}

// mustOpen opens a store on a new database (or on opts.URL if set) and
// closes it at cleanup.
func mustOpen(t testing.TB, opts Options) *DB {
	t.Helper()
	if opts.URL == "" {
		opts.URL = cluster.Database(t)
	}
	db, err := Open(context.Background(), opts)
	tcheck(t, err, "open")
	t.Cleanup(func() { db.Close() })
	return db
}

// newClock is a settable clock for Options.Now.
func newClock() *storetest.Clock {
	return storetest.ClockAt(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
}

// hardRules suppress every hard bounce at once.
func hardRules() store.Rules {
	return store.Rules{Decide: func(r *store.Record) store.Decision {
		if r.Kind == parse.KindBounce && r.Class == parse.ClassHard {
			return store.Decision{Action: store.ActionSuppress, Rule: "hard"}
		}
		return store.Decision{Action: store.ActionRecord}
	}}
}

// bounce is a DSN for addr with status, about the attempt named by
// arrival (the same arrival makes the same report).
func bounce(addr, status, arrival string) *store.Delivery {
	class := parse.ClassHard
	if status[0] == '4' {
		class = parse.ClassSoft
	}
	return &store.Delivery{
		Received: time.Date(2025, 3, 1, 11, 59, 0, 0, time.UTC),
		Envelope: store.Envelope{RcptTo: []string{"bounces@bounce.example.org"}, ClientIP: "192.0.2.1"},
		Raw:      []byte("From: MAILER-DAEMON\r\nSubject: failure\r\n\r\n" + addr + " " + status + " " + arrival + "\r\n"),
		Report: &parse.Report{
			Kind: parse.KindBounce, ReportingMTA: "mx.example.net", ArrivalDate: arrival,
			Recipients: []parse.Recipient{{
				FinalRecipient: addr, Action: parse.Failed, Status: status, StatusLiteral: status,
				Kind: parse.KindBounce, Class: class, RemoteMTA: "mx." + store.AddrDomain(addr),
			}},
		},
	}
}

func save(t testing.TB, db *DB, d *store.Delivery) []store.Record {
	t.Helper()
	recs, err := db.Save(context.Background(), d)
	tcheck(t, err, "save")
	return recs
}

func TestSaveAndQuery(t *testing.T) {
	clock := newClock()
	db := mustOpen(t, Options{Rules: hardRules(), Now: clock.Now})
	var ids []string
	for i := range 30 {
		addr := fmt.Sprintf("user%d@Example.COM", i%3)
		status := "5.1.1"
		if i%2 == 1 {
			status = "4.2.2"
		}
		recs := save(t, db, bounce(addr, status, fmt.Sprintf("arrival %d", i)))
		if len(recs) != 1 || len(recs[0].ID) != 24 {
			t.Fatalf("save %d: got %+v", i, recs)
		}
		ids = append(ids, recs[0].ID)
		clock.Add(time.Second)
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Fatalf("ids out of order: %s after %s", ids[i], ids[i-1])
		}
	}
	count := func(f store.Filter) int {
		t.Helper()
		recs, err := db.Query(f)
		tcheck(t, err, "query")
		for i := 1; i < len(recs); i++ {
			if recs[i].ID >= recs[i-1].ID {
				t.Fatalf("query %+v not newest first", f)
			}
		}
		return len(recs)
	}
	for _, c := range []struct {
		f    store.Filter
		want int
	}{
		{store.Filter{}, 30},
		{store.Filter{Recipient: "user1@example.com"}, 10},
		{store.Filter{Recipient: "USER1@example.com"}, 0}, // the local part keeps its case
		{store.Filter{Domain: " EXAMPLE.com"}, 30},
		{store.Filter{Status: "5.1.1"}, 15},
		{store.Filter{Domain: "example.com", Status: "4.2.2"}, 15},
		{store.Filter{Kind: parse.KindBounce}, 30},
		{store.Filter{Kind: parse.KindComplaint}, 0},
		{store.Filter{Since: time.Date(2025, 3, 1, 12, 0, 20, 0, time.UTC)}, 10},
		{store.Filter{Limit: 7}, 7},
	} {
		if got := count(c.f); got != c.want {
			t.Errorf("query %+v: %d records, want %d", c.f, got, c.want)
		}
	}
	// Pages of 8 walk all 30 records once.
	seen := map[string]bool{}
	before, pages := "", 0
	for {
		recs, next, err := db.Page(store.Filter{Limit: 8}, before)
		tcheck(t, err, "page")
		pages++
		for _, r := range recs {
			if seen[r.ID] {
				t.Fatalf("page repeats %s", r.ID)
			}
			seen[r.ID] = true
		}
		if next == "" {
			break
		}
		before = next
	}
	if len(seen) != 30 || pages != 4 {
		t.Fatalf("pages: %d records in %d pages", len(seen), pages)
	}
	r, err := db.Record(ids[2])
	tcheck(t, err, "record")
	if r.Addr != "user2@example.com" || r.Verdict != store.ActionSuppress {
		t.Fatalf("record: %+v", r)
	}
	raw, err := db.Raw(r.MsgID)
	tcheck(t, err, "raw")
	if string(raw) != string(bounce("user2@Example.COM", "5.1.1", "arrival 2").Raw) {
		t.Fatalf("raw: %q", raw)
	}
	if _, err := db.Record("00000000000000000000ffff"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing record: %v", err)
	}
	// Saved again, a report is a duplicate and suppresses nothing new.
	dup := save(t, db, bounce("user0@Example.COM", "5.1.1", "arrival 0"))
	if !dup[0].Duplicate || dup[0].DuplicateOf != ids[0] {
		t.Fatalf("duplicate: %+v", dup[0])
	}
	s, err := db.Suppressed("user0@EXAMPLE.com")
	tcheck(t, err, "suppressed")
	if s.RecordID != ids[0] {
		t.Fatalf("suppression: %+v", s)
	}
	tcheck(t, db.Check(), "check")
}

// TestMigrations opens one database from several handles at once: one
// applies the migrations, the others wait on the advisory lock and find
// nothing to do. A newer schema than the code knows is refused.
func TestMigrations(t *testing.T) {
	url := cluster.Database(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, err := Open(context.Background(), Options{URL: url})
			if err == nil {
				db.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		tcheck(t, err, "concurrent open")
	}
	db := mustOpen(t, Options{URL: url})
	var n, v int
	tcheck(t, db.pool.QueryRow(context.Background(), "SELECT count(*), max(version) FROM schema_version").Scan(&n, &v), "version")
	if n != SchemaVersion() || v != SchemaVersion() {
		t.Fatalf("schema_version: %d rows, version %d; want %d", n, v, SchemaVersion())
	}
	// The tables are in bouncer's schema, not in public.
	var public int
	tcheck(t, db.pool.QueryRow(context.Background(),
		"SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").Scan(&public), "tables")
	if public != 0 {
		t.Fatalf("%d tables in public", public)
	}
	_, err := db.pool.Exec(context.Background(), "INSERT INTO schema_version (version, name) VALUES (999, 'future')")
	tcheck(t, err, "future version")
	if _, err := Open(context.Background(), Options{URL: url}); !errors.Is(err, ErrSchema) {
		t.Fatalf("open of a newer schema: %v, want ErrSchema", err)
	}
	// Another schema in the same database is another store.
	other := mustOpen(t, Options{URL: url, Schema: "bouncer2"})
	tcheck(t, other.Ping(context.Background()), "ping")
}

// TestTwoHostsSameReport saves one report many times at once through two
// handles: one suppression, one non-duplicate record, one outbox event.
func TestTwoHostsSameReport(t *testing.T) {
	url := cluster.Database(t)
	a := mustOpen(t, Options{URL: url, Rules: hardRules()})
	b := mustOpen(t, Options{URL: url, Rules: hardRules()})
	tcheck(t, a.SetOutboxTargets([]store.OutboxTarget{{Name: "listmonk", Events: []string{store.EventHard}}}), "targets")
	var wg sync.WaitGroup
	recs := make([][]store.Record, 20)
	for i := range recs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db := a
			if i%2 == 1 {
				db = b
			}
			r, err := db.Save(context.Background(), bounce("same@example.com", "5.1.1", "one attempt"))
			if err != nil {
				t.Errorf("save %d: %v", i, err)
			}
			recs[i] = r
		}()
	}
	wg.Wait()
	originals := 0
	for _, r := range recs {
		if len(r) == 1 && !r[0].Duplicate {
			originals++
		}
	}
	if originals != 1 {
		t.Fatalf("%d original records, want 1", originals)
	}
	n := 0
	tcheck(t, b.Suppressions("", func(store.Suppression) error { n++; return nil }), "suppressions")
	queued, _, err := b.OutboxStats()
	tcheck(t, err, "stats")
	if n != 1 || queued != 1 {
		t.Fatalf("%d suppressions, %d events; want 1 and 1", n, queued)
	}
	// A suppression added on one host answers on the other at once.
	tcheck(t, a.AddSuppression(store.Suppression{Address: "manual@example.com", Reason: "test"}), "add")
	if _, err := b.Suppressed("manual@example.com"); err != nil {
		t.Fatalf("suppressed on the other host: %v", err)
	}
	if err := b.AddSuppression(store.Suppression{Address: "manual@example.com"}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second add: %v", err)
	}
}

// TestSoftCountTwoHosts counts soft bounces of one address saved through
// two hosts: the counter sees all of them, so the threshold is met once.
func TestSoftCountTwoHosts(t *testing.T) {
	rules := store.Rules{Decide: func(r *store.Record) store.Decision {
		return store.Decision{Action: store.ActionCount, Threshold: 10, Window: time.Hour}
	}}
	url := cluster.Database(t)
	a := mustOpen(t, Options{URL: url, Rules: rules})
	b := mustOpen(t, Options{URL: url, Rules: rules})
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db := a
			if i%2 == 1 {
				db = b
			}
			if _, err := db.Save(context.Background(), bounce("soft@example.com", "4.2.2", fmt.Sprint("attempt ", i))); err != nil {
				t.Errorf("save: %v", err)
			}
		}()
	}
	wg.Wait()
	if _, err := a.Suppressed("soft@example.com"); err != nil {
		t.Fatalf("10 soft bounces on two hosts did not suppress: %v", err)
	}
}

// TestStormTwoHosts: the storm guard counts the addresses seen by both.
func TestStormTwoHosts(t *testing.T) {
	rules := hardRules()
	rules.Storm = store.StormOptions{Threshold: 4, Window: time.Hour}
	url := cluster.Database(t)
	a := mustOpen(t, Options{URL: url, Rules: rules})
	b := mustOpen(t, Options{URL: url, Rules: rules})
	for i := range 8 {
		db := a
		if i%2 == 1 {
			db = b
		}
		save(t, db, bounce(fmt.Sprintf("u%d@storm.example", i), "5.1.1", fmt.Sprint("a", i)))
	}
	storms, err := a.Storms()
	tcheck(t, err, "storms")
	if len(storms) != 1 || storms[0].Domain != "storm.example" {
		t.Fatalf("storms: %+v", storms)
	}
	holds, err := b.Holds("storm.example")
	tcheck(t, err, "holds")
	if len(holds) != 4 {
		t.Fatalf("%d holds, want 4 (the 5th to 8th address)", len(holds))
	}
	n, err := b.ReleaseHolds("storm.example")
	tcheck(t, err, "release")
	if n != 4 {
		t.Fatalf("released %d", n)
	}
	if storms, _ := a.Storms(); len(storms) != 0 {
		t.Fatalf("storm left after release: %+v", storms)
	}
	if _, err := a.DropHolds("storm.example"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("drop after release: %v", err)
	}
	cnt := 0
	tcheck(t, a.Suppressions("storm.example", func(store.Suppression) error { cnt++; return nil }), "suppressions")
	if cnt != 8 {
		t.Fatalf("%d suppressions, want 8", cnt)
	}
}

// TestOutboxLeases: two hosts polling one outbox never get the same
// event; an event whose host died is due again after its lease.
func TestOutboxLeases(t *testing.T) {
	url := cluster.Database(t)
	a := mustOpen(t, Options{URL: url, Rules: hardRules(), Lease: time.Minute})
	b := mustOpen(t, Options{URL: url, Rules: hardRules(), Lease: time.Minute})
	tcheck(t, a.SetOutboxTargets([]store.OutboxTarget{{Name: "hook", Events: []string{store.EventHard}}}), "targets")
	const n = 200
	for i := range n {
		save(t, a, bounce(fmt.Sprintf("e%d@example.com", i), "5.1.1", fmt.Sprint("x", i)))
	}
	now := time.Now()
	var mu sync.Mutex
	got := map[uint64]int{}
	var wg sync.WaitGroup
	for _, db := range []*DB{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				evs, err := db.OutboxDue(now, 7, 1000, nil)
				if err != nil {
					t.Errorf("due: %v", err)
					return
				}
				if len(evs) == 0 {
					return
				}
				mu.Lock()
				for _, ev := range evs {
					got[ev.Seq]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(got) != n {
		t.Fatalf("%d distinct events leased, want %d", len(got), n)
	}
	for seq, c := range got {
		if c != 1 {
			t.Fatalf("event %d leased %d times", seq, c)
		}
	}
	// Deliver a few; the others' host "died": they are due again after
	// the lease, and only then.
	var results []store.OutboxResult
	for seq := range got {
		if len(results) == 10 {
			break
		}
		results = append(results, store.OutboxResult{Seq: seq})
	}
	_, err := b.OutboxUpdate(results)
	tcheck(t, err, "update")
	if evs, _ := b.OutboxDue(now.Add(30*time.Second), 1000, 1000, nil); len(evs) != 0 {
		t.Fatalf("%d events due during their lease", len(evs))
	}
	evs, err := b.OutboxDue(now.Add(2*time.Minute), 1000, 1000, func(target string) bool { return false })
	tcheck(t, err, "due after lease")
	if len(evs) != n-10 {
		t.Fatalf("%d events due after the lease, want %d", len(evs), n-10)
	}
	// A failure reschedules and ends the lease; dead goes to dead letters.
	dead, err := a.OutboxUpdate([]store.OutboxResult{
		{Seq: evs[0].Seq, Err: errors.New("503"), NextTry: now.Add(150 * time.Second)},
		{Seq: evs[1].Seq, Err: errors.New("gone"), Dead: true},
	})
	tcheck(t, err, "update")
	if dead != 1 {
		t.Fatalf("dead %d", dead)
	}
	due, err := a.OutboxDue(now.Add(150*time.Second), 10, 1000, nil) // the others are leased until 3m
	tcheck(t, err, "due")
	if len(due) != 1 || due[0].Seq != evs[0].Seq || due[0].Attempts != 1 {
		t.Fatalf("rescheduled: %+v", due)
	}
	moved, err := a.OutboxRetry(evs[1].Seq)
	tcheck(t, err, "retry")
	if moved != 1 {
		t.Fatalf("retry moved %d", moved)
	}
	if _, err := a.OutboxDrop(evs[1].Seq); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("drop of a queued event: %v", err)
	}
	queued, deadN, err := a.OutboxStats()
	tcheck(t, err, "stats")
	if queued != n-10 || deadN != 0 {
		t.Fatalf("stats %d %d", queued, deadN)
	}
}

// TestRestart stops the server under a store: Saves fail with
// ErrUnavailable while it is down and work again once it is back,
// without reopening the store.
func TestRestart(t *testing.T) {
	db := mustOpen(t, Options{Rules: hardRules(), Timeout: 5 * time.Second})
	save(t, db, bounce("before@example.com", "5.1.1", "before"))
	tcheck(t, cluster.Stop(), "stop")
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			cluster.Start()
		}
	})
	_, err := db.Save(context.Background(), bounce("down@example.com", "5.1.1", "down"))
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("save while down: %v, want ErrUnavailable", err)
	}
	if _, err := db.Suppressed("before@example.com"); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("read while down: %v, want ErrUnavailable", err)
	}
	tcheck(t, cluster.Start(), "start")
	restarted = true
	if _, err := db.Save(context.Background(), bounce("after@example.com", "5.1.1", "after")); err != nil {
		t.Fatalf("first save after restart: %v", err)
	}
	for _, addr := range []string{"before@example.com", "after@example.com"} {
		if _, err := db.Suppressed(addr); err != nil {
			t.Fatalf("suppressed %s: %v", addr, err)
		}
	}
	if _, err := db.Suppressed("down@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the delivery that failed was stored: %v", err)
	}
}
