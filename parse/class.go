package parse

import "strings"

// Final failure versus delay, and the class of a full mailbox: the rules
// of the package comment's "Final failure or delay" section. Each rule
// that changes what the report's own fields say appends its name to
// Recipient.DecodedBy.

// Rule names, as appended to Recipient.DecodedBy.
const (
	ruleExpiredFinal = "+expired-final" // a given-up notice is final even with delay wording
	ruleRetrying     = "+retrying"      // a delay that quotes a 5.x.x has a 4.x.x status
	ruleFullSoft     = "+full-soft"     // mailbox full is a soft failure whatever its class
)

// givenUpPhrases say that the reporting MTA gave the message up, most
// often because its queue lifetime ran out: Postfix "delivery time
// expired" (maximal_queue_lifetime), Exim "retry timeout exceeded" and
// "retry time not reached for any host after a long failure period",
// qmail "I'm not going to try again; this message has been in the queue
// too long", Sendmail "could not be delivered for 5 days" (Timeout.queuereturn),
// Exchange "the message could not be delivered within the time limit",
// OpenSMTPD "Envelope expired" (set only when the scheduler removes an
// envelope whose queue lifetime ran out, with a permanent-failure class).
var givenUpPhrases = []string{
	"delivery time expired", "retry timeout exceeded", "retry time exceeded", "retry time not reached for any host after a long failure",
	"in the queue too long", "too long in queue", "too long in the queue", "queue lifetime", "message expired", "message has expired",
	"gave up", "have given up", "has given up", "giving up", "will not be retried", "won't be retried",
	"no further attempts", "not going to try again", "will not try again", "could not be delivered within",
	"was not delivered within", "expired after", "maximum time in queue", "time limit exceeded",
	"envelope expired",
}

// givenUpSet finds givenUpPhrases at word starts.
var givenUpSet = newPhraseSet(givenUpPhrases...)

// givenUpRecordSet holds the givenUpPhrases that overrule a
// delivery-status record's "delayed" when its own error says them: those
// that only a given-up message has, not the looser ones ("expired after",
// "time limit exceeded") that a remote server's temporary reply can use.
var givenUpRecordSet = newPhraseSet("envelope expired", "delivery time expired", "retry timeout exceeded",
	"retry time exceeded", "retry time not reached for any host after a long failure", "in the queue too long",
	"too long in queue", "too long in the queue", "will not be retried", "won't be retried", "no further attempts",
	"not going to try again", "will not try again", "have given up", "has given up", "gave up")

// saysGivenUp reports whether lower (a notice in lower case) says the
// message was given up. "before giving up" and "until giving up" are the
// wording of a delay warning and do not count.
func saysGivenUp(lower string) bool {
	for off := 0; off < len(lower); {
		i := givenUpSet.index(lower[off:])
		if i < 0 {
			return false
		}
		i += off
		if !delayBefore(lower, i) {
			return true
		}
		off = i + 1
	}
	return false
}

// delayBefore reports whether the given-up wording at s[i:] follows
// "before" or "until" (in any case).
func delayBefore(s string, i int) bool {
	before := strings.TrimRight(s[max(0, i-8):i], " \t\n")
	for _, w := range []string{"before", "until"} {
		if len(before) >= len(w) && hasPrefixFoldString(before[len(before)-len(w):], w) {
			return true
		}
	}
	return false
}

// textAction decides the Action of the records of a plain-text notice
// (RFC 3464 §2.3.3 failed or delayed) from its subject in lower case and
// whether its text has delay wording and given-up wording, and names the
// rule when a given-up wording overrode a delay wording.
func textAction(subject string, delayWords, givenUp bool) (Action, string) {
	delay := isDelaySubject(subject) || delayWords
	switch {
	case givenUp:
		if delay {
			return Failed, ruleExpiredFinal
		}
		return Failed, ""
	case delay:
		return Delayed, ""
	}
	return Failed, ""
}

// finalClass applies the class rules to a resolved record: a delay has a
// 4.x.x status even when it quotes the 5.x.x of the last attempt, and a
// full mailbox is a soft failure.
func finalClass(rc *Recipient) {
	if rc.Kind == KindDelay && len(rc.Status) > 1 && rc.Status[0] == '5' {
		// RFC 3464 §2.3.3: "delayed" means the MTA will continue to
		// attempt delivery, which is RFC 3463 §3.1's persistent
		// transient class (4.x.x), not its permanent one.
		rc.Status = "4" + rc.Status[1:]
		rc.DecodedBy += ruleRetrying
	}
	if rc.Kind == KindBounce && rc.Reason == ReasonMailboxFull && rc.Class == ClassHard {
		// RFC 3463 §3.3 X.2.2: "This code should be used as a persistent
		// transient failure"; the policy table counts it (soft rule).
		rc.Class = ClassSoft
		rc.DecodedBy += ruleFullSoft
	}
}
