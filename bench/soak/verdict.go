package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// The growth rule. A series that should stay flat (memory, open files,
// goroutines, the log, the push backlog) grows without bound when even its
// lowest value in the last third of the run is above its highest value in
// the first third by more than the series' tolerance: a leak that grows
// steadily fails it, while noise, sawtooth garbage collection and a warm-up
// within the first third do not. The database file may grow, but no faster
// per new record in the second half than in the first (plus the slack of
// bbolt's growth steps): raw messages pruned make room that new ones reuse.

// minPoints is the fewest samples a verdict needs.
const minPoints = 6

// tolerance is how far a flat series may rise: abs, plus rel times the
// first third's peak.
type tolerance struct {
	abs, rel float64
}

// grows applies the growth rule to v; the verdict says why.
func grows(v []float64, tol tolerance, show func(float64) string) (bool, string) {
	if len(v) < minPoints {
		return false, "too few samples"
	}
	third := len(v) / 3
	peakFirst := slices.Max(v[:third])
	lowLast := slices.Min(v[len(v)-third:])
	limit := peakFirst + tol.abs + tol.rel*peakFirst
	if lowLast > limit {
		return true, fmt.Sprintf("grows: last third ≥ %s > first third's peak %s + tolerance", show(lowLast), show(peakFirst))
	}
	return false, fmt.Sprintf("flat: last third's low %s ≤ %s", show(lowLast), show(limit))
}

// dbSlack is the growth of the database file the per-record rule always
// allows: bbolt grows the file in steps of 16 MiB (its AllocSize).
const dbSlack = 32 << 20

// dbGrows applies the per-record rule to the file size and the records
// stored at each sample.
func dbGrows(size, records []float64) (bool, string) {
	if len(size) < minPoints || len(records) != len(size) {
		return false, "too few samples"
	}
	mid, end := len(size)/2, len(size)-1
	r1, r2 := records[mid]-records[0], records[end]-records[mid]
	if r1 <= 0 || r2 <= 0 {
		return true, "no records stored in one half of the run"
	}
	per1 := (size[mid] - size[0]) / r1
	grown := size[end] - size[mid]
	allowed := 1.5*max(per1, 0)*r2 + dbSlack
	if grown > allowed {
		return true, fmt.Sprintf("grows faster: %.1f MiB in the second half for %.0f records, first half %.0f B/record", grown/(1<<20), r2, per1)
	}
	return false, fmt.Sprintf("%.0f B/record in the first half, %.0f in the second", per1, grown/r2)
}

// slopePerHour is the least-squares slope of v over t (the second half of
// the samples), per hour.
func slopePerHour(t []time.Duration, v []float64) float64 {
	n := len(v) - len(v)/2
	if n < 2 {
		return 0
	}
	t, v = t[len(t)-n:], v[len(v)-n:]
	var st, sv float64
	for i := range v {
		st += t[i].Hours()
		sv += v[i]
	}
	mt, mv := st/float64(n), sv/float64(n)
	var num, den float64
	for i := range v {
		num += (t[i].Hours() - mt) * (v[i] - mv)
		den += (t[i].Hours() - mt) * (t[i].Hours() - mt)
	}
	if den == 0 {
		return 0
	}
	return num / den
}

// series is one column of the samples, and how it is judged.
type series struct {
	name  string
	bytes bool // shown in MiB
	get   func(point) float64
	tol   *tolerance // flat series: the growth rule; nil: another rule or none
	db    bool       // the per-record rule
	info  string     // verdict of a series that is only reported
}

var allSeries = []series{
	{name: "RSS (VmRSS)", bytes: true, get: func(p point) float64 { return p.rss }, info: "reported: anonymous + file pages"},
	{name: "RSS anonymous (heap, stacks)", bytes: true, get: func(p point) float64 { return p.anon }, tol: &tolerance{abs: 16 << 20, rel: 0.25}},
	{name: "RSS file (mapped database)", bytes: true, get: func(p point) float64 { return p.file }, info: "reported: follows the database file"},
	{name: "open files", get: func(p point) float64 { return p.fds }, tol: &tolerance{abs: 16}},
	{name: "goroutines", get: func(p point) float64 { return p.goroutines }, tol: &tolerance{abs: 25}},
	{name: "database file", bytes: true, get: func(p point) float64 { return p.dbSize }, db: true},
	{name: "write-ahead log", bytes: true, get: func(p point) float64 { return p.walSize }, tol: &tolerance{abs: 8 << 20}},
	{name: "outbox queued", get: func(p point) float64 { return p.queued }, tol: &tolerance{abs: 200}},
	{name: "records stored", get: func(p point) float64 { return p.records }, info: "reported"},
	{name: "messages accepted (250)", get: func(p point) float64 { return p.accepted }, info: "reported"},
	{name: "pushes received", get: func(p point) float64 { return p.pushes }, info: "reported"},
	{name: "raw messages pruned", get: func(p point) float64 { return p.rawPruned }, info: "reported"},
	{name: "errors", get: func(p point) float64 { return p.errors }, info: "must stay 0"},
}

// judge prints the table of the samples and returns the series that grow
// without bound.
func judge(w io.Writer, pts []point) []string {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "series\tstart\tend\tmax\tslope, 2nd half (/h)\tverdict\t")
	var bad []string
	times := make([]time.Duration, len(pts))
	for i, p := range pts {
		times[i] = p.at
	}
	records := column(pts, func(p point) float64 { return p.records })
	for _, s := range allSeries {
		v := column(pts, s.get)
		if len(v) == 0 {
			break
		}
		f := func(x float64) string {
			if s.bytes {
				return fmt.Sprintf("%.1f MiB", x/(1<<20))
			}
			return num(x)
		}
		verdict := s.info
		switch {
		case s.tol != nil:
			g, why := grows(v, *s.tol, f)
			verdict = okOr(g, why)
			if g {
				bad = append(bad, s.name)
			}
		case s.db:
			g, why := dbGrows(v, records)
			verdict = okOr(g, why)
			if g {
				bad = append(bad, s.name)
			}
		}
		slope := slopePerHour(times, v)
		slopeText := fmt.Sprintf("%+.0f", slope)
		if s.bytes {
			slopeText = fmt.Sprintf("%+.1f MiB", slope/(1<<20))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", s.name, f(v[0]), f(v[len(v)-1]), f(slices.Max(v)), slopeText, verdict)
	}
	tw.Flush()
	return bad
}

func okOr(bad bool, why string) string {
	if bad {
		return "FAIL " + why
	}
	return "ok " + why
}

func column(pts []point, get func(point) float64) []float64 {
	out := make([]float64, len(pts))
	for i, p := range pts {
		out[i] = get(p)
	}
	return out
}

// num prints a count without a fraction, and other values with two digits.
func num(x float64) string {
	if x == math.Trunc(x) && math.Abs(x) < 1e15 {
		return fmt.Sprintf("%.0f", x)
	}
	s := fmt.Sprintf("%.2f", x)
	return strings.TrimSuffix(strings.TrimRight(s, "0"), ".")
}
