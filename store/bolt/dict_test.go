package bolt

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"os"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"

	"github.com/bouncer/bouncer/parse"
)

// writeRecordDict is where TestWriteRecordDict writes a record dictionary.
var writeRecordDict = flag.String("write-record-dict", "", "write a new record dictionary to `file`")

// TestDictionaryHashes pins the dictionaries of the zstd codecs: a stored
// value can only be decoded with the exact bytes it was made with, so a
// dictionary in use must never change (compress.go).
func TestDictionaryHashes(t *testing.T) {
	for _, d := range []struct {
		name string
		b    []byte
		want string
	}{
		{"dict/raw-1.txt", rawDict1, "03627a292201ea637b9c102dfe4f2ac18bfbca043f1d270e13ee94cc2f2a3106"},
		{"dict/record-1.json", recordDict1, "439e979c210eb1709acf8d0099545816b7158d5c0ba1df4c7eeafdc108501c1c"},
	} {
		sum := sha256.Sum256(d.b)
		if got := hex.EncodeToString(sum[:]); got != d.want {
			t.Errorf("%s: sha256 %s, want %s: a dictionary in use must never change; add a new one with a new codec", d.name, got, d.want)
		}
	}
}

// TestWriteRecordDict writes a record dictionary when -write-record-dict
// is given: one record per line in this package's JSON format, with
// values made up for it, the most common shape (the first record of a
// hard bounce) last, where zstd reaches it with the shortest offsets.
// dict/record-1.json was made with it; a change of the record format is a
// reason to make record-2 with a new codec, never to rewrite record-1.
func TestWriteRecordDict(t *testing.T) {
	if *writeRecordDict == "" {
		t.Skip("no -write-record-dict")
	}
	at := time.Date(2025, 7, 14, 9, 30, 0, 123456789, time.UTC)
	id := func(n byte) string {
		k := make([]byte, keyLen)
		k[0], k[1], k[keyLen-1] = 0x18, 0x52, n
		return encodeID(k)
	}
	env := store.Envelope{RcptTo: []string{"bounces+user=example.com@bounces.example.net"}, ClientIP: "192.0.2.25", Helo: "mx.example.com", VERP: "user@example.com", Verified: true, Campaign: "2025-07-news"}
	rcpt := func(addr, status, code string, kind parse.Kind, class parse.Class, reason parse.Reason, by string) parse.Recipient {
		return parse.Recipient{FinalRecipient: addr, FinalRecipientType: "rfc822", OriginalRecipient: addr, OriginalRecipientType: "rfc822",
			Action: parse.Failed, Status: status, StatusLiteral: status, ReplyCode: code[:3], RemoteMTA: "mx.example.com",
			DiagnosticType: "smtp", DiagnosticCode: code, Kind: kind, Class: class, Reason: reason, DecodedBy: by}
	}
	var recs []store.Record
	// complaint
	c := rcpt("reader@example.org", "", "000", parse.KindComplaint, parse.ClassNone, "", "arf")
	c.Action, c.Status, c.StatusLiteral, c.ReplyCode, c.RemoteMTA, c.DiagnosticType, c.DiagnosticCode = "", "", "", "", "", "", ""
	recs = append(recs, store.Record{MsgID: id(1), Received: at, Envelope: store.Envelope{RcptTo: []string{"fbl@example.net"}, ClientIP: "198.51.100.7", Helo: "feedback.example.org"},
		Addr: "reader@example.org", Recipient: c, Verdict: store.ActionSuppress, Rule: "complaints", Suppressed: true,
		Feedback: &parse.Feedback{FeedbackType: "abuse", UserAgent: "ExampleFBL/1.0", OriginalMailFrom: "bounces@example.net", OriginalRcptTo: "reader@example.org", SourceIP: "192.0.2.25", ReportedDomain: "example.net", ArrivalDate: "Mon, 14 Jul 2025 09:30:00 +0000"}})
	// unparsed
	u := parse.Recipient{Kind: parse.KindUnknown, Class: parse.ClassNone, DecodedBy: "none"}
	recs = append(recs, store.Record{MsgID: id(2), Received: at, Envelope: store.Envelope{RcptTo: []string{"bounces@example.net"}, ClientIP: "203.0.113.9", Helo: "mail.example.org"},
		Recipient: u, ParseError: "not a bounce: no delivery report found", Verdict: store.ActionRecord})
	// delay
	d := rcpt("friend@example.org", "4.4.1", "421 4.4.1 connection timed out", parse.KindDelay, parse.ClassSoft, parse.ReasonNetwork, "rfc3464")
	d.Action, d.WillRetryUntil, d.LastAttemptDate = parse.Delayed, "Fri, 18 Jul 2025 09:30:00 +0000", "Mon, 14 Jul 2025 13:30:00 +0000"
	recs = append(recs, store.Record{MsgID: id(3), Received: at, Envelope: env, Addr: "friend@example.org", Recipient: d, Verdict: store.ActionCount,
		ReportingMTA: "mail.example.net", ArrivalDate: "Mon, 14 Jul 2025 09:30:00 +0000 (UTC)", OriginalEnvelopeID: "0123456789abcdef"})
	// text bounce, second record, duplicate, mismatch
	tb := rcpt("someone@example.net", "5.2.2", "552 5.2.2 mailbox full", parse.KindBounce, parse.ClassSoft, parse.ReasonMailboxFull, "text/exim")
	tb.StatusInferred, tb.FinalRecipientType, tb.OriginalRecipient, tb.OriginalRecipientType, tb.StatusLiteral = true, "", "", "", ""
	recs = append(recs, store.Record{MsgID: id(4), Received: at, Envelope: env, Addr: "someone@example.net", Recipient: tb, Verdict: store.ActionCount,
		Original: &parse.Original{MessageID: "<20250714093000.12345@mail.example.com>", From: "Example <news@example.com>", To: "someone@example.net", Subject: "Weekly news", Date: "Mon, 14 Jul 2025 09:29:58 +0000"}})
	dup := rcpt("other@example.net", "5.1.1", "550 5.1.1 user unknown", parse.KindBounce, parse.ClassHard, parse.ReasonUserUnknown, "rfc3464")
	recs = append(recs, store.Record{MsgID: id(4), Addr: "other@example.net", Recipient: dup, Verdict: store.ActionDuplicate, Duplicate: true, DuplicateOf: id(9)})
	recs = append(recs, store.Record{MsgID: id(4), Addr: "other@example.net", Recipient: dup, Verdict: store.ActionMismatch, Mismatch: "verp recipient user@example.com != final recipient other@example.net"})
	// most common: a hard bounce, first record of its message
	h := rcpt("user@example.com", "5.1.1", "550 5.1.1 <user@example.com>: Recipient address rejected: User unknown", parse.KindBounce, parse.ClassHard, parse.ReasonUserUnknown, "rfc3464")
	recs = append(recs, store.Record{MsgID: id(5), Received: at, Envelope: env, Addr: "user@example.com", Recipient: h, Verdict: store.ActionSuppress, Suppressed: true,
		ReportingMTA: "mx.example.net", ArrivalDate: "Mon, 14 Jul 2025 09:30:00 +0000 (UTC)",
		Original: &parse.Original{MessageID: "<campaign-7.user@mail.example.com>", From: "News <news@mail.example.com>", To: "user@example.com", Subject: "July news", XHeaders: map[string]string{"X-Campaign": "7"}}})
	var out bytes.Buffer
	for i := range recs {
		r := &recs[i]
		r.Domain = store.AddrDomain(r.Addr)
		base := ""
		if r.Received.IsZero() {
			base = id(5)
		}
		v, err := encodeRecord(r, base, nil)
		tcheck(t, err, "encode")
		j, err := recordJSONOf(v)
		tcheck(t, err, "decompress")
		out.Write(j)
		out.WriteByte('\n')
	}
	tcheck(t, os.WriteFile(*writeRecordDict, out.Bytes(), 0o644), "write")
}
