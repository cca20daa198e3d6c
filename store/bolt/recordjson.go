package bolt

import (
	"encoding/json"
	"reflect"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/bouncer/bouncer/parse"
)

// appendDiskRecord appends the JSON of d to dst: the bytes json.Marshal(d)
// returns, without its reflection, which the writer goroutine paid for
// every record (BenchmarkRecordCodec). It fails where json.Marshal fails, on a time it cannot
// write, with json.Marshal's error.
//
// The members come in encoding/json's order for d: the fields of the
// embedded *Record (none if it is nil) that d does not shadow, in their
// order, with those of parse.Recipient where Record embeds it, then d's
// own fields. A field added to diskRecord, diskEnvelope, Record,
// parse.Recipient, parse.Original or parse.Feedback must be added here
// too; TestRecordJSONAllFields fails until it is.
func appendDiskRecord(dst []byte, d *diskRecord) ([]byte, error) {
	b := append(dst, '{')
	o := len(b) - 1
	if r := d.Record; r != nil {
		b = appendString(appendKey(b, o, "msg_id"), r.MsgID)
		b = appendString(appendKey(b, o, "recipient"), r.Addr)
		b = appendRecipient(b, o, &r.Recipient)
		b = appendOptString(b, o, "verdict", r.Verdict)
		b = appendOptString(b, o, "rule", r.Rule)
		b = appendOptBool(b, o, "suppressed", r.Suppressed)
		b = appendOptBool(b, o, "duplicate", r.Duplicate)
		b = appendOptString(b, o, "duplicate_of", r.DuplicateOf)
		b = appendOptString(b, o, "mismatch", r.Mismatch)
	}
	b = appendOptString(b, o, "id", d.ID)
	b = appendOptString(b, o, "domain", d.Domain)
	b = appendOptString(b, o, "base", d.Base)
	if !d.Received.IsZero() { // omitzero calls IsZero
		var err error
		if b, err = appendTime(appendKey(b, o, "received"), d.Received); err != nil {
			return dst, err
		}
	}
	if d.Envelope != nil {
		b = appendDiskEnvelope(appendKey(b, o, "envelope"), d.Envelope)
	}
	b = appendOptString(b, o, "reporting_mta", d.ReportingMTA)
	b = appendOptString(b, o, "original_envelope_id", d.OriginalEnvelopeID)
	b = appendOptString(b, o, "dsn_gateway", d.DSNGateway)
	b = appendOptString(b, o, "received_from_mta", d.ReceivedFromMTA)
	b = appendOptString(b, o, "arrival_date", d.ArrivalDate)
	if d.Original != nil {
		b = appendOriginal(appendKey(b, o, "original"), d.Original)
	}
	if d.Feedback != nil {
		b = appendFeedback(appendKey(b, o, "feedback"), d.Feedback)
	}
	b = appendOptString(b, o, "parse_error", d.ParseError)
	return append(b, '}'), nil
}

// appendRecipient appends the members of rc to the object opened at b[o],
// as encoding/json promotes them from the embedded parse.Recipient.
func appendRecipient(b []byte, o int, rc *parse.Recipient) []byte {
	b = appendOptString(b, o, "final_recipient", rc.FinalRecipient)
	b = appendOptString(b, o, "final_recipient_type", rc.FinalRecipientType)
	b = appendOptString(b, o, "original_recipient", rc.OriginalRecipient)
	b = appendOptString(b, o, "original_recipient_type", rc.OriginalRecipientType)
	b = appendOptString(b, o, "action", string(rc.Action))
	b = appendOptString(b, o, "status", rc.Status)
	b = appendOptString(b, o, "status_literal", rc.StatusLiteral)
	b = appendOptBool(b, o, "status_inferred", rc.StatusInferred)
	b = appendOptString(b, o, "reply_code", rc.ReplyCode)
	b = appendOptString(b, o, "remote_mta", rc.RemoteMTA)
	b = appendOptString(b, o, "diagnostic_type", rc.DiagnosticType)
	b = appendOptString(b, o, "diagnostic_code", rc.DiagnosticCode)
	b = appendOptString(b, o, "last_attempt_date", rc.LastAttemptDate)
	b = appendOptString(b, o, "will_retry_until", rc.WillRetryUntil)
	b = appendOptString(b, o, "final_log_id", rc.FinalLogID)
	b = appendString(appendKey(b, o, "kind"), string(rc.Kind))
	b = appendString(appendKey(b, o, "class"), string(rc.Class))
	b = appendOptString(b, o, "reason", string(rc.Reason))
	return appendString(appendKey(b, o, "decoded_by"), rc.DecodedBy)
}

// appendOriginal appends the JSON object of g, its X- headers in the
// order of their keys as encoding/json sorts a map.
func appendOriginal(b []byte, g *parse.Original) []byte {
	b = append(b, '{')
	o := len(b) - 1
	b = appendOptString(b, o, "message_id", g.MessageID)
	b = appendOptString(b, o, "from", g.From)
	b = appendOptString(b, o, "to", g.To)
	b = appendOptString(b, o, "subject", g.Subject)
	b = appendOptString(b, o, "date", g.Date)
	if len(g.XHeaders) > 0 {
		b = append(appendKey(b, o, "x_headers"), '{')
		m := len(b) - 1
		keys := make([]string, 0, len(g.XHeaders))
		for k := range g.XHeaders {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if len(b) > m+1 {
				b = append(b, ',')
			}
			b = append(appendString(b, k), ':')
			b = appendString(b, g.XHeaders[k])
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

// appendFeedback appends the JSON object of f.
func appendFeedback(b []byte, f *parse.Feedback) []byte {
	b = append(b, '{')
	o := len(b) - 1
	b = appendOptString(b, o, "feedback_type", f.FeedbackType)
	b = appendOptString(b, o, "user_agent", f.UserAgent)
	b = appendOptString(b, o, "original_mail_from", f.OriginalMailFrom)
	b = appendOptString(b, o, "original_rcpt_to", f.OriginalRcptTo)
	b = appendOptString(b, o, "source_ip", f.SourceIP)
	b = appendOptString(b, o, "reported_domain", f.ReportedDomain)
	b = appendOptString(b, o, "arrival_date", f.ArrivalDate)
	b = appendOptString(b, o, "authentication_results", f.AuthenticationRes)
	return append(b, '}')
}

// appendKey appends the member name key (plain ASCII, written as is) to
// the object whose '{' is b[o], after a comma unless it is the first.
func appendKey(b []byte, o int, key string) []byte {
	if len(b) > o+1 {
		b = append(b, ',')
	}
	b = append(b, '"')
	b = append(b, key...)
	return append(b, '"', ':')
}

// appendOptString appends the member key: s unless s is empty (omitempty).
func appendOptString(b []byte, o int, key, s string) []byte {
	if s == "" {
		return b
	}
	return appendString(appendKey(b, o, key), s)
}

// appendOptBool appends the member key: true if v (omitempty).
func appendOptBool(b []byte, o int, key string, v bool) []byte {
	if !v {
		return b
	}
	return append(appendKey(b, o, key), "true"...)
}

// appendTime appends t as time.Time.MarshalJSON writes it (RFC 3339 with
// the fraction of a second trimmed of zeros), or fails as json.Marshal does
// when RFC 3339 cannot say t: a year outside 0-9999, or a zone offset of
// 24 hours or more.
func appendTime(b []byte, t time.Time) ([]byte, error) {
	b = append(b, '"')
	n := len(b)
	b = t.AppendFormat(b, time.RFC3339Nano)
	bad := b[n+4] != '-' // a year of other than 4 digits
	if !bad && b[len(b)-1] != 'Z' {
		// The offset should be the last six bytes, "±hh:mm".
		off := b[len(b)-6:]
		bad = '0' <= off[0] && off[0] <= '9' || (off[1]-'0')*10+off[2]-'0' >= 24
	}
	if bad {
		// The error json.Marshal returns (encoding/json's encode.go).
		_, err := t.MarshalJSON()
		return b[:n-1], &json.MarshalerError{Type: reflect.TypeFor[time.Time](), Err: err}
	}
	return append(b, '"'), nil
}

// escLow has bit c set for each byte c below 64 that encoding/json
// escapes in a string: control bytes, '"', and (HTML-safe by default)
// '&' and '<', '>'. The only other ASCII byte it escapes is '\\'.
const escLow uint64 = 1<<' ' - 1 | 1<<'"' | 1<<'&' | 1<<'<' | 1<<'>'

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string escaped as encoding/json
// escapes it by default: '"' and '\\' and the control bytes with a
// backslash (the short forms \b \f \n \r \t where JSON has them, else
// \u00xx), '<', '>' and '&' as \u003c, \u003e and \u0026, U+2028 and U+2029
// as \u2028 and \u2029, and each byte of invalid UTF-8 as \ufffd. All else
// is copied.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	done := 0 // s[:done] is in b
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 64 && c != '\\' || c < 64 && escLow>>c&1 == 0 {
				i++
				continue
			}
			b = append(b, s[done:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			done = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[done:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[done:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		done = i
	}
	b = append(b, s[done:]...)
	return append(b, '"')
}

// appendDiskEnvelope appends the JSON object of e as diskEnvelope's tags
// say: an empty sender and an empty or nil recipient list left out.
func appendDiskEnvelope(b []byte, e *diskEnvelope) []byte {
	b = append(b, '{')
	o := len(b) - 1
	b = appendOptString(b, o, "mail_from", e.MailFrom)
	if len(e.RcptTo) > 0 {
		b = appendStrings(appendKey(b, o, "rcpt_to"), e.RcptTo)
	}
	b = appendOptString(b, o, "client_ip", e.ClientIP)
	b = appendOptString(b, o, "helo", e.Helo)
	b = appendOptString(b, o, "verp", e.VERP)
	b = appendOptBool(b, o, "verified", e.Verified)
	b = appendOptString(b, o, "campaign", e.Campaign)
	b = appendOptBool(b, o, "relay", e.Relay)
	b = appendOptString(b, o, "source", e.Source)
	return append(b, '}')
}

// appendStrings appends ss as a JSON array, or null if ss is nil.
func appendStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}
