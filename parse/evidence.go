package parse

import "strings"

// Which address failed, when a plain-text notice and its headers disagree:
// the rules of the package comment's "Which address failed" section.

// Rule names, as appended to Recipient.DecodedBy.
const (
	ruleOverHeader  = "+over-header"  // the notice's failed address outranked X-Failed-Recipients
	ruleExpanded    = "+expanded"     // an alias the notice expanded is the original recipient, not a record
	ruleReportText  = "+report-text"  // a delivery-status report without a recipient block, read as a notice
	ruleOuterNotice = "+outer-notice" // a bounce of a bounce: the notice's own text, not the returned bounce's
	ruleOverAlias   = "+over-alias"   // X-Failed-Recipients named only the alias the failed addresses were expanded from
)

// rank runs the text rules and weighs what the first one that finds
// anything says against the X-Failed-Recipients header. The header wins
// unless the notice attaches an error to addresses the header does not
// name, and names none of the header's: then those addresses win. A weak
// rule (every address of the text, the returned message's To) never
// outranks the header.
func (t *bounceText) rank() ([]Recipient, string) {
	header := ruleXFailed(t)
	for _, r := range textRules {
		rs := r.fn(t)
		if len(rs) == 0 {
			continue
		}
		if len(header) == 0 {
			return rs, r.name
		}
		if r.weak {
			break
		}
		if won := t.contradicting(header, rs); len(won) > 0 {
			return won, r.name + ruleOverHeader
		}
		if t.aliasesOf(header, rs) {
			return rs, r.name + ruleOverAlias
		}
		break
	}
	if len(header) > 0 {
		return header, "header/x-failed-recipients"
	}
	return nil, ""
}

// contradicting returns the records of rs whose address the notice
// attaches an error to, when the header names none of rs and none of its
// addresses has an error attached in the notice; else nil. The bounce's
// own From and To are never among them.
func (t *bounceText) contradicting(header, rs []Recipient) []Recipient {
	named := map[string]bool{}
	for _, rc := range rs {
		named[strings.ToLower(rc.FinalRecipient)] = true
	}
	for _, h := range header {
		if named[strings.ToLower(h.FinalRecipient)] || t.errorAttached(h.FinalRecipient) {
			return nil
		}
	}
	var won []Recipient
	for _, rc := range rs {
		if !t.skip[strings.ToLower(rc.FinalRecipient)] && t.errorAttached(rc.FinalRecipient) {
			won = append(won, rc)
		}
	}
	return won
}

// aliasesOf reports whether every address of the header is one that the
// notice says an address of rs was expanded from: the header names the
// list or forwarding address, the notice the more specific member that
// failed (a relay that writes the address it was given).
func (t *bounceText) aliasesOf(header, rs []Recipient) bool {
	aliases := map[string]bool{}
	for _, rc := range rs {
		if a := t.expandedFrom(rc.FinalRecipient); a != "" && !strings.EqualFold(a, rc.FinalRecipient) {
			aliases[strings.ToLower(a)] = true
		}
	}
	if len(aliases) == 0 {
		return false
	}
	for _, h := range header {
		if !aliases[strings.ToLower(h.FinalRecipient)] {
			return false
		}
	}
	return true
}

// errorAttached reports whether the notice attaches an error to addr:
// the text about it where the notice lists it (lineAround) has a failure
// code (4yz or 5yz reply, 4.x.x or 5.x.x status) or a reason's wording.
func (t *bounceText) errorAttached(addr string) bool {
	if addr == "" {
		return false
	}
	i := listedAt(t.text, strings.ToLower(addr))
	if i < 0 {
		return false
	}
	p := lineAround(t.text, i, len(addr))
	return isFailureCode(findEnhanced(p)) || isFailureCode(findReplyCode(p)) || textReason(p) != ""
}

// isFailureCode reports whether an enhanced status or reply code is a
// failure (class 4 or 5).
func isFailureCode(c string) bool {
	return c != "" && (c[0] == '4' || c[0] == '5')
}

// expansionWords introduce, right after a failed address, the address it
// was expanded from: Postfix "<member@example.net> (expanded from
// <list@example.org>): ...", Exim "member@example.net\n (generated from
// list@example.org)" and "(ultimately generated from ...)".
var expansionWords = []string{"(expanded from", "(generated from", "(ultimately generated from"}

// expansions applies the alias rule to the records of a text rule: an
// address that the notice says another failed address was expanded from
// (a mailing-list alias, a forwarding address) becomes that record's
// original recipient, and is not a failed recipient of its own.
func (t *bounceText) expansions(rs []Recipient) []Recipient {
	aliases := map[string]bool{}
	for i := range rs {
		rc := &rs[i]
		a := t.expandedFrom(rc.FinalRecipient)
		if a == "" || strings.EqualFold(a, rc.FinalRecipient) {
			continue
		}
		if rc.OriginalRecipient == "" {
			rc.OriginalRecipient, rc.OriginalRecipientType = a, "rfc822"
		}
		aliases[strings.ToLower(a)] = true
		rc.DecodedBy += ruleExpanded
	}
	if len(aliases) == 0 {
		return rs
	}
	out := rs[:0]
	for _, rc := range rs {
		if !aliases[strings.ToLower(rc.FinalRecipient)] || rc.OriginalRecipient != "" {
			out = append(out, rc)
		}
	}
	return out
}

// expandedFrom returns the address that the notice says addr was
// expanded from, within the two lines that follow its listing, or "".
func (t *bounceText) expandedFrom(addr string) string {
	i := listedAt(t.text, strings.ToLower(addr))
	if i < 0 {
		return ""
	}
	s := t.text[i+len(addr):]
	end := 0
	for n := 0; n < 2 && end < len(s); n++ {
		j := strings.IndexByte(s[end:], '\n')
		if j < 0 {
			end = len(s)
			break
		}
		end += j + 1
	}
	s = asciiLower(s[:min(end, 400)])
	for _, w := range expansionWords {
		k := strings.Index(s, w)
		if k < 0 {
			continue
		}
		rest := t.text[i+len(addr)+k+len(w):]
		if e := strings.IndexByte(rest, ')'); e >= 0 {
			rest = rest[:e]
		}
		if as := scanAddresses(rest); len(as) > 0 {
			return as[0].addr
		}
	}
	return ""
}

// expandedRecords applies the alias rule to delivery-status records:
// Exim writes the topmost parent address (the alias or forwarding
// address) as Final-Recipient of a member that failed, and names the
// member only in its text, "member@example.net\n (generated from
// list@example.org)". A record whose Final-Recipient the text gives as
// the address other addresses were expanded from stands for one of those
// members: the member becomes the final recipient, and the alias the
// original recipient when the record has none. With one member and one
// record of that alias the two go together; with more, each record goes
// to the member whose text has the record's Diagnostic-Code (Exim lists
// the members in its text and its report in different orders). When a
// record matches no member left, the records of that alias are left as
// they are: which member is which record would be a guess.
func (d *decoder) expandedRecords() {
	rs := d.rep.Recipients
	if len(rs) == 0 || !d.mayExpand() {
		return
	}
	t := d.newBounceText()
	finals := map[string][]int{} // lower-case Final-Recipient -> its failed or delayed records
	for i, rc := range rs {
		// An alias is rightly the Final-Recipient of an "expanded"
		// record (RFC 3464 §2.3.3), as of "delivered" and "relayed" ones.
		failing := rc.Action == "" || rc.Action == Failed || rc.Action == Delayed
		if rc.Kind == "" && failing && isAddress(rc.FinalRecipient) {
			k := strings.ToLower(rc.FinalRecipient)
			finals[k] = append(finals[k], i)
		}
	}
	type member struct {
		addr  string
		at    int    // offset of its listing in t.text
		about string // the text about it, once the members are known
	}
	members := map[string][]member{} // lower-case alias -> its members, in text order
	var starts []int
	for _, a := range t.listed(t.text) {
		k := strings.ToLower(a)
		if len(finals[k]) > 0 {
			continue
		}
		if x := strings.ToLower(t.expandedFrom(a)); x != "" && x != k && len(finals[x]) > 0 {
			at := listedAt(t.text, k)
			members[x] = append(members[x], member{addr: a, at: at})
			starts = append(starts, at)
		}
	}
	// The text about a member: from its listing to the next member's or
	// the end of its paragraph, blanks collapsed.
	for _, ms := range members {
		for j := range ms {
			m := &ms[j]
			end := len(t.text)
			if i := strings.Index(t.text[m.at:], "\n\n"); i >= 0 {
				end = m.at + i
			}
			for _, s := range starts {
				if s > m.at && s < end {
					end = s
				}
			}
			m.about = collapseSpace(asciiLower(t.text[m.at:end]))
		}
	}
	for x, ms := range members {
		idx := finals[x]
		pick := make([]string, len(idx))
		if len(idx) == 1 && len(ms) == 1 {
			pick[0] = ms[0].addr
		} else {
			used := make([]bool, len(ms))
			for n, i := range idx {
				diag := collapseSpace(asciiLower(rs[i].DiagnosticCode))
				for j, m := range ms {
					if !used[j] && diag != "" && strings.Contains(m.about, diag) {
						used[j], pick[n] = true, m.addr
						break
					}
				}
				if pick[n] == "" {
					pick = nil
					break
				}
			}
		}
		for n, i := range idx {
			if pick == nil {
				break
			}
			rc := &rs[i]
			if rc.OriginalRecipient == "" {
				rc.OriginalRecipient, rc.OriginalRecipientType = rc.FinalRecipient, rc.FinalRecipientType
			}
			rc.FinalRecipient, rc.FinalRecipientType = pick[n], "rfc822"
			rc.DecodedBy += ruleExpanded
		}
	}
}

// mayExpand reports whether a text part of the message, as it came,
// has one of expansionWords (ignoring case, as expandedFrom does): the
// text rules' work is done only for those. indexFold finds each by its
// "(", which few texts have many of.
func (d *decoder) mayExpand() bool {
	for i := range d.texts {
		for _, w := range expansionWords {
			if indexFold(d.texts[i].raw, w) >= 0 {
				return true
			}
		}
	}
	return false
}
