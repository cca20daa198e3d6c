package parse

import "strings"

// autoReply recognises an RFC 3834 automatic reply and adds one record for
// the address that replied (the From of the reply). It reports whether it
// did.
//
// Signals, any one of which is enough:
//   - Auto-Submitted: auto-replied (RFC 3834 §5); auto-generated alone is
//     not enough, since bounces carry it too;
//   - X-Autoreply, X-Autorespond, X-Vacation style headers;
//   - a subject that starts like a vacation notice ("Auto:", "Automatic
//     reply", "Out of Office", "Away", "Vacation", "Abwesenheit").
func (d *decoder) autoReply() bool {
	h := d.top
	as := strings.ToLower(h.get("Auto-Submitted"))
	ok := strings.HasPrefix(as, "auto-replied")
	for _, k := range []string{"X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Vacation", "X-Mailer-Autoreply"} {
		if h.has(k) {
			ok = true
		}
	}
	if !ok && isVacationSubject(d.rep.Subject) {
		ok = true
	}
	if !ok && d.autoReplyBody() {
		ok = true
	}
	if !ok {
		return false
	}
	d.rep.Recipients = append(d.rep.Recipients, Recipient{
		FinalRecipient: firstAddress(h.get("From")), Kind: KindAutoReply, Class: ClassNone, DecodedBy: "rfc3834",
	})
	return true
}

// autoReplyBody recognises a vacation notice by its text, when the
// header marks it as automatic (Precedence: auto_reply, bulk or junk,
// RFC 3834 §3.1.8) or it answers a message ("Re:" subject): a short body
// with vacation wording.
func (d *decoder) autoReplyBody() bool {
	prec := strings.ToLower(d.top.get("Precedence"))
	subj := strings.ToLower(strings.TrimSpace(d.rep.Subject))
	if prec != "auto_reply" && prec != "bulk" && prec != "junk" && !strings.HasPrefix(subj, "re:") &&
		!d.top.has("X-Auto-Response-Suppress") {
		return false
	}
	for _, t := range d.textBodies() {
		if len(t.body) > 4000 {
			continue
		}
		l := strings.ToLower(t.body)
		for _, p := range vacationPhrases {
			if strings.Contains(l, p) {
				return true
			}
		}
	}
	return false
}

var vacationPhrases = []string{
	"out of the office", "out of office", "on vacation", "on holiday", "on annual leave", "on leave until",
	"away from the office", "away from my desk", "currently away", "i am away", "i'm away", "limited access to e-mail",
	"limited access to email", "this is an automatic reply", "this is an automated reply", "auto-reply", "autoreply",
	"abwesend", "nicht im büro", "absent du bureau",
}

// vacationPrefixes start the subject of a vacation notice; the words of
// vacationWords are unambiguous anywhere in it.
var vacationPrefixes = []string{
	"auto:", "autoreply", "auto reply", "auto-reply", "auto response", "autoresponse", "away from", "away until",
	"on vacation", "vacation", "absence", "absent", "i am away", "i'm away", "currently away",
}

var vacationWords = []string{
	"automatic reply", "automatische antwort", "réponse automatique", "reponse automatique", "respuesta automática",
	"risposta automatica", "automatisch antwoord", "resposta automática", "automatyczna odpowiedź", "otomatik yanıt",
	"out of office", "out of the office", "abwesenheit", "自動応答", "自動返信", "不在", "自动回复",
}

func isVacationSubject(s string) bool {
	s = strings.ToLower(strings.TrimSpace(s))
	for _, p := range vacationPrefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	for _, w := range vacationWords {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// looksLikeBounce reports whether the message presents itself as a
// delivery failure notice: sent by a mailer daemon or postmaster, or with
// a subject that says delivery failed. Such messages are never taken for
// auto-replies, even with Auto-Submitted: auto-replied (Postfix sets it on
// its bounces).
func (d *decoder) looksLikeBounce() bool {
	from := d.rep.From
	for _, w := range []string{"mailer-daemon", "postmaster", "mail delivery", "mail-daemon", "mailer_daemon",
		"post_master", "mailerdaemon"} {
		if indexFold(from, w) >= 0 {
			return true
		}
	}
	if a := firstAddress(from); systemSenders[asciiLower(localPart(a))] &&
		hasFailureWords(d.firstText()) { // the phrases ignore ASCII case
		return true
	}
	return isBounceSubject(d.rep.Subject)
}

// systemSenders are local parts of machine senders. Mail from them is a
// failure notice when its text also says so.
var systemSenders = map[string]bool{
	"no-reply": true, "noreply": true, "do-not-reply": true, "donotreply": true, "mailer": true,
	"mail": true, "daemon": true, "root": true, "system": true, "administrator": true, "admin": true,
	"bounce": true, "bounces": true, "notify": true, "notification": true, "notifications": true,
	"mdaemon": true, // MDaemon sends its notices from MDaemon@<host>
}

func (d *decoder) firstText() string {
	ts := d.textBodies()
	if len(ts) == 0 {
		return ""
	}
	return truncate(ts[0].body, 8<<10)
}

var bounceSubjects = []string{
	"undeliver", "undelivered", "returned mail", "delivery status", "delivery failure", "delivery failed",
	"failure notice", "mail delivery", "delivery notification", "non-delivery", "nondeliver",
	"could not be delivered", "delivery problem", "mail system error", "returned to sender", "rejected",
	"warning: could not send", "delayed mail", "delivery delayed", "failed delivery",
	"unzustellbar", "nicht zustellbar", "non remis", "non distribuable", "no entregado", "non recapitabile",
	"onbestelbaar", "エラー", "不能", "退信", "undeliverable",
}

func isBounceSubject(s string) bool {
	s = strings.ToLower(s)
	for _, w := range bounceSubjects {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// localPart returns what precedes the last @ of an address.
func localPart(a string) string {
	if i := strings.LastIndexByte(a, '@'); i >= 0 {
		return a[:i]
	}
	return a
}
