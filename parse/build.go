package parse

import (
	"strings"
)

// finish turns what the walk collected into recipient records, in the
// order of trust: delivery-status parts, a feedback report, an
// auto-reply, then the plain-text rules.
func (d *decoder) finish() {
	for _, p := range d.dsn {
		d.applyDSN(p)
	}
	if len(d.rep.Recipients) == 0 {
		d.mistypedDSN()
	}
	d.setOriginal()
	switch {
	case d.feedback || d.reportTyp == "feedback-report" || len(d.rep.Recipients) == 0 && d.isJMRP():
		d.complaint()
	case len(d.rep.Recipients) > 0:
	case d.sesNotification():
	case d.unsubscribe():
	case !d.looksLikeBounce() && d.autoReply():
	default:
		d.heuristics()
	}
	d.repairAddresses()
	d.expandedRecords()
	d.finishRecipients()
	d.setKind()
}

// repairAddresses replaces a delivery-status recipient that is not an
// address ("@mx.example.org", a file or program) with the one address the
// bounce text or the returned message names that no other record has. It
// repairs a report with one such record only: with more, which address
// belongs to which record is a guess.
func (d *decoder) repairAddresses() {
	broken := -1
	for i, rc := range d.rep.Recipients {
		if rc.Kind != "" || isAddress(rc.FinalRecipient) || isAddress(rc.OriginalRecipient) {
			continue
		}
		if broken >= 0 {
			return
		}
		broken = i
	}
	if broken < 0 {
		return
	}
	have := map[string]bool{}
	for _, rc := range d.rep.Recipients {
		have[strings.ToLower(rc.FinalRecipient)] = true
		have[strings.ToLower(rc.OriginalRecipient)] = true
	}
	t := d.newBounceText()
	var cands []string
	for _, a := range t.addresses(t.text) {
		if !have[strings.ToLower(a)] {
			cands = append(cands, a)
		}
	}
	if len(cands) == 0 && d.rep.Original != nil {
		cands = t.addresses(d.rep.Original.To)
	}
	if len(cands) == 1 {
		rc := &d.rep.Recipients[broken]
		d.warn("final-recipient %q is not an address; using %s from the text", truncate(rc.FinalRecipient, 80), cands[0])
		rc.FinalRecipient = cands[0]
		rc.DecodedBy += "+text"
	}
}

// isAddress reports whether a looks like local@domain.
func isAddress(a string) bool {
	i := strings.LastIndexByte(a, '@')
	return i > 0 && i < len(a)-1 && !strings.ContainsAny(a, " \t/|")
}

// mistypedDSN looks for delivery-status fields in text parts: reports whose
// delivery-status part was labelled text/plain, or pasted into the body.
func (d *decoder) mistypedDSN() {
	for _, t := range d.textBodies() {
		i := recipientField(t.body)
		if i < 0 || indexFold(t.body, "status:") < 0 && indexFold(t.body, "action:") < 0 {
			continue
		}
		// Start at the beginning of the block holding the first field, so
		// per-message fields above it are read too.
		start := strings.LastIndex(t.body[:i], "\n\n")
		if start < 0 {
			start = 0
		}
		if j := indexFold(t.body[:i], "reporting-mta:"); j >= 0 && j < start {
			start = strings.LastIndex(t.body[:j], "\n") + 1
		}
		d.applyDSN(dsnPart{body: t.body[start:], mistyped: true})
		if len(d.rep.Recipients) > 0 {
			return
		}
	}
}

// recipientField returns the offset of the first "Final-Recipient:" in
// s, else of the first "Original-Recipient:" (either in any case), or
// -1. One scan for "-recipient:" finds both in a text that has neither.
func recipientField(s string) int {
	orig := -1
	for off := 0; off < len(s); {
		j := indexFold(s[off:], "-recipient:")
		if j < 0 {
			break
		}
		j += off
		switch {
		case j >= 5 && hasPrefixFoldString(s[j-5:], "final"):
			return j - 5
		case orig < 0 && j >= 8 && hasPrefixFoldString(s[j-8:], "original"):
			orig = j - 8
		}
		off = j + 1
	}
	return orig
}

// setOriginal fills Report.Original from the first returned message
// header, or from headers quoted in the text of a plain-text bounce.
func (d *decoder) setOriginal() {
	if len(d.returned) > 0 {
		d.rep.Original = d.originalFrom(d.returned[0])
		return
	}
	for _, t := range d.textBodies() {
		if h, ok := inlineHeader(t.body, &d.hdr); ok {
			d.rep.Original = d.originalFrom(h)
			return
		}
	}
}

func (d *decoder) originalFrom(h fields) *Original {
	o := &Original{
		MessageID: strings.TrimSpace(h.get("Message-Id")),
		From:      decodeWords(h.get("From")),
		To:        decodeWords(h.get("To")),
		Subject:   decodeWords(h.get("Subject")),
		Date:      h.get("Date"),
	}
	for _, x := range h.f {
		k := x.key
		if len(k) > 2 && (k[0] == 'X' || k[0] == 'x') && k[1] == '-' {
			if o.XHeaders == nil {
				o.XHeaders = make(map[string]string)
			}
			if _, ok := o.XHeaders[k]; !ok && len(o.XHeaders) < 50 {
				o.XHeaders[k] = truncate(x.value, 1000)
			}
		}
	}
	if o.MessageID == "" && o.From == "" && o.To == "" && o.Subject == "" && o.Date == "" && o.XHeaders == nil {
		return nil
	}
	return o
}

// finishRecipients resolves status, reason, kind and class of each record.
func (d *decoder) finishRecipients() {
	for i := range d.rep.Recipients {
		rc := &d.rep.Recipients[i]
		if rc.Kind == KindComplaint || rc.Kind == KindAutoReply {
			continue
		}
		if rc.DiagnosticCode == "" && i < 100 {
			rc.DiagnosticCode = d.textDiagnostic(rc)
		}
		if rc.Action == Delayed && givenUpRecordSet.contains(asciiLower(rc.DiagnosticCode)) {
			// The error of this recipient says it was given up
			// (OpenSMTPD's "Envelope expired" in a delayed-looking
			// report): final, whatever the Action field says.
			rc.Action = Failed
			rc.DecodedBy += ruleExpiredFinal
		}
		tr := textReason(rc.DiagnosticCode)
		if rc.Status == "" {
			rc.Reason = classify(rc.StatusLiteral, tr)
			resolveStatus(rc, d.permanent)
		}
		rc.Reason = classify(rc.Status, tr)
		rc.Kind, rc.Class = kindOf(rc.Action, rc.Status)
		finalClass(rc)
		if rc.useOriginal() {
			rc.DecodedBy += ruleOriginalAddress
		}
		if rc.Kind == KindDelivered {
			rc.Reason = ""
		}
	}
}

// kindOf derives kind and class from the Action (RFC 3464 §2.3.3) and the
// status class (RFC 3463 §3.1).
func kindOf(a Action, status string) (Kind, Class) {
	c := byte(0)
	if status != "" {
		c = status[0]
	}
	switch a {
	case Delayed:
		return KindDelay, ClassSoft
	case Delivered, Relayed, Expanded:
		return KindDelivered, ClassNone
	case Failed:
		if c == '4' {
			return KindBounce, ClassSoft
		}
		return KindBounce, ClassHard
	}
	switch c {
	case '2':
		return KindDelivered, ClassNone
	case '4':
		return KindBounce, ClassSoft
	case '5':
		return KindBounce, ClassHard
	}
	return KindBounce, ClassHard
}

// setKind sets Report.Kind: the kind of the first failed recipient, else
// of the first recipient.
func (d *decoder) setKind() {
	rs := d.rep.Recipients
	for _, rc := range rs {
		if rc.Kind == KindBounce {
			d.rep.Kind = KindBounce
			return
		}
	}
	if len(rs) > 0 {
		d.rep.Kind = rs[0].Kind
	}
}

// indexFold is strings.Index ignoring ASCII case; sub must be lower case.
// When sub has a byte that case does not change (":" of a field name,
// "@" of an address), the candidates are found by strings.IndexByte on
// that byte, which skips text many bytes at a time; else every position
// whose byte is sub's first letter in either case is tried.
func indexFold(s, sub string) int {
	if len(sub) == 0 {
		return 0
	}
	if k := foldAnchor(sub); k >= 0 {
		c := sub[k]
		for off := k; off < len(s); {
			j := strings.IndexByte(s[off:], c)
			if j < 0 {
				return -1
			}
			i := off + j - k
			if i+len(sub) > len(s) {
				return -1
			}
			if hasPrefixFoldString(s[i:], sub) {
				return i
			}
			off += j + 1
		}
		return -1
	}
	first := sub[0]
	upper := first
	if first >= 'a' && first <= 'z' {
		upper = first - 32
	}
	for i := 0; i+len(sub) <= len(s); i++ {
		c := s[i]
		if c != first && c != upper {
			continue
		}
		if hasPrefixFoldString(s[i:], sub) {
			return i
		}
	}
	return -1
}

// lastIndexFold is strings.LastIndex ignoring ASCII case; sub must be
// lower case.
func lastIndexFold(s, sub string) int {
	for i := len(s) - len(sub); i >= 0; i-- {
		if hasPrefixFoldString(s[i:], sub) {
			return i
		}
	}
	return -1
}

// foldAnchor returns the offset in sub of an ASCII byte that is no
// letter, preferring one that text has few of (not a space, a dot or a
// line end), or -1.
func foldAnchor(sub string) int {
	k := -1
	for j := 0; j < len(sub); j++ {
		c := sub[j]
		if c >= 0x80 || isLetter(c) {
			continue
		}
		if c != ' ' && c != '.' && c != '\n' {
			return j
		}
		if k < 0 {
			k = j
		}
	}
	return k
}
