// Package parse decodes bounce messages into a Report.
//
// It reads RFC 3464 delivery status notifications (multipart/report with
// message/delivery-status), their RFC 6533 internationalised form
// (message/global-delivery-status), RFC 5965 feedback reports (ARF),
// RFC 3834 auto-replies, and the non-standard plain-text bounces that real
// MTAs still send. Enhanced status codes follow RFC 3463.
//
// The package is pure: it does no I/O beyond reading the message it is
// given, keeps no state (but a pool of read buffers, see readerPool), and
// does not log. Problems that do not stop decoding (an unknown charset, a
// malformed field) are returned as Report.Warnings.
//
// Decoding streams the message once (message.go, mime.go): header blocks
// and text parts are read up to the Limits, everything else is skipped.
// Records then come from, in order of trust: delivery-status parts
// (dsn.go), a feedback report (arf.go), an Amazon SES notification
// (ses.go), an unsubscribe request or an auto-reply (autoreply.go), and
// last the plain-text rules (heuristics.go, text.go). Each record names
// its source in Recipient.DecodedBy. Status codes are resolved in
// status.go and reasons come from the table in reason.go.
//
// # Which address failed
//
// A delivery-status part names each recipient (RFC 3464 §2.3.1-2.3.2), and
// its Final-Recipient is taken as it is. A plain-text notice can name the
// failed address in several places that may disagree; the evidence is
// ranked (evidence.go, heuristics.go):
//
//  1. An address that the notice attaches an error to (a 4yz/5yz reply, a
//     4.x.x/5.x.x status or a reason's wording in the text about it, as
//     in "<user@example.com>: 550 5.1.1 user unknown") outranks the
//     X-Failed-Recipients header (Exim's, also added by relays and
//     list managers) when the header names none of the notice's addresses
//     and none of its own addresses has an error in the notice:
//     "+over-header". When the header names only addresses that the
//     notice says its failed addresses were expanded from (rule 3), the
//     notice's addresses win too: "+over-alias" (a relay or list manager
//     that writes the list address it was given, where Exim's own header
//     names the member). Otherwise the header wins: it is strong when
//     nothing in the notice contradicts it.
//  2. Addresses the notice lists in its MTA's layout (text/qmail ...
//     text/listed) outrank every address of the text (text/any), which
//     outranks the returned message's To (text/original-to, one To only).
//     Neither of these two weak rules outranks the header. A notice that
//     lists bare mailbox names without a domain (AOL's screen names) is
//     read by text/bare-name (bare.go): the returned message's address
//     with that local part, else the name at the domain of the notice's
//     own mailer-daemon address.
//  3. An address that the notice says another failed address was expanded
//     from (Postfix "<member@example.net> (expanded from
//     <list@example.org>):", Exim "(generated from list@example.org)") is
//     a mailing-list alias or a forwarding address: it becomes that
//     record's OriginalRecipient, as RFC 3464 §2.3.1 has it, and is not
//     a failed recipient of its own: "+expanded". The rule also reads
//     delivery-status records: Exim writes the topmost parent address,
//     the alias, as the Final-Recipient of each member that failed, and
//     names the members only in its text. Such a record becomes the
//     member's, with the alias as OriginalRecipient when it has none
//     ("rfc3464+expanded"): the one member when the text names one for
//     one record, else the member whose text has the record's
//     Diagnostic-Code (Exim's text and report list the members in
//     different orders). A record no member's text matches leaves the
//     alias's records as they are, and so does Action "expanded"
//     (RFC 3464 §2.3.3: there the alias is the recipient).
//  4. The bounce's own From, To and Return-Path, and the returned
//     message's From, never outrank the header and are never taken by the
//     weak rules or the near-failure rule below. (The listing rules may
//     take them: a message sent to oneself bounces too.)
//  5. A notice that returns another bounce (MDaemon returning a Yahoo
//     notice as its message/rfc822 part) is read for its own text: the
//     returned bounce's text is part of the returned message when the
//     notice's own text is a failure notice that names a failed address:
//     "+outer-notice". (A person forwarding a bounce with "the delivery
//     failed, see attached" names none: the returned bounce is read.)
//
// # No recipient found
//
// Notices without a delivery-status part in a layout no rule knows
// (mailing-list managers' error notices, mobile carriers' filter notices,
// translated notices) are read by text/near-failure (near.go): the
// addresses of the notice text (cut before the returned message) that
// have a failure word within two lines, such as unknown, rejected,
// refused, filtered, "not a member", loop, or the localised 宛先不明,
// 受信拒否, 届きません, 配信できません, unbekannt, inconnu, no existe. Left
// out are the notice's own From, To and Return-Path, role addresses
// (postmaster), addresses on quoted header lines (From:, To:, Received:
// ... for <addr>) and addresses given as contacts ("contact", "write to",
// お問い合わせ). The rule reads
//
//   - a notice that no other test recognises as a failure notice, when it
//     comes from a machine or list-manager address (noreply, owner-list,
//     list-admin, list-request, list-bounces, listserv, sympa, or a list
//     server's X-MLServer or X-ML-Name header) and its subject has an
//     error word (error, alert, loop, rejected, refused, denied, failed,
//     拒否, エラー, 失敗): Sympa's refusal of a posting, "Message
//     distribution: Authorization denied", says the sender "is not a
//     subscriber of" the list;
//   - a failure notice whose text names several addresses and no layout
//     rule lists any: of every address of the text (text/any), those near
//     a failure word, if that is some but not all of them.
//
// When no rule finds an address in such a notice's text, the one address
// of its subject is taken if the subject has a failure word and the
// address is none of the bounce's own nor a role address: text/subject.
// A list server that refuses a posting may name the list only there
// (LISTSERV's "Rejected posting to LIST@host", whose text names the
// sender's own address and the list owners').
//
// A multipart/report of type delivery-status (RFC 6522 §3) is a failure
// notice by its type: when its delivery-status part has no recipient
// block and its text has failure wording, the text rules above read it
// ("+report-text").
//
// # Final failure or delay
//
// A record is a final failure (Kind bounce) or a delay (Kind delay). A
// delivery-status part says which in its Action field (RFC 3464 §2.3.3:
// "failed" and "delayed"); a plain-text notice says it in words (class.go):
//
//   - expired-final: a notice that says the message was given up, most
//     often because its queue lifetime ran out ("delivery time expired",
//     Postfix's maximal_queue_lifetime; "retry timeout exceeded", Exim;
//     "this message has been in the queue too long", qmail; "gave up",
//     "no further attempts", "will not be retried"), is final even when it
//     also uses a delay's wording and even when the last attempt's code
//     was 4.x.x. RFC 3463 §3.5 X.4.7 "Delivery time expired" is such a
//     code: Sendmail and Postfix send it with Action failed. The status
//     keeps the 4.x.x the MTA reported; the kind says it gave up. A
//     delivery-status record whose Action is delayed is final too when
//     the error given for that recipient says so: OpenSMTPD writes
//     "Envelope expired" only when it removes an envelope whose queue
//     lifetime ran out (its queue.c), yet some of its versions send that
//     notice in the delay template.
//   - retrying: a notice that says delivery will still be retried ("will
//     be retried", "will keep trying", "this is a warning only", "no
//     action is required", Gmail's "Delivery incomplete ... Gmail will
//     retry for 47 more hours") is a delay even when it quotes a 5.x.x. RFC
//     3464 §2.3.3 defines "delayed" as an MTA that "will continue to
//     attempt" delivery, which is RFC 3463 §3.1's persistent transient
//     class, so the status of a delay that quotes 5.x.x becomes 4.x.x
//     (the quoted code stays in the diagnostic and StatusLiteral).
//     "before giving up" in such a warning does not make it final.
//     Translated warnings say it too: 再試行されます, 引き続き再試行
//     (Japanese), "wird weiterhin versucht", "weitere Zustellversuche"
//     (German), "se seguirá intentando" (Spanish).
//   - full-soft: a full mailbox (reason mailbox_full) is a soft failure
//     whatever class the reporting MTA gave it: RFC 3463 §3.3 says of
//     X.2.2 "This code should be used as a persistent transient failure",
//     and the policy table counts it (its soft rule) rather than
//     suppressing at once. The status keeps the reported code. A full
//     mailbox is read in translated notices too (メールボックスがいっぱい,
//     容量オーバー, "Postfach ist voll", "boîte aux lettres pleine").
//
// The corpus test (corpus_test.go) decodes a copy of the sisimai sample
// set and keeps accuracy figures above a ratchet.
package parse

import "errors"

// ErrNotBounce is returned (with a Report of Kind Unknown) when a message has
// no recognisable delivery report, auto-reply or complaint.
var ErrNotBounce = errors.New("not a bounce")

// Kind says what a message or a recipient record is.
type Kind string

const (
	KindBounce    Kind = "bounce"    // delivery failed
	KindDelay     Kind = "delay"     // delivery delayed, will retry (Action: delayed)
	KindComplaint Kind = "complaint" // RFC 5965 feedback report
	KindAutoReply Kind = "autoreply" // RFC 3834 auto-reply, vacation message
	KindDelivered Kind = "delivered" // Action: delivered, relayed or expanded
	KindUnknown   Kind = "unknown"   // could not be decoded
)

// Class says whether a bounce is permanent.
type Class string

const (
	ClassHard Class = "hard" // permanent failure (5.x.x)
	ClassSoft Class = "soft" // temporary failure or delay (4.x.x), or a full mailbox
	ClassNone Class = "none" // not a failure
)

// Action is the RFC 3464 §2.3.3 Action field.
type Action string

const (
	Failed    Action = "failed"
	Delayed   Action = "delayed"
	Delivered Action = "delivered"
	Relayed   Action = "relayed"
	Expanded  Action = "expanded"
)

// Report is everything decoded from one message.
type Report struct {
	// Kind of the message as a whole: the kind of its first failed
	// recipient, else of its first recipient, else what the message is.
	Kind Kind `json:"kind"`

	// Per-message DSN fields (RFC 3464 §2.2). Address-type prefixes such as
	// "dns;" are removed; the type is kept in the *Type field.
	ReportingMTA       string `json:"reporting_mta,omitempty"`
	ReportingMTAType   string `json:"reporting_mta_type,omitempty"`
	OriginalEnvelopeID string `json:"original_envelope_id,omitempty"`
	DSNGateway         string `json:"dsn_gateway,omitempty"`
	ReceivedFromMTA    string `json:"received_from_mta,omitempty"`
	ArrivalDate        string `json:"arrival_date,omitempty"`

	Recipients []Recipient `json:"recipients,omitempty"`

	// Original holds headers of the returned message (message/rfc822 or
	// text/rfc822-headers part, or an inline copy in a plain-text bounce).
	Original *Original `json:"original,omitempty"`

	// Feedback is set for RFC 5965 reports.
	Feedback *Feedback `json:"feedback,omitempty"`

	// Subject and From of the report itself.
	Subject string `json:"subject,omitempty"`
	From    string `json:"from,omitempty"`

	// Warnings lists problems that did not stop decoding.
	Warnings []string `json:"warnings,omitempty"`
}

// Recipient is one per-recipient block (RFC 3464 §2.3), or what a
// non-standard rule found for one recipient.
type Recipient struct {
	// Addresses with the address type ("rfc822;", "utf-8;") removed.
	FinalRecipient        string `json:"final_recipient,omitempty"`
	FinalRecipientType    string `json:"final_recipient_type,omitempty"`
	OriginalRecipient     string `json:"original_recipient,omitempty"`
	OriginalRecipientType string `json:"original_recipient_type,omitempty"`

	Action Action `json:"action,omitempty"`

	// Status is the effective enhanced status code (RFC 3463): the literal
	// Status field, or a more specific code found in the diagnostic text
	// when the literal one is generic (x.0.0), or one inferred from an SMTP
	// reply code. StatusLiteral is what the Status field said.
	Status         string `json:"status,omitempty"`
	StatusLiteral  string `json:"status_literal,omitempty"`
	StatusInferred bool   `json:"status_inferred,omitempty"`
	// ReplyCode is the SMTP reply code (RFC 5321) found in the diagnostic.
	ReplyCode string `json:"reply_code,omitempty"`

	RemoteMTA       string `json:"remote_mta,omitempty"`
	DiagnosticType  string `json:"diagnostic_type,omitempty"`
	DiagnosticCode  string `json:"diagnostic_code,omitempty"`
	LastAttemptDate string `json:"last_attempt_date,omitempty"`
	WillRetryUntil  string `json:"will_retry_until,omitempty"`
	FinalLogID      string `json:"final_log_id,omitempty"`

	Kind   Kind   `json:"kind"`
	Class  Class  `json:"class"`
	Reason Reason `json:"reason,omitempty"`

	// DecodedBy names the RFC path or the rule that produced this record:
	//   rfc3464, rfc6533           delivery-status part of a multipart/report
	//   rfc3464/loose, .../loose   delivery-status fields outside a report or
	//                              in a mistyped part; "+text" when the
	//                              address came from the text (repairAddresses)
	//   arf, arf/loose             RFC 5965 feedback report, or a complaint in
	//                              another layout (Microsoft JMRP)
	//   rfc3834                    auto-reply
	//   json/ses                   Amazon SES notification
	//   text/unsubscribe           unsubscribe request (complaint, opt-out)
	//   header/x-failed-recipients, text/qmail, text/postfix, text/sendmail,
	//   text/exim, text/angle-colon, text/rcpt-to, text/bare-name,
	//   text/listed, text/near-failure, text/any,
	//   text/original-to           plain-text rules, see heuristics.go,
	//                              bare.go and near.go
	// A rule that overrules what the source says appends its name (see
	// the package comment): "+over-header", "+expanded",
	// "+report-text", "+outer-notice", "+expired-final", "+retrying",
	// "+full-soft", "+original-address" (Address returns the
	// Original-Recipient: the final one is no internet mailbox).
	DecodedBy string `json:"decoded_by"`
}

// Address returns the best known recipient address: the final recipient,
// else the original recipient. A final recipient that is no internet
// mailbox (an internal route or a private name, see address.go) gives way
// to an original recipient that is one.
func (r *Recipient) Address() string {
	if r.FinalRecipient != "" && !r.useOriginal() {
		return r.FinalRecipient
	}
	return r.OriginalRecipient
}

// Original is what is known about the message that bounced.
type Original struct {
	MessageID string `json:"message_id,omitempty"`
	From      string `json:"from,omitempty"`
	To        string `json:"to,omitempty"`
	Subject   string `json:"subject,omitempty"`
	Date      string `json:"date,omitempty"`
	// XHeaders holds the X- headers (canonical key, first value), such as
	// X-Campaign or X-Listmonk-Campaign, so a bounce can be tied to a send.
	XHeaders map[string]string `json:"x_headers,omitempty"`
}

// Feedback holds the RFC 5965 §3.1 fields of a complaint.
type Feedback struct {
	FeedbackType      string `json:"feedback_type,omitempty"`
	UserAgent         string `json:"user_agent,omitempty"`
	OriginalMailFrom  string `json:"original_mail_from,omitempty"`
	OriginalRcptTo    string `json:"original_rcpt_to,omitempty"`
	SourceIP          string `json:"source_ip,omitempty"`
	ReportedDomain    string `json:"reported_domain,omitempty"`
	ArrivalDate       string `json:"arrival_date,omitempty"`
	AuthenticationRes string `json:"authentication_results,omitempty"`
}

// Reason is a coarse cause category for a failure, derived from the status
// code and the diagnostic text. See reason.go for the table.
type Reason string

// Limits bound the cost of decoding a hostile message. Zero fields take the
// defaults of DefaultLimits.
type Limits struct {
	MaxDepth       int // MIME nesting depth
	MaxParts       int // MIME parts in all
	MaxHeaderBytes int // bytes of one header block
	MaxPartBytes   int // bytes read from one text part for decoding
	MaxRecipients  int // recipient records kept from one report
}

// DefaultLimits returns the limits used for zero fields of Limits.
func DefaultLimits() Limits {
	return Limits{
		MaxDepth:       10,
		MaxParts:       100,
		MaxHeaderBytes: 64 << 10,
		MaxPartBytes:   1 << 20,
		MaxRecipients:  1000,
	}
}
