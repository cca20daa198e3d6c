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
func readHeader(br *bufio.Reader, max int, keep func(key []byte) bool) (fields, error) {
	return readHeaderUntil(&src{br: br}, max, keep)
}

// readHeaderUntil is readHeader that also stops, without consuming it, at a
// line starting with one of s's delimiters (a part with no body).
func readHeaderUntil(s *src, max int, keep func(key []byte) bool) (fields, error) {
	br := s.br
	skipping := false
	var keys []string
	var vals [][]byte
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
			return makeFields(keys, vals), errHeaderSize
		}
		for len(line) > 0 && (line[len(line)-1] == '\n' || line[len(line)-1] == '\r') {
			line = line[:len(line)-1]
		}
		if len(line) == 0 {
			break
		}
		switch {
		case line[0] == ' ' || line[0] == '\t':
			if skipping || len(vals) == 0 {
				break
			}
			if t := bytes.TrimSpace(line); len(t) > 0 {
				v := vals[len(vals)-1]
				if len(v) > 0 {
					v = append(v, ' ')
				}
				vals[len(vals)-1] = append(v, t...)
			}
		default:
			i := bytes.IndexByte(line, ':')
			if i <= 0 {
				break // not a field: an mbox "From " line, stray text
			}
			key := bytes.TrimRight(line[:i], " \t")
			skipping = !keep(key) || !validKey(key)
			if !skipping {
				keys = append(keys, textproto.CanonicalMIMEHeaderKey(string(key)))
				vals = append(vals, append([]byte(nil), bytes.TrimSpace(line[i+1:])...))
			}
		}
		if err != nil {
			break
		}
	}
	if err == io.EOF {
		err = nil
	}
	return makeFields(keys, vals), err
}

// fields is a header block as read: canonical keys and values in order.
// Most headers are only looked up; header turns one into a go-message
// header when MIME decoding needs it.
type fields struct {
	keys, vals []string
}

func makeFields(keys []string, vals [][]byte) fields {
	f := fields{keys: keys, vals: make([]string, len(vals))}
	for i, v := range vals {
		f.vals[i] = string(v)
	}
	return f
}

// get returns the first value of key (canonical form, "Message-Id").
func (f fields) get(key string) string {
	for i, k := range f.keys {
		if k == key {
			return f.vals[i]
		}
	}
	return ""
}

func (f fields) has(key string) bool {
	for _, k := range f.keys {
		if k == key {
			return true
		}
	}
	return false
}

func (f fields) len() int { return len(f.keys) }

// header builds a go-message header whose Get returns the first value
// of a key, as ReadHeader's does.
func (f fields) header() message.Header {
	var h mtextproto.Header
	for i := len(f.keys) - 1; i >= 0; i-- {
		h.Add(f.keys[i], f.vals[i])
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

// validKey reports whether b is a field name (RFC 5322 §3.6.8: printable
// ASCII but colon), allowing trailing blanks seen in the wild.
func validKey(b []byte) bool {
	b = bytes.TrimRight(b, " \t")
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
		"x-vacation", "x-mailer-autoreply", "precedence", "x-auto-response-suppress")
}

// keepReturned keeps the fields of a returned message that go into
// Original, and those that say what the returned message is.
func keepReturned(k []byte) bool {
	return hasPrefixFold(k, "content-") || hasPrefixFold(k, "x-") ||
		keepAny(k, "message-id", "from", "to", "subject", "date")
}
