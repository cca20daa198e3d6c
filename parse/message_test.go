package parse

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"

	"github.com/emersion/go-message"
)

// buildDSN writes an RFC 3464 report with go-message's writer: a text
// part, a delivery-status part with the given per-recipient blocks, and
// the returned message's header.
func buildDSN(t *testing.T, dsnType string, blocks []string) []byte {
	t.Helper()
	var h message.Header
	h.Set("From", "Mail Delivery System <MAILER-DAEMON@mta.example.net>")
	h.Set("To", "bounces@sender.example")
	h.Set("Subject", "Undelivered Mail Returned to Sender")
	h.SetContentType("multipart/report", map[string]string{"report-type": "delivery-status"})
	var buf bytes.Buffer
	w, err := message.CreateWriter(&buf, h)
	tcheck(t, err, "creating writer")

	part := func(ct string, body string) {
		var ph message.Header
		ph.SetContentType(ct, nil)
		pw, err := w.CreatePart(ph)
		tcheck(t, err, "creating part")
		_, err = io.WriteString(pw, body)
		tcheck(t, err, "writing part")
		tcheck(t, pw.Close(), "closing part")
	}
	part("text/plain", "Your message could not be delivered.\r\n")
	part(dsnType, "Reporting-MTA: dns; mta.example.net\r\nOriginal-Envelope-Id: abc123\r\n"+
		"DSN-Gateway: dns; gw.example.net\r\nReceived-From-MTA: dns; app.sender.example\r\n"+
		"Arrival-Date: Tue, 05 Mar 2024 10:00:00 +0000\r\n\r\n"+strings.Join(blocks, "\r\n"))
	part("text/rfc822-headers", "Message-ID: <m1@sender.example>\r\nFrom: news@sender.example\r\n"+
		"To: a@example.com\r\nSubject: Hello\r\nDate: Tue, 05 Mar 2024 09:59:00 +0000\r\nX-Campaign: c1\r\n\r\n")
	tcheck(t, w.Close(), "closing writer")
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	blocks := []string{
		"Final-Recipient: rfc822; <a@example.com>\r\nOriginal-Recipient: rfc822; A@Example.com\r\nAction: failed\r\n" +
			"Status: 5.0.0 (permanent failure)\r\nRemote-MTA: dns; mx.example.com\r\n" +
			"Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach\r\n does not exist\r\n" +
			"Last-Attempt-Date: Tue, 05 Mar 2024 10:00:01 +0000\r\nFinal-Log-ID: Q1234\r\n",
		"Final-Recipient: rfc822; b@example.org\r\nAction: delayed\r\nStatus: 4.4.1\r\n" +
			"Will-Retry-Until: Fri, 08 Mar 2024 10:00:00 +0000\r\n",
		"Final-Recipient: rfc822; c@example.org\r\nAction: relayed\r\nStatus: 2.0.0\r\n",
		"Final-Recipient: rfc822; d@example.org\r\nAction: failed\r\nDiagnostic-Code: smtp; 552 mailbox over quota\r\n",
	}
	raw := buildDSN(t, "message/delivery-status", blocks)
	rep, err := Message(bytes.NewReader(raw), Limits{})
	tcheck(t, err, "decoding")
	if rep.ReportingMTA != "mta.example.net" || rep.ReportingMTAType != "dns" || rep.OriginalEnvelopeID != "abc123" ||
		rep.DSNGateway != "gw.example.net" || rep.ReceivedFromMTA != "app.sender.example" || rep.ArrivalDate == "" {
		t.Errorf("per-message fields: %+v", rep)
	}
	want := []Recipient{{
		FinalRecipient: "a@example.com", FinalRecipientType: "rfc822", OriginalRecipient: "A@Example.com",
		OriginalRecipientType: "rfc822", Action: Failed, Status: "5.1.1", StatusLiteral: "5.0.0", ReplyCode: "550",
		RemoteMTA: "mx.example.com", DiagnosticType: "smtp",
		DiagnosticCode:  "550-5.1.1 The email account that you tried to reach does not exist",
		LastAttemptDate: "Tue, 05 Mar 2024 10:00:01 +0000", FinalLogID: "Q1234",
		Kind: KindBounce, Class: ClassHard, Reason: ReasonUserUnknown, DecodedBy: "rfc3464",
	}, {
		FinalRecipient: "b@example.org", FinalRecipientType: "rfc822", Action: Delayed, Status: "4.4.1",
		StatusLiteral: "4.4.1", WillRetryUntil: "Fri, 08 Mar 2024 10:00:00 +0000",
		Kind: KindDelay, Class: ClassSoft, Reason: ReasonNetwork, DecodedBy: "rfc3464",
	}, {
		FinalRecipient: "c@example.org", FinalRecipientType: "rfc822", Action: Relayed, Status: "2.0.0",
		StatusLiteral: "2.0.0", Kind: KindDelivered, Class: ClassNone, DecodedBy: "rfc3464",
	}, {
		FinalRecipient: "d@example.org", FinalRecipientType: "rfc822", Action: Failed, Status: "5.2.2",
		StatusInferred: true, ReplyCode: "552", DiagnosticType: "smtp", DiagnosticCode: "552 mailbox over quota",
		Kind: KindBounce, Class: ClassSoft, Reason: ReasonMailboxFull, DecodedBy: "rfc3464+full-soft",
	}}
	if len(rep.Recipients) != len(want) {
		t.Fatalf("got %d recipients, want %d", len(rep.Recipients), len(want))
	}
	for i := range want {
		if got := rep.Recipients[i]; got != want[i] {
			t.Errorf("recipient %d:\n got %+v\nwant %+v", i, got, want[i])
		}
	}
	if rep.Kind != KindBounce {
		t.Errorf("kind %s, want bounce", rep.Kind)
	}
	o := rep.Original
	if o == nil || o.MessageID != "<m1@sender.example>" || o.To != "a@example.com" || o.Subject != "Hello" ||
		o.XHeaders["X-Campaign"] != "c1" {
		t.Errorf("original %+v", o)
	}
}

// TestLineEndings decodes the corpus samples kept with CRLF (dos/) and
// CR-only (mac/) line endings and compares them with the LF (bsd/) copy.
func TestLineEndings(t *testing.T) {
	n := 0
	for _, dir := range []string{"dos", "mac"} {
		paths, err := filepath.Glob(filepath.Join(corpusDir, "maildir", dir, "*.eml"))
		tcheck(t, err, "listing")
		for _, p := range paths {
			lf := filepath.Join(corpusDir, "maildir", "bsd", filepath.Base(p))
			rawLF, err := os.ReadFile(lf)
			if err != nil {
				continue
			}
			raw, err := os.ReadFile(p)
			tcheck(t, err, "reading")
			// Only compare copies with the same content.
			if !bytes.Equal(normalize(raw), normalize(rawLF)) {
				continue
			}
			n++
			a, _ := Message(bytes.NewReader(raw), Limits{})
			b, _ := Message(bytes.NewReader(rawLF), Limits{})
			ja, _ := json.Marshal(a)
			jb, _ := json.Marshal(b)
			if !bytes.Equal(ja, jb) {
				t.Errorf("%s decodes differently from its LF copy:\n%s\n%s", p, ja, jb)
			}
		}
	}
	if n < 20 {
		t.Fatalf("compared only %d files", n)
	}
	// The same check on a built report, converted in the test.
	raw := buildDSN(t, "message/delivery-status", []string{"Final-Recipient: rfc822; x@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"})
	want, _ := Message(bytes.NewReader(raw), Limits{})
	for name, conv := range map[string][]byte{
		"lf": bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n")),
		"cr": bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\r")),
	} {
		got, err := Message(bytes.NewReader(conv), Limits{})
		tcheck(t, err, name)
		jg, _ := json.Marshal(got)
		jw, _ := json.Marshal(want)
		if !bytes.Equal(jg, jw) {
			t.Errorf("%s: %s, want %s", name, jg, jw)
		}
	}
}

func normalize(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\r"), []byte("\n"))
}

func TestAlwaysReport(t *testing.T) {
	for _, in := range []string{"", "\n\n", "garbage without header", "Content-Type: multipart/report; boundary=x\n\n--x\n"} {
		rep, err := Message(strings.NewReader(in), Limits{})
		if rep == nil {
			t.Fatalf("%q: nil report", in)
		}
		if err == nil {
			t.Errorf("%q: no error, kind %s", in, rep.Kind)
		}
	}
}

func TestUnknownCharset(t *testing.T) {
	msg := "From: MAILER-DAEMON@example.net\nSubject: failure notice\nContent-Type: text/plain; charset=x-no-such-charset\n" +
		"Content-Transfer-Encoding: 8bit\n\n<user@example.com>:\n550 5.1.1 no such user \xff\xfe here\n"
	rep, err := Message(strings.NewReader(msg), Limits{})
	tcheck(t, err, "decoding")
	if len(rep.Recipients) != 1 || rep.Recipients[0].Status != "5.1.1" {
		t.Errorf("recipients %+v", rep.Recipients)
	}
	if len(rep.Warnings) == 0 || !strings.Contains(strings.Join(rep.Warnings, " "), "charset") {
		t.Errorf("warnings %q, want one about the charset", rep.Warnings)
	}
}

func TestLimits(t *testing.T) {
	t.Run("depth", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("From: MAILER-DAEMON@example.net\n")
		for i := 0; i < 50; i++ {
			fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n", i, i)
		}
		b.WriteString("Content-Type: text/plain\n\nhello\n")
		rep, err := Message(strings.NewReader(b.String()), Limits{MaxDepth: 5})
		if !errors.Is(err, ErrLimit) || rep == nil {
			t.Errorf("err %v, want ErrLimit", err)
		}
	})
	t.Run("parts", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("From: MAILER-DAEMON@example.net\nContent-Type: multipart/mixed; boundary=x\n\n")
		for i := 0; i < 500; i++ {
			b.WriteString("--x\nContent-Type: application/octet-stream\n\nzz\n")
		}
		b.WriteString("--x--\n")
		_, err := Message(strings.NewReader(b.String()), Limits{MaxParts: 50})
		if !errors.Is(err, ErrLimit) {
			t.Errorf("err %v, want ErrLimit", err)
		}
	})
	t.Run("header", func(t *testing.T) {
		msg := "From: a@example.net\nX-Big: " + strings.Repeat("y", 100<<10) + "\n\nbody\n"
		_, err := Message(strings.NewReader(msg), Limits{})
		if !errors.Is(err, ErrLimit) {
			t.Errorf("err %v, want ErrLimit", err)
		}
		// The same inside a part, and a header line with no end.
		msg = "From: a@example.net\nContent-Type: multipart/mixed; boundary=x\n\n--x\nX-Big: " + strings.Repeat("y", 100<<10)
		_, err = Message(strings.NewReader(msg), Limits{})
		if !errors.Is(err, ErrLimit) {
			t.Errorf("part header: err %v, want ErrLimit", err)
		}
	})
	t.Run("returned header", func(t *testing.T) {
		// A returned message with a huge header still gives its report.
		msg := "From: MAILER-DAEMON@example.net\nContent-Type: multipart/report; report-type=delivery-status; boundary=B\n\n" +
			"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; example.net\n\n" +
			"Final-Recipient: rfc822; r@example.com\nAction: failed\nStatus: 5.1.1\n\n" +
			"--B\nContent-Type: message/rfc822\n\nMessage-ID: <big@example.org>\n" +
			strings.Repeat("Received: from relay.example.org by mx.example.net; Tue, 5 Mar 2024 10:00:00 +0000\n", 2000) +
			"Subject: hi\n\nbody\n--B--\n"
		rep, err := Message(strings.NewReader(msg), Limits{})
		tcheck(t, err, "decoding")
		if len(rep.Recipients) != 1 || rep.Original == nil || rep.Original.MessageID != "<big@example.org>" || len(rep.Warnings) == 0 {
			t.Errorf("recipients %d original %+v warnings %q", len(rep.Recipients), rep.Original, rep.Warnings)
		}
	})
	t.Run("recipients", func(t *testing.T) {
		var blocks []string
		for i := 0; i < 30; i++ {
			blocks = append(blocks, fmt.Sprintf("Final-Recipient: rfc822; u%d@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n", i))
		}
		raw := buildDSN(t, "message/delivery-status", blocks)
		rep, err := Message(bytes.NewReader(raw), Limits{MaxRecipients: 10})
		tcheck(t, err, "decoding")
		if len(rep.Recipients) != 10 || len(rep.Warnings) == 0 {
			t.Errorf("got %d recipients, warnings %q", len(rep.Recipients), rep.Warnings)
		}
	})
}

// TestLargeMessage decodes a 10 MiB bounce (a DSN returning a big
// attachment) and checks the decoder allocated a small multiple of it at
// most: bodies it does not need are skipped while streaming.
func TestLargeMessage(t *testing.T) {
	var b bytes.Buffer
	b.WriteString("From: MAILER-DAEMON@example.net\nSubject: Undelivered Mail Returned to Sender\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=B\n\n" +
		"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; example.net\n\n" +
		"Final-Recipient: rfc822; big@example.com\nAction: failed\nStatus: 5.3.4\n\n" +
		"--B\nContent-Type: message/rfc822\n\nFrom: s@example.org\nTo: big@example.com\nSubject: big\n" +
		"Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n")
	line := strings.Repeat("QUJD", 19) + "\n"
	for b.Len() < 10<<20 {
		b.WriteString(line)
	}
	b.WriteString("--B--\n")
	raw := b.Bytes()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	rep, err := Message(bytes.NewReader(raw), Limits{})
	runtime.ReadMemStats(&after)
	tcheck(t, err, "decoding")
	if len(rep.Recipients) != 1 || rep.Recipients[0].Reason != ReasonTooBig {
		t.Errorf("recipients %+v", rep.Recipients)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > uint64(len(raw)) {
		t.Errorf("allocated %d bytes for a %d byte message", alloc, len(raw))
	}
	// A 10 MiB plain-text bounce: the text is read up to MaxPartBytes.
	text := "From: MAILER-DAEMON@example.net\nSubject: failure notice\n\n<big@example.com>:\n550 5.1.1 unknown\n\n" +
		strings.Repeat("x", 10<<20)
	runtime.ReadMemStats(&before)
	rep, err = Message(strings.NewReader(text), Limits{})
	runtime.ReadMemStats(&after)
	tcheck(t, err, "decoding text")
	if len(rep.Recipients) != 1 {
		t.Errorf("recipients %+v", rep.Recipients)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 3*uint64(len(text)) {
		t.Errorf("allocated %d bytes for a %d byte message", alloc, len(text))
	}
}

func TestSplitMbox(t *testing.T) {
	in := "From MAILER-DAEMON Thu Sep 18 17:54:04 2008\nSubject: one\n\nbody\n>From here\n\n" +
		"From MAILER-DAEMON Fri Sep 19 17:54:04 2008\nSubject: two\n\nbody\nFrom inside a paragraph is kept\n"
	var got []string
	tcheck(t, SplitMbox(strings.NewReader(in), func(m []byte) error {
		got = append(got, string(m))
		return nil
	}), "splitting")
	want := []string{"Subject: one\n\nbody\nFrom here\n\n", "Subject: two\n\nbody\nFrom inside a paragraph is kept\n"}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %q, want %q", got, want)
	}
	// Not an mbox: one message.
	got = nil
	tcheck(t, SplitMbox(strings.NewReader("Subject: x\n\nFrom me\n"), func(m []byte) error {
		got = append(got, string(m))
		return nil
	}), "splitting")
	if len(got) != 1 {
		t.Errorf("got %d messages, want 1", len(got))
	}
	stop := errors.New("stop")
	if err := SplitMbox(strings.NewReader(in), func([]byte) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("err %v, want the callback's", err)
	}
}

// TestBoundaryPrefix: a parent delimiter ("--b2") that extends a part's
// boundary ("b") ends the part, which lacks its closing delimiter, and is
// not taken for the part's own delimiter.
func TestBoundaryPrefix(t *testing.T) {
	msg := "From: MAILER-DAEMON@example.net\nContent-Type: multipart/report; report-type=delivery-status; boundary=b2\n\n" +
		"--b2\nContent-Type: multipart/alternative; boundary=b\n\n--b\nContent-Type: text/plain\n\nnotice\n" +
		"--b2\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; example.net\n\n" +
		"Final-Recipient: rfc822; p@example.com\nAction: failed\nStatus: 5.1.1\n--b2--\n"
	rep, err := Message(strings.NewReader(msg), Limits{})
	tcheck(t, err, "decoding")
	if len(rep.Recipients) != 1 || rep.Recipients[0].Status != "5.1.1" || rep.Recipients[0].DecodedBy != "rfc3464" {
		t.Errorf("recipients %+v warnings %q", rep.Recipients, rep.Warnings)
	}
}

func TestTruncateKeepsCharacters(t *testing.T) {
	s := "Adresse inconnue: é" // é is two bytes, the last two of s
	for n := len(s) - 1; n >= len(s)-3; n-- {
		got := truncate(s, n)
		if !utf8.ValidString(got) || len(got) > n {
			t.Errorf("truncate(%q, %d) = %q", s, n, got)
		}
	}
	if got := truncate(s, len(s)-1); got != "Adresse inconnue: " {
		t.Errorf("cut inside é: %q", got)
	}
	if got := truncate(s, 100); got != s {
		t.Errorf("short string changed: %q", got)
	}
}

// TestContentTypeAsGoMessage checks that fields.contentType gives what
// go-message's Header.ContentType gives for the same field.
func TestContentTypeAsGoMessage(t *testing.T) {
	for _, v := range []string{
		"", "text/plain", "TEXT/Plain; Charset=UTF-8", "multipart/report; report-type=delivery-status;\tboundary=\"a/b\"",
		"multipart/mixed; boundary==?utf-8?q?x?=", "multipart/mixed; boundary*=utf-8''%3D%3Futf-8%3Fq%3Fy%3F%3D",
		"text/plain; charset=\"=?bogus?q?x?=\"", "text/plain; charset", "multipart/mixed; boundary=\"unterminated",
		"multipart/mixed; boundary=\"=?utf-8?q?z?=\"", "text/", "; x=y", "message/delivery-status",
	} {
		var h message.Header
		if v != "" {
			h.Set("Content-Type", v)
		}
		wantMT, wantParams, wantErr := h.ContentType()
		f := fields{f: []headerField{{key: "Content-Type", value: v}}}
		mt, params, err := f.contentType()
		if mt != wantMT || !reflect.DeepEqual(params, wantParams) || (err == nil) != (wantErr == nil) {
			t.Errorf("%q: got %q %v %v, want %q %v %v", v, mt, params, err, wantMT, wantParams, wantErr)
		}
	}
}

// TestCanonicalKey checks canonicalKey against the standard library.
func TestCanonicalKey(t *testing.T) {
	keys := []string{"x-failed-recipients", "X-FOO-bar", "content_type", "Content-Type2", "CONTENT-TYPE ", "ß-to", ""}
	for _, k := range canonicalKeys {
		keys = append(keys, k, strings.ToLower(k), strings.ToUpper(k), strings.ToUpper(k[:1])+strings.ToLower(k[1:]))
	}
	for n := 0; n < 5000; n++ {
		b := make([]byte, n%9)
		for i := range b {
			b[i] = "aZ-_(@/\"x9~.:"[(n*7+i*13+i*i)%13]
		}
		keys = append(keys, string(b))
	}
	for _, k := range keys {
		if got, want := canonicalKey([]byte(k)), textproto.CanonicalMIMEHeaderKey(k); got != want {
			t.Errorf("canonicalKey(%q) = %q, want %q", k, got, want)
		}
	}
}

// TestLowerKey checks lowerKey against strings.ToLower.
func TestLowerKey(t *testing.T) {
	keys := []string{"X-Postfix-Queue-ID", "Final-Recipient2", "ſtatus", "STATUS ", ""}
	for _, k := range dsnKeys {
		keys = append(keys, k, strings.ToUpper(k), strings.ToUpper(k[:1])+k[1:])
	}
	for _, k := range keys {
		if got, want := lowerKey(k), strings.ToLower(k); got != want {
			t.Errorf("lowerKey(%q) = %q, want %q", k, got, want)
		}
	}
}

// TestPlainBody checks that message.New returns the body as it is for
// every header plainBody accepts.
func TestPlainBody(t *testing.T) {
	for _, cte := range []string{"", "7bit", "8BIT", "Binary", " 7bit", "base64", "quoted-printable", "x-uuencode"} {
		for _, ct := range []string{"", "message/delivery-status", "MESSAGE/Feedback-Report; x=\"y\"", " text/plain",
			"Text/Plain; charset=iso-8859-1", "text/plain; charset", "text/", "message/delivery-status; charset=bogus",
			"message/delivery-status; broken", "application/octet-stream", "text/plain; charset=UTF-8",
			"text/plain; charset=\"us-ascii\"; format=flowed", "TEXT/HTML; CHARSET=US-ASCII", "text/plain; charset=\"\"",
			"text/plain; charset=utf-8; charset=latin1", "text/plain; charset=utf8", "text/plain; format=flowed",
			"text/plain; charset=\"=?utf-8?q?utf-8?=\"", "text/plain; charset*=utf-8''utf-8", "text/plain; charset=utf-8 x"} {
			var f fields
			if ct != "" {
				f.f = append(f.f, headerField{key: "Content-Type", value: ct})
			}
			if cte != "" {
				f.f = append(f.f, headerField{key: "Content-Transfer-Encoding", value: cte})
			}
			if !plainBody(f) {
				continue
			}
			r := strings.NewReader("x")
			e, err := message.New(f.header(), r)
			if err != nil || e.Body != io.Reader(r) {
				t.Errorf("%q %q: plainBody, but message.New changes the body (err %v)", cte, ct, err)
			}
		}
	}
	for _, ct := range []string{"text/plain; charset=UTF-8", "text/plain; charset=us-ascii", "text/plain"} {
		if !plainBody(fields{f: []headerField{{key: "Content-Type", value: ct}}}) {
			t.Errorf("%q: not plainBody", ct)
		}
	}
}

// TestBufferSize checks that a message read from a *bytes.Reader, whose
// read buffer is sized to the message, decodes as it does through the
// default 4 KB buffer and as it does when the input comes one byte per
// Read (so that parts are read line by line, not from the buffer by
// body.buffered), for the golden samples, the corpus, and messages with
// lines longer than a buffer around the 4 KB size.
func TestBufferSize(t *testing.T) {
	msgs := map[string][]byte{}
	paths, _ := filepath.Glob("testdata/golden/*.eml")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		tcheck(t, err, "reading sample")
		msgs[p] = b
	}
	for name, b := range corpusFiles(t) {
		msgs[name] = b
	}
	head := "From: MAILER-DAEMON@example.net\nSubject: x\nContent-Type: multipart/report; report-type=delivery-status; boundary=B\n"
	for _, n := range []int{10, 4000, 4050, 4090, 4096, 4100, 5000, 9000} {
		long := strings.Repeat("a", n)
		for _, m := range []string{
			head + "X-Long: " + long + "\n\n--B\nContent-Type: message/delivery-status\n\nFinal-Recipient: rfc822; u@example.com\nAction: failed\nStatus: 5.1.1\n\n--B--",
			head + "\n--B\nContent-Type: text/plain\n\n" + long + "\n--B\nContent-Type: message/delivery-status\n\nFinal-Recipient: rfc822; u@example.com\nDiagnostic-Code: smtp; 550 " + long + "\nAction: failed\nStatus: 5.1.1\n--B",
			head + "\n--B\nContent-Type: text/plain\n\n<u@example.com>: 550 5.1.1 " + long + "\n--B-",
			head + "\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; u@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\nX-" + long + "\r\n--B",
		} {
			msgs[fmt.Sprintf("long %d %.40q", n, m[len(head):])] = []byte(m)
		}
	}
	// Lines that start like a delimiter but are not one (RFC 2046 §5.1.1),
	// a parent's delimiter closing a part, and a delimiter at the very end.
	msgs["near delimiters"] = []byte(head + "\n--B\nContent-Type: multipart/mixed; boundary=C\n\n--C\nContent-Type: text/plain\n\n" +
		"--B2 not a delimiter\n--Bx\n--C3\n<u@example.com>: 550 5.1.1 unknown\n--B\nContent-Type: message/delivery-status\n\n" +
		"Final-Recipient: rfc822; u@example.com\n--B-x\nAction: failed\nStatus: 5.1.1\n--B--")
	for name, m := range msgs {
		got, gotErr := Message(bytes.NewReader(m), Limits{})
		want, wantErr := Message(io.MultiReader(bytes.NewReader(m)), Limits{})
		if !reflect.DeepEqual(got, want) || fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
			t.Errorf("%s: sized buffer gives %+v, %v; 4 KB buffer %+v, %v", name, got, gotErr, want, wantErr)
		}
		want, wantErr = Message(iotest.OneByteReader(bytes.NewReader(m)), Limits{})
		if !reflect.DeepEqual(got, want) || fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
			t.Errorf("%s: sized buffer gives %+v, %v; one byte per read %+v, %v", name, got, gotErr, want, wantErr)
		}
	}
}

// TestKeepTop checks keepTop's switch against the list of fields it keeps.
func TestKeepTop(t *testing.T) {
	kept := []string{"subject", "from", "to", "return-path", "auto-submitted", "x-failed-recipients", "x-autoreply",
		"x-autorespond", "x-autoresponder", "x-vacation", "x-mailer-autoreply", "precedence",
		"x-auto-response-suppress", "x-mlserver", "x-ml-name"}
	keys := []string{"Received", "DKIM-Signature", "Content-Type", "content-transfer-encoding", "Content-", "Contents",
		"X-Mailer", "Reply-To", "Cc", "T", "", "@", "TO ", "ARC-Seal", "Precedence", "Sender"}
	for _, k := range kept {
		keys = append(keys, k, strings.ToUpper(k), strings.ToUpper(k[:1])+k[1:], k+"x", k[:len(k)-1])
	}
	for _, k := range keys {
		want := strings.HasPrefix(strings.ToLower(k), "content-")
		for _, n := range kept {
			want = want || strings.EqualFold(k, n)
		}
		if got := keepTop([]byte(k)); got != want {
			t.Errorf("keepTop(%q) = %v, want %v", k, got, want)
		}
	}
}
