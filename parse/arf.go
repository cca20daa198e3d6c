package parse

import "strings"

// parseFeedback reads an RFC 5965 §3.1 machine-readable part.
func (d *decoder) parseFeedback(b string) {
	fb := d.rep.Feedback
	if fb == nil {
		fb = &Feedback{}
		d.rep.Feedback = fb
	}
	for _, blk := range parseBlocks(b) {
		for _, f := range blk {
			switch f.key {
			case "feedback-type":
				fb.FeedbackType = strings.ToLower(f.value)
			case "user-agent":
				fb.UserAgent = f.value
			case "original-mail-from":
				fb.OriginalMailFrom = cleanAddress("", f.value)
			case "original-rcpt-to", "removal-recipient":
				a := cleanAddress("", f.value)
				if fb.OriginalRcptTo == "" {
					fb.OriginalRcptTo = a
				}
				d.rcptTo = append(d.rcptTo, a)
			case "source-ip":
				fb.SourceIP = f.value
			case "reported-domain":
				fb.ReportedDomain = f.value
			case "arrival-date", "received-date":
				fb.ArrivalDate = f.value
			case "authentication-results":
				fb.AuthenticationRes = f.value
			}
		}
	}
}

// complaint adds one complaint record per complained-about recipient: the
// Original-Rcpt-To fields (RFC 5965 §3.2), else the To of the returned
// message, else the report's own To.
func (d *decoder) complaint() {
	if d.rep.Feedback == nil {
		// The machine-readable part mislabelled as text/plain.
		for _, t := range d.textBodies() {
			if indexFold(t.body, "feedback-type:") >= 0 {
				d.parseFeedback(t.body)
				break
			}
		}
	}
	if d.rep.Feedback == nil {
		d.rep.Feedback = &Feedback{FeedbackType: "abuse"}
	}
	addrs := d.rcptTo
	if len(addrs) == 0 && len(d.returned) > 0 {
		h := d.returned[0]
		for _, k := range []string{"X-Hmxmroriginalrecipient", "X-Original-To", "To"} {
			if a := firstAddress(h.get(k)); a != "" {
				addrs = []string{a}
				break
			}
		}
	}
	if len(addrs) == 0 && d.rep.Original != nil {
		if a := firstAddress(d.rep.Original.To); a != "" {
			addrs = []string{a}
		}
	}
	by := "arf"
	if d.reportTyp != "feedback-report" {
		by = "arf/loose"
	}
	if len(addrs) == 0 {
		addrs = []string{""}
	}
	for _, a := range addrs {
		if len(d.rep.Recipients) >= d.lim.MaxRecipients {
			break
		}
		d.rep.Recipients = append(d.rep.Recipients, Recipient{
			FinalRecipient: a, Kind: KindComplaint, Class: ClassNone, DecodedBy: by,
		})
	}
	if d.rep.Feedback.OriginalRcptTo == "" {
		d.rep.Feedback.OriginalRcptTo = addrs[0]
	}
}

// firstAddress returns the first addr-spec found in a header value.
func firstAddress(v string) string {
	if i := strings.IndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 && strings.Contains(v[i:i+j], "@") {
			return strings.TrimSpace(v[i+1 : i+j])
		}
	}
	for _, w := range strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' || r == ';' }) {
		if strings.Contains(w, "@") {
			return strings.Trim(w, "<>\"'()[].:")
		}
	}
	return ""
}

// isJMRP recognises a complaint in the layout of Microsoft's junk mail
// reporting program: a plain multipart message whose attached message
// carries X-HmXmrOriginalRecipient, or a "complaint about message"
// subject.
func (d *decoder) isJMRP() bool {
	for _, h := range d.returned {
		if h.has("X-Hmxmroriginalrecipient") {
			return true
		}
	}
	return hasPrefixFoldString(strings.TrimSpace(d.rep.Subject), "complaint about message")
}

// unsubscribe recognises a one-line unsubscribe request sent by a mail
// client on the user's behalf (Apple Mail's "unsubscribe" button and
// mailto: List-Unsubscribe, RFC 2369 §3.2): a complaint of type opt-out by
// the From address.
func (d *decoder) unsubscribe() bool {
	subj := asciiLower(strings.TrimSpace(d.rep.Subject))
	if subj != "unsubscribe" && !strings.HasPrefix(subj, "unsubscribe ") {
		return false
	}
	a := firstAddress(d.rep.From)
	if a == "" {
		return false
	}
	d.rep.Feedback = &Feedback{FeedbackType: "opt-out", OriginalRcptTo: a}
	d.rep.Recipients = append(d.rep.Recipients, Recipient{
		FinalRecipient: a, Kind: KindComplaint, Class: ClassNone, DecodedBy: "text/unsubscribe",
	})
	return true
}
