// Package policy turns a stored bounce record into a suppression verdict.
//
// A Table is an ordered list of rules. Each rule matches records by their
// RFC 3463 enhanced status code (an exact code such as "5.4.3", a class
// pattern such as "5.1.*" or "4.*.*", or "*"), by their kind (bounce,
// delay, complaint, autoreply, delivered, unknown) and optionally by the
// reason parse derived from the diagnostic text (spam, blocked, ...), and
// gives an action:
//
//   - suppress: put the address on the suppression list at once;
//   - count: suppress once Threshold events fall within Window (soft
//     evidence that decays);
//   - record: keep the record, never suppress.
//
// # Which rule wins
//
// The most specific matching rule wins, compared field by field:
//
//  1. the status pattern: an exact code ("5.4.3") beats a subject class
//     ("5.4.*"), which beats a class ("5.*.*"), which beats "*" or no
//     status at all;
//  2. among equal status patterns, a rule that names a reason beats one
//     that does not (the reason is read from the server's own words, so it
//     refines the code);
//  3. then a rule that names a kind beats one that does not;
//  4. remaining ties go to the rule listed first.
//
// A record that no rule matches is recorded, never suppressed.
//
// A rule with RequireVerified only suppresses (or counts) when the record's
// address came from a valid signed VERP token; otherwise it records. This
// keeps forged bounces, which anyone can send to a bounce address, from
// suppressing real recipients.
//
// The package is pure: Compile validates, Decide is a lookup. It imports
// store only for the Record and Decision types.
package policy

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
)

// Rule is one entry of the policy table as it appears in the config file
// ([[policy.rules]]).
type Rule struct {
	// Status is an RFC 3463 enhanced status code ("5.4.3"), a subject
	// class ("5.1.*"), a class ("4.*.*") or "*". Empty means "*". "x" is
	// accepted for "*" ("5.1.x").
	Status string `toml:"status,omitempty" json:"status,omitempty"`
	// Kind is a record kind (bounce, delay, complaint, autoreply,
	// delivered, unknown) or a comma-separated list of them. Empty
	// matches every kind.
	Kind string `toml:"kind,omitempty" json:"kind,omitempty"`
	// Reason is a parse reason (user_unknown, spam, blocked, ...) or a
	// comma-separated list of them. Empty matches every reason.
	Reason string `toml:"reason,omitempty" json:"reason,omitempty"`
	// Action is suppress, count or record.
	Action string `toml:"action" json:"action"`
	// Threshold and Window are for count: the address is suppressed when
	// Threshold events fall within Window. Window is a Go duration that
	// may start with days ("14d", "1d12h").
	Threshold int    `toml:"threshold,omitempty" json:"threshold,omitempty"`
	Window    string `toml:"window,omitempty" json:"window,omitempty"`
	// RequireVerified makes suppress and count apply only to addresses
	// decoded from a valid signed VERP token; other records are recorded.
	RequireVerified bool `toml:"require_verified,omitempty" json:"require_verified,omitempty"`
	// Name labels the rule in each record's verdict; by default the
	// rule's fields ("5.4.3 bounce suppress").
	Name string `toml:"name,omitempty" json:"name,omitempty"`
}

// Table is a compiled policy table, ready to decide. It is immutable and
// safe for concurrent use.
type Table struct {
	rules []compiled // most specific first
}

// compiled is a validated rule.
type compiled struct {
	index    int       // position in the config table, for ties and errors
	status   [3]string // "" for a wildcard part
	statusN  int       // fixed parts of the status pattern: 0..3
	kinds    []parse.Kind
	reasons  []parse.Reason
	decision store.Decision
	verified bool
}

// Kinds lists the record kinds a rule may name.
var Kinds = []parse.Kind{
	parse.KindBounce, parse.KindDelay, parse.KindComplaint,
	parse.KindAutoReply, parse.KindDelivered, parse.KindUnknown,
}

// Reasons lists the reasons a rule may name: the reasons parse assigns
// (parse/reason.go).
var Reasons = []parse.Reason{
	parse.ReasonUserUnknown, parse.ReasonMailboxFull, parse.ReasonMailboxDisabled,
	parse.ReasonHostUnknown, parse.ReasonHasMoved, parse.ReasonRouting,
	parse.ReasonNetwork, parse.ReasonExpired, parse.ReasonTooBig, parse.ReasonSpam,
	parse.ReasonBlocked, parse.ReasonAuthFailure, parse.ReasonRelayDenied,
	parse.ReasonVirus, parse.ReasonContent, parse.ReasonPolicy,
	parse.ReasonRateLimit, parse.ReasonSystemFull, parse.ReasonSystemError,
	parse.ReasonSyntax, parse.ReasonOther, parse.ReasonDelivered,
}

// maxThreshold is the largest count threshold; the store keeps at most
// this many events per address.
const maxThreshold = 1000

// Compile validates rules and returns the table. Every problem is
// reported, each naming its rule by position (1-based) and field. An
// empty list gives a table that records everything.
func Compile(rules []Rule) (*Table, error) {
	t := &Table{}
	var errs []error
	for i, r := range rules {
		c, err := compile(i, r)
		if err != nil {
			errs = append(errs, fmt.Errorf("policy rule %d (%s): %w", i+1, label(r), err))
			continue
		}
		if j := t.duplicate(c); j >= 0 {
			errs = append(errs, fmt.Errorf("policy rule %d (%s): same status, kind and reason as rule %d, so it would never match", i+1, label(r), j+1))
			continue
		}
		t.rules = append(t.rules, c)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	slices.SortStableFunc(t.rules, func(a, b compiled) int {
		return b.rank() - a.rank()
	})
	return t, nil
}

// rank orders rules by specificity (see the package comment); higher is
// more specific. Stable sorting keeps table order among equals.
func (c *compiled) rank() int {
	n := c.statusN * 4
	if len(c.reasons) > 0 {
		n += 2
	}
	if len(c.kinds) > 0 {
		n++
	}
	return n
}

// duplicate returns the index of an earlier rule with the same match
// fields as c, or -1.
func (t *Table) duplicate(c compiled) int {
	for _, o := range t.rules {
		if o.status == c.status && o.statusN == c.statusN &&
			sameSet(o.kinds, c.kinds) && sameSet(o.reasons, c.reasons) {
			return o.index
		}
	}
	return -1
}

func sameSet[T ~string](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// compile validates one rule.
func compile(i int, r Rule) (compiled, error) {
	c := compiled{index: i, verified: r.RequireVerified}
	var err error
	if c.status, c.statusN, err = parseStatus(r.Status); err != nil {
		return c, err
	}
	if c.kinds, err = parseList(r.Kind, "kind", Kinds); err != nil {
		return c, err
	}
	if c.reasons, err = parseList(r.Reason, "reason", Reasons); err != nil {
		return c, err
	}
	d := store.Decision{Action: strings.ToLower(strings.TrimSpace(r.Action))}
	switch d.Action {
	case store.ActionSuppress, store.ActionRecord:
		if r.Threshold != 0 || r.Window != "" {
			return c, fmt.Errorf("threshold and window only apply to action %q, not %q", store.ActionCount, d.Action)
		}
		if d.Action == store.ActionRecord && r.RequireVerified {
			return c, errors.New("require_verified only applies to actions suppress and count")
		}
	case store.ActionCount:
		if r.Threshold < 1 || r.Threshold > maxThreshold {
			return c, fmt.Errorf("action count needs a threshold from 1 to %d, got %d", maxThreshold, r.Threshold)
		}
		if r.Window == "" {
			return c, errors.New(`action count needs a window, e.g. "14d"`)
		}
		w, err := ParseWindow(r.Window)
		if err != nil {
			return c, err
		}
		d.Threshold, d.Window = r.Threshold, w
	case "":
		return c, errors.New("missing action: want suppress, count or record")
	default:
		return c, fmt.Errorf("unknown action %q: want suppress, count or record", truncate(r.Action, 40))
	}
	d.Rule, d.Named = r.Name, r.Name != ""
	if d.Rule == "" {
		d.Rule = label(r)
	}
	c.decision = d
	return c, nil
}

// parseStatus parses a status pattern into its three parts ("" for a
// wildcard) and the number of fixed parts.
func parseStatus(s string) ([3]string, int, error) {
	var parts [3]string
	s = strings.TrimSpace(s)
	if s == "" || s == "*" {
		return parts, 0, nil
	}
	bad := fmt.Errorf(`status %q: want an RFC 3463 code ("5.4.3"), a class pattern ("5.1.*", "4.*.*") or "*"`, truncate(s, 40))
	fs := strings.Split(s, ".")
	if len(fs) != 3 {
		return parts, 0, bad
	}
	n := 0
	for i, f := range fs {
		if f == "*" || f == "x" || f == "X" {
			continue
		}
		if n != i { // a fixed part after a wildcard: "5.*.1"
			return parts, 0, bad
		}
		if !digits(f) {
			return parts, 0, bad
		}
		parts[i] = f
		n++
	}
	if n == 0 {
		return parts, 0, nil // "*.*.*"
	}
	// RFC 3463 §2: class is 2, 4 or 5; subject and detail 1-3 digits.
	if c := parts[0]; c != "2" && c != "4" && c != "5" {
		return parts, 0, fmt.Errorf("status %q: class must be 2, 4 or 5 (RFC 3463)", s)
	}
	return parts, n, nil
}

// digits reports whether s is 1-3 ASCII digits without a leading zero
// (RFC 3463 §2), or "0".
func digits(s string) bool {
	if len(s) == 0 || len(s) > 3 || (s[0] == '0' && len(s) > 1) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseList parses a comma-separated list of names from known.
func parseList[T ~string](s, field string, known []T) ([]T, error) {
	var out []T
	for f := range strings.SplitSeq(s, ",") {
		f = strings.ToLower(strings.TrimSpace(f))
		if f == "" {
			continue
		}
		v := T(f)
		if !slices.Contains(known, v) {
			names := make([]string, len(known))
			for i, k := range known {
				names[i] = string(k)
			}
			return nil, fmt.Errorf("unknown %s %q: want one of %s", field, truncate(f, 40), strings.Join(names, ", "))
		}
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	if len(out) == 0 && strings.TrimSpace(s) != "" {
		return nil, fmt.Errorf("%s %q names nothing", field, truncate(s, 40))
	}
	return out, nil
}

// ParseWindow parses a count window: a Go duration, optionally starting
// with a number of days ("14d", "1d12h", "36h"). It must be positive.
func ParseWindow(s string) (time.Duration, error) {
	in := strings.TrimSpace(s)
	var d time.Duration
	rest := in
	if i := strings.IndexByte(in, 'd'); i > 0 {
		n, err := strconv.Atoi(in[:i])
		if err != nil || n < 0 || n > 100*365 {
			return 0, fmt.Errorf("window %q: want a duration such as \"14d\" or \"36h\"", truncate(s, 40))
		}
		d = time.Duration(n) * 24 * time.Hour
		rest = in[i+1:]
	}
	if rest != "" {
		r, err := time.ParseDuration(rest)
		if err != nil {
			return 0, fmt.Errorf("window %q: want a duration such as \"14d\" or \"36h\"", truncate(s, 40))
		}
		d += r
	}
	if d <= 0 {
		return 0, fmt.Errorf("window %q: must be positive", truncate(s, 40))
	}
	return d, nil
}

// Decide gives the verdict for r: the decision of the most specific rule
// that matches it, or record when none does. Its signature fits
// bolt.Options.Decide.
func (t *Table) Decide(r *store.Record) store.Decision {
	for i := range t.rules {
		c := &t.rules[i]
		if !c.matches(r) {
			continue
		}
		d := c.decision
		if c.verified && d.Action != store.ActionRecord && !verified(r) {
			return store.Decision{Action: store.ActionRecord, Rule: d.Rule + " (unverified: record)"}
		}
		return d
	}
	return store.Decision{Action: store.ActionRecord, Rule: "no rule"}
}

// matches reports whether r falls under c.
func (c *compiled) matches(r *store.Record) bool {
	if len(c.kinds) > 0 && !slices.Contains(c.kinds, r.Kind) {
		return false
	}
	if len(c.reasons) > 0 && !slices.Contains(c.reasons, r.Reason) {
		return false
	}
	if c.statusN == 0 {
		return true
	}
	class, rest, ok1 := strings.Cut(r.Status, ".")
	subject, detail, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(detail, ".") {
		return false
	}
	fs := [3]string{class, subject, detail}
	for i := range c.statusN {
		if fs[i] != c.status[i] {
			return false
		}
	}
	return true
}

// verified reports whether r's address is the one a valid signed VERP
// token named.
func verified(r *store.Record) bool {
	e := r.Envelope
	return e.Verified && e.VERP != "" && store.NormalizeAddr(e.VERP) == r.Addr
}

// label names a rule by its fields: "5.4.3 bounce suppress",
// "4.*.* bounce count 5/14d".
func label(r Rule) string {
	if r.Name != "" {
		return r.Name
	}
	status := strings.TrimSpace(r.Status)
	if status == "" {
		status = "*"
	}
	parts := []string{status}
	if k := strings.TrimSpace(r.Kind); k != "" {
		parts = append(parts, strings.ReplaceAll(k, " ", ""))
	}
	if re := strings.TrimSpace(r.Reason); re != "" {
		parts = append(parts, "reason="+strings.ReplaceAll(re, " ", ""))
	}
	a := strings.TrimSpace(r.Action)
	if a == "" {
		a = "(no action)"
	}
	if a == store.ActionCount {
		a = fmt.Sprintf("count %d/%s", r.Threshold, r.Window)
	}
	parts = append(parts, a)
	if r.RequireVerified {
		parts = append(parts, "verified")
	}
	return truncate(strings.Join(parts, " "), 200)
}

// truncate shortens s to n bytes for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
