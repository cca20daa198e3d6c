package parse

import "strings"

// The failed address of a notice in a layout no other rule knows: the
// address the text presents as undeliverable, found near a failure word
// (text/near-failure, the package comment's "No recipient found" section).

// nearWords say, close to an address, that mail to it failed. They are
// lower case and matched at word starts; the localised ones are those of
// Japanese carriers' filter and error notices (au, docomo, SoftBank), of
// mailing-list managers (fml, Mailman, Majordomo, LISTSERV), and of
// European MTAs' translated notices.
var nearWords = []string{
	"unknown", "rejected", "refused", "filtered", "denied", "blocked", "undeliverable", "not delivered",
	"could not be delivered", "cannot be delivered", "failed", "failure", "invalid", "does not exist",
	"doesn't exist", "no such", "not found", "not a member", "not a subscriber", "not subscribed", "not allowed", "bounced", "returned", "loop",
	"duplicate", "disabled", "suspended", "over quota", "unavailable",
	// Japanese
	"宛先不明", "存在しません", "存在しない", "見つかりません", "受信拒否", "拒否", "届きません", "届けられません",
	"配信できません", "配送できません", "送信できません", "受信できません", "受け取れません", "不明", "無効",
	"エラー", "失敗", "迷惑メール", "フィルタ", "制限",
	// Chinese, German, French, Spanish, Italian, Portuguese, Dutch
	"退信", "不存在", "无法投递", "unbekannt", "unzustellbar", "abgelehnt", "existiert nicht", "inconnu",
	"n'existe pas", "rejeté", "refusé", "desconocido", "no existe", "rechazado", "sconosciuto",
	"non esiste", "rifiutato", "desconhecido", "rejeitado", "onbekend", "geweigerd",
}

var nearSet = newPhraseSet(nearWords...)

// ruleNearName is the name of ruleNear in Recipient.DecodedBy.
const ruleNearName = "text/near-failure"

// noticeSubjectWords, in the subject of a message from a machine or list
// manager sender, make it a notice even without English failure words.
var noticeSubjectWords = []string{"error", "alert", "loop", "reject", "refus", "denied", "fail", "undeliver", "unknown",
	"not delivered", "returned", "bounce", "filter", "拒否", "エラー", "不明", "失敗", "配信", "不达", "退信"}

// listManagerParts are local-part fragments of mailing-list managers'
// own addresses (owner-list, list-admin, list-request, list-bounces).
var listManagerParts = []string{"owner-", "-owner", "-admin", "-request", "-bounces", "-errors",
	"listserv", "majordomo", "mailman", "fml", "sympa", "listproc", "ecartis"}

// isNoticeSender reports a message that may be a failure notice in an
// unknown layout: from a machine or list-manager address (or marked by a
// list server's header), with an error word in its subject.
func (d *decoder) isNoticeSender() bool {
	subject := strings.ToLower(d.rep.Subject)
	hasWord := false
	for _, w := range noticeSubjectWords {
		if strings.Contains(subject, w) {
			hasWord = true
			break
		}
	}
	if !hasWord {
		return false
	}
	if d.top.has("X-Mlserver") || d.top.has("X-Ml-Name") {
		return true
	}
	local := strings.ToLower(localPart(firstAddress(d.rep.From)))
	if systemSenders[local] {
		return true
	}
	for _, p := range listManagerParts {
		if strings.Contains(local, p) {
			return true
		}
	}
	return false
}

// ruleSubjectName is the name of ruleSubject in Recipient.DecodedBy.
const ruleSubjectName = "text/subject"

// ruleSubject takes the one address of a notice's subject when the
// subject has a failure word and no rule found an address in the text: a
// list server that refuses a posting names the list only there
// (LISTSERV's "Rejected posting to LIST@host"). The bounce's own From,
// To and Return-Path and role addresses are left out.
func ruleSubject(t *bounceText) []Recipient {
	s := t.d.rep.Subject
	as := scanAddresses(s)
	if len(as) != 1 {
		return nil
	}
	k := strings.ToLower(as[0].addr)
	if t.skip[k] || isRoleAddress(k) || !nearSet.contains(asciiLower(s)) {
		return nil
	}
	return recipients([]string{as[0].addr})
}

// headerLineKeys start lines that quote a header of the returned message;
// an address on them is the message's, not one the notice reports.
var headerLineKeys = []string{"from:", "to:", "cc:", "bcc:", "reply-to:", "return-path:", "sender:", "received:",
	"message-id:", "in-reply-to:", "references:", "delivered-to:", "x-original-to:", "envelope-to:", "errors-to:",
	"for <", "by ", "(envelope-from", "list-"}

// ruleNear takes the addresses of the bounce text that have a failure
// word on their line or the line next to it, in order. The bounce's own
// From, To and Return-Path, role addresses and addresses on quoted header
// lines are left out. The text is cut before the returned message, and
// only its first 64 KB are searched.
func ruleNear(t *bounceText) []Recipient {
	s := truncate(t.text, 64<<10)
	var addrs []string
	for _, a := range scanAddresses(s) {
		k := strings.ToLower(a.addr)
		if t.skip[k] || isRoleAddress(k) {
			continue
		}
		start := strings.LastIndexByte(s[:a.at], '\n') + 1
		if onHeaderLine(s[start:a.at]) || isContact(s[start:a.at]) {
			continue
		}
		if nearSet.contains(asciiLower(around(s, start, a.at+len(a.addr)))) {
			addrs = append(addrs, a.addr)
		}
	}
	return recipients(dedupe(addrs))
}

// ruleNearOfMany narrows text/any: when the text names several addresses,
// those of them near a failure word, if that is some but not all.
func ruleNearOfMany(t *bounceText) []Recipient {
	all := t.notContacts(t.text)
	if len(all) < 2 {
		return nil
	}
	near := ruleNear(t)
	if len(near) == len(all) {
		return nil
	}
	return near
}

// onHeaderLine reports whether the text before an address on its line
// (prefix) starts like a quoted header field or a Received clause.
func onHeaderLine(prefix string) bool {
	p := asciiLower(strings.TrimLeft(prefix, " \t>"))
	for _, k := range headerLineKeys {
		if strings.HasPrefix(p, k) {
			return true
		}
	}
	return false
}

// isContact reports whether the text before an address on its line
// presents it as an address to write to (contactWords).
func isContact(before string) bool {
	before = asciiLower(before[max(0, len(before)-60):])
	for _, w := range contactWords {
		if strings.Contains(before, w) {
			return true
		}
	}
	return false
}

// around returns the line of s from start to end with the two lines
// before and after it (a failure word and its address are often split by
// a blank line), at most 200 bytes each way.
func around(s string, start, end int) string {
	from := start
	for n := 0; n < 2 && from > 0; n++ {
		from = strings.LastIndexByte(s[:from-1], '\n') + 1
	}
	from = max(from, start-200)
	to := end
	for n := 0; n < 3 && to < len(s); n++ {
		i := strings.IndexByte(s[to:], '\n')
		if i < 0 {
			to = len(s)
			break
		}
		to += i + 1
	}
	to = min(to, end+200)
	for from > 0 && from < len(s) && s[from]&0xC0 == 0x80 {
		from++ // not in the middle of a UTF-8 sequence
	}
	return s[from:to]
}
