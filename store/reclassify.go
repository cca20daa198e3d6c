package store

// Reclassification: the stored raw message of a record is decoded again
// by the current decoder (after an upgrade) and its records are judged
// again. What that changes is decided here, as pure code over State, so
// that both engines do the same and a second run changes nothing:
//
//   - the records of the message are matched to the recipients of the
//     new decoding by address first, then the rest in order (an undecoded
//     message's one record without address takes the first recipient
//     found now); a record left over is kept as it is (Gone), a recipient
//     left over is reported and not stored (Extra);
//   - a duplicate stays a duplicate, a held record keeps its verdict (the
//     storm guard's release or drop decides it) and neither counts
//     anything; the others are cross-checked and judged by the policy;
//   - a suppression is added when the new verdict suppresses and the
//     record did not already, unless the address is on the list (a
//     record that did suppress never adds its entry again, even if it
//     was removed by hand);
//   - a soft event is counted when the new verdict counts and the old one
//     did not count for the same address; an event the old verdict
//     counted and the new one does not is taken out of the counter;
//   - a suppression the record made (the entry names it) that the new
//     verdict would not make is reported (Stale) at each run, and lifted
//     only with ReclassOptions.Lift; the record's Suppressed mark goes;
//   - an outbox event goes to each target that the new record tells more
//     than the old one did: a first event, a suppression, or a graver
//     type (soft → hard); a record that turns milder sends nothing;
//   - a record's domain aggregate and daily counter move with it when its
//     domain, status, kind or class change (the old values uncounted on
//     the record's day, the new counted; first and last seen and the MTA
//     sets stay); a suppression added counts on today's "suppressed".

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/bouncer/bouncer/parse"
)

// Reclassifier is what `bouncer reclassify` needs of an engine beyond
// Store: both engines have it.
type Reclassifier interface {
	// Reclassify decodes the raw messages msgIDs (at most
	// MaxReclassBatch) again with decode, outside any transaction, then
	// applies what Rules.Reclassify decides for the records of each, in
	// order, in one transaction (nothing with opts.DryRun). A message
	// whose raw message or records cannot be found gets its Err
	// (ErrNotFound, with ErrRawPruned when the retention deleted the
	// raw); any other error fails the whole batch.
	Reclassify(ctx context.Context, msgIDs []string, decode Decoder, opts ReclassOptions) ([]ReclassResult, error)
}

// MaxReclassBatch is the most messages one Reclassify call takes: a
// transaction per batch, not per message, and a bounded one.
const MaxReclassBatch = 100

// ReclassResult is the outcome of one message of a Reclassify batch.
type ReclassResult struct {
	MsgID   string
	Reclass *Reclass // nil with Err
	Err     error
}

// Decoded is a stored message decoded again.
type Decoded struct {
	MsgID      string
	Report     *parse.Report
	ParseError string
	Err        error // the raw message could not be found
}

// DecodeStored reads the raw message of each of msgIDs with raw and
// decodes it with decode, keeping only the reports. A message whose raw
// is not found gets that error in Err; any other error is returned.
func DecodeStored(ctx context.Context, msgIDs []string, raw func(msgID string) ([]byte, error), decode Decoder) ([]Decoded, error) {
	if len(msgIDs) > MaxReclassBatch {
		return nil, fmt.Errorf("reclassifying: %w: %d messages in one batch, at most %d", ErrInvalid, len(msgIDs), MaxReclassBatch)
	}
	out := make([]Decoded, len(msgIDs))
	for i, id := range msgIDs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		out[i].MsgID = id
		b, err := raw(id)
		if errors.Is(err, ErrNotFound) {
			out[i].Err = err
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading raw message %s: %w", id, err)
		}
		rep, derr := decode(b)
		if derr != nil {
			rep, out[i].ParseError = nil, derr.Error()
		}
		out[i].Report = rep
	}
	return out, nil
}

// Decoder decodes a raw message, as parse.Message does: the report, or
// an error for a message it could not decode.
type Decoder func(raw []byte) (*parse.Report, error)

// ReclassOptions says what a reclassification may do beyond updating
// records.
type ReclassOptions struct {
	// DryRun decides without writing anything.
	DryRun bool
	// Lift takes off the list the suppressions that a record made and
	// that its new verdict would not make.
	Lift bool
}

// RecordChange is what reclassification does to one stored record.
type RecordChange struct {
	Old, New   Record
	Suppressed bool // New puts its address on the suppression list now
	Counted    bool // a soft event was added for New
	Uncounted  bool // the soft event of Old was taken out of its counter
	Stale      bool // Old made a suppression that New would not make
	Lifted     bool // ... and it is lifted (ReclassOptions.Lift)
	Events     int  // outbox events queued
}

// Reclass is what decoding one stored message again does: the records
// that change, and the state to write for them.
type Reclass struct {
	MsgID     string
	Changed   []RecordChange // records that change, or whose suppression is stale
	Unchanged int            // records the new decoding leaves as they are
	Gone      []Record       // records whose recipient is no longer decoded; kept
	Extra     []Record       // recipients decoded now that have no record; not stored

	Suppressions []Suppression // new entries of the list
	Lift         []string      // addresses to take off the list
	Soft         []SoftUpdate  // soft counters, whole
	Events       []OutboxEvent // Seq 0: the engine numbers them
	Domains      []DomainUpdate
	Daily        []DayCount // N may be negative
}

// Rewrites reports whether c changes the stored record (a change that
// only reports a stale suppression does not).
func (c *RecordChange) Rewrites() bool { return !sameRecord(&c.Old, &c.New) }

// Writes reports whether r has anything for the engine to write.
func (r *Reclass) Writes() bool {
	for i := range r.Changed {
		if r.Changed[i].Rewrites() {
			return true
		}
	}
	return len(r.Suppressions)+len(r.Lift)+len(r.Soft)+len(r.Events)+len(r.Domains)+len(r.Daily) > 0
}

// Reclassify judges again the stored records old of one message (in
// stored order, at least one), whose raw message the current decoder now
// decodes into rep (nil, with parseErr, if it failed), at now, reading st.
// It writes nothing: the engine applies the result in the transaction it
// read st from.
func (r *Rules) Reclassify(st State, old []Record, rep *parse.Report, parseErr string, now time.Time, opts ReclassOptions) (*Reclass, error) {
	if len(old) == 0 {
		return nil, fmt.Errorf("reclassifying: %w: no record", ErrInvalid)
	}
	d := &Delivery{Received: old[0].Received, Envelope: old[0].Envelope, Report: rep, ParseError: parseErr}
	fresh := BuildRecords(d, now)
	pairs, gone, extra := matchRecords(old, fresh)
	p := &planner{rules: r, st: st, now: now, ch: &Changes{}}
	p.decide = r.Decide
	if p.decide == nil {
		p.decide = DefaultDecide
	}
	out := &Reclass{MsgID: old[0].MsgID}
	for _, i := range gone {
		out.Gone = append(out.Gone, old[i])
	}
	for _, j := range extra {
		out.Extra = append(out.Extra, fresh[j])
	}
	targets, err := st.OutboxTargets()
	if err != nil {
		return nil, err
	}
	for _, pr := range pairs {
		c, err := p.rejudge(&old[pr[0]], fresh[pr[1]], targets, opts, &out.Lift)
		if err != nil {
			return nil, err
		}
		if !c.Stale && sameRecord(&c.Old, &c.New) {
			out.Unchanged++
			continue
		}
		out.Changed = append(out.Changed, *c)
	}
	if n := len(p.ch.Suppressions); n > 0 {
		p.ch.Daily = append(p.ch.Daily, DayCount{Day: DayOf(now), Key: DaySuppressed, N: n})
	}
	out.Suppressions, out.Soft, out.Events = p.ch.Suppressions, p.ch.Soft, p.ch.Events
	out.Domains, out.Daily = p.ch.Domains, p.ch.Daily
	return out, nil
}

// matchRecords pairs the stored records old with the freshly built
// records fresh: same address first, then what is left of each in order.
// It returns the pairs (old index, fresh index) in the order of old, and
// the indexes left over on either side.
func matchRecords(old, fresh []Record) (pairs [][2]int, gone, extra []int) {
	usedO, usedF := make([]bool, len(old)), make([]bool, len(fresh))
	byAddr := map[string][]int{} // fresh indexes by address, in order
	for j := range fresh {
		byAddr[fresh[j].Addr] = append(byAddr[fresh[j].Addr], j)
	}
	for i := range old {
		if js := byAddr[old[i].Addr]; len(js) > 0 {
			pairs = append(pairs, [2]int{i, js[0]})
			usedO[i], usedF[js[0]] = true, true
			byAddr[old[i].Addr] = js[1:]
		}
	}
	j := 0
	for i := range old {
		if usedO[i] {
			continue
		}
		for j < len(fresh) && usedF[j] {
			j++
		}
		if j == len(fresh) {
			gone = append(gone, i)
			continue
		}
		pairs = append(pairs, [2]int{i, j})
		usedO[i], usedF[j] = true, true
	}
	for j := range fresh {
		if !usedF[j] {
			extra = append(extra, j)
		}
	}
	slices.SortFunc(pairs, func(a, b [2]int) int { return a[0] - b[0] })
	return pairs, gone, extra
}

// rejudge decides the new form of the stored record o, newly decoded as
// nw, and adds what it does to p's changes; lift collects the addresses
// to take off the list.
func (p *planner) rejudge(o *Record, nw Record, targets []OutboxTarget, opts ReclassOptions, lift *[]string) (*RecordChange, error) {
	nw.ID, nw.MsgID = o.ID, o.MsgID
	c := &RecordChange{Old: *o}
	keyOK := func(addr string) bool { return len(addr) <= MaxAddrLen && strings.Contains(addr, "@") }
	oldCounted := o.Verdict == ActionCount && keyOK(o.Addr)
	suppress, reason := false, ""
	switch {
	case o.Duplicate:
		// A duplicate stays one: the first record counted the report.
		nw.Duplicate, nw.DuplicateOf, nw.Verdict, nw.Rule = true, o.DuplicateOf, ActionDuplicate, o.Rule
		oldCounted = false
	case o.Verdict == ActionHeld:
		// The storm guard holds its suppression: release or drop decide.
		nw.Verdict, nw.Rule = o.Verdict, o.Rule
		oldCounted, suppress = false, false
	default:
		if m := crossCheck(&nw.Envelope, &nw.Recipient); m != "" {
			nw.Mismatch, nw.Verdict = m, ActionMismatch
			break
		}
		d := p.decide(&nw)
		nw.Verdict, nw.Rule = d.Action, d.Rule
		if !keyOK(nw.Addr) {
			break
		}
		switch d.Action {
		case ActionSuppress:
			suppress, reason = true, describe(&nw, d)
		case ActionCount:
			if oldCounted && o.Addr == nw.Addr {
				suppress = o.Suppressed // counted and decided on arrival
				oldCounted = false      // stays in the counter
				break
			}
			cnt, err := p.softCounter(nw.Addr)
			if err != nil {
				return nil, err
			}
			n := cnt.Add(nw.Received, d)
			p.putSoft(nw.Addr, cnt)
			c.Counted = true
			if n >= max(d.Threshold, 1) {
				suppress, reason = true, countReason(n, &nw, d)
			}
		}
	}
	if oldCounted {
		if err := p.uncount(o); err != nil {
			return nil, err
		}
		c.Uncounted = true
	}
	if err := p.resuppress(o, &nw, suppress, reason, opts, c, lift); err != nil {
		return nil, err
	}
	c.New = nw
	if err := p.recount(o, &nw); err != nil {
		return nil, err
	}
	if evs := newEvents(o, &nw, targets, p.now); len(evs) > 0 {
		p.ch.Events = append(p.ch.Events, evs...)
		c.Events = len(evs)
	}
	return c, nil
}

// resuppress settles nw.Suppressed and the list. A record that put its
// address on the list and still would keeps its mark and adds nothing,
// even if the entry was removed by hand since. A suppression the stored
// record made (the entry names it) that its new verdict would not make is
// stale: reported, and lifted only with opts.Lift; the record loses its
// mark either way, the entry stays the proof until lifted. A new verdict
// that suppresses adds an entry unless the address is listed.
func (p *planner) resuppress(o, nw *Record, suppress bool, reason string, opts ReclassOptions, c *RecordChange, lift *[]string) error {
	same := o.Addr == nw.Addr
	made := false
	if o.Addr != "" {
		s, err := p.suppression(o.Addr)
		if err != nil {
			return err
		}
		made = s != nil && s.RecordID == o.ID
	}
	if suppress && same && (o.Suppressed || made) {
		nw.Suppressed = true
		return nil
	}
	nw.Suppressed = false
	if made {
		c.Stale = true
		if opts.Lift && !slices.Contains(*lift, o.Addr) {
			*lift = append(*lift, o.Addr)
			c.Lifted = true
		}
	}
	if !suppress {
		return nil
	}
	if err := p.suppressOnce(nw, reason); err != nil {
		return err
	}
	c.Suppressed = nw.Suppressed
	return nil
}

// counted reports whether the aggregates and daily counters count rec:
// duplicates and mismatches are not counted.
func counted(rec *Record) bool { return !rec.Duplicate && rec.Mismatch == "" }

// recount moves the stored record o, become nw, in the domain aggregates
// and daily counters, if what they count of it changed.
func (p *planner) recount(o, nw *Record) error {
	if counted(o) == counted(nw) && DomainKey(o) == DomainKey(nw) && o.Status == nw.Status &&
		o.Kind == nw.Kind && DayClass(o) == DayClass(nw) {
		return nil
	}
	day := DayOf(o.Received)
	if counted(o) {
		if err := p.uncountDomain(o); err != nil {
			return err
		}
		p.addDay(day, DayClass(o), -1)
	}
	if counted(nw) {
		if err := p.countDomain(nw); err != nil {
			return err
		}
		p.addDay(day, DayClass(nw), 1)
	}
	return nil
}

// addDay adds n to key of day in the pending changes, dropping a pair
// that cancels out.
func (p *planner) addDay(day, key string, n int) {
	for i := range p.ch.Daily {
		if d := &p.ch.Daily[i]; d.Day == day && d.Key == key {
			if d.N += n; d.N == 0 {
				p.ch.Daily = slices.Delete(p.ch.Daily, i, i+1)
			}
			return
		}
	}
	p.ch.Daily = append(p.ch.Daily, DayCount{Day: day, Key: key, N: n})
}

// uncount takes the soft event of the stored record o out of its
// address's counter.
func (p *planner) uncount(o *Record) error {
	cnt, err := p.softCounter(o.Addr)
	if err != nil {
		return err
	}
	ts := o.Received.UnixNano()
	i, found := slices.BinarySearch(cnt.Events, ts)
	if !found {
		return nil // decayed or reset since
	}
	cnt.Events = slices.Delete(slices.Clone(cnt.Events), i, i+1)
	p.putSoft(o.Addr, cnt)
	return nil
}

// pushed lists what the targets would have been sent for rec, as
// "target type suppressed" keys: nothing for a duplicate or mismatch.
func pushed(rec *Record, targets []OutboxTarget) []OutboxEvent {
	if rec.Duplicate || rec.Mismatch != "" {
		return nil
	}
	return events(rec, targets, "")
}

// newEvents returns the events of nw that tell a target more than what
// it would have been sent for the stored record o: an event where it got
// none, a suppression it was not told of, or a graver type (soft, then
// hard or complaint; a hard bounce become a complaint or back is sent
// too). A record that turns milder sends nothing: a target cannot take
// back what it was told. Their IDs name the record, the target and what
// is new, so that a receiver dropping repeated IDs still gets them, once.
func newEvents(o, nw *Record, targets []OutboxTarget, now time.Time) []OutboxEvent {
	before := pushed(o, targets)
	var out []OutboxEvent
	for _, ev := range pushed(nw, targets) {
		i := slices.IndexFunc(before, func(b OutboxEvent) bool { return b.Target == ev.Target })
		if i >= 0 {
			b := before[i]
			graver := eventRank(ev.Type) > eventRank(b.Type) ||
				eventRank(ev.Type) == eventRank(b.Type) && ev.Type != b.Type
			if !graver && (b.Suppressed || !ev.Suppressed) {
				continue
			}
		}
		ev.ID += "." + ev.Type
		if ev.Suppressed {
			ev.ID += ".suppressed"
		}
		ev.Created = now
		out = append(out, ev)
	}
	return out
}

// eventRank orders event types by how grave they are for a sender.
func eventRank(typ string) int {
	switch typ {
	case EventSoft:
		return 1
	case EventHard, EventComplaint:
		return 2
	}
	return 0
}

// sameRecord reports whether a and b store the same.
func sameRecord(a, b *Record) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}
