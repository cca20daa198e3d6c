package parse

import (
	"bufio"
	"bytes"
	"io"
	"mime"
	"strings"

	"github.com/emersion/go-message"
	mtextproto "github.com/emersion/go-message/textproto"
)

// readHeader reads a header block (RFC 5322 §2.2) up to the blank line that
// ends it, leniently: lines that are not fields (an mbox "From " line,
// stray text) are skipped, folded lines are joined with one space. It reads
// at most max bytes and then fails with errHeaderSize. The reader must
// deliver LF line endings (see lineReader).
//
// Only fields for which keep returns true are stored: decoding needs a
// handful, and Received or DKIM fields are most of a header's bytes.
func readHeader(br *bufio.Reader, max int, keep func(key []byte) bool, sc *headerScratch) (fields, error) {
	return readHeaderUntil(&src{br: br}, max, keep, sc)
}

// readHeaderUntil is readHeader that also stops, without consuming it, at a
// line starting with one of s's delimiters (a part with no body).
func readHeaderUntil(s *src, max int, keep func(key []byte) bool, sc *headerScratch) (fields, error) {
	br := s.br
	skipping := false
	// The keys that need a string of their own and the values of the
	// fields kept are gathered in sc.b, and spans into it in sc.spans;
	// the block becomes one string at the end, and each key and value a
	// part of it (makeFields): one allocation for the block instead of
	// one for each value.
	fs := sc.f[:0]
	sc.b = sc.b[:0]
	sc.spans = sc.spans[:0]
	n := 0
	var err error
	for {
		if s.atDelim() >= 0 {
			break
		}
		var line []byte
		line, err = br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			line = append([]byte(nil), line...)
			for err == bufio.ErrBufferFull && n+len(line) <= max {
				var more []byte
				more, err = br.ReadSlice('\n')
				line = append(line, more...)
			}
		}
		n += len(line)
		if n > max {
			return sc.makeFields(fs), errHeaderSize
		}
		for len(line) > 0 && (line[len(line)-1] == '\n' || line[len(line)-1] == '\r') {
			line = line[:len(line)-1]
		}
		if len(line) == 0 {
			break
		}
		switch {
		case line[0] == ' ' || line[0] == '\t':
			if skipping || len(fs) == 0 {
				break
			}
			if t := bytes.TrimSpace(line); len(t) > 0 {
				sp := &sc.spans[len(sc.spans)-1]
				if len(sc.b) > sp.v0 {
					sc.b = append(sc.b, ' ')
				}
				sc.b = append(sc.b, t...)
				sp.v1 = len(sc.b)
			}
		default:
			i := bytes.IndexByte(line, ':')
			if i <= 0 {
				break // not a field: an mbox "From " line, stray text
			}
			key := trimRightASCII(line[:i], " \t")
			skipping = !keep(key) || !validKey(key)
			if !skipping {
				var sp fieldSpan
				k := internedKey(key)
				if k == "" {
					sp.k0 = len(sc.b)
					sc.b = appendCanonicalKey(sc.b, key)
					sp.k1 = len(sc.b)
				}
				sp.v0 = len(sc.b)
				sc.b = append(sc.b, bytes.TrimSpace(line[i+1:])...)
				sp.v1 = len(sc.b)
				fs = append(fs, headerField{key: k})
				sc.spans = append(sc.spans, sp)
			}
		}
		if err != nil {
			break
		}
	}
	if err == io.EOF {
		err = nil
	}
	return sc.makeFields(fs), err
}

// headerScratch is where readHeaderUntil gathers a header block. The
// decoder holds one for all the blocks of a message: as a local array it
// made readHeaderUntil's frame 1.2 KB, at the bottom of the recursive
// entity/multipart path, where it made the goroutine's stack grow.
type headerScratch struct {
	f     [16]headerField
	b     []byte      // the block's keys (those not interned) and values
	spans []fieldSpan // where in b each field's key and value are
	// arena holds the fields of the blocks read so far, each block a
	// full slice of it (no append reaches the next): one allocation for
	// the blocks of most messages instead of one each.
	arena []headerField
}

// fieldSpan is where a field's key (when it has no interned string) and
// value are in headerScratch.b.
type fieldSpan struct{ k0, k1, v0, v1 int }

// makeFields returns the fields fs with their keys and values from sc.
func (sc *headerScratch) makeFields(fs []headerField) fields {
	if len(fs) == 0 {
		return fields{}
	}
	all := string(sc.b)
	for i := range fs {
		sp := sc.spans[i]
		if fs[i].key == "" {
			fs[i].key = all[sp.k0:sp.k1]
		}
		fs[i].value = all[sp.v0:sp.v1]
	}
	if cap(sc.arena)-len(sc.arena) < len(fs) {
		sc.arena = make([]headerField, 0, max(48, len(fs)))
	}
	start := len(sc.arena)
	sc.arena = append(sc.arena, fs...)
	return fields{f: sc.arena[start:len(sc.arena):len(sc.arena)]}
}

// fields is a header block as read: canonical keys and values in order.
// Most headers are only looked up; header turns one into a go-message
// header when MIME decoding needs it.
type fields struct {
	f []headerField
}

type headerField struct {
	key   string // canonical, "Message-Id"
	value string
}

// canonicalKeys are the canonical forms (textproto.CanonicalMIMEHeaderKey)
// of the fields that are kept most often, so that these need no string of
// their own.
var canonicalKeys = [...]string{
	"Content-Type", "Content-Transfer-Encoding", "Content-Description", "Content-Disposition", "Content-Id",
	"From", "To", "Subject", "Date", "Message-Id", "Return-Path", "Auto-Submitted", "Precedence",
}

// canonicalKey returns textproto.CanonicalMIMEHeaderKey(string(b)): an
// interned canonical form, else a string of its own.
func canonicalKey(b []byte) string {
	if k := internedKey(b); k != "" {
		return k
	}
	return string(appendCanonicalKey(nil, b))
}

// internedKey returns the canonical form among canonicalKeys of a key
// that matches it regardless of case, or "".
func internedKey(b []byte) string {
	if len(b) >= len(keysByLen) {
		return ""
	}
	for _, k := range keysByLen[len(b)] {
		if foldEqual(b, k) {
			return k
		}
	}
	return ""
}

// keysByLen holds canonicalKeys by their length, so that a key is
// compared with those of its length only.
var keysByLen = func() (t [32][]string) {
	for _, k := range canonicalKeys {
		t[len(k)] = append(t[len(k)], k)
	}
	return t
}()

// appendCanonicalKey appends textproto.CanonicalMIMEHeaderKey(string(b))
// to dst: a key made only of token bytes (RFC 7230 §3.2.6) with its first
// letter and each letter after a dash in upper case and the others in
// lower case, any other key as it is.
func appendCanonicalKey(dst, b []byte) []byte {
	for _, c := range b {
		if !isHeaderTokenByte(c) {
			return append(dst, b...)
		}
	}
	upper := true
	for _, c := range b {
		if upper && c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		} else if !upper && c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
		upper = c == '-'
	}
	return dst
}

// isHeaderTokenByte reports a tchar of RFC 7230 §3.2.6, the bytes
// textproto.CanonicalMIMEHeaderKey changes a key of.
func isHeaderTokenByte(c byte) bool {
	return isAlnum(c) || c < 0x80 && strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// foldEqual reports whether b and s are equal, ignoring ASCII case.
func foldEqual(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c, d := b[i], s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if d >= 'A' && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}

// get returns the first value of key (canonical form, "Message-Id").
func (f fields) get(key string) string {
	for _, x := range f.f {
		if x.key == key {
			return x.value
		}
	}
	return ""
}

func (f fields) has(key string) bool {
	for _, x := range f.f {
		if x.key == key {
			return true
		}
	}
	return false
}

func (f fields) len() int { return len(f.f) }

// header builds a go-message header whose Get returns the first value
// of a key, as ReadHeader's does.
func (f fields) header() message.Header {
	var h mtextproto.Header
	for i := len(f.f) - 1; i >= 0; i-- {
		h.Add(f.f[i].key, f.f[i].value)
	}
	return message.Header{Header: h}
}

// contentType parses the Content-Type field as go-message's
// Header.ContentType does ("text/plain" when there is none), without
// building a go-message header: multipart containers need nothing else.
func (f fields) contentType() (string, map[string]string, error) {
	v := f.get("Content-Type")
	if v == "" {
		return "text/plain", nil, nil
	}
	mt, params, err := mime.ParseMediaType(v)
	if err != nil {
		return v, nil, err
	}
	for _, p := range params {
		if strings.Contains(p, "=?") {
			// RFC 2047 words in a parameter: go-message decodes them.
			h := message.Header{}
			h.Set("Content-Type", v)
			return h.ContentType()
		}
	}
	return mt, params, nil
}

// validKey reports whether b, without the trailing blanks seen in the
// wild, is a field name (RFC 5322 §3.6.8: printable ASCII but colon).
func validKey(b []byte) bool {
	b = trimRightASCII(b, " \t")
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c >= 127 {
			return false
		}
	}
	return true
}

// trimRightASCII is strings.TrimRight (or bytes.TrimRight) for a cutset of
// ASCII bytes, without the set those build on every call with a cutset of
// more than one byte: header and DSN lines are trimmed this way.
func trimRightASCII[T string | []byte](s T, cutset string) T {
	for len(s) > 0 {
		c, cut := s[len(s)-1], false
		for i := 0; i < len(cutset); i++ { // a loop: the cutsets are a byte or two
			cut = cut || cutset[i] == c
		}
		if !cut {
			break
		}
		s = s[:len(s)-1]
	}
	return s
}

// hasPrefixFold reports whether b starts with the lower-case ASCII prefix.
func hasPrefixFold(b []byte, prefix string) bool {
	if len(b) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

func equalFold(b []byte, s string) bool {
	return len(b) == len(s) && hasPrefixFold(b, s)
}

func keepAny(k []byte, names ...string) bool {
	for _, n := range names {
		if equalFold(k, n) {
			return true
		}
	}
	return false
}

// keepPart keeps the fields of a MIME part header that decoding reads.
func keepPart(k []byte) bool { return hasPrefixFold(k, "content-") }

// keepTop keeps the fields of the outer header that decoding reads.
func keepTop(k []byte) bool {
	if len(k) == 0 {
		return false
	}
	// By first letter: most fields of a header (Received, DKIM-Signature,
	// ARC-*, Authentication-Results) are then ruled out with one or two
	// comparisons.
	switch k[0] | 0x20 {
	case 'c':
		return hasPrefixFold(k, "content-")
	case 's':
		return equalFold(k, "subject")
	case 'f':
		return equalFold(k, "from")
	case 't':
		return equalFold(k, "to")
	case 'r':
		return equalFold(k, "return-path")
	case 'a':
		return equalFold(k, "auto-submitted")
	case 'p':
		return equalFold(k, "precedence")
	case 'x':
		return keepAny(k, "x-failed-recipients", "x-autoreply", "x-autorespond", "x-autoresponder",
			"x-vacation", "x-mailer-autoreply", "x-auto-response-suppress", "x-mlserver", "x-ml-name")
	}
	return false
}

// keepReturned keeps the fields of a returned message that go into
// Original, and those that say what the returned message is.
func keepReturned(k []byte) bool {
	return hasPrefixFold(k, "content-") || hasPrefixFold(k, "x-") ||
		keepAny(k, "message-id", "from", "to", "subject", "date")
}
