package policy

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
	"github.com/pelletier/go-toml/v2"
)

func tcheck(t testing.TB, err error, msg string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
}

// dsn builds an RFC 3464 delivery status notification for rcpt.
func dsn(rcpt, action, status, diag string) string {
	return "From: MAILER-DAEMON@mta.sender.example\r\n" +
		"To: bounces@bounce.example.org\r\n" +
		"Subject: Undelivered Mail Returned to Sender\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n" +
		"\r\n--b1\r\nContent-Type: text/plain\r\n\r\nDelivery to " + rcpt + " failed.\r\n" +
		"\r\n--b1\r\nContent-Type: message/delivery-status\r\n\r\n" +
		"Reporting-MTA: dns; mta.sender.example\r\n\r\n" +
		"Final-Recipient: rfc822; " + rcpt + "\r\n" +
		"Action: " + action + "\r\n" +
		"Status: " + status + "\r\n" +
		"Remote-MTA: dns; mx." + rcpt[strings.IndexByte(rcpt, '@')+1:] + "\r\n" +
		"Diagnostic-Code: smtp; " + diag + "\r\n" +
		"\r\n--b1--\r\n"
}

// arf builds an RFC 5965 abuse report about rcpt.
func arf(rcpt string) string {
	return "From: fbl@isp.example\r\nTo: fbl@bounce.example.org\r\nSubject: complaint\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=feedback-report; boundary=\"b2\"\r\n" +
		"\r\n--b2\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n" +
		"\r\n--b2\r\nContent-Type: message/feedback-report\r\n\r\n" +
		"Feedback-Type: abuse\r\nUser-Agent: fbl/1.0\r\nVersion: 1\r\nOriginal-Rcpt-To: " + rcpt + "\r\n" +
		"\r\n--b2\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: news@sender.example\r\nTo: " + rcpt + "\r\nSubject: news\r\n" +
		"\r\n--b2--\r\n"
}

// autoReply builds an RFC 3834 vacation reply from rcpt.
func autoReply(rcpt string) string {
	return "From: " + rcpt + "\r\nTo: bounces@bounce.example.org\r\nSubject: Out of office\r\n" +
		"Auto-Submitted: auto-replied\r\n\r\nI am away until Monday.\r\n"
}

// decode parses raw with the real decoder and returns the record of its
// first recipient as the store would build it.
func decode(t *testing.T, raw string) *store.Record {
	t.Helper()
	rep, err := parse.Message(strings.NewReader(raw), parse.Limits{})
	tcheck(t, err, "parsing")
	if len(rep.Recipients) == 0 {
		t.Fatalf("no recipients in %+v", rep)
	}
	rc := rep.Recipients[0]
	addr := store.NormalizeAddr(rc.Address())
	return &store.Record{Addr: addr, Domain: addr[strings.IndexByte(addr, '@')+1:], Recipient: rc, ReportingMTA: rep.ReportingMTA}
}

func mustCompile(t *testing.T, rules []Rule) *Table {
	t.Helper()
	tab, err := Compile(rules)
	tcheck(t, err, "compile")
	return tab
}

// TestDefaults runs real reports through parse and the default table.
func TestDefaults(t *testing.T) {
	tab := mustCompile(t, DefaultRules())
	const a = "user@example.com"
	cases := []struct {
		name, raw  string
		wantAction string
		wantRule   string
	}{
		{"5.4.3 routing", dsn(a, "failed", "5.4.3", "550 5.4.3 Routing server failure"), "suppress", "5.4.3 bounce suppress"},
		{"5.4.1 no answer", dsn(a, "failed", "5.4.1", "550 5.4.1 Recipient address rejected: Access denied"), "suppress", "5.4.1 bounce suppress"},
		{"5.4.2 bad connection", dsn(a, "failed", "5.4.2", "lost connection with mx.example.com while sending RCPT TO"), "suppress", "5.4.2 bounce suppress"},
		{"5.4.4 unable to route", dsn(a, "failed", "5.4.4", "Host or domain name not found. Name service error"), "suppress", "5.4.4 bounce suppress"},
		{"5.4.7 expired", dsn(a, "failed", "5.4.7", "delivery time expired"), "count", "5.4.* bounce count 3/14d"},
		{"5.1.1 user unknown", dsn(a, "failed", "5.1.1", "550 5.1.1 <user@example.com>: Recipient address rejected: User unknown"), "suppress", "5.1.* bounce suppress"},
		{"5.1.2 host unknown", dsn(a, "failed", "5.1.2", "Host or domain name not found"), "suppress", "5.1.* bounce suppress"},
		{"5.1.10 null MX", dsn(a, "failed", "5.1.10", "550 5.1.10 recipient domain has a null MX"), "suppress", "5.1.* bounce suppress"},
		{"5.1.0 blocked", dsn(a, "failed", "5.1.0", "550 5.1.0 Sender rejected: your IP is listed at bl.example"), "record", "5.1.* bounce reason=" + senderSide + " record"},
		{"5.5.0 protocol", dsn(a, "failed", "5.5.0", "500 5.5.0 Syntax error, command unrecognized"), "count", "5.*.* bounce reason=" + weakHard + " count 3/14d"},
		{"5.1.8 bad sender domain", dsn(a, "failed", "5.1.8", "553 5.1.8 Sender address rejected: Domain not found"), "record", "5.1.8 bounce record"},
		{"5.2.1 disabled", dsn(a, "failed", "5.2.1", "550 5.2.1 The email account that you tried to reach is disabled"), "suppress", "5.*.* bounce suppress"},
		{"5.2.2 mailbox full", dsn(a, "failed", "5.2.2", "552 5.2.2 Mailbox full"), "count", "5.2.2 bounce count 5/14d"},
		{"5.7.1 block list", dsn(a, "failed", "5.7.1", "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org"), "record", "5.7.* bounce record"},
		{"5.7.26 dmarc", dsn(a, "failed", "5.7.26", "550 5.7.26 Unauthenticated email is not accepted due to DMARC policy"), "record", "5.7.* bounce record"},
		{"5.0.0 spam", dsn(a, "failed", "5.0.0", "550 Message rejected: spam detected"), "record", "5.*.* bounce reason=" + senderSide + " record"},
		{"5.0.0 reputation", dsn(a, "failed", "5.0.0", "550 Your IP has a poor reputation"), "record", "5.*.* bounce reason=" + senderSide + " record"},
		{"5.3.4 too big", dsn(a, "failed", "5.3.4", "552 5.3.4 Message size exceeds fixed limit"), "record", "5.*.* bounce reason=" + senderSide + " record"},
		{"5.0.0 unclassified", dsn(a, "failed", "5.0.0", "550 Message not delivered"), "count", "5.*.* bounce reason=" + weakHard + " count 3/14d"},
		{"5.0.0 full", dsn(a, "failed", "5.0.0", "550 Mailbox is full"), "count", "5.*.* bounce reason=mailbox_full count 5/14d"},
		{"5.3.0 system error", dsn(a, "failed", "5.3.0", "554 5.3.0 Internal error"), "count", "5.*.* bounce reason=" + weakHard + " count 3/14d"},
		{"5.0.0 mailbox unavailable", dsn(a, "failed", "5.0.0", "550 Requested action not taken: mailbox unavailable"), "suppress", "5.*.* bounce suppress"},
		{"4.4.3 routing", dsn(a, "failed", "4.4.3", "451 4.4.3 Routing server failure"), "count", "4.4.3 bounce count 5/14d"},
		{"4.4.1 no answer", dsn(a, "failed", "4.4.1", "connect to mx.example.com[192.0.2.9]:25: Connection timed out"), "count", "4.*.* bounce count 5/14d"},
		{"4.2.2 full", dsn(a, "failed", "4.2.2", "452 4.2.2 Mailbox full"), "count", "4.*.* bounce count 5/14d"},
		{"4.7.1 greylisted", dsn(a, "failed", "4.7.1", "450 4.7.1 Greylisted, try again later"), "record", "4.7.* bounce record"},
		{"4.0.0 rate limit", dsn(a, "failed", "4.0.0", "421 Too many messages, rate limit exceeded"), "record", "4.*.* bounce reason=" + senderSide + " record"},
		{"delay 4.4.3", dsn(a, "delayed", "4.4.3", "451 4.4.3 Routing server failure"), "record", "* delay record"},
		{"delivered", dsn(a, "delivered", "2.0.0", "250 2.0.0 Ok: queued"), "record", "* autoreply,delivered,unknown record"},
		{"complaint", arf(a), "suppress", "* complaint suppress"},
		{"autoreply", autoReply(a), "record", "* autoreply,delivered,unknown record"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := decode(t, tc.raw)
			d := tab.Decide(r)
			if d.Action != tc.wantAction || d.Rule != tc.wantRule {
				t.Fatalf("kind %s status %s reason %s: got %s by %q, want %s by %q",
					r.Kind, r.Status, r.Reason, d.Action, d.Rule, tc.wantAction, tc.wantRule)
			}
			if d.Action == store.ActionCount && (d.Threshold < 1 || d.Window <= 0) {
				t.Fatalf("count without threshold or window: %+v", d)
			}
		})
	}
}

// TestDefaultsNoSenderSideSuppress checks every permanent status with a
// sender-side reason against the default table: none may suppress.
func TestDefaultsNoSenderSideSuppress(t *testing.T) {
	tab := mustCompile(t, DefaultRules())
	for _, reason := range strings.Split(senderSide, ",") {
		for _, status := range []string{"5.0.0", "5.2.0", "5.3.0", "5.5.0", "5.6.0", "5.7.0", "5.7.1", "5.7.25", "4.0.0", "4.7.0"} {
			r := &store.Record{Recipient: parse.Recipient{Kind: parse.KindBounce, Status: status, Reason: parse.Reason(reason)}}
			if d := tab.Decide(r); d.Action != store.ActionRecord {
				t.Errorf("%s %s: got %s by %q, want record", status, reason, d.Action, d.Rule)
			}
		}
	}
}

func TestSpecificity(t *testing.T) {
	tab := mustCompile(t, []Rule{
		{Status: "*", Action: "record", Name: "any"},
		{Status: "5.*.*", Action: "suppress", Name: "class"},
		{Status: "5.*.*", Kind: "bounce", Action: "count", Threshold: 2, Window: "1d", Name: "class bounce"},
		{Status: "5.*.*", Reason: "spam", Action: "record", Name: "class spam"},
		{Status: "5.*.*", Reason: "virus,spam", Action: "suppress", Name: "class virus"}, // ties with "class spam"
		{Status: "5.1.*", Action: "suppress", Name: "subject"},
		{Status: "5.1.1", Action: "record", Name: "exact"},
		{Status: "5.1.*", Reason: "blocked", Kind: "bounce", Action: "record", Name: "subject blocked bounce"},
		{Kind: "complaint", Action: "suppress", Name: "complaint"},
	})
	cases := []struct {
		kind   parse.Kind
		status string
		reason parse.Reason
		want   string
	}{
		{parse.KindBounce, "5.1.1", parse.ReasonBlocked, "exact"}, // exact beats a subject class with reason and kind
		{parse.KindBounce, "5.1.2", parse.ReasonBlocked, "subject blocked bounce"},
		{parse.KindDelay, "5.1.2", parse.ReasonBlocked, "subject"},
		{parse.KindBounce, "5.1.2", parse.ReasonHostUnknown, "subject"},
		{parse.KindBounce, "5.2.1", parse.ReasonSpam, "class spam"}, // reason beats kind
		{parse.KindBounce, "5.2.1", parse.ReasonMailboxDisabled, "class bounce"},
		{parse.KindDelay, "5.2.1", "", "class"},
		{parse.KindDelay, "5.2.1", parse.ReasonSpam, "class spam"}, // tie: first listed wins
		{parse.KindDelay, "5.2.1", parse.ReasonVirus, "class virus"},
		{parse.KindBounce, "4.4.3", "", "any"},
		{parse.KindBounce, "", "", "any"},
		{parse.KindComplaint, "", "", "complaint"},
		{parse.KindBounce, "5.1", "", "any"}, // malformed status matches only "*"
	}
	for _, tc := range cases {
		r := &store.Record{Recipient: parse.Recipient{Kind: tc.kind, Status: tc.status, Reason: tc.reason}}
		if d := tab.Decide(r); d.Rule != tc.want {
			t.Errorf("%s %s %s: got %q, want %q", tc.kind, tc.status, tc.reason, d.Rule, tc.want)
		}
	}
	empty := mustCompile(t, nil)
	d := empty.Decide(&store.Record{Recipient: parse.Recipient{Kind: parse.KindBounce, Status: "5.4.3"}})
	if d.Action != store.ActionRecord || d.Rule != "no rule" {
		t.Fatalf("empty table: got %+v", d)
	}
}

func TestCompileErrors(t *testing.T) {
	cases := []struct {
		rule Rule
		want string
	}{
		{Rule{Status: "5.4", Action: "suppress"}, `status "5.4"`},
		{Rule{Status: "5.*.3", Action: "suppress"}, `status "5.*.3"`},
		{Rule{Status: "6.1.1", Action: "suppress"}, "class must be 2, 4 or 5"},
		{Rule{Status: "5.01.1", Action: "suppress"}, `status "5.01.1"`},
		{Rule{Status: "5.1.1000", Action: "suppress"}, `status "5.1.1000"`},
		{Rule{Status: "5.a.1", Action: "suppress"}, `status "5.a.1"`},
		{Rule{Kind: "bounced", Action: "suppress"}, `unknown kind "bounced"`},
		{Rule{Kind: ",", Action: "suppress"}, "names nothing"},
		{Rule{Reason: "spam,dead", Action: "record"}, `unknown reason "dead"`},
		{Rule{Status: "5.1.1"}, "missing action"},
		{Rule{Status: "5.1.1", Action: "drop"}, `unknown action "drop"`},
		{Rule{Status: "4.*.*", Action: "count", Window: "14d"}, "needs a threshold"},
		{Rule{Status: "4.*.*", Action: "count", Threshold: 5000, Window: "14d"}, "needs a threshold"},
		{Rule{Status: "4.*.*", Action: "count", Threshold: 5}, "needs a window"},
		{Rule{Status: "4.*.*", Action: "count", Threshold: 5, Window: "two weeks"}, `window "two weeks"`},
		{Rule{Status: "4.*.*", Action: "count", Threshold: 5, Window: "-1h"}, "must be positive"},
		{Rule{Status: "5.1.1", Action: "suppress", Threshold: 3}, "only apply to action"},
		{Rule{Status: "5.1.1", Action: "record", Window: "1d"}, "only apply to action"},
		{Rule{Status: "5.7.1", Action: "record", RequireVerified: true}, "require_verified only applies"},
	}
	for _, tc := range cases {
		_, err := Compile([]Rule{{Status: "*", Action: "record"}, tc.rule})
		if err == nil {
			t.Errorf("%+v: no error, want %q", tc.rule, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "policy rule 2") {
			t.Errorf("%+v: got %q, want it to name rule 2 and contain %q", tc.rule, err, tc.want)
		}
	}

	// Every bad rule is reported, and a duplicate is named with the rule it repeats.
	_, err := Compile([]Rule{
		{Status: "5.1.*", Kind: "bounce", Action: "suppress"},
		{Status: "5.1.x", Kind: "bounce", Action: "record"},
		{Status: "5.1.1", Action: "nope"},
	})
	if err == nil {
		t.Fatal("no error for a duplicate and a bad action")
	}
	msg := err.Error()
	for _, want := range []string{"policy rule 2", "as rule 1", "policy rule 3", `unknown action "nope"`} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
}

func TestParseWindow(t *testing.T) {
	cases := []struct {
		in   string
		want time.Duration
	}{
		{"14d", 14 * 24 * time.Hour},
		{"1d12h", 36 * time.Hour},
		{"36h", 36 * time.Hour},
		{" 90m ", 90 * time.Minute},
	}
	for _, tc := range cases {
		got, err := ParseWindow(tc.in)
		tcheck(t, err, tc.in)
		if got != tc.want {
			t.Errorf("%q: got %s, want %s", tc.in, got, tc.want)
		}
	}
	for _, bad := range []string{"", "0", "0d", "d", "xd", "14 days", "1.5d", "-2d", "99999999d", "1d-30h"} {
		if d, err := ParseWindow(bad); err == nil {
			t.Errorf("%q: got %s, want an error", bad, d)
		}
	}
}

func TestRequireVerified(t *testing.T) {
	tab := mustCompile(t, []Rule{
		{Status: "5.4.3", Action: "suppress", RequireVerified: true},
		{Status: "4.4.3", Action: "count", Threshold: 2, Window: "1d", RequireVerified: true},
	})
	rec := func(status string, env store.Envelope) *store.Record {
		return &store.Record{Addr: "user@example.com", Envelope: env,
			Recipient: parse.Recipient{Kind: parse.KindBounce, Status: status}}
	}
	cases := []struct {
		name   string
		r      *store.Record
		action string
	}{
		{"signed", rec("5.4.3", store.Envelope{VERP: "user@EXAMPLE.com", Verified: true}), "suppress"},
		{"unsigned verp", rec("5.4.3", store.Envelope{VERP: "user@example.com"}), "record"},
		{"no verp", rec("5.4.3", store.Envelope{}), "record"},
		{"signed other address", rec("5.4.3", store.Envelope{VERP: "other@example.com", Verified: true}), "record"},
		{"count signed", rec("4.4.3", store.Envelope{VERP: "user@example.com", Verified: true}), "count"},
		{"count unsigned", rec("4.4.3", store.Envelope{}), "record"},
	}
	for _, tc := range cases {
		d := tab.Decide(tc.r)
		if d.Action != tc.action {
			t.Errorf("%s: got %s by %q, want %s", tc.name, d.Action, d.Rule, tc.action)
		}
		if d.Action == store.ActionRecord && !strings.Contains(d.Rule, "unverified") {
			t.Errorf("%s: rule %q does not say the address was unverified", tc.name, d.Rule)
		}
	}
}

// TestRender decodes the rendered defaults strictly, as cmd decodes the
// config file, and checks they round-trip and compile.
func TestRender(t *testing.T) {
	rules := append(DefaultRules(), Rule{Name: "odd \"name\"\x01\\", Status: "5.4.3", Kind: "bounce", Action: "suppress", RequireVerified: true})
	var buf bytes.Buffer
	tcheck(t, Render(&buf, rules), "render")
	var cfg struct {
		Policy struct {
			Rules []Rule `toml:"rules"`
		} `toml:"policy"`
	}
	dec := toml.NewDecoder(bytes.NewReader(buf.Bytes()))
	dec.DisallowUnknownFields()
	tcheck(t, dec.Decode(&cfg), "decoding rendered rules:\n"+buf.String())
	if got, want := fmt.Sprint(cfg.Policy.Rules), fmt.Sprint(rules); got != want {
		t.Fatalf("round trip:\ngot  %s\nwant %s", got, want)
	}
	if !strings.Contains(buf.String(), "# routing server failure, permanent") {
		t.Fatalf("rendered defaults lack their comments:\n%s", buf.String())
	}
	_, err := Compile(cfg.Policy.Rules[:len(DefaultRules())])
	tcheck(t, err, "compiling rendered defaults")
}

// TestCorpus runs the real bounces of parse/testdata through the parser
// and the default table. It logs how they are decided and checks the
// promises of the defaults: sender-side 5.7.x rejections, delays,
// auto-replies and delivery reports never suppress.
func TestCorpus(t *testing.T) {
	tab := mustCompile(t, DefaultRules())
	files, err := filepath.Glob("../parse/testdata/sisimai/maildir/*/*.eml")
	tcheck(t, err, "listing corpus")
	if len(files) < 100 {
		t.Fatalf("only %d corpus files", len(files))
	}
	byRule := map[string]int{}
	byAction := map[string]int{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		tcheck(t, err, "reading")
		rep, err := parse.Message(bytes.NewReader(raw), parse.Limits{})
		if err != nil {
			continue
		}
		for _, rc := range rep.Recipients {
			r := &store.Record{Recipient: rc}
			d := tab.Decide(r)
			byRule[d.Rule]++
			byAction[d.Action]++
			if os.Getenv("POLICY_DUMP") != "" {
				t.Logf("%s %s %s %s", d.Rule, rc.Status, rc.Reason, f)
			}
			if d.Action == store.ActionRecord {
				continue
			}
			if strings.HasPrefix(rc.Status, "5.7.") || strings.HasPrefix(rc.Status, "4.7.") {
				t.Errorf("%s: %s %s %s: %s by %q", f, rc.Kind, rc.Status, rc.Reason, d.Action, d.Rule)
			}
			if rc.Kind != parse.KindBounce && rc.Kind != parse.KindComplaint {
				t.Errorf("%s: kind %s: %s by %q", f, rc.Kind, d.Action, d.Rule)
			}
		}
	}
	rules := make([]string, 0, len(byRule))
	for r := range byRule {
		rules = append(rules, r)
	}
	slices.Sort(rules)
	for _, r := range rules {
		t.Logf("%4d %s", byRule[r], r)
	}
	t.Logf("%d files: %v", len(files), byAction)
}

func BenchmarkDecide(b *testing.B) {
	tab, err := Compile(DefaultRules())
	if err != nil {
		b.Fatal(err)
	}
	recs := []*store.Record{
		{Recipient: parse.Recipient{Kind: parse.KindBounce, Status: "5.4.3", Reason: parse.ReasonRouting}},
		{Recipient: parse.Recipient{Kind: parse.KindBounce, Status: "5.0.0", Reason: parse.ReasonUserUnknown}},
		{Recipient: parse.Recipient{Kind: parse.KindDelay, Status: "4.4.1", Reason: parse.ReasonNetwork}},
		{Recipient: parse.Recipient{Kind: parse.KindComplaint}},
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tab.Decide(recs[i%len(recs)])
	}
}
