package parse

import (
	"bufio"
	"strings"

	"github.com/emersion/go-message"
)

// heuristics runs the non-standard rules on a message without a
// delivery-status part. Each rule returns the records it found; the first
// rule that finds any wins.
func (d *decoder) heuristics() {
	body := d.bounceText()
	for _, r := range textRules {
		rs := r.fn(d, body)
		if len(rs) == 0 {
			continue
		}
		for i := range rs {
			rs[i].DecodedBy = r.name
			if len(d.rep.Recipients) >= d.lim.MaxRecipients {
				break
			}
			d.rep.Recipients = append(d.rep.Recipients, rs[i])
		}
		return
	}
}

// textRule is one named non-standard rule.
type textRule struct {
	name string
	fn   func(d *decoder, body string) []Recipient
}

var textRules []textRule

func init() {
	textRules = []textRule{
		{"header/x-failed-recipients", (*decoder).xFailedRecipients},
	}
}

// bounceText returns the human-readable part of a bounce: the text parts
// joined, cut before a copy of the returned message.
func (d *decoder) bounceText() string {
	var b strings.Builder
	for _, t := range d.texts {
		if b.Len() > 0 {
			b.WriteString("\n\n")
		}
		b.WriteString(t.body)
	}
	return b.String()
}

// xFailedRecipients reads Exim's X-Failed-Recipients header.
func (d *decoder) xFailedRecipients(body string) []Recipient {
	v := d.top.Get("X-Failed-Recipients")
	if v == "" {
		return nil
	}
	var rs []Recipient
	for _, a := range strings.Split(v, ",") {
		a = cleanAddress("", a)
		if strings.Contains(a, "@") {
			rs = append(rs, Recipient{FinalRecipient: a, Action: Failed})
		}
	}
	return rs
}

// textDiagnostic finds the diagnostic text about rc in the bounce text:
// the lines that follow the first mention of its address.
func (d *decoder) textDiagnostic(rc *Recipient) string {
	a := rc.Address()
	if a == "" {
		return ""
	}
	for _, t := range d.texts {
		i := indexFold(t.body, strings.ToLower(a))
		if i < 0 {
			continue
		}
		return paragraphAfter(t.body, i+len(a))
	}
	return ""
}

// paragraphAfter returns the text from i to the end of its paragraph, or
// of the next one when the rest of the line is empty, bounded in length.
func paragraphAfter(s string, i int) string {
	s = s[i:]
	if len(s) > 2000 {
		s = s[:2000]
	}
	s = strings.TrimLeft(s, ">: \t")
	s = strings.TrimLeft(s, "\n")
	if j := strings.Index(s, "\n\n"); j >= 0 {
		s = s[:j]
	}
	return strings.Join(strings.Fields(s), " ")
}

// headerKeys are fields that mark a quoted header block of a returned
// message.
var headerKeys = []string{"message-id:", "subject:", "from:", "to:", "date:"}

// inlineHeader finds the header of a returned message quoted in a text
// body and parses it.
func inlineHeader(body string) (message.Header, bool) {
	lines := body
	for off := 0; off < len(body); {
		i := strings.IndexByte(lines[off:], '\n')
		end := len(body)
		if i >= 0 {
			end = off + i
		}
		line := body[off:end]
		if startsWithKey(line) {
			blk := headerBlock(body[off:])
			n := 0
			for _, k := range headerKeys {
				if indexFold(blk, "\n"+k) >= 0 || strings.HasPrefix(strings.ToLower(blk), k) {
					n++
				}
			}
			if n >= 2 {
				h, _ := readHeader(bufio.NewReader(strings.NewReader(blk+"\n\n")), 1<<20)
				if h.Len() > 0 {
					return message.Header{Header: h}, true
				}
			}
			off += len(blk) + 1
			continue
		}
		if i < 0 {
			break
		}
		off = end + 1
	}
	return message.Header{}, false
}

var blockStartKeys = []string{"return-path:", "received:", "message-id:", "from:", "to:", "subject:", "date:",
	"delivered-to:", "mime-version:", "dkim-signature:", "x-"}

func startsWithKey(line string) bool {
	if len(line) < 3 {
		return false
	}
	for _, k := range blockStartKeys {
		if len(line) >= len(k) && strings.EqualFold(line[:len(k)], k) {
			return true
		}
	}
	return false
}

// headerBlock returns the lines from the start of s that look like header
// fields or their continuations.
func headerBlock(s string) string {
	n := 0
	for n < len(s) {
		i := strings.IndexByte(s[n:], '\n')
		line := s[n:]
		if i >= 0 {
			line = s[n : n+i]
		}
		ok := len(line) > 0 && (line[0] == ' ' || line[0] == '\t') && n > 0
		if !ok {
			if c := strings.IndexByte(line, ':'); c > 0 && isToken(line[:c]) {
				ok = true
			}
		}
		if !ok {
			break
		}
		if i < 0 {
			n = len(s)
			break
		}
		n += i + 1
	}
	return strings.TrimRight(s[:n], "\n")
}
