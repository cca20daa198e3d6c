package server

import (
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/bouncer/bouncer/verp"
)

// TestSignedTokens drives real signed return paths from verp.Signer: a
// valid one is decoded and marked verified, a tampered one is refused with
// 550 5.7.1, and after too many bad tokens the client is banned with 421.
func TestSignedTokens(t *testing.T) {
	key := verp.Key{ID: "a", Secret: "0123456789abcdef0123"}
	signer, err := verp.NewSigner(verp.SignerOptions{Key: key, Domain: bounceDomain})
	tcheck(t, err, "signer")
	good, err := signer.Sign("user@dead.test", "c1", "l1", time.Now())
	tcheck(t, err, "signing")
	bad := strings.Replace(good, "user=dead.test", "uses=dead.test", 1)
	if bad == good {
		t.Fatalf("could not tamper with %q", good)
	}

	opts := testOptions()
	opts.VERP = verp.NewDecoder(verp.Options{Keys: []verp.Key{key}})
	opts.Guard = verp.NewGuard(verp.GuardOptions{MaxBad: 2})
	saver := &memSaver{}
	ts := newTestServer(t, opts, saver)

	c := dial(t, ts.addr)
	_, err = send(c, "", []string{good}, readTestdata(t, "lhost-postfix-03.eml"))
	tcheck(t, err, "sending to a signed return path")
	got := saver.all()
	if len(got) != 1 || got[0].Envelope.VERP != "user@dead.test" || !got[0].Envelope.Verified {
		t.Fatalf("got %+v, want one delivery verified for user@dead.test", got)
	}

	tcheck(t, c.Mail("", nil), "mail")
	wantCode(t, c.Rcpt(bad, nil), 550, smtp.EnhancedCode{5, 7, 1})
	// The second bad token bans the client: 421 and the connection ends.
	wantCode(t, c.Rcpt(bad, nil), 421, smtp.EnhancedCode{4, 7, 0})
	if err := c.Noop(); err == nil {
		t.Errorf("NOOP after the ban succeeded, want a closed connection")
	}
	// A banned client is refused when it connects again.
	r := connectRaw(t, ts.addr, nil)
	r.expect(421, "4.7.0")
	r.expectClosed()
}

// TestSignedTokenCampaignAndCompact checks what a verified token adds to
// the envelope: its campaign, and for the compact form (a hash of the
// address) the report's recipient that hashes to it — and nothing when no
// recipient of the report does.
func TestSignedTokenCampaignAndCompact(t *testing.T) {
	key := verp.Key{ID: "a", Secret: "0123456789abcdef0123"}
	full, err := verp.NewSigner(verp.SignerOptions{Key: key, Domain: bounceDomain})
	tcheck(t, err, "signer")
	compact, err := verp.NewSigner(verp.SignerOptions{Key: key, Domain: bounceDomain, Compact: true})
	tcheck(t, err, "compact signer")
	dsn := readTestdata(t, "lhost-postfix-03.eml")
	rcpt := finalRecipient(t, dsn)

	opts := testOptions()
	opts.VERP = verp.NewDecoder(verp.Options{Keys: []verp.Key{key}})
	saver := &memSaver{}
	ts := newTestServer(t, opts, saver)
	for _, tc := range []struct {
		signer            *verp.Signer
		addr, campaign    string
		wantVERP, wantCmp string
	}{
		{full, rcpt, "spring", rcpt, "spring"},
		{compact, rcpt, "c9", rcpt, "c9"},
		{compact, "someone-else@dead.test", "c9", "", "c9"},
	} {
		tok, err := tc.signer.Sign(tc.addr, tc.campaign, "", time.Now())
		tcheck(t, err, "signing")
		c := dial(t, ts.addr)
		_, err = send(c, "", []string{tok}, dsn)
		tcheck(t, err, "sending")
		got := saver.all()
		env := got[len(got)-1].Envelope
		if !strings.EqualFold(env.VERP, tc.wantVERP) || env.Campaign != tc.wantCmp || env.Verified != (tc.wantVERP != "") {
			t.Errorf("token for %s: envelope %+v, want VERP %q campaign %q", tc.addr, env, tc.wantVERP, tc.wantCmp)
		}
	}
}

// finalRecipient returns the first Final-Recipient address of a DSN.
func finalRecipient(t *testing.T, dsn []byte) string {
	t.Helper()
	for _, line := range strings.Split(string(dsn), "\n") {
		if v, ok := strings.CutPrefix(line, "Final-Recipient:"); ok {
			v = strings.TrimSpace(v)
			if i := strings.IndexByte(v, ';'); i >= 0 {
				v = strings.TrimSpace(v[i+1:])
			}
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("no Final-Recipient in sample")
	return ""
}

// TestRejectedByReason checks that refused commands are counted by reason,
// for the metrics an operator watches (a spike of bad tokens is an attack,
// a spike of foreign domains a misrouted MX).
func TestRejectedByReason(t *testing.T) {
	key := verp.Key{ID: "a", Secret: "0123456789abcdef0123"}
	opts := testOptions()
	opts.VERP = verp.NewDecoder(verp.Options{Keys: []verp.Key{key}, Required: true})
	ts := newTestServer(t, opts, &memSaver{})
	c := dial(t, ts.addr)
	tcheck(t, c.Mail("", nil), "mail")
	wantCode(t, c.Rcpt("someone@elsewhere.test", nil), 550, smtp.EnhancedCode{5, 7, 1})
	wantCode(t, c.Rcpt("bounces+user=dead.test@"+bounceDomain, nil), 550, smtp.EnhancedCode{5, 7, 1})
	wantCode(t, c.Rcpt("bounces+=aaujqzsylollcf7f2e=c7==user=dead.test@"+bounceDomain, nil), 550, smtp.EnhancedCode{5, 7, 1})
	st := ts.Stats()
	for reason, want := range map[string]int64{ReasonForeignDomain: 1, ReasonUnsigned: 1, ReasonBadToken: 1, ReasonBanned: 0} {
		if got := st.RejectedBy[reason]; got != want {
			t.Errorf("rejected for %s: %d, want %d (all: %v)", reason, got, want, st.RejectedBy)
		}
	}
	if st.Rejected != 3 {
		t.Errorf("rejected in all: %d, want 3", st.Rejected)
	}
}
