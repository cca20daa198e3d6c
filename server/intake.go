package server

import (
	"bytes"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/verp"
)

// Intake is the part of receiving a bounce that does not depend on SMTP:
// the recipient check of RCPT (bounce domains, postmaster, the VERP local
// part and its signed token) and the step from a raw message and its
// envelope to a store.Delivery (decoding with the limits, the VERP address
// the report confirms). An SMTP session uses it, and so does package
// mailbox for messages read from an IMAP folder, so both judge a message
// alike.
type Intake struct {
	domains  map[string]bool
	hostname string
	verp     VERPDecoder
	decode   func(r io.Reader, lim parse.Limits) (*parse.Report, error)
	limits   parse.Limits
}

// NewIntake returns the Intake of a server with these options: Domains,
// Hostname, VERP, Parse and Decode are used, with their defaults.
func NewIntake(opts Options) *Intake {
	opts = opts.withDefaults()
	in := &Intake{
		domains:  make(map[string]bool),
		hostname: opts.Hostname,
		verp:     opts.VERP,
		decode:   opts.Decode,
		limits:   opts.Parse,
	}
	for _, d := range opts.Domains {
		in.domains[normDomain(d)] = true
	}
	return in
}

// acceptsDomain reports whether recipients at domain are ours.
func (in *Intake) acceptsDomain(domain string) bool {
	if len(in.domains) == 0 {
		return true
	}
	return in.domains[normDomain(domain)]
}

// Recipient checks a recipient address as RCPT does: postmaster at a
// bounce domain or the host name, else an address at a bounce domain whose
// local part is decoded as VERP (a local part that is not VERP gives an
// empty Result). The error says why the address is refused: a malformed
// address, a domain that is not a bounce domain, or the verp error of a
// signed token that fails its check (verp.ErrBadMAC, ErrUnknownKey,
// ErrExpired, ErrUnsigned).
func (in *Intake) Recipient(to string) (verp.Result, error) {
	i := strings.LastIndexByte(to, '@')
	if i <= 0 || i == len(to)-1 || !utf8.ValidString(to) || len(to) > maxPath || hasControl(to) {
		return verp.Result{}, errBadRecipient
	}
	local, domain := to[:i], to[i+1:]
	if strings.EqualFold(local, "postmaster") {
		// RFC 5321 §4.5.1: postmaster must be accepted at every domain
		// the server accepts mail for, which includes its own name.
		if !in.acceptsDomain(domain) && normDomain(domain) != normDomain(in.hostname) {
			return verp.Result{}, errForeignDomain
		}
		return verp.Result{}, nil
	}
	if !in.acceptsDomain(domain) {
		return verp.Result{}, errForeignDomain
	}
	return in.verp.Decode(local)
}

// Delivery decodes raw and returns the delivery to save: the envelope
// with the VERP address, verification and campaign that res and the
// report give (verpRecipient), the report, and the parse error if
// decoding failed. A panic in the decoder becomes a parse error, so the
// message is still saved raw; its text and stack are returned in panicked
// for the caller to count and log.
func (in *Intake) Delivery(received time.Time, env store.Envelope, res verp.Result, raw []byte) (d *store.Delivery, panicked *DecoderPanic) {
	d = &store.Delivery{Received: received, Envelope: env, Raw: raw}
	var err error
	d.Report, panicked, err = in.decodeRaw(raw)
	if err != nil {
		d.ParseError = err.Error()
	}
	d.Envelope.VERP, d.Envelope.Verified, d.Envelope.Campaign = verpRecipient(res, d.Report)
	return d, panicked
}

// DecoderPanic is a panic recovered in the decoder.
type DecoderPanic struct {
	Value string // fmt.Sprint of the panic value
	Stack string
}

// decodeRaw runs the decoder, recovering a panic in it.
func (in *Intake) decodeRaw(raw []byte) (rep *parse.Report, panicked *DecoderPanic, err error) {
	defer func() {
		if v := recover(); v != nil {
			panicked = &DecoderPanic{Value: fmt.Sprint(v), Stack: string(debug.Stack())}
			rep, err = nil, fmt.Errorf("decoder panic: %v", v)
		}
	}()
	rep, err = in.decode(bytes.NewReader(raw), in.limits)
	return rep, nil, err
}
