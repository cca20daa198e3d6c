package parse_test

import (
	"fmt"
	"strings"

	"github.com/bouncer/bouncer/parse"
)

func ExampleMessage() {
	const dsn = "From: Mail Delivery System <Mailer-Daemon@mx.example.net>\r\n" +
		"Subject: Mail delivery failed\r\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n" +
		"\r\n" +
		"--b\r\n" +
		"Content-Type: message/delivery-status\r\n" +
		"\r\n" +
		"Reporting-MTA: dns; mx.example.net\r\n" +
		"\r\n" +
		"Final-Recipient: rfc822; user@dead.test\r\n" +
		"Action: failed\r\n" +
		"Status: 5.0.0\r\n" +
		"Diagnostic-Code: smtp; 550 5.4.3 Routing server failure\r\n" +
		"--b--\r\n"
	rep, err := parse.Message(strings.NewReader(dsn), parse.Limits{})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, rc := range rep.Recipients {
		fmt.Println(rc.FinalRecipient, rc.Status, rc.StatusLiteral, rc.Kind, rc.Class, rc.Reason, rc.DecodedBy)
	}
	// Output:
	// user@dead.test 5.4.3 5.0.0 bounce hard routing_failure rfc3464
}
