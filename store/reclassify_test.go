package store

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bouncer/bouncer/parse"
)

// reclass runs Reclassify of old against the decoding of raw by the real
// parser, on m, and applies what it writes as an engine would.
func (m *memState) reclass(t *testing.T, r *Rules, old []Record, rep *parse.Report, opts ReclassOptions) *Reclass {
	t.Helper()
	rc, err := r.Reclassify(m, old, rep, "", t0.Add(time.Hour), opts)
	if err != nil {
		t.Fatalf("reclassify: %v", err)
	}
	for _, s := range rc.Suppressions {
		m.sup[s.Address] = s
	}
	for _, a := range rc.Lift {
		delete(m.sup, a)
	}
	for _, u := range rc.Soft {
		m.soft[u.Addr] = u.Counter
	}
	for _, u := range rc.Domains {
		m.domains[u.Stat.Domain] = u.Stat
	}
	for _, d := range rc.Daily {
		m.daily[d.Day+" "+d.Key] += d.N
	}
	m.events = append(m.events, rc.Events...)
	return rc
}

// countRules count 4.x.x bounces (two suppress) and suppress 5.x.x ones.
func countRules() *Rules {
	return &Rules{Decide: func(r *Record) Decision {
		switch {
		case r.Kind == parse.KindBounce && strings.HasPrefix(r.Status, "5."):
			return Decision{Action: ActionSuppress}
		case r.Kind == parse.KindBounce && strings.HasPrefix(r.Status, "4."):
			return Decision{Action: ActionCount, Threshold: 2, Window: 14 * 24 * time.Hour}
		}
		return Decision{Action: ActionRecord}
	}}
}

func TestReclassifySoftToHardOnce(t *testing.T) {
	m := newMemState()
	m.targets = []OutboxTarget{{Name: "hook", Events: []string{EventHard, EventSoft}}}
	r := countRules()
	d := bounce(t, "a@dead.example", "4.4.1", "Mon, 1 Jan 2026 00:00:00 +0000")
	old := m.save(t, r, d, t0).Records
	if old[0].Verdict != ActionCount || len(m.soft["a@dead.example"].Events) != 1 || len(m.events) != 1 {
		t.Fatalf("old record %+v, soft %v, %d events", old[0], m.soft, len(m.events))
	}
	now := bounce(t, "a@dead.example", "5.1.1", "Mon, 1 Jan 2026 00:00:00 +0000").Report
	rc := m.reclass(t, r, old, now, ReclassOptions{})
	c := rc.Changed[0]
	if !c.Suppressed || !c.Uncounted || c.Counted || c.Events != 1 || c.New.Verdict != ActionSuppress || c.New.ID != old[0].ID {
		t.Fatalf("change %+v", c)
	}
	if ev := rc.Events[0]; ev.ID != old[0].ID+".hook.hard.suppressed" || ev.Type != EventHard {
		t.Fatalf("event %+v", ev)
	}
	if len(m.soft["a@dead.example"].Events) != 0 || m.sup["a@dead.example"].RecordID != old[0].ID {
		t.Fatalf("soft %v, suppression %+v", m.soft, m.sup)
	}
	// The aggregate and the day move from 4.4.1 (soft) to 5.1.1 (hard).
	if len(rc.Domains) != 1 || fmt.Sprint(rc.Domains[0].NewStatuses, rc.Domains[0].GoneStatuses) != "[5.1.1] [4.4.1]" {
		t.Fatalf("domain update %+v", rc.Domains)
	}
	day := DayOf(t0)
	if st := m.domains["dead.example"]; st.Total != 1 || fmt.Sprint(st.Counts) != "map[5.1.1:1]" ||
		m.daily[day+" soft"] != 0 || m.daily[day+" hard"] != 1 || m.daily[DayOf(t0.Add(time.Hour))+" suppressed"] != 1 {
		t.Fatalf("aggregate %+v, daily %v", st, m.daily)
	}
	// Again, from what is stored now: nothing.
	rc = m.reclass(t, r, []Record{c.New}, now, ReclassOptions{})
	if rc.Writes() || len(rc.Changed) != 0 || rc.Unchanged != 1 {
		t.Fatalf("second run %+v", rc)
	}
	// Back to soft: counted once, the suppression stale and kept; the
	// target, told hard, is not told soft.
	rc = m.reclass(t, r, []Record{c.New}, d.Report, ReclassOptions{})
	c = rc.Changed[0]
	if !c.Counted || !c.Stale || c.Lifted || c.New.Suppressed || c.Events != 0 || len(m.sup) != 1 {
		t.Fatalf("back to soft: %+v", c)
	}
	// Still stale at the next run, with nothing to write.
	rc = m.reclass(t, r, []Record{c.New}, d.Report, ReclassOptions{})
	if len(rc.Changed) != 1 || !rc.Changed[0].Stale || rc.Writes() {
		t.Fatalf("stale again: %+v", rc)
	}
	rc = m.reclass(t, r, []Record{c.New}, d.Report, ReclassOptions{Lift: true})
	if c := rc.Changed[0]; !c.Lifted || c.New.Suppressed || c.Counted || !rc.Writes() || len(m.sup) != 0 || len(m.soft["a@dead.example"].Events) != 1 {
		t.Fatalf("lift: %+v, suppressions %v, soft %v", c, m.sup, m.soft)
	}
}

func TestReclassifyKeepsDuplicatesAndHolds(t *testing.T) {
	m := newMemState()
	r := countRules()
	d := bounce(t, "a@dead.example", "4.4.1", "Mon, 1 Jan 2026 00:00:00 +0000")
	first := m.save(t, r, d, t0).Records[0]
	dup := m.save(t, r, d, t0.Add(time.Minute)).Records[0]
	if !dup.Duplicate {
		t.Fatal("second copy is not a duplicate")
	}
	held := first
	held.ID, held.Verdict, held.Duplicate = "held1", ActionHeld, false
	now := bounce(t, "a@dead.example", "5.1.1", "Mon, 1 Jan 2026 00:00:00 +0000").Report
	for _, old := range []Record{dup, held} {
		rc := m.reclass(t, r, []Record{old}, now, ReclassOptions{})
		c := rc.Changed[0]
		if c.New.Status != "5.1.1" || c.New.Verdict != old.Verdict || c.New.Duplicate != old.Duplicate ||
			c.Suppressed || c.Counted || c.Uncounted || len(rc.Suppressions)+len(rc.Soft)+len(rc.Events) != 0 {
			t.Fatalf("%s: %+v", old.Verdict, rc)
		}
	}
}

func TestMatchRecords(t *testing.T) {
	rec := func(addr string) Record { return Record{Addr: addr} }
	for _, c := range []struct {
		old, fresh  []string
		pairs       string
		gone, extra int
	}{
		{[]string{"a", "b"}, []string{"b", "a"}, "0-1 1-0", 0, 0},
		{[]string{""}, []string{"a", "b"}, "0-0", 0, 1},           // undecoded, now two recipients
		{[]string{"a", "b", "c"}, []string{"c"}, "2-0", 2, 0},     // c by address, a and b gone
		{[]string{"x", "a"}, []string{"a", "y"}, "0-1 1-0", 0, 0}, // a by address, x → y
		{[]string{"a", "a"}, []string{"a"}, "0-0", 1, 0},
	} {
		var old, fresh []Record
		for _, a := range c.old {
			old = append(old, rec(a))
		}
		for _, a := range c.fresh {
			fresh = append(fresh, rec(a))
		}
		pairs, gone, extra := matchRecords(old, fresh)
		var got []string
		for _, p := range pairs {
			got = append(got, string(rune('0'+p[0]))+"-"+string(rune('0'+p[1])))
		}
		if strings.Join(got, " ") != c.pairs || len(gone) != c.gone || len(extra) != c.extra {
			t.Errorf("%v → %v: pairs %v gone %v extra %v, want %s, %d gone, %d extra", c.old, c.fresh, got, gone, extra, c.pairs, c.gone, c.extra)
		}
	}
}
