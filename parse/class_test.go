package parse

import (
	"strings"
	"testing"
)

// TestGivenUpRecord checks +expired-final on delivery-status records:
// a delayed record whose own error says the message was given up is
// final, one whose error is a remote server's temporary reply stays a
// delay.
func TestGivenUpRecord(t *testing.T) {
	dsn := func(diag string) string {
		return "From: MAILER-DAEMON@mx.example.net\nTo: sender@example.org\nSubject: Delivery status notification\n" +
			"MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\n\n" +
			"--b\nContent-Type: text/plain\n\nA message is delayed for the following recipients.\n\n" +
			"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n" +
			"Final-Recipient: rfc822; user@example.com\nAction: delayed\nStatus: 4.4.7\n" +
			"Diagnostic-Code: " + diag + "\n\n--b--\n"
	}
	for _, c := range []struct {
		diag string
		kind Kind
		by   string
	}{
		{"X-Unix; Envelope expired", KindBounce, "rfc3464+expired-final"},
		{"smtp; 421 4.4.2 mx.example.com Error: time limit exceeded", KindDelay, "rfc3464"},
		{"smtp; 451 4.7.1 Greylisted, please try again later", KindDelay, "rfc3464"},
	} {
		rep, err := Message(strings.NewReader(dsn(c.diag)), Limits{})
		tcheck(t, err, "decoding")
		if len(rep.Recipients) != 1 {
			t.Fatalf("%s: recipients %v", c.diag, addrs(rep))
		}
		if rc := rep.Recipients[0]; rc.Kind != c.kind || rc.DecodedBy != c.by || rc.Status != "4.4.7" {
			t.Errorf("%s: kind %s by %s status %s, want %s by %s status 4.4.7", c.diag, rc.Kind, rc.DecodedBy, rc.Status, c.kind, c.by)
		}
	}
}
