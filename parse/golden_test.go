package parse

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the *.golden.json files of TestGolden")

// goldenResult is what a golden file holds: the report and the error text.
type goldenResult struct {
	Error  string  `json:"error,omitempty"`
	Report *Report `json:"report"`
}

// TestGolden decodes each testdata/golden/*.eml and compares the Report
// with its .golden.json. Samples named after an MTA come from the sisimai
// corpus (see testdata/golden/LICENSE.sisimai), fml-loop.eml and
// exim-generated.eml among them (lhost-fml-03, lhost-exim-08); exim-543.eml and
// global-utf8.eml are written for these tests.
func TestGolden(t *testing.T) {
	paths, err := filepath.Glob("testdata/golden/*.eml")
	tcheck(t, err, "listing golden samples")
	if len(paths) < 10 {
		t.Fatalf("found %d golden samples, want at least 10", len(paths))
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			raw, err := os.ReadFile(p)
			tcheck(t, err, "reading sample")
			rep, err := Message(bytes.NewReader(raw), Limits{})
			if rep == nil {
				t.Fatal("nil report")
			}
			res := goldenResult{Report: rep}
			if err != nil {
				res.Error = err.Error()
			}
			got, err := json.MarshalIndent(res, "", "  ")
			tcheck(t, err, "encoding report")
			got = append(got, '\n')
			gp := strings.TrimSuffix(p, ".eml") + ".golden.json"
			if *update {
				tcheck(t, os.WriteFile(gp, got, 0o644), "writing golden file")
				return
			}
			want, err := os.ReadFile(gp)
			tcheck(t, err, "reading golden file (run with -update to create it)")
			if !bytes.Equal(got, want) {
				t.Errorf("report differs from %s (run with -update after checking):\n%s", gp, got)
			}
		})
	}
}

// TestGoldenFacts checks the facts the golden files are about, so that an
// -update cannot silently bless a regression.
func TestGoldenFacts(t *testing.T) {
	decode := func(name string) (*Report, error) {
		t.Helper()
		raw, err := os.ReadFile(filepath.Join("testdata/golden", name))
		tcheck(t, err, "reading sample")
		return Message(bytes.NewReader(raw), Limits{})
	}
	t.Run("exim 5.0.0 with 550 5.4.3", func(t *testing.T) {
		rep, err := decode("exim-543.eml")
		tcheck(t, err, "decoding")
		if len(rep.Recipients) != 1 {
			t.Fatalf("got %d recipients, want 1", len(rep.Recipients))
		}
		rc := rep.Recipients[0]
		if rc.Status != "5.4.3" || rc.StatusLiteral != "5.0.0" || rc.StatusInferred {
			t.Errorf("status %q literal %q inferred %v, want 5.4.3 from literal 5.0.0", rc.Status, rc.StatusLiteral, rc.StatusInferred)
		}
		if rc.Kind != KindBounce || rc.Class != ClassHard || rc.Reason != ReasonRouting || rc.ReplyCode != "550" {
			t.Errorf("kind %s class %s reason %s reply %s", rc.Kind, rc.Class, rc.Reason, rc.ReplyCode)
		}
		if rc.FinalRecipient != "user@dead.test" || rc.DecodedBy != "rfc3464" || rc.RemoteMTA != "mx.dead.test" {
			t.Errorf("recipient %q by %q remote %q", rc.FinalRecipient, rc.DecodedBy, rc.RemoteMTA)
		}
		o := rep.Original
		if o == nil || o.MessageID != "<newsletter-42.user@sender.example>" || o.XHeaders["X-Campaign"] != "march-2024" ||
			o.XHeaders["X-Listmonk-Campaign"] != "17" || o.Subject != "March news" {
			t.Errorf("original %+v", o)
		}
	})
	t.Run("global delivery status", func(t *testing.T) {
		rep, err := decode("global-utf8.eml")
		tcheck(t, err, "decoding")
		if len(rep.Recipients) != 2 {
			t.Fatalf("got %d recipients, want 2", len(rep.Recipients))
		}
		a, b := rep.Recipients[0], rep.Recipients[1]
		if a.FinalRecipient != "用户@例子.中国" || a.FinalRecipientType != "utf-8" || a.OriginalRecipient != "用户@例子.中国" {
			t.Errorf("utf-8 recipient %q (%s), original %q", a.FinalRecipient, a.FinalRecipientType, a.OriginalRecipient)
		}
		if a.DecodedBy != "rfc6533" || a.Class != ClassHard || a.Reason != ReasonUserUnknown {
			t.Errorf("first: by %s class %s reason %s", a.DecodedBy, a.Class, a.Reason)
		}
		if b.Kind != KindDelay || b.Class != ClassSoft || b.Status != "4.2.2" || b.WillRetryUntil == "" {
			t.Errorf("second: %+v", b)
		}
		if rep.Kind != KindBounce || rep.OriginalEnvelopeID != "env-0001" || rep.Original == nil || rep.Original.Subject != "Grüße" {
			t.Errorf("report kind %s envid %q original %+v", rep.Kind, rep.OriginalEnvelopeID, rep.Original)
		}
	})
	t.Run("not a bounce", func(t *testing.T) {
		rep, err := decode("not-bounce.eml")
		if !errors.Is(err, ErrNotBounce) || rep.Kind != KindUnknown || len(rep.Recipients) != 0 {
			t.Errorf("err %v kind %s recipients %d", err, rep.Kind, len(rep.Recipients))
		}
	})
	t.Run("truncated", func(t *testing.T) {
		rep, err := decode("truncated.eml")
		tcheck(t, err, "decoding")
		if len(rep.Recipients) != 1 || rep.Recipients[0].FinalRecipient != "kijitora@example.jp" || rep.Recipients[0].Status != "5.2.1" {
			t.Errorf("recipients %+v", rep.Recipients)
		}
	})
	t.Run("multi-recipient", func(t *testing.T) {
		rep, err := decode("postfix-multi-lf.eml")
		tcheck(t, err, "decoding")
		if got := addrs(rep); len(got) != 2 || got[0] != "kijitora@example.jp" || got[1] != "noraneko@example.jp" {
			t.Errorf("recipients %v", got)
		}
	})
	t.Run("complaint", func(t *testing.T) {
		rep, err := decode("arf-multi.eml")
		tcheck(t, err, "decoding")
		if rep.Kind != KindComplaint || rep.Feedback == nil || rep.Feedback.FeedbackType != "abuse" || len(rep.Recipients) != 7 {
			t.Errorf("kind %s feedback %+v recipients %d", rep.Kind, rep.Feedback, len(rep.Recipients))
		}
	})
	t.Run("list manager notice", func(t *testing.T) {
		rep, err := decode("fml-loop.eml")
		tcheck(t, err, "decoding")
		if len(rep.Recipients) != 1 || rep.Recipients[0].FinalRecipient != "neko@example.co.jp" ||
			rep.Recipients[0].DecodedBy != "text/near-failure" || rep.Recipients[0].Kind != KindBounce {
			t.Errorf("recipients %+v", rep.Recipients)
		}
	})
	t.Run("list server's refusal in the subject", func(t *testing.T) {
		// LISTSERV names the list it refused the posting to only in
		// its subject; the text names the sender and the list owners.
		rep, err := decode("listserv-rejected.eml")
		tcheck(t, err, "decoding")
		if len(rep.Recipients) != 1 || rep.Recipients[0].FinalRecipient != "CATS-L@LISTS.EXAMPLE.EDU" ||
			rep.Recipients[0].DecodedBy != ruleSubjectName || rep.Recipients[0].Kind != KindBounce {
			t.Errorf("recipients %+v", rep.Recipients)
		}
	})
	t.Run("list manager's rejection", func(t *testing.T) {
		// Sympa's "Authorization denied": the list is near "not a
		// subscriber"; its -request address is a contact.
		rep, err := decode("sympa-rejected.eml")
		tcheck(t, err, "decoding")
		if len(rep.Recipients) != 1 || rep.Recipients[0].FinalRecipient != "dogs@lists.example.net" ||
			rep.Recipients[0].DecodedBy != ruleNearName || rep.Recipients[0].Kind != KindBounce {
			t.Errorf("recipients %+v", rep.Recipients)
		}
	})
	t.Run("exim alias expansion", func(t *testing.T) {
		rep, err := decode("exim-generated.eml")
		tcheck(t, err, "decoding")
		if len(rep.Recipients) != 1 {
			t.Fatalf("recipients %v", addrs(rep))
		}
		rc := rep.Recipients[0]
		if rc.FinalRecipient != "kijitora@example.org" || rc.OriginalRecipient != "nekochan@example.org" ||
			rc.DecodedBy != "header/x-failed-recipients+expanded" || rc.Kind != KindBounce || rc.Status != "4.4.7" {
			t.Errorf("recipient %+v", rc)
		}
	})
	t.Run("header names only the alias", func(t *testing.T) {
		// X-Failed-Recipients names the list address that the notice
		// says the failed member was generated from.
		rep, err := decode("exim-alias-header.eml")
		tcheck(t, err, "decoding")
		if len(rep.Recipients) != 1 {
			t.Fatalf("recipients %v", addrs(rep))
		}
		rc := rep.Recipients[0]
		if rc.FinalRecipient != "bob@members.example.net" || rc.OriginalRecipient != "team@example.com" ||
			rc.DecodedBy != "text/exim+over-alias+expanded" || rc.Kind != KindBounce || rc.Status != "5.1.1" {
			t.Errorf("recipient %+v", rc)
		}
	})
	t.Run("translated notices", func(t *testing.T) {
		// A Japanese notice whose reason is a full mailbox is soft; a
		// German one that says delivery will still be tried is a delay,
		// though it quotes a 5.x.x.
		rep, err := decode("jp-mailbox-full.eml")
		tcheck(t, err, "decoding")
		if len(rep.Recipients) != 1 || rep.Recipients[0].FinalRecipient != "hana@example.jp" ||
			rep.Recipients[0].Reason != ReasonMailboxFull || rep.Recipients[0].Class != ClassSoft {
			t.Errorf("japanese: %+v", rep.Recipients)
		}
		rep, err = decode("de-delay.eml")
		tcheck(t, err, "decoding")
		if len(rep.Recipients) != 1 || rep.Recipients[0].FinalRecipient != "hans@example.de" ||
			rep.Recipients[0].Kind != KindDelay || rep.Recipients[0].Status != "4.7.1" {
			t.Errorf("german: %+v", rep.Recipients)
		}
	})
	t.Run("exim report naming the alias", func(t *testing.T) {
		// Exim's delivery-status part names the alias (the topmost parent)
		// for each member that failed; its text names the members, in
		// another order than the report: the Diagnostic-Code tells
		// which record is which member.
		raw, err := os.ReadFile("testdata/golden/exim-dsn-generated.eml")
		tcheck(t, err, "reading sample")
		rep, err := Message(bytes.NewReader(raw), Limits{})
		tcheck(t, err, "decoding")
		type rec struct{ final, orig, status string }
		var got []rec
		for _, rc := range rep.Recipients {
			got = append(got, rec{rc.FinalRecipient, rc.OriginalRecipient, rc.Status})
		}
		want := []rec{
			{"shironeko@example.com", "", "5.4.3"},
			{"kijitora@example.net", "list@example.org", "5.1.1"},
			{"mikeneko@example.net", "list@example.org", "5.2.2"},
		}
		if !slices.Equal(got, want) {
			t.Fatalf("records %v, want %v", got, want)
		}
		if by := rep.Recipients[0].DecodedBy; by != "rfc3464" {
			t.Errorf("%s: decoded_by %q, want rfc3464", want[0].final, by)
		}
		if a, b := rep.Recipients[1], rep.Recipients[2]; a.DecodedBy != "rfc3464+expanded" || a.Class != ClassHard ||
			b.DecodedBy != "rfc3464+expanded+full-soft" || b.Class != ClassSoft {
			t.Errorf("members: %s %s, %s %s", a.DecodedBy, a.Class, b.DecodedBy, b.Class)
		}

		// A record whose diagnostic matches no member: which member is
		// which record is a guess, so both keep the alias.
		cut := bytes.Replace(raw, []byte("Diagnostic-Code: smtp; 552 5.2.2 Mailbox full, quota exceeded\n"), nil, 1)
		if bytes.Equal(cut, raw) {
			t.Fatal("sample has no 552 Diagnostic-Code to cut")
		}
		rep, err = Message(bytes.NewReader(cut), Limits{})
		tcheck(t, err, "decoding")
		for _, rc := range rep.Recipients[1:] {
			if rc.FinalRecipient != "list@example.org" || strings.Contains(rc.DecodedBy, ruleExpanded) {
				t.Errorf("without a diagnostic: %s by %s, want list@example.org as reported", rc.FinalRecipient, rc.DecodedBy)
			}
		}

		// The wording in another case is the same wording: the gate that
		// looks for it before the rule runs ignores case, as the rule does.
		upper := bytes.ReplaceAll(raw, []byte("(generated from"), []byte("(Generated From"))
		if bytes.Equal(upper, raw) {
			t.Fatal("sample has no \"(generated from\" to capitalise")
		}
		rep, err = Message(bytes.NewReader(upper), Limits{})
		tcheck(t, err, "decoding")
		var upperGot []rec
		for _, rc := range rep.Recipients {
			upperGot = append(upperGot, rec{rc.FinalRecipient, rc.OriginalRecipient, rc.Status})
		}
		if !slices.Equal(upperGot, want) {
			t.Errorf("capitalised wording: records %v, want %v", upperGot, want)
		}

		// An "expanded" record names the alias rightly (RFC 3464 §2.3.3).
		exp := bytes.ReplaceAll(raw, []byte("Action: failed\nFinal-Recipient: rfc822;list@example.org"),
			[]byte("Action: expanded\nFinal-Recipient: rfc822;list@example.org"))
		rep, err = Message(bytes.NewReader(exp), Limits{})
		tcheck(t, err, "decoding")
		for _, rc := range rep.Recipients[1:] {
			if rc.Action != Expanded || rc.FinalRecipient != "list@example.org" || strings.Contains(rc.DecodedBy, ruleExpanded) {
				t.Errorf("expanded: %s %s by %s, want list@example.org as reported", rc.Action, rc.FinalRecipient, rc.DecodedBy)
			}
		}
	})
	t.Run("vacation", func(t *testing.T) {
		rep, err := decode("vacation.eml")
		tcheck(t, err, "decoding")
		if rep.Kind != KindAutoReply || len(rep.Recipients) != 1 || rep.Recipients[0].FinalRecipient != "nekonyaan@example.org" ||
			rep.Recipients[0].Class != ClassNone {
			t.Errorf("kind %s recipients %+v", rep.Kind, rep.Recipients)
		}
	})
}
