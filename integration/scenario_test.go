//go:build integration

package integration

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/bouncer/bouncer/verp"
)

// expect says how an MTA reports the stub's replies.
type expect struct {
	mta string // sample file prefix: "postfix", "exim"
	// literal543 is the Status field the MTA writes for the stub's
	// "550 5.4.3": Postfix copies the reply's code, Exim writes 5.0.0 and
	// puts the reply in Diagnostic-Code.
	literal543 string
	// reporting is the MTA's name in Reporting-MTA (its myhostname or
	// primary_hostname in testdata).
	reporting string
	// final is how long to wait for the 4.4.3 message's final failure,
	// after its delay notice.
	final time.Duration
	// list and fwd are the MTA's alias that expands to unknownM1 and
	// okM2, and its forwarding address to unknownF (shapes_test.go).
	list, fwd string
	// dsnNamesAlias says that the MTA's delivery-status part names the
	// alias, not the member, as Final-Recipient (Exim writes the topmost
	// parent address); the member is then read from the notice's text.
	dsnNamesAlias bool
	// nobody is an address of the MTA's own domains that does not
	// exist; nobodyStatus the status bouncer records for its bounce.
	nobody, nobodyStatus string
	// softBounce is an address the MTA sends to the stub with soft_bounce
	// on (Postfix only), or "".
	softBounce string
}

// Addresses at dead.test; the stub answers by local part (stubReply).
var (
	routeA   = "route-a@" + deadDomain   // with unknownA in one message
	unknownA = "unknown-a@" + deadDomain // 550 5.1.1
	routeB   = "route-b@" + deadDomain   // alone, VERP sender, DSN parameters
	laterC   = "later-c@" + deadDomain   // 451 4.4.3 until the queue lifetime runs out
	routeS   = "route-s@" + deadDomain   // 5.4.3, from a signed VERP return path
)

// signKey signs return paths; bouncer's config lists it (startBouncer).
var signKey = verp.Key{ID: "k", Secret: "integration-test-secret-0123"}

// signedFrom is a signed return path (verp/FORMAT.md) for addr.
func signedFrom(t *testing.T, addr, campaign string) string {
	t.Helper()
	s, err := verp.NewSigner(verp.SignerOptions{Key: signKey, Domain: bounceDomain})
	tcheck(t, err, "signer")
	from, err := s.Sign(addr, campaign, "", time.Now())
	tcheck(t, err, "signing the return path")
	return from
}

// verpFrom is the VERP return path bouncer decodes back to addr.
func verpFrom(addr string) string {
	local, domain, _ := strings.Cut(addr, "@")
	return "bounces+" + local + "=" + domain + "@" + bounceDomain
}

// sendScenario submits the three test messages to the MTA at addr:
//   - to routeA and unknownA with a plain (non-VERP) return path, so the
//     MTA sends one DSN with two recipient blocks and bouncer takes the
//     recipients from the report;
//   - to routeB from its VERP address with RET=HDRS, ENVID, NOTIFY and ORCPT;
//   - to routeS from a signed return path with a campaign;
//   - to laterC from its VERP address with ENVID and NOTIFY=DELAY,FAILURE.
func sendScenario(t *testing.T, addr string, e expect) {
	t.Helper()
	submit(t, addr, message{
		from: "bounces@" + bounceDomain,
		to:   []string{routeA, unknownA},
	})
	submit(t, addr, message{
		from: verpFrom(routeB),
		to:   []string{routeB},
		mail: &smtp.MailOptions{Return: smtp.DSNReturnHeaders, EnvelopeID: e.mta + "-envid-route-b"},
		rcpt: &smtp.RcptOptions{
			Notify:                []smtp.DSNNotify{smtp.DSNNotifyFailure, smtp.DSNNotifyDelayed},
			OriginalRecipientType: smtp.DSNAddressTypeRFC822,
			OriginalRecipient:     routeB,
		},
		header: "X-Campaign: integration-" + e.mta + "\r\n",
	})
	submit(t, addr, message{
		from: signedFrom(t, routeS, "spring-"+e.mta),
		to:   []string{routeS},
	})
	submit(t, addr, message{
		from: verpFrom(laterC),
		to:   []string{laterC},
		mail: &smtp.MailOptions{Return: smtp.DSNReturnHeaders, EnvelopeID: e.mta + "-envid-later-c"},
		rcpt: &smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifyDelayed, smtp.DSNNotifyFailure}},
	})
}

// checkScenario waits for the DSNs of sendScenario to reach bouncer and
// checks what it recorded, through the query commands of the binary.
func checkScenario(t *testing.T, b *bouncerProc, e expect) {
	t.Helper()
	failed := func(r record) bool { return r.Action == "failed" }
	delayed := func(r record) bool { return r.Action == "delayed" }

	// One DSN, two recipient blocks.
	ra := b.waitRecord(t, routeA, time.Minute, "failed DSN", failed)
	ua := b.waitRecord(t, unknownA, time.Minute, "failed DSN", failed)
	checkRecord(t, ra, "5.4.3", e.literal543, "bounce", "hard")
	checkRecord(t, ua, "5.1.1", "", "bounce", "hard")
	if ra.MsgID != ua.MsgID {
		t.Errorf("%s and %s came in different messages (%s, %s), want one DSN with two blocks",
			routeA, unknownA, ra.MsgID, ua.MsgID)
	}
	if !strings.Contains(ra.DiagnosticCode, "5.4.3") {
		t.Errorf("%s: diagnostic_code %q does not carry the stub's 5.4.3 reply", routeA, ra.DiagnosticCode)
	}
	if ra.ReportingMTA == "" {
		t.Errorf("%s: no reporting_mta", routeA)
	}
	saveSample(t, e.mta+"-5.4.3-and-5.1.1.eml", b.raw(t, ra.ID))

	// VERP return path and DSN parameters.
	rb := b.waitRecord(t, routeB, time.Minute, "failed DSN", failed)
	checkRecord(t, rb, "5.4.3", e.literal543, "bounce", "hard")
	if want := e.mta + "-envid-route-b"; rb.OriginalEnvelopeID != want {
		t.Errorf("%s: original_envelope_id %q, want %q", routeB, rb.OriginalEnvelopeID, want)
	}
	if rb.Envelope.VERP != routeB {
		t.Errorf("%s: envelope verp %q, want it decoded from %s", routeB, rb.Envelope.VERP, verpFrom(routeB))
	}
	if !strings.EqualFold(strings.TrimPrefix(strings.ToLower(rb.OriginalRecipient), "rfc822;"), routeB) {
		t.Errorf("%s: original_recipient %q, want the ORCPT %s", routeB, rb.OriginalRecipient, routeB)
	}

	saveSample(t, e.mta+"-5.4.3-envid-orcpt.eml", b.raw(t, rb.ID))

	// A signed return path: verified, with its campaign.
	rs := b.waitRecord(t, routeS, time.Minute, "failed DSN", failed)
	checkRecord(t, rs, "5.4.3", e.literal543, "bounce", "hard")
	if rs.Envelope.VERP != routeS || !rs.Envelope.Verified || rs.Envelope.Campaign != "spring-"+e.mta {
		t.Errorf("%s: envelope verp %q verified %v campaign %q, want %s verified with campaign spring-%s",
			routeS, rs.Envelope.VERP, rs.Envelope.Verified, rs.Envelope.Campaign, routeS, e.mta)
	}

	for _, addr := range []string{routeA, routeB, routeS} {
		if !b.suppressed(t, addr) {
			t.Errorf("bouncer suppressed %s: exit 1, want 0 after a 5.4.3", addr)
		}
	}
	if b.suppressed(t, unknownA) {
		t.Logf("note: %s (5.1.1) is suppressed too", unknownA)
	}
	checkDomain(t, b, e)

	// 4.4.3: a delay notice first, which must not suppress ...
	lc := b.waitRecord(t, laterC, time.Minute, "delay DSN", delayed)
	if raw := b.raw(t, lc.ID); !strings.Contains(string(raw), "4.4.3") {
		// Exim's warning carries the last error only when the last
		// attempt was a delivery; after a "retry time not reached" it
		// says Status 4.0.0 and nothing more, which is what bouncer must
		// then record.
		t.Logf("%s: the delay notice names no 4.4.3; it says %s", laterC, lc.StatusLiteral)
		checkRecord(t, lc, lc.StatusLiteral, "", "delay", "soft")
		if !strings.HasPrefix(lc.Status, "4.") {
			t.Errorf("%s: delay notice recorded as %s, want a 4.x.x status", laterC, lc.Status)
		}
	} else {
		checkRecord(t, lc, "4.4.3", "", "delay", "soft")
	}
	if want := e.mta + "-envid-later-c"; lc.OriginalEnvelopeID != want {
		t.Errorf("%s: original_envelope_id %q, want %q", laterC, lc.OriginalEnvelopeID, want)
	}
	if b.suppressed(t, laterC) {
		t.Errorf("bouncer suppressed %s: exit 0 after a delay notice, want 1", laterC)
	}
	saveSample(t, e.mta+"-4.4.3-delayed.eml", b.raw(t, lc.ID))

	// ... then the failure once the queue lifetime ran out: still a
	// temporary status, so soft and not suppressed.
	lf := b.waitRecord(t, laterC, e.final, "final failed DSN", failed)
	checkRecord(t, lf, "4.4.3", "", "bounce", "soft")
	if b.suppressed(t, laterC) {
		t.Errorf("bouncer suppressed %s: exit 0 after a 4.4.3 failure, want 1", laterC)
	}
	saveSample(t, e.mta+"-4.4.3-failed.eml", b.raw(t, lf.ID))
}

// checkDomain checks "bouncer domains": dead.test has the three 5.4.3
// bounces, through the stub (Remote-MTA) as reported by the MTA.
func checkDomain(t *testing.T, b *bouncerProc, e expect) {
	t.Helper()
	out, code := b.run(t, "domains", "--json", "--status", "5.4.3")
	if code != 0 {
		t.Fatalf("bouncer domains: exit %d", code)
	}
	var found bool
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var d struct {
			Domain        string         `json:"domain"`
			Counts        map[string]int `json:"counts"`
			RemoteMTAs    []string       `json:"remote_mtas"`
			ReportingMTAs []string       `json:"reporting_mtas"`
		}
		tcheck(t, dec.Decode(&d), "decoding bouncer domains output")
		if d.Domain != deadDomain {
			continue
		}
		found = true
		if d.Counts["5.4.3"] != 3 {
			t.Errorf("bouncer domains: %s has %d records of 5.4.3, want 3: %s", deadDomain, d.Counts["5.4.3"], out)
		}
		if !slices.Contains(d.RemoteMTAs, "127.0.0.1") || !slices.Contains(d.ReportingMTAs, e.reporting) {
			t.Errorf("bouncer domains: %s remote MTAs %v, reporting MTAs %v; want 127.0.0.1 and %s",
				deadDomain, d.RemoteMTAs, d.ReportingMTAs, e.reporting)
		}
	}
	if !found {
		t.Errorf("bouncer domains --status 5.4.3 does not list %s: %q", deadDomain, out)
	}
}

// checkRecord compares a record's status, kind and class. literal is the
// Status field as the MTA wrote it when that differs from status.
func checkRecord(t *testing.T, r record, status, literal, kind, class string) {
	t.Helper()
	if r.Status != status || r.Kind != kind || r.Class != class {
		t.Errorf("%s: status %s kind %s class %s, want %s %s %s (%s)",
			r.Recipient, r.Status, r.Kind, r.Class, status, kind, class, r)
	}
	if literal != "" && literal != status && r.StatusLiteral != literal {
		t.Errorf("%s: status_literal %q, want the MTA's %q", r.Recipient, r.StatusLiteral, literal)
	}
}
