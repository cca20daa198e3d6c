//go:build integration

package integration

import (
	"strings"
	"testing"
	"time"
)

// The bounce shapes of issue 19, made by the real MTAs next to the
// scenario of scenario_test.go and checked after it, so that the queue
// lifetime the 4.4.3 case waits for serves both: an alias that expands to
// several members, a forwarding address, one message to recipients with
// mixed results, and a message refused at the end of DATA as too large.
var (
	unknownM1 = "unknown-m1@" + deadDomain // a list member the stub refuses (5.1.1)
	okM2      = "ok-m2@" + deadDomain      // a list member the stub accepts
	fullM3    = "full-m3@" + deadDomain    // a list member whose mailbox is full (552 5.2.2)
	laterM4   = "later-m4@" + deadDomain   // a list member deferred (451 4.4.3) until the queue lifetime ends
	unknownF  = "unknown-f@" + deadDomain  // the dead target of a forwarding address (5.1.1)
	unknownC  = "unknown-c@" + deadDomain  // the dead target of an alias of an alias (5.1.1)
	chain     = "chain@alias.test"         // an alias of inner@alias.test, an alias of unknownC
	unknownX  = "unknown-x@" + deadDomain  // mixed message: 550 5.1.1
	fullX     = "full-x@" + deadDomain     // mixed message: 552 5.2.2 mailbox full
	laterX    = "later-x@" + deadDomain    // mixed message: 451 4.4.3 until the queue lifetime ends
	laterY    = "later-y@" + deadDomain    // mixed message: the same, a second one
	okX       = "ok-x@" + deadDomain       // mixed message: accepted
	bigY      = "big-y@" + deadDomain      // refused at the end of DATA: 552 5.3.4
)

// sendShapes submits the messages of the shapes to the MTA at addr:
//   - to e.list: the MTA expands it to unknownM1, okM2, fullM3 and
//     laterM4; the stub refuses the first and the third and defers the
//     last;
//   - to e.fwd: forwarded to unknownF, refused;
//   - to chain: expanded to inner@alias.test, then to unknownC, refused;
//   - to unknownX, fullX, laterX, laterY and okX in one message, from a
//     plain return path, so the MTA reports them from its own records;
//   - to bigY from its VERP address: refused after DATA;
//   - to e.nobody from its VERP address: an address of the MTA's own
//     domain that does not exist, so the MTA fails it without asking
//     the stub;
//   - to e.softBounce, if the MTA has one: the stub refuses it with 550
//     5.1.1, which the MTA's soft_bounce turns into a deferral.
func sendShapes(t *testing.T, addr string, e expect) {
	t.Helper()
	// A plain return path: with a VERP one bouncer records the VERP
	// address (store.BuildRecords), here the alias, whatever the report
	// names; the report's recipient is under test.
	submit(t, addr, message{from: "bounces@" + bounceDomain, to: []string{e.list}})
	submit(t, addr, message{from: "bounces@" + bounceDomain, to: []string{e.fwd}})
	submit(t, addr, message{from: "bounces@" + bounceDomain, to: []string{chain}})
	submit(t, addr, message{
		from: "bounces@" + bounceDomain,
		to:   []string{unknownX, fullX, laterX, laterY, okX},
	})
	submit(t, addr, message{from: verpFrom(bigY), to: []string{bigY}})
	submit(t, addr, message{from: verpFrom(e.nobody), to: []string{e.nobody}})
	if e.softBounce != "" {
		submit(t, addr, message{from: "bounces@" + bounceDomain, to: []string{e.softBounce}})
	}
}

// checkShapes checks what bouncer recorded for the shapes. It runs after
// checkScenario, whose final 4.4.3 failure comes at the end of the same
// queue lifetime as laterX's and laterY's.
func checkShapes(t *testing.T, b *bouncerProc, e expect) {
	t.Helper()
	failed := func(r record) bool { return r.Action == "failed" }
	delayed := func(r record) bool { return r.Action == "delayed" }

	// An alias expanded to members: each member the stub refused is a
	// failed recipient with its own status, the alias its original
	// recipient; the alias is never a failed recipient of its own and is
	// not suppressed. The same for a forwarding address.
	for _, c := range []struct {
		name, alias, member, status, class string
	}{
		{"alias", e.list, unknownM1, "5.1.1", "hard"},
		{"alias", e.list, fullM3, "5.2.2", "soft"},
		{"forward", e.fwd, unknownF, "5.1.1", "hard"},
		{"chain", chain, unknownC, "5.1.1", "hard"},
	} {
		r := b.waitRecord(t, c.member, time.Minute, c.name+" DSN", failed)
		checkRecord(t, r, c.status, "", "bounce", c.class)
		if !strings.EqualFold(r.OriginalRecipient, c.alias) {
			t.Errorf("%s: %s: original_recipient %q, want the %s address %s (%s)",
				c.name, c.member, r.OriginalRecipient, c.name, c.alias, r)
		}
		if e.dsnNamesAlias && !strings.Contains(r.DecodedBy, "+expanded") {
			t.Errorf("%s: %s: decoded_by %q, want +expanded (the delivery-status part names the alias)", c.name, c.member, r.DecodedBy)
		}
		if got := b.suppressed(t, c.member); got != (c.class == "hard") {
			t.Errorf("%s: bouncer suppressed %s: %v after one %s, want %v", c.name, c.member, got, c.status, !got)
		}
		if recs := b.query(t, "--recipient", c.alias); len(recs) != 0 {
			t.Errorf("%s: %d records for the %s address %s, want none: %v", c.name, len(recs), c.name, c.alias, recs)
		}
		if b.suppressed(t, c.alias) {
			t.Errorf("%s: bouncer suppressed the %s address %s, want only its member %s", c.name, c.name, c.alias, c.member)
		}
		if c.member != fullM3 {
			saveSample(t, e.mta+"-"+c.name+"-5.1.1.eml", b.raw(t, r.ID))
		}
	}
	m1, m3 := b.waitRecord(t, unknownM1, 0, "alias DSN", failed), b.waitRecord(t, fullM3, 0, "alias DSN", failed)
	if m1.MsgID != m3.MsgID {
		t.Errorf("alias: %s and %s came in different messages (%s, %s), want one DSN", unknownM1, fullM3, m1.MsgID, m3.MsgID)
	}
	// A deferred member: a delay notice, then the final failure at the
	// end of the queue lifetime, both for the member (checked below,
	// after the scenario's own wait for that lifetime).
	m4 := b.waitRecord(t, laterM4, time.Minute, "alias delay DSN", func(r record) bool { return r.Action == "delayed" })
	if !strings.HasPrefix(m4.Status, "4.") || m4.Kind != "delay" || m4.Class != "soft" || !strings.EqualFold(m4.OriginalRecipient, e.list) {
		t.Errorf("alias: %s: delay notice recorded as %s, want a 4.x.x delay with original recipient %s", laterM4, m4, e.list)
	}
	if e.dsnNamesAlias && !strings.Contains(m4.DecodedBy, "+expanded") {
		t.Errorf("alias: %s: delay notice decoded_by %q, want +expanded", laterM4, m4.DecodedBy)
	}
	saveSample(t, e.mta+"-alias-delayed.eml", b.raw(t, m4.ID))
	for _, addr := range []string{okM2, "inner@alias.test"} {
		if recs := b.query(t, "--recipient", addr); len(recs) != 0 {
			t.Errorf("alias: %d records for %s, want none: %v", len(recs), addr, recs)
		}
	}

	// One message, mixed results: the 5.x.x refusals come in one DSN as
	// soon as the stub answers, each with its own status; a full mailbox
	// (552 5.2.2 to RCPT, which both MTAs take as permanent) is soft and
	// not suppressed after one bounce.
	ux := b.waitRecord(t, unknownX, time.Minute, "failed DSN", failed)
	checkRecord(t, ux, "5.1.1", "", "bounce", "hard")
	fx := b.waitRecord(t, fullX, time.Minute, "failed DSN", failed)
	checkRecord(t, fx, "5.2.2", "", "bounce", "soft")
	if fx.Reason != "mailbox_full" || !strings.Contains(fx.DecodedBy, "+full-soft") {
		t.Errorf("%s: reason %q decoded_by %q, want mailbox_full by +full-soft (%s)", fullX, fx.Reason, fx.DecodedBy, fx)
	}
	if b.suppressed(t, fullX) {
		t.Errorf("bouncer suppressed %s after one full-mailbox bounce, want 1 (soft)", fullX)
	}
	if fx.MsgID != ux.MsgID {
		t.Errorf("%s and %s came in different messages (%s, %s), want one DSN", unknownX, fullX, ux.MsgID, fx.MsgID)
	}
	saveSample(t, e.mta+"-mixed-5.1.1-and-5.2.2.eml", b.raw(t, ux.ID))

	// ... the 4.4.3 ones a delay notice first, then the final failure:
	// each once, with its own status, in one notice for both.
	lx := b.waitRecord(t, laterX, time.Minute, "delay DSN", delayed)
	ly := b.waitRecord(t, laterY, time.Minute, "delay DSN", delayed)
	for _, r := range []record{lx, ly} {
		if !strings.HasPrefix(r.Status, "4.") || r.Kind != "delay" || r.Class != "soft" {
			t.Errorf("%s: delay notice recorded as %s", r.Recipient, r)
		}
	}
	if lx.MsgID != ly.MsgID {
		t.Errorf("%s and %s were delayed in different notices (%s, %s), want one", laterX, laterY, lx.MsgID, ly.MsgID)
	}
	saveSample(t, e.mta+"-mixed-delayed.eml", b.raw(t, lx.ID))
	fxf := b.waitRecord(t, laterX, e.final, "final failed DSN", failed)
	fyf := b.waitRecord(t, laterY, e.final, "final failed DSN", failed)
	checkRecord(t, fxf, "4.4.3", "", "bounce", "soft")
	checkRecord(t, fyf, "4.4.3", "", "bounce", "soft")
	if fxf.MsgID != fyf.MsgID {
		t.Errorf("%s and %s failed in different notices (%s, %s), want one", laterX, laterY, fxf.MsgID, fyf.MsgID)
	}
	saveSample(t, e.mta+"-mixed-failed.eml", b.raw(t, fxf.ID))
	for _, addr := range []string{unknownX, fullX, laterX, laterY} {
		n := 0
		for _, r := range b.query(t, "--recipient", addr) {
			if r.Action == "failed" {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s: %d failure records, want 1", addr, n)
		}
	}
	if recs := b.query(t, "--recipient", okX); len(recs) != 0 {
		t.Errorf("%d records for %s, which the stub accepted: %v", len(recs), okX, recs)
	}

	// The deferred list member's final failure.
	m4f := b.waitRecord(t, laterM4, e.final, "alias final failed DSN", failed)
	checkRecord(t, m4f, "4.4.3", "", "bounce", "soft")
	if !strings.EqualFold(m4f.OriginalRecipient, e.list) || e.dsnNamesAlias && !strings.Contains(m4f.DecodedBy, "+expanded") {
		t.Errorf("alias: %s: final failure recorded as %s, want original recipient %s", laterM4, m4f, e.list)
	}
	if recs := b.query(t, "--recipient", e.list); len(recs) != 0 {
		t.Errorf("alias: %d records for the alias %s, want none: %v", len(recs), e.list, recs)
	}
	saveSample(t, e.mta+"-alias-failed.eml", b.raw(t, m4f.ID))

	// soft_bounce: the stub's 550 5.1.1 deferred until the queue
	// lifetime ends. Postfix writes Status 4.1.1 with the stub's reply
	// in Diagnostic-Code. The delay notice quotes a 5.x.x but will be
	// retried: a delay, 4.1.1 (+retrying), not suppressed. The final
	// failure gives the remote server's reply, which contradicts the
	// Status field's class: the reply is what happened, 5.1.1 hard.
	if e.softBounce != "" {
		sd := b.waitRecord(t, e.softBounce, 0, "soft_bounce delay DSN", delayed)
		checkRecord(t, sd, "4.1.1", "4.1.1", "delay", "soft")
		if !strings.Contains(sd.DecodedBy, "+retrying") || !strings.Contains(sd.DiagnosticCode, "550 5.1.1") {
			t.Errorf("%s: delay notice decoded_by %q diagnostic %q, want +retrying with the stub's 550 5.1.1", e.softBounce, sd.DecodedBy, sd.DiagnosticCode)
		}
		saveSample(t, e.mta+"-soft-bounce-delayed.eml", b.raw(t, sd.ID))
		sf := b.waitRecord(t, e.softBounce, e.final, "soft_bounce final failed DSN", failed)
		checkRecord(t, sf, "5.1.1", "4.1.1", "bounce", "hard")
		if !b.suppressed(t, e.softBounce) {
			t.Errorf("bouncer suppressed %s: exit 1 after the final 550 5.1.1, want 0", e.softBounce)
		}
		saveSample(t, e.mta+"-soft-bounce-failed.eml", b.raw(t, sf.ID))
	}

	// An address of the MTA's own domain that does not exist.
	nb := b.waitRecord(t, e.nobody, time.Minute, "failed DSN", failed)
	checkRecord(t, nb, e.nobodyStatus, "", "bounce", "hard")
	saveSample(t, e.mta+"-local-unknown.eml", b.raw(t, nb.ID))

	// Refused after DATA as too large.
	by := b.waitRecord(t, bigY, time.Minute, "failed DSN", failed)
	checkRecord(t, by, "5.3.4", "", "bounce", "hard")
	if by.Reason != "message_too_big" {
		t.Errorf("%s: reason %q, want message_too_big (%s)", bigY, by.Reason, by)
	}
	saveSample(t, e.mta+"-5.3.4-too-big.eml", b.raw(t, by.ID))
}
