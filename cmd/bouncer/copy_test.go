package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
	"github.com/bouncer/bouncer/store/postgres"
	"github.com/bouncer/bouncer/store/storetest"
)

// copyStore is what the round trip reads of each store.
type copyStore interface {
	store.Store
	mover
}

// fillCorpus saves every sisimai sample of the parse package into a new
// bbolt file through the normal Save path, with the storm guard on and a
// push target, and adds what Save alone does not make: dead letters, a
// hand-made suppression, an MX check and the raw retention mark.
func fillCorpus(t *testing.T, path string) {
	t.Helper()
	files, err := filepath.Glob("../../parse/testdata/sisimai/maildir/*/*")
	tcheck(t, err, "listing corpus")
	if len(files) < 100 {
		t.Fatalf("%d corpus files, want the sisimai maildir", len(files))
	}
	sort.Strings(files)
	clock := storetest.ClockAt(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	// Hard bounces suppress, soft ones count, as a typical policy does.
	decide := func(r *store.Record) store.Decision {
		switch {
		case r.Class == parse.ClassHard:
			return store.Decision{Action: store.ActionSuppress, Rule: "hard"}
		case r.Class == parse.ClassSoft:
			return store.Decision{Action: store.ActionCount, Threshold: 5, Window: 90 * 24 * time.Hour, Rule: "soft"}
		}
		return store.Decision{Action: store.ActionRecord}
	}
	db, err := bolt.Open(path, bolt.Options{Now: clock.Now, Decide: decide,
		Storm: store.StormOptions{Threshold: 2, Window: 24 * time.Hour}})
	tcheck(t, err, "opening source")
	defer func() { tcheck(t, db.Close(), "closing source") }()
	tcheck(t, db.SetOutboxTargets([]store.OutboxTarget{{Name: "listmonk", Events: store.EventTypes}}), "targets")
	for _, f := range files {
		raw, err := os.ReadFile(f)
		tcheck(t, err, "reading "+f)
		d := &store.Delivery{Received: clock.Now(), Raw: raw,
			Envelope: store.Envelope{RcptTo: []string{"bounces@bounce.example.org"}, ClientIP: "192.0.2.1", Helo: "mx.example.net"}}
		if d.Report, err = parse.Message(bytes.NewReader(raw), parse.DefaultLimits()); err != nil {
			d.ParseError = err.Error()
		}
		_, err = db.Save(context.Background(), d)
		tcheck(t, err, "saving "+f)
		clock.Add(47 * time.Minute) // the samples spread over days
	}
	due, err := db.OutboxDue(clock.Now(), 3, 100, nil)
	tcheck(t, err, "outbox due")
	var res []store.OutboxResult
	for _, ev := range due {
		res = append(res, store.OutboxResult{Seq: ev.Seq, Err: errors.New("refused"), Dead: true})
	}
	_, err = db.OutboxUpdate(res)
	tcheck(t, err, "dead letters")
	tcheck(t, db.AddSuppression(store.Suppression{Address: "hand@made.example", Reason: "asked", Source: "test"}), "suppress")
	_, _, err = db.SetMXCheck("example.jp", store.MXCheck{Verdict: "ok", Routed: true, Checked: clock.Now()}, false)
	tcheck(t, err, "mx check")
	_, err = db.PruneRaw(context.Background(), time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	tcheck(t, err, "prune mark")
}

// content reads everything a store holds through its public methods
// (and Export for what has none), kind by kind, as comparable strings.
func content(t *testing.T, db copyStore) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	add := func(kind string, v any) {
		b, err := json.Marshal(v)
		tcheck(t, err, "encoding "+kind)
		out[kind] = append(out[kind], string(b))
	}
	var recs []store.Record
	tcheck(t, db.ForEach(store.Filter{}, func(r store.Record) error { recs = append(recs, r); return nil }), "records")
	statuses := map[string]bool{}
	for _, r := range recs {
		add("records", r)
		statuses[r.Status] = true
		if len(out["raw"]) == 0 || !strings.HasPrefix(out["raw"][len(out["raw"])-1], r.MsgID) {
			raw, err := db.Raw(r.MsgID)
			tcheck(t, err, "raw "+r.MsgID)
			out["raw"] = append(out["raw"], r.MsgID+" "+string(raw))
		}
		// The indexes: each record found by its recipient.
		got, err := db.Query(store.Filter{Recipient: r.Addr, Limit: store.MaxLimit})
		tcheck(t, err, "query by recipient")
		if !slices.ContainsFunc(got, func(g store.Record) bool { return g.ID == r.ID }) && r.Addr != "" {
			t.Errorf("%T: record %s not found by its recipient %q", db, r.ID, r.Addr)
		}
	}
	tcheck(t, db.Suppressions("", func(s store.Suppression) error { add("suppressions", s); return nil }), "suppressions")
	storms, err := db.Storms()
	tcheck(t, err, "storms")
	for _, s := range storms {
		add("storms", s)
	}
	holds, err := db.Holds("")
	tcheck(t, err, "holds")
	for _, h := range holds {
		add("holds", h)
	}
	doms, err := db.Domains("")
	tcheck(t, err, "domains")
	for _, d := range doms {
		add("domains", d) // with storm flag, MX check and recovery
	}
	for s := range statuses {
		ds, err := db.Domains(s)
		tcheck(t, err, "domains by status")
		for _, d := range ds {
			out["domains_by_status"] = append(out["domains_by_status"], s+" "+d.Domain)
		}
	}
	sort.Strings(out["domains_by_status"])
	days, err := db.Daily(time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	tcheck(t, err, "daily")
	for _, d := range days {
		add("daily", d)
	}
	for _, dead := range []bool{false, true} {
		tcheck(t, db.OutboxEvents(dead, func(ev store.OutboxEvent) error {
			add(map[bool]string{false: "outbox", true: "outbox_dead"}[dead], ev)
			return nil
		}), "outbox")
	}
	// No public reader: dedupe keys, soft and storm counters, targets.
	tcheck(t, db.Export(context.Background(), func(it *store.Item) error {
		switch {
		case it.Seen != nil:
			add("dedupe_keys", it.Seen)
		case it.Soft != nil:
			add("soft_counters", it.Soft)
		case it.StormSet != nil:
			add("storm_counters", it.StormSet)
		case it.Target != nil:
			add("outbox_targets", it.Target)
		case it.MX != nil:
			add("mx_checks", it.MX)
		case it.Meta != nil:
			add("meta", it.Meta)
		}
		return nil
	}), "export")
	// bbolt orders storm counters by its key encoding (lengths first),
	// PostgreSQL by value.
	sort.Strings(out["storm_counters"])
	return out
}

func compareContent(t *testing.T, what string, got, want map[string][]string) {
	t.Helper()
	for kind, w := range want {
		g := got[kind]
		if len(g) != len(w) {
			t.Errorf("%s: %s: %d items, want %d", what, kind, len(g), len(w))
			continue
		}
		for i := range w {
			if g[i] != w[i] {
				t.Errorf("%s: %s item %d differs:\n got %.600s\nwant %.600s", what, kind, i, g[i], w[i])
				break
			}
		}
	}
	for kind := range got {
		if _, ok := want[kind]; !ok {
			t.Errorf("%s: %s: %d items, want none", what, kind, len(got[kind]))
		}
	}
}

func openBoltRO(t *testing.T, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, bolt.Options{ReadOnly: true})
	tcheck(t, err, "opening "+path)
	t.Cleanup(func() { db.Close() })
	return db
}

func openPG(t *testing.T, url, schema string) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(context.Background(), postgres.Options{URL: url, Schema: schema})
	tcheck(t, err, "opening postgres")
	t.Cleanup(func() { db.Close() })
	return db
}

// TestCopyRoundTrip copies a bbolt file filled with the corpus into
// PostgreSQL and from there into a new bbolt file, and compares the three
// stores kind by kind; both new stores then go on numbering records and
// events after the copied ones.
func TestCopyRoundTrip(t *testing.T) {
	url := pgCluster.Database(t)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")
	fillCorpus(t, a)

	out, code := runCLI(t, "copy", "-from", "bbolt:"+a, "-to", url, "-schema", "moved", "-batch", "100")
	if code != 0 {
		t.Fatalf("copy to postgres: exit %d\n%s", code, out)
	}
	t.Logf("bbolt to postgres:\n%s", out)
	if !strings.Contains(out, "records") || strings.Contains(out, "DIFFERS") {
		t.Fatalf("copy output lacks the counts or shows a difference:\n%s", out)
	}
	out, code = runCLI(t, "copy", "-from", url, "-schema", "moved", "-to", "bbolt:"+b)
	if code != 0 {
		t.Fatalf("copy back to bbolt: exit %d\n%s", code, out)
	}

	src := openBoltRO(t, a)
	want := content(t, src)
	for _, kind := range append(slices.DeleteFunc(slices.Clone(store.DumpKinds), func(k string) bool { return k == store.DumpRaw }), "raw", "domains_by_status") {
		if len(want[kind]) == 0 {
			t.Fatalf("the corpus store holds no %s: the round trip would not test them", kind)
		}
	}
	pg := openPG(t, url, "moved")
	compareContent(t, "postgres", content(t, pg), want)
	back := openBoltRO(t, b)
	compareContent(t, "bbolt after the round trip", content(t, back), want)
	srcCounts, err := src.Counts(context.Background())
	tcheck(t, err, "counts")
	backCounts, err := back.Counts(context.Background())
	tcheck(t, err, "counts")
	if !equalCounts(srcCounts, backCounts) {
		t.Fatalf("counts after the round trip %v, want %v", backCounts, srcCounts)
	}

	// New records and events come after the copied ones.
	var lastID string
	var lastSeq uint64
	for _, r := range want["records"] {
		var rec store.Record
		tcheck(t, json.Unmarshal([]byte(r), &rec), "record")
		lastID = max(lastID, rec.ID)
	}
	for _, e := range append(want["outbox"], want["outbox_dead"]...) {
		var ev store.OutboxEvent
		tcheck(t, json.Unmarshal([]byte(e), &ev), "event")
		lastSeq = max(lastSeq, ev.Seq)
	}
	back.Close()
	rw, err := bolt.Open(b, bolt.Options{Now: func() time.Time { return time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC) }})
	tcheck(t, err, "reopening the copy")
	defer rw.Close()
	for name, db := range map[string]store.Store{"postgres": pg, "bbolt": rw} {
		d := storetest.Delivery(t, storetest.DSN("late@new.example", "5.1.1", "Mon, 2 Mar 2026 10:00:00 +0000"))
		recs, err := db.Save(context.Background(), d)
		tcheck(t, err, "saving after the copy")
		if recs[0].ID <= lastID {
			t.Errorf("%s: new record %s not after the copied %s", name, recs[0].ID, lastID)
		}
		var seqs []uint64
		tcheck(t, db.OutboxEvents(false, func(ev store.OutboxEvent) error { seqs = append(seqs, ev.Seq); return nil }), "events")
		if len(seqs) == 0 || seqs[len(seqs)-1] <= lastSeq {
			t.Errorf("%s: new event seq %v not after the copied %d", name, seqs[len(seqs)-1:], lastSeq)
		}
	}
}

func equalCounts(a, b map[string]int) bool {
	for _, k := range store.DumpKinds {
		if a[k] != b[k] {
			return false
		}
	}
	return true
}

// TestCopyRefuses: a source that serve holds is refused with a clear
// error, as is a target that holds data, unless -into-nonempty, which
// then leaves the target with the same counts.
func TestCopyRefuses(t *testing.T) {
	url := pgCluster.Database(t)
	dir := t.TempDir()
	a := filepath.Join(dir, "a.db")
	fillCorpus(t, a)

	held, err := bolt.Open(a, bolt.Options{LockTimeout: time.Second})
	tcheck(t, err, "holding the source")
	var stderr bytes.Buffer
	app := &app{stdout: &bytes.Buffer{}, stderr: &stderr}
	err = app.run(context.Background(), []string{"copy", "-from", "bbolt:" + a, "-to", url})
	if err == nil || !strings.Contains(err.Error(), "locked") || !strings.Contains(err.Error(), "stop it first") {
		t.Fatalf("copy from a held file: %v, want a 'locked' error", err)
	}
	held.Close()

	if out, code := runCLI(t, "copy", "-from", "bbolt:"+a, "-to", url); code != 0 {
		t.Fatalf("copy: exit %d\n%s", code, out)
	}
	pg := openPG(t, url, "bouncer")
	before, err := pg.Counts(context.Background())
	tcheck(t, err, "counts")
	err = app.run(context.Background(), []string{"copy", "-from", "bbolt:" + a, "-to", url})
	if err == nil || !strings.Contains(err.Error(), "holds data already") {
		t.Fatalf("copy into a filled schema: %v, want a refusal", err)
	}
	after, err := pg.Counts(context.Background())
	tcheck(t, err, "counts")
	if !equalCounts(before, after) {
		t.Fatalf("refused copy changed the target: %v, was %v", after, before)
	}
	// The other way too: a filled bbolt file as target.
	err = app.run(context.Background(), []string{"copy", "-from", url, "-to", "bbolt:" + a})
	if err == nil || !strings.Contains(err.Error(), "holds data already") {
		t.Fatalf("copy into a filled file: %v, want a refusal", err)
	}

	if out, code := runCLI(t, "copy", "-from", "bbolt:"+a, "-to", url, "-into-nonempty"); code != 0 {
		t.Fatalf("copy -into-nonempty: exit %d\n%s", code, out)
	}
	again, err := pg.Counts(context.Background())
	tcheck(t, err, "counts")
	if !equalCounts(before, again) {
		t.Fatalf("copy again with -into-nonempty: %v, want the same counts %v", again, before)
	}
	// The store of a config file (its path relative to the file) as
	// the source, into a new bbolt file.
	cfg := writeConfig(t, dir, "[http]\nlisten = \"\"\n[store]\npath = \"a.db\"\n")
	c := filepath.Join(dir, "c.db")
	if out, code := runCLI(t, "copy", "-config", cfg, "-from", "config", "-to", "bbolt:"+c); code != 0 {
		t.Fatalf("copy from the config's store: exit %d\n%s", code, out)
	}
	src, cp := openBoltRO(t, a), openBoltRO(t, c)
	sc, err := src.Counts(context.Background())
	tcheck(t, err, "counts")
	cc, err := cp.Counts(context.Background())
	tcheck(t, err, "counts")
	if !equalCounts(sc, cc) {
		t.Fatalf("bbolt to bbolt: counts %v, want %v", cc, sc)
	}
	if _, code := runCLI(t, "copy", "-from", "bbolt:"+a, "-to", "bbolt:"+dir+"/../"+filepath.Base(dir)+"/a.db"); code != 2 {
		t.Fatalf("copy of a file onto itself: exit %d, want 2", code)
	}
	if _, code := runCLI(t, "copy", "-from", "bbolt:"+filepath.Join(dir, "missing.db"), "-to", url); code != 1 {
		t.Fatalf("copy from a missing file: exit %d, want 1", code)
	}
}
