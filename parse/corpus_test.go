package parse

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

var corpusVerbose = flag.Bool("corpus.v", false, "list every corpus row the decoder gets wrong")

// corpusDir is a copy of sisimai's test corpus (BSD-2-Clause, see LICENSE
// there) with expected.jsonl, one row per (file, recipient index).
const corpusDir = "testdata/sisimai"

// Ratchet floors, in percent: the corpus test fails below them. Raise them
// when the decoder gets better; never lower them.
const (
	floorRecipient = 99.5
	floorStatus    = 99.7
	floorPermTemp  = 98.3
	floorNonBounce = 100.0
)

type corpusRow struct {
	File            string   `json:"file"`
	Index           int      `json:"index"`
	Status          string   `json:"status"`
	Reason          string   `json:"reason"`
	DSNStatusFields []string `json:"dsn_status_fields"`
	StatusPseudo    bool     `json:"status_pseudo"`
	Recipient       string   `json:"recipient"`
	MTA             string   `json:"mta"`
}

func loadCorpusRows(t testing.TB) []corpusRow {
	t.Helper()
	return readJSONL[corpusRow](t, filepath.Join(corpusDir, "expected.jsonl"))
}

// readJSONL reads a file of one JSON value a line (a sample set's
// expected.jsonl).
func readJSONL[T any](t testing.TB, path string) []T {
	t.Helper()
	f, err := os.Open(path)
	tcheck(t, err, "opening "+filepath.Base(path))
	defer f.Close()
	var rows []T
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r T
		tcheck(t, json.Unmarshal(sc.Bytes(), &r), "decoding "+filepath.Base(path))
		rows = append(rows, r)
	}
	tcheck(t, sc.Err(), "reading "+filepath.Base(path))
	return rows
}

// corpusFiles returns the maildir samples, by path relative to corpusDir.
func corpusFiles(t testing.TB) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	paths, err := filepath.Glob(filepath.Join(corpusDir, "maildir", "*", "*.eml"))
	tcheck(t, err, "listing corpus")
	if len(paths) == 0 {
		t.Fatal("no corpus files")
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		tcheck(t, err, "reading corpus file")
		rel, _ := filepath.Rel(corpusDir, p)
		files[filepath.ToSlash(rel)] = b
	}
	return files
}

func tcheck(t testing.TB, err error, msg string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
}

// pseudoStatus reports whether a corpus status is one of sisimai's own
// codes (5.0.9xx), compared on its first digit only.
func pseudoStatus(r corpusRow) bool {
	return r.StatusPseudo || strings.Count(r.Status, ".") == 2 && strings.HasPrefix(r.Status[2:], "0.9")
}

// placeholderRecipient reports the address the corpus library writes
// when it found no recipient (undisclosed-recipient-in-headers@
// libsisimai.org.invalid): not an address a bounce names. Such a row
// counts as found when the decoder finds no address in the file either.
func placeholderRecipient(a string) bool {
	return strings.HasSuffix(strings.ToLower(a), ".invalid")
}

// anyAddress reports whether a record of rep names an address.
func anyAddress(rep *Report) bool {
	for i := range rep.Recipients {
		if rep.Recipients[i].Address() != "" {
			return true
		}
	}
	return false
}

func findRecipient(rep *Report, addr string, index int) (*Recipient, bool) {
	for i := range rep.Recipients {
		rc := &rep.Recipients[i]
		if strings.EqualFold(rc.FinalRecipient, addr) || strings.EqualFold(rc.OriginalRecipient, addr) {
			return rc, true
		}
	}
	if index-1 < len(rep.Recipients) && index >= 1 {
		return &rep.Recipients[index-1], false
	}
	if len(rep.Recipients) > 0 {
		return &rep.Recipients[0], false
	}
	return nil, false
}

type figure struct{ ok, n int }

func (f figure) pct() float64 {
	if f.n == 0 {
		return 100
	}
	return 100 * float64(f.ok) / float64(f.n)
}

func (f *figure) add(ok bool) {
	f.n++
	if ok {
		f.ok++
	}
}

// TestCorpus decodes every sample of the corpus and checks the four
// accuracy figures of issue 3 against the ratchet floors.
func TestCorpus(t *testing.T) {
	rows := loadCorpusRows(t)
	files := corpusFiles(t)
	reports := map[string]*Report{}
	for name, b := range files {
		rep := decodeCorpusFile(t, name, b)
		reports[name] = rep
	}
	var rcpt, status, permTemp, nonBounce, reason figure
	var rcptReal, permTempReal figure // rows without the corpus library's placeholders
	var bad []string
	for _, r := range rows {
		rep := reports[r.File]
		if rep == nil {
			t.Fatalf("%s: listed in expected.jsonl but missing", r.File)
		}
		rc, found := findRecipient(rep, r.Recipient, r.Index)
		if placeholderRecipient(r.Recipient) {
			// The corpus library found no recipient: the rows agree
			// when the decoder finds none either.
			found = !anyAddress(rep)
		} else {
			rcptReal.add(found)
		}
		rcpt.add(found)
		if !found {
			bad = append(bad, fmt.Sprintf("recipient %s #%d: want %s, got %v (%s)", r.File, r.Index, r.Recipient, addrs(rep), r.MTA))
		}
		got := ""
		if rc != nil {
			got = rc.Status
		}
		if r.Status != "" && !pseudoStatus(r) {
			ok := got == r.Status
			for _, s := range r.DSNStatusFields {
				ok = ok || got == s
			}
			status.add(ok)
			if !ok {
				bad = append(bad, fmt.Sprintf("status %s #%d: want %s %v, got %q (%s, %s)", r.File, r.Index, r.Status, r.DSNStatusFields, got, r.Reason, r.MTA))
			}
		}
		if want, ok := sisimaiReasons[r.Reason]; ok && found {
			reason.add(rc.Reason == want)
			if rc.Reason != want {
				bad = append(bad, fmt.Sprintf("reason %s #%d: want %s (%s), got %s: %.100s", r.File, r.Index, want, r.Reason, rc.Reason, rc.DiagnosticCode))
			}
		}
		want1, got1 := first(r.Status), first(got)
		if rc != nil && (rc.Kind == KindAutoReply || rc.Kind == KindComplaint) {
			got1 = ""
		}
		permTemp.add(want1 == got1)
		if !pseudoStatus(r) {
			permTempReal.add(want1 == got1)
		}
		if want1 != got1 {
			bad = append(bad, fmt.Sprintf("class %s #%d: want %s, got %q (%s)", r.File, r.Index, r.Status, got, r.MTA))
		}
		var want Kind
		switch r.Reason {
		case "vacation":
			want = KindAutoReply
		case "feedback":
			want = KindComplaint
		case "delivered":
			want = KindDelivered
		default:
			continue
		}
		gotKind := rep.Kind
		if rc != nil {
			gotKind = rc.Kind
		}
		nonBounce.add(gotKind == want)
		if gotKind != want {
			bad = append(bad, fmt.Sprintf("kind %s #%d: want %s, got %s", r.File, r.Index, want, gotKind))
		}
	}
	// Precision: records whose address no row of their file expects.
	expected := map[string]map[string]bool{}
	for _, r := range rows {
		if expected[r.File] == nil {
			expected[r.File] = map[string]bool{}
		}
		expected[r.File][strings.ToLower(r.Recipient)] = true
	}
	var precision figure
	for name, want := range expected {
		for _, rc := range reports[name].Recipients {
			ok := want[strings.ToLower(rc.FinalRecipient)] || want[strings.ToLower(rc.OriginalRecipient)]
			precision.add(ok)
			if !ok {
				bad = append(bad, fmt.Sprintf("extra %s: %s (%s)", name, rc.Address(), rc.DecodedBy))
			}
		}
	}
	for name, rep := range reports {
		if strings.HasPrefix(name, "maildir/not/") {
			nonBounce.add(rep.Kind == KindUnknown)
			if rep.Kind != KindUnknown {
				bad = append(bad, fmt.Sprintf("kind %s: want nothing, got %s", name, rep.Kind))
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
	t.Logf("status accuracy         %6.2f%% (%d/%d)", status.pct(), status.ok, status.n)
	t.Logf("permanent/temporary     %6.2f%% (%d/%d)", permTemp.pct(), permTemp.ok, permTemp.n)
	t.Logf("non-bounce accuracy     %6.2f%% (%d/%d)", nonBounce.pct(), nonBounce.ok, nonBounce.n)
	t.Logf("recipient precision     %6.2f%% (%d/%d records expected, informative)", precision.pct(), precision.ok, precision.n)
	t.Logf("reason agreement        %6.2f%% (%d/%d, informative: the categories differ)", reason.pct(), reason.ok, reason.n)
	t.Logf("recipient, placeholders left out        %6.2f%% (%d/%d, informative)", rcptReal.pct(), rcptReal.ok, rcptReal.n)
	t.Logf("permanent/temporary, pseudo-codes left out %6.2f%% (%d/%d, informative)", permTempReal.pct(), permTempReal.ok, permTempReal.n)
	for _, c := range []struct {
		name  string
		got   float64
		floor float64
	}{
		{"recipient", rcpt.pct(), floorRecipient},
		{"status", status.pct(), floorStatus},
		{"permanent/temporary", permTemp.pct(), floorPermTemp},
		{"non-bounce", nonBounce.pct(), floorNonBounce},
	} {
		if c.got < c.floor {
			t.Errorf("%s accuracy %.2f%% fell below the floor %.2f%%", c.name, c.got, c.floor)
		}
	}
}

// decodeCorpusFile decodes one corpus file. A file that is an mbox of
// several messages (rfc3464-28.eml holds two DSNs, each after its own
// "From " line) is read as the corpus library reads it: message by
// message, the records of all in one report. Over SMTP each would arrive
// on its own.
func decodeCorpusFile(t *testing.T, name string, b []byte) *Report {
	t.Helper()
	var msgs [][]byte
	if bytes.HasPrefix(b, []byte("From ")) {
		tcheck(t, SplitMbox(bytes.NewReader(b), func(m []byte) error {
			msgs = append(msgs, m)
			return nil
		}), "splitting "+name)
	}
	if len(msgs) < 2 {
		msgs = [][]byte{b}
	}
	var rep *Report
	for _, m := range msgs {
		r, err := Message(bytes.NewReader(m), Limits{})
		if r == nil {
			t.Fatalf("%s: nil report", name)
		}
		if err != nil && !errors.Is(err, ErrNotBounce) {
			t.Logf("%s: %v", name, err)
		}
		if rep == nil {
			rep = r
		} else {
			rep.Recipients = append(rep.Recipients, r.Recipients...)
		}
	}
	return rep
}

// sisimaiReasons maps the corpus' reason names to ours where the two
// mean the same; the reason figure is printed, not enforced.
var sisimaiReasons = map[string]Reason{
	"userunknown": ReasonUserUnknown, "mailboxfull": ReasonMailboxFull, "hostunknown": ReasonHostUnknown,
	"expired": ReasonExpired, "mesgtoobig": ReasonTooBig, "blocked": ReasonBlocked, "spamdetected": ReasonSpam,
	"authfailure": ReasonAuthFailure, "norelaying": ReasonRelayDenied, "suspend": ReasonMailboxDisabled,
	"systemerror": ReasonSystemError, "networkerror": ReasonNetwork, "virusdetected": ReasonVirus,
	"toomanyconn": ReasonRateLimit, "speeding": ReasonRateLimit, "hasmoved": ReasonHasMoved,
	"syntaxerror": ReasonSyntax, "requireptr": ReasonBlocked, "badreputation": ReasonBlocked,
	"policyviolation": ReasonPolicy, "contenterror": ReasonContent, "notcompliantrfc": ReasonContent,
	"systemfull": ReasonSystemFull,
}

func first(s string) string {
	if s == "" {
		return ""
	}
	return s[:1]
}

func addrs(rep *Report) []string {
	var a []string
	for _, rc := range rep.Recipients {
		a = append(a, rc.Address())
	}
	return a
}

// TestCorpusMbox splits the corpus mbox files and decodes each message.
func TestCorpusMbox(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join(corpusDir, "mailbox", "*"))
	tcheck(t, err, "listing mailboxes")
	n, bounces := 0, 0
	for _, p := range paths {
		f, err := os.Open(p)
		tcheck(t, err, "opening mbox")
		err = SplitMbox(f, func(msg []byte) error {
			n++
			rep, err := Message(bytes.NewReader(msg), Limits{})
			if err == nil && rep.Kind == KindBounce {
				bounces++
			}
			return nil
		})
		f.Close()
		tcheck(t, err, "splitting "+p)
	}
	if n < 38 {
		t.Fatalf("split %d messages, want at least 38", n)
	}
	t.Logf("mbox: %d messages, %d decoded as bounces", n, bounces)
	if bounces < n*9/10 {
		t.Errorf("only %d of %d mbox messages decoded as bounces", bounces, n)
	}
}
