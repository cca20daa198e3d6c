package store

import (
	"time"

	"github.com/bouncer/bouncer/parse"
)

// Daily counters: how many records of each class, and how many new
// suppressions and holds, each UTC day saw. The rules count them as
// records are stored, so a dashboard reads a few counters instead of
// scanning the records. Duplicates and mismatches are not counted.
const (
	DayHard       = "hard"       // permanent failures
	DaySoft       = "soft"       // temporary failures and delays
	DayComplaint  = "complaint"  // feedback reports (RFC 5965)
	DayAutoReply  = "auto-reply" // auto-replies (RFC 3834)
	DayOther      = "other"      // everything else (delivered, undecoded)
	DaySuppressed = "suppressed" // new entries of the suppression list
	DayHeld       = "held"       // suppressions held by the storm guard
)

// DayKeys lists the counters of a Day, in display order.
var DayKeys = []string{DayHard, DaySoft, DayComplaint, DayAutoReply, DayOther, DaySuppressed, DayHeld}

// DayLayout is the form of Day.Day and DayCount.Day.
const DayLayout = "2006-01-02"

// Day is the counters of one UTC day.
type Day struct {
	Day    string         `json:"day"`
	Counts map[string]int `json:"counts"`
}

// DayCount adds N to counter Key of Day.
type DayCount struct {
	Day string
	Key string
	N   int
}

// DayOf is the UTC day of t.
func DayOf(t time.Time) string { return t.UTC().Format(DayLayout) }

// DayClass is the daily counter a record counts towards.
func DayClass(rec *Record) string {
	switch {
	case rec.Kind == parse.KindComplaint:
		return DayComplaint
	case rec.Kind == parse.KindAutoReply:
		return DayAutoReply
	case (rec.Kind == parse.KindBounce || rec.Kind == parse.KindDelay) && rec.Class == parse.ClassHard:
		return DayHard
	case (rec.Kind == parse.KindBounce || rec.Kind == parse.KindDelay) && rec.Class == parse.ClassSoft:
		return DaySoft
	}
	return DayOther
}

// countDay adds one to key of day in the pending changes.
func (p *planner) countDay(day, key string) {
	for i := range p.ch.Daily {
		if p.ch.Daily[i].Day == day && p.ch.Daily[i].Key == key {
			p.ch.Daily[i].N++
			return
		}
	}
	p.ch.Daily = append(p.ch.Daily, DayCount{Day: day, Key: key, N: 1})
}
