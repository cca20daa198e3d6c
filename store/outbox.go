package store

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/bouncer/bouncer/parse"
)

// The outbox holds events for push targets (listmonk, webhooks). The
// rules queue an event for each target that wants a record in the same
// transaction as the record, so an event is never lost nor sent for a
// record that was not committed. The push worker reads and updates the
// outbox in transactions of its own.

// Event types: what a record means for a sending tool.
const (
	EventHard       = "hard"       // permanent failure (listmonk "hard")
	EventSoft       = "soft"       // temporary failure or delay (listmonk "soft")
	EventComplaint  = "complaint"  // feedback report (listmonk "complaint")
	EventSuppressed = "suppressed" // any record that put its address on the suppression list
)

// EventTypes lists the valid values of OutboxTarget.Events.
var EventTypes = []string{EventHard, EventSoft, EventComplaint, EventSuppressed}

// OutboxTarget says which records a push target receives.
type OutboxTarget struct {
	Name   string   `json:"name"`
	Events []string `json:"events"` // of EventTypes; a record matching any is sent
}

// ValidTargets checks a routing table for SetOutboxTargets.
func ValidTargets(targets []OutboxTarget) error {
	seen := map[string]bool{}
	for _, t := range targets {
		if t.Name == "" || len(t.Name) > 100 || seen[t.Name] {
			return fmt.Errorf("setting outbox targets: empty, long or repeated name %q", Truncate(t.Name, 100))
		}
		seen[t.Name] = true
		for _, e := range t.Events {
			if !slices.Contains(EventTypes, e) {
				return fmt.Errorf("setting outbox targets: target %s: unknown event %q (want one of %s)",
					t.Name, e, strings.Join(EventTypes, ", "))
			}
		}
	}
	return nil
}

// OutboxEvent is one record queued for one target. ID is stable across
// retries and restarts: receivers use it as an idempotency key.
type OutboxEvent struct {
	Seq      uint64    `json:"seq"`
	ID       string    `json:"id"` // record id + "." + target
	Target   string    `json:"target"`
	Type     string    `json:"type"` // hard, soft or complaint (suppressed records carry their own class)
	Created  time.Time `json:"created"`
	RecordID string    `json:"record_id"`
	Addr     string    `json:"recipient"`
	Status   string    `json:"status,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Kind     string    `json:"kind"`
	// Campaign is the signed VERP token's campaign or the bounced
	// message's X-Listmonk-Campaign header.
	Campaign   string `json:"campaign,omitempty"`
	Diagnostic string `json:"diagnostic,omitempty"`
	RemoteMTA  string `json:"remote_mta,omitempty"`
	Suppressed bool   `json:"suppressed,omitempty"`

	Attempts  int       `json:"attempts"`
	NextTry   time.Time `json:"next_try"`
	LastError string    `json:"last_error,omitempty"`
	// Held is set on an event written straight to the dead-letter list
	// because its delivery's client was over its push budget
	// (Delivery.HoldPush, the reason in LastError); a retry clears it.
	Held bool `json:"held,omitempty"`
}

// OutboxResult is the outcome of one delivery attempt.
type OutboxResult struct {
	Seq uint64
	Err error // nil: delivered, the event is removed
	// NextTry is when to try again after an error.
	NextTry time.Time
	// Dead moves the event to the dead-letter list now (a permanent
	// error, or the last allowed attempt).
	Dead bool
}

// ParseSeq reads the sequence number of an event as printed by
// `bouncer outbox list` (decimal).
func ParseSeq(s string) (uint64, error) {
	var n uint64
	if s == "" || len(s) > 20 {
		return 0, fmt.Errorf("invalid event number %q", Truncate(s, 30))
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("invalid event number %q", Truncate(s, 30))
		}
		n = n*10 + uint64(c-'0')
	}
	return n, nil
}

// Pushable reports whether rec makes push events for a target that wants
// its type: a hard or soft bounce, a delay, a complaint, or a record that
// suppressed its address. Duplicates make none.
func Pushable(rec *Record) bool {
	return !rec.Duplicate && (eventType(rec) != "" || rec.Suppressed)
}

// eventType classifies a record: "" when no sending tool cares.
func eventType(rec *Record) string {
	switch {
	case rec.Kind == parse.KindComplaint:
		return EventComplaint
	case rec.Kind == parse.KindBounce && rec.Class == parse.ClassHard:
		return EventHard
	case (rec.Kind == parse.KindBounce || rec.Kind == parse.KindDelay) && rec.Class == parse.ClassSoft:
		return EventSoft
	}
	return ""
}

// wants reports whether target t takes a record of type typ.
func (t *OutboxTarget) wants(typ string, suppressed bool) bool {
	for _, e := range t.Events {
		if (e == typ && typ != "") || (e == EventSuppressed && suppressed) {
			return true
		}
	}
	return false
}

// campaignHeader is the header listmonk adds to each campaign message.
const campaignHeader = "X-Listmonk-Campaign"

// campaignOf returns the campaign of rec: the signed VERP token's, else
// the bounced message's X-Listmonk-Campaign header.
func campaignOf(rec *Record) string {
	if rec.Envelope.Campaign != "" {
		return rec.Envelope.Campaign
	}
	if rec.Original != nil {
		for k, v := range rec.Original.XHeaders {
			if strings.EqualFold(k, campaignHeader) {
				return Truncate(strings.TrimSpace(v), 200)
			}
		}
	}
	return ""
}

// maxDiagnostic caps the diagnostic text carried in an event.
const maxDiagnostic = 1000

// events returns the events rec queues for targets, without their Seq
// (the engine numbers them as it writes them).
func events(rec *Record, targets []OutboxTarget, hold string) []OutboxEvent {
	if len(targets) == 0 || !strings.Contains(rec.Addr, "@") || len(rec.Addr) > MaxAddrLen {
		return nil
	}
	typ := eventType(rec)
	if typ == "" && !rec.Suppressed {
		return nil
	}
	if typ == "" {
		typ = EventHard // suppressed by a policy rule on an unclassified record
	}
	var out []OutboxEvent
	for _, t := range targets {
		if !t.wants(eventType(rec), rec.Suppressed) {
			continue
		}
		out = append(out, OutboxEvent{
			ID: rec.ID + "." + t.Name, Target: t.Name, Type: typ,
			Created: rec.Received, RecordID: rec.ID, Addr: rec.Addr,
			Status: rec.Status, Reason: string(rec.Reason), Kind: string(rec.Kind),
			Campaign:   campaignOf(rec),
			Diagnostic: Truncate(rec.DiagnosticCode, maxDiagnostic),
			RemoteMTA:  rec.RemoteMTA, Suppressed: rec.Suppressed,
			Held: hold != "", LastError: hold,
		})
	}
	return out
}
