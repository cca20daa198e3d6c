package server

import (
	"strings"
	"testing"
)

// TestOwnWords: every positive reply of a session is bouncer's wording,
// none of go-smtp's defaults, and the EHLO reply starting with the server's name (RFC 5321
// §4.1.1.1).
func TestOwnWords(t *testing.T) {
	ts := newTestServer(t, testOptions(), &memSaver{})
	c := connectRaw(t, ts.addr, nil)
	var replies []string
	keep := func(s string) { replies = append(replies, s) }
	keep(c.expect(220, "mx.test ESMTP bounce receiver ready"))
	keep(c.cmd("EHLO client.test", 250, "mx.test Hello client.test"))
	keep(c.cmd("HELO client.test", 250, "mx.test Hello client.test"))
	keep(c.cmd("MAIL FROM:<>", 250, "2.0.0 Sender accepted"))
	keep(c.cmd("RCPT TO:<bounces+u=dead.test@"+bounceDomain+">", 250, "2.0.0 Recipient accepted"))
	keep(c.cmd("DATA", 354, "Send the message"))
	keep(c.cmd("Subject: x\r\n\r\nnot a bounce\r\n.", 250, "2.0.0 OK, bounce stored"))
	keep(c.cmd("NOOP", 250, "2.0.0 No operation"))
	keep(c.cmd("VRFY someone", 252, "2.5.0 Addresses are not verified here"))
	keep(c.cmd("RSET", 250, "2.0.0 Reset"))
	keep(c.cmd("QUIT", 221, "2.0.0 Closing connection"))
	for _, r := range replies {
		for _, lib := range []string{"Roger", "I'll make sure", "Go ahead", "successfully done nothing", "Service Ready", "Cannot VRFY", "Bye"} {
			if strings.Contains(r, lib) {
				t.Errorf("reply %q has go-smtp's words %q", r, lib)
			}
		}
	}
}
