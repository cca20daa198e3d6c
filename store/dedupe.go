package store

// Idempotent ingest and cross-checks. The same report delivered again (a
// retry after a lost 250, a copy sent to two MX hosts, a regenerated DSN)
// is stored, raw message included, but marked Duplicate with Verdict
// "duplicate" and DuplicateOf the first record; it never reaches the
// policy, the soft counters, the storm guard, the domain aggregates or the
// outbox. Each record has one dedupe key, SHA-256 cut to 16 bytes, of:
//
//   - when the report names the attempt it is about (Arrival-Date,
//     Last-Attempt-Date, Final-Log-ID, Original-Envelope-Id, the returned
//     Message-ID, or an ARF Arrival-Date): the envelope's VERP address,
//     the per-message DSN fields (RFC 3464 §2.2), the recipient's fields
//     (§2.3: Final- and Original-Recipient, Action, the literal Status,
//     Remote-MTA, Diagnostic-Code, Last-Attempt-Date, Will-Retry-Until,
//     Final-Log-ID), the returned Message-ID and Date and the RFC 5965
//     fields. Fields the decoder derives (kind, class, reason) are left
//     out, so a decoder upgrade between two copies changes nothing;
//   - otherwise: the message with its top-level trace and transit header
//     fields (Received, Return-Path, Delivered-To, Authentication-Results,
//     ARC-*, DKIM-Signature, ...) left out and CRLF read as LF, the VERP
//     address, the recipient's addresses and its position in the report.
//
// Keys older than the dedupe window (DefaultDedupeWindow) no longer match.
// Both engines compute the same keys, so a database copied from one to
// the other keeps recognising its reports.
//
// A record whose envelope carries a VERP address while its report's
// Final-Recipient and Original-Recipient both name another mailbox
// (compared without case and without a "+tag") is marked Mismatch with
// Verdict "mismatch" and is only recorded, like a duplicate: a forged or
// misrouted report must not suppress the VERP address.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/bouncer/bouncer/parse"
)

// DefaultDedupeWindow is how long a report is remembered for duplicate
// detection when Rules.DedupeWindow is 0.
const DefaultDedupeWindow = 30 * 24 * time.Hour

// DedupeKeyLen is the length of a dedupe key: SHA-256 cut to 128 bits, far
// beyond any birthday or second-preimage attack on a store's lifetime.
const DedupeKeyLen = 16

// traceHeaders are the header fields that differ between two copies of
// one message delivered along different paths or retried: trace fields
// (RFC 5322 §3.6.7, RFC 5321 §4.4) and fields added in transit or at
// delivery (RFC 8601 Authentication-Results, RFC 8617 ARC, RFC 7208
// Received-SPF, a relay's DKIM-Signature, Postfix Delivered-To and
// X-Original-To, Exim Envelope-To and Delivery-Date, Gmail X-Received).
// Lower case.
var traceHeaders = map[string]bool{
	"received": true, "return-path": true, "delivered-to": true, "x-original-to": true,
	"authentication-results": true, "arc-seal": true, "arc-message-signature": true,
	"arc-authentication-results": true, "received-spf": true, "dkim-signature": true,
	"x-received": true, "envelope-to": true, "delivery-date": true,
}

// BodyHash is the SHA-256 of raw with its top-level trace header fields
// left out and line endings reduced to LF, so that a retried or
// duplicated copy of a message hashes alike. It is part of the stored
// dedupe keys: its result must never change for the same raw.
func BodyHash(raw []byte) [sha256.Size]byte {
	lh := lineHasher{h: sha256.New()}
	bp := hashBufs.Get().(*[]byte)
	lh.b = (*bp)[:0]
	skip := false
	i := 0
	for i < len(raw) {
		j := bytes.IndexByte(raw[i:], '\n')
		end := len(raw)
		if j >= 0 {
			end = i + j + 1
		}
		line := bytes.TrimRight(raw[i:end], "\r\n")
		if len(line) == 0 {
			break // end of the header
		}
		if line[0] == ' ' || line[0] == '\t' {
			// continuation of the previous field
		} else if c := bytes.IndexByte(line, ':'); c > 0 {
			skip = isTraceHeader(bytes.TrimSpace(line[:c]))
		} else {
			skip = false
		}
		if !skip {
			lh.line(line)
		}
		i = end
	}
	body := raw[i:]
	for len(body) > 0 {
		j := bytes.Index(body, []byte("\r\n"))
		if j < 0 {
			lh.write(body)
			break
		}
		lh.line(body[:j])
		body = body[j+2:]
	}
	lh.flush()
	*bp = lh.b[:0]
	hashBufs.Put(bp)
	var sum [sha256.Size]byte
	lh.h.Sum(sum[:0])
	return sum
}

// lineHasher gathers lines in b before hashing them: a SHA-256 Write per
// line of 70 bytes cost more than the hashing itself.
type lineHasher struct {
	h hash.Hash
	b []byte
}

var hashBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// line hashes p and a line feed.
func (l *lineHasher) line(p []byte) {
	l.write(p)
	if len(l.b) == cap(l.b) {
		l.flush()
	}
	l.b = append(l.b, '\n')
}

func (l *lineHasher) write(p []byte) {
	if len(l.b)+len(p) > cap(l.b) {
		l.flush()
		if len(p) > cap(l.b) {
			l.h.Write(p)
			return
		}
	}
	l.b = append(l.b, p...)
}

func (l *lineHasher) flush() {
	l.h.Write(l.b)
	l.b = l.b[:0]
}

// maxTraceName is the length of the longest name in traceHeaders.
const maxTraceName = len("arc-authentication-results")

// isTraceHeader says whether the field name is in traceHeaders, ignoring
// case (Unicode case, as strings.ToLower folds it, for non-ASCII names).
func isTraceHeader(name []byte) bool {
	for _, c := range name {
		if c >= utf8.RuneSelf {
			return traceHeaders[strings.ToLower(string(name))]
		}
	}
	var low [maxTraceName]byte
	if len(name) > len(low) {
		return false
	}
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		low[i] = c
	}
	return traceHeaders[string(low[:len(name)])]
}

// fieldHasher hashes a list of fields unambiguously: each is preceded by
// its length.
type fieldHasher struct{ b []byte }

func (f *fieldHasher) add(vals ...string) {
	for _, v := range vals {
		f.b = binary.BigEndian.AppendUint32(f.b, uint32(len(v)))
		f.b = append(f.b, v...)
	}
}

// DedupeKey returns the dedupe key of the i-th record of d (rc is its
// recipient). When the report names the instance of the delivery attempt
// it describes (a date, a log id, the returned Message-ID or the envelope
// id), the key is a hash of the report's own fields, so a report that was
// regenerated or re-sent with other headers is still the same report.
// Otherwise it is a hash of the message without trace headers (body), the
// record's addresses and i, so that two content-identical text bounces about two sends are not
// mistaken for one, unless they are byte-identical below the trace fields.
func DedupeKey(d *Delivery, body *[sha256.Size]byte, i int, rc *parse.Recipient) []byte {
	var f fieldHasher
	if rep := d.Report; rep != nil && instanceKnown(rep, rc) {
		f.add("report", strings.ToLower(d.Envelope.VERP), strings.ToLower(rep.ReportingMTA),
			rep.OriginalEnvelopeID, rep.ArrivalDate, rep.DSNGateway, rep.ReceivedFromMTA)
		status := rc.StatusLiteral
		if status == "" {
			status = rc.Status
		}
		f.add(strings.ToLower(rc.FinalRecipient), strings.ToLower(rc.OriginalRecipient), string(rc.Action),
			status, strings.ToLower(rc.RemoteMTA), rc.DiagnosticCode, rc.LastAttemptDate,
			rc.WillRetryUntil, rc.FinalLogID)
		if o := rep.Original; o != nil {
			f.add(o.MessageID, o.Date)
		} else {
			f.add("", "")
		}
		if fb := rep.Feedback; fb != nil {
			f.add(fb.FeedbackType, fb.ArrivalDate, fb.SourceIP, fb.OriginalRcptTo)
		}
	} else {
		f.add("body", strings.ToLower(d.Envelope.VERP), strings.ToLower(rc.FinalRecipient),
			strings.ToLower(rc.OriginalRecipient))
		f.b = append(f.b, body[:]...)
		f.b = binary.BigEndian.AppendUint32(f.b, uint32(i))
	}
	sum := sha256.Sum256(f.b)
	return sum[:DedupeKeyLen]
}

// instanceKnown reports whether the report names which delivery attempt
// or message it is about.
func instanceKnown(rep *parse.Report, rc *parse.Recipient) bool {
	if rep.ArrivalDate != "" || rep.OriginalEnvelopeID != "" || rc.LastAttemptDate != "" || rc.FinalLogID != "" {
		return true
	}
	if rep.Original != nil && rep.Original.MessageID != "" {
		return true
	}
	return rep.Feedback != nil && rep.Feedback.ArrivalDate != ""
}

// crossCheck compares the VERP address of env with the recipients rc
// names. It returns "" when they agree, when there is no VERP address or
// when the report names no address, else why they disagree. One match of
// Final-Recipient or Original-Recipient suffices (a forwarded message
// keeps its original recipient only in Original-Recipient).
func crossCheck(env *Envelope, rc *parse.Recipient) string {
	if env.VERP == "" {
		return ""
	}
	var named []string
	for _, a := range []string{rc.FinalRecipient, rc.OriginalRecipient} {
		if strings.Contains(a, "@") {
			named = append(named, a)
		}
	}
	if len(named) == 0 {
		return ""
	}
	for _, a := range named {
		if sameMailbox(env.VERP, a) {
			return ""
		}
	}
	return fmt.Sprintf("verp recipient %s != final recipient %s",
		Truncate(NormalizeAddr(env.VERP), 100), Truncate(NormalizeAddr(named[0]), 100))
}

// sameMailbox compares two addresses ignoring case (MTAs fold the case of
// local parts, though RFC 5321 §2.4 says they should not) and a "+tag"
// subaddress in either local part (a receiving MTA may report the
// mailbox it delivered to without it). Other provider rules (Gmail's
// dots) are not applied: they would mask real mismatches elsewhere.
func sameMailbox(a, b string) bool {
	a, b = strings.ToLower(NormalizeAddr(a)), strings.ToLower(NormalizeAddr(b))
	if a == b {
		return true
	}
	return stripTag(a) == stripTag(b)
}

// stripTag removes a "+tag" from the local part of addr.
func stripTag(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return addr
	}
	if p := strings.IndexByte(addr[:at], '+'); p > 0 {
		return addr[:p] + addr[at:]
	}
	return addr
}
