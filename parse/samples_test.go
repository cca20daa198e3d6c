package parse

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// Bounce samples of other public bounce parsers, each in
// testdata/<project> with its licence, a README saying where it came
// from, and expected.jsonl: one row per file with the addresses that
// project's own tests expect and the class they give the failure
// ("permanent", "temporary", or "" when they say nothing about it).
// A row without recipients but with a class is a sample whose project
// asserts only the class of the failure (a status code, bounced or
// retryable), not the address: it counts in permanent/temporary alone,
// where every failure record of its report must have that class. A row
// with neither expects no failure record. The decoder was not
// written on them; their floors ratchet like the corpus ones.

type sampleRow struct {
	File       string   `json:"file"`
	Recipients []string `json:"recipients"`
	Class      string   `json:"class"`
}

// sampleSet is one project's samples and the floors, in percent, of its
// three figures. With bodyOnly the samples are notice texts without a
// header, and noticeHeader is put before each. With byStatus the class
// is compared with the first digit of the record's status (the project's
// class is its reply code's), else with the record's kind.
type sampleSet struct {
	dir                                      string
	bodyOnly, byStatus                       bool
	floorRecipient, floorCls, floorPrecision float64
}

var sampleSets = []sampleSet{
	{dir: "testdata/flufl", floorRecipient: 99.1, floorCls: 100, floorPrecision: 98.4},
	{dir: "testdata/bounceparser", floorRecipient: 100, floorCls: 100, floorPrecision: 100},
	{dir: "testdata/crisp", bodyOnly: true, byStatus: true, floorRecipient: 100, floorCls: 100, floorPrecision: 99},
	{dir: "testdata/mailman", floorRecipient: 100, floorCls: 100, floorPrecision: 100},
	{dir: "testdata/mailbouncedetector", floorRecipient: 100, floorCls: 100, floorPrecision: 100},
	{dir: "testdata/phpbounce", floorRecipient: 100, floorCls: 100, floorPrecision: 100},
	{dir: "testdata/bounced", floorRecipient: 100, floorCls: 100, floorPrecision: 100},
	{dir: "testdata/rubymail", floorRecipient: 100, floorCls: 100, floorPrecision: 100},
	{dir: "testdata/flanker", floorRecipient: 100, floorCls: 100, floorPrecision: 100},
	{dir: "testdata/commcare", floorRecipient: 100, floorCls: 100, floorPrecision: 100},
	{dir: "testdata/froide", floorRecipient: 100, floorCls: 100, floorPrecision: 100},
	{dir: "testdata/mimekit", floorRecipient: 100, floorCls: 100, floorPrecision: 100},
	{dir: "testdata/zammad", floorRecipient: 100, floorCls: 100, floorPrecision: 100},
	{dir: "testdata/wikimedia", byStatus: true, floorRecipient: 100, floorCls: 100, floorPrecision: 100},
}

// noticeHeader is the header given to a notice text without one: a
// mailer-daemon's, with a subject that says nothing of the failure.
const noticeHeader = "From: Mail Delivery System <MAILER-DAEMON@notice.invalid>\nSubject: Mail delivery notice\n" +
	"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n"

func loadSampleRows(t *testing.T, dir string) []sampleRow {
	t.Helper()
	rows := readJSONL[sampleRow](t, filepath.Join(dir, "expected.jsonl"))
	if len(rows) == 0 {
		t.Fatal("no rows in expected.jsonl")
	}
	return rows
}

// TestSamples decodes the samples of each set and checks two figures
// against its floors: recipients (each expected address is the final or
// original recipient of a record) and permanent/temporary (the record of
// a found address is a delay when the project calls the failure
// temporary, a bounce when it calls it permanent), and precision (the
// failure records, bounces and delays, whose address the project
// expects, of all failure records: an extra one suppresses an address
// that did not fail).
func TestSamples(t *testing.T) {
	for _, set := range sampleSets {
		t.Run(filepath.Base(set.dir), func(t *testing.T) {
			var rcpt, cls, prec figure
			var bad []string
			for _, r := range loadSampleRows(t, set.dir) {
				raw, err := os.ReadFile(filepath.Join(set.dir, r.File))
				tcheck(t, err, "reading sample")
				if set.bodyOnly {
					raw = append([]byte(noticeHeader), raw...)
				}
				rep, _ := Message(bytes.NewReader(raw), Limits{})
				if rep == nil {
					t.Fatalf("%s: nil report", r.File)
				}
				if len(r.Recipients) == 0 && r.Class != "" {
					ok := classOnly(rep, r.Class, set.byStatus)
					cls.add(ok)
					if !ok {
						bad = append(bad, fmt.Sprintf("class %s: want %s, got %s", r.File, r.Class, kinds(rep)))
					}
					continue
				}
				for _, want := range r.Recipients {
					rc, found := findRecipient(rep, want, 0)
					rcpt.add(found)
					if !found {
						bad = append(bad, fmt.Sprintf("recipient %s: want %s, got %v", r.File, want, addrs(rep)))
						continue
					}
					var wantKind Kind
					switch r.Class {
					case "permanent":
						wantKind = KindBounce
					case "temporary":
						wantKind = KindDelay
					default:
						continue
					}
					ok := rc.Kind == wantKind
					if set.byStatus {
						ok = first(rc.Status) == map[Kind]string{KindBounce: "5", KindDelay: "4"}[wantKind]
					}
					cls.add(ok)
					if !ok {
						bad = append(bad, fmt.Sprintf("class %s: %s want %s, got %s %s (%s)", r.File, want, r.Class, rc.Kind, rc.Status, rc.DecodedBy))
					}
				}
				for _, rc := range rep.Recipients {
					if rc.Kind != KindBounce && rc.Kind != KindDelay {
						continue // an auto-reply's or a complaint's record suppresses nothing as failed
					}
					prec.add(expects(r.Recipients, rc))
					if !expects(r.Recipients, rc) {
						bad = append(bad, fmt.Sprintf("extra %s: %s (%s)", r.File, rc.Address(), rc.DecodedBy))
					}
				}
			}
			if *corpusVerbose {
				sort.Strings(bad)
				for _, b := range bad {
					t.Log(b)
				}
			}
			t.Logf("recipient accuracy      %6.2f%% (%d/%d)", rcpt.pct(), rcpt.ok, rcpt.n)
			t.Logf("permanent/temporary     %6.2f%% (%d/%d)", cls.pct(), cls.ok, cls.n)
			t.Logf("recipient precision     %6.2f%% (%d/%d)", prec.pct(), prec.ok, prec.n)
			if rcpt.pct() < set.floorRecipient {
				t.Errorf("recipient accuracy %.2f%% fell below the floor %.2f%%", rcpt.pct(), set.floorRecipient)
			}
			if cls.pct() < set.floorCls {
				t.Errorf("permanent/temporary accuracy %.2f%% fell below the floor %.2f%%", cls.pct(), set.floorCls)
			}
			if prec.pct() < set.floorPrecision {
				t.Errorf("recipient precision %.2f%% fell below the floor %.2f%%", prec.pct(), set.floorPrecision)
			}
		})
	}
}

// classOnly reports whether a report has a failure record and each of
// its failure records has the class want ("permanent" a bounce,
// "temporary" a delay; with byStatus the first digit of the status, 5
// or 4).
func classOnly(rep *Report, want string, byStatus bool) bool {
	kind := map[string]Kind{"permanent": KindBounce, "temporary": KindDelay}[want]
	n := 0
	for _, rc := range rep.Recipients {
		if rc.Kind != KindBounce && rc.Kind != KindDelay {
			continue
		}
		n++
		ok := rc.Kind == kind
		if byStatus {
			ok = first(rc.Status) == map[Kind]string{KindBounce: "5", KindDelay: "4"}[kind]
		}
		if !ok {
			return false
		}
	}
	return n > 0
}

// kinds lists a report's records as address, kind, status and rule.
func kinds(rep *Report) []string {
	var out []string
	for _, rc := range rep.Recipients {
		out = append(out, fmt.Sprintf("%s %s %s (%s)", rc.Address(), rc.Kind, rc.Status, rc.DecodedBy))
	}
	return out
}

// expects reports whether a record's final or original recipient is one
// of want.
func expects(want []string, rc Recipient) bool {
	for _, w := range want {
		if strings.EqualFold(w, rc.FinalRecipient) || strings.EqualFold(w, rc.OriginalRecipient) {
			return true
		}
	}
	return false
}

// TestSampleRules checks, on real samples of other projects that show
// their shape, the rules written for them: the address, the rule that
// found it (DecodedBy) and the kind.
func TestSampleRules(t *testing.T) {
	for _, c := range []struct {
		name, file, addr, by string
		kind                 Kind
		bodyOnly             bool // a notice text without a header (noticeHeader)
	}{
		// Gmail's "Delivery incomplete ... Gmail will retry for 47 more hours" quoting a 550.
		{"gmail will retry", "testdata/crisp/550_5_7_1_reputation.txt", "raymund10@gmail.com", "text/any+retrying", KindDelay, true},
		// Postfix folds the remote reply, "<sender@...>: unauthorized sender", under the recipient.
		{"postfix folded reply", "testdata/crisp/550_5_1_1_no_such_recipient_variant_20.txt", "djf23gjsjf@privaterelay.appleid.com", "text/postfix", KindBounce, true},
		// 'user@example.com' in a Demon notice: the quotes are not the address's.
		{"quoted address", "testdata/flufl/bounce_03.txt", "james@jeborall.demon.co.uk", "text/any", KindBounce, false},
		// A multipart/report whose delivery-status part has no recipient block.
		{"report without recipient block", "testdata/flufl/simple_13.txt", "dycusibreix@ademe.fr", "text/listed+report-text", KindBounce, false},
		// MDaemon's notice, from MDaemon@host, subject "Warning: ... - User unknown!".
		{"mdaemon user unknown", "testdata/flufl/simple_27.txt", "kulp@webmail.pla.net.py", "text/any", KindBounce, false},
		// MDaemon returns a Yahoo bounce: the failed address is MDaemon's.
		{"bounce of a bounce", "testdata/flufl/simple_01.txt", "bbbsss@turbosport.com", "text/rcpt-to+outer-notice+full-soft", KindBounce, false},
		// "The first 50 lines of your original message follow:> Received: ...":
		// the quoted header is the returned message, its addresses are not records.
		{"quoted returned header", "testdata/flufl/simple_35.txt", "calvin@xxx.com", "text/any", KindDelay, false},
		// AOL lists screen names without a domain; the domain is the notice's own.
		{"bare name, notice domain", "testdata/bounceparser/aol-senderblock.msg", "mykewlaolacct@aol.com", "text/bare-name", KindBounce, false},
		// ... and not the sender it names ("not accepting mail from xxx@lists.xxx.com:").
		{"bare name, not the sender", "testdata/flufl/aol_01.txt", "screenname@aol.com", "text/bare-name", KindBounce, false},
		// Yale's phquery lists "name    reason"; the returned message's trace has the address.
		{"bare name, returned trace", "testdata/flufl/yale_01.txt", "thomas.dtankengine@yale.edu", "text/bare-name", KindBounce, false},
		// OpenSMTPD's "Envelope expired" in a report whose Action says delayed.
		{"expired envelope", "testdata/sisimai/maildir/bsd/lhost-opensmtpd-06.eml", "nekochan@libsisimai.org", "rfc3464/loose+expired-final", KindBounce, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			raw, err := os.ReadFile(c.file)
			tcheck(t, err, "reading sample")
			if c.bodyOnly {
				raw = append([]byte(noticeHeader), raw...)
			}
			rep, err := Message(bytes.NewReader(raw), Limits{})
			tcheck(t, err, "decoding")
			if len(rep.Recipients) != 1 {
				t.Fatalf("recipients %v, want [%s]", addrs(rep), c.addr)
			}
			rc := rep.Recipients[0]
			if rc.FinalRecipient != c.addr || rc.DecodedBy != c.by || rc.Kind != c.kind {
				t.Errorf("got %s by %s kind %s, want %s by %s kind %s", rc.FinalRecipient, rc.DecodedBy, rc.Kind, c.addr, c.by, c.kind)
			}
		})
	}
}

// TestBareNameRefuses checks that text/bare-name takes only a list of
// bare names: a sentence, a failure word or a name followed by one blank
// and more words after the list marker is not one.
func TestBareNameRefuses(t *testing.T) {
	for _, body := range []string{
		"Your mail to the following recipients could not be delivered:\n\tUnknown\n",
		"Your mail to the following recipients could not be delivered:\n\tthe mailbox is full\n",
		"Your mail to the following recipients could not be delivered:\n\tgone@example.net\n",
		"Your mail to the following recipients could not be delivered.\n\tscreenname\n",
	} {
		msg := plain("Mail Delivery Subsystem <MAILER-DAEMON@mail.example.net>", "Mail Delivery Problem", body)
		rep, _ := Message(strings.NewReader(msg), Limits{})
		for _, rc := range rep.Recipients {
			if rc.DecodedBy == "text/bare-name" {
				t.Errorf("%q: text/bare-name took %s", body, rc.FinalRecipient)
			}
		}
	}
}

// TestOriginalAddress checks that a record whose Final-Recipient is no
// internet mailbox stands for its Original-Recipient, on real reports:
// Sun's Messaging Server writes its internal route, an X.400 gateway an
// X.400 address.
func TestOriginalAddress(t *testing.T) {
	for _, c := range []struct{ file, final, addr string }{
		{"testdata/sisimai/maildir/bsd/lhost-messagingserver-02.eml", "@smtp.example.net:kijitora@server", "kijitora@example.net"},
		{"testdata/flufl/dsn_02.txt", "/S=zzzzz/OU=zeus/O=hud/PRMD=UK.AC/ADMD= /C=GB/", "zzzzz@zeus.hud.ac.uk"},
	} {
		raw, err := os.ReadFile(c.file)
		tcheck(t, err, "reading sample")
		rep, err := Message(bytes.NewReader(raw), Limits{})
		tcheck(t, err, "decoding")
		if len(rep.Recipients) != 1 {
			t.Fatalf("%s: recipients %v", c.file, addrs(rep))
		}
		rc := rep.Recipients[0]
		if rc.FinalRecipient != c.final || rc.Address() != c.addr || !strings.HasSuffix(rc.DecodedBy, ruleOriginalAddress) {
			t.Errorf("%s: final %q address %q by %s, want final %q address %q by ...%s", c.file, rc.FinalRecipient, rc.Address(), rc.DecodedBy, c.final, c.addr, ruleOriginalAddress)
		}
	}
	for a, want := range map[string]bool{
		"user@example.com": true, "user@[192.0.2.1]": true, "user@mx.example.co.uk": true,
		"@smtp.example.net:user@server": false, "user@ims_daemon": false, "user@localhost": false,
		"user@mailcluster.local": false, "user@host.internal": false, "user": false, "user@": false, "@example.com": false,
	} {
		if got := isMailbox(a); got != want {
			t.Errorf("isMailbox(%q) = %v, want %v", a, got, want)
		}
	}
	rc := Recipient{FinalRecipient: "user@relay.example.net", OriginalRecipient: "list@example.org"}
	if rc.Address() != "user@relay.example.net" {
		t.Errorf("a final recipient that is a mailbox gave way to %s", rc.Address())
	}
}
