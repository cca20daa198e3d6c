package parse

import (
	"bufio"
	"bytes"
	"io"
	"mime"
	"net/textproto"
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
	// Fields are gathered in sc and copied once, at their count, into
	// the result; the value of the last field stays in val while folded
	// lines may follow, and becomes a string when the next field starts
	// (or the header ends).
	fs := sc.f[:0]
	val := sc.v[:0]
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
			return sc.makeFields(fs, val), errHeaderSize
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
				if len(val) > 0 {
					val = append(val, ' ')
				}
				val = append(val, t...)
			}
		default:
			i := bytes.IndexByte(line, ':')
			if i <= 0 {
				break // not a field: an mbox "From " line, stray text
			}
			key := trimRightASCII(line[:i], " \t")
			skipping = !keep(key) || !validKey(key)
			if !skipping {
				if len(fs) > 0 {
					fs[len(fs)-1].value = string(val)
				}
				fs = append(fs, headerField{key: canonicalKey(key)})
				val = append(val[:0], bytes.TrimSpace(line[i+1:])...)
			}
		}
		if err != nil {
			break
		}
	}
	if err == io.EOF {
		err = nil
	}
	return sc.makeFields(fs, val), err
}

// headerScratch is where readHeaderUntil gathers a header block. The
// decoder holds one for all the blocks of a message: as a local array it
// made readHeaderUntil's frame 1.2 KB, at the bottom of the recursive
// entity/multipart path, where it made the goroutine's stack grow.
type headerScratch struct {
	f [16]headerField
	v [256]byte
	// arena holds the fields of the blocks read so far, each block a
	// full slice of it (no append reaches the next): one allocation for
	// the blocks of most messages instead of one each.
	arena []headerField
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

// makeFields returns the fields fs, the last one with the value val.
func (sc *headerScratch) makeFields(fs []headerField, val []byte) fields {
	if len(fs) == 0 {
		return fields{}
	}
	fs[len(fs)-1].value = string(val)
	if cap(sc.arena)-len(sc.arena) < len(fs) {
		sc.arena = make([]headerField, 0, max(48, len(fs)))
	}
	start := len(sc.arena)
	sc.arena = append(sc.arena, fs...)
	return fields{f: sc.arena[start:len(sc.arena):len(sc.arena)]}
}

// canonicalKeys are the canonical forms (textproto.CanonicalMIMEHeaderKey)
// of the fields that are kept most often, so that these need no string of
// their own.
var canonicalKeys = [...]string{
	"Content-Type", "Content-Transfer-Encoding", "Content-Description", "Content-Disposition", "Content-Id",
	"From", "To", "Subject", "Date", "Message-Id", "Return-Path", "Auto-Submitted", "Precedence",
}

// canonicalKey returns textproto.CanonicalMIMEHeaderKey(string(b)). A key
// of letters and dashes that matches a canonical form regardless of case
// has that form.
func canonicalKey(b []byte) string {
	for _, k := range canonicalKeys[:] { // [:]: ranging over the array copied it to the stack
		if len(b) == len(k) && foldEqual(b, k) {
			return k
		}
	}
	return textproto.CanonicalMIMEHeaderKey(string(b))
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
	for len(s) > 0 && strings.IndexByte(cutset, s[len(s)-1]) >= 0 {
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
	return hasPrefixFold(k, "content-") || keepAny(k, "subject", "from", "to", "return-path",
		"auto-submitted", "x-failed-recipients", "x-autoreply", "x-autorespond", "x-autoresponder",
		"x-vacation", "x-mailer-autoreply", "precedence", "x-auto-response-suppress", "x-mlserver", "x-ml-name")
}

// keepReturned keeps the fields of a returned message that go into
// Original, and those that say what the returned message is.
func keepReturned(k []byte) bool {
	return hasPrefixFold(k, "content-") || hasPrefixFold(k, "x-") ||
		keepAny(k, "message-id", "from", "to", "subject", "date")
}
