package store

import (
	"context"
	"time"
)

// Store is what an engine offers: the contract that store/bolt and
// store/postgres both meet and that the conformance suite
// (store/storetest) checks. cmd/bouncer wires one of them; the packages
// that use the store declare the few methods they call (server.Saver,
// api.Store, push.Outbox).
type Store interface {
	// Save stores d: its raw message and what Rules.Plan decides for it,
	// in one transaction, and returns its records only once that
	// transaction is durable (250 is a promise).
	Save(ctx context.Context, d *Delivery) ([]Record, error)

	// Query returns the records matching f, newest first, f.Limit of them
	// (DefaultLimit if 0, at most MaxLimit).
	Query(f Filter) ([]Record, error)
	// ForEach calls fn for each record matching f, newest first, up to
	// f.Limit (all if 0), outside any transaction.
	ForEach(f Filter, fn func(Record) error) error
	// Page returns up to f.Limit records matching f older than the record
	// with ID before ("" for the newest), and the ID to pass for the next
	// page ("" after the last).
	Page(f Filter, before string) (recs []Record, next string, err error)
	// Record returns one record, or ErrNotFound.
	Record(id string) (*Record, error)
	// Raw returns the raw message of a record's MsgID, or ErrNotFound
	// (with ErrRawPruned when the retention deleted it).
	Raw(msgID string) ([]byte, error)

	// Domains returns every domain aggregate, in domain order, of domains
	// with records of status (all if "").
	Domains(status string) ([]DomainStat, error)
	// RecentDomains returns the aggregates matching f, most recently
	// bounced first.
	RecentDomains(f DomainFilter) ([]DomainStat, error)
	// SetMXCheck stores an MX check of domain; see store/bolt.
	SetMXCheck(domain string, c MXCheck, lift bool) (recovered bool, lifted int, err error)

	// Suppressed returns the suppression of addr, or ErrNotFound.
	Suppressed(addr string) (*Suppression, error)
	// AddSuppression adds an entry by hand; ErrExists if addr is listed.
	AddSuppression(s Suppression) error
	// RemoveSuppression takes addr off the list and resets its soft
	// counter; ErrNotFound if it was not listed.
	RemoveSuppression(addr string) error
	// Suppressions calls fn for each entry of domain (all if ""), in
	// address order, outside any transaction.
	Suppressions(domain string, fn func(Suppression) error) error

	// Storms returns the flagged domains, in domain order.
	Storms() ([]Storm, error)
	// Holds returns the holds of domain (all if ""), by domain and address.
	Holds(domain string) ([]Hold, error)
	// ReleaseHolds turns the holds of domain into suppressions and ends
	// its storm; DropHolds drops them. Both return how many they handled.
	ReleaseHolds(domain string) (int, error)
	DropHolds(domain string) (int, error)

	// SetOutboxTargets replaces the push routing table.
	SetOutboxTargets(targets []OutboxTarget) error
	// OutboxDue returns up to limit events due at now, oldest first,
	// skipping targets in skip. An engine shared by several hosts leases
	// the events it returns, so that no other host sends them meanwhile.
	OutboxDue(now time.Time, limit, maxScan int, skip func(target string) bool) ([]OutboxEvent, error)
	// OutboxUpdate applies delivery outcomes; it returns how many went dead.
	OutboxUpdate(results []OutboxResult) (dead int, err error)
	// OutboxEvents walks the queued (or dead) events, oldest first.
	OutboxEvents(dead bool, fn func(OutboxEvent) error) error
	// OutboxStats counts queued and dead events.
	OutboxStats() (queued, dead int, err error)
	// OutboxRetry moves dead letters back (all if no seqs); OutboxDrop
	// deletes them. A seq that is not a dead letter is ErrNotFound.
	OutboxRetry(seqs ...uint64) (int, error)
	OutboxDrop(seqs ...uint64) (int, error)

	// Daily returns the daily counters of the UTC days from from to to
	// (inclusive), oldest first, days without counts left out.
	Daily(from, to time.Time) ([]Day, error)

	// Prune applies the retention: raw messages, dedupe keys, soft counters.
	Prune(ctx context.Context) (PruneStats, error)
	// Check verifies the stored data and reports what is damaged.
	Check() error
	// Close waits for queued Saves and closes the store.
	Close() error
}
