package parse

import (
	"fmt"
	"strings"
	"testing"
)

// TestHostile decodes inputs built to hit quadratic paths: each must be
// decoded (the test has no clock; a quadratic regression shows as a test
// that runs for minutes).
func TestHostile(t *testing.T) {
	head := "From: MAILER-DAEMON@example.net\nSubject: Undelivered Mail Returned to Sender\n"
	var many strings.Builder
	many.WriteString(head + "\n" + strings.Repeat("filler line of text\n", 40000))
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&many, "<user%d@example.com>: 550 5.1.1 unknown\n", i)
	}
	var dsnMany strings.Builder
	dsnMany.WriteString(head + "Content-Type: multipart/report; report-type=delivery-status; boundary=B\n\n--B\nContent-Type: text/plain\n\n" +
		strings.Repeat("text text text text text text\n", 30000) + "\n--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\n")
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&dsnMany, "Final-Recipient: rfc822; u%d@example.com\nAction: failed\nStatus: 5.1.1\n\n", i)
	}
	dsnMany.WriteString("--B--\n")
	var broken strings.Builder
	broken.WriteString(head + "Content-Type: multipart/report; report-type=delivery-status; boundary=B\n\n--B\nContent-Type: text/plain\n\n")
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&broken, "<t%d@example.com>: failed\n", i)
	}
	broken.WriteString("\n--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\n")
	for i := 0; i < 1000; i++ {
		broken.WriteString("Final-Recipient: rfc822; @mx.example.com\nAction: failed\nStatus: 5.1.1\n\n")
	}
	broken.WriteString("--B--\n")
	cases := map[string]string{
		"broken dsn addresses": broken.String(),
		"folded dsn field": head + "Content-Type: message/delivery-status\n\nFinal-Recipient: rfc822; a@example.com\nDiagnostic-Code: smtp; x\n" +
			strings.Repeat(" y\n", 300000),
		"many addresses":     many.String(),
		"many dsn records":   dsnMany.String(),
		"header-like lines":  head + "\n" + strings.Repeat("X-A: b\n", 150000),
		"long x- line":       head + "\nx-" + strings.Repeat("a", 1<<20) + "\n",
		"delimiter preamble": head + "Content-Type: multipart/mixed; boundary=nope\n\n" + strings.Repeat("--xx\n", 200000),
		"many folds in text": head + "\n" + strings.Repeat("Received: x\n y\n", 100000),
		"at signs":           head + "\n" + strings.Repeat("a@", 500000),
		"dots":               head + "\n" + strings.Repeat("a.", 200000) + "@" + strings.Repeat("b.", 200000),
	}
	for name, msg := range cases {
		t.Run(name, func(t *testing.T) {
			rep, _ := Message(strings.NewReader(msg), Limits{})
			if rep == nil {
				t.Fatal("nil report")
			}
		})
	}
}
