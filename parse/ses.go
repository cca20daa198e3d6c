package parse

import (
	"encoding/json"
	"strings"
)

// sesEvent is the JSON of an Amazon SES notification (delivered by SNS as
// e-mail): notificationType or eventType Bounce, Complaint or Delivery.
type sesEvent struct {
	NotificationType string `json:"notificationType"`
	EventType        string `json:"eventType"`
	Bounce           struct {
		BounceType        string `json:"bounceType"`
		ReportingMTA      string `json:"reportingMTA"`
		RemoteMTAIP       string `json:"remoteMtaIp"`
		BouncedRecipients []struct {
			EmailAddress   string `json:"emailAddress"`
			Action         string `json:"action"`
			Status         string `json:"status"`
			DiagnosticCode string `json:"diagnosticCode"`
		} `json:"bouncedRecipients"`
	} `json:"bounce"`
	Complaint struct {
		ComplaintFeedbackType string `json:"complaintFeedbackType"`
		UserAgent             string `json:"userAgent"`
		ComplainedRecipients  []struct {
			EmailAddress string `json:"emailAddress"`
		} `json:"complainedRecipients"`
	} `json:"complaint"`
	Delivery struct {
		Recipients   []string `json:"recipients"`
		SMTPResponse string   `json:"smtpResponse"`
		ReportingMTA string   `json:"reportingMTA"`
	} `json:"delivery"`
}

// sesNotification decodes an Amazon SES event notification, possibly
// wrapped in an SNS envelope ({"Type":"Notification","Message":"..."}).
// It reports whether it found one.
func (d *decoder) sesNotification() bool {
	for _, t := range d.textBodies() {
		// The cheap scans first: most bodies have no "{", or no "Type\""
		// after it, and LastIndexByte goes a byte at a time.
		i := strings.IndexByte(t.body, '{')
		if i < 0 {
			continue
		}
		k := strings.Index(t.body[i:], "Type\"")
		if k < 0 {
			continue
		}
		j := strings.LastIndexByte(t.body, '}')
		if j < i+k+len("Type\"") {
			continue
		}
		raw := t.body[i : j+1]
		var env struct {
			Type    string `json:"Type"`
			Message string `json:"Message"`
		}
		if unmarshalFolded(raw, &env) && env.Type == "Notification" && env.Message != "" {
			raw = env.Message
		}
		var ev sesEvent
		if !unmarshalFolded(raw, &ev) {
			continue
		}
		if d.addSES(&ev) {
			return true
		}
	}
	return false
}

func (d *decoder) addSES(ev *sesEvent) bool {
	typ := ev.NotificationType
	if typ == "" {
		typ = ev.EventType
	}
	add := func(rc Recipient) {
		if len(d.rep.Recipients) < d.lim.MaxRecipients {
			rc.DecodedBy = "json/ses"
			d.rep.Recipients = append(d.rep.Recipients, rc)
		}
	}
	switch typ {
	case "Bounce":
		d.rep.ReportingMTA = ev.Bounce.ReportingMTA
		for _, b := range ev.Bounce.BouncedRecipients {
			rc := Recipient{FinalRecipient: cleanAddress("", b.EmailAddress), Action: Action(strings.ToLower(b.Action)),
				DiagnosticCode: b.DiagnosticCode}
			rc.DiagnosticType, rc.DiagnosticCode = splitTyped(b.DiagnosticCode)
			rc.StatusLiteral = findEnhanced(b.Status)
			if rc.Action == "" {
				rc.Action = Failed
				if ev.Bounce.BounceType == "Transient" {
					rc.Action = Delayed
				}
			}
			add(rc)
		}
	case "Complaint":
		fb := &Feedback{FeedbackType: ev.Complaint.ComplaintFeedbackType, UserAgent: ev.Complaint.UserAgent}
		if fb.FeedbackType == "" {
			fb.FeedbackType = "abuse"
		}
		d.rep.Feedback = fb
		for _, c := range ev.Complaint.ComplainedRecipients {
			a := cleanAddress("", c.EmailAddress)
			if fb.OriginalRcptTo == "" {
				fb.OriginalRcptTo = a
			}
			add(Recipient{FinalRecipient: a, Kind: KindComplaint, Class: ClassNone})
		}
	case "Delivery":
		d.rep.ReportingMTA = ev.Delivery.ReportingMTA
		for _, a := range ev.Delivery.Recipients {
			add(Recipient{FinalRecipient: cleanAddress("", a), Action: Delivered, DiagnosticType: "smtp",
				DiagnosticCode: ev.Delivery.SMTPResponse})
		}
	}
	return len(d.rep.Recipients) > 0
}

// unmarshalFolded decodes JSON that a mailer may have folded into lines
// ("\n " inserted in long lines): as it is, else with the folds undone.
func unmarshalFolded(raw string, v any) bool {
	if json.Unmarshal([]byte(raw), v) == nil {
		return true
	}
	unfolded := strings.ReplaceAll(strings.ReplaceAll(raw, "\n ", ""), "\n", "")
	return json.Unmarshal([]byte(unfolded), v) == nil
}
