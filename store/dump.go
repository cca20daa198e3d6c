package store

import "time"

// Moving a store's content from one engine to another (bouncer copy): the
// source's Export calls a function with each stored Item, the target's
// Import writes batches of them, and Counts of both say how many of each
// kind they hold. Items carry the engine-neutral values the rules read
// and write (Changes), not an engine's encoding: raw messages travel
// uncompressed and each engine stores them its own way.

// The kinds of stored data, in the order Export produces them; Item.Kind
// names them and Counts counts them.
const (
	DumpRaw          = "raw"            // raw messages
	DumpRecords      = "records"        // records, oldest first
	DumpSeen         = "dedupe_keys"    // dedupe keys
	DumpSuppressions = "suppressions"   // the suppression list
	DumpSoft         = "soft_counters"  // soft counters
	DumpStormSets    = "storm_counters" // storm guard counters
	DumpStorms       = "storms"         // storm flags
	DumpHolds        = "holds"          // suppressions held by a storm
	DumpDomains      = "domains"        // domain aggregates (with their status index)
	DumpMX           = "mx_checks"      // last MX check and recovery per domain
	DumpDaily        = "daily"          // daily counters, one item per day
	DumpTargets      = "outbox_targets" // push targets
	DumpOutbox       = "outbox"         // queued events, by seq
	DumpDead         = "outbox_dead"    // dead letters, by seq
	DumpMeta         = "meta"           // settings kept with the data (when raw messages were pruned)
)

// DumpKinds lists the kinds in export order.
var DumpKinds = []string{DumpRaw, DumpRecords, DumpSeen, DumpSuppressions, DumpSoft, DumpStormSets,
	DumpStorms, DumpHolds, DumpDomains, DumpMX, DumpDaily, DumpTargets, DumpOutbox, DumpDead, DumpMeta}

// Item is one stored value; exactly one field is set (Dead goes with
// Event).
type Item struct {
	Raw         *RawMessage
	Record      *Record
	Seen        *SeenKey // Key and ID; At is the ID's time
	Suppression *Suppression
	Soft        *SoftUpdate
	StormSet    *StormSetUpdate
	Storm       *Storm
	Hold        *Hold
	Domain      *DomainStat // as stored: Storm, LastMX and Recovered nil
	MX          *MXHealth
	Day         *Day
	Target      *OutboxTarget
	Event       *OutboxEvent // with its Seq
	Dead        bool         // Event is a dead letter
	Meta        *Meta
}

// RawMessage is the raw message of a delivery, uncompressed; MsgID is
// its records' MsgID.
type RawMessage struct {
	MsgID string
	Data  []byte
}

// MXHealth is what an engine keeps of a domain's route health.
type MXHealth struct {
	Domain    string
	Last      MXCheck
	Recovered time.Time // zero: not recovered
}

// Meta is what a store keeps about its data.
type Meta struct {
	// RawPrunedBefore is the time before which the retention deleted raw
	// messages (zero: never).
	RawPrunedBefore time.Time
}

// Kind returns the kind of the item, one of DumpKinds ("" if none is set).
func (it *Item) Kind() string {
	switch {
	case it.Raw != nil:
		return DumpRaw
	case it.Record != nil:
		return DumpRecords
	case it.Seen != nil:
		return DumpSeen
	case it.Suppression != nil:
		return DumpSuppressions
	case it.Soft != nil:
		return DumpSoft
	case it.StormSet != nil:
		return DumpStormSets
	case it.Storm != nil:
		return DumpStorms
	case it.Hold != nil:
		return DumpHolds
	case it.Domain != nil:
		return DumpDomains
	case it.MX != nil:
		return DumpMX
	case it.Day != nil:
		return DumpDaily
	case it.Target != nil:
		return DumpTargets
	case it.Event != nil && it.Dead:
		return DumpDead
	case it.Event != nil:
		return DumpOutbox
	case it.Meta != nil:
		return DumpMeta
	}
	return ""
}
