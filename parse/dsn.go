package parse

import (
	"strconv"
	"strings"
)

// field is one "Name: value" line of a DSN block, folded lines joined.
type field struct {
	key   string // lower case
	value string
}

// parseBlocks splits a delivery-status body (RFC 3464 §2.1) into blocks of
// header-style fields separated by blank lines. Folded lines (RFC 5322
// §2.2.3) are joined with one space. Lines that are neither a field nor a
// continuation are skipped, as real reports sometimes carry stray text.
func parseBlocks(s string) [][]field {
	var blocks [][]field
	// The fields of all blocks share one array, sized for the fields a
	// report usually has; each block is a slice of it, capped at its end.
	all := make([]field, 0, min(strings.Count(s, ":"), 32))
	start := 0              // index in all of the first field of the current block
	var val strings.Builder // value of the last field, while folded lines follow
	folded := false
	flushVal := func() {
		if folded {
			all[len(all)-1].value = val.String()
			val.Reset()
			folded = false
		}
	}
	for len(s) > 0 {
		var line string
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			line, s = s[:i], s[i+1:]
		} else {
			line, s = s, ""
		}
		line = trimRightASCII(line, " \t\r")
		if line == "" {
			if len(all) > start {
				flushVal()
				blocks = append(blocks, all[start:len(all):len(all)])
				start = len(all)
			}
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(all) > start {
				if !folded {
					v := all[len(all)-1].value
					val.Grow(len(v) + len(line))
					val.WriteString(v)
					folded = true
				}
				if val.Len() > 0 {
					val.WriteByte(' ')
				}
				val.WriteString(strings.TrimSpace(line))
			}
			continue
		}
		i := strings.IndexByte(line, ':')
		if i <= 0 || !isToken(line[:i]) {
			continue
		}
		flushVal()
		all = append(all, field{key: lowerKey(strings.TrimSpace(line[:i])), value: strings.TrimSpace(line[i+1:])})
	}
	if len(all) > start {
		flushVal()
		blocks = append(blocks, all[start:len(all):len(all)])
	}
	return blocks
}

// dsnKeys are the lower-case names of the fields that are read from DSN
// and feedback-report blocks.
var dsnKeys = [...]string{
	"reporting-mta", "original-envelope-id", "dsn-gateway", "received-from-mta", "arrival-date",
	"final-recipient", "original-recipient", "action", "status", "remote-mta", "diagnostic-code",
	"last-attempt-date", "will-retry-until", "final-log-id", "x-actual-recipient",
	"feedback-type", "user-agent", "original-mail-from", "original-rcpt-to", "removal-recipient",
	"source-ip", "reported-domain", "received-date", "authentication-results",
}

// lowerKey returns strings.ToLower(k), without a new string for the names
// in dsnKeys.
func lowerKey(k string) string {
	for _, n := range dsnKeys[:] { // [:]: ranging over the array copied it to the stack
		if len(k) == len(n) && hasPrefixFoldString(k, n) {
			return n
		}
	}
	return strings.ToLower(k)
}

// isToken reports whether s can be a field name (RFC 5322 §3.6.8); a
// trailing space before the colon is tolerated.
func isToken(s string) bool {
	s = trimRightASCII(s, " \t")
	if s == "" || len(s) > 40 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 127 {
			return false
		}
	}
	return true
}

// applyDSN adds the fields of one delivery-status part to the report.
// Per-message fields may appear in any block; a per-recipient block starts
// at its first recipient field, and a second Final-Recipient in the same
// block starts another record (some MTAs forget the blank line).
func (d *decoder) applyDSN(p dsnPart) {
	by := "rfc3464"
	if p.global {
		by = "rfc6533"
	}
	if !p.inReport || p.mistyped {
		by += "/loose"
	}
	for _, blk := range parseBlocks(p.body) {
		var rc *Recipient
		for _, f := range blk {
			if d.perMessage(f) {
				continue
			}
			if !isRecipientField(f.key) {
				continue
			}
			if rc == nil || (f.key == "final-recipient" && rc.FinalRecipient != "") ||
				(f.key == "original-recipient" && rc.OriginalRecipient != "" && rc.FinalRecipient != "") {
				if len(d.rep.Recipients) >= d.lim.MaxRecipients {
					d.warn("more than %d recipients, rest ignored", d.lim.MaxRecipients)
					return
				}
				d.rep.Recipients = append(d.rep.Recipients, Recipient{DecodedBy: by})
				rc = &d.rep.Recipients[len(d.rep.Recipients)-1]
			}
			setRecipientField(rc, f)
		}
	}
}

// perMessage sets a per-message field (RFC 3464 §2.2) and reports whether
// f was one.
func (d *decoder) perMessage(f field) bool {
	r := d.rep
	switch f.key {
	case "reporting-mta":
		r.ReportingMTAType, r.ReportingMTA = splitTyped(f.value)
	case "original-envelope-id":
		r.OriginalEnvelopeID = f.value
	case "dsn-gateway":
		_, r.DSNGateway = splitTyped(f.value)
	case "received-from-mta":
		_, r.ReceivedFromMTA = splitTyped(f.value)
	case "arrival-date":
		r.ArrivalDate = f.value
	default:
		return false
	}
	return true
}

func isRecipientField(k string) bool {
	switch k {
	case "final-recipient", "original-recipient", "action", "status", "remote-mta",
		"diagnostic-code", "last-attempt-date", "will-retry-until", "final-log-id",
		"x-actual-recipient":
		return true
	}
	return false
}

// setRecipientField sets a per-recipient field (RFC 3464 §2.3).
func setRecipientField(rc *Recipient, f field) {
	switch f.key {
	case "final-recipient":
		t, v := splitTyped(f.value)
		rc.FinalRecipientType, rc.FinalRecipient = t, cleanAddress(t, v)
	case "original-recipient":
		t, v := splitTyped(f.value)
		rc.OriginalRecipientType, rc.OriginalRecipient = t, cleanAddress(t, v)
	case "x-actual-recipient":
		if rc.FinalRecipient == "" {
			t, v := splitTyped(f.value)
			rc.FinalRecipientType, rc.FinalRecipient = t, cleanAddress(t, v)
		}
	case "action":
		a := strings.ToLower(f.value)
		if i := strings.IndexAny(a, " \t("); i >= 0 {
			a = a[:i]
		}
		rc.Action = Action(a)
	case "status":
		rc.StatusLiteral = findEnhanced(f.value)
		if rc.StatusLiteral == "" {
			rc.StatusLiteral = strings.TrimSpace(f.value)
		}
	case "remote-mta":
		_, rc.RemoteMTA = splitTyped(f.value)
	case "diagnostic-code":
		t, v := splitTyped(f.value)
		rc.DiagnosticType, rc.DiagnosticCode = t, v
	case "last-attempt-date":
		rc.LastAttemptDate = f.value
	case "will-retry-until":
		rc.WillRetryUntil = f.value
	case "final-log-id":
		rc.FinalLogID = f.value
	}
}

// splitTyped splits "type; value" (RFC 3464 §2.1.2 address-type,
// diagnostic-type, mta-name-type) into a lower-case type and the value.
// A value without a type prefix is returned whole with an empty type.
func splitTyped(v string) (typ, val string) {
	i := strings.IndexByte(v, ';')
	if i <= 0 || i > 20 {
		return "", strings.TrimSpace(v)
	}
	t := strings.TrimSpace(v[:i])
	if strings.ContainsAny(t, " \t@<>\"") {
		return "", strings.TrimSpace(v)
	}
	return strings.ToLower(t), strings.TrimSpace(v[i+1:])
}

// cleanAddress removes angle brackets, quotes and comments around an
// address, and decodes RFC 6533 §3 embedded-unicode-char (\x{HEX}) in
// utf-8 addresses.
func cleanAddress(typ, v string) string {
	v = strings.TrimSpace(v)
	if typ == "x400" {
		// An X.400 O/R address ("/S=user/O=org/ADMD= /C=GB/") has no
		// comments or brackets, and its blanks are part of it.
		return v
	}
	if i := strings.IndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			v = v[i+1 : i+j]
		}
	}
	if strings.HasPrefix(v, `"`) {
		// A quoted local part (RFC 5321 §4.1.2) keeps its quotes.
		if j := strings.Index(v[1:], `"@`); j >= 0 {
			rest := v[j+2:]
			if k := strings.IndexAny(rest, " \t(>,;"); k > 0 {
				rest = rest[:k]
			}
			return v[:j+2] + rest
		}
	}
	if i := strings.IndexAny(v, " \t("); i > 0 {
		if !strings.Contains(v[:i], "@") {
			// "|/usr/bin/prog user@example.com": a program or file
			// recipient that names an address further on.
			if a := firstAddress(v); a != "" {
				return a
			}
		}
		v = v[:i]
	}
	v = strings.Trim(v, "<>\"'.,;:[]")
	if typ == "utf-8" && strings.Contains(v, `\x{`) {
		v = decodeUnicodeEscapes(v)
	}
	return v
}

// decodeUnicodeEscapes decodes RFC 6533 \x{HEXPOINT} sequences.
func decodeUnicodeEscapes(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, `\x{`)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			b.WriteString(s)
			return b.String()
		}
		n, err := strconv.ParseUint(s[i+3:i+j], 16, 32)
		b.WriteString(s[:i])
		if err != nil || n > 0x10FFFF {
			b.WriteString(s[i : i+j+1])
		} else {
			b.WriteRune(rune(n))
		}
		s = s[i+j+1:]
	}
}
