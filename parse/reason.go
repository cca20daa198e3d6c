package parse

import "strings"

// Reason categories. They are coarse on purpose: a sending application
// decides with them whether to stop mailing an address (user_unknown,
// host_unknown, mailbox_disabled) or just to wait (mailbox_full, expired,
// rate_limited, system_error).
const (
	ReasonUserUnknown     Reason = "user_unknown"     // no such mailbox (X.1.1)
	ReasonMailboxFull     Reason = "mailbox_full"     // over quota (X.2.2)
	ReasonMailboxDisabled Reason = "mailbox_disabled" // mailbox exists but is disabled or suspended (X.2.1)
	ReasonHostUnknown     Reason = "host_unknown"     // domain or host does not exist (X.1.2)
	ReasonHasMoved        Reason = "has_moved"        // mailbox moved, no forwarding (X.1.6)
	ReasonRouting         Reason = "routing_failure"  // routing server failure, mail loop (X.4.x)
	ReasonNetwork         Reason = "network_error"    // connection refused, timed out, TLS failure
	ReasonExpired         Reason = "expired"          // retried until the queue lifetime ran out (X.4.7)
	ReasonTooBig          Reason = "message_too_big"  // message larger than accepted (X.3.4, X.2.3)
	ReasonSpam            Reason = "spam"             // content judged spam
	ReasonBlocked         Reason = "blocked"          // sending host or domain blocked, listed, bad reputation, no PTR
	ReasonAuthFailure     Reason = "auth_failure"     // SPF, DKIM or DMARC failure (X.7.23-X.7.26)
	ReasonRelayDenied     Reason = "relay_denied"     // relaying denied (X.7.1 on a relay)
	ReasonVirus           Reason = "virus"            // virus or malware found (X.7.0 with content)
	ReasonContent         Reason = "content_rejected" // content or attachment refused, not RFC compliant (X.6.x)
	ReasonPolicy          Reason = "policy"           // other refusal by policy (X.7.x)
	ReasonRateLimit       Reason = "rate_limited"     // too many messages or connections
	ReasonSystemFull      Reason = "system_full"      // receiving system out of storage (X.3.1)
	ReasonSystemError     Reason = "system_error"     // other fault of the receiving system (X.3.x)
	ReasonSyntax          Reason = "syntax_error"     // bad address syntax or protocol error (X.1.3, X.5.x)
	ReasonOther           Reason = "other"            // a failure none of the above describes
	ReasonDelivered       Reason = "delivered"        // not a failure (X = 2)
)

// reasonCodes gives the RFC 3463 subject.detail of the reasons that map to
// exactly one code; inferStatus uses it when a report carries none.
var reasonCodes = map[Reason]string{
	ReasonUserUnknown:     ".1.1",
	ReasonHostUnknown:     ".1.2",
	ReasonHasMoved:        ".1.6",
	ReasonMailboxDisabled: ".2.1",
	ReasonMailboxFull:     ".2.2",
	ReasonTooBig:          ".3.4",
	ReasonSystemFull:      ".3.1",
	ReasonExpired:         ".4.7",
	ReasonRelayDenied:     ".7.1",
	ReasonSystemError:     ".3.0",
}

// exactStatus maps enhanced codes that name one cause (RFC 3463 §3, RFC
// 7372, RFC 7505 and the IANA registry of RFC 5248) to a reason. They are
// consulted before the text rules.
var exactStatus = map[string]Reason{
	"1.1": ReasonUserUnknown, "1.10": ReasonUserUnknown, "1.2": ReasonHostUnknown, "2.2": ReasonMailboxFull, "3.4": ReasonTooBig,
	"4.7": ReasonExpired, "7.13": ReasonMailboxDisabled, "7.23": ReasonAuthFailure, "7.24": ReasonAuthFailure,
	"7.25": ReasonBlocked, "7.26": ReasonAuthFailure, "7.27": ReasonHostUnknown,
}

// statusReasons maps enhanced codes that MTAs use loosely (5.2.1 often
// means "no such user", 5.4.4 "host not found") to a reason. They are
// consulted after the text rules.
var statusReasons = map[string]Reason{
	"1.3": ReasonSyntax, "1.6": ReasonHasMoved, "2.1": ReasonMailboxDisabled,
	"2.3": ReasonTooBig, "3.1": ReasonSystemFull, "4.1": ReasonNetwork, "4.2": ReasonNetwork,
	"4.3": ReasonRouting, "4.4": ReasonRouting, "4.6": ReasonRouting, "7.7": ReasonContent,
}

// textReasons is the ordered table of diagnostic wordings. The first rule
// with a phrase that starts a word of the text wins (case-insensitive),
// so more specific wordings come first.
var textReasons = []struct {
	reason  Reason
	phrases []string
}{
	{ReasonRelayDenied, []string{"relay access denied", "relaying denied", "relay denied", "not permitted to relay",
		"relay not permitted", "unable to relay", "relaying not allowed", "relaying to", "we do not relay", "not allowed to relay",
		"relay not allowed"}},
	{ReasonAuthFailure, []string{"spf", "dkim", "dmarc", "sender policy framework", "not authenticated", "authentication failed",
		"authentication required", "unauthenticated", "authentication information"}},
	{ReasonSystemFull, []string{"insufficient system storage", "disk full", "system full", "out of storage",
		"no space left", "insufficient disk space"}},
	{ReasonRateLimit, []string{"at a rate", "rate limit", "too many connections", "too many messages"}},
	{ReasonMailboxFull, []string{"mailbox full", "mailbox is full", "mail box full", "mailbox has exceeded", "over quota",
		"overquota", "quota exceeded", "exceeded storage", "exceeds quota", "quota", "mailbox size limit", "full mailbox",
		"mailfolder is full", "mailbox is over", "too much mail", "box is full", "storage allocation",
		"has exceeded the storage", "user is over", "mailbox exceeds", "mailbox exceeded", "exceeds allowed size",
		"number of messages in",
		// Japanese, German, French, Spanish
		"メールボックスがいっぱい", "メールボックスが一杯", "容量がいっぱい", "容量オーバー", "容量超過", "容量が不足",
		"postfach ist voll", "postfach voll", "boîte aux lettres pleine", "buzón lleno"}},
	{ReasonMailboxDisabled, []string{"account disabled", "account has been disabled", "mailbox disabled", "is disabled",
		"has been disabled", "inactive", "suspended", "deactivated", "account is locked", "account has expired",
		"mailbox is frozen", "not active", "account expired", "temporarily locked", "blocked account", "disabled"}},
	{ReasonHostUnknown, []string{"host unknown", "unknown host", "domain not found", "no such domain", "host not found",
		"name or service not known", "domain does not exist", "nxdomain", "unrouteable mail domain", "no mx",
		"domain name not found", "unknown domain", "host or domain name not found", "dns error", "domain lookup failed",
		"unresolvable", "mx record", "non-existent domain", "could not be resolved", "no such host", "host name lookup", "unrouteable address", "lookup failure", "dns lookup"}},
	{ReasonUserUnknown, []string{"user unknown", "unknown user", "no such user", "user not found", "recipient not found",
		"no mailbox", "mailbox not found", "mailbox unavailable", "mailbox not available", "does not exist", "doesn't exist",
		"dosn't exist", "not exist", "invalid recipient", "unknown recipient", "no such recipient", "not a valid mailbox",
		"invalid mailbox", "unknown local part", "addressee unknown", "no such mailbox",
		"no such account", "unknown account", "account unknown", "recipient rejected", "bad recipient", "unknown address",
		"couldn't be found", "could not be found", "user doesn't have", "no longer valid", "not our customer",
		"invalid address", "unknown or illegal alias", "mailbox name not allowed", "no such person",
		"not listed in", "recipient unknown", "user invalid", "invalid user", "unknown mailbox", "not a known user",
		"name not recognized", "no account by that name", "user does not", "no valid recipients", "address unknown",
		"deliverable address", "not found", "not recognized", "unavailable mailbox", "is not a valid", "not a registered"}},
	{ReasonHasMoved, []string{"has moved", "moved to", "is no longer", "no longer in use"}},
	{ReasonVirus, []string{"virus", "malware", "infected", "trojan"}},
	{ReasonTooBig, []string{"message too big", "too large", "size exceeds", "message size", "exceeds the maximum",
		"message length exceeds", "exceeds size limit", "message is too long", "size limit", "too big"}},
	{ReasonRateLimit, []string{"too many connections", "rate limit", "too many messages", "throttl", "exceeded the rate",
		"too many recipients", "sending limit", "too many emails", "limit exceeded", "frequency", "unexpected volume"}},
	{ReasonExpired, []string{"expired", "retry time", "retry timeout", "time limit", "delivery time", "gave up",
		"giving up", "could not be delivered within", "too long in queue", "been delayed", "maximum time",
		"retry period", "not able to deliver for", "delivery failed for", "have been failing", "has been failing",
		"failing for a long time", "in the queue too long"}},
	{ReasonBlocked, []string{"spamhaus", "spamcop", "sorbs", "barracudacentral", "blocked using", "listed at", "listed on",
		"listed in", "blacklist", "black list", "blocklist", "block list", "dnsbl", "rbl"}},
	{ReasonSpam, []string{"spam", "junk", "bulk mail", "unsolicited", "scored", "content filter", "filtered"}},
	{ReasonBlocked, []string{"blocked", "blacklist", "black list", "blocklist", "block list", "rbl", "dnsbl", "spamhaus",
		"spamcop", "reputation", "reverse dns", "ptr record", "reverse lookup", "rdns", "client host rejected",
		"banned", "listed", "not accepted from", "your ip", "ip address", "access denied", "connection refused by",
		"invalid helo", "helo command rejected", "bad helo", "poor", "invalid ip"}},
	{ReasonRouting, []string{"routing", "mail loop", "loops back", "too many hops", "hop count",
		"routed", "loop detected"}},
	{ReasonNetwork, []string{"connection refused", "connection timed out", "timed out", "timeout", "connection reset",
		"lost connection", "unreachable", "could not connect", "can't connect", "cannot connect", "network",
		"connect to", "tls", "broken pipe", "conversation with", "requests to connect", "not reachable", "no route to host"}},
	{ReasonContent, []string{"content", "attachment", "prohibited", "not compliant", "rfc 5322", "rfc5322", "rfc 2822",
		"rfc2822", "header", "encoding", "8-bit", "8bit"}},
	{ReasonSyntax, []string{"syntax error", "bad address syntax", "malformed", "illegal address", "address syntax",
		"bad syntax", "improper command", "command unrecognized", "line too long"}},
	{ReasonSystemError, []string{"system error", "internal error", "local error", "temporary failure", "server error",
		"configuration error", "mailer error", "system config", "unexpected", "i/o error", "try again later",
		"temporarily", "resources", "service unavailable", "not available", "problem"}},
	{ReasonUserUnknown, []string{"address rejected"}}, // Postfix's "Recipient address rejected: <reason>" names the reason first
	{ReasonPolicy, []string{"policy", "not allowed", "denied", "refused", "rejected", "not authorized",
		"unauthorized", "forbidden", "prohibit", "administrative"}},
}

// classify finds the reason for a record from its status and the reason
// its diagnostic text gives (textReason): exact status codes first, then
// the text, then the status
// subject (RFC 3463 §3: X.1 address, X.2 mailbox, X.3 system, X.4 network
// and routing, X.5 protocol, X.6 content, X.7 security and policy).
func classify(status string, text Reason) Reason {
	if status != "" && status[0] == '2' {
		return ReasonDelivered
	}
	sd := ""
	if i := strings.IndexByte(status, '.'); i > 0 {
		sd = status[i+1:]
	}
	if r, ok := exactStatus[sd]; ok {
		return r
	}
	if text != "" {
		return text
	}
	if r, ok := statusReasons[sd]; ok {
		return r
	}
	switch {
	case strings.HasPrefix(sd, "1."):
		return ReasonUserUnknown
	case strings.HasPrefix(sd, "2."):
		return ReasonMailboxDisabled
	case strings.HasPrefix(sd, "3."):
		return ReasonSystemError
	case strings.HasPrefix(sd, "4."):
		return ReasonNetwork
	case strings.HasPrefix(sd, "5."):
		return ReasonSyntax
	case strings.HasPrefix(sd, "6."):
		return ReasonContent
	case strings.HasPrefix(sd, "7."):
		return ReasonPolicy
	}
	if status != "" {
		return ReasonOther
	}
	return ""
}

// reasonPhrases holds the phrases of textReasons by their first two
// bytes, so textReason looks only at the phrases that can start at each
// word of the text.
var reasonPhrases = func() *phraseTable {
	var refs []phraseRef
	for i, tr := range textReasons {
		for _, p := range tr.phrases {
			refs = append(refs, phraseRef{rule: i, phrase: p})
		}
	}
	return newPhraseTable(refs)
}()

// textReason applies textReasons to s: the first rule with a phrase that
// starts a word of s (case-insensitive) wins.
func textReason(s string) Reason {
	best := len(textReasons)
	t := reasonPhrases
	for i := 0; i+1 < len(s); i++ {
		c := s[i]
		if t.first[c] {
			// A key's phrases are in rule order: none after one of a
			// rule no earlier than the best can win.
			for _, ref := range t.at(c, s[i+1]) {
				if ref.rule >= best {
					break
				}
				if hasRestFold(s[i:], ref.phrase) {
					best = ref.rule
				}
			}
		}
		if alnumByte[c] {
			i = skipWord(s, i)
		}
	}
	if best == len(textReasons) {
		return ""
	}
	return textReasons[best].reason
}

func isAlnum(c byte) bool { return isLetter(c) || isDigit(c) }

func lowerASCII(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// hasPrefixFoldString reports whether s starts with the lower-case prefix,
// ignoring ASCII case.
func hasPrefixFoldString(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		if lowerASCII(s[i]) != prefix[i] {
			return false
		}
	}
	return true
}
