package store

import (
	"crypto/sha256"
	"fmt"
	"strings"
	"time"
)

// State is what the rules read of the stored state: an engine answers
// from its open write transaction, which already holds the changes of
// the deliveries applied before in it. Absent entries are nil (or zero)
// with a nil error; an error fails the delivery.
type State interface {
	// Seen returns the ID of the record first stored with dedupe key k
	// and when it was stored, or "" if the key is unknown.
	Seen(k []byte) (id string, at time.Time, err error)
	// Suppression returns the suppression of addr.
	Suppression(addr string) (*Suppression, error)
	// SoftCounter returns the soft counter of addr.
	SoftCounter(addr string) (SoftCounter, error)
	// StormFlag returns the storm flag of domain.
	StormFlag(domain string) (*Storm, error)
	// StormSet returns the addresses counted under c.
	StormSet(c StormCounter) (StormSet, error)
	// Held reports whether addr has a hold in domain.
	Held(domain, addr string) (bool, error)
	// DomainStat returns the aggregate of domain; the rules change a copy.
	DomainStat(domain string) (*DomainStat, error)
	// OutboxTargets returns the push targets, by name.
	OutboxTargets() ([]OutboxTarget, error)
}

// Changes is what one delivery does to the state, decided by Rules.Plan.
// The engine applies all of it in the transaction it read State from.
// Each list holds final values, one per key.
type Changes struct {
	Records      []Record      // one per recipient, IDs set, in order
	Seen         []SeenKey     // dedupe keys first seen now
	Suppressions []Suppression // new entries of the suppression list
	Soft         []SoftUpdate  // soft counters, whole
	StormSets    []StormSetUpdate
	StormFlags   []Storm // flags, whole (new or with Held counted up)
	NewStorms    []Storm // storms this delivery started (to log and count)
	Holds        []Hold  // new holds
	Domains      []DomainUpdate
	Events       []OutboxEvent // new outbox events, Seq 0: the engine numbers them; Held ones go to the dead-letter list
	Daily        []DayCount    // what to add to the daily counters
}

// SeenKey is a dedupe key and the record first stored with it.
type SeenKey struct {
	Key []byte
	ID  string
	At  time.Time
}

// SoftUpdate is the new soft counter of an address.
type SoftUpdate struct {
	Addr    string
	Counter SoftCounter
}

// StormSetUpdate is the new content of a storm counter.
type StormSetUpdate struct {
	Counter StormCounter
	Set     StormSet
}

// DomainUpdate is the new aggregate of a domain.
type DomainUpdate struct {
	Stat *DomainStat
	// NewStatuses are the status keys that the aggregate counts for the
	// first time (engines index domains by status).
	NewStatuses []string
	// GoneStatuses are the status keys that no longer count anything
	// (reclassification only): their index entries go.
	GoneStatuses []string
}

// Rules decide what a delivery does. The zero value applies
// DefaultDecide, no storm guard and DefaultDedupeWindow.
type Rules struct {
	// Decide gives the policy verdict for a record; DefaultDecide if nil.
	Decide func(*Record) Decision
	// Storm configures the storm guard; a zero Threshold switches it off.
	Storm StormOptions
	// DedupeWindow is how long a stored report is remembered (default
	// DefaultDedupeWindow).
	DedupeWindow time.Duration
}

// DedupeWindowOrDefault is r.DedupeWindow with its default.
func (r *Rules) DedupeWindowOrDefault() time.Duration {
	if r.DedupeWindow <= 0 {
		return DefaultDedupeWindow
	}
	return r.DedupeWindow
}

// Plan decides what delivery d, stored at now, does to the state st: its
// records (with msgID as MsgID and an ID from newID each), dedupe keys,
// verdicts, suppressions, soft counters, storm counters, flags and holds,
// domain aggregates and outbox events. body is BodyHash(d.Raw). Plan
// writes nothing: the engine applies the result.
func (r *Rules) Plan(st State, d *Delivery, body *[sha256.Size]byte, now time.Time, msgID string, newID func() string) (*Changes, error) {
	p := &planner{rules: r, st: st, now: now, ch: &Changes{}}
	p.decide = r.Decide
	if p.decide == nil {
		p.decide = DefaultDecide
	}
	recs := BuildRecords(d, now)
	for i := range recs {
		rec := &recs[i]
		rec.ID, rec.MsgID = newID(), msgID
		if err := p.record(d, body, i, rec); err != nil {
			return nil, err
		}
	}
	p.ch.Records = recs
	return p.ch, nil
}

// planner holds one Plan's changes, and answers reads from them before
// the state, so that later recipients of a delivery see what earlier
// ones did. A delivery has a few recipients: linear searches suffice.
type planner struct {
	rules  *Rules
	decide func(*Record) Decision
	st     State
	now    time.Time
	ch     *Changes
}

// record judges the i-th record of d and adds what it does.
func (p *planner) record(d *Delivery, body *[sha256.Size]byte, i int, rec *Record) error {
	first, err := p.seen(DedupeKey(d, body, i, &rec.Recipient), rec.ID)
	if err != nil {
		return err
	}
	if first != "" {
		rec.Duplicate, rec.DuplicateOf, rec.Verdict = true, first, ActionDuplicate
		return nil
	}
	if m := crossCheck(&rec.Envelope, &rec.Recipient); m != "" {
		rec.Mismatch, rec.Verdict = m, ActionMismatch
		return nil
	}
	if err := p.policy(rec); err != nil {
		return err
	}
	if err := p.stormGuard(rec); err != nil {
		return err
	}
	if err := p.countDomain(rec); err != nil {
		return err
	}
	day := DayOf(rec.Received)
	p.countDay(day, DayClass(rec))
	switch {
	case rec.Suppressed:
		p.countDay(day, DaySuppressed)
	case rec.Verdict == ActionHeld:
		p.countDay(day, DayHeld)
	}
	targets, err := p.st.OutboxTargets()
	if err != nil {
		return err
	}
	p.ch.Events = append(p.ch.Events, events(rec, targets, d.HoldPush)...)
	return nil
}

// seen returns the first record with dedupe key k within the window, or
// records k for id and returns "".
func (p *planner) seen(k []byte, id string) (string, error) {
	for _, s := range p.ch.Seen {
		if string(s.Key) == string(k) {
			return s.ID, nil
		}
	}
	first, at, err := p.st.Seen(k)
	if err != nil {
		return "", fmt.Errorf("reading dedupe key: %w", err)
	}
	if first != "" && !at.Before(p.now.Add(-p.rules.DedupeWindowOrDefault())) {
		return first, nil
	}
	p.ch.Seen = append(p.ch.Seen, SeenKey{Key: k, ID: id, At: p.now})
	return "", nil
}

// policy runs the verdict for rec: it sets rec.Verdict, rec.Rule and
// rec.Suppressed and adds the suppression or soft counter.
func (p *planner) policy(rec *Record) error {
	d := p.decide(rec)
	rec.Verdict, rec.Rule = d.Action, d.Rule
	if len(rec.Addr) > MaxAddrLen || !strings.Contains(rec.Addr, "@") {
		return nil
	}
	switch d.Action {
	case ActionSuppress:
		return p.suppressOnce(rec, describe(rec, d))
	case ActionCount:
		c, err := p.softCounter(rec.Addr)
		if err != nil {
			return err
		}
		n := c.Add(rec.Received, d)
		p.putSoft(rec.Addr, c)
		if n < max(d.Threshold, 1) {
			return nil
		}
		return p.suppressOnce(rec, countReason(n, rec, d))
	}
	return nil
}

// suppressOnce puts rec.Addr on the list unless it is already there; the
// first entry is kept.
func (p *planner) suppressOnce(rec *Record, reason string) error {
	if s, err := p.suppression(rec.Addr); err != nil || s != nil {
		return err
	}
	p.ch.Suppressions = append(p.ch.Suppressions, Suppression{
		Address: rec.Addr, Reason: reason, Status: rec.Status, RecordID: rec.ID,
		Created: p.now, Source: "policy",
	})
	rec.Suppressed = true
	return nil
}

func (p *planner) suppression(addr string) (*Suppression, error) {
	for i := range p.ch.Suppressions {
		if p.ch.Suppressions[i].Address == addr {
			return &p.ch.Suppressions[i], nil
		}
	}
	s, err := p.st.Suppression(addr)
	if err != nil {
		return nil, fmt.Errorf("reading suppression of %s: %w", Truncate(addr, 80), err)
	}
	return s, nil
}

func (p *planner) softCounter(addr string) (SoftCounter, error) {
	for _, u := range p.ch.Soft {
		if u.Addr == addr {
			return u.Counter, nil
		}
	}
	c, err := p.st.SoftCounter(addr)
	if err != nil {
		return SoftCounter{}, fmt.Errorf("reading soft counter of %s: %w", Truncate(addr, 80), err)
	}
	return c, nil
}

func (p *planner) putSoft(addr string, c SoftCounter) {
	for i := range p.ch.Soft {
		if p.ch.Soft[i].Addr == addr {
			p.ch.Soft[i].Counter = c
			return
		}
	}
	p.ch.Soft = append(p.ch.Soft, SoftUpdate{Addr: addr, Counter: c})
}
