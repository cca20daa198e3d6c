package bolt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/storetest"

	"github.com/bouncer/bouncer/parse"
)

func tcheck(t testing.TB, err error, msg string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
}

// mustOpen opens a new database in t.TempDir and closes it at cleanup.
func mustOpen(t testing.TB, opts Options) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bouncer.db")
	db, err := Open(path, opts)
	tcheck(t, err, "open")
	t.Cleanup(func() { db.Close() })
	return db, path
}

// testClock is a settable clock for Options.Now.
type testClock = storetest.Clock

func newClock() *testClock {
	return storetest.ClockAt(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
}

// sample returns the real Postfix DSN in testdata and its report, as the
// parse package should decode it.
func sample(t testing.TB) *store.Delivery {
	t.Helper()
	raw, err := os.ReadFile("testdata/postfix-5.1.1.eml")
	tcheck(t, err, "reading sample")
	return &store.Delivery{
		Received: time.Date(2025, 3, 1, 11, 59, 0, 0, time.UTC),
		Envelope: store.Envelope{MailFrom: "", RcptTo: []string{"bounces@bounce.example.org"}, ClientIP: "192.0.2.1", Helo: "nyaaan.example.com"},
		Raw:      raw,
		Report: &parse.Report{
			Kind:         parse.KindBounce,
			ReportingMTA: "nyaaan.example.com",
			ArrivalDate:  "Thu, 29 Apr 2017 23:34:45 +0900 (JST)",
			Recipients: []parse.Recipient{{
				FinalRecipient:    "kijitora@gmail.com",
				OriginalRecipient: "kijitora@gmail.com",
				Action:            parse.Failed,
				Status:            "5.1.1",
				StatusLiteral:     "5.1.1",
				RemoteMTA:         "gmail-smtp-in.l.google.com",
				DiagnosticType:    "smtp",
				DiagnosticCode:    "550-5.1.1 The email account that you tried to reach does not exist.",
				Kind:              parse.KindBounce,
				Class:             parse.ClassHard,
				DecodedBy:         "rfc3464",
			}},
			Original: &parse.Original{To: "kijitora@gmail.com", From: "sironeko@example.com", Subject: "Nyaaaaaaaaaaaaaaaaaaaaaaaaaan"},
		},
	}
}

// bounce builds a small delivery for one recipient.
func bounce(addr, status string, kind parse.Kind, class parse.Class) *store.Delivery {
	return &store.Delivery{
		Envelope: store.Envelope{RcptTo: []string{"bounces@bounce.example.org"}},
		Raw:      []byte("Subject: bounce for " + addr + "\r\n\r\nStatus: " + status + "\r\n"),
		Report: &parse.Report{
			Kind:         kind,
			ReportingMTA: "mta.sender.example",
			Recipients: []parse.Recipient{{
				FinalRecipient: addr, Action: parse.Failed, Status: status,
				RemoteMTA: "mx." + store.AddrDomain(addr), Kind: kind, Class: class,
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

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	tcheck(t, err, "marshal")
	return string(b)
}

func TestSaveRoundTrip(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{})
	d := sample(t)
	recs := save(t, db, d)
	if len(recs) != 1 {
		t.Fatalf("got %d records, want 1", len(recs))
	}
	r := recs[0]
	if r.Addr != "kijitora@gmail.com" || r.Domain != "gmail.com" || r.Status != "5.1.1" || r.ReportingMTA != "nyaaan.example.com" {
		t.Fatalf("record fields: %+v", r)
	}
	if r.Verdict != store.ActionRecord || r.Suppressed {
		t.Fatalf("5.1.1 under default policy: verdict %q suppressed %v", r.Verdict, r.Suppressed)
	}
	if !r.Received.Equal(d.Received) {
		t.Fatalf("received %v, want %v", r.Received, d.Received)
	}
	got, err := db.Record(r.ID)
	tcheck(t, err, "record")
	if a, b := mustJSON(t, got), mustJSON(t, r); a != b {
		t.Fatalf("stored record differs:\n%s\n%s", a, b)
	}
	raw, err := db.Raw(r.MsgID)
	tcheck(t, err, "raw")
	if !bytes.Equal(raw, d.Raw) {
		t.Fatalf("raw message differs after round trip")
	}
	if _, err := db.Record("00000000000000000000abcd"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing record: got %v, want ErrNotFound", err)
	}
	if _, err := db.Record("zz"); err == nil {
		t.Fatalf("invalid id accepted")
	}
	if _, err := db.Raw(r.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("raw of a record id: got %v, want ErrNotFound", err)
	}
	q, err := db.Query(store.Filter{Recipient: "Kijitora@GMAIL.com"})
	tcheck(t, err, "query")
	if len(q) != 0 {
		t.Fatalf("local part is case-sensitive, got %d records", len(q))
	}
	q, err = db.Query(store.Filter{Recipient: "<kijitora@GMAIL.com>"})
	tcheck(t, err, "query")
	if len(q) != 1 || q[0].ID != r.ID {
		t.Fatalf("query by recipient: got %d records", len(q))
	}
	tcheck(t, db.Check(), "check")
}

func TestBuildRecords(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{})

	// Two recipients: two records sharing the message, ids in order.
	d := bounce("a@Example.COM", "5.1.1", parse.KindBounce, parse.ClassHard)
	d.Report.Recipients = append(d.Report.Recipients, parse.Recipient{
		OriginalRecipient: "b@example.com", Action: parse.Delayed, Status: "4.4.1",
		Kind: parse.KindDelay, Class: parse.ClassSoft,
	})
	recs := save(t, db, d)
	if len(recs) != 2 || recs[0].MsgID != recs[1].MsgID || recs[0].ID >= recs[1].ID {
		t.Fatalf("two recipients: %+v", recs)
	}
	if recs[0].Addr != "a@example.com" || recs[1].Addr != "b@example.com" || recs[1].Kind != parse.KindDelay {
		t.Fatalf("addresses: %q %q kind %q", recs[0].Addr, recs[1].Addr, recs[1].Kind)
	}
	if recs[0].MsgID == recs[0].ID {
		t.Fatalf("message and record share an id")
	}

	// VERP wins over the report's address.
	d = bounce("someone@forwarded.example", "5.1.1", parse.KindBounce, parse.ClassHard)
	d.Envelope.VERP = "User@Dead.TEST"
	recs = save(t, db, d)
	if recs[0].Addr != "User@dead.test" || recs[0].Domain != "dead.test" {
		t.Fatalf("verp: got %q %q", recs[0].Addr, recs[0].Domain)
	}

	// No report: one unknown record with the parse error.
	recs = save(t, db, &store.Delivery{Raw: []byte("garbage"), ParseError: "no MIME structure"})
	if len(recs) != 1 || recs[0].Kind != parse.KindUnknown || recs[0].Addr != "" || recs[0].ParseError == "" {
		t.Fatalf("no report: %+v", recs)
	}
	raw, err := db.Raw(recs[0].MsgID)
	tcheck(t, err, "raw")
	if string(raw) != "garbage" {
		t.Fatalf("raw of incompressible message: %q", raw)
	}

	// Report without recipients keeps the report's kind.
	recs = save(t, db, &store.Delivery{Raw: []byte("x"), Report: &parse.Report{Kind: parse.KindAutoReply}})
	if len(recs) != 1 || recs[0].Kind != parse.KindAutoReply || recs[0].Addr != "" {
		t.Fatalf("no recipients: %+v", recs)
	}
	tcheck(t, db.Check(), "check")
}

// fixture saves n deliveries over a few domains, statuses and kinds with
// a clock advancing one minute per delivery, and returns the records.
func fixture(t *testing.T, db *DB, clock *testClock, n int) []store.Record {
	t.Helper()
	statuses := []string{"5.1.1", "5.4.3", "4.4.1", "5.7.1", ""}
	domains := []string{"a.example", "b.example", "C.Example"}
	var all []store.Record
	for i := range n {
		kind, class := parse.KindBounce, parse.ClassHard
		st := statuses[i%len(statuses)]
		if st == "4.4.1" {
			kind, class = parse.KindDelay, parse.ClassSoft
		}
		if st == "" {
			kind, class = parse.KindAutoReply, parse.ClassNone
		}
		addr := fmt.Sprintf("u%d@%s", i%7, domains[i%len(domains)])
		all = append(all, save(t, db, bounce(addr, st, kind, class))...)
		clock.Add(time.Minute)
	}
	return all
}

// want filters records the plain way, newest first.
func want(all []store.Record, keep func(r store.Record) bool, limit int) []string {
	var ids []string
	for i := len(all) - 1; i >= 0; i-- {
		if keep(all[i]) && (limit == 0 || len(ids) < limit) {
			ids = append(ids, all[i].ID)
		}
	}
	return ids
}

func ids(recs []store.Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.ID)
	}
	return out
}

func TestQuery(t *testing.T) {
	t.Parallel()
	clock := newClock()
	db, _ := mustOpen(t, Options{Now: clock.Now})
	start := clock.Now()
	all := fixture(t, db, clock, 120)

	since := start.Add(90 * time.Minute)
	cases := []struct {
		name  string
		f     store.Filter
		keep  func(store.Record) bool
		limit int
	}{
		{"all", store.Filter{Limit: 1000}, func(store.Record) bool { return true }, 1000},
		{"default limit", store.Filter{}, func(store.Record) bool { return true }, store.DefaultLimit},
		{"status", store.Filter{Status: "5.4.3", Limit: 1000}, func(r store.Record) bool { return r.Status == "5.4.3" }, 0},
		{"domain", store.Filter{Domain: "c.EXAMPLE", Limit: 1000}, func(r store.Record) bool { return r.Domain == "c.example" }, 0},
		{"domain and status", store.Filter{Domain: "b.example", Status: "5.1.1", Limit: 5},
			func(r store.Record) bool { return r.Domain == "b.example" && r.Status == "5.1.1" }, 5},
		{"recipient", store.Filter{Recipient: "u3@a.example", Limit: 1000}, func(r store.Record) bool { return r.Addr == "u3@a.example" }, 0},
		{"recipient and status", store.Filter{Recipient: "u3@a.example", Status: "5.7.1", Limit: 1000},
			func(r store.Record) bool { return r.Addr == "u3@a.example" && r.Status == "5.7.1" }, 0},
		{"kind", store.Filter{Kind: parse.KindAutoReply, Limit: 1000}, func(r store.Record) bool { return r.Kind == parse.KindAutoReply }, 0},
		{"since", store.Filter{Since: since, Limit: 1000}, func(r store.Record) bool { return !r.Received.Before(since) }, 0},
		{"since and status", store.Filter{Since: since, Status: "5.4.3", Limit: 1000},
			func(r store.Record) bool { return !r.Received.Before(since) && r.Status == "5.4.3" }, 0},
		{"no match", store.Filter{Domain: "nowhere.example"}, func(store.Record) bool { return false }, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := db.Query(tc.f)
			tcheck(t, err, "query")
			w := want(all, tc.keep, tc.limit)
			if !slices.Equal(ids(got), w) {
				t.Fatalf("got %d ids %v\nwant %d ids %v", len(got), ids(got), len(w), w)
			}
		})
	}
}

func TestForEachChunks(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{})
	n := 2*scanChunk + 37
	var wg sync.WaitGroup
	for w := range 10 { // concurrent Saves share commits: one fsync per group
		wg.Go(func() {
			for i := w; i < n; i += 10 {
				d := bounce(fmt.Sprintf("u%d@big.example", i), "5.1.1", parse.KindBounce, parse.ClassHard)
				if _, err := db.Save(context.Background(), d); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	var prev string
	count := 0
	err := db.ForEach(store.Filter{Domain: "big.example"}, func(r store.Record) error {
		if prev != "" && r.ID >= prev {
			t.Fatalf("not newest first: %s after %s", r.ID, prev)
		}
		prev = r.ID
		count++
		return nil
	})
	tcheck(t, err, "foreach")
	if count != n {
		t.Fatalf("foreach saw %d records, want %d", count, n)
	}
	count = 0
	tcheck(t, db.ForEach(store.Filter{Limit: scanChunk + 1}, func(store.Record) error { count++; return nil }), "foreach")
	if count != scanChunk+1 {
		t.Fatalf("foreach with limit saw %d", count)
	}
	stop := errors.New("stop")
	if err := db.ForEach(store.Filter{}, func(store.Record) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("error from fn: got %v", err)
	}
	got, err := db.Query(store.Filter{Limit: store.MaxLimit * 10})
	tcheck(t, err, "query")
	if len(got) != n {
		t.Fatalf("query got %d, want %d", len(got), n)
	}
}

func TestSuppressOnce(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{})
	d := bounce("user@dead.test", "5.4.3", parse.KindBounce, parse.ClassHard)
	first := save(t, db, d)
	// Another report about the same address (a later send).
	d2 := bounce("user@dead.test", "5.4.3", parse.KindBounce, parse.ClassHard)
	d2.Raw = append(d2.Raw, "Arrival-Date: later\r\n"...)
	second := save(t, db, d2)
	if !first[0].Suppressed || first[0].Verdict != store.ActionSuppress {
		t.Fatalf("first 5.4.3: verdict %q suppressed %v", first[0].Verdict, first[0].Suppressed)
	}
	if second[0].Suppressed || second[0].Verdict != store.ActionSuppress {
		t.Fatalf("second 5.4.3: verdict %q suppressed %v", second[0].Verdict, second[0].Suppressed)
	}
	s, err := db.Suppressed("user@DEAD.test")
	tcheck(t, err, "suppressed")
	if s.RecordID != first[0].ID || s.Status != "5.4.3" || s.Source != "policy" || s.Reason == "" {
		t.Fatalf("suppression: %+v", s)
	}
	var list []store.Suppression
	tcheck(t, db.Suppressions("dead.test", func(s store.Suppression) error { list = append(list, s); return nil }), "suppressions")
	if len(list) != 1 {
		t.Fatalf("suppressions of dead.test: %d entries", len(list))
	}

	// Neighbours do not suppress under the default policy.
	for _, st := range []string{"4.4.3", "5.4.4", "5.7.1"} {
		class := parse.ClassHard
		if st[0] == '4' {
			class = parse.ClassSoft
		}
		save(t, db, bounce("n"+st+"@dead.test", st, parse.KindBounce, class))
		if _, err := db.Suppressed("n" + st + "@dead.test"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("%s: got %v, want ErrNotFound", st, err)
		}
	}
	// Two 5.4.3 records for one address in one message: one suppression.
	d = bounce("twice@dead.test", "5.4.3", parse.KindBounce, parse.ClassHard)
	d.Report.Recipients = append(d.Report.Recipients, d.Report.Recipients[0])
	recs := save(t, db, d)
	if !recs[0].Suppressed || recs[1].Suppressed {
		t.Fatalf("same message twice: suppressed %v %v", recs[0].Suppressed, recs[1].Suppressed)
	}
	tcheck(t, db.Check(), "check")
}

func TestCountDecay(t *testing.T) {
	t.Parallel()
	clock := newClock()
	decide := func(r *store.Record) store.Decision {
		if r.Status == "4.4.3" {
			return store.Decision{Action: store.ActionCount, Threshold: 3, Window: 24 * time.Hour, Rule: "4.4.3"}
		}
		return store.DefaultDecide(r)
	}
	db, _ := mustOpen(t, Options{Now: clock.Now, Decide: decide})
	step := func(advance time.Duration, wantSuppressed bool) {
		t.Helper()
		clock.Add(advance)
		d := bounce("soft@slow.example", "4.4.3", parse.KindBounce, parse.ClassSoft)
		d.Report.ArrivalDate = clock.Now().Format(time.RFC1123Z) // each report is about another send
		recs := save(t, db, d)
		if recs[0].Verdict != store.ActionCount || recs[0].Rule != "4.4.3" {
			t.Fatalf("verdict %q rule %q", recs[0].Verdict, recs[0].Rule)
		}
		if recs[0].Suppressed != wantSuppressed {
			t.Fatalf("at %v: suppressed %v, want %v", clock.Now(), recs[0].Suppressed, wantSuppressed)
		}
	}
	step(0, false)
	step(time.Hour, false)
	// 30 hours later the first two have decayed: this is the first again.
	step(30*time.Hour, false)
	step(time.Hour, false)
	if _, err := db.Suppressed("soft@slow.example"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("suppressed before threshold: %v", err)
	}
	step(time.Hour, true) // third within 24h
	s, err := db.Suppressed("soft@slow.example")
	tcheck(t, err, "suppressed")
	if !strings.Contains(s.Reason, "3 events") {
		t.Fatalf("reason %q", s.Reason)
	}

	// Removing the suppression resets the counter: one more soft bounce
	// does not suppress again at once.
	tcheck(t, db.RemoveSuppression("soft@slow.example"), "remove")
	step(time.Hour, false)
	step(time.Hour, false)
	step(time.Hour, true)
}

func TestAddRemoveSuppression(t *testing.T) {
	t.Parallel()
	clock := newClock()
	db, _ := mustOpen(t, Options{Now: clock.Now})
	tcheck(t, db.AddSuppression(store.Suppression{Address: "b@X.example", Reason: "operator"}), "add")
	tcheck(t, db.AddSuppression(store.Suppression{Address: "a@x.example", Reason: "operator", Source: "import"}), "add")
	tcheck(t, db.AddSuppression(store.Suppression{Address: "c@y.example", Reason: "operator"}), "add")
	if err := db.AddSuppression(store.Suppression{Address: "b@x.example", Reason: "again"}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second add: got %v, want ErrExists", err)
	}
	for _, bad := range []string{"", "no-at-sign", strings.Repeat("x", 400) + "@x.example"} {
		if err := db.AddSuppression(store.Suppression{Address: bad}); err == nil {
			t.Fatalf("invalid address %q accepted", bad)
		}
	}
	s, err := db.Suppressed("b@x.example")
	tcheck(t, err, "suppressed")
	if s.Reason != "operator" || s.Source != "manual" || !s.Created.Equal(clock.Now()) {
		t.Fatalf("entry: %+v", s)
	}
	var got []string
	collect := func(s store.Suppression) error { got = append(got, s.Address); return nil }
	tcheck(t, db.Suppressions("X.EXAMPLE", collect), "list")
	if !slices.Equal(got, []string{"a@x.example", "b@x.example"}) {
		t.Fatalf("domain list: %v", got)
	}
	got = nil
	tcheck(t, db.Suppressions("", collect), "list")
	if !slices.Equal(got, []string{"a@x.example", "b@x.example", "c@y.example"}) {
		t.Fatalf("full list: %v", got)
	}
	if err := db.RemoveSuppression("B@x.example"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("local part is case-sensitive: got %v, want ErrNotFound", err)
	}
	tcheck(t, db.RemoveSuppression("b@X.EXAMPLE"), "remove")
	got = nil
	tcheck(t, db.Suppressions("x.example", collect), "list")
	if len(got) != 1 {
		t.Fatalf("after remove: %v", got)
	}
	if err := db.RemoveSuppression("b@x.example"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("remove again: got %v", err)
	}
	if _, err := db.Suppressed("b@x.example"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("suppressed after remove: got %v", err)
	}
	tcheck(t, db.Check(), "check")
}
