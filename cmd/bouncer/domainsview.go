package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/bouncer/bouncer/store"
)

// The default `bouncer domains` table fits an 80-column terminal: the
// domain (cut to narrowDomain characters), the total, the most frequent
// status and how many others, the age of the last bounce, the storm's
// held count and the last MX verdict (cut to narrowMX). With counts below
// a million and fewer than 10,000 holds a row is at most 22+6+18+4+9+11
// characters and 10 of padding. --wide and --json give everything.
const (
	narrowDomain   = 22 // characters of a domain shown
	narrowStatus   = 7  // characters of a status key shown ("5.1.10", "other")
	narrowStatuses = 1  // statuses shown
	narrowMX       = 11 // characters of an MX verdict shown ("unreachable")
)

func domainsEmpty(filtered bool) string {
	if filtered {
		return "no domain has bounces of that status"
	}
	return "no domain has bounces yet"
}

// writeNarrowDomains writes the 80-column table of ds at now.
func writeNarrowDomains(w io.Writer, ds []store.DomainStat, filtered bool, now time.Time) error {
	const header = "DOMAIN\tTOTAL\tSTATUSES\tLAST\tSTORM\tMX"
	return writeList(w, ds, false, header, domainsEmpty(filtered), func(d store.DomainStat) string {
		storm, mx := "-", "-"
		if s := d.Storm; s != nil {
			storm = fmt.Sprintf("held %d", s.Held)
		}
		if m := d.LastMX; m != nil {
			mx = cut(m.Verdict, narrowMX)
			if d.Recovered != nil {
				mx = "recovered"
			}
		}
		return fmt.Sprintf("%s\t%d\t%s\t%s\t%s\t%s", cut(d.Domain, narrowDomain), d.Total,
			topStatuses(d.Counts), showAge(d.LastSeen, now), storm, mx)
	})
}

// topStatuses renders the narrowStatuses most frequent statuses of m
// (ties in status order) and how many others there are: "5.4.3:25 +2".
func topStatuses(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var parts []string
	for i, k := range keys {
		if i == narrowStatuses {
			parts = append(parts, fmt.Sprintf("+%d", len(keys)-i))
			break
		}
		parts = append(parts, fmt.Sprintf("%s:%d", cut(dash(k), narrowStatus), m[k]))
	}
	return dash(strings.Join(parts, " "))
}

// showAge says how long ago t was, in the largest whole unit: "40s",
// "12m", "5h", "3d"; "-" for the zero time, "0s" for a time ahead.
func showAge(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// cut shortens s to n characters, the last of them "…" when it cut,
// with control characters (a tab would break the table) shown as "?".
func cut(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
