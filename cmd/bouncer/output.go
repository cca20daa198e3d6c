package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// timeLayout is how tables show a time: local, with its UTC offset, so a
// time copied from one machine means the same on another. parseSince
// reads it back.
const timeLayout = "2006-01-02 15:04:05 -07:00"

// showTime formats t for a table, "-" for the zero time.
func showTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(timeLayout)
}

// writeList prints items as JSON lines, or as a table: header, then one
// row per item, or the words of empty when there is none. header and rows
// separate their columns with tabs.
func writeList[T any](w io.Writer, items []T, asJSON bool, header, empty string, row func(T) string) error {
	out := bufio.NewWriter(w)
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetEscapeHTML(false)
		for _, it := range items {
			if err := enc.Encode(it); err != nil {
				return err
			}
		}
		return out.Flush()
	}
	tb := newTable(out, header, empty)
	for _, it := range items {
		tb.row(row(it))
	}
	if err := tb.close(); err != nil {
		return err
	}
	return out.Flush()
}

// table is a streamed table: the header goes out before the first row,
// and a table that got no row prints the words of empty instead, so an
// empty answer says so.
type table struct {
	w      io.Writer
	tw     *tabwriter.Writer
	header string
	empty  string
	rows   int
}

func newTable(w io.Writer, header, empty string) *table {
	return &table{w: w, tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0), header: header, empty: empty}
}

// row writes one row; its columns are separated by tabs.
func (t *table) row(s string) error {
	if t.rows == 0 {
		fmt.Fprintln(t.tw, t.header)
	}
	t.rows++
	_, err := fmt.Fprintln(t.tw, s)
	return err
}

// close flushes the table, or writes the empty words.
func (t *table) close() error {
	if t.rows == 0 {
		_, err := fmt.Fprintln(t.w, t.empty)
		return err
	}
	return t.tw.Flush()
}

// commandLine renders "bouncer CMD" with the flags set on fs (as given,
// -config first and with one dash, as README writes it), the pairs in
// extra ("--before", ID) appended, every value quoted for a POSIX shell
// where it needs it: a line to run as printed.
func commandLine(cmd string, fs *flag.FlagSet, skip string, extra ...string) string {
	parts := []string{"bouncer", cmd}
	if f := fs.Lookup("config"); f != nil && f.Value.String() != "" {
		parts = append(parts, "-config", shellQuote(f.Value.String()))
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "config" || f.Name == skip {
			return
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			if f.Value.String() == "true" {
				parts = append(parts, "--"+f.Name)
			}
			return
		}
		parts = append(parts, "--"+f.Name, shellQuote(f.Value.String()))
	})
	for _, e := range extra {
		parts = append(parts, shellQuote(e))
	}
	return strings.Join(parts, " ")
}

// shellQuote returns s as one POSIX shell word: as it is when it holds
// only characters no shell treats specially, else in single quotes.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./_-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
