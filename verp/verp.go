// Package verp decodes and encodes variable envelope return paths: the
// plain form Postfix's XVERP produces ("bounces+user=example.com@bounce.example.org")
// and bouncer's signed form, after unwrapping BATV (prvs=) and SRS
// (SRS0=, SRS1=) wrappers that a remote system may have added.
package verp

import (
	"errors"
	"strings"
)

// Errors returned by Decoder.Decode for a token that must be refused.
var (
	ErrBadMAC     = errors.New("verp: bad signature")
	ErrUnknownKey = errors.New("verp: unknown key id")
	ErrExpired    = errors.New("verp: token expired")
	ErrUnsigned   = errors.New("verp: signed token required")
)

// Options configure a Decoder. Zero values take the defaults noted.
type Options struct {
	Delimiter string // between prefix and encoded address; default "+"
	Equals    string // replaces "@" in the encoded address; default "="
}

// Result is what a return-path local part says about the bounced recipient.
type Result struct {
	Recipient string // decoded address, "" if the local part is not VERP
	Signed    bool   // the local part was a signed token
	Verified  bool   // the token's MAC was checked and is valid
	Campaign  string // campaign id carried by a signed token
	List      string // list id carried by a signed token
	KeyID     string // key id of a signed token
}

// Decoder decodes return-path addresses.
type Decoder struct {
	opts Options
}

// NewDecoder returns a Decoder for opts.
func NewDecoder(opts Options) *Decoder {
	if opts.Delimiter == "" {
		opts.Delimiter = "+"
	}
	if opts.Equals == "" {
		opts.Equals = "="
	}
	return &Decoder{opts: opts}
}

// Decode decodes the local part of an envelope recipient. A local part that
// is not VERP gives an empty Result and no error; an error means the address
// claims to be a signed token and must be refused.
func (d *Decoder) Decode(local string) (Result, error) {
	i := strings.Index(local, d.opts.Delimiter)
	if i < 0 {
		return Result{}, nil
	}
	enc := local[i+len(d.opts.Delimiter):]
	j := strings.LastIndex(enc, d.opts.Equals)
	if j <= 0 || j == len(enc)-len(d.opts.Equals) {
		return Result{}, nil
	}
	return Result{Recipient: enc[:j] + "@" + enc[j+len(d.opts.Equals):]}, nil
}
