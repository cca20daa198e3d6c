package parse

import (
	"strings"
	"testing"
)

// A notice that names the failed address in a quoted subject line before
// it lists it: the diagnostic is what follows the listed address.
func TestTextDiagnosticFollowsListedAddress(t *testing.T) {
	msg := strings.ReplaceAll(`From: Mail Delivery System <Mailer-Daemon@mx.example>
To: bounces@bounce.example
Subject: Mail delivery failed: returning message to sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary=b1

--b1
Content-Type: text/plain

This message was created automatically by mail delivery software.

The subject of the message is: news for later-c@dead.test
The date of the message is:    Fri, 27 Nov 2026 08:12:53 +0000

The following address failed:

  later-c@dead.test
    host 192.0.2.1: 550 5.4.3 Routing server failure

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example

Action: failed
Final-Recipient: rfc822;later-c@dead.test
Status: 5.0.0

--b1--
`, "\n", "\r\n")
	rep, err := Message(strings.NewReader(msg), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Recipients) != 1 {
		t.Fatalf("%d recipients, want 1", len(rep.Recipients))
	}
	r := rep.Recipients[0]
	if !strings.Contains(r.DiagnosticCode, "550 5.4.3") || strings.Contains(r.DiagnosticCode, "date of the message") {
		t.Errorf("diagnostic %q, want the text after the listed address", r.DiagnosticCode)
	}
	if r.Status != "5.4.3" {
		t.Errorf("status %q, want 5.4.3 from the diagnostic", r.Status)
	}
}
