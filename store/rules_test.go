package store

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bouncer/bouncer/parse"
)

// memState is a State held in maps, applying Changes as an engine would:
// the rules are tested here without one.
type memState struct {
	seen    map[string]SeenKey
	sup     map[string]Suppression
	soft    map[string]SoftCounter
	flags   map[string]Storm
	sets    map[StormCounter]StormSet
	holds   map[string]Hold
	domains map[string]*DomainStat
	targets []OutboxTarget
	events  []OutboxEvent
	daily   map[string]int // day + " " + key
	ids     int
}

func newMemState() *memState {
	return &memState{seen: map[string]SeenKey{}, sup: map[string]Suppression{}, soft: map[string]SoftCounter{},
		flags: map[string]Storm{}, sets: map[StormCounter]StormSet{}, holds: map[string]Hold{},
		domains: map[string]*DomainStat{}, daily: map[string]int{}}
}

func (m *memState) Seen(k []byte) (string, time.Time, error) {
	s := m.seen[string(k)]
	return s.ID, s.At, nil
}
func (m *memState) Suppression(a string) (*Suppression, error) {
	if s, ok := m.sup[a]; ok {
		return &s, nil
	}
	return nil, nil
}
func (m *memState) SoftCounter(a string) (SoftCounter, error) { return m.soft[a], nil }
func (m *memState) StormFlag(d string) (*Storm, error) {
	if s, ok := m.flags[d]; ok {
		return &s, nil
	}
	return nil, nil
}
func (m *memState) StormSet(c StormCounter) (StormSet, error) { return m.sets[c], nil }
func (m *memState) Held(d, a string) (bool, error) {
	_, ok := m.holds[d+" "+a]
	return ok, nil
}
func (m *memState) DomainStat(d string) (*DomainStat, error) { return m.domains[d], nil }
func (m *memState) OutboxTargets() ([]OutboxTarget, error)   { return m.targets, nil }

func (m *memState) apply(ch *Changes) {
	for _, s := range ch.Seen {
		m.seen[string(s.Key)] = s
	}
	for _, s := range ch.Suppressions {
		m.sup[s.Address] = s
	}
	for _, u := range ch.Soft {
		m.soft[u.Addr] = u.Counter
	}
	for _, u := range ch.StormSets {
		m.sets[u.Counter] = u.Set
	}
	for _, f := range ch.StormFlags {
		m.flags[f.Domain] = f
	}
	for _, h := range ch.Holds {
		m.holds[h.Domain+" "+h.Address] = h
	}
	for _, u := range ch.Domains {
		m.domains[u.Stat.Domain] = u.Stat
	}
	m.events = append(m.events, ch.Events...)
	for _, d := range ch.Daily {
		m.daily[d.Day+" "+d.Key] += d.N
	}
}

// save plans d at now and applies the result.
func (m *memState) save(t *testing.T, r *Rules, d *Delivery, now time.Time) *Changes {
	t.Helper()
	body := BodyHash(d.Raw)
	m.ids++
	msg := fmt.Sprintf("m%d", m.ids)
	ch, err := r.Plan(m, d, &body, now, msg, func() string { m.ids++; return fmt.Sprintf("r%d", m.ids) })
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	m.apply(ch)
	return ch
}

// bounce is a delivery of a DSN about rcpt with status, decoded by the
// real parser. The Arrival-Date names the attempt, so the same call
// twice is the same report.
func bounce(t *testing.T, rcpt, status, arrival string) *Delivery {
	t.Helper()
	dom := rcpt[strings.IndexByte(rcpt, '@')+1:]
	raw := "From: MAILER-DAEMON@mta.example\r\nTo: bounces@bounce.example.org\r\nSubject: failure\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n" +
		"Reporting-MTA: dns; mta.example\r\nArrival-Date: " + arrival + "\r\n\r\n" +
		"Final-Recipient: rfc822; " + rcpt + "\r\nAction: failed\r\nStatus: " + status + "\r\n" +
		"Remote-MTA: dns; mx." + dom + "\r\nDiagnostic-Code: smtp; " + status + " failed\r\n\r\n--b--\r\n"
	rep, err := parse.Message(strings.NewReader(raw), parse.Limits{})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return &Delivery{Raw: []byte(raw), Report: rep, Envelope: Envelope{MailFrom: "", RcptTo: []string{"bounces@bounce.example.org"}}}
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestPlanSuppressOnceAndDuplicate(t *testing.T) {
	m := newMemState()
	m.targets = []OutboxTarget{{Name: "hook", Events: []string{EventHard}}}
	r := &Rules{}
	ch := m.save(t, r, bounce(t, "a@dead.example", "5.4.3", "Mon, 1 Jan 2026 00:00:00 +0000"), t0)
	rec := ch.Records[0]
	if !rec.Suppressed || rec.Verdict != ActionSuppress || len(ch.Suppressions) != 1 || len(ch.Events) != 1 {
		t.Fatalf("first 5.4.3: suppressed %v verdict %q, %d suppressions, %d events", rec.Suppressed, rec.Verdict, len(ch.Suppressions), len(ch.Events))
	}
	if ch.Events[0].ID != rec.ID+".hook" || ch.Events[0].Type != EventHard {
		t.Fatalf("event %+v", ch.Events[0])
	}
	// The same report again is a duplicate of the first record: nothing else.
	ch = m.save(t, r, bounce(t, "a@dead.example", "5.4.3", "Mon, 1 Jan 2026 00:00:00 +0000"), t0.Add(time.Minute))
	if d := ch.Records[0]; !d.Duplicate || d.DuplicateOf != rec.ID || len(ch.Suppressions)+len(ch.Events)+len(ch.Domains) != 0 {
		t.Fatalf("duplicate: %+v, changes %+v", d, ch)
	}
	// Another report about the address: recorded, not suppressed again.
	ch = m.save(t, r, bounce(t, "a@dead.example", "5.4.3", "Tue, 2 Jan 2026 00:00:00 +0000"), t0.Add(2*time.Minute))
	if ch.Records[0].Suppressed || len(ch.Suppressions) != 0 {
		t.Fatalf("second report suppressed again: %+v", ch.Suppressions)
	}
	if st := m.domains["dead.example"]; st.Total != 2 || st.Counts["5.4.3"] != 2 {
		t.Fatalf("aggregate %+v", st)
	}
	if day := DayOf(t0); m.daily[day+" hard"] != 2 || m.daily[day+" suppressed"] != 1 {
		t.Fatalf("daily counters %v (the duplicate must not count)", m.daily)
	}
	// Past the dedupe window the first report counts as new.
	ch = m.save(t, r, bounce(t, "a@dead.example", "5.4.3", "Mon, 1 Jan 2026 00:00:00 +0000"), t0.Add(DefaultDedupeWindow+time.Hour))
	if ch.Records[0].Duplicate {
		t.Fatal("duplicate after the dedupe window")
	}
}

func TestPlanMismatchChangesNothing(t *testing.T) {
	m := newMemState()
	d := bounce(t, "a@dead.example", "5.4.3", "Mon, 1 Jan 2026 00:00:00 +0000")
	d.Envelope.VERP = "victim@example.com"
	ch := m.save(t, &Rules{}, d, t0)
	if rec := ch.Records[0]; rec.Verdict != ActionMismatch || rec.Mismatch == "" || rec.Suppressed {
		t.Fatalf("mismatch record %+v", rec)
	}
	if len(ch.Suppressions)+len(ch.Domains)+len(ch.Events) != 0 {
		t.Fatalf("mismatch changed the state: %+v", ch)
	}
}

func TestPlanSoftCountDecays(t *testing.T) {
	m := newMemState()
	r := &Rules{Decide: func(*Record) Decision {
		return Decision{Action: ActionCount, Threshold: 3, Window: 24 * time.Hour, Rule: "soft"}
	}}
	day := func(i int) string { return fmt.Sprintf("Mon, %d Jan 2026 00:00:00 +0000", i+1) }
	var got []bool
	// Two events, a gap longer than the window, then three within it.
	for i, at := range []time.Duration{0, time.Hour, 50 * time.Hour, 51 * time.Hour, 52 * time.Hour} {
		ch := m.save(t, r, bounce(t, "b@full.example", "4.2.2", day(i)), t0.Add(at))
		got = append(got, ch.Records[0].Suppressed)
	}
	want := []bool{false, false, false, false, true}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("suppressed per event %v, want %v", got, want)
	}
}

func TestPlanStormHolds(t *testing.T) {
	m := newMemState()
	r := &Rules{Storm: StormOptions{Threshold: 3, Window: time.Hour}}
	var verdicts []string
	for i := range 6 {
		ch := m.save(t, r, bounce(t, fmt.Sprintf("u%d@isp.example", i), "5.4.3", "Mon, 1 Jan 2026 00:00:00 +0000"), t0.Add(time.Duration(i)*time.Second))
		verdicts = append(verdicts, ch.Records[0].Verdict)
	}
	want := "[suppress suppress suppress held held held]"
	if fmt.Sprint(verdicts) != want {
		t.Fatalf("verdicts %v, want %s", verdicts, want)
	}
	if len(m.sup) != 3 || len(m.holds) != 3 || m.flags["isp.example"].Held != 3 {
		t.Fatalf("%d suppressions, %d holds, flag %+v", len(m.sup), len(m.holds), m.flags["isp.example"])
	}
	if _, ok := m.sup["u3@isp.example"]; ok {
		t.Fatal("held address is on the suppression list")
	}
	day := DayOf(t0)
	if m.daily[day+" hard"] != 6 || m.daily[day+" suppressed"] != 3 || m.daily[day+" held"] != 3 || len(m.daily) != 3 {
		t.Fatalf("daily counters %v", m.daily)
	}
}

func TestPlanTwoRecipientsOneAddress(t *testing.T) {
	// A report naming one address twice: the second record sees the
	// first's suppression and dedupe key within the same Plan.
	m := newMemState()
	d := bounce(t, "a@dead.example", "5.4.3", "Mon, 1 Jan 2026 00:00:00 +0000")
	d.Report.Recipients = append(d.Report.Recipients, d.Report.Recipients[0])
	ch := m.save(t, &Rules{}, d, t0)
	if len(ch.Records) != 2 || !ch.Records[1].Duplicate || len(ch.Suppressions) != 1 || len(ch.Domains) != 1 || ch.Domains[0].Stat.Total != 1 {
		t.Fatalf("records %+v, suppressions %d, domains %+v", ch.Records, len(ch.Suppressions), ch.Domains)
	}
}

func TestDomainStatCapsStatuses(t *testing.T) {
	var st DomainStat
	for i := range MaxDomainStatuses + 5 {
		st.Count(&Record{Recipient: parse.Recipient{Status: fmt.Sprintf("5.%d.%d", i/10, i%10), Kind: parse.KindBounce}})
	}
	if len(st.Counts) != MaxDomainStatuses+1 || st.Counts["other"] != 5 || st.Total != MaxDomainStatuses+5 {
		t.Fatalf("%d statuses, other %d, total %d", len(st.Counts), st.Counts["other"], st.Total)
	}
}

// TestReasonSaysEachThingOnce: a suppression's reason names the rule only
// when the operator named it, and writes a decay window as the config does.
func TestReasonSaysEachThingOnce(t *testing.T) {
	rec := &Record{Recipient: parse.Recipient{Kind: parse.KindBounce, Class: parse.ClassHard, Status: "5.4.3",
		Reason: parse.ReasonRouting}}
	for _, c := range []struct {
		d    Decision
		want string
	}{
		{Decision{Action: ActionSuppress, Rule: "5.4.3 bounce suppress"}, "bounce hard 5.4.3 (routing_failure)"},
		{Decision{Action: ActionSuppress, Rule: "dead-route", Named: true}, "bounce hard 5.4.3 (routing_failure) rule dead-route"},
	} {
		if got := describe(rec, c.d); got != c.want {
			t.Errorf("describe(%+v) = %q, want %q", c.d, got, c.want)
		}
	}
	for w, want := range map[time.Duration]string{
		14 * 24 * time.Hour: "3 events within 14d, last: bounce hard 5.4.3 (routing_failure)",
		36 * time.Hour:      "3 events within 36h, last: bounce hard 5.4.3 (routing_failure)",
		90 * time.Minute:    "3 events within 1h30m, last: bounce hard 5.4.3 (routing_failure)",
		10 * time.Second:    "3 events within 10s, last: bounce hard 5.4.3 (routing_failure)",
		0:                   "3 events, last: bounce hard 5.4.3 (routing_failure)",
	} {
		d := Decision{Action: ActionCount, Threshold: 3, Window: w, Rule: "5.4.* bounce count 3/14d"}
		if got := countReason(3, rec, d); got != want {
			t.Errorf("window %v: %q, want %q", w, got, want)
		}
	}
}
