package parse

import "strings"

// ruleBareName reads a notice that lists its failed recipients as bare
// mailbox names, without a domain (AOL: "Your mail to the following
// recipients could not be delivered ...:" then one screen name per
// line; Yale's phquery: "Message not delivered to the following:" then
// "name    No matches to nameserver query"). The list follows the line
// with the first list marker when that line ends with a colon; every
// line of it must start with a bare name, or the rule finds nothing.
// Each name becomes an address of the returned message with that local
// part (its Received "for <...>", To, Delivered-To), else the name at
// the domain of the notice's own mailer-daemon or postmaster address.
func ruleBareName(t *bounceText) []Recipient {
	names := t.bareNames()
	if len(names) == 0 {
		return nil
	}
	returned := scanAddresses(truncate(t.all[len(t.text):], 64<<10))
	domain := ""
	if from := firstAddress(t.d.rep.From); isRoleAddress(strings.ToLower(from)) {
		if i := strings.LastIndexByte(from, '@'); i > 0 {
			domain = strings.ToLower(from[i+1:])
		}
	}
	var addrs []string
	for _, n := range names {
		a := ""
		for _, r := range returned {
			if strings.EqualFold(localPart(r.addr), n) {
				a = r.addr
				break
			}
		}
		if a == "" && domain != "" {
			a = n + "@" + domain
		}
		if a != "" && !t.skip[strings.ToLower(a)] {
			addrs = append(addrs, a)
		}
	}
	return recipients(dedupe(addrs))
}

// bareNames returns the names of a list of bare mailbox names after the
// first list marker (see ruleBareName), at most 20, or nil.
func (t *bounceText) bareNames() []string {
	i := t.listMarker()
	if i < 0 {
		return nil
	}
	rest := t.text[i:]
	nl := strings.IndexByte(rest, '\n')
	if nl < 0 || !strings.HasSuffix(strings.TrimSpace(rest[:nl]), ":") {
		return nil
	}
	var names []string
	for _, line := range strings.Split(truncate(rest[nl+1:], 4<<10), "\n") {
		l := strings.TrimSpace(line)
		if l == "" {
			if len(names) > 0 {
				break
			}
			continue
		}
		f := strings.Fields(l)
		if len(names) == 20 || !isBareName(f[0]) || len(f) > 1 && !strings.Contains(l, f[0]+"  ") && !strings.Contains(l, f[0]+"\t") {
			// Not a list of names: a sentence, an address, a
			// name followed by one blank and more words.
			return nil
		}
		names = append(names, f[0])
	}
	return names
}

// isBareName reports whether s can be a mailbox name without a domain: the
// characters of a local part, some letter, and not a failure word.
func isBareName(s string) bool {
	if len(s) == 0 || len(s) > 64 || s[0] == '.' || s[len(s)-1] == '.' || s[len(s)-1] == ':' {
		return false
	}
	letter := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '@' || !isLocalChar(c) {
			return false
		}
		letter = letter || isLetter(c)
	}
	l := strings.ToLower(s)
	return letter && !nearSet.contains(l) && textReason(l) == "" && !failureSet.contains(l)
}
