package web

import (
	"strconv"
	"time"

	"github.com/bouncer/bouncer/store"
)

// Charts are SVG drawn here and written by the templates (chart.html):
// the geometry is computed in Go, the numbers are in data- attributes and
// <title>s of the shapes and repeated in a table beside each chart, so a
// screen reader, a text browser and a test all read the same figures.

// Chart sizes, in SVG user units; the SVG scales to the page's width.
const (
	chartW      = 720
	chartH      = 240
	chartLeft   = 40 // room for the axis labels
	chartBottom = 24 // room for the day labels
	chartTop    = 16
	chartRight  = 20 // room for the last day label
)

// barChart is a stacked bar chart, one bar per day.
type barChart struct {
	ID     string // element id, for aria-labelledby
	Title  string
	W, H   int
	Keys   []string // the stacked counters, bottom first
	Bars   []bar
	Ticks  []tick
	Max    int
	Total  int
	Bottom string // y of the x axis
}

type bar struct {
	Day       string
	Label     string // short day label, on every few bars
	LabelX    string
	X, W      string
	Total     int
	TotalY    string
	Segments  []segment
	ShowTotal bool
}

type segment struct {
	Key  string
	N    int
	Y, H string
}

type tick struct {
	Y     string
	Value int
}

// days returns the n UTC days ending with the day of now, oldest first.
func days(now time.Time, n int) []string {
	out := make([]string, n)
	d := now.UTC().Truncate(24 * time.Hour)
	for i := range n {
		out[n-1-i] = store.DayOf(d.AddDate(0, 0, -i))
	}
	return out
}

// f1 formats an SVG coordinate.
func f1(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

// newBarChart stacks the counters keys of each day in order.
func newBarChart(id, title string, order []string, counts map[string]map[string]int, keys []string) barChart {
	c := barChart{ID: id, Title: title, W: chartW, H: chartH, Keys: keys}
	for _, d := range order {
		t := 0
		for _, k := range keys {
			t += counts[d][k]
		}
		c.Max = max(c.Max, t)
		c.Total += t
	}
	top := niceCeil(c.Max)
	plotH := float64(chartH - chartBottom - chartTop)
	base := float64(chartH - chartBottom)
	c.Bottom = f1(base)
	step := float64(chartW-chartLeft-chartRight) / float64(max(len(order), 1))
	for i, d := range order {
		b := bar{Day: d, X: f1(chartLeft + float64(i)*step + step*0.1), W: f1(step * 0.8)}
		y := base
		for _, k := range keys {
			n := counts[d][k]
			if n == 0 {
				continue
			}
			hgt := plotH * float64(n) / float64(top)
			y -= hgt
			b.Segments = append(b.Segments, segment{Key: k, N: n, Y: f1(y), H: f1(hgt)})
			b.Total += n
		}
		b.TotalY = f1(y - 3)
		b.ShowTotal = b.Total > 0
		if i%5 == len(order)%5 || i == len(order)-1 {
			b.Label = d[5:] // MM-DD
			b.LabelX = f1(chartLeft + float64(i)*step + step/2)
		}
		c.Bars = append(c.Bars, b)
	}
	for _, v := range []int{0, top / 2, top} {
		if v == 0 && top == 0 {
			continue
		}
		c.Ticks = append(c.Ticks, tick{Y: f1(base - plotH*float64(v)/float64(max(top, 1))), Value: v})
	}
	return c
}

// niceCeil rounds n up to 2, 4, 6, 8 or 10 times a power of ten, so the
// middle tick is a whole number too.
func niceCeil(n int) int {
	for p := 1; ; p *= 10 {
		for _, m := range []int{2, 4, 6, 8, 10} {
			if m*p >= n {
				return m * p
			}
		}
	}
}

// hbarChart is a horizontal bar chart: one labelled row per value.
type hbarChart struct {
	ID, Title string
	W, H      int
	Rows      []hbar
}

type hbar struct {
	Label  string
	N      int
	Y, W   string
	TextY  string
	NumX   string
	Status string // the key, for data-key
}

// newHBarChart draws rows (label, n) largest first, as given.
func newHBarChart(id, title string, labels []string, ns []int) hbarChart {
	const rowH, labelW, w = 22, 110, chartW
	c := hbarChart{ID: id, Title: title, W: w, H: rowH*len(labels) + 4}
	top := 1
	for _, n := range ns {
		top = max(top, n)
	}
	for i, l := range labels {
		y := float64(i*rowH + 2)
		bw := float64(w-labelW-60) * float64(ns[i]) / float64(top)
		c.Rows = append(c.Rows, hbar{Label: l, N: ns[i], Status: l, Y: f1(y), W: f1(max(bw, 1)),
			TextY: f1(y + rowH*0.65), NumX: f1(labelW + bw + 6)})
	}
	return c
}
