package parse

import (
	"errors"
	"strings"
	"testing"
)

// plain builds a one-part text message.
func plain(from, subject, body string, extra ...string) string {
	h := "From: " + from + "\nTo: sender@example.org\nSubject: " + subject + "\n"
	for _, e := range extra {
		h += e + "\n"
	}
	return h + "\n" + body
}

// TestTextRules checks each non-standard rule on a bounce in its layout:
// the recipients found, the rule that found them, and the status.
func TestTextRules(t *testing.T) {
	for _, c := range []struct {
		name   string
		msg    string
		by     string
		addrs  []string
		status string
		kind   Kind
	}{
		{"qmail", plain("MAILER-DAEMON@mx.example.net", "failure notice",
			"Hi. This is the qmail-send program at mx.example.net.\nI'm afraid I wasn't able to deliver your message to the following addresses.\n"+
				"This is a permanent error; I've given up. Sorry it didn't work out.\n\n<gone@example.com>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"+
				"--- Below this line is a copy of the message.\n\nReturn-Path: <sender@example.org>\nTo: gone@example.com\nSubject: hi\nMessage-ID: <x@example.org>\n\nhi\n"),
			"text/qmail", []string{"gone@example.com"}, "5.1.1", KindBounce},
		{"postfix text", plain("MAILER-DAEMON@mx.example.net (Mail Delivery System)", "Undelivered Mail Returned to Sender",
			"This is the mail system at host mx.example.net.\n\n<a@example.com>: host mx.example.com[192.0.2.1] said: 552 5.2.2\n    Mailbox full (in reply to RCPT TO command)\n\n"+
				"<b@example.com>: Host or domain name not found. Name service error for\n    name=example.com type=MX: Host not found\n"),
			"text/postfix+full-soft", []string{"a@example.com", "b@example.com"}, "5.2.2", KindBounce},
		{"exim", plain("Mail Delivery System <Mailer-Daemon@mx.example.net>", "Mail delivery failed: returning message to sender",
			"This message was created automatically by mail delivery software.\n\nA message that you sent could not be delivered to one or more of its\n"+
				"recipients. This is a permanent error. The following address(es) failed:\n\n  x@example.com\n    host mx.example.com [192.0.2.1]\n"+
				"    SMTP error from remote mail server after RCPT TO:<x@example.com>:\n    550 5.4.3 Routing server failure\n\n"+
				"------ This is a copy of the message, including all the headers. ------\n"),
			"text/exim", []string{"x@example.com"}, "5.4.3", KindBounce},
		{"x-failed-recipients", plain("Mailer-Daemon@mx.example.net", "Mail delivery failed",
			"Something went wrong.\n\n  y@example.com\n    all hosts have been failing for a long time\n", "X-Failed-Recipients: y@example.com"),
			"header/x-failed-recipients", []string{"y@example.com"}, "4.4.7", KindBounce},
		{"expired, permanent by the notice", plain("MAILER-DAEMON@mx.example.net", "Delivery failure",
			"Unable to deliver message to the following address(es).\n\n<old@example.com>:\nunable to connect to remote server\n"+
				"I'm not going to try again; this message has been in the queue too long.\n"),
			"text/angle-colon", []string{"old@example.com"}, "5.4.7", KindBounce},
		{"sendmail", plain("Mail Delivery Subsystem <MAILER-DAEMON@mx.example.net>", "Returned mail: see transcript for details",
			"The original message was received at Mon, 1 Jan 2024 00:00:00 GMT\n\n   ----- The following addresses had permanent fatal errors -----\n"+
				"<u@example.com>\n    (reason: 550 5.1.1 <u@example.com>... User unknown)\n\n   ----- Transcript of session follows -----\n"+
				"... while talking to mx.example.com.:\n>>> RCPT To:<u@example.com>\n<<< 550 5.1.1 <u@example.com>... User unknown\n"),
			"text/sendmail", []string{"u@example.com"}, "5.1.1", KindBounce},
		{"exchange", plain("System Administrator <postmaster@example.net>", "Undeliverable: hello",
			"Your message\n\n  To:      other@example.org\n  Subject: hello\n  Sent:    Thu, 29 Apr 2010 00:00:00 -0000\n\n"+
				"did not reach the following recipient(s):\n\nz@example.net on Thu, 29 Apr 2010 00:00:00 -0000\n    The recipient name is not recognized\n"),
			"text/listed", []string{"z@example.net"}, "5.1.1", KindBounce},
		{"gmail delay", plain("Mail Delivery Subsystem <mailer-daemon@googlemail.com>", "Delivery Status Notification (Delay)",
			"This is an automatically generated Delivery Status Notification\n\nTHIS IS A WARNING MESSAGE ONLY.\n\n"+
				"Delivery to the following recipient has been delayed:\n\n     slow@example.com\n\nMessage will be retried for 2 more day(s)\n"),
			"text/listed", []string{"slow@example.com"}, "4.0.0", KindDelay},
		{"given up after the queue lifetime, with delay wording", plain("MAILER-DAEMON@mx.example.net", "Warning: message delayed, now returned",
			"Your message has been delayed for 5 days and the delivery time expired.\n"+
				"No further attempts will be made.\n\n<late@example.com>: 451 4.4.1 connection timed out\n"),
			"text/angle-colon+expired-final", []string{"late@example.com"}, "4.4.1", KindBounce},
		{"delay warning that says it will give up later", plain("MAILER-DAEMON@mx.example.net", "Delivery delayed",
			"Delivery to the following recipient has been delayed:\n\n     wait@example.com\n\n"+
				"Delivery will be retried for 4 more days before giving up.\n"),
			"text/listed", []string{"wait@example.com"}, "4.4.7", KindDelay},
		{"delay quoting a 5.x.x", plain("Mail Delivery Subsystem <mailer-daemon@mx.example.net>", "Delivery Status Notification (Delay)",
			"THIS IS A WARNING MESSAGE ONLY.\n\nDelivery to the following recipient has been delayed:\n\n     busy@example.com\n\n"+
				"The last attempt said: 550 5.7.1 Service unavailable, try later\nMessage will be retried for 2 more day(s)\n"),
			"text/listed+retrying", []string{"busy@example.com"}, "4.7.1", KindDelay},
		{"rcpt to summary", plain("post_master@example.net", "Re: hello",
			"Error: Invalid user address\nError message below:\n550 - Requested action not taken: no such user here\n\n"+
				"Message details:\n  Subject: hello\n  MAIL FROM: sender@example.org\n  RCPT TO: who@example.net\n  Size (in bytes): 222\n"),
			"text/rcpt-to", []string{"who@example.net"}, "5.1.1", KindBounce},
		{"reply code only", plain("MAILER-DAEMON@example.net", "Undeliverable mail",
			"Unknown user: nobody-here@example.com\n\nFor assistance, please contact help-desk@example.net.\n"),
			"text/listed", []string{"nobody-here@example.com"}, "5.1.1", KindBounce},
		{"original to", plain("MAILER-DAEMON@example.net", "Undelivered Mail Returned to Sender",
			"Delivery report unavailable.\n\n--- Original message follows.\n\nFrom: sender@example.org\nTo: target@example.com\nSubject: x\nMessage-ID: <1@example.org>\n\nbody\n"),
			"text/original-to", []string{"target@example.com"}, "5.0.0", KindBounce},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep, err := Message(strings.NewReader(c.msg), Limits{})
			tcheck(t, err, "decoding")
			got := addrs(rep)
			if strings.Join(got, ",") != strings.Join(c.addrs, ",") {
				t.Fatalf("recipients %v, want %v", got, c.addrs)
			}
			rc := rep.Recipients[0]
			if rc.DecodedBy != c.by || rc.Status != c.status || rc.Kind != c.kind {
				t.Errorf("by %s status %s kind %s, want %s %s %s (diag %q)", rc.DecodedBy, rc.Status, rc.Kind, c.by, c.status, c.kind, rc.DiagnosticCode)
			}
		})
	}
}

func TestNonBounces(t *testing.T) {
	for _, c := range []struct {
		name string
		msg  string
		kind Kind
		by   string
		rcpt string
	}{
		{"auto-submitted", plain("Cat <cat@example.net>", "Re: hello", "I read mail on Mondays.\n", "Auto-Submitted: auto-replied"),
			KindAutoReply, "rfc3834", "cat@example.net"},
		{"vacation subject", plain("dog@example.net", "Out of Office: hello", "Back next week.\n"),
			KindAutoReply, "rfc3834", "dog@example.net"},
		{"vacation subject, other language", plain("neko@example.jp", "=?UTF-8?B?6Ieq5YuV5b+c562U?= Re: hello", "Back soon.\n"),
			KindAutoReply, "rfc3834", "neko@example.jp"},
		{"vacation body", plain("owl@example.net", "Re: hello", "Thank you for your mail. I am out of the office until Monday.\n", "Precedence: auto_reply"),
			KindAutoReply, "rfc3834", "owl@example.net"},
		{"bounce with auto-replied is not vacation", plain("MAILER-DAEMON@example.net", "Undelivered Mail Returned to Sender",
			"<gone@example.com>: 550 5.1.1 user unknown\n", "Auto-Submitted: auto-replied"), KindBounce, "text/angle-colon", "gone@example.com"},
		{"arf with a mislabelled part", "From: fbl@isp.example\nTo: fbl@sender.example\nSubject: complaint\n" +
			"Content-Type: multipart/report; report-type=feedback-report; boundary=F\n\n--F\nContent-Type: text/plain\n\nA complaint.\n" +
			"--F\nContent-Type: text/plain\n\nFeedback-Type: abuse\nUser-Agent: FBL/1.0\nVersion: 1\nOriginal-Rcpt-To: <grumpy@example.com>\n--F--\n",
			KindComplaint, "arf", "grumpy@example.com"},
		{"unsubscribe", plain("reader@example.net", "unsubscribe", "Please unsubscribe me.\n"),
			KindComplaint, "text/unsubscribe", "reader@example.net"},
		{"ses complaint", plain("no-reply@sns.amazonaws.com", "AWS Notification Message",
			`{"notificationType":"Complaint","complaint":{"complaintFeedbackType":"abuse","complainedRecipients":[{"emailAddress":"angry@example.com"}]}}`),
			KindComplaint, "json/ses", "angry@example.com"},
		{"ses bounce", plain("no-reply@sns.amazonaws.com", "AWS Notification Message",
			`{"Type":"Notification","Message":"{\"notificationType\":\"Bounce\",\"bounce\":{\"bounceType\":\"Permanent\",\"bouncedRecipients\":[{\"emailAddress\":\"gone@example.com\",\"action\":\"failed\",\"status\":\"5.1.1\",\"diagnosticCode\":\"smtp; 550 5.1.1 user unknown\"}]}}"}`),
			KindBounce, "json/ses", "gone@example.com"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep, err := Message(strings.NewReader(c.msg), Limits{})
			tcheck(t, err, "decoding")
			if rep.Kind != c.kind || len(rep.Recipients) != 1 || rep.Recipients[0].DecodedBy != c.by || rep.Recipients[0].Address() != c.rcpt {
				t.Errorf("kind %s recipients %+v, want %s by %s for %s", rep.Kind, rep.Recipients, c.kind, c.by, c.rcpt)
			}
		})
	}
	for _, body := range []string{
		"See you at noon.\n",
		"My old mailbox bob@old.example is full, please write to bob@new.example.\n",
		"Your newsletter could not be delivered to my colleague carol@example.com, she says.\n",
	} {
		rep, err := Message(strings.NewReader(plain("friend@example.net", "lunch?", body)), Limits{})
		if err != ErrNotBounce || rep.Kind != KindUnknown {
			t.Errorf("plain mail %q: err %v kind %s recipients %v", body, err, rep.Kind, addrs(rep))
		}
	}
}

func TestFindCodes(t *testing.T) {
	for _, c := range []struct{ in, enhanced, reply string }{
		{"550 5.4.3 Routing server failure", "5.4.3", "550"},
		{"smtp; 550-5.1.1 The email account", "5.1.1", "550"},
		{"Exim 4.92.3 said: 452 4.2.2 over quota", "4.2.2", "452"},
		{"host 192.0.2.55 said: 550 no such user", "", "550"},
		{"5.1.0 - Unknown address error 550-'5.7.1 <x@example.com>... Access denied'", "5.7.1", "550"},
		{"Sorry (#5.1.1)", "5.1.1", ""},
		{"Size (in bytes): 222 lines 2", "", ""},
		{"version 5.10.100.1", "", ""},
		{"421 4.7.0 Try again later", "4.7.0", "421"},
	} {
		if got := findEnhanced(c.in); got != c.enhanced {
			t.Errorf("findEnhanced(%q) = %q, want %q", c.in, got, c.enhanced)
		}
		if got := findReplyCode(c.in); got != c.reply {
			t.Errorf("findReplyCode(%q) = %q, want %q", c.in, got, c.reply)
		}
	}
}

func TestResolveStatus(t *testing.T) {
	for _, c := range []struct {
		lit, diag string
		action    Action
		status    string
		inferred  bool
		kind      Kind
		class     Class
	}{
		{"5.0.0", "550 5.4.3 Routing server failure", Failed, "5.4.3", false, KindBounce, ClassHard},
		{"5.1.1", "550 5.1.1 user unknown", Failed, "5.1.1", false, KindBounce, ClassHard},
		{"4.5.0", "550 5.5.0 Service refused", Failed, "5.5.0", false, KindBounce, ClassHard},
		{"", "550 no such user here", Failed, "5.1.1", true, KindBounce, ClassHard},
		{"", "552 Requested mail action aborted", Failed, "5.2.2", true, KindBounce, ClassHard},
		{"", "451 local error in processing", Failed, "4.3.0", true, KindBounce, ClassSoft},
		{"", "421 closing channel", Delayed, "4.3.2", true, KindDelay, ClassSoft},
		{"4.4.7", "", Failed, "4.4.7", false, KindBounce, ClassSoft},
		{"2.0.0", "250 ok", Delivered, "2.0.0", false, KindDelivered, ClassNone},
		{"", "", Failed, "5.0.0", true, KindBounce, ClassHard},
	} {
		rc := Recipient{StatusLiteral: c.lit, DiagnosticCode: c.diag, Action: c.action}
		tr := textReason(c.diag)
		rc.Reason = classify(rc.StatusLiteral, tr)
		resolveStatus(&rc, false)
		k, cl := kindOf(rc.Action, rc.Status)
		if rc.Status != c.status || rc.StatusInferred != c.inferred || k != c.kind || cl != c.class {
			t.Errorf("%q %q %s: status %s inferred %v kind %s class %s, want %s %v %s %s", c.lit, c.diag, c.action,
				rc.Status, rc.StatusInferred, k, cl, c.status, c.inferred, c.kind, c.class)
		}
	}
}

func TestReasons(t *testing.T) {
	for _, c := range []struct {
		status, text string
		want         Reason
	}{
		{"5.1.1", "anything", ReasonUserUnknown},
		{"5.0.0", "550 Requested action not taken: mailbox unavailable", ReasonUserUnknown},
		{"5.0.0", "Recipient address rejected: Access denied. AS(201806281)", ReasonBlocked},
		{"5.7.1", "Service unavailable, Client host [192.0.2.1] blocked using Spamhaus", ReasonBlocked},
		{"5.7.1", "Relay access denied", ReasonRelayDenied},
		{"5.7.1", "550 5.7.1 SPF check failed", ReasonAuthFailure},
		{"4.2.2", "", ReasonMailboxFull},
		{"5.0.0", "Mailbox full", ReasonMailboxFull},
		{"5.0.0", "Host or domain name not found", ReasonHostUnknown},
		{"5.4.3", "", ReasonRouting},
		{"5.0.0", "message size exceeds fixed maximum message size", ReasonTooBig},
		{"5.7.0", "Message rejected as spam", ReasonSpam},
		{"4.4.7", "", ReasonExpired},
		{"5.0.0", "account has been disabled", ReasonMailboxDisabled},
		{"5.3.0", "", ReasonSystemError},
		{"2.0.0", "", ReasonDelivered},
		{"5.0.0", "something odd", ReasonOther},
	} {
		if got := classify(c.status, textReason(c.text)); got != c.want {
			t.Errorf("classify(%q, %q) = %s, want %s", c.status, c.text, got, c.want)
		}
	}
}

func TestCleanAddress(t *testing.T) {
	for _, c := range []struct{ typ, in, want string }{
		{"rfc822", "<user@example.com>", "user@example.com"},
		{"rfc822", "user@example.com (Some Name)", "user@example.com"},
		{"rfc822", `"a..b"@example.com`, `"a..b"@example.com`},
		{"rfc822", "|/usr/bin/prog user@example.com /home/x", "user@example.com"},
		{"utf-8", `\x{7528}@example.com`, "用@example.com"},
		{"utf-8", `bad\x{zz}@example.com`, `bad\x{zz}@example.com`},
	} {
		if got := cleanAddress(c.typ, c.in); got != c.want {
			t.Errorf("cleanAddress(%q, %q) = %q, want %q", c.typ, c.in, got, c.want)
		}
	}
}

func TestHosts(t *testing.T) {
	for _, c := range []struct{ in, reporting, remote string }{
		{"This is the mail system at host mx.example.net.\n\n<a@example.com>: host mx.example.com[192.0.2.1] said: 550 no",
			"mx.example.net", "mx.example.com"},
		{"Hi. This is the qmail-send program at mx4.example.jp.\nremote host 192.0.2.32 said: 550 Unknown user", "mx4.example.jp", "192.0.2.32"},
		{"This is the DragonFly Mail Agent v0.13 at df.example.jp.\n", "df.example.jp", ""},
		{"    host mx.example.org [192.0.2.7]\n    SMTP error", "", "mx.example.org"},
		{"This is the end. Meet at noon.", "", ""},
	} {
		if got := reportingHost(c.in); got != c.reporting {
			t.Errorf("reportingHost(%q) = %q, want %q", c.in, got, c.reporting)
		}
		if got := remoteHost(c.in); got != c.remote {
			t.Errorf("remoteHost(%q) = %q, want %q", c.in, got, c.remote)
		}
	}
}

// TestRecipientEvidence checks the ranking of recipient evidence: an
// address the notice attaches an error to outranks an X-Failed-Recipients
// header that names another, a header the notice agrees with (or does not
// contradict) wins, and an alias the notice expanded is not a record.
func TestRecipientEvidence(t *testing.T) {
	for _, c := range []struct {
		name  string
		msg   string
		by    string
		addrs []string
		orig  string
	}{
		{"notice outranks header", plain("Mail Delivery Subsystem <mailer-daemon@relay.example.net>", "Delivery Status Notification (Failure)",
			"Delivery to the following recipient failed permanently:\n\n     member@far.example\n\n"+
				"Technical details of permanent failure:\n550 5.1.1 The email account that you tried to reach does not exist.\n",
			"X-Failed-Recipients: team@lists.example.org"),
			"text/listed+over-header", []string{"member@far.example"}, ""},
		{"header agrees with the notice", plain("Mail Delivery Subsystem <mailer-daemon@relay.example.net>", "Delivery Status Notification (Failure)",
			"Delivery to the following recipient failed permanently:\n\n     member@far.example\n\n"+
				"Technical details of permanent failure:\n550 5.1.1 The email account that you tried to reach does not exist.\n",
			"X-Failed-Recipients: member@far.example"),
			"header/x-failed-recipients", []string{"member@far.example"}, ""},
		{"header not contradicted: no error in the notice", plain("Mailer-Daemon@mx.example.net", "Mail delivery failed",
			"Something went wrong with a message to other@example.com.\n", "X-Failed-Recipients: y@example.com"),
			"header/x-failed-recipients", []string{"y@example.com"}, ""},
		{"never the bounce's own To", plain("Mail Delivery Subsystem <mailer-daemon@relay.example.net>", "Undeliverable",
			"The following recipient could not be reached:\n\n<sender@example.org>: 550 5.1.1 user unknown\n",
			"X-Failed-Recipients: gone@example.com"),
			"header/x-failed-recipients", []string{"gone@example.com"}, ""},
		{"postfix alias expansion", plain("MAILER-DAEMON@mx.example.net (Mail Delivery System)", "Undelivered Mail Returned to Sender",
			"This is the mail system at host mx.example.net.\n\n<member@far.example> (expanded from <team@corp.example>): host\n"+
				"    mx.far.example[192.0.2.1] said: 550 5.1.1 <member@far.example>: Recipient\n    address rejected: User unknown (in reply to RCPT TO command)\n"),
			"text/postfix+expanded", []string{"member@far.example"}, "team@corp.example"},
		{"exim forwarding", plain("Mail Delivery System <Mailer-Daemon@mx.example.net>", "Mail delivery failed: returning message to sender",
			"This message was created automatically by mail delivery software.\n\nA message that you sent could not be delivered to one or more of its\n"+
				"recipients. This is a permanent error. The following address(es) failed:\n\n  real@far.example\n    (generated from alias@corp.example)\n"+
				"    host mx.far.example [192.0.2.1]\n    SMTP error from remote mail server after RCPT TO:<real@far.example>:\n    550 5.1.1 No such user\n"),
			"text/exim+expanded", []string{"real@far.example"}, "alias@corp.example"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep, err := Message(strings.NewReader(c.msg), Limits{})
			tcheck(t, err, "decoding")
			if got := addrs(rep); strings.Join(got, ",") != strings.Join(c.addrs, ",") {
				t.Fatalf("recipients %v, want %v", got, c.addrs)
			}
			rc := rep.Recipients[0]
			if rc.DecodedBy != c.by || rc.OriginalRecipient != c.orig {
				t.Errorf("by %s original %q, want %s %q", rc.DecodedBy, rc.OriginalRecipient, c.by, c.orig)
			}
		})
	}
}

// TestNearFailure checks the rule for notices in layouts no other rule
// knows: the address presented as undeliverable near a failure word, in
// English or localised, never the notice's own From or To.
func TestNearFailure(t *testing.T) {
	for _, c := range []struct {
		name  string
		msg   string
		addrs []string // nil: not a bounce
	}{
		{"japanese carrier filter notice", plain("Mail Notification <notification@mobile.example.jp>", "送信失敗のお知らせ",
			"お客様が送信されたメールは、以下の宛先で受信拒否設定により届きませんでした。\n\n    keitai@mobile.example.jp\n\n"+
				"このメールは送信専用です。お問い合わせは support@mobile.example.jp まで。\n",
			"Content-Type: text/plain; charset=utf-8"),
			[]string{"keitai@mobile.example.jp"}},
		{"list manager rejection", plain("announce-owner@lists.example.org", "Posting refused",
			"Your message to announce@lists.example.org was rejected by the list manager:\nonly members may post.\n\n"+
				"Questions go to the list owner.\n"),
			[]string{"announce@lists.example.org"}},
		{"list manager notice without a failed address", plain("announce-request@lists.example.org", "Command error",
			"Your command \"subscribe\" was not understood.\nSend \"help\" to announce-request@lists.example.org.\n"),
			nil},
		{"narrows every address of a bounce", plain("MAILER-DAEMON@mx.example.net", "Undeliverable mail",
			"A copy of this report went to archive@example.net.\nKeep it for your records.\n\nDetails:\n\n"+
				"The address olduser@gone.example is unknown here. (#5.1.1)\n"),
			[]string{"olduser@gone.example"}},
		{"own From and To are skipped", plain("news-bounces@lists.example.org", "Bounce action notification",
			"This is a notice that sender@example.org was unknown at the list news@lists.example.org last week.\n"),
			[]string{"news@lists.example.org"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep, err := Message(strings.NewReader(c.msg), Limits{})
			if c.addrs == nil {
				if !errors.Is(err, ErrNotBounce) || len(rep.Recipients) != 0 {
					t.Fatalf("err %v, recipients %v, want not a bounce", err, addrs(rep))
				}
				return
			}
			tcheck(t, err, "decoding")
			if got := addrs(rep); strings.Join(got, ",") != strings.Join(c.addrs, ",") {
				t.Fatalf("recipients %v, want %v", got, c.addrs)
			}
			if rc := rep.Recipients[0]; rc.DecodedBy != "text/near-failure" || rc.Kind != KindBounce {
				t.Errorf("by %s kind %s, want text/near-failure bounce", rc.DecodedBy, rc.Kind)
			}
		})
	}
}

// TestForwardedBounce checks both sides of +outer-notice: a person who
// forwards a bounce with a word of failure of their own ("the delivery
// failed") names no address, so the forwarded bounce's text still says
// who failed.
func TestForwardedBounce(t *testing.T) {
	msg := "From: Some One <someone@example.org>\nTo: bounces@example.com\nSubject: Fwd: Undelivered Mail\n" +
		"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\n" +
		"Hi, the delivery failed again, see the attached notice.\n\n--b\nContent-Type: message/rfc822\n\n" +
		"From: MAILER-DAEMON@mx.example.net\nTo: someone@example.org\nSubject: Undelivered Mail Returned to Sender\n\n" +
		"This is the mail system at host mx.example.net.\n\n<gone@example.net>: host mx.example.net said: 550 5.1.1\n" +
		"    <gone@example.net>: Recipient address rejected: User unknown\n\n--b--\n"
	rep, err := Message(strings.NewReader(msg), Limits{})
	tcheck(t, err, "decoding")
	if len(rep.Recipients) != 1 || rep.Recipients[0].FinalRecipient != "gone@example.net" ||
		strings.Contains(rep.Recipients[0].DecodedBy, ruleOuterNotice) {
		t.Errorf("recipients %v by %v, want gone@example.net without %s", addrs(rep), rep.Recipients, ruleOuterNotice)
	}
}

// TestIndexFold checks indexFold against strings.Index on lower-cased
// ASCII text, for needles with and without a byte to anchor on.
func TestIndexFold(t *testing.T) {
	texts := []string{
		"", "a", "Final-Recipient: rfc822; User@Example.COM\nStatus: 5.1.1\n",
		"status status: STATUS:x", "mail from <A@B.C> to <a@b.c>", "boundary=\"x\" BOUNDARY=y",
		"aaaa@", "@aaaa", "no match here at all", "ab\nab\nAB:",
	}
	subs := []string{
		"final-recipient:", "status:", "user@example.com", "a@b.c", "boundary=", "@", "a@", "@a",
		"\nab:", "match", "xyz", "status", " ", "ab\n",
	}
	for _, s := range texts {
		for _, sub := range subs {
			if got, want := indexFold(s, sub), strings.Index(strings.ToLower(s), sub); got != want {
				t.Errorf("indexFold(%q, %q) = %d, want %d", s, sub, got, want)
			}
		}
	}
}

// TestSubjectRefuses checks that text/subject takes no address that the
// subject does not present as failed, nor the bounce's own addresses, nor
// one of several.
func TestSubjectRefuses(t *testing.T) {
	const from = "LISTSERV <LISTSERV@lists.example.edu>"
	const body = "Your posting was refused by the list server.\n"
	for _, subject := range []string{
		"Rejected posting to sender@example.org", // the bounce's own To
		"Rejected posting to postmaster@lists.example.edu",
		"Rejected: a@lists.example.edu and b@lists.example.edu",
		"Error: your posting to CATS-L",
	} {
		msg := plain(from, subject, body)
		rep, _ := Message(strings.NewReader(msg), Limits{})
		for _, rc := range rep.Recipients {
			t.Errorf("%q: %s by %s", subject, rc.FinalRecipient, rc.DecodedBy)
		}
	}
	msg := plain(from, "Rejected posting to CATS-L@lists.example.edu", body)
	rep, _ := Message(strings.NewReader(msg), Limits{})
	if len(rep.Recipients) != 1 || rep.Recipients[0].DecodedBy != ruleSubjectName {
		t.Errorf("the list address was not taken: %v", addrs(rep))
	}
}

// TestRecipientField checks the one scan of recipientField against the
// two searches it replaces.
func TestRecipientField(t *testing.T) {
	for _, s := range []string{
		"", "Final-Recipient: rfc822; a@b.c", "Original-Recipient: rfc822;a@b.c\nFinal-Recipient: rfc822;d@e.f",
		"x-recipient: nothing", "ORIGINAL-RECIPIENT:a\nfinal-RECIPIENT:b", "al-recipient:", "inal-recipient:",
		"Original-Recipient: only", "text final-recipient: late, original-recipient: earlier? no",
	} {
		want := indexFold(s, "final-recipient:")
		if want < 0 {
			want = indexFold(s, "original-recipient:")
		}
		if got := recipientField(s); got != want {
			t.Errorf("recipientField(%q) = %d, want %d", s, got, want)
		}
	}
}
