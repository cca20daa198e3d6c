package policy

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
)

// testClock is a settable clock for bolt.Options.Now.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// storeSave decodes raw with the real parser and saves it as received now.
func storeSave(t *testing.T, db *bolt.DB, clock *testClock, raw string) store.Record {
	t.Helper()
	rep, err := parse.Message(strings.NewReader(raw), parse.Limits{})
	tcheck(t, err, "parsing")
	// Each call is another report (a later send): the store marks a report
	// it has seen before as a duplicate and does not count it again.
	raw = "Date: " + clock.Now().Format(time.RFC1123Z) + "\r\n" + raw
	recs, err := db.Save(context.Background(), &store.Delivery{
		Received: clock.Now(),
		Envelope: store.Envelope{RcptTo: []string{"bounces@bounce.example.org"}, ClientIP: "192.0.2.1"},
		Raw:      []byte(raw),
		Report:   rep,
	})
	tcheck(t, err, "saving")
	if len(recs) != 1 {
		t.Fatalf("got %d records, want 1", len(recs))
	}
	return recs[0]
}

func isSuppressed(t *testing.T, db *bolt.DB, addr string) *store.Suppression {
	t.Helper()
	s, err := db.Suppressed(addr)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	tcheck(t, err, "looking up suppression")
	return s
}

// TestStore runs the default table inside a real bbolt store.
func TestStore(t *testing.T) {
	tab := mustCompile(t, DefaultRules())
	clock := &testClock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	db, err := bolt.Open(filepath.Join(t.TempDir(), "bouncer.db"), bolt.Options{Decide: tab.Decide, Now: clock.Now})
	tcheck(t, err, "open")
	t.Cleanup(func() { db.Close() })

	t.Run("5.4.3 suppresses once", func(t *testing.T) {
		const addr = "gone@dead-route.example"
		raw := dsn(addr, "failed", "5.4.3", "550 5.4.3 Routing server failure")
		first := storeSave(t, db, clock, raw)
		if first.Verdict != store.ActionSuppress || !first.Suppressed || first.Rule != "5.4.3 bounce suppress" {
			t.Fatalf("first save: verdict %q rule %q suppressed %v", first.Verdict, first.Rule, first.Suppressed)
		}
		clock.Add(time.Hour)
		second := storeSave(t, db, clock, raw) // the same DSN arrives again
		if second.Verdict != store.ActionSuppress || second.Suppressed {
			t.Fatalf("second save: verdict %q suppressed %v, want suppress without a new entry", second.Verdict, second.Suppressed)
		}
		s := isSuppressed(t, db, addr)
		if s == nil || s.RecordID != first.ID || s.Status != "5.4.3" {
			t.Fatalf("suppression: %+v, want one from record %s", s, first.ID)
		}
		// The reason says each thing once: the rule's made-up label
		// ("5.4.3 bounce suppress") would repeat the status and kind.
		if s.Reason != "bounce hard 5.4.3 (routing_failure)" {
			t.Fatalf("reason %q repeats itself or lacks what the record is", s.Reason)
		}
		n := 0
		tcheck(t, db.Suppressions("dead-route.example", func(store.Suppression) error { n++; return nil }), "listing")
		if n != 1 {
			t.Fatalf("%d suppressions for the domain, want 1", n)
		}
		stored, err := db.Record(first.ID)
		tcheck(t, err, "reading record")
		if stored.Verdict != store.ActionSuppress || stored.Rule != "5.4.3 bounce suppress" {
			t.Fatalf("stored verdict %q rule %q", stored.Verdict, stored.Rule)
		}
	})

	t.Run("4.4.3 counts and decays", func(t *testing.T) {
		const addr = "flaky@slow-route.example"
		raw := dsn(addr, "failed", "4.4.3", "451 4.4.3 Routing server failure")
		// Four in four days: below the threshold of 5.
		for i := range 4 {
			r := storeSave(t, db, clock, raw)
			if r.Verdict != store.ActionCount || r.Suppressed {
				t.Fatalf("event %d: verdict %q suppressed %v", i+1, r.Verdict, r.Suppressed)
			}
			clock.Add(24 * time.Hour)
		}
		if s := isSuppressed(t, db, addr); s != nil {
			t.Fatalf("suppressed after 4 events: %+v", s)
		}
		// Past the 14-day window the old events no longer count.
		clock.Add(15 * 24 * time.Hour)
		for i := range 4 {
			if r := storeSave(t, db, clock, raw); r.Suppressed {
				t.Fatalf("suppressed at event %d after decay", i+1)
			}
			clock.Add(24 * time.Hour)
		}
		if s := isSuppressed(t, db, addr); s != nil {
			t.Fatalf("suppressed by decayed events: %+v", s)
		}
		// The fifth within the window suppresses.
		r := storeSave(t, db, clock, raw)
		if !r.Suppressed {
			t.Fatalf("fifth event within 14 days did not suppress: %+v", r)
		}
		s := isSuppressed(t, db, addr)
		if s == nil || s.RecordID != r.ID {
			t.Fatalf("suppression %+v, want one from record %s", s, r.ID)
		}
		if want := "5 events within 14d, last: bounce soft 4.4.3"; !strings.HasPrefix(s.Reason, want) || strings.Count(s.Reason, "4.4.3") != 1 {
			t.Fatalf("reason %q, want it to start %q and name the status once", s.Reason, want)
		}
	})

	t.Run("5.7.1 block list never suppresses", func(t *testing.T) {
		const addr = "fine@listed-us.example"
		raw := dsn(addr, "failed", "5.7.1", "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org")
		for i := range 10 {
			r := storeSave(t, db, clock, raw)
			if r.Verdict != store.ActionRecord || r.Suppressed {
				t.Fatalf("event %d: verdict %q rule %q suppressed %v", i+1, r.Verdict, r.Rule, r.Suppressed)
			}
			clock.Add(time.Hour)
		}
		if s := isSuppressed(t, db, addr); s != nil {
			t.Fatalf("block-list rejection suppressed the recipient: %+v", s)
		}
	})
}
