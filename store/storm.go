package store

// Storm guard. When many distinct addresses of one recipient domain get
// the same status within a short window, the cause is more likely an
// outage (the provider's DNS, our own IP on a block list) than dead
// mailboxes. New suppressions of the domain are then held back instead of
// written, the domain is flagged, and the operator releases or drops
// them; a storm nobody acted on ends by itself after HoldFor, its holds
// are dropped, and the next bounce of each address is judged afresh.
//
// Anyone can send a report, and a report's Remote-MTA and Reporting-MTA
// are free text. So the remote and reporting MTAs count towards a storm
// only in reports that come from one of the operator's trusted relays
// (Envelope.Relay); from any other client only the recipient domain
// counts, so forged reports can hold the suppressions of the domain they
// name, for HoldFor at most, and of no other.

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// MaxStormThreshold is the largest StormOptions.Threshold.
const MaxStormThreshold = 10_000

// StormOptions configure the storm guard. A zero Threshold switches it
// off.
type StormOptions struct {
	// Threshold is the number of distinct addresses with the same status
	// within Window that may be suppressed; the next one starts a storm.
	Threshold int
	// Window is how far back addresses count (default 1h).
	Window time.Duration
	// HoldFor is how long a storm lasts unless the operator ends it
	// (default DefaultStormHoldFor); then its holds are dropped.
	HoldFor time.Duration
}

// DefaultStormHoldFor is how long a storm lasts when StormOptions.HoldFor
// is 0.
const DefaultStormHoldFor = 24 * time.Hour

// HoldForOrDefault is o.HoldFor with its default.
func (o StormOptions) HoldForOrDefault() time.Duration {
	if o.HoldFor <= 0 {
		return DefaultStormHoldFor
	}
	return o.HoldFor
}

// Expired reports whether storm st has lasted HoldFor at now.
func (o StormOptions) Expired(st *Storm, now time.Time) bool {
	return !now.Before(st.Since.Add(o.HoldForOrDefault()))
}

// WindowOrDefault is o.Window with its default.
func (o StormOptions) WindowOrDefault() time.Duration {
	if o.Window <= 0 {
		return time.Hour
	}
	return o.Window
}

// Storm flags a domain whose new suppressions are held.
type Storm struct {
	Domain string `json:"domain"`
	// Key is what crossed the threshold: "domain:D", "remote-mta:M" or
	// "reporting-mta:M".
	Key    string    `json:"key"`
	Status string    `json:"status"`
	Since  time.Time `json:"since"`
	Count  int       `json:"count"` // distinct addresses within the window when it started
	Held   int       `json:"held"`  // suppressions held since
}

// Hold is a suppression held back by the storm guard.
type Hold struct {
	Address  string    `json:"address"`
	Domain   string    `json:"domain"`
	Status   string    `json:"status"`
	Reason   string    `json:"reason"`
	RecordID string    `json:"record_id"`
	Key      string    `json:"key"` // the storm key of the domain's flag
	Created  time.Time `json:"created"`
}

// StormSet is the recent distinct addresses of one storm counter. It
// keeps at most Threshold+1 addresses, the most recent, which is all the
// decision needs.
type StormSet struct {
	Addrs []string `json:"a"`
	Times []int64  `json:"t"` // Unix nanoseconds of the last event of each address, ascending
}

// Add records addr at now, drops addresses older than the window and
// beyond what the threshold needs, and returns how many remain. An
// address already in the set only has its time refreshed, so a report
// delivered twice counts once. A damaged set starts over.
func (s *StormSet) Add(addr string, now time.Time, o StormOptions) int {
	if len(s.Addrs) != len(s.Times) {
		*s = StormSet{}
	}
	s.Addrs, s.Times = slices.Clone(s.Addrs), slices.Clone(s.Times)
	if i := slices.Index(s.Addrs, addr); i >= 0 {
		s.Addrs = slices.Delete(s.Addrs, i, i+1)
		s.Times = slices.Delete(s.Times, i, i+1)
	}
	s.Addrs = append(s.Addrs, addr)
	s.Times = append(s.Times, now.UnixNano())
	cut := now.Add(-o.WindowOrDefault()).UnixNano()
	i := 0
	for i < len(s.Times) && s.Times[i] < cut {
		i++
	}
	keep := min(o.Threshold, MaxStormThreshold) + 1
	i = max(i, len(s.Addrs)-keep)
	s.Addrs, s.Times = s.Addrs[i:], s.Times[i:]
	return len(s.Addrs)
}

// Stale reports whether the newest address of s is older than the window
// at now, so that the counter can be deleted.
func (s *StormSet) Stale(now time.Time, o StormOptions) bool {
	return len(s.Times) == 0 || s.Times[len(s.Times)-1] < now.Add(-o.WindowOrDefault()).UnixNano()
}

// StormKey is one thing addresses are counted by.
type StormKey struct {
	Kind  byte // 'd' domain, 'r' remote MTA, 'g' reporting MTA
	Value string
}

// String is the key as Storm.Key shows it.
func (k StormKey) String() string {
	switch k.Kind {
	case 'r':
		return "remote-mta:" + k.Value
	case 'g':
		return "reporting-mta:" + k.Value
	}
	return "domain:" + k.Value
}

// ParseStormKey undoes StormKey.String.
func ParseStormKey(s string) (StormKey, bool) {
	for _, p := range []struct {
		kind   byte
		prefix string
	}{{'d', "domain:"}, {'r', "remote-mta:"}, {'g', "reporting-mta:"}} {
		if v, ok := strings.CutPrefix(s, p.prefix); ok {
			return StormKey{p.kind, v}, true
		}
	}
	return StormKey{}, false
}

// StormCounter names one storm set: what it counts by and the status.
type StormCounter struct {
	Key    StormKey
	Status string
}

// StormKeys lists what rec counts towards: its domain, and the MTAs its
// report names when a trusted relay delivered it.
func StormKeys(rec *Record) []StormKey {
	keys := []StormKey{{'d', rec.Domain}}
	if !rec.Envelope.Relay {
		return keys
	}
	if m := NormMTA(rec.RemoteMTA); m != "" {
		keys = append(keys, StormKey{'r', m})
	}
	if m := NormMTA(rec.ReportingMTA); m != "" {
		keys = append(keys, StormKey{'g', m})
	}
	return keys
}

// MaxMTALen is the longest MTA name kept in an aggregate or storm key.
const MaxMTALen = 255

// NormMTA is an MTA name as aggregates and storm keys keep it: trimmed,
// lower case, at most MaxMTALen bytes.
func NormMTA(m string) string {
	m = strings.ToLower(strings.TrimSpace(m))
	if len(m) > MaxMTALen {
		m = m[:MaxMTALen]
	}
	return m
}

// stormGuard runs after the policy for rec: if it has just suppressed
// rec.Addr and rec's domain is in a storm, or this suppression starts one,
// the suppression is turned into a hold.
func (p *planner) stormGuard(rec *Record) error {
	o := p.rules.Storm
	if o.Threshold <= 0 || !rec.Suppressed || rec.Domain == "" || rec.Status == "" {
		return nil
	}
	st, err := p.stormFlag(rec.Domain)
	if err != nil {
		return err
	}
	if st != nil && o.Expired(st, p.now) {
		st = nil // judged afresh; Prune drops the old holds
	}
	if st == nil {
		if st, err = p.countStorm(rec); err != nil || st == nil {
			return err
		}
	}
	added, err := p.hold(rec, st.Key)
	if err != nil {
		return err
	}
	if added {
		st.Held++
	}
	p.putStormFlag(*st)
	return nil
}

// countStorm adds rec.Addr to the sets of its domain, remote MTA and
// reporting MTA with its status, and returns a new Storm if one of them
// now holds more than Threshold addresses.
func (p *planner) countStorm(rec *Record) (*Storm, error) {
	var found *Storm
	for _, k := range StormKeys(rec) {
		c := StormCounter{Key: k, Status: rec.Status}
		s, err := p.stormSet(c)
		if err != nil {
			return nil, err
		}
		n := s.Add(rec.Addr, p.now, p.rules.Storm)
		p.putStormSet(c, s)
		if n > p.rules.Storm.Threshold && found == nil {
			found = &Storm{Domain: rec.Domain, Key: k.String(), Status: rec.Status, Since: p.now, Count: n}
			p.ch.NewStorms = append(p.ch.NewStorms, *found)
		}
	}
	return found, nil
}

// hold turns the suppression just added for rec into a hold, and reports
// whether the hold is new (the first hold of an address is kept).
func (p *planner) hold(rec *Record, key string) (bool, error) {
	var sup Suppression
	for i, s := range p.ch.Suppressions {
		if s.Address == rec.Addr {
			sup = s
			p.ch.Suppressions = append(p.ch.Suppressions[:i], p.ch.Suppressions[i+1:]...)
			break
		}
	}
	rec.Suppressed, rec.Verdict = false, ActionHeld
	for _, h := range p.ch.Holds {
		if h.Domain == rec.Domain && h.Address == rec.Addr {
			return false, nil
		}
	}
	held, err := p.st.Held(rec.Domain, rec.Addr)
	if err != nil || held {
		return false, err
	}
	p.ch.Holds = append(p.ch.Holds, Hold{
		Address: rec.Addr, Domain: rec.Domain, Status: rec.Status, Reason: sup.Reason,
		RecordID: rec.ID, Key: key, Created: sup.Created,
	})
	return true, nil
}

func (p *planner) stormFlag(domain string) (*Storm, error) {
	for _, f := range p.ch.StormFlags {
		if f.Domain == domain {
			return &f, nil
		}
	}
	st, err := p.st.StormFlag(domain)
	if err != nil {
		return nil, fmt.Errorf("reading storm flag of %s: %w", Truncate(domain, 80), err)
	}
	return st, nil
}

func (p *planner) putStormFlag(st Storm) {
	for i := range p.ch.StormFlags {
		if p.ch.StormFlags[i].Domain == st.Domain {
			p.ch.StormFlags[i] = st
			return
		}
	}
	p.ch.StormFlags = append(p.ch.StormFlags, st)
}

func (p *planner) stormSet(c StormCounter) (StormSet, error) {
	for _, u := range p.ch.StormSets {
		if u.Counter == c {
			return u.Set, nil
		}
	}
	s, err := p.st.StormSet(c)
	if err != nil {
		return StormSet{}, fmt.Errorf("reading storm counter: %w", err)
	}
	return s, nil
}

func (p *planner) putStormSet(c StormCounter, s StormSet) {
	for i := range p.ch.StormSets {
		if p.ch.StormSets[i].Counter == c {
			p.ch.StormSets[i].Set = s
			return
		}
	}
	p.ch.StormSets = append(p.ch.StormSets, StormSetUpdate{Counter: c, Set: s})
}
