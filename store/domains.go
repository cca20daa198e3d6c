package store

import (
	"fmt"
	"maps"
	"slices"
	"time"
)

// Bounds on the per-domain aggregate, whose contents an attacker chooses.
const (
	MaxDomainStatuses = 64  // distinct status keys; more count as "other"
	MaxDomainMTAs     = 32  // remote and reporting MTAs kept per domain
	MaxDomainLen      = 255 // bytes of a domain used as a key
)

// DomainStat aggregates the records of one recipient domain.
type DomainStat struct {
	Domain        string         `json:"domain"`
	Total         int            `json:"total"`
	Counts        map[string]int `json:"counts"` // by status; "" for records without one
	Kinds         map[string]int `json:"kinds"`  // by kind
	FirstSeen     time.Time      `json:"first_seen"`
	LastSeen      time.Time      `json:"last_seen"`
	RemoteMTAs    []string       `json:"remote_mtas,omitempty"`
	ReportingMTAs []string       `json:"reporting_mtas,omitempty"`
	// MTAsCapped is set once an MTA was not kept because a set was full.
	MTAsCapped bool `json:"mtas_capped,omitempty"`

	// Storm, LastMX and Recovered are filled in by the engine's Domains
	// from the storm flags and MX health; they are not part of the stored
	// aggregate.
	Storm     *Storm     `json:"storm,omitempty"`
	LastMX    *MXCheck   `json:"last_mx,omitempty"`
	Recovered *time.Time `json:"recovered,omitempty"` // route works again since
}

// Clone returns a copy of st that shares nothing with it.
func (st *DomainStat) Clone() *DomainStat {
	c := *st
	c.Counts, c.Kinds = maps.Clone(st.Counts), maps.Clone(st.Kinds)
	c.RemoteMTAs, c.ReportingMTAs = slices.Clone(st.RemoteMTAs), slices.Clone(st.ReportingMTAs)
	return &c
}

// DomainKey is the domain of rec as an aggregate key: at most
// MaxDomainLen bytes, or "" when rec has none.
func DomainKey(rec *Record) string {
	dom := rec.Domain
	if len(dom) > MaxDomainLen {
		dom = dom[:MaxDomainLen]
	}
	return dom
}

// Count adds rec to the aggregate st, and returns the status key it was
// counted under (rec.Status, or "other" once the aggregate holds
// MaxDomainStatuses statuses) and whether that key is new in st.
func (st *DomainStat) Count(rec *Record) (status string, added bool) {
	if st.Counts == nil {
		st.Counts = map[string]int{}
	}
	if st.Kinds == nil {
		st.Kinds = map[string]int{}
	}
	status = rec.Status
	if _, ok := st.Counts[status]; !ok && len(st.Counts) >= MaxDomainStatuses {
		status = "other"
	}
	added = st.Counts[status] == 0
	st.Counts[status]++
	if _, ok := st.Kinds[string(rec.Kind)]; ok || len(st.Kinds) < MaxDomainStatuses {
		st.Kinds[string(rec.Kind)]++
	}
	st.Total++
	if st.FirstSeen.IsZero() || rec.Received.Before(st.FirstSeen) {
		st.FirstSeen = rec.Received
	}
	if rec.Received.After(st.LastSeen) {
		st.LastSeen = rec.Received
	}
	st.RemoteMTAs = st.addMTA(st.RemoteMTAs, rec.RemoteMTA)
	st.ReportingMTAs = st.addMTA(st.ReportingMTAs, rec.ReportingMTA)
	return status, added
}

// Uncount takes rec out of the aggregate st, undoing Count's counts
// (first and last seen and the MTA sets stay: they are what was seen).
// It returns the status key rec was counted under and whether that key
// now counts nothing (and is gone from st).
func (st *DomainStat) Uncount(rec *Record) (status string, gone bool) {
	status = rec.Status
	if st.Counts[status] == 0 {
		status = "other" // counted there once the aggregate was full
	}
	if n := st.Counts[status]; n > 0 {
		st.Counts[status] = n - 1
		if n == 1 {
			delete(st.Counts, status)
			gone = true
		}
	}
	if n := st.Kinds[string(rec.Kind)]; n > 0 {
		st.Kinds[string(rec.Kind)] = n - 1
		if n == 1 {
			delete(st.Kinds, string(rec.Kind))
		}
	}
	if st.Total > 0 {
		st.Total--
	}
	return status, gone
}

// addMTA adds mta to a bounded set.
func (st *DomainStat) addMTA(set []string, mta string) []string {
	mta = NormMTA(mta)
	if mta == "" || slices.Contains(set, mta) {
		return set
	}
	if len(set) >= MaxDomainMTAs {
		st.MTAsCapped = true
		return set
	}
	return append(set, mta)
}

// countDomain adds rec to its domain's aggregate.
func (p *planner) countDomain(rec *Record) error {
	dom := DomainKey(rec)
	if dom == "" {
		return nil
	}
	u, err := p.domain(dom)
	if err != nil {
		return err
	}
	if status, added := u.Stat.Count(rec); added {
		if i := slices.Index(u.GoneStatuses, status); i >= 0 {
			u.GoneStatuses = slices.Delete(u.GoneStatuses, i, i+1) // its index entry stays
		} else {
			u.NewStatuses = append(u.NewStatuses, status)
		}
	}
	return nil
}

// uncountDomain takes rec out of its domain's aggregate.
func (p *planner) uncountDomain(rec *Record) error {
	dom := DomainKey(rec)
	if dom == "" {
		return nil
	}
	u, err := p.domain(dom)
	if err != nil {
		return err
	}
	if status, gone := u.Stat.Uncount(rec); gone {
		if i := slices.Index(u.NewStatuses, status); i >= 0 {
			u.NewStatuses = slices.Delete(u.NewStatuses, i, i+1)
		} else {
			u.GoneStatuses = append(u.GoneStatuses, status)
		}
	}
	return nil
}

// domain returns the pending update of dom's aggregate, reading it on
// first use.
func (p *planner) domain(dom string) (*DomainUpdate, error) {
	for i := range p.ch.Domains {
		if p.ch.Domains[i].Stat.Domain == dom {
			return &p.ch.Domains[i], nil
		}
	}
	st, err := p.st.DomainStat(dom)
	if err != nil {
		return nil, fmt.Errorf("reading aggregate of %s: %w", Truncate(dom, 80), err)
	}
	if st == nil {
		st = &DomainStat{Domain: dom}
	} else {
		st = st.Clone()
	}
	p.ch.Domains = append(p.ch.Domains, DomainUpdate{Stat: st})
	return &p.ch.Domains[len(p.ch.Domains)-1], nil
}
