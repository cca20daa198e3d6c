package policy

import (
	"fmt"
	"io"
	"strings"
)

// senderSide lists the reasons that blame the sender or the message, not
// the recipient: a block list, a reputation or authentication failure, a
// spam or virus verdict, a refused relay, content or size limits, rate
// limits. Such rejections say nothing bad about the address.
const senderSide = "spam,blocked,auth_failure,policy,relay_denied,virus,content_rejected,message_too_big,rate_limited"

// weakHard lists the reasons of permanent failures that do not show the
// address is dead: the text blames a network or system, a protocol error
// (X.5.x; a bad address syntax is X.1.3, matched by "5.1.*"), or could not
// be classified at all.
const weakHard = "other,network_error,system_error,system_full,expired,syntax_error"

// defaultRule is a default rule with the reason it is there.
type defaultRule struct {
	Rule
	why string
}

// defaults is the documented default table. Order matters only among
// rules of equal specificity (see the package comment).
var defaults = []defaultRule{
	{Rule{Status: "5.4.3", Kind: "bounce", Action: "suppress"},
		"routing server failure, permanent: the route to the domain is dead (RFC 3463 §3.5)"},
	{Rule{Status: "5.4.1", Kind: "bounce", Action: "suppress"},
		"no answer from host"},
	{Rule{Status: "5.4.2", Kind: "bounce", Action: "suppress"},
		"bad connection"},
	{Rule{Status: "5.4.4", Kind: "bounce", Action: "suppress"},
		"unable to route: no MX and no address, or a null MX (RFC 7505)"},
	{Rule{Status: "5.4.*", Kind: "bounce", Action: "count", Threshold: 3, Window: "14d"},
		"other permanent network and routing failures (5.4.0, 5.4.5 congestion, 5.4.6 loop,\n5.4.7 expired) may be an outage on either side: suppress after 3 within 14 days"},
	{Rule{Status: "5.1.*", Kind: "bounce", Action: "suppress"},
		"bad destination address: no such mailbox (5.1.1), no such domain (5.1.2), ..."},
	{Rule{Status: "5.1.*", Kind: "bounce", Reason: senderSide, Action: "record"},
		"... unless the text says the sender was blocked (\"5.1.0 ... listed at ...\")"},
	{Rule{Status: "5.1.7", Kind: "bounce", Action: "record"},
		"bad sender's mailbox address syntax: our return path, not the recipient"},
	{Rule{Status: "5.1.8", Kind: "bounce", Action: "record"},
		"bad sender's system address: our return path, not the recipient"},
	{Rule{Status: "5.2.2", Kind: "bounce", Action: "count", Threshold: 5, Window: "14d"},
		"mailbox full: may be emptied; an address full for weeks is abandoned"},
	{Rule{Status: "5.7.*", Kind: "bounce", Action: "record"},
		"security or policy rejection (block list, reputation, SPF/DKIM/DMARC): blames the sender"},
	{Rule{Status: "5.*.*", Kind: "bounce", Reason: senderSide, Action: "record"},
		"other permanent rejections whose text blames the sender or the message"},
	{Rule{Status: "5.*.*", Kind: "bounce", Reason: "mailbox_full", Action: "count", Threshold: 5, Window: "14d"},
		"other permanent failures whose text says the mailbox is full"},
	{Rule{Status: "5.*.*", Kind: "bounce", Reason: weakHard, Action: "count", Threshold: 3, Window: "14d"},
		"other permanent failures whose text blames a network, a system or nothing in particular\n(a bare 5.0.0 is often a filter or an expiry): suppress only if it repeats"},
	{Rule{Status: "5.*.*", Kind: "bounce", Action: "suppress"},
		"every other permanent failure: unknown or disabled mailbox (5.0.0 \"user unknown\", 5.2.1, ...)"},
	{Rule{Status: "4.4.3", Kind: "bounce", Action: "count", Threshold: 5, Window: "14d"},
		"routing server failure that may pass: suppress only when it persists"},
	{Rule{Status: "4.7.*", Kind: "bounce", Action: "record"},
		"temporary policy rejection (greylisting, rate limits, reputation): blames the sender"},
	{Rule{Status: "4.*.*", Kind: "bounce", Reason: senderSide, Action: "record"},
		"temporary rejections whose text blames the sender or the message"},
	{Rule{Status: "4.*.*", Kind: "bounce", Action: "count", Threshold: 5, Window: "14d"},
		"other temporary failures that the sending MTA gave up on: 5 within 14 days suppress"},
	{Rule{Kind: "complaint", Action: "suppress"},
		"the recipient marked a message as spam (RFC 5965): never mail them again"},
	{Rule{Kind: "delay", Action: "record"},
		"a delay is a warning and the MTA still retries: soft evidence, never counted"},
	{Rule{Kind: "autoreply,delivered,unknown", Action: "record"},
		"vacation replies, delivery reports and undecodable messages say nothing bad"},
}

// DefaultRules returns the default policy table, used when the config
// has no [[policy.rules]]. The caller may modify the returned slice.
func DefaultRules() []Rule {
	rules := make([]Rule, len(defaults))
	for i, d := range defaults {
		rules[i] = d.Rule
	}
	return rules
}

// Render writes rules as TOML [[policy.rules]] entries, each preceded by
// its reason when it is a default rule, for config.example.toml.
func Render(w io.Writer, rules []Rule) error {
	var b strings.Builder
	for i, r := range rules {
		if i > 0 {
			b.WriteByte('\n')
		}
		for _, d := range defaults {
			if d.Rule == r {
				for l := range strings.SplitSeq(d.why, "\n") {
					b.WriteString("# " + l + "\n")
				}
				break
			}
		}
		b.WriteString("[[policy.rules]]\n")
		field := func(k, v string) {
			if v != "" {
				fmt.Fprintf(&b, "%s = %s\n", k, quote(v))
			}
		}
		field("name", r.Name)
		field("status", r.Status)
		field("kind", r.Kind)
		field("reason", r.Reason)
		field("action", r.Action)
		if r.Threshold != 0 {
			fmt.Fprintf(&b, "threshold = %d\n", r.Threshold)
		}
		field("window", r.Window)
		if r.RequireVerified {
			b.WriteString("require_verified = true\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// quote writes s as a TOML basic string (TOML 1.0 §String): quotes and
// backslashes escaped, control characters as \uXXXX, invalid UTF-8
// replaced.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range strings.ToValidUTF8(s, "\uFFFD") {
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteRune(c)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, "\\u%04X", c)
		default:
			b.WriteRune(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
