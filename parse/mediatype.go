package parse

import "strings"

// mediaType is what decoding reads of a Content-Type field (RFC 2045
// §5.1): the lower-case type/subtype, the two parameters a multipart
// needs and the charset of a text part.
type mediaType struct {
	typ        string // "multipart/report"
	boundary   string
	reportType string // as written; multipart lower-cases it
	charset    string
	hasCharset bool // a charset parameter, even an empty one
}

// mediaType returns the media type of the entity with header f, as
// contentType (go-message's Header.ContentType) gives it, or, when that
// refuses the field, as guessMediaType and guessBoundary make it out.
//
// Most fields are parsed by parseMediaType, without the map and strings
// mime.ParseMediaType allocates; the others go through contentType.
func (f fields) mediaType() mediaType {
	v := f.get("Content-Type")
	if v == "" {
		return mediaType{typ: "text/plain"} // RFC 2045 §5.2 default
	}
	if m, ok := parseMediaType(v); ok {
		return m
	}
	typ, params, err := f.contentType()
	if err != nil || typ == "" {
		return mediaType{typ: guessMediaType(v), boundary: guessBoundary(v)}
	}
	m := mediaType{typ: typ, boundary: params["boundary"], reportType: params["report-type"]}
	m.charset, m.hasCharset = params["charset"]
	return m
}

// parseMediaType parses a Content-Type value as contentType does, for the
// common cases: ASCII, a type/subtype and at most 4 parameters whose
// values are tokens or quoted strings without backslashes. It reports
// false for anything else (RFC 2231 "*" parameters, RFC 2047 words,
// errors, a repeated parameter), which contentType must then parse.
func parseMediaType(v string) (mediaType, bool) {
	var m mediaType
	for i := 0; i < len(v); i++ {
		if v[i] >= 0x80 {
			return m, false // Unicode spaces and case: left to package mime
		}
	}
	base, rest := v, ""
	if i := strings.IndexByte(v, ';'); i >= 0 {
		base, rest = v[:i], v[i:]
	}
	base = strings.TrimSpace(base)
	typ, after := consumeToken(base)
	if typ == "" {
		return m, false
	}
	if after != "" { // a type alone is accepted too
		if after[0] != '/' {
			return m, false
		}
		if sub, end := consumeToken(after[1:]); sub == "" || end != "" {
			return m, false
		}
	}
	m.typ = asciiLower(base)
	// Parameters: "; name=value" (RFC 2045 §5.1), as mime.ParseMediaType
	// reads them. seen holds those so far, for its duplicate check.
	var seen [4]struct{ name, value string }
	for n := 0; ; n++ {
		rest = strings.TrimSpace(rest)
		if rest == "" || rest == ";" {
			return m, true // package mime ignores one trailing semicolon
		}
		if rest[0] != ';' || n == len(seen) {
			return m, false
		}
		name, r := consumeToken(strings.TrimSpace(rest[1:]))
		r = strings.TrimSpace(r)
		if name == "" || strings.IndexByte(name, '*') >= 0 || r == "" || r[0] != '=' {
			return m, false
		}
		var value string
		var ok bool
		value, rest, ok = consumeValue(strings.TrimSpace(r[1:]))
		if !ok || strings.Contains(value, "=?") {
			return m, false
		}
		for _, p := range seen[:n] {
			if strings.EqualFold(p.name, name) && p.value != value {
				return m, false // mime.ParseMediaType fails on it
			}
		}
		seen[n].name, seen[n].value = name, value
		switch {
		case strings.EqualFold(name, "boundary"):
			m.boundary = value
		case strings.EqualFold(name, "report-type"):
			m.reportType = value
		case strings.EqualFold(name, "charset"):
			m.charset, m.hasCharset = value, true
		}
	}
}

// consumeToken splits s after its leading RFC 2045 token.
func consumeToken(s string) (token, rest string) {
	i := 0
	for i < len(s) && isTokenChar(s[i]) {
		i++
	}
	return s[:i], s[i:]
}

// isTokenChar reports whether c may be part of a token: US-ASCII but
// space, controls and tspecials (RFC 2045 §5.1).
func isTokenChar(c byte) bool {
	if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' {
		return true
	}
	return c > ' ' && c < 0x7f && strings.IndexByte(`()<>@,;:\"/[]?=`, c) < 0
}

// consumeValue splits s after a parameter value, a token or a quoted
// string, and returns the value unquoted. It reports false for a quoted
// string with a backslash or a line break, or without its closing quote.
func consumeValue(s string) (value, rest string, ok bool) {
	if s == "" || s[0] != '"' {
		value, rest = consumeToken(s)
		return value, rest, value != ""
	}
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '"':
			return s[1:i], s[i+1:], true
		case '\\', '\r', '\n':
			return "", s, false
		}
	}
	return "", s, false
}
