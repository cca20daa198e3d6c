package web

import (
	"html/template"
	"time"
	"unicode/utf8"
)

// funcs are the templates' helpers. None returns template.HTML or any
// other type html/template trusts: whatever they return is escaped.
var funcs = template.FuncMap{
	"tm":    formatTime,
	"trunc": truncate,
}

// formatTime writes t in UTC to the second, "" for the zero time.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// truncate cuts s to n runes with an ellipsis.
func truncate(n int, s string) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "…"
}
