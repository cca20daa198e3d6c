package postgres

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"
)

// TestOtherMethods runs the rest of store.Store once on the real server,
// so that each statement is known to parse and do what bolt's does; the
// shared conformance suite (store/storetest) checks the semantics.
func TestOtherMethods(t *testing.T) {
	clock := newClock()
	db := mustOpen(t, Options{Rules: hardRules(), Now: clock.Now, RawRetention: time.Hour})
	for i, addr := range []string{"b@route.example", "a@route.example", "c@other.example"} {
		save(t, db, bounce(addr, "5.4.4", fmt.Sprint("r", i)))
		clock.Add(time.Minute)
	}
	var order []string
	tcheck(t, db.Suppressions("", func(s store.Suppression) error { order = append(order, s.Address); return nil }), "suppressions")
	if fmt.Sprint(order) != "[a@route.example b@route.example c@other.example]" {
		t.Fatalf("suppressions order: %v", order)
	}
	ds, err := db.Domains("")
	tcheck(t, err, "domains")
	if len(ds) != 2 || ds[0].Domain != "other.example" || ds[1].Total != 2 {
		t.Fatalf("domains: %+v", ds)
	}
	if ds, _ := db.Domains("5.4.4"); len(ds) != 2 {
		t.Fatalf("domains of 5.4.4: %d", len(ds))
	}
	if ds, _ := db.Domains("5.1.1"); len(ds) != 0 {
		t.Fatalf("domains of 5.1.1: %d", len(ds))
	}
	recent, err := db.RecentDomains(store.DomainFilter{Limit: 1})
	tcheck(t, err, "recent")
	if len(recent) != 1 || recent[0].Domain != "route.example" { // same LastSeen: the greater domain first
		t.Fatalf("recent: %+v", recent)
	}
	// A routed MX check after 5.4.x bounces recovers the domain and lifts
	// its policy suppressions.
	rec, lifted, err := db.SetMXCheck("Route.Example", store.MXCheck{Verdict: "ok", Routed: true}, true)
	tcheck(t, err, "mx check")
	if !rec || lifted != 2 {
		t.Fatalf("mx check: recovered %v lifted %d", rec, lifted)
	}
	if rec, _, _ := db.SetMXCheck("route.example", store.MXCheck{Verdict: "ok", Routed: true}, true); rec {
		t.Fatal("second routed check recovered again")
	}
	ds, _ = db.Domains("")
	if ds[1].LastMX == nil || ds[1].Recovered == nil {
		t.Fatalf("health not shown: %+v", ds[1])
	}
	clock.Add(time.Minute)
	save(t, db, bounce("d@route.example", "5.4.4", "later failure"))
	ds, _ = db.Domains("")
	if ds[1].Recovered != nil {
		t.Fatal("recovery shown after a newer 5.4.x bounce")
	}
	if _, _, err := db.SetMXCheck("bad domain", store.MXCheck{}, false); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("invalid domain: %v", err)
	}
	tcheck(t, db.RemoveSuppression("c@other.example"), "remove")
	if err := db.RemoveSuppression("c@other.example"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}
	// Retention: raw messages older than an hour go, records stay.
	first, err := db.Query(store.Filter{Limit: 1000})
	tcheck(t, err, "query")
	clock.Add(2 * time.Hour)
	st, err := db.Prune(context.Background())
	tcheck(t, err, "prune")
	if st.Raw != 4 {
		t.Fatalf("pruned %+v", st)
	}
	if _, err := db.Raw(first[0].MsgID); !errors.Is(err, store.ErrRawPruned) || !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("raw after prune: %v", err)
	}
	clock.Add(31 * 24 * time.Hour)
	st, err = db.Prune(context.Background())
	tcheck(t, err, "prune")
	if st.Seen != 4 {
		t.Fatalf("pruned %+v", st)
	}
	tcheck(t, db.Check(), "check")
	// Check finds a record whose raw message is missing though not pruned.
	save(t, db, bounce("e@other.example", "5.1.1", "damaged"))
	_, err = db.pool.Exec(context.Background(), "DELETE FROM raw")
	tcheck(t, err, "damage")
	if err := db.Check(); err == nil {
		t.Fatal("check found nothing")
	}
	tcheck(t, db.Close(), "close")
	if _, err := db.Save(context.Background(), bounce("x@y.example", "5.1.1", "closed")); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("save after close: %v", err)
	}
}

// TestImportCoversEveryTable: every table of the schema is copied by
// Import (or is the engine's own bookkeeping), so a table added by a new
// migration cannot be left out of bouncer copy silently.
func TestImportCoversEveryTable(t *testing.T) {
	db := mustOpen(t, Options{})
	rows, err := db.pool.Query(context.Background(),
		"SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1", db.opts.Schema)
	tcheck(t, err, "listing tables")
	var tables []string
	for rows.Next() {
		var n string
		tcheck(t, rows.Scan(&n), "scan")
		tables = append(tables, n)
	}
	tcheck(t, rows.Err(), "listing tables")
	covered := map[string]bool{
		"schema_version": true, // migrations
		"idgen":          true, // moved past the imported IDs by finishImport
		"meta":           true, // raw_pruned_before, store.Meta
	}
	for _, tb := range importTables() {
		covered[tb.name] = true
	}
	if len(tables) < 10 {
		t.Fatalf("schema %s lists %d tables: %v", db.opts.Schema, len(tables), tables)
	}
	for _, n := range tables {
		if !covered[n] {
			t.Errorf("table %s is not copied by Import/Export", n)
		}
	}
}
