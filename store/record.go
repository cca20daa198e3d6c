package store

import (
	"strings"
	"time"

	"github.com/bouncer/bouncer/parse"
)

// Envelope is what the SMTP session, or the mailbox reader, knew about a
// message.
type Envelope struct {
	MailFrom string   `json:"mail_from"`
	RcptTo   []string `json:"rcpt_to"`
	ClientIP string   `json:"client_ip,omitempty"`
	Helo     string   `json:"helo,omitempty"`
	// VERP is the recipient decoded from the envelope recipient's local
	// part ("bounces+user=example.com@..." → "user@example.com"), if any.
	VERP string `json:"verp,omitempty"`
	// Verified is true when VERP came from a valid signed token.
	Verified bool `json:"verified,omitempty"`
	// Campaign is the campaign id of a valid signed token, if any.
	Campaign string `json:"campaign,omitempty"`
	// Relay is true when the client is one of the operator's trusted
	// relays (smtp.trusted_relays): the storm guard then believes the
	// MTAs its reports name.
	Relay bool `json:"relay,omitempty"`
	// Source says how the message came in: empty for SMTP, "mailbox:NAME"
	// for one read from the [[mailbox]] named NAME.
	Source string `json:"source,omitempty"`
}

// Delivery is one message accepted over SMTP, ready to be stored: the raw
// bytes, the envelope and what the decoder made of it.
type Delivery struct {
	Received   time.Time
	Envelope   Envelope
	Raw        []byte
	Report     *parse.Report // nil if decoding failed outright
	ParseError string        // why decoding failed, if it did
	// HoldPush, if set, says why the push events of this delivery are
	// held: they go to the dead-letter list with this reason instead of
	// the outbox (the server sets it for a client network over its push
	// budget, server.Options.PushRate). `bouncer outbox retry` sends them.
	HoldPush string
}

// Record is one stored (message, recipient) pair. A message with no
// recipient record is stored as one Record with an empty Addr.
type Record struct {
	ID       string    `json:"id"`     // time-ordered, unique
	MsgID    string    `json:"msg_id"` // id of the raw message, shared by its records
	Received time.Time `json:"received"`
	Envelope Envelope  `json:"envelope"`
	Addr     string    `json:"recipient"` // effective address, lower-cased domain
	Domain   string    `json:"domain"`    // recipient domain, lower case

	parse.Recipient

	ReportingMTA       string          `json:"reporting_mta,omitempty"`
	OriginalEnvelopeID string          `json:"original_envelope_id,omitempty"`
	DSNGateway         string          `json:"dsn_gateway,omitempty"`
	ReceivedFromMTA    string          `json:"received_from_mta,omitempty"`
	ArrivalDate        string          `json:"arrival_date,omitempty"`
	Original           *parse.Original `json:"original,omitempty"`
	Feedback           *parse.Feedback `json:"feedback,omitempty"`
	ParseError         string          `json:"parse_error,omitempty"`

	// Verdict is what policy decided for this record ("suppress",
	// "count", "record", ...), and Suppressed whether it put the address on
	// the suppression list.
	Verdict    string `json:"verdict,omitempty"`
	Rule       string `json:"rule,omitempty"` // policy rule that gave the verdict, if named
	Suppressed bool   `json:"suppressed,omitempty"`

	// Duplicate is set when the same report was stored before, within the
	// dedupe window (Verdict "duplicate"); DuplicateOf is the ID of the
	// first record. A duplicate is kept but never counted, suppresses
	// nothing and sends no event.
	Duplicate   bool   `json:"duplicate,omitempty"`
	DuplicateOf string `json:"duplicate_of,omitempty"`
	// Mismatch says why the report contradicts the envelope (Verdict
	// "mismatch"), e.g. "verp recipient x != final recipient y". Such a
	// record is kept but never counted, suppresses nothing and sends no
	// event.
	Mismatch string `json:"mismatch,omitempty"`
}

// NormalizeAddr trims spaces and angle brackets from an address and lower-
// cases its domain. The local part keeps its case (RFC 5321 §2.4). Invalid
// UTF-8 is replaced, as JSON encoding would do, so that index keys and
// stored records agree.
func NormalizeAddr(addr string) string {
	addr = strings.ToValidUTF8(strings.TrimSpace(addr), "\uFFFD")
	addr = strings.TrimSuffix(strings.TrimPrefix(addr, "<"), ">")
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return addr
	}
	return addr[:i+1] + strings.ToLower(addr[i+1:])
}

// AddrDomain returns the lower-case domain of a normalized address, or ""
// if it has none.
func AddrDomain(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(addr[i+1:])
}

// MaxAddrLen is the longest address put on the suppression list or in a
// soft counter (RFC 5321 §4.5.3.1.3 caps a path at 256 octets; we allow a
// little more for UTF-8 addresses). Longer addresses are recorded but never
// used as keys.
const MaxAddrLen = 320

// Truncate cuts s to at most n bytes for use in error messages and
// bounded fields.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// BuildRecords makes the records of one delivery: one per recipient of
// its report, or one with the report's kind (or unknown) when there is no
// recipient. The address is the VERP-decoded one when the envelope has
// it, else the report's final (or original) recipient. IDs are left for
// the engine.
func BuildRecords(d *Delivery, now time.Time) []Record {
	base := Record{
		Received:   d.Received,
		Envelope:   d.Envelope,
		ParseError: d.ParseError,
	}
	if base.Received.IsZero() {
		base.Received = now
	}
	kind := parse.KindUnknown
	var rcpts []parse.Recipient
	if rep := d.Report; rep != nil {
		base.ReportingMTA = rep.ReportingMTA
		base.OriginalEnvelopeID = rep.OriginalEnvelopeID
		base.DSNGateway = rep.DSNGateway
		base.ReceivedFromMTA = rep.ReceivedFromMTA
		base.ArrivalDate = rep.ArrivalDate
		base.Original = rep.Original
		base.Feedback = rep.Feedback
		if rep.Kind != "" {
			kind = rep.Kind
		}
		rcpts = rep.Recipients
	}
	if len(rcpts) == 0 {
		rcpts = []parse.Recipient{{Kind: kind, Class: parse.ClassNone}}
	}
	recs := make([]Record, len(rcpts))
	for i, rc := range rcpts {
		rec := base
		rec.Recipient = rc
		if rec.Kind == "" {
			rec.Kind = kind
		}
		addr := d.Envelope.VERP
		if addr == "" {
			addr = rc.Address()
		}
		rec.Status = strings.ToValidUTF8(rec.Status, "\uFFFD")
		rec.Addr = NormalizeAddr(addr)
		rec.Domain = AddrDomain(rec.Addr)
		recs[i] = rec
	}
	return recs
}
