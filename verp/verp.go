// Package verp decodes and encodes variable envelope return paths: the
// plain form Postfix's XVERP produces ("bounces+user=example.com@bounce.example.org")
// and bouncer's signed form (see FORMAT.md), after unwrapping BATV (prvs=,
// msprvs1=, btv1==) and SRS (SRS0=, SRS1=) wrappers that a remote system may
// have added.
//
// A local part is at most 64 octets (RFC 5321 §4.5.3.1.1) and a path at most
// 256 (RFC 5321 §4.5.3.1.3). Signed tokens always fit the first limit; plain
// VERP local parts longer than 64 octets are still decoded, up to
// MaxLocalLen.
//
// The package depends on the standard library only, so a sender can import
// it to sign return paths (Signer) without pulling in the server.
package verp

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Errors returned by Decoder.Decode for a token that must be refused. Decode
// returns these values themselves, never wrapped, so == and errors.Is both
// work.
var (
	ErrBadMAC     = errors.New("verp: bad signature")
	ErrUnknownKey = errors.New("verp: unknown key id")
	ErrExpired    = errors.New("verp: token expired")
	ErrUnsigned   = errors.New("verp: signed token required")
)

// MaxLocalLen caps the local part Decode looks at: RFC 5321 §4.5.3.1.3
// limits a whole path to 256 octets. A longer local part is not VERP.
const MaxLocalLen = 256

// DefaultExpiryDays is the token lifetime when Options.ExpiryDays is zero.
const DefaultExpiryDays = 30

// Options configure a Decoder. Zero values take the defaults noted.
type Options struct {
	Delimiter string // between prefix and encoded address; default "+"
	Equals    string // replaces "@" in the encoded address; default "="

	// Prefix, when set, is the only prefix accepted (compared without
	// regard to case); a local part with another prefix is not VERP.
	Prefix string

	// Keys verify signed tokens. Several keys may be configured at once so
	// that mail signed with an old key still verifies while it bounces.
	Keys []Key

	// ExpiryDays is how many days a signed token stays valid after the day
	// it was signed; 0 means DefaultExpiryDays, a negative value means
	// tokens never expire.
	ExpiryDays int

	// Required makes signed tokens mandatory: a plain VERP local part then
	// gives ErrUnsigned.
	Required bool

	// Now returns the current time; nil means time.Now. Tests set it.
	Now func() time.Time
}

// Validate reports the first problem with opts, for a config loader. A
// Decoder built from invalid options skips the invalid keys.
func (o Options) Validate() error {
	d, e := o.Delimiter, o.Equals
	if d == "" {
		d = "+"
	}
	if e == "" {
		e = "="
	}
	if err := checkSeparator("delimiter", d, true); err != nil {
		return err
	}
	if err := checkSeparator("equals", e, false); err != nil {
		return err
	}
	if d == e {
		return fmt.Errorf("verp: delimiter and equals are both %q", d)
	}
	if strings.Contains(o.Prefix, d) {
		return fmt.Errorf("verp: prefix %q contains the delimiter %q", o.Prefix, d)
	}
	if o.ExpiryDays > maxExpiryDays {
		return fmt.Errorf("verp: expiry_days %d is over %d", o.ExpiryDays, maxExpiryDays)
	}
	seen := map[string]bool{}
	for _, k := range o.Keys {
		if err := k.Validate(); err != nil {
			return err
		}
		id := strings.ToLower(k.ID)
		if seen[id] {
			return fmt.Errorf("verp: key id %q appears twice", k.ID)
		}
		seen[id] = true
	}
	if o.Required && len(o.Keys) == 0 {
		return errors.New("verp: signed tokens are required but no key is configured")
	}
	return nil
}

// checkSeparator accepts one atext character (RFC 5322 §3.2.3) that is not
// a letter or digit. Equals must not be "-" either: a domain may contain
// "-", and the encoded address is split at the last Equals.
func checkSeparator(name, s string, hyphenOK bool) error {
	if len(s) != 1 || !isAtext(s[0]) || isAlnum(s[0]) || s[0] == '-' && !hyphenOK {
		return fmt.Errorf("verp: %s %q must be one character such as + or =", name, s)
	}
	return nil
}

// Form says which kind of return path a local part is.
type Form string

// Forms of a decoded local part.
const (
	FormNone    Form = ""        // not VERP: the recipient comes from the report
	FormPlain   Form = "plain"   // <prefix>+<local>=<domain>, unsigned
	FormSigned  Form = "signed"  // signed token carrying the address
	FormCompact Form = "compact" // signed token carrying a hash of the address
)

// Result is what a return-path local part says about the bounced recipient.
type Result struct {
	Recipient string // decoded address, "" if the local part is not VERP or is compact
	Signed    bool   // the local part was a signed token
	Verified  bool   // the token's MAC was checked and is valid
	Campaign  string // campaign id carried by a signed token
	List      string // list id carried by a signed token
	KeyID     string // key id of a signed token

	Form          Form   // which form the local part had
	Prefix        string // the part before the delimiter
	RecipientHash string // compact form: hash of the address, see MatchRecipient
	Day           int    // signed forms: day stamp, days since 1970-01-01 modulo 32768
	Wrapper       string // "prvs", "msprvs1", "btv1", "srs0", "srs1" if one was removed
}

// MatchRecipient reports whether addr (an addr-spec such as a report's
// Final-Recipient, with or without an "rfc822;" type) is the recipient this
// Result speaks of: the same address ignoring ASCII case, or, for the compact
// form, an address whose hash is RecipientHash. An empty Result matches
// nothing.
func (r Result) MatchRecipient(addr string) bool {
	addr = normalizeAddr(addr)
	switch {
	case r.RecipientHash != "":
		return addr != "" && constEq(AddressHash(addr), strings.ToLower(r.RecipientHash))
	case r.Recipient != "":
		return addr != "" && addr == lowerASCII(r.Recipient)
	}
	return false
}

// Decoder decodes return-path addresses.
type Decoder struct {
	opts Options
	keys map[string]Key // by lower-case id
}

// NewDecoder returns a Decoder for opts. Invalid keys (see Key.Validate)
// are skipped; call opts.Validate first to report them.
func NewDecoder(opts Options) *Decoder {
	if opts.Delimiter == "" {
		opts.Delimiter = "+"
	}
	if opts.Equals == "" {
		opts.Equals = "="
	}
	if opts.ExpiryDays == 0 {
		opts.ExpiryDays = DefaultExpiryDays
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	d := &Decoder{opts: opts, keys: map[string]Key{}}
	for _, k := range opts.Keys {
		if k.Validate() == nil {
			d.keys[strings.ToLower(k.ID)] = k
		}
	}
	return d
}

// Decode decodes the local part of an envelope recipient. A local part that
// is not VERP gives an empty Result and no error; an error means the local
// part must be refused: a signed-looking token that does not verify
// (ErrBadMAC, ErrUnknownKey, ErrExpired) or a plain one while signed tokens
// are required (ErrUnsigned). BATV and SRS wrappers are removed first; for
// SRS only the inner local part is decoded (use Unwrap on the whole address
// to see the inner domain too).
func (d *Decoder) Decode(local string) (Result, error) {
	res, _, err := d.decode(local)
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// decode is Decode with a human-readable detail for Explain.
func (d *Decoder) decode(local string) (Result, string, error) {
	if len(local) > MaxLocalLen {
		return d.notVERP(fmt.Sprintf("local part is %d octets, over %d", len(local), MaxLocalLen))
	}
	local = unquoteLocal(local)
	inner, wrapper := unwrapLocal(local)
	if inner == "" {
		return d.notVERP("empty local part")
	}
	i := strings.Index(inner, d.opts.Delimiter)
	if i <= 0 {
		return d.notVERP("no prefix and delimiter " + d.opts.Delimiter)
	}
	prefix, enc := inner[:i], inner[i+len(d.opts.Delimiter):]
	if d.opts.Prefix != "" && !strings.EqualFold(prefix, d.opts.Prefix) {
		return d.notVERP("prefix " + prefix + " is not " + d.opts.Prefix)
	}
	var (
		res    Result
		err    error
		detail string
	)
	switch {
	case strings.HasPrefix(enc, d.opts.Equals) && len(inner) > maxLocal:
		res, err = Result{Signed: true, Form: FormSigned}, ErrBadMAC
		detail = fmt.Sprintf("malformed signed token: %d octets, over %d", len(inner), maxLocal)
	case strings.HasPrefix(enc, d.opts.Equals):
		res, detail, err = d.decodeSigned(enc[len(d.opts.Equals):])
	default:
		res, detail = d.decodePlain(enc)
		if res.Form == FormPlain && d.opts.Required {
			err = ErrUnsigned
			detail += "; signed tokens are required"
		}
	}
	if res.Form != FormNone {
		res.Prefix = prefix
		res.Wrapper = wrapper
	}
	return res, detail, err
}

func (d *Decoder) notVERP(why string) (Result, string, error) {
	return Result{}, "not VERP: " + why, nil
}

// decodePlain decodes "<local><E><domain>", splitting at the last E since a
// domain never contains it.
func (d *Decoder) decodePlain(enc string) (Result, string) {
	if !utf8.ValidString(enc) {
		return Result{}, "not VERP: invalid UTF-8"
	}
	j := strings.LastIndex(enc, d.opts.Equals)
	if j < 0 {
		return Result{}, "not VERP: no " + d.opts.Equals + " between local part and domain"
	}
	loc, dom := enc[:j], enc[j+len(d.opts.Equals):]
	if loc == "" || dom == "" {
		return Result{}, "not VERP: empty local part or domain"
	}
	if !validDomain(dom) {
		return Result{}, "not VERP: " + dom + " is not a domain"
	}
	if !validPlainLocal(loc) {
		return Result{}, "not VERP: encoded local part has control characters"
	}
	return Result{Recipient: quoteLocalIfNeeded(loc) + "@" + lowerASCII(dom), Form: FormPlain},
		"plain VERP, unsigned"
}
