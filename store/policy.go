package store

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/bouncer/bouncer/parse"
)

// Policy actions of a Decision.
const (
	ActionSuppress = "suppress" // put the address on the suppression list at once
	ActionCount    = "count"    // suppress after Threshold events within Window
	ActionRecord   = "record"   // keep the record, never suppress
)

// Verdicts set by the rules themselves, before or after the policy.
const (
	// ActionDuplicate is the verdict of a record whose report was stored
	// before (Record.DuplicateOf names the first record).
	ActionDuplicate = "duplicate"
	// ActionMismatch is the verdict of a record whose report names a
	// recipient other than its VERP address (Record.Mismatch says which).
	ActionMismatch = "mismatch"
	// ActionHeld is the verdict of a suppression held back by the storm
	// guard.
	ActionHeld = "held"
)

// Decision is the policy verdict for one record.
type Decision struct {
	Action    string        // ActionSuppress, ActionCount or ActionRecord
	Threshold int           // for ActionCount: events within Window that suppress (≥ 1)
	Window    time.Duration // for ActionCount: age after which an event no longer counts; 0 = never
	Rule      string        // optional name of the policy rule that gave this decision
	// Named is set when Rule is a name the operator gave the rule. A
	// label made of the rule's own fields ("5.4.3 bounce suppress") only
	// repeats what a suppression reason already says, so the reason
	// names the rule only when it is Named.
	Named bool
}

// DefaultDecide suppresses an address at once on a hard bounce with status
// 5.4.3 (RFC 3463: routing server failure, permanent) and records
// everything else.
func DefaultDecide(r *Record) Decision {
	if r.Kind == parse.KindBounce && r.Class == parse.ClassHard && r.Status == "5.4.3" {
		return Decision{Action: ActionSuppress, Rule: "5.4.3"}
	}
	return Decision{Action: ActionRecord}
}

// Suppression is one entry of the suppression list.
type Suppression struct {
	Address  string    `json:"address"`
	Reason   string    `json:"reason"`
	Status   string    `json:"status,omitempty"`
	RecordID string    `json:"record_id,omitempty"` // the record that caused it, if any
	Created  time.Time `json:"created"`
	Source   string    `json:"source"` // "policy" for automatic entries, else what the caller set
}

// ValidSuppression checks and completes a suppression added by hand (the
// CLI, the API): the address normalized and plausible, Created defaulting
// to now and Source to "manual".
func ValidSuppression(s Suppression, now time.Time) (Suppression, error) {
	s.Address = NormalizeAddr(s.Address)
	if s.Address == "" || len(s.Address) > MaxAddrLen || !strings.Contains(s.Address, "@") {
		return s, fmt.Errorf("adding suppression: %w: address %q", ErrInvalid, Truncate(s.Address, 80))
	}
	if s.Created.IsZero() {
		s.Created = now
	}
	if s.Source == "" {
		s.Source = "manual"
	}
	return s, nil
}

// MaxSoftEvents caps the events kept per soft counter.
const MaxSoftEvents = 1000

// SoftCounter holds the times of recent soft events for one address.
type SoftCounter struct {
	Events []int64 `json:"t"`           // Unix nanoseconds, ascending
	Window int64   `json:"w,omitempty"` // decay window in nanoseconds (0: never), for pruning
}

// Add adds an event at t to c under decision d, drops events older than
// d.Window before the newest, keeps the latest d.Threshold, and returns
// how many remain.
func (c *SoftCounter) Add(t time.Time, d Decision) int {
	ts := t.UnixNano()
	c.Window = int64(d.Window)
	i, _ := slices.BinarySearch(c.Events, ts)
	c.Events = slices.Insert(slices.Clone(c.Events), i, ts)
	if d.Window > 0 {
		cut := t.Add(-d.Window).UnixNano()
		last := c.Events[len(c.Events)-1]
		if last > ts {
			// An event newer than t is in the counter; decay relative to it.
			cut = time.Unix(0, last).Add(-d.Window).UnixNano()
		}
		j, _ := slices.BinarySearch(c.Events, cut)
		c.Events = c.Events[j:]
	}
	// Only the latest Threshold events matter for the decision.
	keep := min(max(d.Threshold, 1), MaxSoftEvents)
	if len(c.Events) > keep {
		c.Events = c.Events[len(c.Events)-keep:]
	}
	return len(c.Events)
}

// Decayed reports whether every event of c is older than its window at
// now, so that the counter can be deleted.
func (c *SoftCounter) Decayed(now time.Time) bool {
	if len(c.Events) == 0 {
		return true
	}
	return c.Window > 0 && c.Events[len(c.Events)-1] < now.Add(-time.Duration(c.Window)).UnixNano()
}

// describe is the reason text of a suppression caused by rec under
// decision d: what the record is, each thing once ("bounce hard 5.4.3
// (routing_failure)"), and the rule when the operator named it.
func describe(rec *Record, d Decision) string {
	s := fmt.Sprintf("%s %s %s", rec.Kind, rec.Class, rec.Status)
	if rec.Reason != "" {
		s += " (" + string(rec.Reason) + ")"
	}
	if d.Named && d.Rule != "" {
		s += " rule " + d.Rule
	}
	return strings.Join(strings.Fields(s), " ")
}

// countReason is the reason text of a suppression that n soft events
// under decision d caused, the last of them rec: "3 events within 14d,
// last: bounce soft 4.2.2 (mailbox_full)".
func countReason(n int, rec *Record, d Decision) string {
	within := ""
	if d.Window > 0 {
		within = " within " + windowText(d.Window)
	}
	return fmt.Sprintf("%d events%s, last: %s", n, within, describe(rec, d))
}

// windowText writes a decay window as the config does: whole days as
// "14d", else a Go duration without its zero tail ("36h", "90m").
func windowText(w time.Duration) string {
	if w%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", w/(24*time.Hour))
	}
	s := w.String()
	for _, z := range []string{"0s", "0m"} {
		if strings.HasSuffix(s, z) && len(s) > len(z) && (s[len(s)-len(z)-1] < '0' || s[len(s)-len(z)-1] > '9') {
			s = s[:len(s)-len(z)]
		}
	}
	return s
}
