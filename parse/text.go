package parse

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// bounceText is the human-readable part of a plain-text bounce.
type bounceText struct {
	d        *decoder
	all      string // text parts joined
	text     string // all, cut before the returned message
	lower    string // text in lower case
	bounce   bool   // the message presents itself as a failure notice
	action   Action // Failed, or Delayed when the text says it will retry
	actionBy string // the class rule that decided action, if any
	byReport bool   // a notice by its report type only (ruleReportText)
	// outerNotice: the text is the notice's own, cut before a returned
	// bounce's text (ruleOuterNotice)
	outerNotice bool
	whole       string // with outerNotice, the text with the returned bounce's (readWhole)
	skip        map[string]bool

	pos          map[string]int // first offset in text of each address, lower case
	codeLine     string         // first line of text with a failure code
	codeLineDone bool
	listAt       int // offset of the first list marker (listMarker)
	listAtDone   bool
}

// readWhole makes the text the one that includes the returned bounce's
// text again (see outerNotice).
func (t *bounceText) readWhole() {
	t.text, t.lower, t.outerNotice = t.whole, asciiLower(t.whole), false
	t.pos, t.codeLine, t.codeLineDone, t.listAtDone = nil, "", false, false
}

// position returns the offset of the first mention of addr in t.text.
func (t *bounceText) position(addr string) int {
	if t.pos == nil {
		t.pos = map[string]int{}
		for _, a := range scanAddresses(t.text) {
			k := strings.ToLower(a.addr)
			if _, ok := t.pos[k]; !ok {
				t.pos[k] = a.at
			}
		}
	}
	if i, ok := t.pos[strings.ToLower(addr)]; ok {
		return i
	}
	if len(t.text) > 64<<10 {
		return -1
	}
	return indexFold(t.text, strings.ToLower(addr))
}

func (d *decoder) newBounceText() *bounceText {
	var b strings.Builder
	outer := -1 // length of the text before the first forwarded part
	for _, t := range d.textBodies() {
		if t.forwarded && outer < 0 {
			outer = b.Len()
		}
		if b.Len() > 0 {
			b.WriteString("\n\n")
		}
		body := t.body
		if strings.HasPrefix(t.mediaType, "text/html") {
			body = stripTags(body)
		}
		b.WriteString(body)
	}
	t := &bounceText{d: d, all: b.String(), action: Failed}
	words := scanNotice(t.all)
	if words.returned >= 0 {
		t.text = cutHeaderBlock(t.all[:words.returned])
	} else {
		t.text = cutHeaderBlock(t.all)
	}
	if outer > 0 && outer < len(t.text) {
		// A notice that returns another bounce (a bounce of a bounce):
		// when its own text is a failure notice, the returned bounce's
		// text is part of the returned message, not the report.
		if own := cutReturned(t.all[:outer]); hasFailureWords(asciiLower(own)) {
			t.whole, t.text, t.outerNotice = t.text, own, true
		}
	}
	t.lower = asciiLower(t.text)
	// A message that does not present itself as a failure notice must
	// both say so and carry an SMTP or enhanced status code: a reader's
	// mail that mentions "delivery failed" must not suppress addresses.
	t.bounce = d.looksLikeBounce() || d.top.has("X-Failed-Recipients") ||
		hasFailureWords(t.lower) && (findEnhanced(t.text) != "" || findReplyCode(t.text) != "")
	if !t.bounce && d.reportTyp == "delivery-status" && hasFailureWords(t.lower) {
		// A multipart/report of type delivery-status (RFC 6522 §3) is a
		// notice by its type; this one's delivery-status part had no
		// recipient block, so its text says who failed.
		t.bounce, t.byReport = true, true
	}
	// The wordings scanNotice found count when they lie within t.text;
	// one cut by its end, or another text, is read again.
	delay, givenUp := words.delay >= 0, words.givenUp >= 0
	if t.outerNotice || delay && words.delayEnd > len(t.text) {
		delay = delaySet.contains(t.lower)
	}
	if t.outerNotice || givenUp && words.givenUpEnd > len(t.text) {
		givenUp = saysGivenUp(t.lower)
	}
	t.action, t.actionBy = textAction(asciiLower(d.rep.Subject), delay, givenUp)
	// Addresses that are never the failed recipient: the sender of the
	// report, its recipient (the original sender), the original From.
	t.skip = map[string]bool{}
	for _, v := range []string{d.rep.From, d.top.get("To"), d.top.get("Return-Path")} {
		if a := firstAddress(v); a != "" {
			t.skip[strings.ToLower(a)] = true
		}
	}
	if o := d.rep.Original; o != nil {
		if a := firstAddress(o.From); a != "" {
			t.skip[strings.ToLower(a)] = true
		}
	}
	return t
}

var failureWords = []string{
	"could not be delivered", "couldn't be delivered", "undeliverable", "delivery failed", "failed to deliver",
	"unable to deliver", "not be delivered", "permanent error", "delivery has failed", "was not delivered",
	"following address", "following recipient", "did not reach", "user unknown", "delivery to the following",
	"error delivering", "returned to sender", "could not deliver", "cannot be delivered",
	"invalid user", "no such user", "unknown user", "not delivered", "delivery failure", "unable to deliver",
}

var failureSet = newPhraseSet(failureWords...)

func hasFailureWords(s string) bool { return failureSet.contains(s) }

// isDelaySubject reports a subject (in lower case) that calls the notice
// a delay warning.
func isDelaySubject(subject string) bool {
	return strings.Contains(subject, "delay") ||
		strings.Contains(subject, "warning") && !strings.Contains(subject, "fail") && !hasFailureWords(subject)
}

// delaySet holds the wording of a warning that delivery is only delayed
// (in English and in translated notices: "will still be retried"),
// Gmail's "Delivery incomplete ... There was a temporary problem
// delivering your message to ... Gmail will retry for 47 more hours.
// You'll be notified if the delivery fails permanently." among them.
var delaySet = newPhraseSet(delayPhrases...)

var delayPhrases = []string{"has been delayed", "will keep trying", "will continue trying", "will be retried",
	"still trying", "delivery attempts will continue", "no action is required", "warning only",
	"still being retried", "do not need to resend", "will retry for", "temporary problem delivering",
	"if the delivery fails permanently", "delivery incomplete",
	// Japanese, German ("further delivery attempts"), Spanish
	"再試行されます", "引き続き再試行", "再送を試みます", "wird weiterhin versucht", "weitere zustellversuche",
	"se seguirá intentando"}

// returnedMarkers introduce the copy of the returned message in a
// plain-text bounce, or start it: a header quoted with "> " begins with
// a trace field.
var returnedMarkers = []string{
	"below this line is a copy of the message", "copy of the message", "original message follow",
	"original message as received", "> received:", ">received:", "> return-path:", ">return-path:",
	"message headers follow", "header of the original message", "headers of the original message",
	"original message ---", "original message-----", "----- original message", "-----original message",
	"unsent message below", "returned message follows", "original message header", "returned mail follows",
	"original message is attached", "content-type: message/rfc822", "unsent message follows",
}

var returnedSet = newPhraseSet(returnedMarkers...)

// cutReturned returns s up to the line that introduces the returned
// message, or up to the first quoted header block.
func cutReturned(s string) string {
	end := len(s)
	if i := returnedSet.index(s); i >= 0 {
		end = i
	}
	return cutHeaderBlock(s[:end])
}

// cutHeaderBlock cuts s before its first quoted header block.
func cutHeaderBlock(s string) string {
	if i := headerBlockStart(s); i >= 0 {
		return s[:i]
	}
	return s
}

// noticeWords is what one pass over a notice's text finds (scanNotice):
// where the returned message starts, and the first delay wording
// (delaySet) and given-up wording (saysGivenUp) before it. Each is an
// offset, or -1; delayEnd and givenUpEnd are where those wordings end.
type noticeWords struct {
	returned            int
	delay, delayEnd     int
	givenUp, givenUpEnd int
}

// The rules of noticeTable's phrases.
const (
	noticeReturned = iota
	noticeDelay
	noticeGivenUp
)

// noticeTable holds returnedMarkers, the delay wording and the given-up
// wording in one table, so that the text of a notice is read once for
// all three.
var noticeTable = func() *phraseTable {
	var refs []phraseRef
	for _, set := range []struct {
		rule    int
		phrases []string
	}{{noticeReturned, returnedMarkers}, {noticeDelay, delayPhrases}, {noticeGivenUp, givenUpPhrases}} {
		for _, p := range set.phrases {
			refs = append(refs, phraseRef{rule: set.rule, phrase: p})
		}
	}
	return newPhraseTable(refs)
}()

// scanNotice reads s as returnedSet.index, delaySet.index and
// saysGivenUp would, in one pass that stops at the returned message.
func scanNotice(s string) noticeWords {
	w := noticeWords{returned: -1, delay: -1, givenUp: -1}
	t := noticeTable
	for i := 0; i+1 < len(s); i++ {
		c := s[i]
		if t.first[c] {
			for _, p := range t.at(c, s[i+1]) {
				if !hasRestFold(s[i:], p.phrase) {
					continue
				}
				switch {
				case p.rule == noticeReturned:
					w.returned = i
					return w
				case p.rule == noticeDelay && w.delay < 0:
					w.delay, w.delayEnd = i, i+len(p.phrase)
				case p.rule == noticeGivenUp && w.givenUp < 0 && !delayBefore(s, i):
					w.givenUp, w.givenUpEnd = i, i+len(p.phrase)
				}
			}
		}
		if alnumByte[c] {
			i = skipWord(s, i)
		}
	}
	return w
}

// headerBlockStart returns the offset of the first quoted header block
// (see inlineHeader) in s, or -1.
func headerBlockStart(s string) int {
	for off := 0; off < len(s); {
		end := strings.IndexByte(s[off:], '\n')
		if end < 0 {
			end = len(s)
		} else {
			end += off
		}
		if startsWithKey(s[off:end]) {
			blk := headerBlock(s[off:])
			if isReturnedHeader(blk) {
				return off
			}
			if len(blk) > end-off {
				end = off + len(blk) // the block's other lines start no block
			}
		}
		off = end + 1
	}
	return -1
}

// isReturnedHeader tells a copied header block from a short summary
// ("Subject: ...", "Date: ...") written by the bounce itself: it has a
// trace or MIME field, or four of the usual fields.
func isReturnedHeader(blk string) bool {
	for _, k := range []string{"received:", "return-path:", "message-id:", "mime-version:", "content-type:", "dkim-signature:"} {
		if hasPrefixFoldString(blk, k) || indexFold(blk, "\n"+k) >= 0 {
			return true
		}
	}
	return countHeaderKeys(blk) >= 4
}

func countHeaderKeys(blk string) int {
	n := 0
	for _, k := range headerKeys {
		if hasPrefixFoldString(blk, k) || indexFold(blk, "\n"+k) >= 0 {
			n++
		}
	}
	return n
}

// addresses returns the distinct addresses in s in order, without those
// in t.skip. Role addresses (postmaster, mailer-daemon) count only when
// there is no other.
func (t *bounceText) addresses(s string) []string {
	return t.scan(s, t.skip)
}

// listed is addresses for text whose layout marks the failed addresses
// (qmail and Postfix blocks, Exim lists): only role addresses are dropped,
// since a message sent to oneself bounces too.
func (t *bounceText) listed(s string) []string {
	return t.scan(s, nil)
}

func (t *bounceText) scan(s string, skip map[string]bool) []string {
	var out, roles []string
	seen := map[string]bool{}
	for _, at := range scanAddresses(s) {
		a := at.addr
		k := strings.ToLower(a)
		if seen[k] || skip[k] {
			continue
		}
		seen[k] = true
		if isRoleAddress(k) {
			if !strings.HasPrefix(k, "mailer-daemon@") && !t.skip[k] {
				roles = append(roles, a)
			}
			continue
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return roles
	}
	return out
}

func isRoleAddress(a string) bool {
	local := a
	if i := strings.LastIndexByte(a, '@'); i >= 0 {
		local = a[:i]
	}
	switch local {
	case "mailer-daemon", "mailer_daemon", "postmaster", "double-bounce", "nobody", "noreply", "no-reply":
		return true
	}
	return false
}

// scanAddresses finds addr-specs (RFC 5322 §3.4.1, dot-atom forms and
// quoted local parts) in free text. The domain must have a dot or be an
// address literal.
func scanAddresses(s string) []addrAt {
	var out []addrAt
	for i := 0; i < len(s); i++ {
		if s[i] != '@' {
			continue
		}
		j := i
		for j > 0 && isLocalChar(s[j-1]) {
			j--
		}
		if j > 0 && s[j-1] == '"' { // quoted local part
			if k := strings.LastIndexByte(s[:j-1], '"'); k >= 0 && i-k < 80 && s[j-1] == '"' && j-1 == i-1 {
				j = k
			}
		}
		k := i + 1
		for k < len(s) && isDomainChar(s[k]) {
			k++
		}
		local := strings.TrimLeft(s[j:i], ".")
		// In URLs and query strings ("...?email=user@example.com",
		// "identity/user@example.com") the address is the last part.
		if c := strings.LastIndexAny(local, "/?&"); c >= 0 {
			local = local[c+1:]
		}
		if e := strings.LastIndexByte(local, '='); e >= 0 && !strings.Contains(local[:e], "+") {
			local = local[e+1:]
		}
		// An address in single quotes or backquotes ('user@example.com',
		// `user@example.com'): the quotes are the notice's, not the
		// local part's.
		if len(local) > 1 && (local[0] == '\'' || local[0] == '`') && k < len(s) && s[k] == '\'' {
			local = local[1:]
		}
		domain := strings.TrimRight(s[i+1:k], ".-")
		if !strings.HasPrefix(domain, "[") {
			if b := strings.IndexAny(domain, "[]"); b >= 0 {
				domain = strings.TrimRight(domain[:b], ".-")
			}
		}
		if local == "" || len(local) > 64 || !strings.Contains(domain, ".") || len(domain) > 255 {
			continue
		}
		if domain[0] == '.' || domain[0] == '-' {
			continue
		}
		out = append(out, addrAt{addr: local + "@" + domain, at: i - len(local)})
		i = k - 1
	}
	return out
}

// addrAt is an address found in text and its offset.
type addrAt struct {
	addr string
	at   int
}

func isLocalChar(c byte) bool {
	return isLetter(c) || isDigit(c) || strings.IndexByte("!#$%&'*+-/=?^_`{|}~.", c) >= 0
}

func isDomainChar(c byte) bool {
	return isLetter(c) || isDigit(c) || c == '-' || c == '.' || c == '[' || c == ']'
}

// diagnostic returns the text about addr: the rest of the paragraph after
// its first mention; when that has no SMTP or enhanced code, the first
// line of the bounce text that has one.
func (t *bounceText) diagnostic(addr string) string {
	p := ""
	if addr != "" {
		if i := t.position(addr); i >= 0 {
			p = lineAround(t.text, i, len(addr))
		}
	}
	if findEnhanced(p) != "" || findReplyCode(p) != "" {
		return truncate(p, 1000)
	}
	if !t.codeLineDone {
		t.codeLine, t.codeLineDone = codeLine(t.text), true
	}
	if l := t.codeLine; l != "" {
		if p == "" {
			return l
		}
		return truncate(p+" "+l, 1000)
	}
	if p == "" {
		p = collapseSpace(truncate(t.text, 1000))
	}
	return truncate(p, 1000)
}

// lineAround returns the text about the address at s[i:i+n]: what
// precedes it on its line when that holds a reply code ("554 <addr>...
// reason"), and the rest of its paragraph.
func lineAround(s string, i, n int) string {
	start := strings.LastIndexByte(s[:i], '\n') + 1
	before := strings.TrimSpace(s[start:i])
	before = strings.TrimRight(before, "<\"'")
	if findReplyCode(before) != "" || findEnhanced(before) != "" || textReason(before) != "" {
		// "554 <addr>... reason", "Unknown user: addr": the line
		// before the address says what happened.
		return collapseSpace(before) + " " + paragraphAfter(s, i+n, false)
	}
	return paragraphAfter(s, i+n, true)
}

// codeLine returns the first line of s with a failure code (4xx or 5xx
// reply, 4.x.x or 5.x.x status), else the first with any code, whitespace
// collapsed.
func codeLine(s string) string {
	any := ""
	for _, line := range strings.Split(s, "\n") {
		c := findEnhanced(line)
		if c == "" {
			c = findReplyCode(line)
		}
		if c == "" {
			continue
		}
		if c[0] != '2' {
			return collapseSpace(line)
		}
		if any == "" {
			any = collapseSpace(line)
		}
	}
	return any
}

// stripTags turns HTML into text, crudely: tags become spaces, block
// tags line breaks, and common entities are decoded.
func stripTags(s string) string {
	var b strings.Builder
	in := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '<':
			in = true
			if l := strings.ToLower(s[i+1 : min(len(s), i+4)]); strings.HasPrefix(l, "br") || strings.HasPrefix(l, "p") ||
				strings.HasPrefix(l, "/p") || strings.HasPrefix(l, "div") || strings.HasPrefix(l, "/di") || strings.HasPrefix(l, "tr") {
				b.WriteByte('\n')
			}
		case c == '>' && in:
			in = false
			b.WriteByte(' ')
		case !in:
			b.WriteByte(c)
		}
	}
	r := strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&", "&nbsp;", " ", "&quot;", `"`, "&#64;", "@")
	return r.Replace(b.String())
}

// textDiagnostic finds the diagnostic text about rc in the bounce text:
// the lines that follow the first mention of its address.
func (d *decoder) textDiagnostic(rc *Recipient) string {
	a := rc.Address()
	if a == "" {
		return ""
	}
	for _, t := range d.textBodies() {
		body := t.body
		if len(body) > 64<<10 {
			body = body[:64<<10] // the notice is at the top; bound the search
		}
		i := listedAt(body, strings.ToLower(a))
		if i < 0 {
			continue
		}
		return paragraphAfter(body, i+len(a), true)
	}
	return ""
}

// listedAt finds where a notice lists the address addr: its first
// occurrence that starts a line (after indentation, "<" or a quote mark),
// as notices list failed addresses; else its first occurrence at all. An
// address also named in, say, a quoted subject line is thus not taken for
// the start of the diagnostic.
func listedAt(body, addr string) int {
	first, off := -1, 0
	for n := 0; n < 20; n++ {
		i := indexFold(body[off:], addr)
		if i < 0 {
			break
		}
		i += off
		if first < 0 {
			first = i
		}
		if lineStart(body, i) {
			return i
		}
		off = i + len(addr)
	}
	return first
}

// lineStart reports whether only blanks, "<", quote marks or ">" stand
// between the start of the line and i.
func lineStart(s string, i int) bool {
	for j := i - 1; j >= 0; j-- {
		switch s[j] {
		case '\n':
			return true
		case ' ', '\t', '<', '"', '\'', '>':
			continue
		}
		return false
	}
	return true
}

// paragraphAfter returns the text from i to the end of its paragraph, or
// of the next one when the rest of the line is empty, bounded in length.
func paragraphAfter(s string, i int, extend bool) string {
	s = s[i:]
	if len(s) > 2000 {
		s = s[:2000]
	}
	s = strings.TrimLeft(s, ">: \t")
	s = strings.TrimLeft(s, "\n")
	if j := strings.Index(s, "\n\n"); j >= 0 {
		p := s[:j]
		if extend && letters(p) < 12 {
			// "<addr>." or "because:" alone: the reason is in the next
			// paragraph.
			rest := strings.TrimLeft(s[j:], "\n \t")
			if k := strings.Index(rest, "\n\n"); k >= 0 {
				rest = rest[:k]
			}
			p += "\n" + rest
		}
		s = p
	}
	return collapseSpace(s)
}

// letters counts the ASCII letters of s.
func letters(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if isLetter(s[i]) {
			n++
		}
	}
	return n
}

// headerKeys are fields that mark a quoted header block of a returned
// message.
var headerKeys = []string{"message-id:", "subject:", "from:", "to:", "date:"}

// inlineHeader finds the header of a returned message quoted in a text
// body and parses it, gathering its fields in sc.
func inlineHeader(body string, sc *headerScratch) (fields, bool) {
	lines := body
	for off := 0; off < len(body); {
		i := strings.IndexByte(lines[off:], '\n')
		end := len(body)
		if i >= 0 {
			end = off + i
		}
		line := body[off:end]
		if startsWithKey(line) {
			blk := headerBlock(body[off:])
			n := 0
			for _, k := range headerKeys {
				if hasPrefixFoldString(blk, k) || indexFold(blk, "\n"+k) >= 0 {
					n++
				}
			}
			if n >= 2 {
				br := getReader(strings.NewReader(blk + "\n\n"))
				h, _ := readHeader(br, 1<<20, keepReturned, sc)
				putReader(br)
				if h.len() > 0 {
					return h, true
				}
			}
			if len(blk) > end-off {
				end = off + len(blk)
			}
		}
		if i < 0 {
			break
		}
		off = end + 1
	}
	return fields{}, false
}

var blockStartKeys = []string{"return-path:", "received:", "message-id:", "from:", "to:", "subject:", "date:",
	"delivered-to:", "mime-version:", "dkim-signature:", "x-"}

func startsWithKey(line string) bool {
	if len(line) < 3 {
		return false
	}
	for _, k := range blockStartKeys {
		if hasPrefixFoldString(line, k) {
			return true
		}
	}
	return false
}

// headerBlock returns the lines from the start of s that look like header
// fields or their continuations.
func headerBlock(s string) string {
	n := 0
	for n < len(s) {
		i := strings.IndexByte(s[n:], '\n')
		line := s[n:]
		if i >= 0 {
			line = s[n : n+i]
		}
		ok := len(line) > 0 && (line[0] == ' ' || line[0] == '\t') && n > 0
		if !ok {
			if c := strings.IndexByte(line, ':'); c > 0 && isToken(line[:c]) {
				ok = true
			}
		}
		if !ok {
			break
		}
		if i < 0 {
			n = len(s)
			break
		}
		n += i + 1
	}
	return strings.TrimRight(s[:n], "\n")
}

// asciiLower lower-cases ASCII letters only, so offsets in the result are
// offsets in s (strings.ToLower may change the length of invalid UTF-8).
func asciiLower(s string) string {
	i := 0
	for i < len(s) && (s[i] < 'A' || s[i] > 'Z') {
		i++
	}
	if i == len(s) {
		return s // nothing to change: no allocation
	}
	var b strings.Builder // one allocation; runs without capitals are copied whole
	b.Grow(len(s))
	b.WriteString(s[:i])
	for i < len(s) {
		b.WriteByte(s[i] + 'a' - 'A') // s[i] is an upper-case letter
		j := i + 1
		for j < len(s) && (s[j] < 'A' || s[j] > 'Z') {
			j++
		}
		b.WriteString(s[i+1 : j])
		i = j
	}
	return b.String()
}

// asciiSpace marks the bytes strings.Fields splits on below utf8.RuneSelf.
var asciiSpace = [utf8.RuneSelf]bool{'\t': true, '\n': true, '\v': true, '\f': true, '\r': true, ' ': true}

// collapseSpace returns strings.Join(strings.Fields(s), " "): s with its
// runs of white space (unicode.IsSpace) made one space and its ends
// trimmed, in one pass and one allocation, none when s is so already.
func collapseSpace(s string) string {
	var b []byte // nil while s needs no change
	start := 0   // s[start:i] is not copied to b yet
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf && !asciiSpace[c] {
			i++
			continue
		}
		j := spaceEnd(s, i)
		if j == i {
			_, n := utf8.DecodeRuneInString(s[i:])
			i += n
			continue
		}
		// s[i:j] is white space: it stays as it is only when it is one
		// plain space between two words.
		if s[i] != ' ' || j != i+1 || i == 0 || j == len(s) {
			if b == nil {
				b = make([]byte, 0, len(s))
			}
			b = append(b, s[start:i]...)
			if len(b) > 0 && j < len(s) {
				b = append(b, ' ')
			}
			start = j
		}
		i = j
	}
	if b == nil {
		return s
	}
	return string(append(b, s[start:]...))
}

// spaceEnd returns the end of the run of white space at s[i:], i when
// there is none.
func spaceEnd(s string, i int) int {
	for i < len(s) {
		if c := s[i]; c < utf8.RuneSelf {
			if !asciiSpace[c] {
				break
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if !unicode.IsSpace(r) {
			break
		}
		i += n
	}
	return i
}
