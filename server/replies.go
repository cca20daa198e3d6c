package server

import (
	"bytes"
)

// go-smtp has no setting for the text of its positive replies, and some
// of its words are jokes ("Roger, accepting mail from <...>", "I have
// successfully done nothing") or, for EHLO, out of RFC 5321's shape
// (§4.1.1.1: the reply starts with the server's domain). conn.Write puts
// bouncer's words in their place: go-smtp writes each reply line in its
// own Write (textproto's PrintfLine flushes), so a line is matched whole.
// The codes stay as they are (2.0.0; RFC 3463's 2.1.0 and 2.1.5 would be
// closer, but clients do not read them), except the HELO reply, which
// RFC 2034 §3 gives none. After STARTTLS conn sees ciphertext and go-smtp's own words go
// out; so does the SMTP debug transcript, which go-smtp writes itself.
var replyWords = []struct {
	prefix string
	words  func(host, rest string) string
}{
	{"220 ", func(host, rest string) string {
		if rest == host+" ESMTP Service Ready" {
			return "220 " + host + " ESMTP bounce receiver ready"
		}
		return ""
	}},
	{"250-Hello ", func(host, rest string) string { return "250-" + host + " Hello " + rest }},
	{"250 Hello ", func(host, rest string) string { return "250 " + host + " Hello " + rest }},
	{"250 2.0.0 Hello ", func(host, rest string) string { return "250 " + host + " Hello " + rest }},
	{"250 2.0.0 Roger, accepting mail from ", fixed("250 2.0.0 Sender accepted")},
	{"250 2.0.0 I'll make sure ", fixed("250 2.0.0 Recipient accepted")},
	{"354 Go ahead. End your data with ", fixed("354 Send the message, ending with <CR><LF>.<CR><LF>")},
	{"250 2.0.0 I have successfully done nothing", fixed("250 2.0.0 No operation")},
	{"250 2.0.0 Session reset", fixed("250 2.0.0 Reset, ready for a new message")},
	{"252 2.5.0 Cannot VRFY user, but will accept message", fixed("252 2.5.0 Addresses are not verified here")},
	{"221 2.0.0 Bye", fixed("221 2.0.0 Closing connection")},
}

func fixed(s string) func(string, string) string {
	return func(string, string) string { return s }
}

// reword returns bouncer's words for a whole reply line go-smtp wrote in
// its own, or nil to send p as it is.
func (c *conn) reword(p []byte) []byte {
	if len(p) < 6 || (p[0] != '2' && p[0] != '3') || !bytes.HasSuffix(p, []byte("\r\n")) {
		return nil
	}
	c.mu.Lock()
	encrypted := c.encrypted
	c.mu.Unlock()
	if encrypted {
		return nil
	}
	line := p[:len(p)-2]
	for _, r := range replyWords {
		// Compared as bytes: no copy of the many lines that stay as they are.
		if len(line) >= len(r.prefix) && string(line[:len(r.prefix)]) == r.prefix {
			if w := r.words(c.s.opts.Hostname, string(line[len(r.prefix):])); w != "" {
				return []byte(w + "\r\n")
			}
			return nil
		}
	}
	return nil
}
