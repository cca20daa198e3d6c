package parse

import "strings"

// heuristics runs the non-standard rules on a message without a
// delivery-status part. The bounce text is cut before the copy of the
// returned message; each rule returns the records it found, and the first
// rule that finds any wins.
func (d *decoder) heuristics() {
	t := d.newBounceText()
	rank := t.rank
	if !t.bounce {
		if !d.isNoticeSender() {
			return
		}
		// A machine's or list manager's error notice in a layout
		// no other rule knows: only the near-failure rule reads it.
		rank = func() ([]Recipient, string) { return ruleNear(t), ruleNearName }
	}
	d.permanent = saysPermanent(t.lower)
	if d.rep.ReportingMTA == "" {
		d.rep.ReportingMTA = reportingHost(t.text)
	}
	rs, by := rank()
	if len(rs) == 0 && t.outerNotice {
		// A person's forwarded bounce with a word of its own
		// ("delivery failed, see below"): the returned bounce says who.
		t.readWhole()
		rs, by = rank()
	}
	if len(rs) == 0 {
		rs, by = ruleSubject(t), ruleSubjectName
	}
	if t.byReport {
		by += ruleReportText
	}
	if t.outerNotice {
		by += ruleOuterNotice
	}
	for i := range rs {
		rs[i].DecodedBy = by
	}
	rs = t.expansions(rs)
	for i := range rs {
		if len(d.rep.Recipients) >= d.lim.MaxRecipients {
			break
		}
		rc := rs[i]
		if rc.Action == "" {
			rc.Action = t.action
			rc.DecodedBy += t.actionBy
		}
		if rc.DiagnosticCode == "" {
			rc.DiagnosticCode = t.diagnostic(rc.FinalRecipient)
		}
		if rc.RemoteMTA == "" {
			rc.RemoteMTA = remoteHost(rc.DiagnosticCode)
		}
		d.rep.Recipients = append(d.rep.Recipients, rc)
	}
}

// textRule is one named non-standard rule. A weak rule takes addresses
// the notice does not present as failed (every address of its text, the
// returned message's To); it never outranks X-Failed-Recipients.
type textRule struct {
	name string
	fn   func(t *bounceText) []Recipient
	weak bool
}

// textRules are tried in order, after the X-Failed-Recipients header is
// read (see rank). Rules named after an MTA anchor on that MTA's own
// wording; text/listed and text/any are general.
var textRules = []textRule{
	{"text/qmail", ruleAngleColon("qmail-send program", "qmail-"), false},
	{"text/postfix", ruleAngleColon("this is the mail system at host", "postfix"), false},
	{"text/sendmail", ruleSendmail, false},
	{"text/exim", ruleExim, false},
	{"text/angle-colon", ruleAngleColon(""), false},
	{"text/rcpt-to", ruleRcptTo, false},
	{"text/bare-name", ruleBareName, false},
	{"text/listed", ruleListed, false},
	{ruleNearName, ruleNearOfMany, true},
	{"text/any", ruleAny, true},
	{"text/original-to", ruleOriginalTo, true},
}

func recipients(addrs []string) []Recipient {
	rs := make([]Recipient, 0, len(addrs))
	for _, a := range addrs {
		rs = append(rs, Recipient{FinalRecipient: a, FinalRecipientType: "rfc822"})
	}
	return rs
}

// ruleXFailed reads Exim's X-Failed-Recipients header.
func ruleXFailed(t *bounceText) []Recipient {
	v := t.d.top.get("X-Failed-Recipients")
	if v == "" {
		return nil
	}
	return recipients(t.listed(v))
}

// ruleAngleColon reads "<addr>:" blocks: qmail (#5.1.1 style codes) and
// Postfix's text notice put each failed address at the start of a line in
// angle brackets with a colon, the diagnostic on the lines after. With
// signatures given, the rule applies only when the text has one.
func ruleAngleColon(signatures ...string) func(t *bounceText) []Recipient {
	return func(t *bounceText) []Recipient {
		ok := len(signatures) == 0 || signatures[0] == ""
		for _, s := range signatures {
			if s != "" && strings.Contains(t.lower, s) {
				ok = true
			}
		}
		if !ok {
			return nil
		}
		var addrs []string
		inRecord := false // on the indented lines that continue a record's diagnostic
		for _, raw := range strings.Split(t.text, "\n") {
			line := strings.TrimSpace(raw)
			indented := line != "" && (raw[0] == ' ' || raw[0] == '\t')
			if !indented {
				inRecord = false
			}
			if !strings.HasPrefix(line, "<") {
				continue
			}
			j := angleColon(line)
			if j < 0 || inRecord {
				// An "<addr>:" inside the folded diagnostic of the
				// record above it is the remote server's ("550 5.1.1
				// <sender@example.org>: unauthorized sender").
				continue
			}
			addrs = append(addrs, t.listed(line[:j])...)
			inRecord = !indented
		}
		return recipients(dedupe(addrs))
	}
}

// angleColon returns the end of the "<addr>" that starts line when a
// colon follows it, after blanks and one parenthesised comment such as
// Postfix's "(expanded from <alias@example.org>)"; else -1.
func angleColon(line string) int {
	j := strings.IndexByte(line, '>')
	if j < 0 {
		return -1
	}
	rest := strings.TrimLeft(line[j+1:], " \t")
	if strings.HasPrefix(rest, "(") {
		k := strings.IndexByte(rest, ')')
		if k < 0 {
			return -1
		}
		rest = strings.TrimLeft(rest[k+1:], " \t")
	}
	if !strings.HasPrefix(rest, ":") {
		return -1
	}
	return j + 1
}

// ruleSendmail reads Sendmail's text: the "following addresses had
// permanent fatal errors" list and the session transcript ("RCPT
// To:<addr>" or "<addr>... reason").
func ruleSendmail(t *bounceText) []Recipient {
	i := strings.Index(t.lower, "following addresses had")
	if i < 0 {
		i = strings.Index(t.lower, "transcript of session follows")
	}
	if i < 0 {
		return nil
	}
	var addrs []string
	rest := t.text[i:]
	for _, line := range strings.Split(rest, "\n") {
		l := strings.TrimSpace(line)
		ll := strings.ToLower(l)
		switch {
		case strings.HasPrefix(l, "<<<"), strings.HasPrefix(ll, ">>> mail from"):
			// The remote server's reply, or our MAIL command: the
			// address there is the sender's.
		case strings.HasPrefix(l, "<") && strings.HasSuffix(l, ">"), strings.Contains(l, "... "),
			strings.HasPrefix(ll, ">>> rcpt to:"):
			addrs = append(addrs, t.listed(l)...)
		}
		if len(addrs) > 0 && l == "" {
			break
		}
	}
	return recipients(dedupe(addrs))
}

// ruleExim reads Exim's "The following address(es) failed:" list: each
// address on its own indented line, the reason indented below it.
func ruleExim(t *bounceText) []Recipient {
	i := -1
	for _, m := range []string{"following address(es) failed", "following address failed",
		"following addresses failed", "following recipients failed"} {
		if j := strings.Index(t.lower, m); j >= 0 && (i < 0 || j < i) {
			i = j
		}
	}
	if i < 0 {
		return nil
	}
	rest := t.text[i:]
	if j := strings.IndexByte(rest, '\n'); j >= 0 {
		rest = rest[j+1:]
	}
	var addrs []string
	for _, para := range strings.Split(rest, "\n\n") {
		line := strings.TrimSpace(firstLine(para))
		if line == "" {
			continue
		}
		as := t.listed(line)
		if len(as) == 0 {
			if strings.Contains(line, "generated by") || strings.HasPrefix(line, "pipe to") || strings.HasPrefix(line, "save to") {
				as = t.listed(para)
			}
		}
		if len(as) == 0 {
			if len(addrs) > 0 {
				break
			}
			continue
		}
		addrs = append(addrs, as[len(as)-1])
	}
	return recipients(dedupe(addrs))
}

func firstLine(s string) string {
	s = strings.TrimLeft(s, "\n")
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// listMarkers introduce a list of failed recipients in many MTAs'
// wording (Exchange, Gmail, Notes, IMail, Yahoo and others); listSet
// finds the first of them, at a word start, in one pass.
var listMarkers = []string{
	"following recipient", "following address", "following destination", "following e-mail address",
	"following email address", "did not reach", "could not be delivered to", "delivery to the following",
	"error delivering your mail to", "unable to deliver message to", "could not deliver", "not delivered to",
	"delivery has failed to these recipients", "failed to deliver to", "undeliverable to", "was not delivered to",
	"recipient:", "recipients:", "to the following", "delivery failed for", "unknown user:",
}

// ruleListed takes the addresses after the first wording that introduces
// a list of failed recipients.
func ruleListed(t *bounceText) []Recipient {
	i := t.listMarker()
	if i < 0 {
		return nil
	}
	return recipients(t.notContacts(t.text[i:]))
}

var listSet = newPhraseSet(listMarkers...)

// listMarker returns the offset in t.text of the first of listMarkers,
// or -1; it is looked up once.
func (t *bounceText) listMarker() int {
	if !t.listAtDone {
		t.listAt, t.listAtDone = listSet.index(t.lower), true
	}
	return t.listAt
}

// contactWords, shortly before an address on its line, mark it as an
// address to write to for help, not a failed recipient.
var contactWords = []string{"contact", "send mail to", "write to", "e-mail to", "email to", "reply to", "helpdesk",
	"assistance", "questions", "administrator at", "問い合わせ", "問合せ", "連絡"}

// notContacts is addresses without those mentioned as contacts.
func (t *bounceText) notContacts(s string) []string {
	all := t.addresses(s)
	out := all[:0:0]
	for _, a := range all {
		i := indexFold(s, strings.ToLower(a))
		if i < 0 {
			out = append(out, a)
			continue
		}
		start := strings.LastIndexByte(s[:i], '\n') + 1
		if i-start > 60 {
			start = i - 60
		}
		before := asciiLower(s[start:i])
		contact := false
		for _, w := range contactWords {
			if strings.Contains(before, w) {
				contact = true
				break
			}
		}
		if !contact {
			out = append(out, a)
		}
	}
	return out
}

// ruleRcptTo takes the addresses of "RCPT TO:" lines in an SMTP
// transcript or a summary of the failed message.
func ruleRcptTo(t *bounceText) []Recipient {
	var addrs []string
	for off := 0; ; {
		i := strings.Index(t.lower[off:], "rcpt to:")
		if i < 0 {
			break
		}
		i += off
		end := strings.IndexByte(t.text[i:], '\n')
		if end < 0 {
			end = len(t.text) - i
		}
		addrs = append(addrs, t.listed(t.text[i:i+end])...)
		off = i + end
	}
	return recipients(dedupe(addrs))
}

// ruleAny takes every address in the bounce text.
func ruleAny(t *bounceText) []Recipient {
	return recipients(t.notContacts(t.text))
}

// ruleOriginalTo falls back on the To of the returned message when a
// failure notice names no address. Only a single To is trusted.
func ruleOriginalTo(t *bounceText) []Recipient {
	o := t.d.rep.Original
	if o == nil {
		return nil
	}
	as := t.addresses(o.To)
	if len(as) != 1 {
		return nil
	}
	return recipients(as)
}

func dedupe(a []string) []string {
	seen := map[string]bool{}
	out := a[:0]
	for _, s := range a {
		k := strings.ToLower(s)
		if !seen[k] {
			seen[k] = true
			out = append(out, s)
		}
	}
	return out
}

// saysPermanent reports whether a notice calls its failure permanent.
func saysPermanent(lower string) bool {
	return permanentSet.contains(lower)
}

// permanentSet holds the wording of a notice that calls its failure
// permanent or says it gave up.
var permanentSet = newPhraseSet("permanent error", "permanent failure", "failed permanently", "giving up",
	"gave up", "given up", "not going to try again", "will not be retried", "no further attempts")

// reportingHost finds the host a plain-text notice says it comes from:
// "This is the mail system at host mx.example.net." (Postfix), "Hi. This
// is the qmail-send program at mx.example.net." (qmail), "This is the
// DragonFly Mail Agent v0.13 at mx.example.net." Only the first lines are
// searched.
func reportingHost(text string) string {
	head := truncate(text, 600)
	for len(head) > 0 {
		line := head
		if k := strings.IndexByte(head, '\n'); k >= 0 {
			line, head = head[:k], head[k+1:]
		} else {
			head = ""
		}
		i := indexFold(line, "this is the ")
		if i < 0 {
			continue
		}
		j := lastIndexFold(line, " at ")
		if j < i {
			continue
		}
		rest := strings.TrimPrefix(strings.TrimSpace(line[j+4:]), "host ")
		if k := strings.IndexAny(rest, " \t,;"); k >= 0 {
			rest = rest[:k]
		}
		rest = strings.TrimRight(rest, ".")
		if isHostname(rest) {
			return rest
		}
	}
	return ""
}

// remoteHost finds the remote server named in a diagnostic: "host
// mx.example.com[192.0.2.1] said:" (Postfix), "host mx.example.com
// [192.0.2.1]" (Exim), "mx.example.com [192.0.2.1] did not like our RCPT
// TO" (DragonFly), "remote host 192.0.2.32 said:" (qmail).
func remoteHost(diag string) string {
	for off := 0; off < len(diag); {
		i := indexFold(diag[off:], "host ")
		if i < 0 {
			break
		}
		i += off + len("host ")
		tok := diag[i:]
		if k := strings.IndexAny(tok, " \t[(:,;"); k >= 0 {
			tok = tok[:k]
		}
		tok = strings.TrimRight(tok, ".")
		if isHostname(tok) || isIPv4(tok) {
			return tok
		}
		off = i
	}
	return ""
}

// isHostname reports whether s looks like a domain name with a dot.
func isHostname(s string) bool {
	if len(s) < 4 || len(s) > 253 || !strings.Contains(s, ".") || s[0] == '.' || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && c != '.' && c != '-' && c != '_' {
			return false
		}
	}
	return isLetter(s[len(s)-1])
}

func isIPv4(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return false
	}
	for _, p := range parts {
		if p == "" || len(p) > 3 || digits(p, 3) != len(p) {
			return false
		}
	}
	return true
}
