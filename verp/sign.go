package verp

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Format constants; FORMAT.md defines each.
const (
	versionAddr = 'a' // signed form, the token carries the address
	versionHash = 'h' // compact form, the token carries a hash of it

	dayLen    = 3  // base32 digits of the day stamp
	macLen    = 13 // base32 characters of the MAC: 65 bits
	hashLen   = 13 // base32 characters of the address hash: 65 bits
	headerLen = 2 + dayLen + macLen

	dayMod        = 32 * 32 * 32 // the day stamp counts modulo this
	maxExpiryDays = 32000        // well below dayMod, so ages cannot wrap
	futureDays    = 1            // a stamp this many days ahead is clock skew

	maxLocal   = 64 // RFC 5321 §4.5.3.1.1
	macContext = "bouncer-verp-1"
	minSecret  = 16
)

// b32 is RFC 4648 base32 in lower case without padding.
var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

const b32Alphabet = "abcdefghijklmnopqrstuvwxyz234567"

// ErrTooLong is returned by Signer.Sign when even the compact form does not
// fit the 64-octet local part.
var ErrTooLong = errors.New("verp: return path does not fit 64 octets")

// Key is one signing key. ID is one letter or digit, carried in each token
// and compared without regard to case; Secret is at least 16 bytes, used
// as the HMAC-SHA256 key as it is (its UTF-8 bytes).
type Key struct {
	ID     string
	Secret string
}

// Validate reports whether k can sign and verify.
func (k Key) Validate() error {
	if len(k.ID) != 1 || !isAlnum(k.ID[0]) {
		return fmt.Errorf("verp: key id %q must be one letter or digit", k.ID)
	}
	if len(k.Secret) < minSecret {
		return fmt.Errorf("verp: key %q: secret is shorter than %d bytes", k.ID, minSecret)
	}
	return nil
}

// computeMAC returns the 13-character MAC of a token's fields, all of which
// are already in lower case (FORMAT.md, "MAC").
func computeMAC(secret string, version byte, kid, day, campaign, list, subject string) string {
	m := hmac.New(sha256.New, []byte(secret))
	for _, f := range []string{macContext, string(version), kid, day, campaign, list} {
		m.Write([]byte(f))
		m.Write([]byte{0})
	}
	m.Write([]byte(subject))
	return b32.EncodeToString(m.Sum(nil))[:macLen]
}

// epochDay returns whole days since 1970-01-01 UTC, rounding down.
func epochDay(t time.Time) int64 {
	s := t.Unix()
	d := s / 86400
	if s%86400 < 0 {
		d--
	}
	return d
}

// encodeDay writes day modulo dayMod as three base32 digits, most
// significant first.
func encodeDay(day int64) string {
	n := int(((day % dayMod) + dayMod) % dayMod)
	return string([]byte{b32Alphabet[n>>10&31], b32Alphabet[n>>5&31], b32Alphabet[n&31]})
}

// decodeDay is the inverse of encodeDay for lower-case input.
func decodeDay(s string) (int, bool) {
	if len(s) != dayLen {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		v := strings.IndexByte(b32Alphabet, s[i])
		if v < 0 {
			return 0, false
		}
		n = n<<5 | v
	}
	return n, true
}

// validID accepts a campaign or list id: letters, digits, "_" and "-".
func validID(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) && s[i] != '_' && s[i] != '-' {
			return false
		}
	}
	return true
}

func isB32(s string) bool {
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(b32Alphabet, s[i]) < 0 {
			return false
		}
	}
	return true
}

// SignerOptions configure a Signer.
type SignerOptions struct {
	Key       Key    // the key that signs; the Decoder must know its ID
	Domain    string // bounce domain, the part after "@"
	Prefix    string // part before the delimiter; default "bounces"
	Delimiter string // default "+"; must match the Decoder's
	Equals    string // default "="; must match the Decoder's
	Compact   bool   // always use the compact form
}

// Signer makes signed return paths. It is safe for concurrent use.
type Signer struct {
	o SignerOptions
}

// NewSigner checks opts and returns a Signer.
func NewSigner(o SignerOptions) (*Signer, error) {
	if o.Prefix == "" {
		o.Prefix = "bounces"
	}
	if o.Delimiter == "" {
		o.Delimiter = "+"
	}
	if o.Equals == "" {
		o.Equals = "="
	}
	if err := (Options{Delimiter: o.Delimiter, Equals: o.Equals, Prefix: o.Prefix}).Validate(); err != nil {
		return nil, err
	}
	if err := o.Key.Validate(); err != nil {
		return nil, err
	}
	if !isDotAtom(o.Prefix) || strings.Contains(o.Prefix, o.Equals) {
		return nil, fmt.Errorf("verp: prefix %q must be a dot-atom without %q", o.Prefix, o.Equals)
	}
	o.Domain = lowerASCII(o.Domain)
	if !isLDHDomain(o.Domain) {
		return nil, fmt.Errorf("verp: bounce domain %q is not a host name", o.Domain)
	}
	o.Key.ID = lowerASCII(o.Key.ID)
	return &Signer{o: o}, nil
}

// Sign returns the return-path address (local@domain, no angle brackets)
// for a message to recipient in the given campaign and list (either may be
// empty), stamped with the day of now. It uses the signed form when it fits
// 64 octets and the compact form otherwise (or always, with
// SignerOptions.Compact).
func (s *Signer) Sign(recipient, campaign, list string, now time.Time) (string, error) {
	if !validID(campaign) || !validID(list) {
		return "", fmt.Errorf("verp: campaign %q and list %q may hold only letters, digits, _ and -", campaign, list)
	}
	campaign, list = lowerASCII(campaign), lowerASCII(list)
	addr := strings.TrimSpace(recipient)
	if len(addr) >= 2 && addr[0] == '<' && addr[len(addr)-1] == '>' {
		addr = addr[1 : len(addr)-1]
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 || len(addr) > 254 || !validPlainLocal(addr[:at]) || !validDomain(addr[at+1:]) {
		return "", fmt.Errorf("verp: recipient %q is not an address", recipient)
	}
	day := encodeDay(epochDay(now))
	if !s.o.Compact {
		loc, dom := addr[:at], lowerASCII(addr[at+1:])
		if isDotAtom(loc) && isLDHDomain(dom) {
			subject := lowerASCII(loc) + "@" + dom
			local := s.local(versionAddr, day, campaign, list, subject, loc+s.o.Equals+dom)
			if len(local) <= maxLocal {
				return local + "@" + s.o.Domain, nil
			}
		}
	}
	h := AddressHash(addr)
	local := s.local(versionHash, day, campaign, list, h, h)
	if len(local) > maxLocal {
		return "", fmt.Errorf("%w: %d octets with campaign %q and list %q", ErrTooLong, len(local), campaign, list)
	}
	return local + "@" + s.o.Domain, nil
}

// local assembles P D E V K DDD MAC E C E L E tail.
func (s *Signer) local(version byte, day, campaign, list, subject, tail string) string {
	mac := computeMAC(s.o.Key.Secret, version, s.o.Key.ID, day, campaign, list, subject)
	e := s.o.Equals
	return s.o.Prefix + s.o.Delimiter + e + string(version) + s.o.Key.ID + day + mac +
		e + campaign + e + list + e + tail
}

// detailBadHeader is the detail when the fixed-width header does not parse;
// Explain then has no day to show.
const detailBadHeader = "malformed signed token: bad key id, day or MAC characters"

// decodeSigned parses and verifies the token that follows "<prefix>D E".
// The Result is filled as far as parsing got, for Explain; Decode discards
// it on error.
func (d *Decoder) decodeSigned(tok string) (Result, string, error) {
	res := Result{Signed: true, Form: FormSigned}
	e := d.opts.Equals
	folded := lowerASCII(tok)
	if len(folded) < headerLen+3*len(e) || !strings.HasPrefix(folded[headerLen:], e) {
		return res, "malformed signed token: short or no separator after the header", ErrBadMAC
	}
	hdr := folded[:headerLen]
	version, kid, day, mac := hdr[0], hdr[1:2], hdr[2:2+dayLen], hdr[2+dayLen:]
	if version == versionHash {
		res.Form = FormCompact
	} else if version != versionAddr {
		return res, fmt.Sprintf("malformed signed token: unknown version %q", version), ErrBadMAC
	}
	res.KeyID = kid
	n, ok := decodeDay(day)
	if !ok || !isAlnum(kid[0]) || !isB32(mac) {
		return res, detailBadHeader, ErrBadMAC
	}
	res.Day = n
	fields := strings.SplitN(tok[headerLen+len(e):], e, 3)
	if len(fields) != 3 {
		return res, "malformed signed token: campaign, list or address missing", ErrBadMAC
	}
	res.Campaign, res.List = lowerASCII(fields[0]), lowerASCII(fields[1])
	if !validID(res.Campaign) || !validID(res.List) {
		return res, "malformed signed token: bad campaign or list characters", ErrBadMAC
	}
	subject, detail := d.signedSubject(&res, fields[2])
	if detail != "" {
		return res, detail, ErrBadMAC
	}
	key, ok := d.keys[kid]
	if !ok {
		return res, fmt.Sprintf("key id %q is not configured", kid), ErrUnknownKey
	}
	want := computeMAC(key.Secret, version, kid, day, res.Campaign, res.List, subject)
	if !constEq(mac, want) {
		return res, "MAC does not match", ErrBadMAC
	}
	if age, ok := d.age(n); !ok {
		return res, fmt.Sprintf("day stamp is %d days old, over %d", age, d.opts.ExpiryDays), ErrExpired
	}
	res.Verified = true
	return res, "signature valid", nil
}

// signedSubject fills the recipient or its hash from the token's tail and
// returns the string the MAC covers, or a reason the tail is malformed.
func (d *Decoder) signedSubject(res *Result, tail string) (string, string) {
	if res.Form == FormCompact {
		h := lowerASCII(tail)
		if len(h) != hashLen || !isB32(h) {
			return "", "malformed compact token: the address hash is not 13 base32 characters"
		}
		res.RecipientHash = h
		return h, ""
	}
	j := strings.LastIndex(tail, d.opts.Equals)
	if j <= 0 {
		return "", "malformed signed token: no address"
	}
	loc, dom := tail[:j], lowerASCII(tail[j+len(d.opts.Equals):])
	if !isDotAtom(loc) || !isLDHDomain(dom) {
		return "", "malformed signed token: bad address"
	}
	res.Recipient = loc + "@" + dom
	return lowerASCII(res.Recipient), ""
}

// age returns how many days old a stamp is and whether it is still valid.
// A stamp up to futureDays ahead counts as age 0 (clock skew).
func (d *Decoder) age(stamp int) (int, bool) {
	today := int(((epochDay(d.opts.Now()) % dayMod) + dayMod) % dayMod)
	age := ((today-stamp)%dayMod + dayMod) % dayMod
	if age >= dayMod-futureDays {
		return 0, true
	}
	return age, d.opts.ExpiryDays < 0 || age <= d.opts.ExpiryDays
}
