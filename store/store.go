// Package store owns what bouncer keeps and the rules that decide it: the
// stored types (Record, Suppression, Hold, Storm, DomainStat, OutboxEvent),
// and the bounce rules (dedupe, cross-check, policy verdict, soft counters
// with decay, the storm guard, domain aggregates, outbox events) as code
// that does not know the engine.
//
// One delivery is judged by Rules.Plan: a pure function over a narrow
// read interface, State, that returns a Changes set. An engine (store/bolt
// for the embedded bbolt file, store/postgres for a database shared by
// several MX hosts) reads State from its open transaction and applies the
// Changes in the same transaction, so that what the rules decide is
// committed whole or not at all. The rules are tested here once, without
// an engine (rules_test.go); each engine passes the conformance suite in
// store/storetest.
//
// Consumers depend on small interfaces declared where they are used
// (server.Saver, api's store, push's outbox), which both engines satisfy.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bouncer/bouncer/parse"
)

var (
	// ErrNotFound is returned when a record, raw message or suppression
	// does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists is returned by AddSuppression for an address already on
	// the list.
	ErrExists = errors.New("already exists")
	// ErrClosed is returned by Save after Close.
	ErrClosed = errors.New("database is closed")
	// ErrReadOnly is returned by writes on a database opened read-only.
	ErrReadOnly = errors.New("database is opened read-only")
	// ErrInvalid is returned (wrapped) for an invalid argument, such as
	// an invalid domain or an over-long MX check result.
	ErrInvalid = errors.New("invalid argument")
	// ErrRawPruned is returned (wrapped, together with ErrNotFound) by Raw
	// for a message deleted by the raw retention.
	ErrRawPruned = errors.New("raw message deleted by retention")
	// ErrUnavailable is returned (wrapped) when the database cannot be
	// reached (a PostgreSQL server that is down or restarting).
	ErrUnavailable = errors.New("database unreachable")
)

// Query limits.
const (
	DefaultLimit = 100    // Query's limit when Filter.Limit is 0
	MaxLimit     = 10_000 // Query's largest limit
)

// Filter selects records. Empty fields match everything; set fields must
// all match.
type Filter struct {
	Status    string     // enhanced status code, exact ("5.4.3")
	Domain    string     // recipient domain, case-insensitive
	Recipient string     // recipient address (domain case-insensitive)
	Kind      parse.Kind // record kind
	Since     time.Time  // records stored at or after this time
	Limit     int        // most records returned; see Query and ForEach
}

// Normalize returns f with its address, domain and status in the form
// they are stored in.
func (f Filter) Normalize() Filter {
	f.Recipient = NormalizeAddr(f.Recipient)
	f.Domain = strings.ToValidUTF8(strings.ToLower(strings.TrimSpace(f.Domain)), "\uFFFD")
	f.Status = strings.ToValidUTF8(f.Status, "\uFFFD")
	return f
}

// Match reports whether r matches the normalized filter f, Since and
// Limit aside (engines apply those to their time order).
func (f *Filter) Match(r *Record) bool {
	return (f.Recipient == "" || r.Addr == f.Recipient) &&
		(f.Domain == "" || r.Domain == f.Domain) &&
		(f.Status == "" || r.Status == f.Status) &&
		(f.Kind == "" || r.Kind == f.Kind)
}

// DefaultDomainLimit is the number of domains `bouncer domains` lists
// unless told otherwise.
const DefaultDomainLimit = 100

// DomainFilter selects domain aggregates for RecentDomains.
type DomainFilter struct {
	// Status keeps only domains with records of this enhanced status code.
	Status string
	// Limit is the most domains returned; 0 returns all of them.
	Limit int
}

// MXCheck is the outcome of one MX check of a domain.
type MXCheck struct {
	Verdict string    `json:"verdict"`
	Routed  bool      `json:"routed"` // mail can reach the domain
	Checked time.Time `json:"checked"`
	// Result is the checker's full answer (mx.Result as JSON).
	Result json.RawMessage `json:"result,omitempty"`
}

// MaxMXResult caps the stored result of one MX check.
const MaxMXResult = 64 << 10

// ValidateMXCheck refuses what SetMXCheck must not store.
func ValidateMXCheck(domain string, c MXCheck) error {
	if domain == "" || len(domain) > 255 || strings.ContainsAny(domain, "@ \t\r\n\x00") {
		return fmt.Errorf("storing MX check: %w: domain %q", ErrInvalid, Truncate(domain, 80))
	}
	if len(c.Result) > MaxMXResult {
		return fmt.Errorf("storing MX check: %w: result of %d bytes is over %d", ErrInvalid, len(c.Result), MaxMXResult)
	}
	return nil
}

// RouteStatus reports whether status is a routing failure (5.4.x) whose
// domain's route is worth checking.
func RouteStatus(status string) bool {
	return strings.HasPrefix(status, "5.4.")
}

// PruneStats counts what Prune deleted.
type PruneStats struct {
	Raw    int // raw messages
	Seen   int // dedupe keys
	Soft   int // soft counters
	Storms int // storms that lasted StormOptions.HoldFor, their holds dropped
}
